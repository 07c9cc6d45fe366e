"""The database bootstrap (mle/src/machine_learning_engineering/bootstrap): each role can do its job, and nothing else.

Every refusal below is an attempt a compromised service, or a curious user, could make with
its own login. Each must fail with the PostgreSQL error that says it lacks the privilege, as
the role runs it (the data scientist's read-only session default lifted first, as anyone can:
only privileges may refuse). The other tests show each role doing its actual job.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import psycopg2
import pytest
from psycopg2 import errors

from data_engineering.db import etl_transaction
from data_engineering.features import build_features
from data_engineering.load import available_months, load_customers, load_sales
from machine_learning_engineering.db import connect, connect_once
from testkit.fixtures import TestDatabase

LOGINS = {"etl": "etl_user", "ds": "ds_user", "mle": "mle_user", "api_admin": "api_admin"}
ALL = tuple(LOGINS)
NOT_ETL = ("ds", "mle", "api_admin")
DATA_TABLES = ("customer_profiles", "customer_activity", "labels", "stores", "sales", "monthly_sales", "feature_store")
LOG_TABLES = ("predictions", "prediction_batches", "prediction_dead_letters")
# One row per logged prediction of both tables (95-prediction-batches.sql); security_invoker.
LOG_VIEWS = ("prediction_log",)
# The daily batch scores (50-batch-predictions.sql): mle_user replaces a day, ds_user reads them.
SCORE_TABLES = ("batch_predictions",)
# The drift monitor's tables (80-monitoring.sh); monitor_user's privileges and refusals are in
# monitoring/tests/test_bootstrap.py.
MONITOR_TABLES = ("monitoring_metrics", "monitoring_alerts")
ALL_TABLES = (*DATA_TABLES, *LOG_TABLES, *LOG_VIEWS, *SCORE_TABLES, "api_keys", "etl_private.run_lock")
PRIVILEGES = ("SELECT", "INSERT", "UPDATE", "DELETE", "TRUNCATE", "REFERENCES", "TRIGGER")
NO_TRANSACTION = ("CREATE DATABASE", "ALTER SYSTEM")  # statements refused inside a transaction block
PREDICTION = (
    "INSERT INTO predictions (prediction_id, client_idx, label, probability, model_version, features, predicted_at)"
    " VALUES (gen_random_uuid(), 1, 1, 0.9, 'v1', '{}', now())"
)
BATCHED_PREDICTIONS = (
    "INSERT INTO prediction_batches (batch_id, model_version, predicted_at, rows, client_idx, label, features)"
    " VALUES (gen_random_uuid(), 'v1', now(), 2, '{1,2}', '{1,0}', '{\"attr_a\": [1, 2]}')"
)
BATCH_SCORE = (
    "INSERT INTO batch_predictions (partition_date, client_idx, label, probability, model_version)"
    " VALUES ('2026-01-01', 1, 1, 0.9, 'v1')"
)
BATCH_REPLACE = "DELETE FROM batch_predictions WHERE partition_date = '2026-01-01'"


def run_etl(db: TestDatabase, raw_dir: Path) -> None:
    with etl_transaction(db.settings("etl")) as cur:
        load_customers(cur, raw_dir)
        load_sales(cur, raw_dir, available_months(raw_dir))
        build_features(cur)


@pytest.fixture
def loaded(companydata, raw_dir) -> TestDatabase:
    run_etl(companydata, raw_dir)
    return companydata


@pytest.fixture
def etl_tables(companydata_cluster, small_dataset) -> TestDatabase:
    """The data tables as the ETL made them, shared by the refusal tests (a refusal changes
    nothing; a test whose attempt succeeds fails, and the next test rebuilds them)."""
    db = companydata_cluster
    if not db.cluster.running():
        db.cluster.start(fast=True)
    if not set(DATA_TABLES) <= db.tables() or db.created_tables() - set(DATA_TABLES):
        db.reset()
        run_etl(db, small_dataset)
    return db


def attempt(db: TestDatabase, role: str, *statements: str) -> list[tuple]:
    """Run `statements` as `role` in one transaction of a fresh session; the last one's rows."""
    conn = connect(db.settings(role))
    try:
        conn.autocommit = True
        with conn.cursor() as cur:
            cur.execute("SET default_transaction_read_only = off")  # ds_user's default: anyone may lift it
            conn.autocommit = any(s.startswith(NO_TRANSACTION) for s in statements)
            for statement in statements:
                cur.execute(statement)
            rows = cur.fetchall() if cur.description else []
            conn.commit()
            return rows
    finally:
        conn.close()


def refused(roles: tuple[str, ...], label: str, statement: str, error: type[Exception] = errors.InsufficientPrivilege):
    return [pytest.param(role, statement, error, id=f"{role}-{label}") for role in roles]


REFUSALS = [
    # Code that would run with another role's privileges: triggers, functions, tables the ETL
    # would pick up, schemas that "$user" in a search_path would put first.
    *refused(
        NOT_ETL,
        "trigger-on-sales",
        "CREATE TRIGGER plant BEFORE INSERT ON sales FOR EACH ROW"
        " EXECUTE FUNCTION suppress_redundant_updates_trigger()",
    ),
    *refused(
        ALL,
        "trigger-on-predictions",
        "CREATE TRIGGER plant BEFORE INSERT ON predictions FOR EACH ROW"
        " EXECUTE FUNCTION suppress_redundant_updates_trigger()",
    ),
    *refused(
        ALL,
        "trigger-on-api_keys",
        "CREATE TRIGGER plant BEFORE INSERT ON api_keys FOR EACH ROW"
        " EXECUTE FUNCTION suppress_redundant_updates_trigger()",
    ),
    *refused(
        ALL,
        "event-trigger",
        "CREATE EVENT TRIGGER plant ON ddl_command_start EXECUTE FUNCTION suppress_redundant_updates_trigger()",
    ),
    *refused(NOT_ETL, "function-in-public", "CREATE FUNCTION public.plant() RETURNS int LANGUAGE sql AS 'SELECT 1'"),
    *refused(NOT_ETL, "table-in-public", "CREATE TABLE public.scratch (x int)"),
    *refused(NOT_ETL, "staging-name", "CREATE TABLE public.customer_profiles__new (idx int)"),
    *refused(NOT_ETL, "staging-name-features", "CREATE TABLE public.feature_store__new (idx int)"),
    *refused(NOT_ETL, "view-in-public", "CREATE VIEW public.scratch AS SELECT 1 AS x"),
    *refused(ALL, "schema", "CREATE SCHEMA scratch"),
    *refused(ALL, "schema-named-etl_user", "CREATE SCHEMA etl_user"),
    *refused(ALL, "schema-named-self", "CREATE SCHEMA AUTHORIZATION CURRENT_USER"),
    *refused(ALL, "database", "CREATE DATABASE scratch"),
    # Becoming someone else, or more.
    *refused(ALL, "set-role-admin", "SET ROLE admin"),
    *refused(NOT_ETL, "set-role-etl_user", "SET ROLE etl_user"),
    *refused(("etl", "ds", "mle"), "set-role-api_admin", "SET ROLE api_admin"),
    *refused(ALL, "session-authorization", "SET SESSION AUTHORIZATION admin"),
    *refused(ALL, "alter-self-superuser", "ALTER ROLE CURRENT_USER SUPERUSER"),
    *refused(ALL, "alter-self-createrole", "ALTER ROLE CURRENT_USER CREATEROLE"),
    *refused(ALL, "alter-self-createdb", "ALTER ROLE CURRENT_USER CREATEDB"),
    *refused(ALL, "alter-self-bypassrls", "ALTER ROLE CURRENT_USER BYPASSRLS"),
    *refused(ALL, "create-role", "CREATE ROLE scratch LOGIN SUPERUSER"),
    *refused(ALL, "grant-admin-membership", "GRANT admin TO CURRENT_USER"),
    *refused(NOT_ETL, "grant-etl_user-membership", "GRANT etl_user TO CURRENT_USER"),
    *refused(("mle", "api_admin"), "grant-on-feature_store", "GRANT ALL ON feature_store TO CURRENT_USER"),
    *refused(("ds",), "grant-on-api_keys", "GRANT ALL ON api_keys TO CURRENT_USER"),
    *refused(("etl",), "grant-on-predictions", "GRANT ALL ON predictions TO CURRENT_USER"),
    *refused(ALL, "disable-triggers", "SET session_replication_role = replica"),
    *refused(ALL, "alter-system", "ALTER SYSTEM SET log_statement = 'none'"),
    # Rewriting the prediction log (append-only for the API, read-only for everyone else).
    *refused(ALL, "truncate-predictions", "TRUNCATE predictions"),
    *refused(ALL, "update-predictions", "UPDATE predictions SET label = 0"),
    *refused(ALL, "delete-predictions", "DELETE FROM predictions"),
    *refused(ALL, "delete-dead-letters", "DELETE FROM prediction_dead_letters"),
    *refused(ALL, "drop-predictions", "DROP TABLE predictions"),
    *refused(ALL, "own-predictions", "ALTER TABLE predictions OWNER TO CURRENT_USER"),
    *refused(("etl", "ds", "api_admin"), "insert-predictions", PREDICTION),
    *refused(("etl",), "references-predictions", "CREATE TABLE public.pin (id bigint REFERENCES predictions (id))"),
    # A logged batch is a row of prediction_batches: the same append-only rules, and the view
    # (security_invoker) shows a role no more than the tables would.
    *refused(ALL, "truncate-prediction_batches", "TRUNCATE prediction_batches"),
    *refused(ALL, "update-prediction_batches", "UPDATE prediction_batches SET label = '{0,0}'"),
    *refused(ALL, "update-prediction_batches-where", "UPDATE prediction_batches SET rows = rows WHERE id = 1"),
    *refused(ALL, "delete-prediction_batches", "DELETE FROM prediction_batches"),
    *refused(ALL, "drop-prediction_batches", "DROP TABLE prediction_batches"),
    *refused(ALL, "drop-prediction_log", "DROP VIEW prediction_log"),
    *refused(ALL, "replace-prediction_log", "CREATE OR REPLACE VIEW prediction_log AS SELECT 1 AS source"),
    *refused(ALL, "own-prediction_batches", "ALTER TABLE prediction_batches OWNER TO CURRENT_USER"),
    *refused(
        ALL, "alter-prediction_batches-check", "ALTER TABLE prediction_batches DROP CONSTRAINT prediction_batches_check"
    ),
    *refused(("etl", "ds", "api_admin"), "insert-prediction_batches", BATCHED_PREDICTIONS),
    *refused(("mle", "etl", "api_admin"), "select-prediction_log", "SELECT * FROM prediction_log"),
    *refused(("mle",), "select-prediction_log-count", "SELECT count(*) FROM prediction_log"),
    *refused(
        ("mle",), "select-prediction_batches-returning", BATCHED_PREDICTIONS + " RETURNING client_idx"
    ),  # RETURNING reads: refused
    *refused(("mle",), "copy-prediction_batches-out", "COPY prediction_batches TO STDOUT"),
    *refused(
        ("etl",),
        "references-prediction_batches",
        "CREATE TABLE public.pin (id bigint REFERENCES prediction_batches (id))",
    ),
    *refused(("etl",), "references-api_keys", "CREATE TABLE public.pin (name text REFERENCES api_keys (name))"),
    # The batch scores: mle_user replaces a day (DELETE + INSERT) without reading them back or
    # rewriting them in place; only the data scientist reads them.
    *refused(
        ALL,
        "trigger-on-batch_predictions",
        "CREATE TRIGGER plant BEFORE INSERT ON batch_predictions FOR EACH ROW"
        " EXECUTE FUNCTION suppress_redundant_updates_trigger()",
    ),
    *refused(ALL, "update-batch_predictions", "UPDATE batch_predictions SET label = 0"),
    *refused(ALL, "truncate-batch_predictions", "TRUNCATE batch_predictions"),
    *refused(ALL, "drop-batch_predictions", "DROP TABLE batch_predictions"),
    *refused(ALL, "own-batch_predictions", "ALTER TABLE batch_predictions OWNER TO CURRENT_USER"),
    *refused(("mle",), "select-batch_predictions", "SELECT * FROM batch_predictions"),
    *refused(("mle",), "select-batch_predictions-scores", "SELECT probability FROM batch_predictions"),
    *refused(("etl", "ds", "api_admin"), "insert-batch_predictions", BATCH_SCORE),
    *refused(("etl", "ds", "api_admin"), "delete-batch_predictions", BATCH_REPLACE),
    *refused(("api_admin",), "select-batch_predictions", "SELECT * FROM batch_predictions"),
    *refused(("etl",), "select-batch_predictions", "SELECT * FROM batch_predictions"),
    *refused(
        ("etl",),
        "references-batch_predictions",
        "CREATE TABLE public.pin (d date, i bigint, FOREIGN KEY (d, i) REFERENCES batch_predictions)",
    ),
    # The data tables: only the ETL writes them; the API does not even read them.
    *[
        p
        for table in ("feature_store", "sales")
        for p in [
            *refused(NOT_ETL, f"truncate-{table}", f"TRUNCATE {table}"),
            *refused(NOT_ETL, f"update-{table}", f"UPDATE {table} SET idx = idx"),
            *refused(NOT_ETL, f"delete-{table}", f"DELETE FROM {table}"),
            *refused(NOT_ETL, f"insert-{table}", f"INSERT INTO {table} SELECT * FROM {table} LIMIT 0"),
            *refused(NOT_ETL, f"drop-{table}", f"DROP TABLE {table}"),
            *refused(NOT_ETL, f"lock-{table}", f"LOCK TABLE {table} IN SHARE MODE"),
            *refused(NOT_ETL, f"row-lock-{table}", f"SELECT 1 FROM {table} LIMIT 1 FOR SHARE"),
        ]
    ],
    *[p for t in (*DATA_TABLES, *LOG_TABLES) for p in refused(("mle",), f"select-{t}", f"SELECT * FROM {t}")],
    *refused(("api_admin",), "select-feature_store", "SELECT * FROM feature_store"),
    *refused(("api_admin",), "select-predictions", "SELECT * FROM predictions"),
    *refused(("etl",), "select-predictions", "SELECT * FROM predictions"),
    *refused(("etl", "ds"), "select-api_keys", "SELECT * FROM api_keys"),
    # API keys: the API reads them; api_admin adds and revokes them, nothing more.
    *refused(("mle",), "insert-api_keys", "INSERT INTO api_keys (name, key_id, key_hash) VALUES ('x', 'x', 'x')"),
    *refused(("mle",), "revoke-api_keys", "UPDATE api_keys SET revoked_at = now()"),
    *refused(("api_admin",), "rehash-api_keys", "UPDATE api_keys SET key_hash = 'x'"),
    *refused(("mle", "api_admin"), "delete-api_keys", "DELETE FROM api_keys"),
    *refused(("mle", "api_admin"), "truncate-api_keys", "TRUNCATE api_keys"),
    # The server itself: files, programs, extensions.
    *refused(ALL, "copy-to-program", "COPY (SELECT 1) TO PROGRAM 'id'"),
    *refused(ALL, "copy-to-file", "COPY (SELECT 1) TO '/tmp/companydata-attack'"),
    *refused(ALL, "copy-from-file", "COPY predictions (model_version) FROM '/etc/passwd'"),
    *refused(ALL, "read-file", "SELECT pg_read_file('/etc/passwd')"),
    *refused(ALL, "read-binary-file", "SELECT pg_read_binary_file('/etc/passwd')"),
    *refused(ALL, "list-dir", "SELECT pg_ls_dir('.')"),
    *refused(ALL, "large-object-import", "SELECT lo_import('/etc/passwd')"),
    *refused(ALL, "trusted-extension", "CREATE EXTENSION pgcrypto"),
    *refused(ALL, "untrusted-extension", "CREATE EXTENSION file_fdw"),
]


@pytest.mark.parametrize(("role", "statement", "error"), REFUSALS)
def test_refused(etl_tables, role, statement, error) -> None:
    with pytest.raises(error):
        attempt(etl_tables, role, statement)


def privilege_map(db: TestDatabase) -> dict[str, set[str]]:
    """Everything each login may do to the database, its schemas and its tables."""
    granted: dict[str, set[str]] = {}
    for role, user in LOGINS.items():
        rows = db.query(
            "SELECT 'database ' || p FROM unnest(ARRAY['CONNECT', 'CREATE', 'TEMPORARY']) AS p"
            " WHERE has_database_privilege(%(u)s, current_database(), p)"
            " UNION ALL SELECT 'schema ' || s || ' ' || p FROM unnest(ARRAY['public', 'etl_private']) AS s,"
            " unnest(ARRAY['USAGE', 'CREATE']) AS p WHERE has_schema_privilege(%(u)s, s, p)"
            " UNION ALL SELECT t || ' ' || p FROM unnest(%(tables)s) AS t, unnest(%(privileges)s) AS p"
            " WHERE has_table_privilege(%(u)s, t, p)"
            " UNION ALL SELECT 'api_keys.' || c || ' UPDATE' FROM unnest(ARRAY['key_hash', 'revoked_at']) AS c"
            " WHERE has_column_privilege(%(u)s, 'api_keys', c, 'UPDATE')"
            " UNION ALL SELECT 'batch_predictions.' || c || ' SELECT' FROM unnest(ARRAY['partition_date',"
            "   'client_idx', 'label', 'probability', 'model_version', 'scored_at', 'in_distribution']) AS c"
            " WHERE has_column_privilege(%(u)s, 'batch_predictions', c, 'SELECT')"
            "   AND NOT has_table_privilege(%(u)s, 'batch_predictions', 'SELECT')"
            " UNION ALL SELECT a FROM pg_roles, unnest(ARRAY["
            "   CASE WHEN rolsuper THEN 'SUPERUSER' END, CASE WHEN rolcreaterole THEN 'CREATEROLE' END,"
            "   CASE WHEN rolcreatedb THEN 'CREATEDB' END, CASE WHEN rolreplication THEN 'REPLICATION' END,"
            "   CASE WHEN rolbypassrls THEN 'BYPASSRLS' END]) AS a WHERE rolname = %(u)s AND a IS NOT NULL"
            " UNION ALL SELECT 'member of ' || r.rolname FROM pg_roles AS r"
            " WHERE pg_has_role(%(u)s, r.oid, 'USAGE') AND r.rolname <> %(u)s",
            {"u": user, "tables": list(ALL_TABLES), "privileges": list(PRIVILEGES)},
        )
        granted[role] = {r[0] for r in rows}
    return granted


def test_each_login_holds_exactly_the_privileges_of_its_job(loaded) -> None:
    owner = {f"{t} {p}" for t in (*DATA_TABLES, "etl_private.run_lock") for p in PRIVILEGES}
    assert privilege_map(loaded) == {
        "etl": {
            "database CONNECT",
            "database TEMPORARY",  # a month of sales is staged in a temporary table
            "schema public USAGE",
            "schema public CREATE",
            "schema etl_private USAGE",
            "schema etl_private CREATE",
            *owner,
        },
        "ds": {
            "database CONNECT",
            "schema public USAGE",
            "member of ds_user_role",
            *{f"{t} SELECT" for t in (*DATA_TABLES, *LOG_TABLES, *LOG_VIEWS, *SCORE_TABLES)},
        },
        "mle": {
            "database CONNECT",
            "database TEMPORARY",  # the prediction writer stages each batch
            "schema public USAGE",
            "member of mle_user_role",
            "predictions INSERT",
            "prediction_batches INSERT",
            "prediction_dead_letters INSERT",
            "api_keys SELECT",
            "batch_predictions INSERT",  # a day's scores are replaced: delete + insert, one transaction
            "batch_predictions DELETE",
            "batch_predictions.partition_date SELECT",  # the DELETE's WHERE names it
        },
        "api_admin": {
            "database CONNECT",
            "schema public USAGE",
            "api_keys SELECT",
            "api_keys INSERT",
            "api_keys.revoked_at UPDATE",
        },
    }


def test_the_etl_owns_the_tables_it_makes_and_the_bootstrap_owns_the_rest(loaded) -> None:
    owners = dict(loaded.query("SELECT tablename, tableowner FROM pg_tables WHERE schemaname = 'public'"))
    assert owners == {
        **dict.fromkeys(DATA_TABLES, "etl_user"),
        **dict.fromkeys((*LOG_TABLES, *SCORE_TABLES, *MONITOR_TABLES, "api_keys"), "admin"),
    }
    assert loaded.query("SHOW search_path", role="etl") == [("public",)]
    assert loaded.query("SELECT rolsuper FROM pg_roles WHERE rolname = 'admin'") == [(True,)]


def test_each_role_does_its_job(loaded) -> None:
    attempt(loaded, "mle", PREDICTION)  # the API appends to the log, without reading it back
    attempt(loaded, "mle", BATCHED_PREDICTIONS)  # a logged batch: one row
    assert loaded.query("SELECT source, batch_row, client_idx FROM prediction_log ORDER BY 1, 2", role="ds") == [
        ("batch", 1, 1),
        ("batch", 2, 2),
        ("request", None, 1),
    ]
    attempt(loaded, "mle", "INSERT INTO prediction_dead_letters (prediction_id, record, error) VALUES ('x', '{}', 'e')")
    attempt(loaded, "mle", "CREATE TEMP TABLE batch (prediction_id uuid)")
    for _ in range(2):  # a day's batch scores, replaced by a re-run
        attempt(loaded, "mle", BATCH_REPLACE, BATCH_SCORE)
    assert loaded.query("SELECT count(*) FROM batch_predictions", role="ds") == [(1,)]
    attempt(loaded, "api_admin", "INSERT INTO api_keys (name, key_id, key_hash) VALUES ('client', 'abcdefgh', 'h')")
    attempt(loaded, "api_admin", "UPDATE api_keys SET revoked_at = now() WHERE name = 'client'")
    assert attempt(loaded, "mle", "SELECT name, revoked_at IS NOT NULL FROM api_keys") == [("client", True)]
    for table in (*DATA_TABLES, *LOG_TABLES):
        assert loaded.query(f"SELECT count(*) FROM {table}", role="ds")[0][0] > 0, table
    assert attempt(loaded, "api_admin", "SELECT name FROM api_keys") == [("client",)]


def test_ds_user_sessions_are_read_only_by_default(loaded) -> None:
    assert loaded.query("SHOW default_transaction_read_only", role="ds") == [("on",)]
    with pytest.raises(errors.ReadOnlySqlTransaction):
        loaded.query("CREATE TEMP TABLE scratch (x int)", role="ds")


def test_a_grant_without_grant_option_grants_nothing(loaded) -> None:
    conn = connect(loaded.settings("mle"))
    try:
        with conn, conn.cursor() as cur:
            cur.execute("GRANT SELECT, UPDATE, DELETE ON predictions TO mle_user")
        assert any("no privileges were granted" in n for n in conn.notices)
    finally:
        conn.close()
    assert not loaded.query("SELECT has_table_privilege('mle_user', 'predictions', 'SELECT')")[0][0]


@pytest.fixture
def intruder(companydata):
    """A fresh login role that nobody granted anything: what PUBLIC may do, it may do."""
    companydata.query("CREATE ROLE intruder LOGIN PASSWORD 'intruder'")
    try:
        yield companydata
    finally:
        companydata.query("REVOKE ALL ON DATABASE companydata FROM intruder")
        companydata.query("DROP ROLE intruder")


def test_public_can_neither_connect_nor_use_schema_public(intruder, raw_dir) -> None:
    run_etl(intruder, raw_dir)
    as_intruder = intruder.settings("admin").model_copy(update={"user": "intruder", "password": "intruder"})
    with pytest.raises(psycopg2.OperationalError, match="permission denied for database"):
        connect_once(as_intruder).close()
    intruder.query("GRANT CONNECT ON DATABASE companydata TO intruder")  # as if PUBLIC could connect
    conn = connect_once(as_intruder)
    conn.autocommit = True
    try:
        with conn.cursor() as cur:
            for statement in ("SELECT * FROM public.feature_store", "CREATE TABLE public.scratch (x int)"):
                with pytest.raises(errors.InsufficientPrivilege, match="permission denied for schema public"):
                    cur.execute(statement)
            with pytest.raises(errors.InsufficientPrivilege, match="permission denied to create temporary tables"):
                cur.execute("CREATE TEMP TABLE scratch (x int)")
    finally:
        conn.close()


def test_mle_user_cannot_plant_code_for_the_etl_to_run_as_a_superuser(companydata, raw_dir) -> None:
    """The original escalation: mle_user had every privilege on schema public and the ETL ran
    as the superuser, so a trigger planted on the ETL's tables ran ALTER ROLE ... SUPERUSER."""
    escalate = (
        "CREATE FUNCTION {schema}.escalate() RETURNS trigger LANGUAGE plpgsql"
        " AS $$ BEGIN ALTER ROLE mle_user SUPERUSER; RETURN NEW; END $$"
    )
    conn = connect(companydata.settings("mle"))
    conn.autocommit = True
    try:
        with conn.cursor() as cur:
            with pytest.raises(errors.InsufficientPrivilege):
                cur.execute(escalate.format(schema="public"))
            cur.execute(escalate.format(schema="pg_temp"))  # allowed: private to this session
            for table in ("sales", "customer_profiles", "feature_store", "predictions"):
                cur.execute(f"SELECT to_regclass('public.{table}') IS NULL")
                if cur.fetchone()[0]:  # a table the ETL creates: try to pre-empt it
                    with pytest.raises(errors.InsufficientPrivilege):
                        cur.execute(f"CREATE TABLE public.{table} (idx int)")
                    continue
                with pytest.raises(errors.InsufficientPrivilege):
                    cur.execute(
                        f"CREATE TRIGGER escalate BEFORE INSERT ON {table} FOR EACH ROW"
                        " EXECUTE FUNCTION pg_temp.escalate()"
                    )
            with pytest.raises(errors.InsufficientPrivilege):
                cur.execute("CREATE EVENT TRIGGER escalate ON ddl_command_end EXECUTE FUNCTION pg_temp.escalate()")
            # The real ETL, twice: once creating the tables, once replacing them (and appending sales).
            for _ in range(2):
                result = subprocess.run(
                    [sys.executable, "-m", "data_engineering", "etl", "--force"],
                    capture_output=True,
                    text=True,
                    env=companydata.env(RAW_DATA_DIR=str(raw_dir)),
                    timeout=300,
                )
                assert result.returncode == 0, result.stderr
                for table in ("sales", "feature_store"):
                    with pytest.raises(errors.InsufficientPrivilege):
                        cur.execute(
                            f"CREATE TRIGGER escalate BEFORE INSERT ON {table} FOR EACH ROW"
                            " EXECUTE FUNCTION pg_temp.escalate()"
                        )
    finally:
        conn.close()
    assert companydata.query("SELECT rolsuper FROM pg_roles WHERE rolname = 'mle_user'") == [(False,)]
    planted = "SELECT tgname FROM pg_trigger WHERE NOT tgisinternal UNION ALL SELECT evtname FROM pg_event_trigger"
    assert companydata.query(planted) == []
    assert companydata.query("SELECT proname FROM pg_proc WHERE pronamespace = 'public'::regnamespace") == []
