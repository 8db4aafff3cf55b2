"""The GitLab adapter: open the promotion's merge request in the GitOps project through python-gitlab.

Used only when `SCOREGATE_GITLAB_URL` and `SCOREGATE_GITLAB_PROJECT` are set; the API token comes from the secrets
module (Vault `scoregate/gitlab#token`), so it is never in git, the environment of a shared runner, or a log.
"""

from __future__ import annotations

import os
from collections.abc import Mapping

from pydantic import BaseModel, ConfigDict, SecretStr

__all__ = ["GitLabSettings", "MergeRequestError", "open_merge_request"]


class MergeRequestError(RuntimeError):
    """GitLab refused or could not be reached; the message has GitLab's answer, never the token."""


class GitLabSettings(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    url: str
    project: str
    target_branch: str = "main"

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> GitLabSettings | None:
        env = os.environ if environ is None else environ
        url, project = env.get("SCOREGATE_GITLAB_URL"), env.get("SCOREGATE_GITLAB_PROJECT")
        if not url or not project:
            return None
        return cls(url=url, project=project, target_branch=env.get("SCOREGATE_GITLAB_TARGET_BRANCH", "main"))


def open_merge_request(
    settings: GitLabSettings, token: SecretStr, *, source_branch: str, title: str, description: str
) -> str:
    """Open the merge request and return its web URL."""
    import gitlab
    import gitlab.exceptions

    client = gitlab.Gitlab(settings.url, private_token=token.get_secret_value(), timeout=20)
    try:
        project = client.projects.get(settings.project, lazy=True)
        request = project.mergerequests.create(
            {
                "source_branch": source_branch,
                "target_branch": settings.target_branch,
                "title": title,
                "description": description,
                "remove_source_branch": True,
            }
        )
    except (gitlab.exceptions.GitlabError, OSError) as error:
        raise MergeRequestError(f"GitLab {settings.url} project {settings.project}: {error}") from error
    return str(request.web_url)
