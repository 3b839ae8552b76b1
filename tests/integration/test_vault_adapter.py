"""The Vault adapter against a real Vault server (dev mode, built from Go modules).

What a user relies on: values and versions read from KV v2; every failure (no such path/key,
deleted or destroyed version, denied, Vault down/sealed/hung) a clear, typed error that names
path, key and version but never a value; Kubernetes auth with a real service-account token from
the test kube-apiserver; renewal and re-authentication; one read per distinct path.
"""

from __future__ import annotations

import asyncio
import base64
import os
import secrets
import shutil
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from ferry.adapters.vault import (
    AuthenticationFailed,
    KubernetesAuth,
    PermissionDenied,
    SecretNotFound,
    TokenAuth,
    VaultClient,
    VaultConfig,
    VaultError,
    VaultUnavailable,
)
from ferry.adapters.vault_reads import PathReads
from ferry.devenv.vault import (
    BINARY_SCRIPT,
    OPERATOR_NAMESPACE,
    OPERATOR_ROLE,
    OPERATOR_SERVICE_ACCOUNT,
    KubeAdmin,
    Vault,
    start_vault,
)
from ferry.domain.secrets import parse_secret_data
from tests.integration.conftest import VaultKubernetesAuth

pytestmark = pytest.mark.integration


class Clock:
    """A clock the test moves: the adapter's idea of time, while Vault keeps real time."""

    def __init__(self) -> None:
        self.now = time.monotonic()

    def __call__(self) -> float:
        return self.now


def write(vault: Vault, mount: str, path: str, data: dict[str, object]) -> int:
    answer = vault.request("POST", f"{mount}/data/{path}", {"data": data})
    return int(answer["data"]["version"])


def unique(prefix: str = "app") -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def assert_no_value(error: BaseException, *values: str) -> None:
    text = f"{error} {error!r} {getattr(error, 'message', '')}"
    for value in values:
        assert value not in text
        assert base64.b64encode(value.encode()).decode() not in text


def root_client(vault: Vault, mount: str, **kwargs: object) -> VaultClient:
    return VaultClient(
        VaultConfig(vault.address, TokenAuth(vault.root_token), kv_mount=mount, **kwargs)  # type: ignore[arg-type]
    )


# --- token auth, KV v2 reads ---------------------------------------------------------------------


async def test_token_auth_reads_latest_and_pinned_versions(vault: Vault, vault_kv: str) -> None:
    path = unique("team-a/db")
    first, second = secrets.token_hex(16), secrets.token_hex(16)
    assert write(vault, vault_kv, path, {"password": first, "user": "app"}) == 1
    assert write(vault, vault_kv, path, {"password": second, "user": "app"}) == 2

    async with root_client(vault, vault_kv) as client:
        info = await client.login()
        assert info.accessor and info.ttl is None  # the dev root token never expires
        latest = await client.read(path)
        assert (latest.version, latest.value("password"), latest.value("user")) == (
            2,
            second,
            "app",
        )
        assert latest.created_time
        pinned = await client.read(path, version=1)
        assert (pinned.version, pinned.value("password")) == (1, first)
        # values stay out of what gets logged by accident
        assert first not in repr(pinned) and second not in repr(latest)


async def test_unknown_path_key_and_version_name_what_is_missing(
    vault: Vault, vault_kv: str
) -> None:
    path = unique("team-a/api")
    value = secrets.token_hex(16)
    write(vault, vault_kv, path, {"token": value})
    async with root_client(vault, vault_kv) as client:
        with pytest.raises(SecretNotFound) as missing_path:
            await client.read(f"{path}-nope")
        assert missing_path.value.reason == "SecretNotFound"
        assert f'"{path}-nope"' in str(missing_path.value)
        assert f'mount "{vault_kv}"' in str(missing_path.value)

        secret = await client.read(path)
        with pytest.raises(SecretNotFound) as missing_key:
            secret.value("password")
        assert missing_key.value.reason == "SecretKeyNotFound"
        assert str(missing_key.value) == (
            f'key "password" not found in Vault secret "{path}" version 1'
        )
        assert_no_value(missing_key.value, value)

        with pytest.raises(SecretNotFound) as missing_version:
            await client.read(path, version=7)
        assert "version 7" in str(missing_version.value)
        assert missing_version.value.version == 7

    async with root_client(vault, f"{vault_kv}-absent") as client:
        with pytest.raises(SecretNotFound) as no_mount:
            await client.read(path)
        assert no_mount.value.reason == "VaultMountNotFound"
        assert f'no secrets engine mounted at "{vault_kv}-absent"' in str(no_mount.value)


async def test_deleted_and_destroyed_versions(vault: Vault, vault_kv: str) -> None:
    path = unique("team-a/rotated")
    old, new = secrets.token_hex(16), secrets.token_hex(16)
    write(vault, vault_kv, path, {"password": old})
    write(vault, vault_kv, path, {"password": new})
    vault.request("DELETE", f"{vault_kv}/data/{path}")  # soft-delete the latest (2)

    async with root_client(vault, vault_kv) as client:
        with pytest.raises(SecretNotFound) as deleted:
            await client.read(path)
        assert deleted.value.deleted and not deleted.value.destroyed
        assert deleted.value.reason == "SecretVersionDeleted"
        assert str(deleted.value) == (
            f'version 2 of Vault secret "{path}" (mount "{vault_kv}") was deleted'
        )
        assert (await client.read(path, version=1)).value("password") == old

        vault.request("PUT", f"{vault_kv}/destroy/{path}", {"versions": [1]})
        with pytest.raises(SecretNotFound) as destroyed:
            await client.read(path, version=1)
        assert destroyed.value.destroyed and destroyed.value.reason == "SecretVersionDestroyed"
        assert "version 1" in str(destroyed.value) and "destroyed" in str(destroyed.value)
        for error in (deleted.value, destroyed.value):
            assert_no_value(error, old, new)


async def test_a_narrow_policy_is_denied_outside_it(vault: Vault, vault_kv: str) -> None:
    mine, theirs = unique("team-a/db"), unique("team-b/db")
    their_value = secrets.token_hex(16)
    write(vault, vault_kv, mine, {"password": "mine"})
    write(vault, vault_kv, theirs, {"password": their_value})
    policy = unique("team-a-only")
    vault.write_policy(policy, f'path "{vault_kv}/data/team-a/*" {{ capabilities = ["read"] }}\n')
    token = vault.create_token([policy])

    config = VaultConfig(vault.address, TokenAuth(token), kv_mount=vault_kv)
    async with VaultClient(config) as client:
        assert (await client.read(mine)).value("password") == "mine"
        with pytest.raises(PermissionDenied) as denied:
            await client.read(theirs)
        assert not isinstance(denied.value, AuthenticationFailed)
        assert denied.value.reason == "VaultPermissionDenied"
        assert not denied.value.retryable
        assert f'"{theirs}"' in str(denied.value) and "permission denied" in str(denied.value)
        assert_no_value(denied.value, their_value)
        assert client.stats.logins == 1  # a policy denial is not mistaken for a dead token


async def test_a_revoked_configured_token_fails_clearly(vault: Vault, vault_kv: str) -> None:
    path = unique("team-a/db")
    write(vault, vault_kv, path, {"password": "x"})
    policy = unique("read-all")
    vault.write_policy(policy, f'path "{vault_kv}/data/*" {{ capabilities = ["read"] }}\n')
    token = vault.create_token([policy])
    config = VaultConfig(vault.address, TokenAuth(token), kv_mount=vault_kv)
    async with VaultClient(config) as client:
        await client.read(path)
        vault.request("POST", "auth/token/revoke", {"token": token})
        with pytest.raises(AuthenticationFailed) as failed:
            await client.read(path)
        assert failed.value.reason == "VaultLoginFailed"
        assert "no longer accepts the configured token" in str(failed.value)
        assert token not in str(failed.value)


# --- Vault down, sealed, hung (a private server: these break it) --------------------------------


@pytest.fixture
def own_vault(vault_binary: Path, tmp_path: Path) -> Iterator[Vault]:
    server = start_vault(tmp_path / "vault", binary=vault_binary)
    try:
        yield server
    finally:
        assert server.process is not None
        if server.process.alive():
            os.kill(server.process.pid, signal.SIGCONT)  # in case a test left it paused
        server.stop()


async def test_vault_stopped_is_unavailable_and_retryable(own_vault: Vault) -> None:
    write(own_vault, "secret", "app/db", {"password": "x"})
    async with root_client(own_vault, "secret", timeout=2) as client:
        await client.read("app/db")
        own_vault.stop()
        with pytest.raises(VaultUnavailable) as down:
            await client.read("app/db")
        assert down.value.retryable and down.value.reason == "VaultUnavailable"
        assert str(down.value).startswith(f"Vault at {own_vault.address} is unreachable")
        assert "connection refused" in str(down.value)


async def test_vault_sealed_is_unavailable(own_vault: Vault) -> None:
    write(own_vault, "secret", "app/db", {"password": "x"})
    async with root_client(own_vault, "secret") as client:
        await client.read("app/db")
        own_vault.request("PUT", "sys/seal")
        with pytest.raises(VaultUnavailable) as sealed:
            await client.read("app/db")
        assert sealed.value.reason == "VaultSealed" and sealed.value.retryable
        assert "is sealed" in str(sealed.value)


def hang(pid: int, timeout: float = 10) -> None:
    """SIGSTOP ``pid`` and return once every thread of it is stopped. kill() returns before
    that: a thread running on another CPU can still answer a request sent at once (a fresh-clone
    run with two test workers saw the read below succeed)."""
    os.kill(pid, signal.SIGSTOP)
    deadline = time.monotonic() + timeout

    def state(task: Path) -> str:  # the field after "(comm)" in /proc/<pid>/task/<tid>/stat
        return (task / "stat").read_text().rsplit(")", 1)[1].split()[0]

    while any(state(task) != "T" for task in Path(f"/proc/{pid}/task").iterdir()):
        assert time.monotonic() < deadline, f"process {pid} not stopped {timeout}s after SIGSTOP"
        time.sleep(0.01)


async def test_a_hung_vault_times_out_and_recovers(own_vault: Vault) -> None:
    write(own_vault, "secret", "app/db", {"password": "x"})
    assert own_vault.process is not None
    async with root_client(own_vault, "secret", timeout=1) as client:
        await client.read("app/db")
        hang(own_vault.process.pid)
        try:
            with pytest.raises(VaultUnavailable) as hung:
                await client.read("app/db")
            assert hung.value.reason == "VaultTimeout"
            assert "did not answer within 1s" in str(hung.value)
        finally:
            os.kill(own_vault.process.pid, signal.SIGCONT)
        assert (await client.read("app/db")).value("password") == "x"


# --- Kubernetes auth: a real service-account token, TokenReview by the test kube-apiserver -------


def k8s_client(
    auth: VaultKubernetesAuth, token_file: Path, clock: Clock | None = None, role: str = ""
) -> VaultClient:
    config = VaultConfig(
        auth.vault.address,
        KubernetesAuth(role=role or auth.role, mount=auth.mount, token_file=token_file),
        kv_mount=auth.kv_mount,
    )
    return VaultClient(config, clock=clock) if clock else VaultClient(config)


async def test_kubernetes_auth_logs_in_with_a_service_account_token(
    vault_kubernetes_auth: VaultKubernetesAuth, tmp_path: Path
) -> None:
    auth = vault_kubernetes_auth
    path = unique("team-a/db")
    value = secrets.token_hex(16)
    write(auth.vault, auth.kv_mount, path, {"password": value})
    async with k8s_client(auth, auth.token_file(tmp_path)) as client:
        assert (await client.read(path)).value("password") == value
        info = await client.token_info()
        assert info.renewable and info.ttl is not None and 3000 < info.ttl <= 3600
        assert client.stats.logins == 1
    # the role's policy covers its KV mount only: another mount is denied
    other = VaultConfig(
        auth.vault.address,
        KubernetesAuth(role=auth.role, mount=auth.mount, token_file=auth.token_file(tmp_path)),
        kv_mount="secret",
    )
    async with VaultClient(other) as client:
        with pytest.raises(PermissionDenied) as denied:
            await client.read(path)
        assert not isinstance(denied.value, AuthenticationFailed)


async def test_kubernetes_auth_refuses_another_service_account(
    vault_kubernetes_auth: VaultKubernetesAuth, tmp_path: Path
) -> None:
    auth = vault_kubernetes_auth
    auth.kube.service_account(auth.namespace, "intruder")
    token_file = tmp_path / "token"
    token_file.write_text(auth.kube.token(auth.namespace, "intruder"))
    async with k8s_client(auth, token_file) as client:
        with pytest.raises(AuthenticationFailed) as refused:
            await client.read("anything")
    assert refused.value.reason == "VaultLoginFailed"
    assert f'role "{auth.role}"' in str(refused.value)
    assert token_file.read_text() not in str(refused.value)


async def test_missing_token_file_is_a_login_failure(
    vault_kubernetes_auth: VaultKubernetesAuth, tmp_path: Path
) -> None:
    async with k8s_client(vault_kubernetes_auth, tmp_path / "absent") as client:
        with pytest.raises(AuthenticationFailed, match="cannot read the service-account token"):
            await client.login()


async def test_token_is_renewed_before_it_expires(
    vault_kubernetes_auth: VaultKubernetesAuth, tmp_path: Path
) -> None:
    auth = vault_kubernetes_auth
    path = unique("team-a/db")
    write(auth.vault, auth.kv_mount, path, {"password": "x"})
    clock = Clock()
    async with k8s_client(auth, auth.token_file(tmp_path), clock) as client:
        first = await client.login()
        looked = auth.vault.request(
            "POST", "auth/token/lookup-accessor", {"accessor": first.accessor}
        )
        assert not looked["data"].get("last_renewal_time")

        clock.now += 0.5 * 3600  # not yet: renewal starts at two thirds of the lease
        await client.read(path)
        assert client.stats.renewals == 0

        clock.now += 0.2 * 3600
        await client.read(path)
        assert (client.stats.renewals, client.stats.logins) == (1, 1)
        renewed = await client.token_info()
        assert renewed.accessor == first.accessor  # the same token, renewed
        looked = auth.vault.request(
            "POST", "auth/token/lookup-accessor", {"accessor": first.accessor}
        )
        assert looked["data"]["last_renewal_time"]


async def test_revoked_token_logs_in_again(
    vault_kubernetes_auth: VaultKubernetesAuth, tmp_path: Path
) -> None:
    auth = vault_kubernetes_auth
    path = unique("team-a/db")
    write(auth.vault, auth.kv_mount, path, {"password": "x"})
    async with k8s_client(auth, auth.token_file(tmp_path)) as client:
        first = await client.login()
        auth.vault.request("POST", "auth/token/revoke-accessor", {"accessor": first.accessor})
        assert (await client.read(path)).value("password") == "x"
        assert client.stats.logins == 2
        assert (await client.token_info()).accessor != first.accessor


async def test_expired_token_logs_in_again(
    vault_kubernetes_auth: VaultKubernetesAuth, tmp_path: Path
) -> None:
    """Vault's clock ran out while the client thought the token fresh (a paused process): the
    403 is recognised as a dead token, not a denial."""
    auth = vault_kubernetes_auth
    role = unique("short")
    auth.vault.create_kubernetes_role(
        auth.mount,
        role,
        service_account=auth.service_account,
        namespace=auth.namespace,
        policies=[f"ferry-read-{auth.mount.removeprefix('kubernetes-')}"],
        ttl="2s",
        max_ttl="2s",
    )
    path = unique("team-a/db")
    write(auth.vault, auth.kv_mount, path, {"password": "x"})
    clock = Clock()  # never moves
    async with k8s_client(auth, auth.token_file(tmp_path), clock, role=role) as client:
        await client.read(path)
        await asyncio.sleep(3.5)  # real time: the token is now expired in Vault
        assert (await client.read(path)).value("password") == "x"
        assert client.stats.logins == 2


# --- one read per distinct path ------------------------------------------------------------------


async def test_entries_sharing_paths_cause_one_read_per_path(vault: Vault, vault_kv: str) -> None:
    db, api = unique("team-a/db"), unique("team-a/api")
    write(vault, vault_kv, db, {"user": "u", "password": "p1"})
    write(vault, vault_kv, api, {"token": "t1"})
    entries = [
        parse_secret_data(
            {
                "DB_USER": {"vault": {"path": db, "key": "user"}},
                "DB_PASSWORD": {"vault": {"path": db, "key": "password"}},
                "API_TOKEN": {"vault": {"path": api, "key": "token"}},
            }
        )
        for _ in range(50)
    ]
    async with root_client(vault, vault_kv) as client:
        reads = PathReads(client)
        results = await asyncio.gather(*(reads.resolve(refs) for refs in entries))
        assert all(r.ok for r in results)
        assert {r.values["DB_PASSWORD"].value for r in results} == {b"p1"}
        assert {r.values["API_TOKEN"].version for r in results} == {1}
        assert reads.reads == 2 and client.stats.reads == 2

        # a rotation is seen once the pass's results are dropped (on-demand refresh)
        write(vault, vault_kv, db, {"user": "u", "password": "p2"})
        assert (await reads.resolve(entries[0])).values["DB_PASSWORD"].value == b"p1"
        reads.forget(db)
        rotated = await reads.resolve(entries[0])
        assert (rotated.values["DB_PASSWORD"].value, rotated.values["DB_PASSWORD"].version) == (
            b"p2",
            2,
        )
        assert client.stats.reads == 3


async def test_a_failing_path_is_read_once_and_fails_only_its_keys(
    vault: Vault, vault_kv: str
) -> None:
    good = unique("team-a/db")
    write(vault, vault_kv, good, {"password": "p"})
    refs = parse_secret_data(
        {
            "GOOD": {"vault": {"path": good, "key": "password"}},
            "GONE": {"vault": {"path": f"{good}-missing", "key": "password"}},
            "NO_KEY": {"vault": {"path": good, "key": "nope"}},
        }
    )
    async with root_client(vault, vault_kv) as client:
        reads = PathReads(client)
        results = await asyncio.gather(*(reads.resolve(refs) for _ in range(20)))
        assert reads.reads == 2
        for result in results:
            assert not result.ok
            assert set(result.values) == {"GOOD"}
            assert {k: e.reason for k, e in result.failures.items()} == {
                "GONE": "SecretNotFound",
                "NO_KEY": "SecretKeyNotFound",
            }
            assert all(isinstance(e, VaultError) for e in result.failures.values())


# --- the build script and `ferry dev` ------------------------------------------------------------


def test_vault_build_without_go_is_one_clear_line(tmp_path: Path) -> None:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for tool in ("bash", "mkdir", "flock", "python3"):  # everything but go
        found = shutil.which(tool)
        assert found is not None
        (bin_dir / tool).symlink_to(found)
    env = {"PATH": str(bin_dir), "HOME": str(tmp_path), "FERRY_CACHE_DIR": str(tmp_path / "c")}
    result = subprocess.run(
        ["bash", str(BINARY_SCRIPT)], env=env, capture_output=True, text=True, timeout=30
    )
    assert result.returncode == 1
    assert result.stderr.strip().splitlines() == [
        "vault-binary: no Go toolchain on PATH: install Go >= 1.23 (https://go.dev/dl) and run "
        "again"
    ]


def test_vault_build_is_a_cache_hit_the_second_time(vault_binary: Path) -> None:
    result = subprocess.run(
        ["bash", str(BINARY_SCRIPT)], capture_output=True, text=True, timeout=30, check=True
    )
    assert result.stdout.strip() == str(vault_binary)
    assert result.stderr == ""  # nothing built, nothing said
    version = subprocess.run(
        [str(vault_binary), "version"], capture_output=True, text=True, timeout=30, check=True
    )
    assert version.stdout.startswith("Vault v1.14.2")


async def test_ferry_dev_runs_vault_with_kubernetes_auth(
    tmp_path: Path, vault_binary: Path, k8s_bin_dir: Path
) -> None:
    """`ferry dev up` starts Vault, `ferry dev env` exports it, the operator's service account can
    log in with Kubernetes auth, and `ferry dev down` stops it."""
    env = {**os.environ, "FERRY_DEV_DIR": str(tmp_path / "dev")}
    ferry = [sys.executable, "-m", "ferry", "dev"]

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [*ferry, *args], env=env, capture_output=True, text=True, timeout=600, check=False
        )

    up = run("up", "--no-operator")
    try:
        assert up.returncode == 0, up.stderr
        exports = run("env").stdout
        shell = f'{exports}\necho "$VAULT_ADDR|$VAULT_TOKEN|$(command -v vault)|$KUBECONFIG"'
        echoed = subprocess.run(
            ["bash", "-c", shell], capture_output=True, text=True, timeout=30, check=True
        ).stdout.strip()
        address, token, vault_cli, kubeconfig = echoed.split("|")
        assert address.startswith("http://127.0.0.1:") and token
        assert vault_cli == str(vault_binary)
        dev_vault = Vault(address, token)
        write(dev_vault, "secret", "demo/db", {"password": "dev"})

        admin = KubeAdmin(k8s_bin_dir / "kubectl", Path(kubeconfig))
        token_file = tmp_path / "sa-token"
        token_file.write_text(admin.token(OPERATOR_NAMESPACE, OPERATOR_SERVICE_ACCOUNT))
        config = VaultConfig(address, KubernetesAuth(OPERATOR_ROLE, token_file=token_file))
        async with VaultClient(config) as client:
            assert (await client.read("demo/db")).value("password") == "dev"
    finally:
        down = run("down")
    assert down.returncode == 0, down.stderr
    with pytest.raises(OSError):
        Vault(address, token).health(timeout=2)


# --- what PathReads keeps, against a real Vault ---------------------------------------------------


async def test_entries_using_other_keys_of_a_path_share_one_read_within_the_window(
    vault: Vault, vault_kv: str
) -> None:
    """PathReads keeps only the keys in use, yet an entry naming another key of the same path
    one moment later (within ``max_age``) is still served by the same Vault read."""
    path = unique("team-a/db")
    user, password = secrets.token_hex(8), secrets.token_hex(8)
    write(vault, vault_kv, path, {"user": user, "password": password, "unused": "x"})
    first = parse_secret_data({"USER": {"vault": {"path": path, "key": "user"}}})
    second = parse_secret_data({"PASSWORD": {"vault": {"path": path, "key": "password"}}})
    clock = Clock()
    async with root_client(vault, vault_kv) as client:
        reads = PathReads(client, max_age=60, clock=clock)
        await asyncio.gather(reads.resolve(first), reads.resolve(second))  # learns the keys
        clock.now += 61  # the next refresh: one entry, then the other 30 s later
        assert (await reads.resolve(first)).values["USER"].value == user.encode()
        clock.now += 30
        later = await reads.resolve(second)
        assert later.values["PASSWORD"].value == password.encode()
        assert client.stats.reads == 2  # one per refresh, however the entries come
        clock.now += 61
        await reads.resolve(first)  # what expired is dropped at the next access
        assert reads.kept == 1 and client.stats.reads == 3


# --- a 404 from an auth endpoint ------------------------------------------------------------------


async def test_an_auth_mount_vault_does_not_have_is_a_login_failure_naming_it(
    vault: Vault, vault_kv: str, tmp_path: Path
) -> None:
    """Vault answers a login at a mount it does not have with 404 ("no handler for route") when
    the request carries a valid token, as a re-login does (the client still holds its current
    token); without one it says 403. Either way it is about the auth mount, not a secret: the
    read must not report "no secrets engine mounted" (SecretNotFound, which stalls the entry
    with the wrong cause), and login() must not raise hvac's own exception."""
    path = unique("team-a/db")
    write(vault, vault_kv, path, {"password": "x"})
    mount = unique("kubernetes-absent")
    jwt = f"header.{secrets.token_hex(16)}.signature"
    token_file = tmp_path / "token"
    token_file.write_text(jwt)
    config = VaultConfig(
        vault.address, KubernetesAuth("ferry", mount, token_file), kv_mount=vault_kv
    )
    current = vault.create_token([])  # the still-valid token a re-login is sent with
    async with VaultClient(config) as client:
        client._hvac.token = current
        with pytest.raises(AuthenticationFailed) as on_read:
            await client.read(path)
        with pytest.raises(AuthenticationFailed) as on_login:
            await client.login()
    for failure in (on_read.value, on_login.value):
        assert failure.reason == "VaultLoginFailed" and not failure.retryable
        assert str(failure) == (
            f'Vault at {vault.address} has no auth method at mount "{mount}" (logging in with '
            f'Kubernetes auth, role "ferry"): no handler for route "auth/{mount}/login". route '
            "entry not found."
        )
        assert_no_value(failure, jwt, current)
