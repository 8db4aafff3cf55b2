"""tasks/secrets.py against a real OpenBao dev server (Vault's API): token, AppRole and Kubernetes auth, KV v2 reads,
and every way of failing closed (denied, missing, sealed, unreachable), without a secret value ever shown."""

from __future__ import annotations

import re
import time
import traceback
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import certifi
import pytest

from tasks.secrets import (
    GIT_PASSWORD,
    GITLAB_TOKEN,
    MLFLOW_PASSWORD,
    MLFLOW_USERNAME,
    SecretAccessDeniedError,
    SecretNotFoundError,
    SecretRef,
    SecretsAuthError,
    SecretsConfigError,
    SecretsError,
    SecretsSettings,
    SecretStore,
    SecretsUnavailableError,
    git_credentials,
    gitlab_token,
    mlflow_credentials,
    mlflow_environment,
    secret_store,
)
from tests.servers import OpenBaoServer, free_port, openbao_dev_server

# Distinctive values, so a search of logs and messages for them cannot match anything else.
MLFLOW_USER = "svc-mlflow-user-4e1b"
MLFLOW_SECRET = "mlflow-pw-Zq8v3Xk2Lr"
GITLAB_SECRET = "glpat-9HnT4wQe7Ys1"
GIT_SECRET = "git-pw-Vb6mP0cR5t"
VALUES = (MLFLOW_SECRET, GITLAB_SECRET, GIT_SECRET)

READ_MLFLOW_ONLY = 'path "secret/data/scoregate/mlflow" { capabilities = ["read"] }\n'
READ_GIT = 'path "secret/data/scoregate/git" { capabilities = ["read"] }\n'


@dataclass(frozen=True)
class Vault:
    server: OpenBaoServer
    role_id: str
    secret_id: str

    def settings(self, **changes: object) -> SecretsSettings:
        """Token auth as root, unless `changes` say otherwise (validated, so plain strings become SecretStr)."""
        fields = {"addr": self.server.addr, "auth": "token", "token": self.server.root_token, "timeout_s": 5}
        return SecretsSettings.model_validate({**fields, **changes})

    def approle(self, **changes: object) -> SecretsSettings:
        """AppRole auth as `trainer`, unless `changes` say otherwise."""
        fields = {"role_id": self.role_id, "secret_id": self.secret_id, "token": None}
        return self.settings(auth="approle", **{**fields, **changes})


def _seed(server: OpenBaoServer) -> None:
    """Secrets at the pipeline's paths, and an AppRole `trainer` that may read only the MLflow one."""
    server.bao("kv", "put", "secret/scoregate/mlflow", f"username={MLFLOW_USER}", f"password={MLFLOW_SECRET}")
    server.bao("kv", "put", "secret/scoregate/gitlab", f"token={GITLAB_SECRET}")
    server.bao("kv", "put", "secret/scoregate/git", "username=scoregate-bot", f"password={GIT_SECRET}")
    server.bao("auth", "enable", "approle")
    server.bao("policy", "write", "mlflow-read", "-", stdin=READ_MLFLOW_ONLY)
    server.bao("write", "auth/approle/role/trainer", "token_policies=mlflow-read", "token_ttl=10m")


@pytest.fixture(scope="module")
def vault(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Vault]:
    """One OpenBao dev server for the module, seeded; tests that break a server start their own."""
    with openbao_dev_server(tmp_path_factory.mktemp("openbao")) as server:
        _seed(server)
        role_id = server.bao_json("read", "auth/approle/role/trainer/role-id")["data"]["role_id"]
        secret_id = server.bao_json("write", "-f", "auth/approle/role/trainer/secret-id")["data"]["secret_id"]
        yield Vault(server=server, role_id=role_id, secret_id=secret_id)


def _raises(store: SecretStore, ref: SecretRef, kind: type[SecretsError]) -> str:
    with pytest.raises(kind) as caught:
        store.read(ref)
    assert caught.value.ref == ref
    return str(caught.value)


def test_token_auth_reads_kv_v2_secrets(vault: Vault) -> None:
    # given a store logged in with a token
    with SecretStore(vault.settings()) as store:
        # when the pipeline's secrets are read
        mlflow = mlflow_credentials(store)
        token = gitlab_token(store)
        git = git_credentials(store)
    # then each is the stored value, wrapped
    assert mlflow.username.get_secret_value() == MLFLOW_USER
    assert mlflow.password.get_secret_value() == MLFLOW_SECRET
    assert token.get_secret_value() == GITLAB_SECRET
    assert git.password.get_secret_value() == GIT_SECRET
    assert MLFLOW_SECRET not in repr(mlflow) and MLFLOW_SECRET not in str(mlflow.password)


def test_settings_come_from_the_environment(vault: Vault) -> None:
    # given the variables a deployment sets for AppRole auth
    environ = {
        "SCOREGATE_VAULT_ADDR": vault.server.addr,
        "SCOREGATE_VAULT_AUTH": "approle",
        "SCOREGATE_VAULT_ROLE_ID": vault.role_id,
        "SCOREGATE_VAULT_SECRET_ID": vault.secret_id,
        "SCOREGATE_VAULT_TIMEOUT": "5",
    }
    # when a store is built from them and reads the MLflow variables for a child process
    store = secret_store(environ)
    child_env = mlflow_environment(store)
    # then it logged in with the AppRole and the secret-id is not in the settings' repr
    assert store.settings.auth == "approle" and store.settings.timeout_s == 5
    assert child_env == {"MLFLOW_TRACKING_USERNAME": MLFLOW_USER, "MLFLOW_TRACKING_PASSWORD": MLFLOW_SECRET}
    assert vault.secret_id not in repr(store.settings)


def test_approle_reads_the_path_its_policy_allows(vault: Vault) -> None:
    # given a store logged in as the AppRole `trainer`, whose policy reads only scoregate/mlflow
    store = SecretStore(vault.approle())
    # when it reads the MLflow password
    password = store.read(MLFLOW_PASSWORD)
    # then it gets it
    assert password.get_secret_value() == MLFLOW_SECRET


def test_approle_is_denied_another_path_and_fails_closed(vault: Vault) -> None:
    # given the same AppRole
    store = SecretStore(vault.approle())
    # when it reads the GitLab token, which its policy does not cover
    message = _raises(store, GITLAB_TOKEN, SecretAccessDeniedError)
    # then the message names the path and key, says why, and holds no value
    assert "'secret/scoregate/gitlab'" in message and "'token'" in message
    assert "permission denied" in message
    assert GITLAB_SECRET not in message


def test_an_expired_approle_login_is_renewed_but_a_denial_stays(vault: Vault, caplog: pytest.LogCaptureFixture) -> None:
    # given an AppRole whose login tokens live one second, allowed to read the MLflow and Git paths only
    server = vault.server
    server.bao("policy", "write", "mlflow-and-git", "-", stdin=READ_MLFLOW_ONLY + READ_GIT)
    server.bao("write", "auth/approle/role/brief", "token_policies=mlflow-and-git", "token_ttl=1s", "token_max_ttl=1s")
    role_id = server.bao_json("read", "auth/approle/role/brief/role-id")["data"]["role_id"]
    secret_id = server.bao_json("write", "-f", "auth/approle/role/brief/secret-id")["data"]["secret_id"]
    store = SecretStore(vault.approle(role_id=role_id, secret_id=secret_id))
    caplog.set_level("INFO", logger="tasks.secrets")
    first = store.read(MLFLOW_PASSWORD)
    # when its login has expired and it reads another allowed path, then a path its policy does not cover
    time.sleep(1.5)
    second = store.read(GIT_PASSWORD)
    time.sleep(1.5)
    message = _raises(store, GITLAB_TOKEN, SecretAccessDeniedError)
    # then it logged in again for the allowed path, and the denied one is still denied
    assert (first.get_secret_value(), second.get_secret_value()) == (MLFLOW_SECRET, GIT_SECRET)
    assert caplog.text.count("the Vault login (approle auth) expired; logging in again") == 2
    assert "'secret/scoregate/gitlab'" in message


def test_a_wrong_secret_id_is_refused_at_login(vault: Vault) -> None:
    # given an AppRole login with a secret-id Vault never issued
    store = SecretStore(vault.approle(secret_id="00000000-0000-0000-0000-000000000000"))
    # when a secret is read
    message = _raises(store, MLFLOW_PASSWORD, SecretsAuthError)
    # then the login's refusal is reported, naming the method and what was being read
    assert "approle auth" in message and "refused the login" in message
    assert "scoregate/mlflow#password" in message


def test_a_rejected_token_is_an_auth_error_not_a_denied_path(vault: Vault) -> None:
    # given a token Vault does not know
    store = SecretStore(vault.settings(token="not-a-real-token"))
    # when a secret is read
    message = _raises(store, MLFLOW_PASSWORD, SecretsAuthError)
    # then the token is blamed, and the token itself is not shown
    assert "token was rejected" in message
    assert "not-a-real-token" not in message


def test_a_missing_key_fails_closed_naming_path_and_key(vault: Vault) -> None:
    # given a reference to a key the stored secret does not have
    ref = SecretRef(path="scoregate/mlflow", key="api_key")
    # when it is read
    message = _raises(SecretStore(vault.settings()), ref, SecretNotFoundError)
    # then the message names both
    assert "'secret/scoregate/mlflow' key 'api_key'" in message
    assert MLFLOW_SECRET not in message


def test_a_missing_path_fails_closed_naming_it(vault: Vault) -> None:
    # given a reference to a path nothing was written to
    ref = SecretRef(path="scoregate/nowhere", key="token")
    # when it is read
    message = _raises(SecretStore(vault.settings()), ref, SecretNotFoundError)
    # then the message names the path
    assert "'secret/scoregate/nowhere'" in message and "not found" in message


def test_a_sealed_server_fails_closed(tmp_path: Path) -> None:
    # given a server of its own, sealed by its operator
    with openbao_dev_server(tmp_path) as server:
        _seed(server)
        server.bao("operator", "seal")
        store = SecretStore(SecretsSettings(addr=server.addr, token=server.root_token, timeout_s=5))
        # when a secret is read
        message = _raises(store, MLFLOW_PASSWORD, SecretsUnavailableError)
    # then the message says the server is sealed and what was being read
    assert f"Vault at {server.addr} is sealed" in message
    assert "scoregate/mlflow#password" in message


def test_an_unreachable_server_fails_closed() -> None:
    # given an address where nothing listens
    addr = f"http://127.0.0.1:{free_port()}"
    store = SecretStore(SecretsSettings(addr=addr, token="any", timeout_s=2))
    # when a secret is read
    message = _raises(store, GITLAB_TOKEN, SecretsUnavailableError)
    # then the message says Vault cannot be reached, where, and what was being read
    assert f"cannot reach Vault at {addr} (connection refused)" in message
    assert "scoregate/gitlab#token" in message


def test_kubernetes_auth_without_its_token_file_fails_closed(tmp_path: Path) -> None:
    # given Kubernetes auth pointed at a service-account token file that does not exist
    jwt_path = tmp_path / "serviceaccount" / "token"
    settings = SecretsSettings.from_env(
        {
            "SCOREGATE_VAULT_ADDR": f"http://127.0.0.1:{free_port()}",
            "SCOREGATE_VAULT_AUTH": "kubernetes",
            "SCOREGATE_VAULT_K8S_ROLE": "scoregate-trainer",
            "SCOREGATE_VAULT_K8S_JWT_PATH": str(jwt_path),
        }
    )
    # when a secret is read
    message = _raises(SecretStore(settings), GIT_PASSWORD, SecretsAuthError)
    # then the message names the file and why it could not be read
    assert f"service-account token file {jwt_path}" in message
    assert "No such file or directory" in message


def test_kubernetes_auth_refused_by_vault_fails_closed(vault: Vault, tmp_path: Path) -> None:
    # given Vault's Kubernetes auth with a role bound to the service account scoregate/scoregate (its API server
    # is unreachable here, so no token review can succeed), and a pod token file for another service account
    ca_pem = re.search(
        r"-----BEGIN CERTIFICATE-----.+?-----END CERTIFICATE-----", Path(certifi.where()).read_text(), re.S
    )
    assert ca_pem is not None
    (tmp_path / "ca.pem").write_text(ca_pem.group(0), encoding="utf-8")
    server = vault.server
    server.bao("auth", "enable", "kubernetes")
    server.bao(
        "write",
        "auth/kubernetes/config",
        f"kubernetes_host=https://127.0.0.1:{free_port()}",
        "disable_local_ca_jwt=true",
        f"kubernetes_ca_cert=@{tmp_path / 'ca.pem'}",
    )
    server.bao(
        "write",
        "auth/kubernetes/role/scoregate-trainer",
        "bound_service_account_names=scoregate",
        "bound_service_account_namespaces=scoregate",
        "token_policies=mlflow-read",
    )
    jwt_path = tmp_path / "token"
    # header {"alg":"RS256"}, claims {"sub":"system:serviceaccount:other:default"}, a dummy signature
    jwt_path.write_text("eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJzeXN0ZW06c2VydmljZWFjY291bnQ6b3RoZXI6ZGVmYXVsdCJ9.c2ln\n")
    settings = SecretsSettings(
        addr=server.addr, auth="kubernetes", kubernetes_role="scoregate-trainer", kubernetes_jwt_path=jwt_path
    )
    # when a secret is read
    message = _raises(SecretStore(settings), MLFLOW_PASSWORD, SecretsAuthError)
    # then Vault's refusal is reported with the mount it was sent to
    assert "kubernetes auth (mount 'kubernetes')" in message
    assert "refused the login (service account name not authorized)" in message


def test_environment_secrets_are_read_only_when_allowed() -> None:
    # given a laptop with the GitLab token in its environment, and no Vault
    environ = {GITLAB_TOKEN.env_name: GITLAB_SECRET}
    # when the token is read without, then with, the explicit permission
    with pytest.raises(SecretsConfigError) as refused:
        secret_store(environ).read(GITLAB_TOKEN)
    allowed = secret_store({**environ, "SCOREGATE_ALLOW_ENV_SECRETS": "1"}).read(GITLAB_TOKEN)
    # then the variable is ignored until allowed, and the refusal says how to allow it
    assert GITLAB_TOKEN.env_name == "SCOREGATE_SECRET_GITLAB_TOKEN"
    assert "SCOREGATE_VAULT_ADDR is not set" in str(refused.value)
    assert "SCOREGATE_ALLOW_ENV_SECRETS=1" in str(refused.value)
    assert allowed.get_secret_value() == GITLAB_SECRET


def test_an_allowed_but_unset_variable_falls_through_to_vault(vault: Vault) -> None:
    # given env secrets allowed, Vault configured, and no variable for the MLflow user
    environ = {
        "SCOREGATE_ALLOW_ENV_SECRETS": "1",
        "SCOREGATE_VAULT_ADDR": vault.server.addr,
        "VAULT_TOKEN": vault.server.root_token,
    }
    # when it is read
    username = secret_store(environ).read(MLFLOW_USERNAME)
    # then Vault answered
    assert username.get_secret_value() == MLFLOW_USER


def test_allowed_env_secrets_without_variable_or_vault_fail_naming_the_variable() -> None:
    # given env secrets allowed but neither the variable nor Vault set
    store = secret_store({"SCOREGATE_ALLOW_ENV_SECRETS": "true"})
    # when the Git password is read
    message = _raises(store, GIT_PASSWORD, SecretsConfigError)
    # then the message names the variable that would have answered
    assert "SCOREGATE_SECRET_GIT_PASSWORD is not set" in message


@pytest.mark.parametrize(
    ("environ", "named"),
    [
        ({"SCOREGATE_VAULT_AUTH": "ldap"}, "SCOREGATE_VAULT_AUTH='ldap'"),
        ({"SCOREGATE_VAULT_TIMEOUT": "soon"}, "SCOREGATE_VAULT_TIMEOUT='soon'"),
        ({"SCOREGATE_VAULT_TIMEOUT": "0"}, "SCOREGATE_VAULT_TIMEOUT='0'"),
    ],
)
def test_invalid_settings_name_the_variable(environ: dict[str, str], named: str) -> None:
    # given an invalid variable
    # when settings are read
    with pytest.raises(SecretsConfigError) as caught:
        SecretsSettings.from_env(environ)
    # then the message names it
    assert named in str(caught.value)


def test_incomplete_login_settings_fail_closed(vault: Vault) -> None:
    # given AppRole auth without a secret-id, and token auth without a token
    approle = SecretStore(SecretsSettings(addr=vault.server.addr, auth="approle", role_id=vault.role_id))
    token = SecretStore(SecretsSettings(addr=vault.server.addr, auth="token"))
    # when a secret is read with each
    approle_message = _raises(approle, MLFLOW_PASSWORD, SecretsConfigError)
    token_message = _raises(token, MLFLOW_PASSWORD, SecretsConfigError)
    # then each names the missing variable
    assert "SCOREGATE_VAULT_SECRET_ID must both be set" in approle_message
    assert "VAULT_TOKEN is not set" in token_message


def test_secret_refs_are_plain_kv_paths() -> None:
    # given a path written as the HTTP API spells it, and one without a short name
    # when refs are built
    with pytest.raises(ValueError, match="without the API's 'data/' prefix"):
        SecretRef(path="data/scoregate/mlflow", key="password")
    ref = SecretRef(path="/team-a/feature-store/", key="api-key")
    # then the API prefix is refused, slashes are trimmed and the env name comes from path and key
    assert str(ref) == "team-a/feature-store#api-key"
    assert ref.env_name == "SCOREGATE_SECRET_TEAM_A_FEATURE_STORE_API_KEY"


def test_no_secret_value_reaches_logs_output_or_errors(
    vault: Vault, tmp_path: Path, caplog: pytest.LogCaptureFixture, capsys: pytest.CaptureFixture[str]
) -> None:
    # given every logger (hvac's, urllib3's, ours) captured at DEBUG
    caplog.set_level("DEBUG")
    errors: list[BaseException] = []
    # when secrets are read successfully, from the environment, and in each failing way
    with SecretStore(vault.settings()) as store:
        read = [store.read(MLFLOW_PASSWORD), store.read(GITLAB_TOKEN), store.read(GIT_PASSWORD)]
        print(read, repr(read), store.settings)  # what a careless debug print would show
    allowed_env = {"SCOREGATE_ALLOW_ENV_SECRETS": "1", GIT_PASSWORD.env_name: GIT_SECRET}
    print(secret_store(allowed_env).read(GIT_PASSWORD))
    attempts = [
        (SecretStore(vault.approle()), GITLAB_TOKEN),
        (SecretStore(vault.settings()), SecretRef(path="scoregate/gitlab", key="absent")),
        (SecretStore(vault.approle(secret_id=GIT_SECRET)), MLFLOW_PASSWORD),
        (SecretStore(vault.settings(token=MLFLOW_SECRET)), MLFLOW_PASSWORD),
        (SecretStore(vault.settings(addr=f"http://127.0.0.1:{free_port()}", token=GITLAB_SECRET)), GIT_PASSWORD),
    ]
    for store, ref in attempts:
        with pytest.raises(SecretsError) as caught:
            store.read(ref)
        errors.append(caught.value)
    # then no value appears in any log record, printed output, message or traceback
    captured = capsys.readouterr()
    texts = [caplog.text, captured.out, captured.err]
    texts += ["".join(traceback.format_exception(error)) + repr(error) for error in errors]
    assert len(errors) == len(attempts)
    assert "read secret scoregate/mlflow#password" in caplog.text  # the log did record the reads
    for value in VALUES:
        assert not any(value in text for text in texts), f"a secret value leaked: {value[:4]}..."
