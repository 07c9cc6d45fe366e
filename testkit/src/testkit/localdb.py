"""A PostgreSQL cluster on this machine, bootstrapped exactly as the postgres:15 image does.

Tests, benchmarks and `make demo` need a real server without Docker. This module runs
`initdb` with the `admin` superuser, creates `companydata` and then applies every file of
`mle/src/machine_learning_engineering/bootstrap/` in name order, as /docker-entrypoint-initdb.d
would, so there is one bootstrap.

PostgreSQL refuses to run as root: when we are root, the server binaries run as the
`postgres` system user through `runuser`; as an ordinary user they run as that user.
"""

from __future__ import annotations

import argparse
import logging
import os
import shutil
import socket
import subprocess
import sys
import tempfile
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

from machine_learning_engineering.config import DatabaseSettings, Role

log = logging.getLogger(__name__)

INIT_DIR = Path(str(resources.files("machine_learning_engineering") / "bootstrap"))
SUPERUSER = "admin"
DATABASE = "companydata"
# Throwaway clusters trade durability for speed; a crash loses a test run, nothing else.
FAST_SETTINGS = ("fsync=off", "synchronous_commit=off", "full_page_writes=off")


class LocalDbError(RuntimeError):
    """The local cluster could not be created, started or bootstrapped."""


def find_bindir() -> Path:
    """Where initdb/pg_ctl live: $PG_BINDIR, Debian's versioned dir, or the PATH."""
    candidates = [os.environ.get("PG_BINDIR", "")]
    candidates += sorted(map(str, Path("/usr/lib/postgresql").glob("*/bin")), reverse=True)
    found = shutil.which("initdb")
    candidates.append(str(Path(found).parent) if found else "")
    for candidate in filter(None, candidates):
        if (Path(candidate) / "initdb").exists() and (Path(candidate) / "pg_ctl").exists():
            return Path(candidate)
    raise LocalDbError(
        "PostgreSQL server binaries (initdb, pg_ctl) not found: install PostgreSQL 15 "
        "(Debian: apt-get install postgresql-15) or set PG_BINDIR"
    )


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]  # (host, port) for AF_INET
        return port


def _server_user() -> str | None:
    """The system user to run the server as, or None for ourselves."""
    return "postgres" if os.geteuid() == 0 else None


@dataclass
class LocalCluster:
    datadir: Path
    port: int
    bindir: Path

    @property
    def socket_dir(self) -> Path:
        return self.datadir

    def _server(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        user = _server_user()
        cmd = (["runuser", "-u", user, "--"] if user else []) + list(args)
        result = subprocess.run(cmd, capture_output=True, text=True, cwd="/")
        if check and result.returncode != 0:
            raise LocalDbError(f"{' '.join(args[:2])} failed ({result.returncode}): {result.stderr or result.stdout}")
        return result

    def _chown(self, path: Path) -> None:
        user = _server_user()
        if user:
            shutil.chown(path, user, user)

    def initdb(self, admin_password: str) -> None:
        self.datadir.mkdir(parents=True, exist_ok=True)
        self.datadir.chmod(0o700)
        self._chown(self.datadir)
        # The password goes through a private file, never the command line.
        secret_dir = Path(tempfile.mkdtemp(prefix="initdb-"))
        pwfile = secret_dir / "pwfile"
        pwfile.write_text(admin_password + "\n")
        for path in (secret_dir, pwfile):
            self._chown(path)
        try:
            self._server(
                str(self.bindir / "initdb"),
                "-D",
                str(self.datadir),
                "-U",
                SUPERUSER,
                f"--pwfile={pwfile}",
                "--auth-local=trust",
                "--auth-host=scram-sha-256",
                "-E",
                "UTF8",
                "--locale=C.UTF-8",
            )
        finally:
            shutil.rmtree(secret_dir, ignore_errors=True)

    def start(self, fast: bool = False) -> None:
        opts = [f"-p {self.port}", f"-k {self.socket_dir}", "-c listen_addresses=127.0.0.1"]
        opts += [f"-c {s}" for s in FAST_SETTINGS] if fast else []
        self._server(
            str(self.bindir / "pg_ctl"),
            "-D",
            str(self.datadir),
            "-l",
            str(self.datadir / "server.log"),
            "-o",
            " ".join(opts),
            "-w",
            "-t",
            "60",
            "start",
        )

    def stop(self) -> None:
        if (self.datadir / "postmaster.pid").exists():
            self._server(str(self.bindir / "pg_ctl"), "-D", str(self.datadir), "-m", "fast", "-w", "stop", check=False)

    def running(self) -> bool:
        return self._server(str(self.bindir / "pg_ctl"), "-D", str(self.datadir), "status", check=False).returncode == 0

    def psql_env(self, extra: Mapping[str, str] | None = None) -> dict[str, str]:
        """Environment of the image's init phase: local socket, superuser, database."""
        env = {**os.environ, **(extra or {})}
        env.update(
            PGHOST=str(self.socket_dir),
            PGPORT=str(self.port),
            POSTGRES_USER=SUPERUSER,
            POSTGRES_DB=DATABASE,
            PATH=f"{self.bindir}{os.pathsep}{env.get('PATH', '')}",
        )
        return env

    def psql(self, sql: str, database: str = DATABASE) -> str:
        result = subprocess.run(
            ["psql", "-v", "ON_ERROR_STOP=1", "--no-psqlrc", "-qAt", "-U", SUPERUSER, "-d", database, "-c", sql],
            capture_output=True,
            text=True,
            env=self.psql_env(),
        )
        if result.returncode != 0:
            raise LocalDbError(f"psql failed: {result.stderr}")
        return result.stdout

    def bootstrap(self, init_dir: Path = INIT_DIR, env: Mapping[str, str] | None = None) -> None:
        """Create `companydata` and run init_dir/*.sh|*.sql in name order, like the image."""
        self.psql(f'CREATE DATABASE "{DATABASE}"', database="postgres")
        script_env = self.psql_env(env)
        for path in sorted(init_dir.iterdir()):
            if path.suffix == ".sh":
                cmd = [str(path)] if os.access(path, os.X_OK) else ["bash", str(path)]
            elif path.suffix == ".sql":
                cmd = [
                    "psql",
                    "-v",
                    "ON_ERROR_STOP=1",
                    "--no-psqlrc",
                    "-q",
                    "-U",
                    SUPERUSER,
                    "-d",
                    DATABASE,
                    "-f",
                    str(path),
                ]
            else:
                log.info("bootstrap: ignoring %s", path.name)
                continue
            result = subprocess.run(cmd, capture_output=True, text=True, env=script_env)
            if result.returncode != 0:
                raise LocalDbError(f"bootstrap file {path} failed: {result.stderr or result.stdout}")
            log.info("bootstrap: applied %s", path.name)

    def settings(self, role: Role, env: Mapping[str, str] | None = None) -> DatabaseSettings:
        """Connection settings for `role`, as the application would read them."""
        return DatabaseSettings.from_env(role, {**(env or {}), "DB_HOSTNAME": "127.0.0.1", "DB_PORT": str(self.port)})


def create(
    datadir: Path, port: int | None = None, env: Mapping[str, str] | None = None, fast: bool = False
) -> LocalCluster:
    """initdb + start + bootstrap; passwords from `env` (default: the process environment)."""
    env = dict(os.environ if env is None else env)
    cluster = LocalCluster(datadir=datadir, port=port or free_port(), bindir=find_bindir())
    cluster.initdb(DatabaseSettings.from_env("admin", env).password)
    cluster.start(fast=fast)
    try:
        cluster.bootstrap(env=env)
    except Exception:
        cluster.stop()
        raise
    return cluster


@contextmanager
def temporary_cluster(fast: bool = True, env: Mapping[str, str] | None = None) -> Iterator[LocalCluster]:
    """A bootstrapped cluster in a fresh temporary directory, removed afterwards."""
    root = Path(tempfile.mkdtemp(prefix="companydata-"))
    root.chmod(0o755)  # the postgres system user must reach the data directory inside
    cluster = create(root / "pgdata", env={} if env is None else env, fast=fast)
    try:
        yield cluster
    finally:
        cluster.stop()
        shutil.rmtree(root, ignore_errors=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m testkit.localdb", description=__doc__.splitlines()[0])
    parser.add_argument("command", choices=["start", "stop", "status"])
    parser.add_argument("--datadir", type=Path, default=Path(".pgdata"))
    parser.add_argument("--port", type=int, default=int(os.environ.get("DB_PORT", "5432")))
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    datadir = args.datadir.resolve()
    cluster = LocalCluster(datadir=datadir, port=args.port, bindir=find_bindir())
    try:
        if args.command == "start":
            if not (datadir / "PG_VERSION").exists():
                create(datadir, args.port)
                log.info("created and bootstrapped a cluster in %s", datadir)
            elif not cluster.running():
                cluster.start()
            log.info("PostgreSQL listening on 127.0.0.1:%d (database %s)", args.port, DATABASE)
        elif args.command == "stop":
            cluster.stop()
        else:
            print("running" if cluster.running() else "stopped")
    except LocalDbError as exc:
        log.error("%s", exc)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
