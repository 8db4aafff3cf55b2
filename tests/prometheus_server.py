"""A real Prometheus for tests: Debian's `prometheus` on a free 127.0.0.1 port, scraping static targets.

The static targets carry the labels a ServiceMonitor's relabelling adds in the cluster (namespace, role, model
version), so queries written for the cluster select the same series here. Storage lives in a temporary folder and the
scrape interval is short, so rates over a few seconds of traffic are there to query within a few seconds.
"""

from __future__ import annotations

import shutil
import subprocess
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import yaml

from tests.servers import ServerStartError, child_environment, free_port, stop_process

__all__ = ["PrometheusServer", "ScrapeTarget", "prometheus_config", "prometheus_server"]

HOST = "127.0.0.1"
Series = list[dict[str, Any]]


@dataclass(frozen=True)
class ScrapeTarget:
    """One `host:port` scraped at /metrics, and the labels Prometheus attaches to every sample from it."""

    address: str
    labels: Mapping[str, str] = field(default_factory=dict)


def prometheus_config(targets: Sequence[ScrapeTarget], *, job: str, interval_s: float) -> dict[str, Any]:
    """One scrape job with a static group per target (the same address may appear under several label sets)."""
    interval = f"{int(interval_s * 1000)}ms"
    return {
        "global": {"scrape_interval": interval, "scrape_timeout": interval, "evaluation_interval": interval},
        "scrape_configs": [
            {
                "job_name": job,
                "metrics_path": "/metrics",
                "static_configs": [{"targets": [target.address], "labels": dict(target.labels)} for target in targets],
            }
        ],
    }


@dataclass(frozen=True)
class PrometheusServer:
    """A running Prometheus; `query` runs an instant query and `wait_for` polls one until its answer is right."""

    url: str
    process: subprocess.Popen[bytes]
    log: Path

    def query(self, expr: str) -> Series:
        # trust_env=False: the server is on 127.0.0.1 whatever proxy the environment names.
        with httpx.Client(timeout=10, trust_env=False) as client:
            response = client.get(f"{self.url}/api/v1/query", params={"query": expr})
        body = response.json()
        if response.status_code != 200 or body.get("status") != "success":
            raise AssertionError(f"Prometheus refused {expr!r}: {body.get('error', response.text)}")
        result: Series = body["data"]["result"]
        return result

    def wait_for(self, expr: str, accept: Callable[[Series], bool], what: str, timeout_s: float = 30.0) -> Series:
        """Poll `expr` until `accept` takes its answer; fail naming `what` and the last answer after `timeout_s`."""
        deadline = time.monotonic() + timeout_s
        while True:
            answer = self.query(expr)
            if accept(answer):
                return answer
            if time.monotonic() > deadline:
                raise AssertionError(f"Prometheus never had {what} within {timeout_s:.0f} s; {expr} gave {answer}")
            time.sleep(0.25)


def _ready(url: str) -> bool:
    try:
        with httpx.Client(timeout=2, trust_env=False) as client:
            return client.get(f"{url}/-/ready").status_code == 200
    except httpx.HTTPError:
        return False


@contextmanager
def prometheus_server(
    workdir: Path,
    targets: Sequence[ScrapeTarget],
    *,
    job: str = "scoregate-scorer",
    interval_s: float = 1.0,
    timeout_s: float = 60.0,
) -> Iterator[PrometheusServer]:
    """Start Prometheus scraping `targets` every `interval_s`, yield it once ready, stop it afterwards."""
    binary = shutil.which("prometheus")
    if binary is None:
        raise AssertionError("prometheus is not installed: `apt-get install -y --no-install-recommends prometheus`")
    workdir.mkdir(parents=True, exist_ok=True)
    config = workdir / "prometheus.yml"
    config.write_text(yaml.safe_dump(prometheus_config(targets, job=job, interval_s=interval_s)), encoding="utf-8")
    port = free_port()
    url = f"http://{HOST}:{port}"
    log = workdir / f"prometheus-{port}.log"
    command = [
        binary,
        f"--config.file={config}",
        f"--storage.tsdb.path={workdir / 'data'}",
        f"--web.listen-address={HOST}:{port}",
    ]
    with log.open("ab") as sink:
        process = subprocess.Popen(
            command,
            cwd=workdir,
            env=child_environment({}),
            stdin=subprocess.DEVNULL,
            stdout=sink,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        deadline = time.monotonic() + timeout_s
        while not _ready(url):
            if process.poll() is not None or time.monotonic() > deadline:
                tail = log.read_text(encoding="utf-8", errors="replace")[-3000:]
                raise ServerStartError(f"prometheus did not become ready at {url}:\n{tail}")
            time.sleep(0.1)
        yield PrometheusServer(url=url, process=process, log=log)
    finally:
        stop_process(process)
