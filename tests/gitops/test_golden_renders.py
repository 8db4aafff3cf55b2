"""The committed renders in gitops/rendered/ are what the overlays render to now."""

from __future__ import annotations

from pathlib import Path

import pytest

from tasks.gitops_manifests import ENVIRONMENTS, main
from tests.gitops.helpers import REPO_ROOT

REGENERATE = "python -m tasks.gitops_manifests render"


@pytest.mark.parametrize("env", ENVIRONMENTS)
def test_golden_render_is_current(env: str, rendered: dict[str, str]) -> None:
    # given the committed golden render of the environment
    golden = (REPO_ROOT / "gitops" / "rendered" / f"{env}.yaml").read_bytes().decode("utf-8")

    # when the overlay is rendered now (the session fixture)
    current = rendered[env]

    # then they are identical, byte for byte
    assert current == golden, f"gitops/rendered/{env}.yaml is out of date: run `{REGENERATE}`"


def test_render_command_writes_every_environment(tmp_path: Path, rendered: dict[str, str]) -> None:
    # given an empty output directory
    out = tmp_path / "rendered"

    # when the regeneration entry point runs
    status = main(["render", "--repo-root", str(REPO_ROOT), "--out", str(out)])

    # then it wrote one file per environment, each the overlay's render
    assert status == 0
    assert sorted(path.name for path in out.iterdir()) == sorted(f"{env}.yaml" for env in ENVIRONMENTS)
    for env in ENVIRONMENTS:
        assert (out / f"{env}.yaml").read_text(encoding="utf-8") == rendered[env]


def test_render_check_reports_a_stale_golden_file(
    tmp_path: Path, rendered: dict[str, str], capsys: pytest.CaptureFixture[str]
) -> None:
    # given golden files of which one was edited by hand
    out = tmp_path / "rendered"
    out.mkdir()
    for env, text in rendered.items():
        (out / f"{env}.yaml").write_text(text, encoding="utf-8")
    stale = out / "production.yaml"
    stale.write_text(rendered["production"] + "# edited by hand\n", encoding="utf-8")

    # when the check runs
    status = main(["render", "--repo-root", str(REPO_ROOT), "--out", str(out), "--check"])

    # then it fails, names only that file, and leaves it as it was
    assert status == 1
    assert capsys.readouterr().out.splitlines() == [f"out of date: {stale}"]
    assert stale.read_text(encoding="utf-8").endswith("# edited by hand\n")
