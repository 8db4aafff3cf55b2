"""The policy adapter: ask OPA whether a `DecisionBundle` may be promoted, and fail closed when it cannot answer.

Two engines answer the same question, `data.scoregate.promotion.decision`:

- `InProcessOpa` runs the real OPA Go engine in this process (`opa_bindings`) over a policy folder
  (see `tasks.policy_set` for the layout);
- `HttpOpa` asks an OPA server over its REST API (`POST /v1/data/scoregate/promotion/decision`) through
  `opa-python-client`; `engine_from_env` picks it when `SCOREGATE_OPA_URL` is set.

Any failure to get a well-formed answer (a policy that does not compile, an engine error, an unreachable or slow
server, an undefined or malformed result) becomes a deny under the rule `policy.compile_error` or
`policy.unavailable`: no answer never means yes.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import Any, Protocol, Self
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, StrictBool, StrictStr, ValidationError

from tasks.decision import Decision, DecisionBundle, Violation, bundle_hash
from tasks.policy_set import (
    RULE_COMPILE_ERROR,
    RULE_UNAVAILABLE,
    PolicyLoadError,
    PolicySet,
    build_engine,
    policy_digest,
    read_policy_set,
)

__all__ = [
    "DECISION_DOCUMENT",
    "OPA_URL_ENV",
    "RULE_COMPILE_ERROR",
    "RULE_UNAVAILABLE",
    "HttpOpa",
    "InProcessOpa",
    "PolicyEngine",
    "decision_from_answer",
    "engine_from_env",
    "policy_digest",
    "unavailable_decision",
]

DECISION_DOCUMENT = "scoregate.promotion.decision"
OPA_URL_ENV = "SCOREGATE_OPA_URL"


class PolicyEngine(Protocol):
    """Anything that turns a decision bundle into a decision."""

    def decide(self, bundle: DecisionBundle) -> Decision:
        """Decide one bundle; never raises for a policy or engine failure, denies instead."""
        ...


class _PolicyAnswer(BaseModel):
    """What `data.scoregate.promotion.decision` must evaluate to; anything else is a malformed answer."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    allow: StrictBool
    violations: list[Violation]
    warnings: list[StrictStr]


def unavailable_decision(rule: str, message: str, *, digest: str, bundle_digest: str) -> Decision:
    """The fail-closed answer: deny, naming why no policy answer could be had."""
    return Decision(
        allow=False,
        violations=[Violation(rule=rule, message=message)],
        warnings=[],
        policy_digest=digest,
        bundle_hash=bundle_digest,
    )


def decision_from_answer(answer: object, *, digest: str, bundle_digest: str) -> Decision:
    """Turn a raw policy result into a `Decision`, denying when it is not the documented shape."""
    try:
        parsed = _PolicyAnswer.model_validate(answer)
    except ValidationError as error:
        first = error.errors()[0]
        where = ".".join(str(part) for part in first["loc"]) or "the answer"
        message = f"the policy answer is malformed ({error.error_count()} problem(s); {where}: {first['msg']})"
        return unavailable_decision(RULE_UNAVAILABLE, message, digest=digest, bundle_digest=bundle_digest)
    violations = sorted(parsed.violations, key=lambda v: (v.rule, v.message))
    if not parsed.allow and not violations:
        # A deny must always say why; an unexplained deny is still a deny.
        violations = [
            Violation(
                rule="policy.unexplained_deny",
                message="the policy denied without naming a rule",
            )
        ]
    return Decision(
        # An answer that allows while listing violations contradicts itself: the violations win.
        allow=parsed.allow and not violations,
        violations=violations,
        warnings=list(parsed.warnings),
        policy_digest=digest,
        bundle_hash=bundle_digest,
    )


class _Closable:
    def close(self) -> None:
        raise NotImplementedError

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


# --- the in-process engine --------------------------------------------------------------------------------


class InProcessOpa(_Closable):
    """The real OPA engine in this process, loaded once from a policy folder and reused for every decision.

    A policy folder that cannot be read or compiled does not raise: `load_error` records why, and every
    decision is a deny naming it.
    """

    def __init__(
        self, policy_dir: Path, *, document: str = DECISION_DOCUMENT, policy_set: PolicySet | None = None
    ) -> None:
        self.policy_dir = policy_dir
        self.document = document
        self._batch_query = f"decisions := {{i: d | some i, b in input.bundles; d := data.{document} with input as b}}"
        self.policy_digest = ""
        self.load_error: Violation | None = None
        self._engine: Any = None
        self._policy_set: PolicySet | None = None
        try:
            self._policy_set = policy_set or read_policy_set(policy_dir)
            self.policy_digest = self._policy_set.digest
            self._engine = build_engine(self._policy_set)
        except PolicyLoadError as error:
            self.load_error = Violation(rule=error.rule, message=error.message)

    def decide(self, bundle: DecisionBundle) -> Decision:
        """Evaluate the decision document for one bundle."""
        return self.decide_document(bundle.model_dump(mode="json"), bundle_hash(bundle))

    def decide_document(self, document: Mapping[str, Any], bundle_digest: str) -> Decision:
        """Evaluate an already serialised bundle."""
        if self._engine is None:
            return self._unavailable(bundle_digest)
        try:
            # The engine keeps one prepared query per query string: evaluating the same document path every
            # time compiles the query once.
            answer = self._engine.eval_document(self.document, dict(document))
        except Exception as error:  # noqa: BLE001 - fail closed on anything the engine raises, undefined included
            message = f"policy evaluation failed: {error}"
            return unavailable_decision(
                RULE_UNAVAILABLE, message, digest=self.policy_digest, bundle_digest=bundle_digest
            )
        return decision_from_answer(answer, digest=self.policy_digest, bundle_digest=bundle_digest)

    def decide_many(self, items: Sequence[tuple[Mapping[str, Any], str]]) -> list[Decision]:
        """Decide `(serialised bundle, bundle hash)` pairs in one engine call, in order (replay uses this).

        One fixed query decides every bundle of the call with `with input as`, so the engine prepares it once
        and each call pays the C-boundary and JSON conversion once per batch rather than once per bundle.
        """
        if not items:
            return []
        if self._engine is None:
            return [self._unavailable(digest) for _, digest in items]
        try:
            result = self._engine.eval_query(self._batch_query, {"bundles": [dict(document) for document, _ in items]})
            answers = result[0]["decisions"] if result else {}
        except Exception:  # noqa: BLE001 - any failure falls back to deciding one by one
            # One bundle that makes the policy raise (a malformed timestamp, say) fails the whole query; decide
            # these one by one so only that bundle is denied.
            return [self.decide_document(document, digest) for document, digest in items]
        decisions = []
        for index, (_, digest) in enumerate(items):
            # Object keys come back from the engine as JSON strings.
            answer = answers.get(str(index)) if isinstance(answers, dict) else None
            if answer is None:
                message = f"data.{self.document} is undefined for this bundle"
                decisions.append(
                    unavailable_decision(RULE_UNAVAILABLE, message, digest=self.policy_digest, bundle_digest=digest)
                )
            else:
                decisions.append(decision_from_answer(answer, digest=self.policy_digest, bundle_digest=digest))
        return decisions

    def clone(self) -> InProcessOpa:
        """Another engine over the same policy text as this one (same digest; nothing is re-read from disk).

        An engine evaluates one query at a time; replay decides chunks on one clone per worker thread, in
        parallel (the engine's calls release the GIL). Close the clone when done.
        """
        return InProcessOpa(self.policy_dir, document=self.document, policy_set=self._policy_set)

    def _unavailable(self, bundle_digest: str) -> Decision:
        error = self.load_error or Violation(rule=RULE_UNAVAILABLE, message="the policy engine is closed")
        return unavailable_decision(error.rule, error.message, digest=self.policy_digest, bundle_digest=bundle_digest)

    def close(self) -> None:
        """Release the Go engine; later decisions deny."""
        if self._engine is not None:
            self._engine.close()
            self._engine = None


# --- an OPA server over HTTP -------------------------------------------------------------------------------


class HttpOpa(_Closable):
    """An OPA server reached over its REST API, for deployments that run OPA as a service.

    `policy_digest` is the digest of the policies the server is expected to serve (normally the same folder,
    deployed from the same commit); the server cannot be asked for a digest of this form.
    """

    def __init__(
        self,
        url: str,
        *,
        policy_digest: str,
        timeout: float = 5.0,
        retries: int = 1,
        token: str | None = None,
        document: str = DECISION_DOCUMENT,
    ) -> None:
        self.url = url
        self.policy_digest = policy_digest
        self.document = document
        self.config_error: str | None = None
        self._client: Any = None
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            self.config_error = f"{OPA_URL_ENV}={url!r} is not an http(s) URL with a host"
        elif parts.path not in ("", "/"):
            self.config_error = f"{OPA_URL_ENV}={url!r} has a path; give the server root (the client adds /v1)"
        else:
            from opa_client import OpaClient

            self._client = OpaClient(
                host=parts.hostname,
                port=parts.port or (443 if parts.scheme == "https" else 80),
                ssl=parts.scheme == "https",
                timeout=timeout,
                retries=retries,
                token=token,
            )

    def decide(self, bundle: DecisionBundle) -> Decision:
        """POST the bundle as input to /v1/data/<document path> and read `result`."""
        digest = bundle_hash(bundle)
        if self._client is None:
            message = self.config_error or "the OPA client is closed"
            return unavailable_decision(RULE_UNAVAILABLE, message, digest=self.policy_digest, bundle_digest=digest)
        package, _, rule = self.document.rpartition(".")
        try:
            response = self._client.query_rule(
                input_data=bundle.model_dump(mode="json"),
                package_path=package.replace(".", "/"),
                rule_name=rule,
            )
        except Exception as error:  # noqa: BLE001 - unreachable, timed out, HTTP error, not JSON: all deny
            message = f"OPA at {self.url} gave no answer: {_describe_http_error(error)}"
            return unavailable_decision(RULE_UNAVAILABLE, message, digest=self.policy_digest, bundle_digest=digest)
        if not isinstance(response, dict) or "result" not in response:
            # OPA answers 200 without "result" when the document is undefined (the policy is not loaded, say).
            message = f"OPA at {self.url} returned no result for data.{self.document} (undefined)"
            return unavailable_decision(RULE_UNAVAILABLE, message, digest=self.policy_digest, bundle_digest=digest)
        return decision_from_answer(response["result"], digest=self.policy_digest, bundle_digest=digest)

    def close(self) -> None:
        """Close the HTTP session; later decisions deny."""
        if self._client is not None:
            self._client.close_connection()
            self._client = None


def _describe_http_error(error: Exception) -> str:
    import requests

    if isinstance(error, requests.Timeout):
        return f"timed out ({error})"
    if isinstance(error, requests.ConnectionError):
        return f"unreachable ({error})"
    if isinstance(error, requests.HTTPError) and error.response is not None:
        return f"HTTP {error.response.status_code}: {error.response.text[:500]}"
    return f"{type(error).__name__}: {error}"


def engine_from_env(policy_dir: Path, environ: Mapping[str, str] | None = None) -> InProcessOpa | HttpOpa:
    """`HttpOpa` when SCOREGATE_OPA_URL is set, else the in-process engine over `policy_dir`."""
    env = os.environ if environ is None else environ
    url = env.get(OPA_URL_ENV, "").strip()
    if not url:
        return InProcessOpa(policy_dir)
    try:
        digest = policy_digest(policy_dir)
    except PolicyLoadError:
        digest = ""  # the server may still hold the policies; the decision records that no local digest exists
    return HttpOpa(url, policy_digest=digest)
