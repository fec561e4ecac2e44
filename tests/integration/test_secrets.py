"""Secret stores: the real Secret Manager client (REST) against dev/secretmanager_emulator, and the env backend."""
from __future__ import annotations

import json
import socket
import subprocess
import sys
import urllib.error
import urllib.request
from pathlib import Path

import pytest
from google.api_core.client_options import ClientOptions
from google.auth.credentials import AnonymousCredentials
from google.cloud import secretmanager

from dev.secretmanager_emulator import running_emulator
from mailbridge.errors import PermanentError, StoreUnavailableError
from mailbridge.secrets import SecretStore, open_secrets
from mailbridge.secrets.env import EnvSecretStore, env_var_for
from mailbridge.secrets.secretmanager import SecretManagerSecretStore

ROOT = Path(__file__).resolve().parents[2]
PROJECT = "mb-test-project"
ADMIN_KEY = "mbk_admin_9f8e7d6c5b4a-välue"


def _client(endpoint: str) -> secretmanager.SecretManagerServiceClient:
    # google-api-core keeps an explicit http:// scheme of api_endpoint on the REST transport.
    return secretmanager.SecretManagerServiceClient(
        credentials=AnonymousCredentials(), transport="rest",
        client_options=ClientOptions(api_endpoint=endpoint))


@pytest.fixture
def emu():
    with running_emulator({"admin-api-key": ADMIN_KEY, "empty-secret": ""}) as running:
        yield running


@pytest.fixture
def store(emu) -> SecretManagerSecretStore:
    return SecretManagerSecretStore(PROJECT, _client(emu.endpoint))


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


# --- Secret Manager backend -------------------------------------------------------------------------------

def test_get_reads_the_latest_version_of_the_projects_secret(store, emu):
    assert store.get("admin-api-key") == ADMIN_KEY
    assert emu.accessed == [f"projects/{PROJECT}/secrets/admin-api-key/versions/latest"]


def test_get_of_an_unknown_secret_is_none_and_absence_is_not_cached(store, emu):
    assert store.get("ms-client-secret") is None
    emu.add_version("ms-client-secret", "created-after-deploy")
    assert store.get("ms-client-secret") == "created-after-deploy"
    assert emu.access_count == 2


def test_second_get_is_served_from_the_cache(store, emu):
    assert store.get("admin-api-key") == ADMIN_KEY
    emu.add_version("admin-api-key", "rotated-value")
    assert store.get("admin-api-key") == ADMIN_KEY
    assert emu.access_count == 1
    # A new instance (a new store) sees the rotated version.
    assert SecretManagerSecretStore(PROJECT, _client(emu.endpoint)).get("admin-api-key") == "rotated-value"
    assert emu.access_count == 2


def test_empty_secret_is_none(store):
    assert store.get("empty-secret") is None


def test_server_error_raises_store_unavailable_without_the_value(emu):
    store = SecretManagerSecretStore(PROJECT, _client(emu.endpoint))
    # The server's message even echoes the value: ours must still not carry it.
    emu.fail_next(500, f"Internal error for {ADMIN_KEY}")
    with pytest.raises(StoreUnavailableError) as caught:
        store.get("admin-api-key")
    err = caught.value
    assert "admin-api-key" in str(err)
    assert ADMIN_KEY not in str(err) and ADMIN_KEY not in err.message and ADMIN_KEY not in repr(err.details)
    assert err.__cause__ is not None  # raised `from exc`, for the logs' traceback
    assert (err.code, err.status) == ("provider_unavailable", 503)
    # Failures are not cached: the next call succeeds.
    assert store.get("admin-api-key") == ADMIN_KEY
    assert emu.access_count == 2


def test_permission_denied_raises_store_unavailable(store, emu):
    emu.fail_next(403, "Permission 'secretmanager.versions.access' denied")
    with pytest.raises(StoreUnavailableError, match="admin-api-key"):
        store.get("admin-api-key")


def test_unavailable_once_is_retried(store, emu):
    emu.fail_next(503, "The service is currently unavailable.")
    assert store.get("admin-api-key") == ADMIN_KEY
    assert emu.access_count == 2


def test_payload_with_wrong_crc32c_is_rejected(store, emu):
    emu.corrupt_checksums()
    with pytest.raises(StoreUnavailableError, match="CRC32C") as caught:
        store.get("admin-api-key")
    assert ADMIN_KEY not in str(caught.value)
    emu.corrupt_checksums(False)
    assert store.get("admin-api-key") == ADMIN_KEY


def test_non_utf8_secret_is_a_permanent_error(store, emu):
    emu.add_version("binary-secret", b"\xff\xfe\x00")
    with pytest.raises(PermanentError, match="binary-secret"):
        store.get("binary-secret")


def test_unreachable_endpoint_raises_store_unavailable():
    store = SecretManagerSecretStore(PROJECT, _client(f"http://127.0.0.1:{_free_port()}"), timeout=2.0)
    with pytest.raises(StoreUnavailableError, match="admin-api-key"):
        store.get("admin-api-key")


@pytest.mark.parametrize("bad_name", ["", "a/b", "../admin-api-key", "name with space", "x" * 256])
def test_invalid_names_are_rejected_before_any_call(store, emu, bad_name):
    with pytest.raises(ValueError):
        store.get(bad_name)
    assert emu.access_count == 0


# --- open_secrets ---------------------------------------------------------------------------------------

def test_open_secrets_picks_the_backend():
    assert isinstance(open_secrets("env"), EnvSecretStore)
    store = open_secrets("secretmanager", PROJECT)
    assert isinstance(store, SecretManagerSecretStore) and isinstance(store, SecretStore)


@pytest.mark.parametrize("kind,project", [("vault", ""), ("", ""), ("ENV", ""), ("secretmanager", "")])
def test_open_secrets_rejects_unknown_kinds_and_missing_project(kind, project):
    with pytest.raises(ValueError, match="MAILBRIDGE_SECRETS"):
        open_secrets(kind, project)


def test_opening_either_backend_does_not_import_the_google_library():
    code = ("import sys; from mailbridge.secrets import open_secrets; "
            "open_secrets('env'); open_secrets('secretmanager', 'p'); "
            "print(sorted(m for m in sys.modules if m.startswith(('google.cloud.', 'google.api_core', 'grpc'))))")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


# --- the emulator's command line ------------------------------------------------------------------------

def test_emulator_command_line_serves_the_given_secrets():
    port = _free_port()
    proc = subprocess.Popen([sys.executable, "-m", "dev.secretmanager_emulator", "--port", str(port),
                             "--secret", "admin-api-key=cli-value", "--secret", "x=a=b"],
                            cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)
    try:
        banner = proc.stdout.readline()
        assert f"127.0.0.1:{port}" in banner and "cli-value" not in banner
        store = SecretManagerSecretStore(PROJECT, _client(f"http://127.0.0.1:{port}"))
        assert store.get("admin-api-key") == "cli-value"
        assert store.get("x") == "a=b"
        with pytest.raises(urllib.error.HTTPError) as caught:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/v1/projects/p/secrets/nope/versions/latest:access")
        assert caught.value.code == 404
        assert json.loads(caught.value.read())["error"]["status"] == "NOT_FOUND"
    finally:
        proc.terminate()
        proc.wait(timeout=10)
        proc.stdout.close()
        proc.stderr.close()


# --- env backend ----------------------------------------------------------------------------------------

@pytest.mark.parametrize("name,variable", [
    ("admin-api-key", "MAILBRIDGE_ADMIN_KEY"),
    ("token-encryption-key", "MAILBRIDGE_ENCRYPTION_KEY"),
    ("google-client-secret", "GOOGLE_CLIENT_SECRET"),
    ("ms-client-secret", "MS_CLIENT_SECRET"),
    ("webhook-signing-key", "WEBHOOK_SIGNING_KEY"),
    ("Some_name-2", "SOME_NAME_2"),
])
def test_env_store_maps_names_to_variables(name, variable):
    assert env_var_for(name) == variable
    assert EnvSecretStore({variable: "value-1"}).get(name) == "value-1"


def test_env_store_treats_unset_and_empty_as_absent():
    store = EnvSecretStore({"MAILBRIDGE_ADMIN_KEY": ""})
    assert store.get("admin-api-key") is None
    assert store.get("ms-client-secret") is None


def test_env_store_does_not_read_the_cloud_name_as_a_variable():
    assert EnvSecretStore({"ADMIN_API_KEY": "wrong-variable"}).get("admin-api-key") is None


def test_env_store_reads_os_environ_live(monkeypatch):
    store = EnvSecretStore()
    monkeypatch.delenv("MS_CLIENT_SECRET", raising=False)
    assert store.get("ms-client-secret") is None
    monkeypatch.setenv("MS_CLIENT_SECRET", "from-the-environment")
    assert store.get("ms-client-secret") == "from-the-environment"


def test_env_store_rejects_invalid_names():
    with pytest.raises(ValueError):
        EnvSecretStore({}).get("a/b")

