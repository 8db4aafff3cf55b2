"""prefect.yaml deployed for real: `prefect server start`, the work pools, `prefect deploy --all`, then the result
read back through Prefect's REST API (schedules, pools, job variables, the concurrency limit)."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from tests.servers import PrefectCliBatch, PrefectServer, free_port, prefect_home, prefect_server, stop_process

PROJECT_ROOT = Path(__file__).resolve().parents[2]
PREFECT_YAML = PROJECT_ROOT / "prefect.yaml"
FLOW = "scoregate-training"
POOLS = {"scoregate-process": "process", "scoregate-kubernetes": "kubernetes"}

# The server takes 10-25 s to come up here and the deploy imports the training flow; see PrefectCliBatch.
pytestmark = pytest.mark.timeout(240)

# What an operator runs against a fresh server (see the top of prefect.yaml), in this order.
SETUP_COMMANDS = [
    *(["work-pool", "create", name, "--type", kind] for name, kind in POOLS.items()),
    ["--no-prompt", "deploy", "--all"],
]


@dataclass(frozen=True)
class Deployed:
    server: PrefectServer
    exit_code: int
    output: str


@pytest.fixture(scope="module")
def deployed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Deployed]:
    """A fresh Prefect server on which the work pools and every deployment of prefect.yaml were created."""
    workdir = tmp_path_factory.mktemp("prefect")
    port = free_port()
    api_url = f"http://127.0.0.1:{port}/api"
    # Started first: it imports Prefect while the server starts, then runs the commands from the repository root.
    batch = PrefectCliBatch.start(api_url, prefect_home(workdir), SETUP_COMMANDS, cwd=PROJECT_ROOT)
    try:
        with prefect_server(workdir, port=port) as server:
            exit_code, output = batch.wait(timeout_s=180)
            yield Deployed(server=server, exit_code=exit_code, output=output)
    finally:
        stop_process(batch.process)


def _api(deployed: Deployed, method: str, path: str) -> Any:
    """One call to the server's REST API (what Prefect's own client calls); the decoded JSON answer."""
    response = httpx.request(method, f"{deployed.server.api_url}{path}", json={} if method == "POST" else None)
    response.raise_for_status()
    return response.json()


@pytest.fixture(scope="module")
def deployments(deployed: Deployed) -> dict[str, dict[str, Any]]:
    """The server's deployments by name, each as `GET /deployments/{id}` answers (with its concurrency limit)."""
    assert deployed.exit_code == 0, f"creating the pools or `prefect deploy --all` failed:\n{deployed.output}"
    listed = _api(deployed, "POST", "/deployments/filter")
    return {entry["name"]: _api(deployed, "GET", f"/deployments/{entry['id']}") for entry in listed}


def test_the_cli_created_both_pools_and_deployed(deployed: Deployed) -> None:
    # given the setup commands' output
    output = deployed.output
    # when it is searched for what each command reports
    # then both pools were created and both deployments applied
    assert deployed.exit_code == 0, output
    for name in POOLS:
        assert f"Created work pool {name!r}!" in output
    for name in ("nightly-retrain", "nightly-retrain-kubernetes"):
        assert f"$ prefect deployment run '{FLOW}/{name}'" in output
    assert "$ prefect deployment run 'scoregate-monitoring/hourly-drift-watch'" in output


def _declared() -> list[dict[str, Any]]:
    document = yaml.safe_load(PREFECT_YAML.read_text(encoding="utf-8"))
    declared: list[dict[str, Any]] = document["deployments"]
    return declared


def test_every_declared_deployment_is_created(deployments: dict[str, dict[str, Any]]) -> None:
    # given the deployments prefect.yaml declares
    declared = {entry["name"] for entry in _declared()}
    # when the server's deployments are listed (after `prefect deploy --all`)
    created = set(deployments)
    # then each one exists: the two retrains, the on-demand promotion and the hourly drift watch
    assert declared == created == {"nightly-retrain", "nightly-retrain-kubernetes", "promote", "hourly-drift-watch"}
    assert {d["entrypoint"] for d in deployments.values()} == {
        "flows/training.py:training_flow",
        "flows/promotion.py:promotion_flow",
        "flows/monitoring.py:monitoring_flow",
    }


def test_the_promotion_runs_on_demand_one_at_a_time(deployments: dict[str, dict[str, Any]]) -> None:
    # given the promotion deployment
    promote = deployments["promote"]
    # when its schedule, defaults and limit are read
    limit = promote["global_concurrency_limit"]
    # then it has no schedule, asks for a model version, defaults to staging, and runs one at a time
    assert promote["schedules"] == []
    assert promote["parameters"] == {"model_name": "scoregate-fraud", "environment": "staging"}
    assert "model_version" in promote["parameter_openapi_schema"]["required"]
    assert limit is not None and limit["limit"] == 1


def test_the_nightly_retrain_runs_at_two_utc_on_the_process_pool(deployments: dict[str, dict[str, Any]]) -> None:
    # given the nightly retrain
    retrain = deployments["nightly-retrain"]
    # when its schedule and pool are read
    [schedule] = retrain["schedules"]
    # then it runs every night at 02:00 UTC, on the process pool's training queue, with the default row count
    assert schedule["schedule"]["cron"] == "0 2 * * *"
    assert schedule["schedule"]["timezone"] == "UTC"
    assert schedule["active"] is True
    assert retrain["work_pool_name"] == "scoregate-process"
    assert retrain["work_queue_name"] == "training"
    assert retrain["parameters"] == {"rows": 200000}
    assert set(retrain["parameter_openapi_schema"]["properties"]) == {"config", "rows"}


def test_the_drift_watch_runs_hourly_on_the_process_pool_one_at_a_time(
    deployments: dict[str, dict[str, Any]],
) -> None:
    # given the drift watch
    watch = deployments["hourly-drift-watch"]
    # when its schedule, pool, parameters and concurrency settings are read
    [schedule] = watch["schedules"]
    limit = watch["global_concurrency_limit"]
    # then it runs every hour at a quarter past, UTC, on the process pool's monitoring queue, over the last hour of
    # the production champion
    assert schedule["schedule"]["cron"] == "15 * * * *" and schedule["schedule"]["timezone"] == "UTC"
    assert schedule["active"] is True
    assert (watch["work_pool_name"], watch["work_queue_name"]) == ("scoregate-process", "monitoring")
    assert watch["parameters"] == {"model_name": "scoregate-fraud", "environment": "production", "window_hours": 1.0}
    assert {"window_end", "act", "retrain_rows", "policy_dir"} <= set(watch["parameter_openapi_schema"]["properties"])
    # and one watch at a time: a watch that comes due while another still runs is cancelled, not queued
    assert limit is not None and limit["limit"] == 1 and limit["active"]
    assert watch["concurrency_options"]["collision_strategy"] == "CANCEL_NEW"
    assert watch["pull_steps"] == [
        {"prefect.deployments.steps.set_working_directory": {"directory": "{{ $SCOREGATE_REPO_DIR }}"}}
    ]


def test_two_retrains_never_overlap(deployments: dict[str, dict[str, Any]]) -> None:
    for name in ("nightly-retrain", "nightly-retrain-kubernetes"):
        # given a retrain deployment
        deployment = deployments[name]
        # when its concurrency settings are read
        limit = deployment["global_concurrency_limit"]
        # then at most one of its runs goes at a time, and a run that comes due meanwhile waits its turn
        assert limit is not None and limit["limit"] == 1 and limit["active"], name
        assert deployment["concurrency_options"]["collision_strategy"] == "ENQUEUE", name


def test_the_kubernetes_retrain_is_shown_alongside_with_its_image(
    deployed: Deployed, deployments: dict[str, dict[str, Any]]
) -> None:
    # given the Kubernetes variant of the retrain
    retrain = deployments["nightly-retrain-kubernetes"]
    # when its pool and job variables are read
    pool = _api(deployed, "GET", "/work_pools/scoregate-kubernetes")
    [schedule] = retrain["schedules"]
    # then it targets the kubernetes pool with the image, runs the code baked into it, and is not scheduled yet
    assert pool["type"] == "kubernetes"
    assert "image" in pool["base_job_template"]["variables"]["properties"]
    assert retrain["work_pool_name"] == "scoregate-kubernetes"
    assert retrain["job_variables"]["image"] == "registry.gitlab.com/scoregate/scoregate:main"
    assert retrain["job_variables"]["env"]["SCOREGATE_VAULT_AUTH"] == "kubernetes"
    assert retrain["pull_steps"] == [
        {"prefect.deployments.steps.set_working_directory": {"directory": "/opt/scoregate"}}
    ]
    assert schedule["schedule"]["cron"] == "0 2 * * *" and schedule["active"] is False


def test_process_runs_find_the_checkout_through_the_workers_environment(
    deployments: dict[str, dict[str, Any]],
) -> None:
    # given the process-pool retrain
    retrain = deployments["nightly-retrain"]
    # when its pull steps are read
    steps = retrain["pull_steps"]
    # then the working directory is still a template, filled from the worker's environment when a run starts
    assert steps == [{"prefect.deployments.steps.set_working_directory": {"directory": "{{ $SCOREGATE_REPO_DIR }}"}}]


def test_every_entrypoint_in_prefect_yaml_exists() -> None:
    # given prefect.yaml's deployments
    declared = _declared()
    # when their entrypoints are resolved against the repository
    missing = [
        entry["entrypoint"] for entry in declared if not (PROJECT_ROOT / entry["entrypoint"].split(":")[0]).is_file()
    ]
    # then none is missing: `prefect deploy --all` stops at the first missing file and skips the rest
    assert missing == []
