"""monitor_user (bootstrap/80-monitoring.sh): exactly the privileges of its job, and every other
attempt refused by PostgreSQL, as the role runs it. Its two windows onto the ETL's tables return
the scored clients' features and labels only, and survive the ETL replacing those tables."""

from __future__ import annotations

import subprocess

import psycopg2
import pytest
from psycopg2 import errors

from data_engineering.db import etl_transaction
from data_engineering.features import build_features
from machine_learning_engineering.db import connect, connect_once
from testkit import localdb
from testkit.fixtures import TestDatabase

TABLES = (
    "predictions",
    "prediction_batches",
    "prediction_log",  # the view over both (95-prediction-batches.sql)
    "prediction_dead_letters",
    "batch_predictions",
    "api_keys",
    "feature_store",
    "labels",
    "customer_profiles",
    "customer_activity",
    "sales",
    "monthly_sales",
    "stores",
    "monitoring_metrics",
    "monitoring_alerts",
    "etl_private.run_lock",
)
PRIVILEGES = ("SELECT", "INSERT", "UPDATE", "DELETE", "TRUNCATE", "REFERENCES", "TRIGGER")
FUNCTIONS = ("monitoring.scored_features(date, date)", "monitoring.request_labels(timestamptz, timestamptz)")
METRIC = (
    "INSERT INTO monitoring_metrics (period_start, period_end, model_version, source, metric, value)"
    " VALUES ('2026-03-04', '2026-03-04', 'v1', 'batch', 'rows', 1)"
)
ALERT = (
    "INSERT INTO monitoring_alerts (period_start, period_end, threshold, model_version, value, limit_value, payload)"
    " VALUES ('2026-03-04', '2026-03-04', 'ood_rate', 'v1', 0.2, 0.05, '{}')"
)


def attempt(db: TestDatabase, role: str, *statements: str) -> list[tuple]:
    """`statements` as `role` in one transaction of a fresh session; the last one's rows."""
    conn = connect(db.settings(role))
    try:
        with conn, conn.cursor() as cur:
            for statement in statements:
                cur.execute(statement)
            return cur.fetchall() if cur.description else []
    finally:
        conn.close()


def test_monitor_user_holds_exactly_the_privileges_of_its_job(loaded: TestDatabase) -> None:
    granted = {
        r[0]
        for r in loaded.query(
            "SELECT 'database ' || p FROM unnest(ARRAY['CONNECT', 'CREATE', 'TEMPORARY']) AS p"
            " WHERE has_database_privilege('monitor_user', current_database(), p)"
            " UNION ALL SELECT 'schema ' || s || ' ' || p"
            " FROM unnest(ARRAY['public', 'etl_private', 'monitoring']) AS s,"
            " unnest(ARRAY['USAGE', 'CREATE']) AS p WHERE has_schema_privilege('monitor_user', s, p)"
            " UNION ALL SELECT t || ' ' || p FROM unnest(%(tables)s) AS t, unnest(%(privileges)s) AS p"
            " WHERE has_table_privilege('monitor_user', t, p)"
            " UNION ALL SELECT 'monitoring_alerts.' || c || ' UPDATE' FROM unnest(ARRAY['period_start', 'period_end',"
            "   'threshold', 'model_version', 'value', 'limit_value', 'payload', 'created_at', 'attempts',"
            "   'claimed_at', 'delivered_at', 'last_error']) AS c"
            " WHERE has_column_privilege('monitor_user', 'monitoring_alerts', c, 'UPDATE')"
            " UNION ALL SELECT 'execute ' || f FROM unnest(%(functions)s) AS f"
            " WHERE has_function_privilege('monitor_user', f, 'EXECUTE')"
            " UNION ALL SELECT a FROM pg_roles, unnest(ARRAY["
            "   CASE WHEN rolsuper THEN 'SUPERUSER' END, CASE WHEN rolcreaterole THEN 'CREATEROLE' END,"
            "   CASE WHEN rolcreatedb THEN 'CREATEDB' END, CASE WHEN rolreplication THEN 'REPLICATION' END,"
            "   CASE WHEN rolbypassrls THEN 'BYPASSRLS' END]) AS a WHERE rolname = 'monitor_user' AND a IS NOT NULL"
            " UNION ALL SELECT 'member of ' || r.rolname FROM pg_roles AS r"
            " WHERE pg_has_role('monitor_user', r.oid, 'USAGE') AND r.rolname <> 'monitor_user'",
            {"tables": list(TABLES), "privileges": list(PRIVILEGES), "functions": list(FUNCTIONS)},
        )
    }
    assert granted == {
        "database CONNECT",
        "schema public USAGE",
        "schema monitoring USAGE",  # the two functions' schema; nothing can be created there
        "predictions SELECT",
        "prediction_batches SELECT",
        "prediction_log SELECT",
        "batch_predictions SELECT",
        "monitoring_metrics SELECT",
        "monitoring_metrics INSERT",
        "monitoring_metrics DELETE",  # a period is replaced: delete + insert in one transaction
        "monitoring_alerts SELECT",
        "monitoring_alerts INSERT",
        # an alert's delivery is recorded on it; nothing else of an alert can change
        "monitoring_alerts.attempts UPDATE",
        "monitoring_alerts.claimed_at UPDATE",
        "monitoring_alerts.delivered_at UPDATE",
        "monitoring_alerts.last_error UPDATE",
        *(f"execute {f}" for f in FUNCTIONS),
    }
    # Nobody can act as the functions' owner, and it cannot log in.
    assert loaded.query("SELECT rolcanlogin FROM pg_roles WHERE rolname = 'monitor_reader'") == [(False,)]
    assert loaded.query(
        "SELECT count(*) FROM pg_auth_members AS m JOIN pg_roles AS r ON r.oid = m.roleid"
        " WHERE r.rolname = 'monitor_reader'"
    ) == [(0,)]
    # Other roles cannot call the windows (EXECUTE was revoked from PUBLIC; no USAGE on the schema).
    for role in ("ds_user", "mle_user", "etl_user", "api_admin"):
        assert not loaded.query("SELECT has_schema_privilege(%s, 'monitoring', 'USAGE')", (role,))[0][0]
        for function in FUNCTIONS:
            assert not loaded.query("SELECT has_function_privilege(%s, %s, 'EXECUTE')", (role, function))[0][0]


REFUSALS = [
    ("update-predictions", "UPDATE predictions SET label = 0"),
    (
        "insert-predictions",
        "INSERT INTO predictions (prediction_id, client_idx, label, model_version, features,"
        " predicted_at) VALUES (gen_random_uuid(), 1, 1, 'v1', '{}', now())",
    ),
    ("delete-predictions", "DELETE FROM predictions"),
    (
        "insert-prediction_batches",
        "INSERT INTO prediction_batches (batch_id, model_version, predicted_at, rows, client_idx, label, features)"
        " VALUES (gen_random_uuid(), 'v1', now(), 1, '{1}', '{1}', '{}')",
    ),
    ("update-prediction_batches", "UPDATE prediction_batches SET label = '{0}'"),
    ("delete-prediction_batches", "DELETE FROM prediction_batches"),
    ("truncate-prediction_batches", "TRUNCATE prediction_batches"),
    ("replace-prediction_log", "CREATE OR REPLACE VIEW prediction_log AS SELECT 1 AS source"),
    ("truncate-predictions", "TRUNCATE predictions"),
    ("read-api_keys", "SELECT key_hash FROM api_keys"),
    ("read-dead-letters", "SELECT * FROM prediction_dead_letters"),
    ("read-feature_store", "SELECT * FROM feature_store"),
    ("read-labels", "SELECT * FROM labels"),
    ("read-profiles", "SELECT * FROM customer_profiles"),
    ("read-sales", "SELECT * FROM sales"),
    ("write-feature_store", "UPDATE feature_store SET scd_a = 0"),
    ("insert-feature_store", "INSERT INTO feature_store (idx) VALUES (-1)"),
    ("delete-feature_store", "DELETE FROM feature_store"),
    ("drop-feature_store", "DROP TABLE feature_store"),
    ("write-batch_predictions", "UPDATE batch_predictions SET label = 0"),
    ("delete-batch_predictions", "DELETE FROM batch_predictions"),
    (
        "insert-batch_predictions",
        "INSERT INTO batch_predictions (partition_date, client_idx, label, probability,"
        " model_version) VALUES ('2026-03-04', 1, 1, 0.5, 'v1')",
    ),
    ("rewrite-metrics", "UPDATE monitoring_metrics SET value = 0"),
    ("truncate-metrics", "TRUNCATE monitoring_metrics"),
    ("forge-alert-payload", "UPDATE monitoring_alerts SET payload = '{}'"),
    ("forge-alert-value", "UPDATE monitoring_alerts SET value = 0"),
    ("delete-alerts", "DELETE FROM monitoring_alerts"),
    ("drop-metrics", "DROP TABLE monitoring_metrics"),
    ("alter-metrics", "ALTER TABLE monitoring_metrics ADD COLUMN x int"),
    (
        "trigger-on-metrics",
        "CREATE TRIGGER plant BEFORE INSERT ON monitoring_metrics FOR EACH ROW"
        " EXECUTE FUNCTION suppress_redundant_updates_trigger()",
    ),
    (
        "replace-window",
        "CREATE OR REPLACE FUNCTION monitoring.scored_features(since date, until date)"
        " RETURNS TABLE (client_idx bigint, features jsonb, label integer) LANGUAGE sql AS 'SELECT 1::bigint,"
        " NULL::jsonb, 1'",
    ),
    ("function-in-monitoring", "CREATE FUNCTION monitoring.plant() RETURNS int LANGUAGE sql AS 'SELECT 1'"),
    ("table-in-monitoring", "CREATE TABLE monitoring.scratch (x int)"),
    ("table-in-public", "CREATE TABLE public.scratch (x int)"),
    ("temporary-table", "CREATE TEMPORARY TABLE scratch (x int)"),
    ("schema", "CREATE SCHEMA scratch"),
    ("set-role-reader", "SET ROLE monitor_reader"),
    ("set-role-ds", "SET ROLE ds_user_role"),
    ("set-role-admin", "SET ROLE admin"),
    ("grant-self-reader", "GRANT monitor_reader TO CURRENT_USER"),
    ("alter-self-superuser", "ALTER ROLE CURRENT_USER SUPERUSER"),
    ("copy-to-program", "COPY (SELECT 1) TO PROGRAM 'id'"),
    ("read-file", "SELECT pg_read_file('/etc/passwd')"),
    ("lock-feature_store", "LOCK TABLE feature_store IN SHARE MODE"),
]


@pytest.mark.parametrize(("label", "statement"), REFUSALS, ids=[r[0] for r in REFUSALS])
def test_monitor_user_is_refused(loaded: TestDatabase, label: str, statement: str) -> None:
    loaded.query(ALERT)
    with pytest.raises(errors.InsufficientPrivilege):
        attempt(loaded, "monitor", statement)


def test_monitor_user_does_its_job(loaded: TestDatabase) -> None:
    loaded.query(
        "INSERT INTO batch_predictions (partition_date, client_idx, label, probability, model_version)"
        " SELECT '2026-03-04', idx, 0, 0.1, 'v1' FROM feature_store WHERE idx < 10"
    )
    loaded.query(
        "INSERT INTO predictions (prediction_id, client_idx, label, probability, model_version, features, predicted_at)"
        " VALUES (gen_random_uuid(), 5, 1, 0.9, 'v1', '{}', '2026-03-04 12:00+00'),"
        " (gen_random_uuid(), 2000000, 0, 0.1, 'v1', '{}', '2026-03-04 13:00+00'),"
        " (gen_random_uuid(), 7, 0, 0.1, 'v1', '{}', '2026-03-05 13:00+00')"
    )
    loaded.query(  # a logged batch (one row of prediction_batches): its clients count as requests
        "INSERT INTO prediction_batches (batch_id, model_version, predicted_at, rows, client_idx, label, features)"
        " VALUES (gen_random_uuid(), 'v1', '2026-03-04 14:00+00', 2, '{3,2000001}', '{1,0}', '{}'),"
        " (gen_random_uuid(), 'v1', '2026-03-05 14:00+00', 1, '{8}', '{1}', '{}')"
    )
    rows = attempt(loaded, "monitor", "SELECT * FROM monitoring.scored_features('2026-03-04', '2026-03-04')")
    assert sorted(r[0] for r in rows) == list(range(10))  # the scored clients, no one else
    expected = {
        r[0]: r[1:]
        for r in loaded.query("SELECT idx, attr_a, attr_b, scd_a, scd_b, label FROM feature_store WHERE idx < 10")
    }
    for idx, features, label in rows:
        assert set(features) == {"attr_a", "attr_b", "scd_a", "scd_b"}  # every feature, never the label
        assert (features["attr_a"], features["attr_b"], features["scd_a"], features["scd_b"], label) == expected[idx]
    assert attempt(loaded, "monitor", "SELECT * FROM monitoring.scored_features('2026-03-05', '2026-03-05')") == []
    labels = attempt(
        loaded, "monitor", "SELECT * FROM monitoring.request_labels('2026-03-04 00:00+00', '2026-03-05 00:00+00')"
    )
    # clients 2000000 and 2000001 have no label yet; 7 and 8 were asked the next day
    assert sorted(labels) == [(3, expected[3][4]), (5, expected[5][4])]
    logged = attempt(loaded, "monitor", "SELECT source, client_idx FROM prediction_log ORDER BY client_idx")
    assert logged == [("batch", 3), ("request", 5), ("request", 7), ("batch", 8), ("request", 2000000),
                      ("batch", 2000001)]  # fmt: skip
    attempt(loaded, "monitor", METRIC, "DELETE FROM monitoring_metrics WHERE period_start = '2026-03-04'", METRIC)
    attempt(loaded, "monitor", ALERT, "UPDATE monitoring_alerts SET delivered_at = now(), attempts = attempts + 1")
    assert loaded.query("SELECT count(*) FROM monitoring_metrics") == [(1,)]


def test_the_windows_survive_the_etl_replacing_its_tables(loaded: TestDatabase) -> None:
    loaded.query(
        "INSERT INTO batch_predictions (partition_date, client_idx, label, probability, model_version)"
        " VALUES ('2026-03-04', 3, 0, 0.1, 'v1')"
    )
    before = attempt(
        loaded, "monitor", "SELECT client_idx, label FROM monitoring.scored_features('2026-03-04', '2026-03-04')"
    )
    oid = loaded.query("SELECT 'feature_store'::regclass::oid")[0][0]
    with etl_transaction(loaded.settings("etl")) as cur:
        build_features(cur)  # a new feature_store, swapped in
    assert loaded.query("SELECT 'feature_store'::regclass::oid")[0][0] != oid
    after = attempt(
        loaded, "monitor", "SELECT client_idx, label FROM monitoring.scored_features('2026-03-04', '2026-03-04')"
    )
    assert after == before == [(3, before[0][1])]
    with pytest.raises(errors.InsufficientPrivilege):
        attempt(loaded, "monitor", "SELECT * FROM feature_store")  # the new table is not readable either


def test_a_wrong_password_is_refused(companydata: TestDatabase) -> None:
    with pytest.raises(psycopg2.OperationalError, match="password authentication failed"):
        connect_once(companydata.settings("monitor").model_copy(update={"password": "not-it"}))


def test_the_file_is_idempotent_and_takes_the_password_from_the_environment(companydata: TestDatabase) -> None:
    companydata.query(METRIC)

    def rerun(**env: str) -> None:
        script = localdb.INIT_DIR / "80-monitoring.sh"
        done = subprocess.run(
            ["bash", str(script)], env=companydata.cluster.psql_env(env), capture_output=True, text=True
        )
        assert done.returncode == 0, done.stderr
        assert done.stderr == ""  # no notices on a re-run

    try:
        rerun(MONITOR_DB_PASSWORD="rotated-s3cret")
        with pytest.raises(psycopg2.OperationalError, match="password authentication failed"):
            connect_once(companydata.settings("monitor"))
        rotated = companydata.settings("monitor").model_copy(update={"password": "rotated-s3cret"})
        conn = connect_once(rotated)
        conn.close()
    finally:
        rerun()  # back to the default for the other tests
    assert companydata.query("SELECT count(*) FROM monitoring_metrics") == [(1,)]  # kept
    assert attempt(companydata, "monitor", "SELECT count(*) FROM monitoring_metrics") == [(1,)]


def test_production_refuses_the_default_monitor_password() -> None:
    from machine_learning_engineering.config import ROLE_LOGINS, production_problems

    strong = {variable: f"long-random-{user}-x9" for user, variable in ROLE_LOGINS.values()}
    base = {"STACK_ENV": "production", "API_TOKEN": "t" * 32, **strong}
    assert production_problems(base) == []
    assert production_problems({**base, "MONITOR_DB_PASSWORD": "monitor_user"}) == [
        "MONITOR_DB_PASSWORD is the documented default: set a password"
    ]
    assert ROLE_LOGINS["monitor"] == ("monitor_user", "MONITOR_DB_PASSWORD")


def test_95_brings_an_older_database_to_what_a_new_one_has(companydata: TestDatabase) -> None:
    """A volume made before 95-prediction-batches.sql (and after 80-monitoring.sh): applying the
    file once gives the monitor what a new database gives it; 80 and 95 agree whichever ran last."""

    def definition() -> list[tuple]:
        return companydata.query(
            "SELECT pg_get_functiondef('monitoring.request_labels(timestamptz, timestamptz)'::regprocedure),"
            " pg_get_viewdef('prediction_log'),"
            " has_table_privilege('monitor_user', 'prediction_batches', 'SELECT'),"
            " has_table_privilege('monitor_user', 'prediction_log', 'SELECT'),"
            " has_table_privilege('ds_user', 'prediction_log', 'SELECT'),"
            " has_table_privilege('mle_user', 'prediction_batches', 'INSERT'),"
            " has_table_privilege('mle_user', 'prediction_batches', 'SELECT')"
        )

    def run(*command: str) -> None:
        done = subprocess.run(command, env=companydata.cluster.psql_env(), capture_output=True, text=True)
        assert done.returncode == 0, done.stderr

    new = definition()
    apply_95 = ("psql", "-v", "ON_ERROR_STOP=1", "--no-psqlrc", "-q", "-U", "admin", "-d", localdb.DATABASE, "-f",
                str(localdb.INIT_DIR / "95-prediction-batches.sql"))  # fmt: skip
    companydata.query("DROP VIEW prediction_log")
    companydata.query("DROP TABLE prediction_batches")
    companydata.query(  # request_labels as the older 80-monitoring.sh made it
        "CREATE OR REPLACE FUNCTION monitoring.request_labels(since timestamptz, until timestamptz)"
        " RETURNS TABLE (client_idx bigint, label integer) LANGUAGE sql STABLE SECURITY DEFINER"
        " SET search_path = pg_catalog, pg_temp AS $$ SELECT 1::bigint, 1 $$"
    )
    run(*apply_95)
    assert definition() == new
    run(*apply_95)  # twice: changes nothing
    run("bash", str(localdb.INIT_DIR / "80-monitoring.sh"))
    assert definition() == new
