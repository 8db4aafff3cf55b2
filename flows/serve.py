"""`scoregate serve`: run the scorer bento of a registered model version, an alias, or a bento tag.

The bento tag of a registered version is the `scoregate.bento_tag` tag the training flow wrote on it; the bento itself
sits in the BentoML store under SCOREGATE_HOME. The server is `bentoml serve` in a child process (so the scorer
never imports MLflow or Prefect), listening on 127.0.0.1 unless told otherwise; `serve` returns its exit code.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
from pathlib import Path

from tasks.settings import Settings

__all__ = ["BENTO_TAG_KEY", "ServeError", "resolve_bento_tag", "serve"]

BENTO_TAG_KEY = "scoregate.bento_tag"
DEFAULT_MODEL_NAME = "scoregate-fraud"
EXIT_USAGE, EXIT_REGISTRY = 2, 5


class ServeError(LookupError):
    """No bento can be found for what was asked (an unknown version or alias, or a version without a bento)."""


def resolve_bento_tag(
    settings: Settings,
    *,
    model_name: str = DEFAULT_MODEL_NAME,
    model_version: str | None = None,
    alias: str | None = None,
    bento_tag: str | None = None,
) -> str:
    """The bento tag for exactly one of `model_version`, `alias` or `bento_tag`."""
    chosen = [value for value in (model_version, alias, bento_tag) if value]
    if len(chosen) != 1:
        raise ValueError("give exactly one of a model version, an alias or a bento tag")
    if bento_tag:
        return bento_tag
    from tasks.registry import UnknownModelVersion, get_version, version_for_alias

    if model_version:
        try:
            info = get_version(settings, model_name, model_version)
        except UnknownModelVersion as error:
            raise ServeError(str(error)) from error
    else:
        assert alias is not None
        found = version_for_alias(settings, model_name, alias)
        if found is None:
            raise ServeError(f"model {model_name!r} has no alias {alias!r}")
        info = found
    tag = info.tags.get(BENTO_TAG_KEY)
    if not tag:
        raise ServeError(
            f"model {model_name!r} version {info.version} has no {BENTO_TAG_KEY} tag: it was never packaged"
        )
    return tag


def serve(
    *,
    model_version: str | None = None,
    alias: str | None = None,
    bento_tag: str | None = None,
    model_name: str = DEFAULT_MODEL_NAME,
    host: str = "127.0.0.1",
    port: int = 3000,
    online_store: str | None = None,
    settings: Settings | None = None,
) -> int:
    """Serve the bento until the server stops (Ctrl-C stops it); returns the server's exit code."""
    settings = settings or Settings.from_env()
    try:
        tag = resolve_bento_tag(
            settings, model_name=model_name, model_version=model_version, alias=alias, bento_tag=bento_tag
        )
    except ValueError as error:
        print(f"scoregate serve: {error}", file=sys.stderr)
        return EXIT_USAGE
    except ServeError as error:
        print(f"scoregate serve: {error}", file=sys.stderr)
        return EXIT_REGISTRY
    venv_bin = Path(sys.executable).parent
    env = {**os.environ, **settings.environment(), "SCOREGATE_HOME": str(settings.home)}
    if online_store:
        env["SCOREGATE_ONLINE_STORE"] = online_store
    command = [str(venv_bin / "bentoml"), "serve", tag, "--host", host, "--port", str(port)]
    print(f"scoregate serve: {tag} on http://{host}:{port}", file=sys.stderr)
    server = subprocess.Popen(command, env=env)
    previous = None
    if threading.current_thread() is threading.main_thread():
        # A supervisor stops us with SIGTERM: pass it on, so the server does not outlive this process.
        previous = signal.signal(signal.SIGTERM, lambda *_: server.terminate())
    try:
        return server.wait()
    except KeyboardInterrupt:
        server.send_signal(signal.SIGINT)
        return server.wait()
    finally:
        if server.poll() is None:
            server.terminate()
            server.wait(timeout=30)
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)
