"""flows/argo_export.py: the training flow as an Argo WorkflowTemplate and CronWorkflow, committed as golden YAML
under gitops/argo-workflows/ and checked against Argo's API models (hera's, generated from Argo's OpenAPI spec)."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from flows.argo_export import (
    CRON_SCHEDULE,
    DEFAULT_IMAGE,
    HOME_MOUNT,
    STEPS,
    TEMPLATE_NAME,
    export_argo,
    main,
    render_argo,
)

PROJECT_ROOT = Path(__file__).resolve().parents[2]
GOLDEN = PROJECT_ROOT / "gitops" / "argo-workflows"
REGENERATE = "python -m flows.argo_export"


def _documents(image: str = DEFAULT_IMAGE) -> dict[str, dict[str, Any]]:
    """The exported Argo objects by kind."""
    documents = [yaml.safe_load(text) for text in render_argo(image).values()]
    return {document["kind"]: document for document in documents}


def _container_templates(template: dict[str, Any]) -> list[dict[str, Any]]:
    return [entry for entry in template["spec"]["templates"] if "container" in entry]


def test_the_committed_yaml_is_current(tmp_path: Path) -> None:
    # given a fresh export with the default image
    written = export_argo(tmp_path / "argo", DEFAULT_IMAGE)
    # when it is compared with the committed golden files
    committed = sorted(path.name for path in GOLDEN.iterdir())
    # then they are the same files, byte for byte
    assert sorted(path.name for path in written) == committed
    for path in written:
        golden = GOLDEN / path.name
        assert path.read_text(encoding="utf-8") == golden.read_text(encoding="utf-8"), (
            f"{golden.relative_to(PROJECT_ROOT)} is out of date: run `{REGENERATE}` and commit the result"
        )


def test_the_objects_are_argo_workflow_kinds() -> None:
    # given the exported objects
    documents = _documents()
    # when their API groups and kinds are read
    kinds = {kind: document["apiVersion"] for kind, document in documents.items()}
    # then there is one WorkflowTemplate and one CronWorkflow of argoproj.io/v1alpha1, and a kustomization
    assert kinds == {
        "WorkflowTemplate": "argoproj.io/v1alpha1",
        "CronWorkflow": "argoproj.io/v1alpha1",
        "Kustomization": "kustomize.config.k8s.io/v1beta1",
    }


def test_one_step_per_training_stage_in_order_on_one_image() -> None:
    # given the WorkflowTemplate exported for some image
    template = _documents("registry.example/scoregate:abc123")["WorkflowTemplate"]
    # when its entrypoint's steps and its container templates are read
    entry = next(t for t in template["spec"]["templates"] if t["name"] == template["spec"]["entrypoint"])
    sequence = [group[0]["template"] for group in entry["steps"]]
    containers = _container_templates(template)
    # then the steps run the training stages one after the other, each in its own container of the same image
    assert sequence == [
        "resolve-source",
        "ingest-and-validate",
        "build-features-and-split",
        "train",
        "evaluate",
        "register",
        "build-bento",
    ]
    assert all(len(group) == 1 for group in entry["steps"])
    assert [t["name"] for t in containers] == sequence
    assert {t["container"]["image"] for t in containers} == {"registry.example/scoregate:abc123"}
    for t in containers:
        assert t["container"]["command"] == ["scoregate"]
        assert t["container"]["args"][:4] == [
            "step",
            t["name"],
            "--run-dir",
            "$(SCOREGATE_HOME)/runs/{{workflow.name}}",
        ]


def test_the_steps_share_scoregate_home_on_one_volume() -> None:
    # given the WorkflowTemplate
    template = _documents()["WorkflowTemplate"]
    # when its volumes and each container's mounts and environment are read
    [volume] = template["spec"]["volumes"]
    # then every step mounts the one claim at SCOREGATE_HOME
    assert volume["persistentVolumeClaim"]["claimName"] == volume["name"]
    for t in _container_templates(template):
        container = t["container"]
        assert container["volumeMounts"] == [{"name": volume["name"], "mountPath": HOME_MOUNT}], t["name"]
        assert {"name": "SCOREGATE_HOME", "value": HOME_MOUNT} in container["env"], t["name"]


def test_runs_never_overlap_and_only_io_steps_retry() -> None:
    # given both objects
    documents = _documents()
    template, cron = documents["WorkflowTemplate"], documents["CronWorkflow"]
    # when their concurrency and retry settings are read
    retries = {t["name"]: t.get("retryStrategy", {}).get("limit", 0) for t in _container_templates(template)}
    # then one run at a time (a mutex, and the cron skips a slot while a run goes), I/O steps retry, others not
    assert template["spec"]["synchronization"] == {"mutexes": [{"name": TEMPLATE_NAME}]}
    assert cron["spec"]["concurrencyPolicy"] == "Forbid"
    assert retries == {
        "resolve-source": 2,
        "ingest-and-validate": 2,
        "build-features-and-split": 0,
        "train": 0,
        "evaluate": 0,
        "register": 2,
        "build-bento": 1,
    }


def test_steps_that_retry_tell_the_command_their_attempt() -> None:
    # given the container templates and the steps' retry limits
    templates = {t["name"]: t for t in _container_templates(_documents()["WorkflowTemplate"])}
    # when each container's arguments after the run folder are read
    extra = {name: t["container"]["args"][4:] for name, t in templates.items()}
    # then exactly the steps with a retry strategy pass Argo's retry number, and only the first step the config
    for step in STEPS:
        has_attempt = extra[step.name][-2:] == ["--attempt", "{{retries}}"]
        assert has_attempt == (step.retries > 0) == ("retryStrategy" in templates[step.name]), step.name
    assert extra["resolve-source"][:4] == [
        "--config",
        "{{workflow.parameters.config}}",
        "--rows",
        "{{workflow.parameters.rows}}",
    ]
    assert all("--config" not in args for name, args in extra.items() if name != "resolve-source")


def test_the_cron_workflow_runs_the_template_nightly() -> None:
    # given the CronWorkflow
    cron = _documents()["CronWorkflow"]
    # when its schedule and workflow are read
    spec = cron["spec"]
    # then it runs the WorkflowTemplate at 02:00 UTC
    assert spec["schedules"] == [CRON_SCHEDULE] == ["0 2 * * *"]
    assert spec["timezone"] == "UTC"
    assert spec["workflowSpec"] == {"workflowTemplateRef": {"name": TEMPLATE_NAME}}


def test_every_prefect_task_of_the_training_flow_has_a_step() -> None:
    # given the Prefect tasks the training flow chains
    from prefect import Task

    import flows.training

    flow_tasks = {value.name for value in vars(flows.training).values() if isinstance(value, Task)}
    # when the tasks the Argo steps run are collected
    covered = [name for step in STEPS for name in step.prefect_tasks]
    # then each flow task runs in exactly one step, and no step names a task the flow lacks
    assert sorted(covered) == sorted(flow_tasks)


@pytest.mark.parametrize("kind", ["WorkflowTemplate", "CronWorkflow"])
def test_the_objects_match_argos_api_schema(kind: str) -> None:
    # given an exported object, and hera's models generated from Argo Workflows' OpenAPI schema
    from hera.workflows import models

    document = _documents()[kind]
    model = getattr(models, kind)
    # when it is parsed with the model (types checked) and dumped again
    parsed = model.model_validate(document)
    dumped = parsed.model_dump(by_alias=True, exclude_none=True, mode="json")
    # then nothing was lost: a field Argo does not know would have been dropped by the model
    assert dumped == document


def test_the_schema_check_notices_an_unknown_field() -> None:
    # given a WorkflowTemplate with a misspelt field
    from hera.workflows import models

    document = _documents()["WorkflowTemplate"]
    document["spec"]["serviceAcountName"] = "typo"
    # when it goes through the model
    dumped = models.WorkflowTemplate.model_validate(document).model_dump(by_alias=True, exclude_none=True, mode="json")
    # then the round trip differs, which is what the check above relies on
    assert dumped != document


def test_kustomize_renders_the_folder() -> None:
    # given the committed folder and kubectl's kustomize (as the GitOps renders use)
    kubectl = shutil.which("kubectl")
    assert kubectl is not None, "kubectl is not on PATH: the GitOps renders need it"
    # when it is rendered
    completed = subprocess.run(
        [kubectl, "kustomize", str(GOLDEN)], capture_output=True, text=True, timeout=60, check=False
    )
    # then both objects come out
    assert completed.returncode == 0, completed.stderr
    kinds = sorted(document["kind"] for document in yaml.safe_load_all(completed.stdout) if document)
    assert kinds == ["CronWorkflow", "WorkflowTemplate"]


def test_check_mode_reports_stale_files(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    # given an export folder in which one file was edited by hand
    out = tmp_path / "argo"
    export_argo(out)
    edited = out / "training-cronworkflow.yaml"
    edited.write_text(edited.read_text(encoding="utf-8").replace("0 2 * * *", "0 3 * * *"), encoding="utf-8")
    # when the module's command checks it, then regenerates it and checks again
    stale = main(["--out", str(out), "--check"])
    regenerated = main(["--out", str(out)])
    fresh = main(["--out", str(out), "--check"])
    # then the first check fails naming the file, and the regenerated folder passes
    assert (stale, regenerated, fresh) == (1, 0, 0)
    assert f"out of date: {edited}" in capsys.readouterr().out
