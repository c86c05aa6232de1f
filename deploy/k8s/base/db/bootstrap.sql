-- Least-privilege database roles for ProManage, run by the promanage-db-bootstrap
-- Job as the RDS master user (whose password RDS manages in Secrets Manager) in
-- the application database, before `promanage migrate`. Idempotent: run it on
-- every release. Settings come as custom parameters (PGOPTIONS="-c ..."):
--   promanage.app_password, promanage.migrate_password, promanage.kratos_password
--   promanage.app_role, promanage.migrate_role, promanage.kratos_role (defaults
--   promanage_app, promanage_migrate, kratos)
--
-- Design (deploy/README.md "Database roles", RATIONALE.md "Deploy"):
--   migrate  owns the public (platform) tables: DDL there is its alone.
--   app      (api and worker) reads and writes the platform tables but cannot
--            change or drop them. It provisions tenants at runtime: CREATE SCHEMA
--            and the tenant migrations in the same transaction, so it has CREATE
--            on the database and owns the tenant schemas it creates (and drops
--            them when a tenant is purged).
--   migrate  is a member of app, so the fleet migration can alter tables in the
--            tenant schemas app owns; tables it creates there are granted to app
--            by default privileges, so app can use them and still drop the schema.
--   kratos   owns its own database (created by the Job) and nothing here.
-- No role is superuser, can create roles or databases, or bypass row security.
DO $bootstrap$
DECLARE
  app    text := coalesce(nullif(current_setting('promanage.app_role', true), ''), 'promanage_app');
  mig    text := coalesce(nullif(current_setting('promanage.migrate_role', true), ''), 'promanage_migrate');
  kratos text := coalesce(nullif(current_setting('promanage.kratos_role', true), ''), 'kratos');
  r      record;
BEGIN
  FOR r IN SELECT * FROM (VALUES (app, 'promanage.app_password'), (mig, 'promanage.migrate_password'),
                                 (kratos, 'promanage.kratos_password')) AS v(role, setting) LOOP
    IF coalesce(current_setting(r.setting, true), '') = '' THEN
      RAISE EXCEPTION 'bootstrap: % is not set', r.setting;
    END IF;
    IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = r.role) THEN
      EXECUTE format('CREATE ROLE %I LOGIN', r.role);
    END IF;
    EXECUTE format('ALTER ROLE %I LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION NOBYPASSRLS INHERIT PASSWORD %L',
                   r.role, current_setting(r.setting));
  END LOOP;

  -- The bootstrapping user must be able to act as mig and app to hand objects
  -- over to them (PostgreSQL 16 no longer implies it for a CREATEROLE user).
  IF NOT (SELECT rolsuper FROM pg_roles WHERE rolname = current_user) THEN
    IF current_setting('server_version_num')::int >= 160000 THEN
      EXECUTE format('GRANT %I, %I TO %I WITH INHERIT FALSE, SET TRUE', mig, app, current_user);
    ELSE
      EXECUTE format('GRANT %I, %I TO %I', mig, app, current_user);
    END IF;
  END IF;
  EXECUTE format('GRANT %I TO %I', app, mig);

  EXECUTE format('REVOKE ALL ON DATABASE %I FROM PUBLIC', current_database());
  EXECUTE format('GRANT CONNECT, TEMPORARY, CREATE ON DATABASE %I TO %I, %I', current_database(), app, mig);
  REVOKE CREATE ON SCHEMA public FROM PUBLIC;
  EXECUTE format('GRANT USAGE ON SCHEMA public TO %I', app);
  EXECUTE format('GRANT USAGE, CREATE ON SCHEMA public TO %I', mig);

  -- Platform tables made before this bootstrap (by the master user) move to mig.
  FOR r IN SELECT c.relname, c.relkind FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
            WHERE n.nspname = 'public' AND c.relkind IN ('r', 'p', 'S', 'v', 'm')
              AND pg_get_userbyid(c.relowner) <> mig LOOP
    EXECUTE format('ALTER %s public.%I OWNER TO %I',
                   CASE r.relkind WHEN 'S' THEN 'SEQUENCE' WHEN 'v' THEN 'VIEW' WHEN 'm' THEN 'MATERIALIZED VIEW' ELSE 'TABLE' END,
                   r.relname, mig);
  END LOOP;
  -- Tenant schemas made before it move to app, with what they hold.
  FOR r IN SELECT nspname FROM pg_namespace WHERE nspname ~ '^t_[0-9a-f]+$' AND pg_get_userbyid(nspowner) NOT IN (app, mig) LOOP
    EXECUTE format('ALTER SCHEMA %I OWNER TO %I', r.nspname, app);
  END LOOP;
  FOR r IN SELECT n.nspname, c.relname, c.relkind FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
            WHERE n.nspname ~ '^t_[0-9a-f]+$' AND c.relkind IN ('r', 'p', 'S', 'v', 'm')
              AND pg_get_userbyid(c.relowner) NOT IN (app, mig) LOOP
    EXECUTE format('ALTER %s %I.%I OWNER TO %I',
                   CASE r.relkind WHEN 'S' THEN 'SEQUENCE' WHEN 'v' THEN 'VIEW' WHEN 'm' THEN 'MATERIALIZED VIEW' ELSE 'TABLE' END,
                   r.nspname, r.relname, app);
  END LOOP;

  -- app uses what mig made and makes (platform tables, and tables a fleet
  -- migration adds to tenant schemas): data only, never DDL.
  EXECUTE format('GRANT SELECT, INSERT, UPDATE, DELETE, REFERENCES ON ALL TABLES IN SCHEMA public TO %I', app);
  EXECUTE format('GRANT USAGE, SELECT, UPDATE ON ALL SEQUENCES IN SCHEMA public TO %I', app);
  EXECUTE format('ALTER DEFAULT PRIVILEGES FOR ROLE %I GRANT SELECT, INSERT, UPDATE, DELETE, REFERENCES ON TABLES TO %I', mig, app);
  EXECUTE format('ALTER DEFAULT PRIVILEGES FOR ROLE %I GRANT USAGE, SELECT, UPDATE ON SEQUENCES TO %I', mig, app);
END
$bootstrap$;
