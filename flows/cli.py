"""`scoregate`: the command line that starts the flows.

Only the standard library is imported at start-up, so `--help` answers at once; each command imports what it needs.

Exit codes:
  0  success
  1  unexpected error (a bug, or a server that failed in an unforeseen way)
  2  usage or configuration error (bad arguments, a config file that does not validate)
  3  data error (missing or unreadable file, missing columns, too many rejected rows, a bad target or feature)
  4  a policy said no (promotion denied, a policy test failed, an audit log that does not verify)
  5  packaging or registry error (bentoml build or MLflow failed; nothing was left registered)
  75 an I/O error worth retrying (`scoregate step` only; Argo Workflows retries the step)
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tasks.messages import first_line

__all__ = ["main"]

EXIT_OK, EXIT_ERROR, EXIT_USAGE, EXIT_DATA, EXIT_POLICY, EXIT_PACKAGING = 0, 1, 2, 3, 4, 5


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="scoregate",
        description="Train, gate and ship a logistic-regression risk model.",
        epilog="Exit codes: 0 ok, 1 unexpected error, 2 usage/config, 3 data, 4 policy denied, 5 packaging/registry.",
    )
    parser.add_argument(
        "--home", type=Path, help="everything is stored here (default: $SCOREGATE_HOME or ./.scoregate)"
    )
    parser.add_argument("--verbose", action="store_true", help="show Prefect's own logs")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    commands.add_parser("init", help="create the home folder and its Prefect and MLflow databases (run by set-up)")

    demo = commands.add_parser("demo", help="generate card transactions and run the whole training flow on them")
    demo.add_argument("--rows", type=int, default=200_000, help="rows to generate (default 200000)")
    demo.add_argument("--json", action="store_true", help="print the summary as JSON")
    demo.add_argument(
        "--incident",
        action="store_true",
        help="replay the skew incident: train and serve a champion, feed traffic with amounts in cents, watch drift",
    )

    train = commands.add_parser("train", help="run the training flow on your own CSV or Parquet file")
    train.add_argument("--config", type=Path, required=True, help="a YAML training config (see tasks/configs/)")
    train.add_argument("--rows", type=int, default=200_000, help="rows to generate when the config names no data")
    train.add_argument("--json", action="store_true", help="print the summary as JSON")

    serve = commands.add_parser("serve", help="serve a registered version's bento on 127.0.0.1 (bentoml serve)")
    which = serve.add_mutually_exclusive_group(required=True)
    which.add_argument("--model-version", help="the registered version whose bento to serve")
    which.add_argument("--alias", help="an MLflow alias, e.g. production or staging-candidate")
    which.add_argument("--bento", help="a bento tag from the BentoML store")
    serve.add_argument("--model", default="scoregate-fraud", help="registered model name (default scoregate-fraud)")
    serve.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    serve.add_argument("--port", type=int, default=3000, help="port (default 3000)")
    serve.add_argument(
        "--online-store", help="'memory' (default, in-process) or redis://host:port/db to share card history"
    )

    monitor = commands.add_parser("monitor", help="watch drift on the prediction log; OPA decides what to do")
    monitor.add_argument("--model", default="scoregate-fraud", help="registered model name (default scoregate-fraud)")
    monitor.add_argument("--env", default="production", choices=["staging", "production"])
    monitor.add_argument("--window-hours", type=float, default=1.0, help="length of the watched window (default 1)")
    monitor.add_argument("--window-end", help="end of the window, ISO 8601 (default now; no offset means UTC)")
    monitor.add_argument("--policies", type=Path, help="policy folder (default: the repository's policies/)")
    monitor.add_argument("--dry-run", action="store_true", help="decide and audit, but do not retrain or roll back")
    monitor.add_argument("--retrain-rows", type=int, default=200_000, help="rows a decided retrain generates")
    monitor.add_argument("--json", action="store_true", help="print the outcome as JSON")

    promote = commands.add_parser("promote", help="gate a registered version with OPA and open its GitOps change")
    promote.add_argument("--model", default="scoregate-fraud", help="registered model name (default scoregate-fraud)")
    promote.add_argument("--model-version", help="the registered version to promote")
    promote.add_argument(
        "--finalize", action="store_true", help="after a passed canary: move the champion alias to the candidate"
    )
    promote.add_argument("--env", required=True, choices=["staging", "production"])
    promote.add_argument("--requested-by", help="who asks (default: the current user)")
    promote.add_argument("--approved-by", action="append", default=[], help="an approver (repeatable)")
    promote.add_argument("--policies", type=Path, help="policy folder (default: the project's policies/)")
    promote.add_argument("--json", action="store_true", help="print the outcome as JSON")

    rollback = commands.add_parser("rollback", help="revert the live promotion in Git, move the alias back, audit")
    rollback.add_argument("--env", required=True, choices=["staging", "production"])
    rollback.add_argument("--reason", required=True, help="why, for the audit trail (for example INC-123)")
    rollback.add_argument("--actor", help="who rolls back (default: the current user)")

    history = commands.add_parser("history", help="which version was live when, from Git")
    history.add_argument("--env", required=True, choices=["staging", "production"])
    history.add_argument("--at", help="only the version live at this ISO time")

    canary = commands.add_parser("canary", help="judge a running canary with the AnalysisTemplate's queries")
    canary_commands = canary.add_subparsers(dest="canary_command", required=True, metavar="ACTION")
    check = canary_commands.add_parser("check", help="run every canary metric against Prometheus; exit 4 on failure")
    check.add_argument("--prometheus", required=True, help="Prometheus base URL, for example http://127.0.0.1:9090")
    check.add_argument("--env", required=True, choices=["staging", "production"])
    check.add_argument("--namespace", help="Kubernetes namespace label (default: scoregate-<env>)")

    export = commands.add_parser("export", help="write the training flow for other engines")
    export_commands = export.add_subparsers(dest="export_command", required=True, metavar="TARGET")
    argo = export_commands.add_parser("argo", help="Argo Workflows WorkflowTemplate + CronWorkflow (hera)")
    argo.add_argument("--out", type=Path, help="output folder (default gitops/argo-workflows)")
    argo.add_argument("--image", help="the scoregate image every step runs")
    argo.add_argument("--check", action="store_true", help="exit 1 when the committed YAML is out of date")

    from flows.training_steps import add_step_parser

    add_step_parser(commands)

    schemas = commands.add_parser("schemas", help="write (or check) the published JSON Schemas")
    schemas.add_argument("--check", action="store_true", help="exit 1 when a committed schema is out of date")

    policy = commands.add_parser("policy", help="test, check and replay the Rego policies")
    policy_commands = policy.add_subparsers(dest="policy_command", required=True, metavar="ACTION")
    for name, text in (("test", "run every test_ rule with the OPA engine"), ("check", "compile, validate examples")):
        sub = policy_commands.add_parser(name, help=text)
        sub.add_argument("--policies", type=Path, default=_project_root() / "policies")
    replay = policy_commands.add_parser("replay", help="re-decide stored decisions under the working-tree policies")
    replay.add_argument("--policies", type=Path, default=_project_root() / "policies")
    replay.add_argument("--since", help="only decisions from this ISO date on")
    replay.add_argument("--out", type=Path, help="write the Markdown report here")

    audit = commands.add_parser("audit", help="the hash-chained audit log")
    audit_commands = audit.add_subparsers(dest="audit_command", required=True, metavar="ACTION")
    verify = audit_commands.add_parser("verify", help="find edited, removed or reordered records")
    verify.add_argument("--log", type=Path, help="the audit log (default: $SCOREGATE_HOME/audit/audit.jsonl)")
    return parser


def _project_root() -> Path:
    return Path(__file__).resolve().parent.parent


def _prepare_environment(args: argparse.Namespace) -> Any:
    """Set the variables the libraries read at import time, before any of them is imported."""
    if args.home is not None:
        os.environ["SCOREGATE_HOME"] = str(args.home.resolve())
    from tasks.settings import Settings, quiet_environment, quiet_library_logs

    settings = Settings.from_env()
    quiet_environment(settings)
    # A fresh Prefect database can take longer than the default 20 s to come up on a busy 2-core machine.
    os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "120")
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    if not args.verbose:
        quiet_library_logs()
        os.environ.setdefault("PREFECT_LOGGING_LEVEL", "CRITICAL")
        os.environ.setdefault("PREFECT_LOGGING_TO_API_WHEN_MISSING_FLOW", "ignore")
    return settings


def _print_summary(summary: dict[str, Any]) -> None:
    from rich.console import Console
    from rich.table import Table

    console = Console()
    console.print(f"[bold green]Model {summary['model_name']} version {summary['model_version']}[/] registered.")
    console.print(f"  MLflow run   {summary['run_id']}")
    console.print(f"  bento        {summary['bento_tag']}  (sha256 {summary['bento_digest'][:16]}...)")
    rows = summary["rows"]
    console.print(
        f"  rows         read {rows['read']}, rejected {rows['rejected']}, "
        f"train {rows['train']} / valid {rows['valid']} / test {rows['test']}"
    )
    console.print(f"  threshold    {summary['threshold']:.4f} ({summary['threshold_method']})")
    table = Table(title="Test metrics (95% bootstrap interval)")
    for column in ("metric", "value", "interval"):
        table.add_column(column)
    for name in ("roc_auc", "pr_auc", "log_loss", "brier", "ece", "ks", "precision", "recall", "f1"):
        metric = summary["metrics"].get(name)
        if metric:
            table.add_row(name, f"{metric['value']:.4f}", f"[{metric['ci_low']:.4f}, {metric['ci_high']:.4f}]")
    console.print(table)
    console.print(f"  reports      {summary['reports_dir']}")
    if summary.get("quarantine_path"):
        console.print(f"  quarantine   {summary['quarantine_path']}")
    for warning in summary["warnings"]:
        console.print(f"[yellow]warning:[/] {warning}")


@dataclass
class _Stage:
    name: str
    started: float


def _run_training(args: argparse.Namespace, config_path: Path | None) -> int:
    settings = _prepare_environment(args)
    from tasks.config import ConfigError, load_training_config

    if args.rows < 1:
        print("scoregate: --rows must be at least 1", file=sys.stderr)
        return EXIT_USAGE
    try:
        config = load_training_config(config_path) if config_path is not None else None
    except ConfigError as error:
        print(f"scoregate: {error}", file=sys.stderr)
        return EXIT_USAGE
    from rich.console import Console

    console = Console(stderr=True)
    started = time.perf_counter()
    current = _Stage(name="", started=started)

    def show(name: str) -> None:
        now = time.perf_counter()
        if current.name:
            console.print(f"[green]done[/] {current.name} ({now - current.started:.1f} s)")
        current.name, current.started = name, now
        console.print(f"[cyan]...[/] {name}")

    from flows.progress import add_listener, remove_listener

    add_listener(show)
    console.print(f"[dim]scoregate home: {settings.home}[/]")
    try:
        from flows.training import training_flow

        summary = training_flow(config=config.model_dump(mode="json") if config else None, rows=args.rows)
    except BaseException as error:  # noqa: BLE001 - every failure becomes a one-line message and an exit code
        remove_listener(show)
        return _report_failure(error)
    remove_listener(show)
    console.print(f"[green]done[/] {current.name} ({time.perf_counter() - current.started:.1f} s)")
    console.print(f"[dim]total {time.perf_counter() - started:.1f} s[/]")
    if args.json:
        print(json.dumps(summary, indent=2, sort_keys=True))
    else:
        _print_summary(summary)
    return EXIT_OK


def _report_failure(error: BaseException) -> int:
    from tasks.dataset import FeatureValidationError
    from tasks.ingest import IngestError
    from tasks.package import BentoBuildError
    from tasks.split import SplitError
    from tasks.train import ThresholdError

    if isinstance(error, KeyboardInterrupt):
        print("scoregate: interrupted", file=sys.stderr)
        return EXIT_ERROR
    message = first_line(error)
    if isinstance(error, IngestError | FeatureValidationError | SplitError | ThresholdError):
        print(f"scoregate: data error: {message}", file=sys.stderr)
        return EXIT_DATA
    from flows.rollback import NothingToRollBack
    from tasks.registry import UnknownModelVersion

    if isinstance(error, UnknownModelVersion | NothingToRollBack):
        print(f"scoregate: {message}", file=sys.stderr)
        return EXIT_USAGE
    if isinstance(error, BentoBuildError):
        print(f"scoregate: packaging error: {message}", file=sys.stderr)
        return EXIT_PACKAGING
    print(f"scoregate: error: {type(error).__name__}: {message}", file=sys.stderr)
    return EXIT_ERROR


def _run_promotion(args: argparse.Namespace) -> int:
    settings = _prepare_environment(args)
    if args.finalize:
        import getpass

        from flows.rollback import finalize_promotion

        try:
            version = finalize_promotion(settings, args.model, args.env, args.requested_by or getpass.getuser())
        except BaseException as error:  # noqa: BLE001 - one line and an exit code
            return _report_failure(error)
        print(f"{args.model} v{version} is now the {args.env} champion (alias {args.env})")
        return EXIT_OK
    if not args.model_version:
        print("scoregate: promote needs --model-version (or --finalize)", file=sys.stderr)
        return EXIT_USAGE
    try:
        from flows.promotion import promotion_flow

        outcome = promotion_flow(
            model_name=args.model,
            model_version=args.model_version,
            environment=args.env,
            requested_by=args.requested_by,
            approvals=args.approved_by,
            policy_dir=str(args.policies) if args.policies else None,
        )
    except BaseException as error:  # noqa: BLE001 - every failure becomes a one-line message and an exit code
        return _report_failure(error)
    if args.json:
        print(json.dumps(outcome, indent=2, sort_keys=True))
    else:
        verdict = "allowed" if outcome["allow"] else "denied"
        print(
            f"Promotion of {outcome['model_name']} v{outcome['model_version']} to {outcome['environment']}: {verdict}"
        )
        for violation in outcome["violations"]:
            print(f"  deny  {violation['rule']}: {violation['message']}")
        for warning in outcome["warnings"]:
            print(f"  warn  {warning}")
        if outcome["branch"]:
            print(f"  branch {outcome['branch']} at {outcome['commit']}; alias {outcome['candidate_alias']} moved")
        print(f"  report {outcome['report_path']}")
    return EXIT_OK if outcome["allow"] else EXIT_POLICY


def _run_rollback(args: argparse.Namespace) -> int:
    _prepare_environment(args)
    try:
        from flows.rollback import rollback_flow

        outcome = rollback_flow(environment=args.env, reason=args.reason, actor=args.actor)
    except BaseException as error:  # noqa: BLE001 - one line and an exit code
        return _report_failure(error)
    print(
        f"Rolled back {args.env} from v{outcome['from_version']} to v{outcome['to_version']}: reverted "
        f"{outcome['reverted_commit'][:12]} with {outcome['revert_commit'][:12]} on {outcome['branch']}; "
        f"alias {args.env} moved; audited"
    )
    return EXIT_OK


def _run_history(args: argparse.Namespace) -> int:
    settings = _prepare_environment(args)
    from datetime import datetime

    from flows.rollback import history

    try:
        at = datetime.fromisoformat(args.at) if args.at else None
        rows = history(settings, args.env, at)
    except BaseException as error:  # noqa: BLE001 - one line and an exit code
        return _report_failure(error)
    for row in rows:
        print(
            f"{row['since']}  v{row['model_version']:<12} {row['bento_tag']:<40} {row['commit'][:12]}  {row['change']}"
        )
    return EXIT_OK


def _run_serve(args: argparse.Namespace) -> int:
    settings = _prepare_environment(args)
    from flows.serve import serve

    return serve(
        model_version=args.model_version,
        alias=args.alias,
        bento_tag=args.bento,
        model_name=args.model,
        host=args.host,
        port=args.port,
        online_store=args.online_store,
        settings=settings,
    )


def _run_monitor(args: argparse.Namespace) -> int:
    _prepare_environment(args)
    from flows.monitoring import monitor_command

    return monitor_command(
        model_name=args.model,
        environment=args.env,
        window_hours=args.window_hours,
        window_end=args.window_end,
        policy_dir=args.policies,
        act=not args.dry_run,
        retrain_rows=args.retrain_rows,
        as_json=args.json,
    )


def _run_incident(args: argparse.Namespace) -> int:
    _prepare_environment(args)
    from flows.incident import IncidentError, run_incident_demo

    try:
        summary = run_incident_demo(rows=args.rows)
    except IncidentError as error:
        print(f"scoregate: {error}", file=sys.stderr)
        return EXIT_USAGE
    except BaseException as error:  # noqa: BLE001 - one line and an exit code
        return _report_failure(error)
    if args.json:
        print(json.dumps(summary, indent=2, sort_keys=True, default=str))
    else:
        _print_incident(summary)
    return EXIT_OK


def _print_incident(summary: dict[str, Any]) -> None:
    """One row per drift window of the replay: what the watch saw, what the policy decided, what was done."""
    from rich.console import Console
    from rich.table import Table

    console = Console()
    versions = summary["versions"]
    console.print(
        f"[bold]The skew incident, replayed[/]: {summary['model_name']} v{versions['champion']} is the production "
        f"champion (v{versions['earlier']} before it)"
    )
    table = Table(title="Drift windows")
    for column in ("window", "rows", "score PSI", "most drifted (PSI)", "decision", "carried out"):
        table.add_column(column)
    for window in summary["windows"]:
        drifted = ", ".join(f"{name} {window['feature_psi'][name]:.2f}" for name in window["most_drifted"][:3])
        result = window["result"]
        done = result["status"]
        if result.get("new_version"):
            done += f" (v{result['new_version']} trained)"
        if result.get("rolled_back_to"):
            done += f" (back to v{result['rolled_back_to']})"
        table.add_row(
            window["window"], str(window["rows"]), f"{window['score_psi']:.3f}", drifted or "-", window["action"], done
        )
    console.print(table)
    for window in summary["windows"]:
        console.print(f"  {window['window']}: {window['reasons'][0]}")
    verified = "verifies" if summary["audit_verified"] else "[bold red]does NOT verify[/]"
    console.print(
        f"production alias now on v{summary['production_alias_after']}; the audit log holds "
        f"{summary['audit_records']} records and {verified}. Home: {summary['home']} (--json for everything)"
    )


def _run_canary(args: argparse.Namespace) -> int:
    from tasks.canary import check_canary, load_canary_metrics, render_verdicts

    metrics = load_canary_metrics(namespace=args.namespace or f"scoregate-{args.env}")
    verdicts = check_canary(args.prometheus, metrics)
    print(render_verdicts(verdicts))
    return EXIT_OK if all(v.passed for v in verdicts) else EXIT_POLICY


def _run_init(args: argparse.Namespace) -> int:
    """Create the stores a first run would otherwise create on the clock (Prefect's migrations take 10-20 s)."""
    settings = _prepare_environment(args)
    from prefect import flow

    from tasks.registry import mlflow_client

    flow(name="scoregate-init")(lambda: None)()
    mlflow_client(settings).search_experiments()
    print(f"scoregate home ready: {settings.home}")
    return EXIT_OK


def _run_export(args: argparse.Namespace) -> int:
    from flows import argo_export

    argv = [*(["--out", str(args.out)] if args.out else []), *(["--image", args.image] if args.image else [])]
    return argo_export.main([*argv, *(["--check"] if args.check else [])])


def _run_schemas(args: argparse.Namespace) -> int:
    from tasks.published_schemas import write_schemas

    stale = write_schemas(check_only=args.check)
    for path in stale:
        print(f"{'out of date' if args.check else 'wrote'}: {path}")
    return EXIT_ERROR if (args.check and stale) else EXIT_OK


def _run_policy(args: argparse.Namespace) -> int:
    from flows import policy_commands

    if args.policy_command == "test":
        return _policy_exit(policy_commands.policy_test(args.policies))
    if args.policy_command == "check":
        return _policy_exit(policy_commands.policy_check(args.policies))
    from datetime import datetime

    settings = _prepare_environment(args)
    since = datetime.fromisoformat(args.since) if args.since else None
    store = settings.home / "decisions"
    return _policy_exit(policy_commands.policy_replay(args.policies, store, since, args.out))


def _policy_exit(code: int) -> int:
    return EXIT_OK if code == 0 else EXIT_POLICY


def _run_audit(args: argparse.Namespace) -> int:
    from flows import policy_commands

    settings = _prepare_environment(args)
    log = args.log if args.log is not None else settings.home / "audit" / "audit.jsonl"
    return _policy_exit(policy_commands.audit_verify(log))


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.command == "init":
        return _run_init(args)
    if args.command == "demo":
        return _run_incident(args) if args.incident else _run_training(args, None)
    if args.command == "serve":
        return _run_serve(args)
    if args.command == "monitor":
        return _run_monitor(args)
    if args.command == "train":
        return _run_training(args, args.config)
    if args.command == "schemas":
        return _run_schemas(args)
    if args.command == "promote":
        return _run_promotion(args)
    if args.command == "export":
        return _run_export(args)
    if args.command == "canary":
        return _run_canary(args)
    if args.command == "rollback":
        return _run_rollback(args)
    if args.command == "history":
        return _run_history(args)
    if args.command == "policy":
        return _run_policy(args)
    if args.command == "step":
        from flows.training_steps import step_command

        return step_command(args)
    return _run_audit(args)


if __name__ == "__main__":
    raise SystemExit(main())
