"""Serving speed: our bento against a plain BentoML scikit-learn service and a bare Starlette ceiling.

    .venv/bin/python benchmarks/serving.py                 # ~3 minutes on 2 cores
    .venv/bin/python benchmarks/serving.py --duration 5 --redis

One run, one worker per server, all on 127.0.0.1, load from `wrk` (Debian: `apt-get install -y wrk`) in its own
process with one thread, single-record requests at concurrency 1, 16 and 64:
  (a) ours: the sample model's bento under `bentoml serve` (embedded in-process store, prediction log on), fed the
      generated transactions in time order, one per request;
  (b) plain BentoML: a `@bentoml.service` with a `@bentoml.api` that builds a pandas DataFrame from the records and
      calls scikit-learn's `predict_proba` (the model's own coefficients), BentoML's default configuration, fed the
      model inputs (no feature engineering at all);
  (c) ceiling: a bare Starlette endpoint returning a constant under uvicorn.
It prints rps, p50 and p99 per point, the ratios a/b and a/c, whether p99 at concurrency 16 is under 15 ms, and
records per second for lists of 1,000 records (a and b, one client connection). `--redis` adds (a) with the Redis
store at concurrency 16 (needs Debian's redis-server).
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import textwrap
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import polars as pl

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tasks.sample_bento import SampleModel, build_sample_bento, train_sample_model  # noqa: E402
from tasks.settings import Settings  # noqa: E402

VENV_BIN = Path(sys.executable).parent
CONCURRENCY = (1, 16, 64)
LIST_SIZE = 1_000

WRK_SCRIPT = """
local bodies = {}
local path = nil
local position = 0
init = function(args)
  path = args[1]
  for line in io.lines(args[1]) do bodies[#bodies + 1] = line end
end
request = function()
  position = position % #bodies + 1
  return wrk.format("POST", "{PATH}", {["Content-Type"] = "application/json"}, bodies[position])
end
"""

PLAIN_SERVICE = '''
"""Plain BentoML, as its examples do: a DataFrame from the request and scikit-learn's predict_proba."""
import json
import os

import bentoml
import numpy as np
import pandas as pd
from sklearn.linear_model import LogisticRegression

SPEC = json.loads(open(os.environ["PLAIN_MODEL"]).read())


@bentoml.service(name="plain-sklearn", workers=1)
class Plain:
    def __init__(self) -> None:
        self.columns = SPEC["columns"]
        model = LogisticRegression()
        model.classes_ = np.array([0, 1])
        model.coef_ = np.array([SPEC["coefficients"]])
        model.intercept_ = np.array([SPEC["intercept"]])
        model.n_features_in_ = len(self.columns)
        self.model = model

    @bentoml.api
    def predict(self, records: list[dict]) -> list[float]:
        frame = pd.DataFrame(records)[self.columns]
        return self.model.predict_proba(frame.to_numpy())[:, 1].tolist()
'''

CEILING_APP = """
from starlette.applications import Starlette
from starlette.responses import Response
from starlette.routing import Route


async def score(request):
    await request.body()
    return Response(b'{"score":0.5}', media_type="application/json")


app = Starlette(routes=[Route("/score", score, methods=["POST"])])
"""


@dataclass(frozen=True)
class Point:
    server: str
    concurrency: int
    rps: float
    p50_ms: float
    p99_ms: float
    errors: int


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_ready(url: str, process: subprocess.Popen[bytes], timeout_s: float = 120.0) -> None:
    deadline = time.monotonic() + timeout_s
    host, port = url.removeprefix("http://").split(":")
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"server exited with {process.returncode}")
        try:
            connection = http.client.HTTPConnection(host, int(port), timeout=2)
            connection.request("GET", "/readyz")
            if connection.getresponse().status == 200:
                return
        except OSError:
            pass
        time.sleep(0.3)
    raise RuntimeError(f"{url} did not become ready")


@contextmanager
def running(command: Sequence[str], env: dict[str, str], port: int, cwd: Path, log: Path) -> Iterator[str]:
    with log.open("wb") as handle:
        process = subprocess.Popen(
            list(command), env=env, cwd=cwd, stdout=handle, stderr=subprocess.STDOUT, start_new_session=True
        )
    url = f"http://127.0.0.1:{port}"
    try:
        wait_ready(url, process)
        yield url
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGTERM)
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait()


_LATENCY = re.compile(r"^\s+(50|99)(?:\.0+)?%\s+([\d.]+)(us|ms|s)\s*$", re.MULTILINE)
_UNIT_MS = {"us": 0.001, "ms": 1.0, "s": 1000.0}


def run_wrk(url: str, path: str, bodies: Path, concurrency: int, duration: int, folder: Path) -> tuple[float, ...]:
    script = folder / f"wrk-{path.strip('/')}.lua"
    script.write_text(WRK_SCRIPT.replace("{PATH}", path), encoding="utf-8")
    command = ["wrk", "-t1", f"-c{concurrency}", f"-d{duration}s", "--latency", "-s", str(script)]
    command += [url + path, "--", str(bodies)]
    output = subprocess.run(command, capture_output=True, text=True, check=True, timeout=duration + 60).stdout
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", output).group(1))  # type: ignore[union-attr]
    latencies = {q: float(v) * _UNIT_MS[u] for q, v, u in _LATENCY.findall(output)}
    errors_match = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", output)
    socket_errors = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", output)
    errors = int(errors_match.group(1)) if errors_match else 0
    if socket_errors:
        errors += sum(int(n) for n in socket_errors.groups())
    return rps, latencies["50"], latencies["99"], float(errors)


def measure(name: str, url: str, path: str, bodies: Path, duration: int, folder: Path) -> list[Point]:
    run_wrk(url, path, bodies, 16, 2, folder)  # warm-up
    points = []
    for concurrency in CONCURRENCY:
        rps, p50, p99, errors = run_wrk(url, path, bodies, concurrency, duration, folder)
        points.append(Point(name, concurrency, rps, p50, p99, int(errors)))
        line = f"  {name:<28} c={concurrency:<3} {rps:9.0f} rps  p50 {p50:7.2f} ms  p99 {p99:8.2f} ms"
        print(f"{line}  errors {int(errors)}", flush=True)
    return points


def raw_bodies(sample: SampleModel) -> list[dict[str, object]]:
    body = sample.frame.drop("is_fraud").with_columns(pl.col("timestamp").dt.to_string("%Y-%m-%dT%H:%M:%S%.f"))
    return body.to_dicts()


def design_bodies(sample: SampleModel) -> list[dict[str, float]]:
    names = sample.model.feature_names
    return [dict(zip(names, row, strict=True)) for row in sample.prepared.train[:2000].tolist()]


def records_per_second(url: str, path: str, bodies: list[bytes], seconds: float) -> float:
    host, port = url.removeprefix("http://").split(":")
    connection = http.client.HTTPConnection(host, int(port), timeout=120)
    sent, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        connection.request("POST", path, body=bodies[sent % len(bodies)], headers={"Content-Type": "application/json"})
        response = connection.getresponse()
        response.read()
        if response.status != 200:
            raise RuntimeError(f"{url}{path} answered {response.status}")
        sent += 1
    return sent * LIST_SIZE / (time.perf_counter() - start)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--duration", type=int, default=10, help="seconds per measurement (default 10)")
    parser.add_argument("--redis", action="store_true", help="also measure (a) with the Redis store")
    args = parser.parse_args(argv)
    if shutil.which("wrk") is None:
        print("wrk is not installed: apt-get install -y wrk", file=sys.stderr)
        return 2
    folder = Path(tempfile.mkdtemp(prefix="scoregate-serving-bench-"))
    settings = Settings.from_env({"SCOREGATE_HOME": str(folder / "home")})
    print("training the sample model and building its bento ...", flush=True)
    sample = train_sample_model(folder / "model")
    bento = build_sample_bento(settings, sample)
    env = {**os.environ, **settings.environment(), "SCOREGATE_HOME": str(settings.home)}

    raw = raw_bodies(sample)
    single_raw = folder / "single-raw.jsonl"
    single_raw.write_text("\n".join(json.dumps(r) for r in raw) + "\n", encoding="utf-8")
    design = design_bodies(sample)
    single_design = folder / "single-design.jsonl"
    single_design.write_text("\n".join(json.dumps({"records": [r]}) for r in design) + "\n", encoding="utf-8")
    ceiling_bodies = single_raw

    (folder / "plain_service.py").write_text(textwrap.dedent(PLAIN_SERVICE), encoding="utf-8")
    (folder / "ceiling_app.py").write_text(textwrap.dedent(CEILING_APP), encoding="utf-8")
    (folder / "plain_model.json").write_text(
        json.dumps(
            {
                "columns": sample.model.feature_names,
                "coefficients": sample.model.coefficients,
                "intercept": sample.model.intercept,
            }
        ),
        encoding="utf-8",
    )
    points: list[Point] = []
    list_rates: dict[str, float] = {}
    print(f"single-record requests, {args.duration} s per point, wrk -t1:")

    port = free_port()
    ours = [str(VENV_BIN / "bentoml"), "serve", bento.tag, "--host", "127.0.0.1", "--port", str(port)]
    with running(ours, env, port, folder, folder / "ours.log") as url:
        points += measure("(a) scoregate bento", url, "/score", single_raw, args.duration, folder)
        chunks = [raw[i : i + LIST_SIZE] for i in range(0, len(raw) - LIST_SIZE + 1, LIST_SIZE)]
        list_rates["(a) scoregate bento"] = records_per_second(
            url, "/score", [json.dumps(c).encode() for c in chunks], args.duration
        )

    port = free_port()
    plain = [str(VENV_BIN / "bentoml"), "serve", "plain_service:Plain", "--host", "127.0.0.1", "--port", str(port)]
    plain_env = {**env, "PLAIN_MODEL": str(folder / "plain_model.json")}
    with running(plain, plain_env, port, folder, folder / "plain.log") as url:
        points += measure("(b) plain BentoML + sklearn", url, "/predict", single_design, args.duration, folder)
        chunk = json.dumps({"records": (design * 1)[:LIST_SIZE]}).encode()
        list_rates["(b) plain BentoML + sklearn"] = records_per_second(url, "/predict", [chunk], args.duration)

    port = free_port()
    bare = [str(VENV_BIN / "python"), "-m", "uvicorn", "ceiling_app:app", "--host", "127.0.0.1", "--port", str(port)]
    bare += ["--no-access-log", "--log-level", "warning", "--workers", "1"]
    with running_plain(bare, env, port, folder, folder / "ceiling.log") as url:
        points += measure("(c) bare Starlette", url, "/score", ceiling_bodies, args.duration, folder)

    if args.redis:
        points += measure_with_redis(bento.tag, env, folder, single_raw, args.duration)

    report(points, list_rates)
    return 0


@contextmanager
def running_plain(command: Sequence[str], env: dict[str, str], port: int, cwd: Path, log: Path) -> Iterator[str]:
    """Like `running`, for a server without /readyz: ready when it accepts a connection."""
    with log.open("wb") as handle:
        process = subprocess.Popen(
            list(command), env=env, cwd=cwd, stdout=handle, stderr=subprocess.STDOUT, start_new_session=True
        )
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=1):
                    break
            except OSError:
                if process.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError("the ceiling server did not start") from None
                time.sleep(0.2)
        yield f"http://127.0.0.1:{port}"
    finally:
        os.killpg(process.pid, signal.SIGTERM)
        process.wait(timeout=30)


def measure_with_redis(tag: str, env: dict[str, str], folder: Path, bodies: Path, duration: int) -> list[Point]:
    binary = shutil.which("redis-server")
    if binary is None:
        print("  (redis-server not installed: skipping the Redis store)")
        return []
    redis_port = free_port()
    redis = subprocess.Popen(
        [binary, "--port", str(redis_port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"],
        cwd=folder,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        time.sleep(0.5)
        port = free_port()
        command = [str(VENV_BIN / "bentoml"), "serve", tag, "--host", "127.0.0.1", "--port", str(port)]
        redis_env = {**env, "SCOREGATE_ONLINE_STORE": f"redis://127.0.0.1:{redis_port}/0"}
        with running(command, redis_env, port, folder, folder / "ours-redis.log") as url:
            run_wrk(url, "/score", bodies, 16, 2, folder)
            rps, p50, p99, errors = run_wrk(url, "/score", bodies, 16, duration, folder)
            print(f"  {'(a) with Redis store':<28} c=16  {rps:9.0f} rps  p50 {p50:7.2f} ms  p99 {p99:8.2f} ms")
            return [Point("(a) with Redis store", 16, rps, p50, p99, int(errors))]
    finally:
        redis.terminate()
        redis.wait(timeout=10)


def report(points: list[Point], list_rates: dict[str, float]) -> None:
    by = {(p.server, p.concurrency): p for p in points}
    print()
    print(f"| {'server':<28} | {'c':>3} | {'rps':>8} | {'p50 ms':>7} | {'p99 ms':>8} | {'errors':>6} |")
    print(f"|{'-' * 30}|{'-' * 5}|{'-' * 10}|{'-' * 9}|{'-' * 10}|{'-' * 8}|")
    for p in points:
        cells = f"{p.rps:8.0f} | {p.p50_ms:7.2f} | {p.p99_ms:8.2f} | {p.errors:>6}"
        print(f"| {p.server:<28} | {p.concurrency:>3} | {cells} |")
    print()
    for concurrency in CONCURRENCY:
        ours = by.get(("(a) scoregate bento", concurrency))
        plain = by.get(("(b) plain BentoML + sklearn", concurrency))
        ceiling = by.get(("(c) bare Starlette", concurrency))
        if ours is None or plain is None or ceiling is None:
            continue
        print(
            f"c={concurrency:<3} a/b = {ours.rps / plain.rps:5.2f}x (target >= 3)   "
            f"a/c = {ours.rps / ceiling.rps:6.1%} (target >= 60%)"
        )
    ours16 = by.get(("(a) scoregate bento", 16))
    if ours16 is not None:
        verdict = "met" if ours16.p99_ms < 15.0 else "NOT met"
        print(f"p99 of (a) at c=16: {ours16.p99_ms:.2f} ms (target < 15 ms: {verdict})")
    for name, rate in list_rates.items():
        print(f"lists of {LIST_SIZE} records, one connection: {name}: {rate:,.0f} records/s")


if __name__ == "__main__":
    sys.exit(main())
