// Validates Kubernetes objects against the schemas shipped by the kubernetes-models npm packages: the Argo Rollouts,
// Argo CD and prometheus-operator custom resources (which kubernetes-validate cannot check: it only warns on CRDs),
// and the core kinds the scorer uses.
//
// Input: a JSON array of objects (YAML already converted to JSON by the caller, so no YAML library is needed), from
// the file named by the first argument or from stdin. Output on stdout: a JSON array with one entry per object,
// {index, kind, name, errors: [...]}. Exit status 0 when every object is valid, 1 when one is not, 2 on bad input.
//
// Schema validation alone accepts unknown fields (CRD schemas do not forbid them), yet an API server with strict
// field validation rejects them and a lenient one drops them silently: a misspelt `canaryservice` would deploy a
// canary without its service. So every field is also probed: replaced in turn by [] and by 0.5, a field the schema
// knows is rejected by at least one of them; a field whose probes both pass is reported as unknown.

import { readFileSync } from "node:fs";
import { AnalysisTemplate, Rollout } from "@kubernetes-models/argo-rollouts/argoproj.io/v1alpha1";
import { AppProject, Application } from "@kubernetes-models/argo-cd/argoproj.io/v1alpha1";
import { PrometheusRule, ServiceMonitor } from "@kubernetes-models/prometheus-operator/monitoring.coreos.com/v1";
import { Namespace, PodTemplate, Service, ServiceAccount } from "kubernetes-models/v1";
import { HorizontalPodAutoscaler } from "kubernetes-models/autoscaling/v2";
import { PodDisruptionBudget } from "kubernetes-models/policy/v1";
import { NetworkPolicy } from "kubernetes-models/networking.k8s.io/v1";

const MODELS = new Map(
  [
    AnalysisTemplate,
    Rollout,
    AppProject,
    Application,
    PrometheusRule,
    ServiceMonitor,
    Namespace,
    Service,
    ServiceAccount,
    HorizontalPodAutoscaler,
    PodDisruptionBudget,
    NetworkPolicy,
  ].map((model) => [`${model.apiVersion}/${model.kind}`, model]),
);

const PROBES = [[], 0.5];

// Subtrees the probes cannot judge, by model; each is checked another way or is a known gap of the schema.
const NOT_PROBED = new Map([
  // The Rollout CRD leaves parts of the pod template untyped (resources, volumes, ...), so a probe passes there
  // whether or not the field exists. The pod template is validated as a core PodTemplateSpec instead (below).
  ["argoproj.io/v1alpha1/Rollout", ["/spec/template"]],
  // The schema generator of @kubernetes-models drops every property named "description" (it takes it for the
  // schema's own documentation), although the AppProject CRD of Argo CD declares spec.description as a string.
  ["argoproj.io/v1alpha1/AppProject", ["/spec/description"]],
]);

function schemaErrors(Model, object) {
  try {
    new Model(object).validate();
    return [];
  } catch (error) {
    if (!Array.isArray(error.errors)) throw error;
    return error.errors.map((e) => ({ path: e.instancePath, message: e.message ?? String(e.keyword) }));
  }
}

function escapePointer(key) {
  return String(key).replaceAll("~", "~0").replaceAll("/", "~1");
}

// JSON pointers of fields that no probe could get rejected.
function unknownFields(Model, root, skipped) {
  const unknown = [];
  const visit = (node, pointer) => {
    if (skipped.includes(pointer)) return;
    if (Array.isArray(node)) {
      node.forEach((item, index) => visit(item, `${pointer}/${index}`));
      return;
    }
    if (node === null || typeof node !== "object") return;
    for (const key of Object.keys(node)) {
      const path = `${pointer}/${escapePointer(key)}`;
      if (skipped.includes(path)) continue;
      const original = node[key];
      let known = false;
      for (const probe of PROBES) {
        node[key] = probe;
        const errors = schemaErrors(Model, root);
        node[key] = original;
        if (errors.some((e) => e.path === path || e.path.startsWith(`${path}/`))) {
          known = true;
          break;
        }
      }
      if (!known) unknown.push(path);
      else visit(original, path);
    }
  };
  // apiVersion/kind select the model; the probes would only re-check that choice.
  for (const key of Object.keys(root)) {
    if (key !== "apiVersion" && key !== "kind") visit(root[key], `/${escapePointer(key)}`);
  }
  return unknown;
}

function validateObject(object, index) {
  const kind = object?.kind ?? null;
  const name = object?.metadata?.name ?? null;
  const modelKey = `${object?.apiVersion}/${kind}`;
  const Model = MODELS.get(modelKey);
  if (Model === undefined) {
    return { index, kind, name, errors: [`no schema for apiVersion ${object?.apiVersion} kind ${kind}`] };
  }
  const errors = strictErrors(Model, object, NOT_PROBED.get(modelKey) ?? []);
  if (modelKey === "argoproj.io/v1alpha1/Rollout" && object.spec?.template !== undefined) {
    const podTemplate = { apiVersion: "v1", kind: "PodTemplate", metadata: { name }, template: object.spec.template };
    errors.push(
      ...strictErrors(PodTemplate, podTemplate, []).map((error) => `/spec${error} (as a core PodTemplateSpec)`),
    );
  }
  return { index, kind, name, errors };
}

function strictErrors(Model, object, skipped) {
  const errors = schemaErrors(Model, object).map((e) => `${e.path || "/"}: ${e.message}`);
  if (errors.length > 0) return errors;
  return unknownFields(Model, structuredClone(object), skipped).map((path) => `${path}: unknown field`);
}

function main() {
  let objects;
  try {
    const text = readFileSync(process.argv[2] ?? 0, "utf8");
    objects = JSON.parse(text);
  } catch (error) {
    process.stderr.write(`validate-crds: cannot read a JSON array of objects: ${error.message}\n`);
    return 2;
  }
  if (!Array.isArray(objects)) {
    process.stderr.write("validate-crds: expected a JSON array of objects\n");
    return 2;
  }
  const results = objects.map(validateObject);
  process.stdout.write(`${JSON.stringify(results, null, 2)}\n`);
  return results.every((result) => result.errors.length === 0) ? 0 : 1;
}

process.exitCode = main();
