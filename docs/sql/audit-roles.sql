-- PostgreSQL roles for a shared pdca database: the application may only INSERT and
-- SELECT the audit log; only the owner (used for migrations) may change its structure.
--
--   psql -v ON_ERROR_STOP=1 -d pdca -f audit-roles.sql
--
-- Run it after `pdca init` (as the owner), then give the daemon and the users
-- PDCA_DATABASE_URL=postgresql://pdca_app@HOST/pdca. Run `pdca init` (migrations) as
-- pdca_owner.

DO $$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'pdca_owner') THEN
        CREATE ROLE pdca_owner LOGIN;
    END IF;
    IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'pdca_app') THEN
        CREATE ROLE pdca_app LOGIN;
    END IF;
    IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'pdca_auditor') THEN
        CREATE ROLE pdca_auditor LOGIN;
    END IF;
END
$$;

-- The owner owns every table (and so may migrate); nobody else may change structure.
ALTER TABLE entities OWNER TO pdca_owner;
ALTER TABLE entity_scope OWNER TO pdca_owner;
ALTER TABLE audit_log OWNER TO pdca_owner;
ALTER TABLE outbox OWNER TO pdca_owner;
ALTER TABLE settings OWNER TO pdca_owner;
ALTER TABLE evaluations OWNER TO pdca_owner;
ALTER TABLE members OWNER TO pdca_owner;
ALTER TABLE due_firings OWNER TO pdca_owner;
ALTER TABLE alembic_version OWNER TO pdca_owner;
ALTER SEQUENCE audit_seq OWNER TO pdca_owner;

REVOKE ALL ON ALL TABLES IN SCHEMA public FROM PUBLIC;
GRANT USAGE ON SCHEMA public TO pdca_app, pdca_auditor;

-- The application: reads and writes its working tables ...
GRANT SELECT, INSERT, UPDATE, DELETE ON entities, entity_scope, outbox, evaluations,
    members, due_firings TO pdca_app;
GRANT SELECT, INSERT, UPDATE ON settings TO pdca_app;
GRANT SELECT ON alembic_version TO pdca_app;
GRANT USAGE, SELECT ON ALL SEQUENCES IN SCHEMA public TO pdca_app;
-- ... but may only append to the audit log and read it: no UPDATE, DELETE or TRUNCATE,
-- whatever the triggers say.
REVOKE ALL ON audit_log FROM pdca_app;
GRANT SELECT, INSERT ON audit_log TO pdca_app;

-- The auditor reads everything and changes nothing.
GRANT SELECT ON ALL TABLES IN SCHEMA public TO pdca_auditor;
