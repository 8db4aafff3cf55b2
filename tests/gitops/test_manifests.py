"""What the rendered manifests promise beyond their schemas: the scorer's hardening, how its pieces point at each
other, the monitoring objects' structure, and Argo CD's sync policy per environment."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from tasks.gitops_manifests import ENVIRONMENTS, overlay_dir, read_release
from tests.gitops.helpers import REPO_ROOT, Manifest, find

NAMESPACES = {"staging": "scoregate-staging", "production": "scoregate-production"}
PLACEHOLDER_REPO = "https://gitlab.example.com/platform/scoregate-gitops.git"


def _scorer_container(documents: list[Manifest]) -> dict[str, Any]:
    rollout = find(documents, "Rollout", "scoregate-scorer")
    (container,) = rollout["spec"]["template"]["spec"]["containers"]
    assert container["name"] == "scorer"
    return dict(container)


@pytest.mark.parametrize("env", ENVIRONMENTS)
def test_every_namespaced_object_is_in_the_environment_namespace(
    env: str, rendered_documents: dict[str, list[Manifest]]
) -> None:
    # given the rendered objects of the environment
    documents = rendered_documents[env]

    # when their namespaces are collected
    namespaces = {document["metadata"].get("namespace") for document in documents if document["kind"] != "Namespace"}

    # then all sit in the environment's namespace, which the overlay also creates with the restricted pod policy
    assert namespaces == {NAMESPACES[env]}
    namespace = find(documents, "Namespace", NAMESPACES[env])
    assert namespace["metadata"]["labels"]["pod-security.kubernetes.io/enforce"] == "restricted"


@pytest.mark.parametrize("env", ENVIRONMENTS)
def test_scorer_runs_the_release_of_its_overlay(env: str, rendered_documents: dict[str, list[Manifest]]) -> None:
    # given the release the overlay names, and the rendered Rollout
    release = read_release(REPO_ROOT, env)
    rollout = find(rendered_documents[env], "Rollout", "scoregate-scorer")
    container = _scorer_container(rendered_documents[env])

    # when the release fields are read off the Rollout
    env_vars = {var["name"]: var.get("value") for var in container["env"]}
    expected = {
        "scoregate.dev/model-name": release.model_name,
        "scoregate.dev/model-version": release.model_version,
        "scoregate.dev/bento-tag": release.bento_tag,
        "scoregate.dev/bento-digest": release.bento_digest,
    }

    # then image, annotations, labels and env all carry it, and no base placeholder is left anywhere
    assert container["image"] == f"registry.example.com/scoregate/scorer:{release.image_tag}"
    assert container["ports"] == [{"name": "http", "containerPort": 3000, "protocol": "TCP"}]
    for metadata in (rollout["metadata"], rollout["spec"]["template"]["metadata"]):
        assert {key: metadata["annotations"][key] for key in expected} == expected
        assert metadata["labels"]["scoregate.dev/model-version"] == release.model_version
    assert env_vars["SCOREGATE_MODEL_NAME"] == release.model_name
    assert env_vars["SCOREGATE_MODEL_VERSION"] == release.model_version
    assert env_vars["SCOREGATE_BENTO_TAG"] == release.bento_tag
    assert env_vars["SCOREGATE_BENTO_DIGEST"] == release.bento_digest
    assert "unset" not in yaml.safe_dump(rendered_documents[env])


@pytest.mark.parametrize("env", ENVIRONMENTS)
def test_scorer_pod_is_hardened_and_probed(env: str, rendered_documents: dict[str, list[Manifest]]) -> None:
    # given the scorer's pod template
    rollout = find(rendered_documents[env], "Rollout", "scoregate-scorer")
    pod = rollout["spec"]["template"]["spec"]
    container = _scorer_container(rendered_documents[env])

    # when its security settings, resources and probes are read
    security = container["securityContext"]
    resources = container["resources"]

    # then it runs as non-root on a read-only root, with no capabilities or token, bounded, and probed
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    assert pod["automountServiceAccountToken"] is False
    assert security["readOnlyRootFilesystem"] is True
    assert security["allowPrivilegeEscalation"] is False
    assert security["capabilities"] == {"drop": ["ALL"]}
    assert security["seccompProfile"] == {"type": "RuntimeDefault"}
    assert set(resources["requests"]) == set(resources["limits"]) == {"cpu", "memory"}
    assert container["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "http"}
    assert container["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "http"}
    assert {"name": "tmp", "mountPath": "/tmp"} in container["volumeMounts"]


@pytest.mark.parametrize("env", ENVIRONMENTS)
def test_services_autoscaler_and_budget_point_at_the_scorer(
    env: str, rendered_documents: dict[str, list[Manifest]]
) -> None:
    # given the Rollout and the objects that refer to it
    documents = rendered_documents[env]
    rollout = find(documents, "Rollout", "scoregate-scorer")
    canary = rollout["spec"]["strategy"]["canary"]
    pod_labels = rollout["spec"]["template"]["metadata"]["labels"]
    hpa = find(documents, "HorizontalPodAutoscaler", "scoregate-scorer")
    pdb = find(documents, "PodDisruptionBudget", "scoregate-scorer")

    # when the services named by the canary strategy are looked up
    services = {name: find(documents, "Service", name) for name in (canary["canaryService"], canary["stableService"])}

    # then each selects the scorer's pods on port 3000, the HPA scales the Rollout, and the PDB covers its pods
    for service in [*services.values(), find(documents, "Service", "scoregate-scorer")]:
        assert service["spec"]["selector"].items() <= pod_labels.items()
        assert [port["port"] for port in service["spec"]["ports"]] == [3000]
    assert "scoregate.dev/model-version" not in rollout["spec"]["selector"]["matchLabels"]
    assert hpa["spec"]["scaleTargetRef"] == {
        "apiVersion": "argoproj.io/v1alpha1",
        "kind": "Rollout",
        "name": "scoregate-scorer",
    }
    assert 1 <= hpa["spec"]["minReplicas"] < hpa["spec"]["maxReplicas"]
    assert pdb["spec"]["selector"]["matchLabels"].items() <= pod_labels.items()
    assert "replicas" not in rollout["spec"]  # the HPA owns the replica count


def test_production_is_bigger_than_staging(
    rendered_documents: dict[str, list[Manifest]],
) -> None:
    # given both environments' autoscalers and scorer containers
    hpa = {env: find(rendered_documents[env], "HorizontalPodAutoscaler")["spec"] for env in ENVIRONMENTS}
    requests = {env: _scorer_container(rendered_documents[env])["resources"]["requests"] for env in ENVIRONMENTS}

    # when their bounds are compared
    # then production keeps more replicas and asks for more per pod
    assert hpa["production"]["minReplicas"] > hpa["staging"]["minReplicas"]
    assert hpa["production"]["maxReplicas"] > hpa["staging"]["maxReplicas"]
    assert requests["production"] != requests["staging"]


@pytest.mark.parametrize("env", ENVIRONMENTS)
def test_network_policy_admits_only_gateway_and_monitoring_on_3000(
    env: str, rendered_documents: dict[str, list[Manifest]]
) -> None:
    # given the scorer's NetworkPolicy
    policy = find(rendered_documents[env], "NetworkPolicy", "scoregate-scorer")["spec"]

    # when its ingress rules are read
    (rule,) = policy["ingress"]
    (source,) = rule["from"]
    (expression,) = source["namespaceSelector"]["matchExpressions"]

    # then it governs ingress to the scorer pods, from the two namespaces only, on TCP 3000 only
    assert policy["policyTypes"] == ["Ingress"]
    assert policy["podSelector"]["matchLabels"] == {"app.kubernetes.io/name": "scoregate-scorer"}
    assert expression == {
        "key": "kubernetes.io/metadata.name",
        "operator": "In",
        "values": ["gateway", "monitoring"],
    }
    assert rule["ports"] == [{"protocol": "TCP", "port": 3000}]


@pytest.mark.parametrize("env", ENVIRONMENTS)
def test_service_monitor_scrapes_each_pod_once_with_role_and_model_version(
    env: str, rendered_documents: dict[str, list[Manifest]]
) -> None:
    # given the ServiceMonitor and the scorer's Services and Rollout
    documents = rendered_documents[env]
    monitor = find(documents, "ServiceMonitor", "scoregate-scorer")["spec"]
    rollout = find(documents, "Rollout", "scoregate-scorer")
    canary = rollout["spec"]["strategy"]["canary"]

    # when the Services it selects are found
    selector = monitor["selector"]["matchLabels"]
    selected = [
        document
        for document in documents
        if document["kind"] == "Service" and selector.items() <= document["metadata"]["labels"].items()
    ]

    # then exactly the all-pods Service is scraped on its http port, and the role and model_version labels come
    # from pod labels that the Rollout really sets
    assert [service["metadata"]["name"] for service in selected] == ["scoregate-scorer"]
    (endpoint,) = monitor["endpoints"]
    assert endpoint["port"] == "http" and endpoint["path"] == "/metrics"
    relabel = {rule["targetLabel"]: rule["sourceLabels"] for rule in endpoint["relabelings"]}
    assert relabel == {
        "role": ["__meta_kubernetes_pod_label_scoregate_dev_role"],
        "model_version": ["__meta_kubernetes_pod_label_scoregate_dev_model_version"],
    }
    assert canary["canaryMetadata"]["labels"] == {"scoregate.dev/role": "canary"}
    assert canary["stableMetadata"]["labels"] == {"scoregate.dev/role": "stable"}
    assert "scoregate.dev/model-version" in rollout["spec"]["template"]["metadata"]["labels"]
    assert monitor["jobLabel"] == "app.kubernetes.io/name"


@pytest.mark.parametrize("env", ENVIRONMENTS)
def test_prometheus_rule_has_the_four_alerts(env: str, rendered_documents: dict[str, list[Manifest]]) -> None:
    # given the PrometheusRule of the environment
    rule = find(rendered_documents[env], "PrometheusRule", "scoregate-scorer")

    # when its alerting rules are collected
    alerts = {entry["alert"]: entry for group in rule["spec"]["groups"] for entry in group["rules"]}

    # then the four alerts are there, each with an expression, a duration, a severity and a summary, and the
    # scorer-down alert watches this environment's namespace
    assert set(alerts) == {
        "ScoregateScorerDown",
        "ScoregateHighErrorRate",
        "ScoregateScoreDrift",
        "ScoregateInputRejectionSpike",
    }
    for name, alert in alerts.items():
        assert alert["expr"].strip() and alert["for"], name
        assert alert["labels"]["severity"] in {"critical", "warning"}, name
        assert alert["annotations"]["summary"], name
    assert f'namespace="{NAMESPACES[env]}"' in alerts["ScoregateScorerDown"]["expr"]


def test_alert_expressions_are_valid_promql(rendered_documents: dict[str, list[Manifest]], tmp_path: Path) -> None:
    promtool = shutil.which("promtool")
    assert promtool is not None, "promtool is not installed: apt-get install -y --no-install-recommends prometheus"
    # given the production PrometheusRule's groups as a plain Prometheus rule file
    rule = find(rendered_documents["production"], "PrometheusRule", "scoregate-scorer")
    path = tmp_path / "rules.yaml"
    path.write_text(yaml.safe_dump({"groups": rule["spec"]["groups"]}), encoding="utf-8")

    # when promtool checks the file
    completed = subprocess.run(
        [promtool, "check", "rules", str(path)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )

    # then every rule parses
    assert completed.returncode == 0, completed.stdout + completed.stderr
    assert "SUCCESS: 4 rules found" in completed.stdout


def test_argocd_applications_sync_each_environment_as_intended(
    argocd_documents: list[Manifest],
) -> None:
    # given the AppProject and the Applications
    project = find(argocd_documents, "AppProject", "scoregate")["spec"]
    apps = {env: find(argocd_documents, "Application", f"scoregate-{env}")["spec"] for env in ENVIRONMENTS}

    # when their sources, destinations and sync policies are read
    # then each follows its overlay in the one permitted repository into its own namespace; staging syncs itself
    # with prune and self-heal, production only by hand
    assert project["sourceRepos"] == [PLACEHOLDER_REPO]
    allowed = {(destination["server"], destination["namespace"]) for destination in project["destinations"]}
    for env, app in apps.items():
        assert app["project"] == "scoregate"
        assert app["source"]["repoURL"] == PLACEHOLDER_REPO
        assert (REPO_ROOT / app["source"]["path"]).resolve() == overlay_dir(REPO_ROOT, env).resolve()
        assert app["destination"]["namespace"] == NAMESPACES[env]
        assert (
            app["destination"]["server"],
            app["destination"]["namespace"],
        ) in allowed
    assert apps["staging"]["syncPolicy"]["automated"] == {
        "prune": True,
        "selfHeal": True,
    }
    assert "automated" not in apps["production"].get("syncPolicy", {})


def test_project_whitelists_every_kind_the_overlays_render(
    rendered_documents: dict[str, list[Manifest]], argocd_documents: list[Manifest]
) -> None:
    # given the kinds (with API groups) that the overlays render
    rendered_kinds = {
        (document["apiVersion"].rpartition("/")[0], document["kind"])
        for documents in rendered_documents.values()
        for document in documents
    }

    # when the project's whitelists are read
    project = find(argocd_documents, "AppProject", "scoregate")["spec"]
    whitelisted = {
        (entry["group"], entry["kind"])
        for entry in project["clusterResourceWhitelist"] + project["namespaceResourceWhitelist"]
    }

    # then Argo CD may sync every one of them (a missing kind would fail the sync, not the render)
    assert rendered_kinds <= whitelisted
