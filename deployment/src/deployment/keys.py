"""Per-client API keys: the admin command (`python -m deployment.keys`) and the API's verifier.

A key looks like `cdk_<key_id>_<secret>`. The key_id is public (it finds the row and shows up
in `list`); the secret is 256 random bits. The database holds only an argon2id hash of the
whole key, so a leaked `api_keys` table (a backup, a dump, a read-only role gone astray)
does not let anyone call the API. The key itself is printed once, at creation.

Names are never reused, even after revocation: every prediction row records the name of the
key that made it, so a name must mean one client for ever.

    python -m deployment.keys create NAME   # the key on stdout, alone on its line
    python -m deployment.keys revoke NAME
    python -m deployment.keys list
"""

from __future__ import annotations

import argparse
import hashlib
import logging
import re
import secrets
import sys
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

import psycopg2
import psycopg2.errors
from argon2 import PasswordHasher, Type
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError
from psycopg2.extensions import connection as PgConnection

from deployment.errors import DeploymentError
from machine_learning_engineering.cli import run
from machine_learning_engineering.config import ConfigError, DatabaseSettings
from machine_learning_engineering.db import connect, connect_once, first_line

log = logging.getLogger(__name__)

PREFIX = "cdk_"
KEY_ID_LENGTH = 8  # secrets.token_urlsafe(6): 48 random bits, plenty for a lookup id
SECRET_LENGTH = 43  # secrets.token_urlsafe(32)
KEY_LENGTH = len(PREFIX) + KEY_ID_LENGTH + 1 + SECRET_LENGTH
_KEY = re.compile(rf"{PREFIX}([A-Za-z0-9_-]{{{KEY_ID_LENGTH}}})_([A-Za-z0-9_-]{{{SECRET_LENGTH}}})")
# Same rule as the table's CHECK constraint (mle/src/machine_learning_engineering/bootstrap/40-api-keys.sql),
# checked first for a clearer message.
NAME_RULE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
# Distinct wrong keys remembered per process; beyond this the oldest are forgotten (bounded memory).
MAX_CACHED_FAILURES = 4096
# An unknown key_id re-reads the table at once (a key created a moment ago works at once), but
# no more often than this, so key-shaped garbage cannot turn requests into database queries.
ON_DEMAND_REFRESH_SECONDS = 1.0


def make_hasher() -> PasswordHasher:
    """argon2id with OWASP's minimum parameters (19 MiB, 2 passes, 1 lane): tens of ms a verify.

    The stronger defaults of argon2-cffi (64 MiB, 3 passes, 4 lanes) exist for passwords,
    which are guessable. Our keys carry 256 random bits, so no dictionary attack applies;
    the hash only has to make a leaked table useless, which a slow hash of a random key
    already does. The cost would still hurt if paid per request, which is why `KeyRing`
    verifies each key once per process and caches the outcome.
    """
    return PasswordHasher(time_cost=2, memory_cost=19 * 1024, parallelism=1, hash_len=32, salt_len=16, type=Type.ID)


def parse_key(presented: str) -> str | None:
    """The key_id of a well-formed key, else None. Cheap: length first, so 1 MB of junk costs nothing."""
    if not isinstance(presented, str) or len(presented) != KEY_LENGTH:
        return None
    match = _KEY.fullmatch(presented)
    return match.group(1) if match else None


# --- the verifier (the API, as mle_user) --------------------------------------------------


class KeyStoreUnavailable(RuntimeError):
    """The key table has never been loaded (database down since start): answer 503, not 401."""


@dataclass(frozen=True)
class _Row:
    name: str
    key_id: str
    key_hash: str
    revoked: bool


class KeyRing:
    """The key table in memory, refreshed in the background; `authenticate` is the hot path.

    One per API worker process. Revoking a key takes effect in every worker within one
    refresh interval, without a database round trip per request and without restarts.
    A successful argon2 verify is remembered (by sha256 of the presented key, so the key
    itself is not kept), as is a failed one, so a client pays the hash once per process
    and one hammering a wrong secret costs microseconds per retry. A cached outcome is
    tied to the row it was checked against and is dropped when that row changes.
    """

    def __init__(
        self, settings: DatabaseSettings, refresh_seconds: float = 5.0, hasher: PasswordHasher | None = None
    ) -> None:
        self.settings = settings
        self.refresh_seconds = refresh_seconds
        self.hasher = hasher or make_hasher()
        self.last_error: str | None = "not loaded yet"
        self._last_refresh = float("-inf")
        self._rows: dict[str, _Row] | None = None  # key_id -> row; None until the first load
        self._verified: dict[str, _Row] = {}  # sha256(key) -> the row it verified against
        self._failed: dict[str, _Row] = {}  # sha256(key) -> the row it failed against
        self._gates: dict[str, threading.Lock] = {}  # one argon2 verify in flight per presented key
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    @property
    def loaded(self) -> bool:
        """True once the table has been read at least once (it may be stale: see `last_error`)."""
        return self._rows is not None

    @property
    def has_keys(self) -> bool:
        """True once any key was ever created (revoked ones count: revoking the last key must
        not open the API to everyone)."""
        return bool(self._rows)

    def refresh(self) -> bool:
        """Re-read the table in one query; True on success. When the database cannot be
        reached, the last table read stays in force and `last_error` says why."""
        self._last_refresh = time.monotonic()
        try:
            conn = connect_once(self.settings, "api-keyring")
            try:
                with conn, conn.cursor() as cur:
                    cur.execute("SELECT name, key_id, key_hash, revoked_at IS NOT NULL FROM api_keys")
                    fetched = cur.fetchall()
            finally:
                conn.close()
        except psycopg2.Error as exc:
            error = first_line(exc)
            if error != self.last_error:  # once per new problem, not every interval
                log.warning("cannot read API keys from %s (%s); %s", self.settings.where, error, self._stale_note())
            self.last_error = error
            return False
        rows = {r[1]: _Row(name=r[0], key_id=r[1], key_hash=r[2], revoked=r[3]) for r in fetched}
        with self._lock:
            changed = rows != self._rows
            self._rows = rows
            # Forget outcomes checked against a row that is gone, revoked or different now.
            for cache in (self._verified, self._failed):
                for digest in [d for d, row in cache.items() if rows.get(row.key_id) != row]:
                    del cache[digest]
        if changed or self.last_error is not None:
            active = sum(not r.revoked for r in rows.values())
            log.info("API keys loaded: %d active, %d revoked", active, len(rows) - active)
        self.last_error = None
        return True

    def _stale_note(self) -> str:
        return "keeping the keys loaded earlier" if self._rows is not None else "no keys loaded: requests get 503"

    def authenticate(self, presented: str) -> str | None:
        """The name of the key presented, or None if it is not a valid, unrevoked key.

        Raises KeyStoreUnavailable for a well-formed key while the table has never been loaded.
        Only a well-formed key with a known, unrevoked key_id and no cached outcome is hashed.
        """
        key_id = parse_key(presented)
        if key_id is None:
            return None
        rows = self._rows
        if rows is None:
            raise KeyStoreUnavailable(f"API keys not loaded: {self.last_error}")
        row = rows.get(key_id)
        if row is None and time.monotonic() - self._last_refresh >= ON_DEMAND_REFRESH_SECONDS:
            self.refresh()  # perhaps created since the last refresh
            row = (self._rows or {}).get(key_id)
        if row is None or row.revoked:
            return None
        digest = hashlib.sha256(presented.encode()).hexdigest()
        with self._lock:
            outcome = self._cached(digest, row)
            if outcome is not None:
                return row.name if outcome else None
            gate = self._gates.setdefault(digest, threading.Lock())
        with gate:  # concurrent first requests with the same key wait for one verify
            with self._lock:
                outcome = self._cached(digest, row)
            if outcome is None:
                outcome = self._verify(row, presented)
                with self._lock:
                    if self._rows is not None and self._rows.get(key_id) == row:  # not changed meanwhile
                        if outcome:
                            self._verified[digest] = row
                        else:
                            if len(self._failed) >= MAX_CACHED_FAILURES:
                                del self._failed[next(iter(self._failed))]
                            self._failed[digest] = row
            with self._lock:
                if self._gates.get(digest) is gate:
                    del self._gates[digest]
        return row.name if outcome else None

    def _cached(self, digest: str, row: _Row) -> bool | None:
        if self._verified.get(digest) == row:
            return True
        if self._failed.get(digest) == row:
            return False
        return None

    def _verify(self, row: _Row, presented: str) -> bool:
        try:
            return self.hasher.verify(row.key_hash, presented)
        except VerifyMismatchError:
            return False
        except (InvalidHashError, VerificationError) as exc:
            log.error("API key %r has an unusable hash (%s): it cannot authenticate", row.name, exc)
            return False

    def start(self) -> None:
        """Load now (a failure is logged, not raised), then refresh every `refresh_seconds`."""
        self.refresh()
        self._stop.clear()
        self._thread = threading.Thread(target=self._watch, name="api-key-refresh", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10)
            self._thread = None

    def _watch(self) -> None:
        while not self._stop.wait(self.refresh_seconds):
            try:
                self.refresh()
            except Exception:  # the refresher must outlive any surprise; the loaded keys stay in force
                log.exception("API key refresh failed")


# --- administration (api_admin) -----------------------------------------------------------


class KeyAdminError(DeploymentError):
    """A `create` / `revoke` / `list` that cannot be done; the message says why."""


@dataclass(frozen=True)
class KeyInfo:
    """What `list` shows: never the hash."""

    name: str
    key_id: str
    created_at: datetime
    revoked_at: datetime | None


def _admin_connection(settings: DatabaseSettings) -> PgConnection:
    try:
        return connect(settings)
    except psycopg2.OperationalError as exc:
        raise KeyAdminError(f"cannot connect to the database at {settings.where}: {first_line(exc)}") from None


def create_key(settings: DatabaseSettings, name: str) -> tuple[str, str]:
    """Store a new key for `name` and return (key, key_id). The key exists nowhere else afterwards."""
    if not isinstance(name, str) or not NAME_RULE.fullmatch(name):
        raise KeyAdminError(
            f"invalid key name {name!r}: use 1-64 characters from A-Z a-z 0-9 . _ -, starting with a letter or digit"
        )
    hasher = make_hasher()
    conn = _admin_connection(settings)
    try:
        for _ in range(5):  # a key_id collision (48 random bits) is vanishingly rare; draw again if so
            key_id = secrets.token_urlsafe(6)
            key = f"{PREFIX}{key_id}_{secrets.token_urlsafe(32)}"
            try:
                with conn, conn.cursor() as cur:
                    cur.execute(
                        "INSERT INTO api_keys (name, key_id, key_hash) VALUES (%s, %s, %s)",
                        (name, key_id, hasher.hash(key)),
                    )
                return key, key_id
            except psycopg2.errors.UniqueViolation as exc:
                if exc.diag.constraint_name != "api_keys_key_id_key":
                    raise KeyAdminError(
                        f"the name {name!r} is taken (names are never reused, even after revocation: "
                        "predictions record the key name); choose another"
                    ) from None
            except psycopg2.errors.CheckViolation:
                raise KeyAdminError(f"invalid key name {name!r}") from None
        raise KeyAdminError("could not draw an unused key_id; try again")
    finally:
        conn.close()


def revoke_key(settings: DatabaseSettings, name: str) -> tuple[datetime, bool]:
    """Revoke `name`; returns (revoked_at, True if revoked now / False if it already was)."""
    conn = _admin_connection(settings)
    try:
        with conn, conn.cursor() as cur:
            cur.execute(
                "UPDATE api_keys SET revoked_at = now() WHERE name = %s AND revoked_at IS NULL RETURNING revoked_at",
                (name,),
            )
            row = cur.fetchone()
            if row is not None:
                return row[0], True
            cur.execute("SELECT revoked_at FROM api_keys WHERE name = %s", (name,))
            row = cur.fetchone()
        if row is None:
            raise KeyAdminError(f"no key named {name!r}")
        return row[0], False
    finally:
        conn.close()


def list_keys(settings: DatabaseSettings) -> list[KeyInfo]:
    conn = _admin_connection(settings)
    try:
        with conn, conn.cursor() as cur:
            cur.execute("SELECT name, key_id, created_at, revoked_at FROM api_keys ORDER BY created_at, name")
            return [KeyInfo(*row) for row in cur.fetchall()]
    finally:
        conn.close()


def _when(moment: datetime | None) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ") if moment else "-"


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="companydata-api-keys", description="Create, revoke and list the API's client keys (as api_admin)."
    )
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("create", help="create a key; it is printed once, on stdout").add_argument("name")
    commands.add_parser("revoke", help="revoke a key (its name stays taken)").add_argument("name")
    commands.add_parser("list", help="name, key_id, created, revoked of every key")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    try:
        settings = DatabaseSettings.from_env("api_admin")
        if args.command == "create":
            key, key_id = create_key(settings, args.name)
            print(key, flush=True)
            print(
                f"created key {args.name!r} (key_id {key_id}). Store it now: it will not be shown again.",
                file=sys.stderr,
            )
        elif args.command == "revoke":
            revoked_at, now = revoke_key(settings, args.name)
            state = "revoked" if now else "was already revoked"
            print(f"key {args.name!r} {state} at {_when(revoked_at)}", file=sys.stderr)
        else:
            keys = list_keys(settings)
            rows = [("NAME", "KEY_ID", "CREATED", "REVOKED")]
            rows += [(k.name, k.key_id, _when(k.created_at), _when(k.revoked_at)) for k in keys]
            widths = [max(len(r[i]) for r in rows) for i in range(3)]
            for r in rows:
                print("  ".join(c.ljust(w) for c, w in zip(r, widths, strict=False)) + "  " + r[3])
    except (KeyAdminError, ConfigError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except psycopg2.Error as exc:
        print(f"error: database: {str(exc).strip() or type(exc).__name__}", file=sys.stderr)
        return 1
    return 0


entry = run(main)

if __name__ == "__main__":
    entry()
