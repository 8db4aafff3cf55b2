"""Every rendered object is valid against its schema: Kubernetes' own (kubernetes-validate, strict, 1.32) for the
built-in kinds, and the CRD schemas of Argo Rollouts, Argo CD and prometheus-operator (tests/gitops/node) for the
custom resources. Both reject unknown fields."""

from __future__ import annotations

import copy

import kubernetes_validate  # type: ignore[import-untyped]
import pytest

from tasks.gitops_manifests import ENVIRONMENTS
from tests.gitops.helpers import (
    CORE_KINDS,
    CRD_KINDS,
    Manifest,
    find,
    validate_with_crd_schemas,
)

KUBERNETES_VERSION = "1.32.0"


def _core_objects(documents: list[Manifest]) -> list[Manifest]:
    objects = [document for document in documents if document["kind"] in CORE_KINDS]
    # The Rollout's pod template is a core PodTemplateSpec, which the Rollout CRD schema leaves partly untyped:
    # check it as the built-in kind it is.
    rollout = find(documents, "Rollout")
    objects.append(
        {
            "apiVersion": "v1",
            "kind": "PodTemplate",
            "metadata": {"name": rollout["metadata"]["name"]},
            "template": rollout["spec"]["template"],
        }
    )
    return objects


@pytest.mark.parametrize("env", ENVIRONMENTS)
def test_every_rendered_kind_has_a_schema_check(env: str, rendered_documents: dict[str, list[Manifest]]) -> None:
    # given the rendered objects of the environment
    kinds = {document["kind"] for document in rendered_documents[env]}

    # when they are sorted into built-in kinds and custom resources
    unchecked = kinds - CORE_KINDS - CRD_KINDS

    # then none falls outside both, and every kind the task asks for is there
    assert unchecked == set()
    assert {
        "Rollout",
        "AnalysisTemplate",
        "Service",
        "HorizontalPodAutoscaler",
        "PodDisruptionBudget",
    } <= kinds
    assert {"NetworkPolicy", "ServiceMonitor", "PrometheusRule"} <= kinds


@pytest.mark.parametrize("env", ENVIRONMENTS)
def test_core_objects_are_valid_kubernetes(env: str, rendered_documents: dict[str, list[Manifest]]) -> None:
    # given the built-in objects of the environment, with the Rollout's pod template as a PodTemplate
    objects = _core_objects(rendered_documents[env])

    # when each is validated strictly against the Kubernetes 1.32 schemas
    failures = []
    for document in objects:
        try:
            kubernetes_validate.validate(document, KUBERNETES_VERSION, strict=True)
        except kubernetes_validate.ValidationError as exc:
            failures.append(f"{document['kind']}/{document['metadata']['name']}: {exc.message}")

    # then none fails
    assert failures == []
    assert len(objects) >= len(CORE_KINDS)


def test_kubernetes_validation_rejects_an_unknown_field(
    rendered_documents: dict[str, list[Manifest]],
) -> None:
    # given the staging pod template with a misspelt field
    pod_template = copy.deepcopy(_core_objects(rendered_documents["staging"])[-1])
    pod_template["template"]["spec"]["containers"][0]["readinesProbe"] = {"httpGet": {"path": "/readyz"}}

    # when it is validated strictly
    # then the misspelling is an error, not silently dropped
    with pytest.raises(kubernetes_validate.ValidationError, match="readinesProbe"):
        kubernetes_validate.validate(pod_template, KUBERNETES_VERSION, strict=True)


def test_custom_resources_match_their_crd_schemas(
    rendered_documents: dict[str, list[Manifest]], argocd_documents: list[Manifest]
) -> None:
    # given the custom resources of both environments and Argo CD's project and applications
    objects = [
        document for documents in rendered_documents.values() for document in documents if document["kind"] in CRD_KINDS
    ] + argocd_documents

    # when they are validated against the CRD schemas (unknown fields included)
    results = validate_with_crd_schemas(objects)

    # then every one is valid, and every CRD kind was among them
    failures = [f"{result['kind']}/{result['name']}: {error}" for result in results for error in result["errors"]]
    assert failures == []
    assert {result["kind"] for result in results} == CRD_KINDS


def test_crd_validation_rejects_typos_and_wrong_types(
    rendered_documents: dict[str, list[Manifest]], argocd_documents: list[Manifest]
) -> None:
    # given a Rollout with a misspelt canary field, an AnalysisTemplate metric with a misspelt condition, an
    # Application whose prune is a string, and a kind the validator has no schema for
    documents = rendered_documents["production"]
    rollout = copy.deepcopy(find(documents, "Rollout"))
    canary = rollout["spec"]["strategy"]["canary"]
    canary["canaryservice"] = canary.pop("canaryService")
    template = copy.deepcopy(find(documents, "AnalysisTemplate"))
    metric = template["spec"]["metrics"][0]
    metric["sucessCondition"] = metric.pop("successCondition")
    application = copy.deepcopy(find(argocd_documents, "Application", "scoregate-staging"))
    application["spec"]["syncPolicy"]["automated"]["prune"] = "true"
    unknown_kind = {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": "scorer"},
    }

    # when they are validated
    results = validate_with_crd_schemas([rollout, template, application, unknown_kind])

    # then each is rejected for what is wrong with it
    errors = ["; ".join(result["errors"]) for result in results]
    assert "/spec/strategy/canary/canaryservice: unknown field" in errors[0]
    assert "/spec/metrics/0/sucessCondition: unknown field" in errors[1]
    assert "/spec/syncPolicy/automated/prune: must be boolean" in errors[2]
    assert "no schema for apiVersion apps/v1 kind Deployment" in errors[3]
