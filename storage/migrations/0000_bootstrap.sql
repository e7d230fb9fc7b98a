-- 0000_bootstrap.sql: the cluster-wide roles and the database-level privileges.
--
-- Not a recorded migration: ly_migrate runs this file first on EVERY run, as the connecting
-- admin (creating roles needs CREATEROLE, creating BYPASSRLS roles a superuser), before any
-- numbered migration; so it must stay idempotent. It also re-asserts the attributes of roles
-- that already exist: a hand-made change (BYPASSRLS on layers_api, a membership in
-- layers_owner) is undone by the next `layersctl migrate`. Passwords are not touched here
-- (ly_db_setup_roles derives them from the master key).
--
--   layers_owner    NOLOGIN, BYPASSRLS: owns every object; migrations run as it (SET LOCAL
--                   ROLE), and it bypasses RLS so data migrations see every tenant's rows
--   layers_api      partner API: no BYPASSRLS, the tenant is set per transaction
--   layers_auth     token and key lookups by hash: no BYPASSRLS, narrow permissive policies
--   layers_store    writes sdk_events and the relay queue: BYPASSRLS (COPY, mixed batches)
--   layers_relay    reads events, works the relay queue: BYPASSRLS (every tenant's queue)
--   layers_content  content jobs and containers: no BYPASSRLS, nothing on sdk_events
--
-- No server role is a superuser, may create roles or databases, owns anything, or is a
-- member of any other role.

DO $bootstrap$
DECLARE
    r record;
    existing record;
    fixes text;
    member record;
    server_roles constant text [] := ARRAY ['layers_api', 'layers_auth', 'layers_store',
                                            'layers_relay', 'layers_content'];
BEGIN
    FOR r IN SELECT * FROM (VALUES
            ('layers_owner',   false, true),
            ('layers_api',     true,  false),
            ('layers_auth',    true,  false),
            ('layers_store',   true,  true),
            ('layers_relay',   true,  true),
            ('layers_content', true,  false)) AS t (name, login, bypassrls)
    LOOP
        IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = r.name) THEN
            BEGIN
                EXECUTE format ('CREATE ROLE %I %s NOSUPERUSER NOCREATEDB NOCREATEROLE '
                                'NOREPLICATION INHERIT %s', r.name,
                                CASE WHEN r.login THEN 'LOGIN' ELSE 'NOLOGIN' END,
                                CASE WHEN r.bypassrls THEN 'BYPASSRLS' ELSE 'NOBYPASSRLS' END);
            EXCEPTION WHEN duplicate_object OR unique_violation THEN
                NULL;   -- created meanwhile by a migrate of another database of this cluster
            END;
        END IF;
        -- Only what differs, so that an admin without superuser can run this when the
        -- roles are right (it may not even name the SUPERUSER or BYPASSRLS attributes).
        SELECT * INTO existing FROM pg_roles WHERE rolname = r.name;
        fixes := concat (
            CASE WHEN existing.rolsuper THEN ' NOSUPERUSER' END,
            CASE WHEN existing.rolcreatedb THEN ' NOCREATEDB' END,
            CASE WHEN existing.rolcreaterole THEN ' NOCREATEROLE' END,
            CASE WHEN existing.rolreplication THEN ' NOREPLICATION' END,
            CASE WHEN NOT existing.rolinherit THEN ' INHERIT' END,
            CASE WHEN existing.rolcanlogin <> r.login
                 THEN CASE WHEN r.login THEN ' LOGIN' ELSE ' NOLOGIN' END END,
            CASE WHEN existing.rolbypassrls <> r.bypassrls
                 THEN CASE WHEN r.bypassrls THEN ' BYPASSRLS' ELSE ' NOBYPASSRLS' END END);
        IF fixes <> '' THEN
            EXECUTE format ('ALTER ROLE %I%s', r.name, fixes);
        END IF;
    END LOOP;

    -- Server roles inherit nothing: drop any membership they were given.
    FOR member IN
        SELECT g.rolname AS granted, m.rolname AS grantee
          FROM pg_auth_members am
          JOIN pg_roles g ON g.oid = am.roleid
          JOIN pg_roles m ON m.oid = am.member
         WHERE m.rolname = ANY (server_roles)
    LOOP
        EXECUTE format ('REVOKE %I FROM %I', member.granted, member.grantee);
    END LOOP;

    -- The admin runs migrations under SET ROLE layers_owner; a superuser may anyway, the
    -- database owner with CREATEROLE needs the membership.
    IF NOT (SELECT rolsuper FROM pg_roles WHERE rolname = current_user)
       AND NOT pg_has_role (current_user, 'layers_owner', 'MEMBER') THEN
        EXECUTE format ('GRANT layers_owner TO %I', current_user);
    END IF;

    -- Only the server roles connect; only the store needs temporary tables (COPY staging).
    EXECUTE format ('REVOKE ALL ON DATABASE %I FROM PUBLIC', current_database ());
    EXECUTE format ('GRANT CONNECT ON DATABASE %I TO %s', current_database (),
                    array_to_string (server_roles, ', '));
    EXECUTE format ('GRANT TEMPORARY ON DATABASE %I TO layers_store', current_database ());
END
$bootstrap$;

-- Nobody but the owner creates objects; the server roles may only resolve names.
REVOKE ALL ON SCHEMA public FROM PUBLIC;
GRANT USAGE, CREATE ON SCHEMA public TO layers_owner;
GRANT USAGE ON SCHEMA public TO layers_api, layers_auth, layers_store, layers_relay, layers_content;
