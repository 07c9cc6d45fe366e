-- Least privilege for `companydata`. Runs once, as the superuser `admin`, after 10-roles.sh.
-- Nothing is granted to PUBLIC; every grant below names the role whose job needs it.
--   etl_user       creates and owns the data tables in schema public; its run lock lives in
--                  its private schema etl_private, which no other role can even see
--   ds_user_role   reads every data table, including those the ETL creates later
--   mle_user_role  no data table at all: the prediction log and API keys (30-, 40-*.sql)

DO $$
BEGIN
    EXECUTE format('REVOKE ALL ON DATABASE %I FROM PUBLIC', current_database());
    EXECUTE format('GRANT CONNECT ON DATABASE %I TO etl_user, ds_user_role, mle_user_role, api_admin',
                   current_database());
    -- The prediction writer stages each batch in a session-private temporary table, and the
    -- ETL each month of sales (data_engineering/sql/tables/sales_staging.sql).
    EXECUTE format('GRANT TEMPORARY ON DATABASE %I TO mle_user_role, etl_user', current_database());
END
$$;

REVOKE ALL ON SCHEMA public FROM PUBLIC;
GRANT USAGE, CREATE ON SCHEMA public TO etl_user;
GRANT USAGE ON SCHEMA public TO ds_user_role, mle_user_role, api_admin;

-- The ETL's mutual exclusion: a table lock that only its owner can take (an advisory lock
-- can be taken by any role that can connect, and would stall the ETL).
CREATE SCHEMA etl_private AUTHORIZATION etl_user;
REVOKE ALL ON SCHEMA etl_private FROM PUBLIC;
SET ROLE etl_user;
CREATE TABLE etl_private.run_lock ();
RESET ROLE;

-- Tables the ETL creates later (it replaces tables by swapping in new ones) are readable by
-- the data scientist without a grant step someone could forget; nobody else gets them.
ALTER DEFAULT PRIVILEGES FOR ROLE etl_user IN SCHEMA public GRANT SELECT ON TABLES TO ds_user_role;
ALTER DEFAULT PRIVILEGES FOR ROLE etl_user REVOKE EXECUTE ON FUNCTIONS FROM PUBLIC;
