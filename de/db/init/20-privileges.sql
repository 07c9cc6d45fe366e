-- Least privilege for `companydata`. Runs once, as the superuser `admin`, after 10-roles.sh.
--   admin          owner, full control (the superuser created by the image / localdb)
--   ds_user_role   read-only on schema public, including tables the ETLs create later
--   mle_user_role  all privileges on schema public

DO $$
BEGIN
    EXECUTE format('REVOKE ALL ON DATABASE %I FROM PUBLIC', current_database());
    EXECUTE format('GRANT CONNECT ON DATABASE %I TO ds_user_role, mle_user_role', current_database());
    EXECUTE format('GRANT TEMPORARY ON DATABASE %I TO mle_user_role', current_database());
END
$$;

REVOKE ALL ON SCHEMA public FROM PUBLIC;
GRANT USAGE ON SCHEMA public TO ds_user_role;
GRANT ALL ON SCHEMA public TO mle_user_role;

GRANT SELECT ON ALL TABLES IN SCHEMA public TO ds_user_role;
GRANT ALL ON ALL TABLES IN SCHEMA public TO mle_user_role;
GRANT ALL ON ALL SEQUENCES IN SCHEMA public TO mle_user_role;

-- Tables created later by the ETLs (as admin) and by the model side (as mle_user) get the
-- same grants automatically: the ETLs replace tables by swapping in new ones, and each new
-- table must be readable without a grant step someone could forget.
ALTER DEFAULT PRIVILEGES IN SCHEMA public GRANT SELECT ON TABLES TO ds_user_role;
ALTER DEFAULT PRIVILEGES IN SCHEMA public GRANT ALL ON TABLES TO mle_user_role;
ALTER DEFAULT PRIVILEGES IN SCHEMA public GRANT ALL ON SEQUENCES TO mle_user_role;
ALTER DEFAULT PRIVILEGES FOR ROLE mle_user IN SCHEMA public GRANT SELECT ON TABLES TO ds_user_role;
