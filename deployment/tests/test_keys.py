"""API keys against the real bootstrapped database: the CLI, the verifier and the grants."""

from __future__ import annotations

import hashlib
import subprocess
import sys
import threading
import time

import psycopg2.errors
import pytest
from argon2 import PasswordHasher

from deployment.keys import KeyRing, KeyStoreUnavailable, create_key, make_hasher, revoke_key
from testkit.fixtures import TestDatabase, wait_until
from testkit.localdb import free_port


class CountingHasher(PasswordHasher):
    """The real argon2 hasher, with the production parameters, counting its verifies."""

    def __init__(self) -> None:
        h = make_hasher()
        super().__init__(h.time_cost, h.memory_cost, h.parallelism, h.hash_len, h.salt_len, type=h.type)
        self.verifies: list[str] = []

    def verify(self, hash: str | bytes, password: str | bytes) -> bool:
        self.verifies.append(str(password))
        return super().verify(hash, password)


def keys_cli(db: TestDatabase, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "deployment.keys", *args],
        env=db.env(**env),
        capture_output=True,
        text=True,
        timeout=120,
    )


def new_key(db: TestDatabase, name: str) -> str:
    return create_key(db.settings("api_admin"), name)[0]


def ring(db: TestDatabase) -> tuple[KeyRing, CountingHasher]:
    hasher = CountingHasher()
    keys = KeyRing(db.settings("mle"), hasher=hasher)
    assert keys.refresh(), keys.last_error
    return keys, hasher


def wrong_secret(key: str) -> str:
    return key[:-1] + ("A" if key[-1] != "A" else "B")


def test_create_prints_a_key_once_that_authenticates_to_its_name(companydata) -> None:
    result = keys_cli(companydata, "create", "acme-prod", API_ADMIN_DB_PASSWORD="api_admin")
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert len(lines) == 1 and lines[0].startswith("cdk_")
    key = lines[0]
    assert "will not be shown again" in result.stderr and key not in result.stderr

    keys, _ = ring(companydata)
    assert keys.authenticate(key) == "acme-prod"

    [(key_id, key_hash, whole_row)] = companydata.query("SELECT key_id, key_hash, t::text FROM api_keys AS t")
    assert key.startswith(f"cdk_{key_id}_")
    assert key_hash.startswith("$argon2id$v=19$m=19456,t=2,p=1$")
    secret = key.split("_", 1)[1][len(key_id) + 1 :]
    for leak in (key, secret, hashlib.sha256(key.encode()).hexdigest()):
        assert leak not in whole_row


def test_list_shows_names_ids_and_dates_but_never_hashes(companydata) -> None:
    new_key(companydata, "alpha")
    new_key(companydata, "beta.v2")
    revoke_key(companydata.settings("api_admin"), "alpha")
    result = keys_cli(companydata, "list")
    assert result.returncode == 0, result.stderr
    header, alpha, beta = result.stdout.splitlines()
    assert header.split() == ["NAME", "KEY_ID", "CREATED", "REVOKED"]
    ids = dict(companydata.query("SELECT name, key_id FROM api_keys"))
    assert alpha.split()[:2] == ["alpha", ids["alpha"]] and alpha.split()[3].endswith("Z")
    assert beta.split()[:2] == ["beta.v2", ids["beta.v2"]] and beta.split()[3] == "-"
    assert "argon2" not in result.stdout and "$" not in result.stdout


def test_revocation_applies_at_the_next_refresh_even_to_a_cached_key(companydata) -> None:
    key = new_key(companydata, "client")
    keys, _ = ring(companydata)
    assert keys.authenticate(key) == "client"  # verified and cached
    result = keys_cli(companydata, "revoke", "client")
    assert result.returncode == 0 and "revoked" in result.stderr
    assert keys.refresh()
    assert keys.authenticate(key) is None
    again = keys_cli(companydata, "revoke", "client")  # idempotent, says so
    assert again.returncode == 0 and "already revoked" in again.stderr


def test_the_background_refresher_picks_up_a_revocation(companydata) -> None:
    key = new_key(companydata, "client")
    keys = KeyRing(companydata.settings("mle"), refresh_seconds=0.05)
    keys.start()
    try:
        assert keys.authenticate(key) == "client"
        revoke_key(companydata.settings("api_admin"), "client")
        wait_until(lambda: keys.authenticate(key) is None, 10, "the refresher to see the revocation")
    finally:
        keys.stop()


def test_a_verified_key_is_not_hashed_again(companydata) -> None:
    key = new_key(companydata, "client")
    keys, hasher = ring(companydata)
    assert keys.authenticate(key) == "client"
    assert keys.authenticate(key) == "client"
    assert keys.refresh()  # an unchanged row keeps its cached verification
    assert keys.authenticate(key) == "client"
    assert len(hasher.verifies) == 1
    started = time.perf_counter()
    for _ in range(1000):
        keys.authenticate(key)
    assert time.perf_counter() - started < 0.5  # microseconds each, not an argon2 verify
    assert len(hasher.verifies) == 1


def test_a_wrong_secret_for_a_known_key_id_is_refused_and_hashed_once(companydata) -> None:
    key = new_key(companydata, "client")
    keys, hasher = ring(companydata)
    forged = wrong_secret(key)
    assert [keys.authenticate(forged) for _ in range(20)] == [None] * 20
    assert hasher.verifies == [forged]
    assert keys.authenticate(key) == "client"  # the failure is cached for that key only
    assert len(hasher.verifies) == 2


def test_concurrent_first_requests_with_one_key_hash_it_once(companydata) -> None:
    key = new_key(companydata, "client")
    keys, hasher = ring(companydata)
    barrier = threading.Barrier(8)
    results: list[str | None] = []

    def request() -> None:
        barrier.wait()
        results.append(keys.authenticate(key))

    threads = [threading.Thread(target=request) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert results == ["client"] * 8
    assert len(hasher.verifies) == 1


def test_a_changed_row_drops_the_cached_verification(companydata) -> None:
    key = new_key(companydata, "client")
    keys, hasher = ring(companydata)
    assert keys.authenticate(key) == "client"
    replacement = wrong_secret(key)  # same key_id, another secret: only the superuser can do this
    companydata.query("UPDATE api_keys SET key_hash = %s WHERE name = 'client'", (make_hasher().hash(replacement),))
    assert keys.refresh()
    assert keys.authenticate(key) is None
    assert keys.authenticate(replacement) == "client"
    assert len(hasher.verifies) == 3


@pytest.mark.parametrize(
    "presented",
    [
        "",
        "cdk_",
        "x" * 1_000_000,
        "cdk_" + "é" * 8 + "_" + "s" * 43,
        "Bearer cdk_AAAAAAAA_" + "s" * 43,
        "cdk_AAAAAAAA_" + "s" * 42 + "\n",
        "cdk_AAAAAAAA_" + "s" * 42 + "\u00e9",
        "cdk_AAAAAAAA_" + "s" * 42 + "\x00",
        "cdk_AAAAAAAA_" + "s" * 43,  # well formed, unknown key_id
        "\ud800" * 56,  # a lone surrogate: not even encodable
    ],
    ids=["empty", "prefix", "1MB", "non-ascii-id", "bearer", "newline", "non-ascii", "nul", "unknown-id", "surrogate"],
)
def test_malformed_and_unknown_keys_are_refused_without_hashing(companydata, presented: str) -> None:
    new_key(companydata, "client")
    keys, hasher = ring(companydata)
    assert keys.authenticate(presented) is None
    assert hasher.verifies == []


def test_a_revoked_key_is_refused_without_hashing(companydata) -> None:
    key = new_key(companydata, "client")
    revoke_key(companydata.settings("api_admin"), "client")
    keys, hasher = ring(companydata)
    assert keys.authenticate(key) is None
    assert hasher.verifies == []


def test_a_key_table_never_loaded_is_unavailable_not_unknown(companydata) -> None:
    key = new_key(companydata, "client")
    keys = KeyRing(companydata.settings("mle").model_copy(update={"port": free_port()}))
    assert not keys.refresh()
    assert not keys.loaded and keys.last_error
    with pytest.raises(KeyStoreUnavailable):
        keys.authenticate(key)
    assert keys.authenticate("not a key") is None  # malformed is a plain 401 whatever the database does


def test_the_last_table_stays_in_force_while_the_database_is_down(companydata) -> None:
    key = new_key(companydata, "client")
    other = new_key(companydata, "other")
    keys, _ = ring(companydata)
    assert keys.authenticate(key) == "client"
    companydata.cluster.stop()
    try:
        assert not keys.refresh()
        assert keys.loaded and keys.last_error
        assert keys.authenticate(key) == "client"
        assert keys.authenticate(other) == "other"  # not cached before: verified against the kept row
    finally:
        companydata.cluster.start(fast=True)
    assert keys.refresh() and keys.last_error is None


@pytest.mark.parametrize(
    ("args", "env", "problem"),
    [
        (["create", "taken"], {}, "'taken' is taken"),
        (["create", "gone"], {}, "'gone' is taken"),
        (["create", "--", "-leading-dash"], {}, "invalid key name"),
        (["create", ".leading-dot"], {}, "invalid key name"),
        (["create", "has space"], {}, "invalid key name"),
        (["create", "x" * 65], {}, "invalid key name"),
        (["create", "ünïcode"], {}, "invalid key name"),
        (["revoke", "nobody"], {}, "no key named 'nobody'"),
        (["list"], {"API_ADMIN_DB_PASSWORD": "wrong"}, "password authentication failed"),
        (["list"], {"DB_PORT": "unreachable", "DB_CONNECT_TIMEOUT": "1"}, "cannot connect to the database"),
    ],
    ids=[
        "duplicate",
        "revoked-name",
        "dash",
        "dot",
        "space",
        "too-long",
        "non-ascii",
        "unknown",
        "password",
        "unreachable",
    ],
)
def test_cli_errors_exit_1_naming_the_problem(companydata, args: list[str], env: dict[str, str], problem: str) -> None:
    new_key(companydata, "taken")
    new_key(companydata, "gone")
    revoke_key(companydata.settings("api_admin"), "gone")
    if env.get("DB_PORT") == "unreachable":
        env = {**env, "DB_PORT": str(free_port())}
    before = companydata.digest("api_keys")
    result = keys_cli(companydata, *args, **env)
    assert result.returncode == 1
    assert result.stderr.splitlines()[-1].startswith("error: ")  # after any retry warnings
    assert problem in result.stderr.splitlines()[-1]
    assert result.stdout == ""
    assert companydata.digest("api_keys") == before


@pytest.mark.parametrize(
    ("role", "sql"),
    [
        ("mle", "INSERT INTO api_keys (name, key_id, key_hash) VALUES ('mine', 'AAAAAAAA', 'x')"),
        ("mle", "UPDATE api_keys SET revoked_at = NULL"),
        ("mle", "DELETE FROM api_keys"),
        ("api_admin", "UPDATE api_keys SET key_hash = 'planted'"),
        ("api_admin", "UPDATE api_keys SET name = 'renamed'"),
        ("api_admin", "DELETE FROM api_keys"),
        ("ds", "SELECT * FROM api_keys"),
        ("etl", "SELECT * FROM api_keys"),
    ],
    ids=[
        "mle-insert",
        "mle-unrevoke",
        "mle-delete",
        "admin-plant-hash",
        "admin-rename",
        "admin-delete",
        "ds-read",
        "etl-read",
    ],
)
def test_roles_cannot_tamper_with_or_read_keys_beyond_their_job(companydata, role: str, sql: str) -> None:
    new_key(companydata, "client")
    revoke_key(companydata.settings("api_admin"), "client")
    before = companydata.digest("api_keys")
    with pytest.raises(psycopg2.errors.InsufficientPrivilege):
        companydata.query(sql, role=role)
    assert companydata.digest("api_keys") == before
