"""bootstrap/60-dagster.sh, attacked with the real cluster: the `dagster` login owns its own
database and can do nothing in `companydata`; STACK_ENV=production refuses its default password.

testkit's `companydata` fixture bootstraps from the same directory, so the file under test is the
one the postgres image runs.
"""

from __future__ import annotations

import subprocess

import psycopg2
import pytest

from machine_learning_engineering.config import DatabaseSettings, production_problems
from machine_learning_engineering.db import connect_once
from testkit import localdb

BOOTSTRAP = localdb.INIT_DIR / "60-dagster.sh"
STAGE_ROLES = ("etl", "ds", "mle", "api_admin")


def dagster(companydata, database: str = "dagster", password: str | None = None) -> DatabaseSettings:
    settings = companydata.settings("dagster").model_copy(update={"name": database})
    return settings if password is None else settings.model_copy(update={"password": password})


def run(settings: DatabaseSettings, *statements: str) -> list[tuple]:
    conn = connect_once(settings)
    try:
        with conn, conn.cursor() as cur:
            for sql in statements:
                cur.execute(sql)
            return cur.fetchall() if cur.description else []
    finally:
        conn.close()


def rerun_bootstrap(companydata, **env: str) -> None:
    result = subprocess.run(
        ["bash", str(BOOTSTRAP)], env=companydata.cluster.psql_env(env), capture_output=True, text=True
    )
    assert result.returncode == 0, result.stderr


def test_dagster_owns_its_database_and_can_build_its_schema_there(companydata) -> None:
    settings = dagster(companydata)
    assert run(settings, "SELECT current_user, current_database()") == [("dagster", "dagster")]
    rows = run(
        settings,
        "CREATE TABLE runs (id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY, body text)",
        "CREATE INDEX runs_body ON runs (body)",
        "INSERT INTO runs (body) VALUES ('{}')",
        "SELECT count(*) FROM runs",
    )
    assert rows == [(1,)]
    run(settings, "ALTER TABLE runs ADD COLUMN status text", "DROP TABLE runs")


def test_the_dagster_role_is_an_unprivileged_login(companydata) -> None:
    (attributes,) = companydata.query(
        "SELECT rolcanlogin, rolsuper, rolcreatedb, rolcreaterole, rolreplication, rolbypassrls"
        " FROM pg_roles WHERE rolname = 'dagster'"
    )
    assert attributes == (True, False, False, False, False, False)
    assert companydata.query("SELECT pg_get_userbyid(datdba) FROM pg_database WHERE datname = 'dagster'") == [
        ("dagster",)
    ]
    # A member of no role: it inherits nothing but pg_database_owner's rights in its own database
    # (hence INHERIT: with NOINHERIT it could not create tables in its own schema public).
    assert companydata.query("SELECT count(*) FROM pg_auth_members WHERE member = 'dagster'::regrole") == [(0,)]


def test_dagster_cannot_connect_to_companydata(companydata) -> None:
    with pytest.raises(psycopg2.OperationalError, match="permission denied for database"):
        connect_once(dagster(companydata, "companydata"))
    privileges = companydata.query(
        "SELECT has_database_privilege('dagster', 'companydata', 'CONNECT'),"
        " has_database_privilege('dagster', 'companydata', 'CREATE'),"
        " has_database_privilege('dagster', 'companydata', 'TEMPORARY'),"
        " has_schema_privilege('dagster', 'public', 'USAGE'),"
        " has_schema_privilege('dagster', 'public', 'CREATE')"
    )
    assert privileges == [(False,) * 5]


def test_dagster_cannot_read_or_write_companydata_even_if_connect_leaked(companydata) -> None:
    """Defence in depth: should someone grant CONNECT to PUBLIC, still no table is reachable."""
    companydata.query("CREATE TABLE feature_store (idx int)", role="etl")  # the ETL's default privileges apply
    companydata.query("INSERT INTO feature_store VALUES (1)", role="etl")
    tables = sorted(companydata.tables())
    assert {"feature_store", "predictions", "api_keys"} <= set(tables)
    companydata.query("GRANT CONNECT ON DATABASE companydata TO PUBLIC")
    try:
        settings = dagster(companydata, "companydata")
        for table in tables:
            for sql in (
                f'SELECT * FROM public."{table}" LIMIT 1',
                f'DELETE FROM public."{table}"',
                f'TRUNCATE public."{table}"',
                f'INSERT INTO public."{table}" DEFAULT VALUES',
            ):
                with pytest.raises(psycopg2.errors.InsufficientPrivilege):
                    run(settings, sql)
        for sql in ("CREATE TABLE public.mine (x int)", "CREATE SCHEMA mine", "CREATE TEMP TABLE mine (x int)"):
            with pytest.raises(psycopg2.errors.InsufficientPrivilege):
                run(settings, sql)
    finally:
        companydata.query("REVOKE CONNECT ON DATABASE companydata FROM PUBLIC")
    assert companydata.query("SELECT count(*) FROM feature_store") == [(1,)]
    grants = companydata.query(
        "SELECT count(*) FROM information_schema.role_table_grants WHERE grantee IN ('dagster', 'PUBLIC')"
        " AND table_schema NOT IN ('pg_catalog', 'information_schema')"
    )
    assert grants == [(0,)]


@pytest.mark.parametrize("role", STAGE_ROLES)
def test_no_stage_role_can_reach_the_dagster_database(companydata, role) -> None:
    with pytest.raises(psycopg2.OperationalError, match="permission denied for database"):
        connect_once(companydata.settings(role).model_copy(update={"name": "dagster"}))


def test_a_wrong_password_is_refused(companydata) -> None:
    with pytest.raises(psycopg2.OperationalError, match="password authentication failed"):
        connect_once(dagster(companydata, password="not-it"))


def test_the_bootstrap_is_idempotent_and_takes_the_password_from_the_environment(companydata) -> None:
    run(dagster(companydata), "CREATE TABLE kept (x int)", "INSERT INTO kept VALUES (7)")
    try:
        rerun_bootstrap(companydata, DAGSTER_DB_PASSWORD="rotated-s3cret")
        with pytest.raises(psycopg2.OperationalError, match="password authentication failed"):
            connect_once(dagster(companydata))
        # The database and what Dagster stored survive a re-run.
        assert run(dagster(companydata, password="rotated-s3cret"), "SELECT x FROM kept") == [(7,)]
    finally:
        rerun_bootstrap(companydata, DAGSTER_DB_PASSWORD="dagster")  # back to the default for the other tests
        run(dagster(companydata), "DROP TABLE IF EXISTS kept")
    with pytest.raises(psycopg2.OperationalError, match="permission denied for database"):
        connect_once(dagster(companydata, "companydata"))


def test_production_refuses_the_default_dagster_password() -> None:
    strong = {
        "STACK_ENV": "production",
        "ADMIN_DB_PASSWORD": "a-real-one-1",
        "ETL_DB_PASSWORD": "a-real-one-2",
        "DS_DB_PASSWORD": "a-real-one-3",
        "MLE_DB_PASSWORD": "a-real-one-4",
        "API_ADMIN_DB_PASSWORD": "a-real-one-5",
        "MONITOR_DB_PASSWORD": "a-real-one-7",
        "API_TOKEN": "t" * 32,
    }
    assert production_problems(strong) == ["DAGSTER_DB_PASSWORD is unset: set a password"]
    assert production_problems({**strong, "DAGSTER_DB_PASSWORD": "dagster"}) == [
        "DAGSTER_DB_PASSWORD is the documented default: set a password"
    ]
    assert production_problems({**strong, "DAGSTER_DB_PASSWORD": "a-real-one-6"}) == []
    assert production_problems({"DAGSTER_DB_PASSWORD": "dagster"}) == []  # development accepts it
