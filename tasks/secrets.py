"""Secrets: the one module that reads them, from Vault (or OpenBao) KV v2 through `hvac`.

A secret is named by a `SecretRef` (a KV v2 path under the mount, and a key in it) and comes back as a pydantic
`SecretStr`, whose `repr`/`str` show asterisks, so a secret printed or logged by mistake stays hidden. How to reach
Vault is a `SecretsSettings` read from the environment:

| variable | meaning |
|---|---|
| `SCOREGATE_VAULT_ADDR` | Vault's URL, e.g. `https://vault.example:8200` |
| `SCOREGATE_VAULT_AUTH` | `token` (default), `approle` or `kubernetes` |
| `VAULT_TOKEN` | the token, for `token` auth |
| `SCOREGATE_VAULT_ROLE_ID`, `SCOREGATE_VAULT_SECRET_ID` | the AppRole's role id and secret id, for `approle` |
| `SCOREGATE_VAULT_K8S_ROLE`, `SCOREGATE_VAULT_K8S_JWT_PATH` | the Vault role and the service-account JWT file (k8s) |
| `SCOREGATE_VAULT_AUTH_MOUNT` | where the auth method is mounted (default: the method's name) |
| `SCOREGATE_VAULT_MOUNT` | the KV v2 mount (default `secret`) |
| `SCOREGATE_VAULT_NAMESPACE` | a Vault namespace (Enterprise / OpenBao namespaces) |
| `SCOREGATE_VAULT_TIMEOUT` | seconds per request (default 10) |
| `SCOREGATE_VAULT_CACERT` | a CA bundle for Vault's TLS certificate |
| `SCOREGATE_ALLOW_ENV_SECRETS` | `1` on a laptop only: then `SCOREGATE_SECRET_<NAME>` variables are read first |

Everything fails closed: a secret that is missing, denied, or behind a sealed or unreachable Vault raises a
`SecretsError` whose message names the path and key (never the value), and nothing falls back to a default.
Environment variables are read only when `SCOREGATE_ALLOW_ENV_SECRETS=1` says so.

Plain Python: no Prefect import; `hvac` is imported on first use.
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Final, Literal, get_args

from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator

__all__ = [
    "DEFAULT_K8S_JWT_PATH",
    "GITLAB_TOKEN",
    "GIT_PASSWORD",
    "GIT_USERNAME",
    "MLFLOW_PASSWORD",
    "MLFLOW_USERNAME",
    "AuthMethod",
    "Credentials",
    "SecretAccessDeniedError",
    "SecretNotFoundError",
    "SecretRef",
    "SecretStore",
    "SecretsAuthError",
    "SecretsConfigError",
    "SecretsError",
    "SecretsSettings",
    "SecretsUnavailableError",
    "git_credentials",
    "gitlab_token",
    "mlflow_credentials",
    "mlflow_environment",
    "secret_store",
]

logger = logging.getLogger(__name__)

AuthMethod = Literal["token", "approle", "kubernetes"]
DEFAULT_K8S_JWT_PATH: Final = Path("/var/run/secrets/kubernetes.io/serviceaccount/token")
ENV_SECRET_PREFIX: Final = "SCOREGATE_SECRET_"
_TRUE: Final = frozenset({"1", "true", "yes", "on"})


class SecretRef(BaseModel):
    """Where one secret lives: a KV v2 `path` under the configured mount, and a `key` of the data stored there.

    `name` is the secret's short name for a laptop's `SCOREGATE_SECRET_<NAME>` variable; without one it is made
    from the path and the key (`scoregate/mlflow` + `password` -> `SCOREGATE_SECRET_SCOREGATE_MLFLOW_PASSWORD`).
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    path: str = Field(min_length=1)
    key: str = Field(min_length=1)
    name: str | None = Field(default=None, pattern=r"^[A-Z][A-Z0-9_]*$")

    @field_validator("path")
    @classmethod
    def _plain_path(cls, value: str) -> str:
        path = value.strip("/")
        if not path:
            raise ValueError("a secret path must not be empty")
        # KV v2's HTTP API puts `data/` after the mount; hvac adds it, so a path that starts with it is a mistake.
        if path.startswith("data/"):
            raise ValueError(f"give the KV v2 path without the API's 'data/' prefix: {value!r}")
        return path

    @property
    def env_name(self) -> str:
        """The environment variable a laptop may set instead (read only with `SCOREGATE_ALLOW_ENV_SECRETS=1`)."""
        stem = self.name or re.sub(r"[^A-Z0-9]+", "_", f"{self.path}_{self.key}".upper()).strip("_")
        return f"{ENV_SECRET_PREFIX}{stem}"

    def __str__(self) -> str:
        return f"{self.path}#{self.key}"


# The secrets the pipeline itself needs. Their paths are relative to the KV v2 mount (`SCOREGATE_VAULT_MOUNT`).
MLFLOW_USERNAME: Final = SecretRef(path="scoregate/mlflow", key="username", name="MLFLOW_USERNAME")
MLFLOW_PASSWORD: Final = SecretRef(path="scoregate/mlflow", key="password", name="MLFLOW_PASSWORD")
GITLAB_TOKEN: Final = SecretRef(path="scoregate/gitlab", key="token", name="GITLAB_TOKEN")
GIT_USERNAME: Final = SecretRef(path="scoregate/git", key="username", name="GIT_USERNAME")
GIT_PASSWORD: Final = SecretRef(path="scoregate/git", key="password", name="GIT_PASSWORD")


class SecretsError(Exception):
    """A secret could not be had. The message names the path and key, never a value."""

    def __init__(self, message: str, ref: SecretRef | None = None) -> None:
        super().__init__(message)
        self.ref = ref


class SecretsConfigError(SecretsError):
    """The settings are incomplete or invalid (the message names the variable)."""


class SecretsAuthError(SecretsError):
    """Logging in to Vault failed: a rejected token, a bad AppRole, an unreadable service-account token."""


class SecretsUnavailableError(SecretsError):
    """Vault is sealed, down or unreachable."""


class SecretNotFoundError(SecretsError):
    """The path does not exist (or its latest version is deleted), or has no such key."""


class SecretAccessDeniedError(SecretsError):
    """Vault's policies do not let this identity read the path."""


class SecretsSettings(BaseModel):
    """How to reach Vault and log in; `from_env` reads the variables listed in the module's docstring."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    addr: str | None = None
    auth: AuthMethod = "token"
    token: SecretStr | None = None
    role_id: str | None = None
    secret_id: SecretStr | None = None
    kubernetes_role: str | None = None
    kubernetes_jwt_path: Path = DEFAULT_K8S_JWT_PATH
    auth_mount: str | None = None
    mount_point: str = "secret"
    namespace: str | None = None
    timeout_s: float = Field(default=10.0, gt=0)
    ca_cert: Path | None = None
    allow_env: bool = False

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> SecretsSettings:
        """Settings from `environ` (default `os.environ`); an invalid value raises `SecretsConfigError`."""
        env = os.environ if environ is None else environ

        def get(name: str) -> str | None:
            value = env.get(name, "").strip()
            return value or None

        auth = (get("SCOREGATE_VAULT_AUTH") or "token").lower()
        if auth not in get_args(AuthMethod):
            raise SecretsConfigError(f"SCOREGATE_VAULT_AUTH={auth!r} is not one of {', '.join(get_args(AuthMethod))}")
        timeout_text = get("SCOREGATE_VAULT_TIMEOUT") or "10"
        try:
            timeout_s = float(timeout_text)
        except ValueError:
            raise SecretsConfigError(f"SCOREGATE_VAULT_TIMEOUT={timeout_text!r} is not a number of seconds") from None
        if not timeout_s > 0:
            raise SecretsConfigError(f"SCOREGATE_VAULT_TIMEOUT={timeout_text!r} must be more than 0 seconds")
        token, secret_id = get("VAULT_TOKEN"), get("SCOREGATE_VAULT_SECRET_ID")
        jwt_path, ca_cert = get("SCOREGATE_VAULT_K8S_JWT_PATH"), get("SCOREGATE_VAULT_CACERT")
        return cls(
            addr=get("SCOREGATE_VAULT_ADDR"),
            auth=auth,
            token=SecretStr(token) if token else None,
            role_id=get("SCOREGATE_VAULT_ROLE_ID"),
            secret_id=SecretStr(secret_id) if secret_id else None,
            kubernetes_role=get("SCOREGATE_VAULT_K8S_ROLE"),
            kubernetes_jwt_path=Path(jwt_path) if jwt_path else DEFAULT_K8S_JWT_PATH,
            auth_mount=get("SCOREGATE_VAULT_AUTH_MOUNT"),
            mount_point=(get("SCOREGATE_VAULT_MOUNT") or "secret").strip("/"),
            namespace=get("SCOREGATE_VAULT_NAMESPACE"),
            timeout_s=timeout_s,
            ca_cert=Path(ca_cert) if ca_cert else None,
            allow_env=(get("SCOREGATE_ALLOW_ENV_SECRETS") or "").lower() in _TRUE,
        )


class Credentials(BaseModel):
    """A user name and password (or token) pair; both stay wrapped."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    username: SecretStr
    password: SecretStr


class SecretStore:
    """Reads secrets by `SecretRef`: from the environment first when allowed, else from Vault KV v2.

    Logs in on the first read and reads each path once (its keys are kept, wrapped, for the store's lifetime).
    `environ` is where allowed `SCOREGATE_SECRET_<NAME>` variables are looked up (default `os.environ`).
    """

    def __init__(self, settings: SecretsSettings, environ: Mapping[str, str] | None = None) -> None:
        self.settings = settings
        self._environ = os.environ if environ is None else environ
        self._client: Any = None
        self._paths: dict[str, dict[str, SecretStr | None]] = {}

    def __enter__(self) -> SecretStore:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def close(self) -> None:
        """Forget the Vault session and every value read."""
        if self._client is not None:
            self._client.adapter.close()
        self._client = None
        self._paths.clear()

    def read(self, ref: SecretRef) -> SecretStr:
        """The secret at `ref`; raises a `SecretsError` naming `ref` when it cannot be read."""
        if self.settings.allow_env:
            value = self._environ.get(ref.env_name, "")
            if value:
                # Loud on purpose: an environment variable is a laptop's shortcut, never a deployment's.
                logger.warning("secret %s read from %s (SCOREGATE_ALLOW_ENV_SECRETS is on)", ref, ref.env_name)
                return SecretStr(value)
        if self.settings.addr is None:
            hint = (
                f"and {ref.env_name} is not set"
                if self.settings.allow_env
                else f"(on a laptop, SCOREGATE_ALLOW_ENV_SECRETS=1 lets {ref.env_name} stand in)"
            )
            raise SecretsConfigError(
                f"cannot read secret {self._where(ref)}: SCOREGATE_VAULT_ADDR is not set {hint}", ref
            )
        data = self._read_path(ref)
        if ref.key not in data:
            raise SecretNotFoundError(f"secret {self._where(ref)} not found: the path has no key {ref.key!r}", ref)
        secret = data[ref.key]
        if secret is None:
            raise SecretsError(f"secret {self._where(ref)} is not a string (a nested object or list)", ref)
        logger.debug("read secret %s from Vault at %s", ref, self.settings.addr)
        return secret

    def _where(self, ref: SecretRef) -> str:
        return f"'{self.settings.mount_point}/{ref.path}' key '{ref.key}'"

    def _read_path(self, ref: SecretRef) -> dict[str, SecretStr | None]:
        cached = self._paths.get(ref.path)
        if cached is not None:
            return cached
        client = self._logged_in(ref)
        try:
            response = self._read_version(client, ref)
        except SecretAccessDeniedError:
            # An AppRole or Kubernetes login token lives for its role's TTL: a long run may outlive it, and Vault
            # then answers 403 like a denied path. Log in once more; a real denial is denied again.
            if self.settings.auth == "token" or self._still_authenticated(client):
                raise
            logger.info("the Vault login (%s auth) expired; logging in again to read %s", self.settings.auth, ref)
            client.adapter.close()
            self._client = None
            response = self._read_version(self._logged_in(ref), ref)
        raw = response.get("data", {}).get("data") or {}
        # Wrap at once, so no plain value outlives this function; non-strings are kept as None to fail on read.
        data = {key: SecretStr(value) if isinstance(value, str) else None for key, value in raw.items()}
        self._paths[ref.path] = data
        return data

    def _read_version(self, client: Any, ref: SecretRef) -> Any:
        """The latest version of `ref`'s path, with hvac's errors turned into ours."""
        from hvac import exceptions

        where = f"'{self.settings.mount_point}/{ref.path}'"
        try:
            return client.secrets.kv.v2.read_secret_version(
                path=ref.path, mount_point=self.settings.mount_point, raise_on_deleted_version=True
            )
        except exceptions.Forbidden:
            raise SecretAccessDeniedError(
                f"permission denied reading secret {where} (key '{ref.key}'): "
                f"the {self.settings.auth} identity's Vault policies do not allow it",
                ref,
            ) from None
        except exceptions.InvalidPath:
            raise SecretNotFoundError(
                f"secret {where} (key '{ref.key}') not found: no such path in the KV v2 mount "
                f"'{self.settings.mount_point}', or its latest version is deleted",
                ref,
            ) from None
        except (exceptions.VaultError, OSError) as error:
            raise self._unavailable(error, f"cannot read secret {where} (key '{ref.key}')", ref) from None

    @staticmethod
    def _still_authenticated(client: Any) -> bool:
        try:
            return bool(client.is_authenticated())
        except Exception:  # noqa: BLE001 - unknown means "keep the denial": failing closed is the safe answer
            return True

    def _new_client(self, namespaced: bool = True) -> Any:
        import hvac

        settings = self.settings
        return hvac.Client(
            url=settings.addr,
            namespace=settings.namespace if namespaced else None,
            timeout=settings.timeout_s,
            verify=str(settings.ca_cert) if settings.ca_cert else True,
        )

    def _logged_in(self, ref: SecretRef) -> Any:
        """An authenticated hvac client (logging in on first use)."""
        if self._client is not None:
            return self._client
        from hvac import exceptions

        settings = self.settings
        client = self._new_client()
        mount = settings.auth_mount or settings.auth
        doing = f"logging in to Vault at {settings.addr} with {settings.auth} auth (mount '{mount}') to read {ref}"
        try:
            if settings.auth == "token":
                if settings.token is None:
                    raise SecretsConfigError(f"{doing}: VAULT_TOKEN is not set", ref)
                client.token = settings.token.get_secret_value()
                # A rejected token would otherwise look like a denied path on the first read.
                if not client.is_authenticated():
                    raise SecretsAuthError(f"{doing}: the token was rejected (expired, revoked or wrong)", ref)
            elif settings.auth == "approle":
                if settings.role_id is None or settings.secret_id is None:
                    raise SecretsConfigError(
                        f"{doing}: SCOREGATE_VAULT_ROLE_ID and SCOREGATE_VAULT_SECRET_ID must both be set", ref
                    )
                client.auth.approle.login(
                    role_id=settings.role_id, secret_id=settings.secret_id.get_secret_value(), mount_point=mount
                )
            else:
                if settings.kubernetes_role is None:
                    raise SecretsConfigError(f"{doing}: SCOREGATE_VAULT_K8S_ROLE is not set", ref)
                jwt = _read_service_account_token(settings.kubernetes_jwt_path, doing, ref)
                client.auth.kubernetes.login(role=settings.kubernetes_role, jwt=jwt, mount_point=mount)
        except SecretsError:
            client.adapter.close()
            raise
        except (exceptions.InvalidRequest, exceptions.Unauthorized, exceptions.Forbidden) as error:
            client.adapter.close()
            raise SecretsAuthError(f"{doing}: Vault refused the login ({_vault_reason(error)})", ref) from None
        except (exceptions.VaultError, OSError) as error:
            client.adapter.close()
            raise self._unavailable(error, doing, ref) from None
        self._client = client
        return client

    def _unavailable(self, error: BaseException, doing: str, ref: SecretRef) -> SecretsError:
        """The exception for a Vault that answered with a server error or not at all."""
        from hvac import exceptions

        addr = self.settings.addr
        if isinstance(error, exceptions.VaultDown) and self._is_sealed():
            return SecretsUnavailableError(f"{doing}: Vault at {addr} is sealed (an operator must unseal it)", ref)
        if isinstance(error, exceptions.VaultError):
            return SecretsUnavailableError(
                f"{doing}: Vault at {addr} answered with an error ({_vault_reason(error)})", ref
            )
        reason = "connection refused" if "refused" in str(error).lower() else type(error).__name__
        return SecretsUnavailableError(f"{doing}: cannot reach Vault at {addr} ({reason})", ref)

    def _is_sealed(self) -> bool:
        probe = self._new_client(namespaced=False)  # the seal status is the root namespace's
        try:
            return bool(probe.sys.is_sealed())
        except Exception:  # noqa: BLE001 - only a refinement of an error already being reported
            return False
        finally:
            probe.adapter.close()


def _read_service_account_token(path: Path, doing: str, ref: SecretRef) -> str:
    try:
        jwt = path.read_text(encoding="utf-8").strip()
    except OSError as error:
        raise SecretsAuthError(
            f"{doing}: cannot read the service-account token file {path} ({error.strerror or type(error).__name__})",
            ref,
        ) from None
    if not jwt:
        raise SecretsAuthError(f"{doing}: the service-account token file {path} is empty", ref)
    return jwt


def _vault_reason(error: Any) -> str:
    errors = getattr(error, "errors", None)
    if errors:
        return "; ".join(str(item) for item in errors)
    return type(error).__name__


def secret_store(environ: Mapping[str, str] | None = None) -> SecretStore:
    """A `SecretStore` configured from the environment (`environ`, default `os.environ`)."""
    return SecretStore(SecretsSettings.from_env(environ), environ=environ)


def mlflow_credentials(store: SecretStore) -> Credentials:
    """The MLflow tracking server's user name and password."""
    return Credentials(username=store.read(MLFLOW_USERNAME), password=store.read(MLFLOW_PASSWORD))


def git_credentials(store: SecretStore) -> Credentials:
    """The user name and password (or access token) for pushing to the GitOps repository."""
    return Credentials(username=store.read(GIT_USERNAME), password=store.read(GIT_PASSWORD))


def gitlab_token(store: SecretStore) -> SecretStr:
    """The GitLab API token that opens promotion merge requests."""
    return store.read(GITLAB_TOKEN)


def mlflow_environment(store: SecretStore) -> dict[str, str]:
    """The variables MLflow's client reads for basic auth, for a child process's environment.

    The one place values leave their wrapper: hand the result to `subprocess` or `os.environ`, never to a log.
    """
    credentials = mlflow_credentials(store)
    return {
        "MLFLOW_TRACKING_USERNAME": credentials.username.get_secret_value(),
        "MLFLOW_TRACKING_PASSWORD": credentials.password.get_secret_value(),
    }
