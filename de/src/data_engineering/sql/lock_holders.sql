-- Other sessions holding a lock on the given tables in a mode that conflicts with the one the ETL
-- asks for, with what pg_stat_activity shows of them: user and application always; state and
-- transaction age only for etl_user's own sessions (or with pg_read_all_stats).
SELECT l.pid,
       l.relation::regclass::text AS locked_table,
       l.mode,
       a.usename,
       a.application_name,
       a.state,
       round(extract(epoch FROM now() - a.xact_start))::int AS transaction_seconds
FROM pg_locks AS l
LEFT JOIN pg_stat_activity AS a ON a.pid = l.pid
WHERE l.locktype = 'relation'
  AND l.granted
  AND l.pid IS DISTINCT FROM pg_backend_pid()
  AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database())
  AND l.relation = ANY (%(tables)s::regclass[])
  AND NOT l.mode = ANY (%(compatible)s::text[])
ORDER BY l.pid, locked_table;
