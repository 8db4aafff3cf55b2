"""The release writer: it round-trips, edits only the release values, and a promotion changes only release fields."""

from __future__ import annotations

import difflib
import re
from pathlib import Path

import pytest
from pydantic import ValidationError

from tasks.gitops_manifests import (
    ENVIRONMENTS,
    ManifestRenderError,
    Release,
    ReleaseFileError,
    read_release,
    release_path,
    render_overlay,
    write_release,
)

NEW_RELEASE = Release(
    model_name="scoregate-fraud-v2",
    model_version="42",
    bento_tag="scoregate_scorer:k3q9zd2xv6f4hm7w",
    image_tag="k3q9zd2xv6f4hm7w",
    bento_digest="sha256:" + "3f" * 32,
)

# The only rendered lines a promotion may change: the image reference, the release annotations/labels, and the
# value of a SCOREGATE_* release variable (checked with the line above it).
_ALLOWED_LINE = re.compile(
    r"^\s+(image: registry\.example\.com/scoregate/scorer:\S+"
    r"|scoregate\.dev/(model-name|model-version|bento-tag|bento-digest): \S+"
    r"|value: \S+)$"
)
_RELEASE_ENV_NAME = re.compile(r"^\s+- name: SCOREGATE_(MODEL_NAME|MODEL_VERSION|BENTO_TAG|BENTO_DIGEST)$")
# Per render: 1 image + model-version (2 labels, 2 annotations, 1 env) + 3 x (2 annotations, 1 env).
_CHANGED_LINES_PER_RENDER = 1 + 5 + 3 * 3


def _changed_lines(before: str, after: str) -> list[tuple[str, str, str]]:
    """(old line, new line, new line's predecessor) for every changed line; fails on inserted or deleted lines."""
    old, new = before.splitlines(), after.splitlines()
    changed: list[tuple[str, str, str]] = []
    for tag, i1, i2, j1, j2 in difflib.SequenceMatcher(a=old, b=new, autojunk=False).get_opcodes():
        if tag == "equal":
            continue
        assert tag == "replace" and i2 - i1 == j2 - j1, f"lines added or removed: {old[i1:i2]} -> {new[j1:j2]}"
        changed.extend((old[i], new[j], new[j - 1]) for i, j in zip(range(i1, i2), range(j1, j2), strict=True))
    return changed


@pytest.mark.parametrize("env", ENVIRONMENTS)
def test_promotion_changes_only_release_fields_in_the_render(env: str, gitops_copy: Path) -> None:
    # given the overlay as rendered before the promotion
    before = render_overlay(gitops_copy, env)

    # when a new release is written and the overlay rendered again
    changed_files = write_release(gitops_copy, env, NEW_RELEASE)
    after = render_overlay(gitops_copy, env)

    # then only the release file changed, and in the render only release lines changed, each in its value only
    assert changed_files == [release_path(gitops_copy, env)]
    changes = _changed_lines(before, after)
    assert len(changes) == _CHANGED_LINES_PER_RENDER
    for old, new, previous in changes:
        assert _ALLOWED_LINE.match(new), f"a promotion changed {old!r} -> {new!r}"
        separator = ":" if "image:" in new else ": "  # the value is what follows the last separator
        assert old.rsplit(separator, 1)[0] == new.rsplit(separator, 1)[0]
        if new.lstrip().startswith("value:"):
            assert _RELEASE_ENV_NAME.match(previous), f"a promotion changed the env value after {previous!r}"
    new_text = "\n".join(new for _, new, _ in changes)
    for value in NEW_RELEASE.model_dump().values():
        assert value in new_text


def test_release_file_diff_touches_only_the_five_values(gitops_copy: Path) -> None:
    # given the production release file as committed
    path = release_path(gitops_copy, "production")
    before = path.read_bytes()

    # when a new release is written
    write_release(gitops_copy, "production", NEW_RELEASE)

    # then exactly the five value lines differ, each keeping its key and indentation; comments and the rest stay
    old_lines, new_lines = (
        before.decode().splitlines(),
        path.read_bytes().decode().splitlines(),
    )
    assert len(old_lines) == len(new_lines)
    differing = [(old, new) for old, new in zip(old_lines, new_lines, strict=True) if old != new]
    assert [new.split(":", 1)[0] for _, new in differing] == [
        "  modelName",
        "  modelVersion",
        "  bentoTag",
        "  imageTag",
        "  bentoDigest",
    ]
    assert all(old.split(":", 1)[0] == new.split(":", 1)[0] for old, new in differing)


@pytest.mark.parametrize("env", ENVIRONMENTS)
def test_read_release_round_trips_write_release(env: str, gitops_copy: Path) -> None:
    # given a release written into the overlay
    write_release(gitops_copy, env, NEW_RELEASE)

    # when it is read back, and written a second time
    read_back = read_release(gitops_copy, env)
    second_write = write_release(gitops_copy, env, read_back)

    # then it is the same release, and the second write changed nothing
    assert read_back == NEW_RELEASE
    assert second_write == []


def test_writer_keeps_crlf_line_endings_and_rewrites_hand_quoted_values(
    gitops_copy: Path,
) -> None:
    # given a release file saved with CRLF line endings and values quoted by hand in other styles
    path = release_path(gitops_copy, "staging")
    text = path.read_text(encoding="utf-8")
    text = text.replace('modelVersion: "1"', "modelVersion: '1'  # set by hand").replace(
        'imageTag: "bootstrap"', "imageTag: bootstrap"
    )
    path.write_bytes(text.replace("\n", "\r\n").encode("utf-8"))

    # when a new release is written
    write_release(gitops_copy, "staging", NEW_RELEASE)

    # then every line still ends in CRLF, the trailing comment survives, and the release reads back
    written = path.read_bytes().decode("utf-8")
    assert written.count("\r\n") == written.count("\n")
    assert 'modelVersion: "42"  # set by hand\r\n' in written
    assert read_release(gitops_copy, "staging") == NEW_RELEASE


def test_hand_edited_release_with_a_renamed_key_is_refused(gitops_copy: Path) -> None:
    # given a release file where a hand edit renamed imageTag
    path = release_path(gitops_copy, "staging")
    path.write_text(
        path.read_text(encoding="utf-8").replace("imageTag:", "imagetag:"),
        encoding="utf-8",
    )
    before = path.read_bytes()

    # when the release is read, written, or the overlay rendered
    # then each fails naming the problem, and the file is left as it was
    with pytest.raises(ReleaseFileError, match="imagetag"):
        read_release(gitops_copy, "staging")
    with pytest.raises(ReleaseFileError, match="imagetag"):
        write_release(gitops_copy, "staging", NEW_RELEASE)
    assert path.read_bytes() == before
    with pytest.raises(ManifestRenderError, match=r"staging overlay.*data\.imageTag"):
        render_overlay(gitops_copy, "staging")


def test_broken_overlay_raises_a_render_error_naming_overlay_and_file(
    gitops_copy: Path,
) -> None:
    # given a production overlay whose kustomization names a patch file that does not exist
    kustomization = gitops_copy / "gitops" / "overlays" / "production" / "kustomization.yaml"
    text = kustomization.read_text(encoding="utf-8")
    kustomization.write_text(
        text.replace("- path: rollout-canary.yaml", "- path: rollout-canary.yml"),
        encoding="utf-8",
    )

    # when the overlay is rendered
    with pytest.raises(ManifestRenderError) as caught:
        render_overlay(gitops_copy, "production")

    # then the error names the overlay, its directory, and kustomize's complaint about the file
    message = str(caught.value)
    assert "production overlay" in message
    assert str(gitops_copy / "gitops" / "overlays" / "production") in message
    assert "rollout-canary.yml" in message


def test_missing_kubectl_is_a_render_error(gitops_copy: Path, tmp_path: Path) -> None:
    # given a kubectl path that does not exist
    kubectl = str(tmp_path / "no-such-kubectl")

    # when the overlay is rendered with it
    # then the failure is a ManifestRenderError naming the overlay, not a bare OSError
    with pytest.raises(ManifestRenderError, match="staging overlay"):
        render_overlay(gitops_copy, "staging", kubectl=kubectl)


@pytest.mark.parametrize(
    ("field", "value"),
    [
        # a ':' would split the image reference that the release component rewrites
        ("image_tag", "v1:latest"),
        # not a Kubernetes label value
        ("model_version", "7 "),
        ("bento_digest", "md5:0123"),
        ("bento_tag", "no-version"),
        # nothing that could break out of the YAML scalar
        ("model_name", 'fraud"\nkind: Secret'),
    ],
)
def test_release_rejects_values_that_cannot_go_into_the_manifests(field: str, value: str) -> None:
    # given the fields of a valid release with one replaced by an invalid value
    fields = NEW_RELEASE.model_dump() | {field: value}

    # when a Release is made from them
    # then validation names the field
    with pytest.raises(ValidationError, match=field):
        Release(**fields)


def test_unknown_environment_is_refused(gitops_copy: Path) -> None:
    # given an environment that has no overlay
    # when its release is read
    # then the error lists the environments there are
    with pytest.raises(ValueError, match="staging, production"):
        read_release(gitops_copy, "qa")
