"""Tenancy and least privilege, checked against a real PostgreSQL after `layersctl migrate`.

The rule is read from the catalog, not from a list: every table in the public schema with
an org_id column must have row-level security enabled and forced and the tenant policy, and
must have a row fixture below, so a new tenant table without either fails here loudly.
Rows of two organizations are inserted as the admin; each server role then sees and writes
exactly what its actor needs. Run:
    LY_BUILD_DIR=build /usr/bin/python3 -m pytest -q tests/test_tenancy.py
"""

import hashlib
import io
import os
import uuid
from contextlib import contextmanager

import psycopg2
import psycopg2.errors
import pytest

import lytest

SERVER_ROLES = ["layers_api", "layers_auth", "layers_store", "layers_relay", "layers_content"]
BYPASS_ROLES = {"layers_store", "layers_relay"}
TENANT_EXPR = "(org_id = (NULLIF(current_setting('layers.org_id'::text, true), ''::text))::uuid)"
# Permissive policies besides the tenant rule: (table, role) -> commands they may cover.
CROSS_TENANT_POLICIES = {
    ("api_tokens", "layers_auth"): {"r", "w"},
    ("sdk_keys", "layers_auth"): {"r", "w"},
    ("projects", "layers_auth"): {"r"},
    ("content_jobs", "layers_content"): {"r", "w"},
}


# ----------------------------------------------------------------------------------------
# Helpers

def new_id():
    return str(uuid.uuid4())


def sha_bytes():
    return psycopg2.Binary(os.urandom(32))


def sha_hex():
    return hashlib.sha256(os.urandom(16)).hexdigest()


@contextmanager
def session(cluster, user="postgres", org=None):
    """A transaction as user (trust auth), with the tenant set when org is given; always
    rolled back."""
    conn = cluster.connect(user=user)
    try:
        cur = conn.cursor()
        if org is not None:
            cur.execute("SELECT set_config('layers.org_id', %s, true)", (org,))
        yield cur
    finally:
        conn.rollback()
        conn.close()


def refused(cur, sql, params=None):
    """Runs sql inside a savepoint; returns the error (None when it succeeded)."""
    cur.execute("SAVEPOINT probe")
    try:
        cur.execute(sql, params)
    except psycopg2.Error as exc:
        cur.execute("ROLLBACK TO SAVEPOINT probe")
        return exc
    cur.execute("RELEASE SAVEPOINT probe")
    return None


def tenant_relations(cur):
    """Every table or partitioned table in public with an org_id column:
    [(name, relkind, is_partition, rls_enabled, rls_forced)]."""
    cur.execute("""
        SELECT c.relname, c.relkind, c.relispartition, c.relrowsecurity, c.relforcerowsecurity
          FROM pg_class c
          JOIN pg_namespace n ON n.oid = c.relnamespace
          JOIN pg_attribute a ON a.attrelid = c.oid AND a.attname = 'org_id'
                             AND NOT a.attisdropped
         WHERE n.nspname = 'public' AND c.relkind IN ('r', 'p', 'f')
         ORDER BY c.relname""")
    return cur.fetchall()


def top_level_tenant_tables(cur):
    return [r[0] for r in tenant_relations(cur) if not r[2]]


# ----------------------------------------------------------------------------------------
# Row fixtures: one function per tenant table, inserting one new row of the organization
# ids["org"] that satisfies every constraint, using the parents made for that organization.
# A tenant table missing here fails test_every_tenant_table_has_a_fixture.

def f_organizations(cur, ids):
    cur.execute("INSERT INTO organizations (org_id, name) VALUES (%(org)s, 'Org')", ids)


def f_projects(cur, ids):
    project = new_id()
    cur.execute("""INSERT INTO projects (org_id, project_id, name, default_country_code, timezone,
                                         brand)
                   VALUES (%s, %s, 'Project', '1', 'Europe/Berlin', '{"voice": "calm"}')""",
                (ids["org"], project))
    return {"project": project}


def f_members(cur, ids):
    member = new_id()
    cur.execute("""INSERT INTO members (org_id, member_id, email, role)
                   VALUES (%s, %s, %s, 'owner')""",
                (ids["org"], member, "m-%s@example.test" % member[:8]))
    return {"member": member}


def f_project_layers(cur, ids):
    project = ids["spare_projects"].pop()
    cur.execute("""INSERT INTO project_layers (org_id, project_id, layer, enabled, config,
                       secret_names, secret_ciphertext, secret_key_id, secret_key_version)
                   VALUES (%s, %s, 'meta', true, '{"pixel_id": "123"}', '{access_token}', %s,
                           'k1', 1)""",
                (ids["org"], project, psycopg2.Binary(os.urandom(60))))
    return {"layer_project": project}


def f_api_tokens(cur, ids):
    token = os.urandom(16)
    cur.execute("""INSERT INTO api_tokens (org_id, token_id, member_id, name, token_prefix,
                                           token_sha256)
                   VALUES (%s, %s, %s, 'ci', 'lyt_abcd', %s)""",
                (ids["org"], new_id(), ids["member"],
                 psycopg2.Binary(hashlib.sha256(token).digest())))
    return {"token_sha256": hashlib.sha256(token).digest()}


def f_sdk_keys(cur, ids):
    key = os.urandom(16)
    cur.execute("""INSERT INTO sdk_keys (org_id, project_id, key_id, name, key_prefix, key_sha256)
                   VALUES (%s, %s, %s, 'app', 'lys_abcd', %s)""",
                (ids["org"], ids["project"], new_id(),
                 psycopg2.Binary(hashlib.sha256(key).digest())))
    return {"key_sha256": hashlib.sha256(key).digest()}


def f_ads_content(cur, ids):
    ad = new_id()
    cur.execute("""INSERT INTO ads_content (org_id, ad_content_id, kind, title, body)
                   VALUES (%s, %s, 'video', 'Summer', 'Our new product')""", (ids["org"], ad))
    return {"ad": ad}


def f_project_ads_content(cur, ids):
    cur.execute("""INSERT INTO project_ads_content (org_id, project_id, ad_content_id)
                   VALUES (%s, %s, %s)""", (ids["org"], ids["project"], ids["spare_ads"].pop()))


def f_content_jobs(cur, ids):
    job = new_id()
    cur.execute("""INSERT INTO content_jobs (org_id, project_id, job_id, kind, prompt, created_by)
                   VALUES (%s, %s, %s, 'reel', '{"brief": "a reel about our product"}', %s)""",
                (ids["org"], ids["project"], job, ids["member"]))
    return {"job": job}


def f_content_containers(cur, ids):
    cur.execute("""INSERT INTO content_containers (org_id, project_id, container_id, job_id, kind,
                                                   media)
                   VALUES (%s, %s, %s, %s, 'reel',
                           '[{"url": "file:///m/1.mp4", "content_type": "video/mp4"}]')""",
                (ids["org"], ids["project"], new_id(), ids["job"]))


def f_sdk_events(cur, ids, received_at=None):
    cur.execute("""INSERT INTO sdk_events (org_id, project_id, event_id, name, event_time,
                       received_at, user_id, email_sha256, phone_sha256, phone_e164_sha256,
                       properties, device_os, device_os_version, device_model, device_brand,
                       device_locale, device_timezone, app_version, app_build, app_package,
                       geo_country, geo_region, attribution_token, consent_ads, consent_att)
                   VALUES (%s, %s, %s, 'purchase', now(), coalesce(%s, now()), 'u1', %s, %s, %s,
                           '{"value": 9.99, "currency": "EUR"}', 'iOS', '17.4', 'iPhone15,2',
                           'Apple', 'de_DE', 'Europe/Berlin', '1.2.3', '45', 'com.example.app',
                           'DE', 'BE', 'tok', true, 'authorized')""",
                (ids["org"], ids["project"], new_id(), received_at, sha_hex(), sha_hex(),
                 sha_hex()))


def f_sdk_event_ids(cur, ids):
    cur.execute("""INSERT INTO sdk_event_ids (org_id, project_id, event_id)
                   VALUES (%s, %s, %s)""", (ids["org"], ids["project"], new_id()))


def f_relay_deliveries(cur, ids):
    cur.execute("""INSERT INTO relay_deliveries (org_id, project_id, event_received_at, event_seq,
                                                 event_id, destination)
                   VALUES (%s, %s, now(), 1, %s, 'meta')""",
                (ids["org"], ids["project"], new_id()))


def f_relay_pauses(cur, ids):
    cur.execute("""INSERT INTO relay_pauses (org_id, project_id, destination, paused_until)
                   VALUES (%s, %s, 'meta', now () + interval '1 minute')""",
                (ids["org"], ids["spare_projects"].pop()))


def f_attributions(cur, ids):
    cur.execute("""INSERT INTO attributions (org_id, project_id, event_received_at, event_seq,
                       event_id, attribution, apple_org_id, campaign_id, ad_group_id,
                       keyword_id, ad_id, conversion_type, country_or_region, claim_type, raw)
                   VALUES (%s, %s, now(), 1, %s, true, 40669820, 542370539, 542317095,
                           87675432, 542317136, 'Download', 'US', 'Click',
                           '{"attribution": true}')""",
                (ids["org"], ids["project"], new_id()))


def f_api_idempotency(cur, ids):
    cur.execute("""INSERT INTO api_idempotency (org_id, idempotency_key, method, path,
                                                request_sha256, response_status, response_body)
                   VALUES (%s, %s, 'POST', '/v1/projects', %s, 201, '{}')""",
                (ids["org"], new_id(), sha_bytes()))


FIXTURES = {
    "organizations": f_organizations,
    "projects": f_projects,
    "members": f_members,
    "project_layers": f_project_layers,
    "api_tokens": f_api_tokens,
    "sdk_keys": f_sdk_keys,
    "ads_content": f_ads_content,
    "project_ads_content": f_project_ads_content,
    "content_jobs": f_content_jobs,
    "content_containers": f_content_containers,
    "sdk_events": f_sdk_events,
    "sdk_event_ids": f_sdk_event_ids,
    "relay_deliveries": f_relay_deliveries,
    "relay_pauses": f_relay_pauses,
    "attributions": f_attributions,
    "api_idempotency": f_api_idempotency,
}


def make_organization(cur):
    """Inserts (as the admin) one row of every tenant table for a new organization; returns
    its ids, with spare projects and ads contents for later inserts."""
    ids = {"org": new_id()}
    order = list(FIXTURES)
    for table in order:
        made = FIXTURES[table](cur, ids)
        if table == "projects":
            ids["spare_projects"] = [f_projects(cur, ids)["project"] for _ in range(8)]
        if table == "ads_content":
            ids["spare_ads"] = [f_ads_content(cur, ids)["ad"] for _ in range(8)]
        for key, value in (made or {}).items():
            ids.setdefault(key, value)
    f_sdk_events(cur, ids, received_at="2001-01-01T00:00:00Z")   # the default partition
    return ids


@pytest.fixture(scope="module")
def orgs(pg_cluster, migrated):
    """Two organizations A and B with rows in every tenant table, committed."""
    conn = pg_cluster.connect()
    try:
        cur = conn.cursor()
        a, b = make_organization(cur), make_organization(cur)
        conn.commit()
    finally:
        conn.close()
    return a, b


@pytest.fixture(scope="module")
def probe_role(pg_cluster, migrated):
    """ly_probe: a NOBYPASSRLS role with SELECT and INSERT on every table and partition, so
    that the policies of tables no server role may write are exercised too."""
    conn = pg_cluster.connect(autocommit=True)
    cur = conn.cursor()
    cur.execute("CREATE ROLE ly_probe NOLOGIN NOBYPASSRLS")
    cur.execute("GRANT USAGE ON SCHEMA public TO ly_probe")
    cur.execute("GRANT SELECT, INSERT ON ALL TABLES IN SCHEMA public TO ly_probe")
    cur.execute("GRANT USAGE ON ALL SEQUENCES IN SCHEMA public TO ly_probe")
    yield "ly_probe"
    cur.execute("DROP OWNED BY ly_probe")
    cur.execute("DROP ROLE ly_probe")
    conn.close()


def schema_fingerprint(cur):
    """Everything a migration could change, as a sorted list of rows."""
    cur.execute("""
        SELECT 'class', c.relname, c.relkind::text, pg_get_userbyid(c.relowner),
               coalesce(c.relacl::text, ''), c.relrowsecurity::text || c.relforcerowsecurity::text
          FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
         WHERE n.nspname = 'public'
        UNION ALL
        SELECT 'column', c.relname || '.' || a.attname, format_type(a.atttypid, a.atttypmod),
               a.attnotnull::text, coalesce(pg_get_expr(d.adbin, d.adrelid), ''),
               coalesce(a.attacl::text, '')
          FROM pg_attribute a JOIN pg_class c ON c.oid = a.attrelid
          JOIN pg_namespace n ON n.oid = c.relnamespace
          LEFT JOIN pg_attrdef d ON d.adrelid = a.attrelid AND d.adnum = a.attnum
         WHERE n.nspname = 'public' AND a.attnum > 0 AND NOT a.attisdropped
        UNION ALL
        SELECT 'constraint', conrelid::regclass::text, conname, pg_get_constraintdef(oid), '', ''
          FROM pg_constraint WHERE connamespace = 'public'::regnamespace
        UNION ALL
        SELECT 'index', indexrelid::regclass::text, pg_get_indexdef(indexrelid), '', '', ''
          FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid
         WHERE c.relnamespace = 'public'::regnamespace
        UNION ALL
        SELECT 'policy', polrelid::regclass::text, polname,
               polcmd::text || polpermissive::text || polroles::regrole[]::text,
               coalesce(pg_get_expr(polqual, polrelid), ''),
               coalesce(pg_get_expr(polwithcheck, polrelid), '')
          FROM pg_policy
        UNION ALL
        SELECT 'function', p.oid::regprocedure::text, pg_get_userbyid(p.proowner),
               coalesce(p.proacl::text, ''), p.prosecdef::text, md5(p.prosrc)
          FROM pg_proc p WHERE p.pronamespace = 'public'::regnamespace
        UNION ALL
        SELECT 'trigger', tgrelid::regclass::text, tgname, pg_get_triggerdef(oid), '', ''
          FROM pg_trigger WHERE NOT tgisinternal
        UNION ALL
        SELECT 'role', rolname, rolsuper::text || rolinherit || rolcreaterole || rolcreatedb
               || rolcanlogin || rolreplication || rolbypassrls, '', '', ''
          FROM pg_roles WHERE rolname LIKE 'layers\\_%'
        UNION ALL
        SELECT 'acl', 'database', coalesce(datacl::text, ''), '', '', ''
          FROM pg_database WHERE datname = current_database()
        UNION ALL
        SELECT 'acl', 'schema', coalesce(nspacl::text, ''), '', '', ''
          FROM pg_namespace WHERE nspname = 'public'
        UNION ALL
        SELECT 'acl', 'default', defaclrole::regrole::text, defaclobjtype::text,
               coalesce(defaclacl::text, ''), ''
          FROM pg_default_acl
        UNION ALL
        SELECT 'roles', role, rank::text, description, '', '' FROM roles
        ORDER BY 1, 2, 3, 4, 5, 6""")
    return cur.fetchall()


# ----------------------------------------------------------------------------------------
# Migrations

def test_migrate_is_idempotent(pg_cluster, data_dir, migrated):
    with session(pg_cluster) as cur:
        cur.execute("SELECT version, name, applied_at FROM schema_migrations ORDER BY version")
        recorded = cur.fetchall()
        before = schema_fingerprint(cur)
    assert recorded, "the first migrate recorded no migration"
    assert all(version > 0 for version, _, _ in recorded), "the bootstrap must not be recorded"

    lytest.layersctl(["migrate"], pg_cluster.admin_url, data_dir)

    with session(pg_cluster) as cur:
        cur.execute("SELECT version, name, applied_at FROM schema_migrations ORDER BY version")
        assert cur.fetchall() == recorded, "the second migrate applied something"
        after = schema_fingerprint(cur)
        cur.execute("SELECT pg_get_userbyid(relowner) FROM pg_class "
                    "WHERE oid = 'schema_migrations'::regclass")
        assert cur.fetchone()[0] == "layers_owner"
    changed = sorted(set(before) ^ set(after))
    assert not changed, "the second migrate changed the schema: %r" % changed[:10]


def test_migrate_second_database_with_existing_roles(pg_cluster, data_dir, migrated):
    """The roles exist already (cluster-wide): the second database ends up identical."""
    conn = pg_cluster.connect(autocommit=True)
    conn.cursor().execute("CREATE DATABASE layers_second")
    conn.close()
    lytest.layersctl(["migrate"], pg_cluster.url(dbname="layers_second"), data_dir)
    conn = pg_cluster.connect(dbname="layers_second")
    try:
        second = schema_fingerprint(conn.cursor())
    finally:
        conn.close()
    with session(pg_cluster) as cur:
        first = schema_fingerprint(cur)
    changed = sorted(set(first) ^ set(second))
    assert not changed, "the databases differ: %r" % changed[:10]


def test_migrate_reasserts_role_attributes(pg_cluster, data_dir, migrated):
    conn = pg_cluster.connect(autocommit=True)
    cur = conn.cursor()
    cur.execute("ALTER ROLE layers_api BYPASSRLS CREATEDB")
    cur.execute("GRANT layers_owner TO layers_content")
    try:
        lytest.layersctl(["migrate"], pg_cluster.admin_url, data_dir)
        cur.execute("SELECT rolbypassrls, rolcreatedb FROM pg_roles WHERE rolname = 'layers_api'")
        assert cur.fetchone() == (False, False)
        cur.execute("SELECT pg_has_role('layers_content', 'layers_owner', 'MEMBER')")
        assert cur.fetchone()[0] is False
    finally:
        cur.execute("ALTER ROLE layers_api NOBYPASSRLS NOCREATEDB")
        cur.execute("REVOKE layers_owner FROM layers_content")
        conn.close()


def test_event_partitions_are_made_ahead_and_catch_up(pg_cluster, migrated):
    """ly_ensure_event_partitions, as the store: a month that got rows in the default
    partition is created with those rows moved in; the catalog tests below then check the
    new partitions' RLS like every other tenant relation."""
    conn = pg_cluster.connect(user="layers_store")
    try:
        cur = conn.cursor()
        cur.execute("""INSERT INTO sdk_events (org_id, project_id, event_id, name, event_time,
                                               received_at)
                       VALUES (gen_random_uuid(), gen_random_uuid(), 'late', 'open', now(),
                               now() + interval '8 months')""")
        cur.execute("SELECT ly_ensure_event_partitions(9)")
        assert cur.fetchone()[0] >= 1
        cur.execute("SELECT ly_ensure_event_partitions(9)")
        assert cur.fetchone()[0] == 0
        conn.commit()
    finally:
        conn.close()
    with session(pg_cluster) as cur:
        cur.execute("""SELECT tableoid::regclass::text, to_char(received_at AT TIME ZONE 'UTC',
                                                              'YYYYMM')
                         FROM sdk_events WHERE event_id = 'late'""")
        partition, month = cur.fetchone()
        assert partition == "sdk_events_p" + month
        cur.execute("""SELECT count(*) FROM pg_inherits
                        WHERE inhparent = 'sdk_events'::regclass""")
        assert cur.fetchone()[0] >= 11   # default + this month + 9 ahead


# ----------------------------------------------------------------------------------------
# The catalog: the rule holds for every tenant table, present and future

def test_every_tenant_table_has_rls_and_the_tenant_policy(pg_cluster, migrated):
    with session(pg_cluster) as cur:
        relations = tenant_relations(cur)
        assert len(relations) >= len(FIXTURES)
        problems = []
        for name, relkind, _, enabled, forced in relations:
            if relkind == "f":
                problems.append("%s: a foreign table cannot carry row-level security" % name)
                continue
            if not (enabled and forced):
                problems.append("%s: row level security enabled=%s forced=%s"
                                % (name, enabled, forced))
            cur.execute("""SELECT polname, polcmd, polpermissive, polroles::regrole[]::text[],
                                  pg_get_expr(polqual, polrelid),
                                  pg_get_expr(polwithcheck, polrelid)
                             FROM pg_policy WHERE polrelid = %s::regclass""", (name,))
            policies = cur.fetchall()
            tenant = [p for p in policies if p[0] == "tenant_isolation"]
            if not tenant or tenant[0][1:] != ("*", True, ["-"], TENANT_EXPR, TENANT_EXPR):
                problems.append("%s: tenant_isolation policy missing or different: %r"
                                % (name, tenant))
            for polname, cmd, permissive, roles, qual, check in policies:
                if polname == "tenant_isolation":
                    continue
                for role in roles:
                    allowed = CROSS_TENANT_POLICIES.get((name, role), set())
                    if role in ("-", "public", "layers_api") or cmd not in allowed:
                        problems.append("%s: unexpected policy %s (%s) for %s"
                                        % (name, polname, cmd, role))
        assert not problems, "\n".join(problems)


def test_every_tenant_table_has_a_fixture(pg_cluster, migrated):
    with session(pg_cluster) as cur:
        missing = sorted(set(top_level_tenant_tables(cur)) - set(FIXTURES))
    assert not missing, ("tenant tables without a row fixture in tests/test_tenancy.py "
                         "(add one so their isolation is tested): %s" % ", ".join(missing))


def test_no_view_or_definer_function_crosses_tenants(pg_cluster, migrated):
    with session(pg_cluster) as cur:
        # A view runs as its owner, who bypasses RLS: only security_invoker views are safe.
        cur.execute("""SELECT c.relname FROM pg_class c
                        WHERE c.relnamespace = 'public'::regnamespace
                          AND (c.relkind = 'm' OR (c.relkind = 'v' AND NOT coalesce(
                               'security_invoker=true' = ANY (c.reloptions), false)))""")
        assert cur.fetchall() == []
        # SECURITY DEFINER functions run as layers_owner: none for PUBLIC or a role under RLS.
        cur.execute("""SELECT p.oid::regprocedure::text, r.rolname
                         FROM pg_proc p CROSS JOIN pg_roles r
                        WHERE p.pronamespace = 'public'::regnamespace AND p.prosecdef
                          AND r.rolname IN ('layers_api', 'layers_auth', 'layers_content')
                          AND has_function_privilege(r.oid, p.oid, 'EXECUTE')""")
        assert cur.fetchall() == []
        cur.execute("""SELECT p.oid::regprocedure::text FROM pg_proc p, aclexplode(p.proacl) a
                        WHERE p.pronamespace = 'public'::regnamespace AND a.grantee = 0""")
        assert cur.fetchall() == [], "functions executable by PUBLIC"
        cur.execute("""SELECT p.oid::regprocedure::text FROM pg_proc p
                        WHERE p.pronamespace = 'public'::regnamespace AND p.proacl IS NULL""")
        assert cur.fetchall() == [], "functions with default (PUBLIC) privileges"


def test_nothing_is_granted_to_public(pg_cluster, migrated):
    with session(pg_cluster) as cur:
        cur.execute("""SELECT c.relname, a.privilege_type
                         FROM pg_class c, aclexplode(c.relacl) a
                        WHERE c.relnamespace = 'public'::regnamespace AND a.grantee = 0""")
        assert cur.fetchall() == []
        cur.execute("""SELECT a.privilege_type FROM pg_namespace n, aclexplode(n.nspacl) a
                        WHERE n.nspname = 'public' AND a.grantee = 0""")
        assert cur.fetchall() == []
        cur.execute("""SELECT a.privilege_type FROM pg_database d, aclexplode(d.datacl) a
                        WHERE d.datname = current_database() AND a.grantee = 0""")
        assert cur.fetchall() == []


# ----------------------------------------------------------------------------------------
# Isolation, as the partner API's role and as a probe role with every privilege

def privileged(cur, role, table, privilege, column=None):
    if column:
        cur.execute("SELECT has_column_privilege(%s, %s, %s, %s)", (role, table, column, privilege))
    else:
        cur.execute("SELECT has_table_privilege(%s, %s, %s)", (role, table, privilege))
    return cur.fetchone()[0]


@contextmanager
def tenant_session(cluster, user, set_role, org):
    """session() as user, then SET LOCAL ROLE set_role when given."""
    with session(cluster, user=user, org=org) as cur:
        if set_role:
            cur.execute("SET LOCAL ROLE %s" % set_role)
        yield cur


def check_isolation(pg_cluster, orgs, user, set_role=None):
    """Reads, inserts, updates and deletes across the two organizations as user (or as
    set_role, switched to by user), on every tenant relation it has privileges on.
    Returns ([(readable relation, is_partition)], [insertable tables])."""
    a, b = orgs
    role = set_role or user
    with session(pg_cluster) as cur:
        relations = [(r[0], r[2]) for r in tenant_relations(cur)]
        readable = [(t, part) for t, part in relations
                    if privileged(cur, role, t, "SELECT", "org_id")]
        writable = [t for t, part in relations if not part and privileged(cur, role, t, "INSERT")]
        deletable = [t for t, part in relations if privileged(cur, role, t, "DELETE")]
        movable = [t for t, part in relations if privileged(cur, role, t, "UPDATE", "org_id")]
    assert readable, "%s reads no tenant table" % role

    for org, other in ((a, b), (b, a)):
        with tenant_session(pg_cluster, user, set_role, org["org"]) as cur:
            for table, is_partition in readable:
                cur.execute("SELECT org_id::text, count(*) FROM %s GROUP BY 1" % table)
                seen = dict(cur.fetchall())
                assert set(seen) <= {org["org"]}, "%s sees other tenants' %s" % (role, table)
                if not is_partition:
                    assert seen.get(org["org"], 0) >= 1, "%s sees none of its own %s" % (
                        role, table)
            for table in deletable:
                cur.execute("DELETE FROM %s WHERE org_id = %%s" % table, (other["org"],))
                assert cur.rowcount == 0, "%s deleted another tenant's %s" % (role, table)
            for table in movable:
                error = refused(cur, "UPDATE %s SET org_id = %%s" % table, (other["org"],))
                assert error is not None and "row-level security" in str(error), table

    for no_tenant in (None, ""):
        with tenant_session(pg_cluster, user, set_role, no_tenant) as cur:
            for table, _ in readable:
                cur.execute("SELECT count(*) FROM %s" % table)
                assert cur.fetchone()[0] == 0, "%s sees %s rows with no tenant set" % (
                    role, table)

    with tenant_session(pg_cluster, user, set_role, a["org"]) as cur:
        for table in sorted(set(FIXTURES) & set(writable)):
            cur.execute("SAVEPOINT fixture")
            try:
                FIXTURES[table](cur, b)
            except psycopg2.Error as exc:
                cur.execute("ROLLBACK TO SAVEPOINT fixture")
                assert "row-level security" in str(exc), "%s: %s" % (table, exc)
            else:
                raise AssertionError("%s inserted a row of organization B into %s while A was "
                                     "set" % (role, table))
            if table != "organizations":   # A's own row, the control (A exists already)
                FIXTURES[table](cur, a)
    return readable, writable


def test_api_sees_only_its_tenant(pg_cluster, orgs):
    readable, writable = check_isolation(pg_cluster, orgs, "layers_api")
    names = {t for t, _ in readable}
    assert {"organizations", "projects", "members", "sdk_events", "relay_deliveries",
            "attributions", "project_layers"} <= names
    assert {"projects", "members", "api_tokens", "sdk_keys", "project_layers",
            "content_jobs", "api_idempotency"} <= set(writable)


def test_every_tenant_table_isolates_under_a_probe_role(pg_cluster, orgs, probe_role):
    readable, writable = check_isolation(pg_cluster, orgs, "postgres", set_role=probe_role)
    with session(pg_cluster) as cur:
        assert {t for t, _ in readable} == {r[0] for r in tenant_relations(cur)}
        assert set(writable) == set(top_level_tenant_tables(cur))


def test_a_malformed_tenant_is_an_error(pg_cluster, orgs):
    with session(pg_cluster, user="layers_api", org="not-a-uuid") as cur:
        with pytest.raises(psycopg2.errors.InvalidTextRepresentation):
            cur.execute("SELECT count(*) FROM projects")


def test_api_cannot_switch_off_row_security(pg_cluster, orgs):
    with session(pg_cluster, user="layers_api") as cur:
        cur.execute("SET row_security = off")
        for table in ("projects", "sdk_events", "members"):
            error = refused(cur, "SELECT count(*) FROM %s" % table)
            assert error is not None and "row-level security" in str(error), table
    with session(pg_cluster, user="layers_api") as cur:
        for table in top_level_tenant_tables(cur):
            for action in ("DISABLE", "NO FORCE"):
                error = refused(cur, "ALTER TABLE %s %s ROW LEVEL SECURITY" % (table, action))
                assert error is not None and "must be owner" in str(error), (table, action)
            error = refused(cur, "DROP POLICY tenant_isolation ON %s" % table)
            assert error is not None, table
        assert refused(cur, "CREATE TABLE mine (org_id uuid)") is not None
        assert refused(cur, "SET ROLE layers_owner") is not None


# ----------------------------------------------------------------------------------------
# Roles: attributes, ownership, and each actor's privileges both ways

def test_server_roles_are_unprivileged_and_own_nothing(pg_cluster, migrated):
    with session(pg_cluster) as cur:
        cur.execute("""SELECT rolname, rolsuper, rolcreatedb, rolcreaterole, rolreplication,
                              rolbypassrls, rolcanlogin
                         FROM pg_roles WHERE rolname = ANY (%s)""", (SERVER_ROLES,))
        roles = {r[0]: r[1:] for r in cur.fetchall()}
        assert set(roles) == set(SERVER_ROLES)
        for name, (superuser, createdb, createrole, replication, bypass, login) in roles.items():
            assert not (superuser or createdb or createrole or replication), name
            assert bypass == (name in BYPASS_ROLES), name
            assert login, name
        cur.execute("""SELECT rolsuper, rolcanlogin, rolbypassrls FROM pg_roles
                        WHERE rolname = 'layers_owner'""")
        assert cur.fetchone() == (False, False, True)

        cur.execute("""SELECT c.relname, pg_get_userbyid(c.relowner) FROM pg_class c
                        WHERE pg_get_userbyid(c.relowner) = ANY (%s)""", (SERVER_ROLES,))
        assert cur.fetchall() == []
        cur.execute("""SELECT r.rolname, count(*) FROM pg_shdepend d
                         JOIN pg_roles r ON r.oid = d.refobjid
                        WHERE d.refclassid = 'pg_authid'::regclass AND d.deptype = 'o'
                          AND r.rolname = ANY (%s) GROUP BY 1""", (SERVER_ROLES,))
        assert cur.fetchall() == [], "server roles own objects"
        cur.execute("""SELECT DISTINCT pg_get_userbyid(c.relowner) FROM pg_class c
                        WHERE c.relnamespace = 'public'::regnamespace""")
        assert cur.fetchall() == [("layers_owner",)]
        cur.execute("""SELECT m.rolname, g.rolname FROM pg_auth_members am
                         JOIN pg_roles m ON m.oid = am.member JOIN pg_roles g ON g.oid = am.roleid
                        WHERE m.rolname = ANY (%s)""", (SERVER_ROLES,))
        assert cur.fetchall() == [], "server roles are members of other roles"


def test_content_has_no_privilege_on_sdk_events(pg_cluster, orgs):
    with session(pg_cluster) as cur:
        cur.execute("""SELECT c.relname, p FROM pg_class c,
                              unnest(ARRAY['SELECT', 'INSERT', 'UPDATE', 'DELETE', 'TRUNCATE',
                                           'REFERENCES', 'TRIGGER']) p
                        WHERE c.relnamespace = 'public'::regnamespace
                          AND (c.relname LIKE 'sdk\\_event%%')
                          AND c.relkind IN ('r', 'p')
                          AND (has_table_privilege('layers_content', c.oid, p)
                               OR (p IN ('SELECT', 'INSERT', 'UPDATE', 'REFERENCES')
                                   AND has_any_column_privilege('layers_content', c.oid, p)))""")
        assert cur.fetchall() == []
        cur.execute("SELECT has_sequence_privilege('layers_content', 'sdk_events_seq', 'USAGE')")
        assert cur.fetchone()[0] is False
    a, _ = orgs
    with session(pg_cluster, user="layers_content", org=a["org"]) as cur:
        error = refused(cur, "SELECT count(*) FROM sdk_events")
        assert isinstance(error, psycopg2.errors.InsufficientPrivilege)


def test_store_cannot_read_workspace_tables(pg_cluster, orgs):
    a, _ = orgs
    with session(pg_cluster, user="layers_store", org=a["org"]) as cur:
        for table in ("organizations", "projects", "members", "api_tokens", "sdk_keys",
                      "ads_content", "content_jobs", "content_containers", "attributions",
                      "api_idempotency"):
            error = refused(cur, "SELECT * FROM %s" % table)
            assert isinstance(error, psycopg2.errors.InsufficientPrivilege), table
        for sql in ("SELECT name, properties, user_id FROM sdk_events",
                    "SELECT config, secret_ciphertext FROM project_layers",
                    "SELECT last_response FROM relay_deliveries",
                    "UPDATE sdk_events SET user_id = NULL",
                    "DELETE FROM sdk_events",
                    "DELETE FROM relay_deliveries"):
            assert isinstance(refused(cur, sql), psycopg2.errors.InsufficientPrivilege), sql


def test_store_writes_a_mixed_batch(pg_cluster, orgs):
    """The store's path: COPY into a staging table, dedup keys with ON CONFLICT ... RETURNING,
    events and outbox rows for the enabled layers, across two organizations at once."""
    a, b = orgs
    conn = pg_cluster.connect(user="layers_store")
    try:
        cur = conn.cursor()
        cur.execute("SELECT ly_ensure_event_partitions(3)")
        cur.execute("""CREATE TEMP TABLE staging (org_id uuid, project_id uuid, event_id text,
                         name text, event_time timestamptz, email_sha256 text,
                         received_at timestamptz DEFAULT now()) ON COMMIT DROP""")
        rows = []
        for org in (a, b):
            for n in range(3):
                rows.append("%s\t%s\tbatch-%d\topen\t2026-01-01T00:00:00Z\t%s\n"
                            % (org["org"], org["layer_project"], n, sha_hex()))
        cur.copy_from(io.StringIO("".join(rows + rows[:2])), "staging",
                      columns=("org_id", "project_id", "event_id", "name", "event_time",
                               "email_sha256"))
        cur.execute("""
            WITH fresh AS (
                INSERT INTO sdk_event_ids (org_id, project_id, event_id, received_at)
                SELECT DISTINCT ON (project_id, event_id) org_id, project_id, event_id, received_at
                  FROM staging
                ON CONFLICT (project_id, event_id) DO NOTHING
                RETURNING project_id, event_id),
            stored AS (
                INSERT INTO sdk_events (org_id, project_id, event_id, name, event_time,
                                        received_at, email_sha256)
                SELECT DISTINCT ON (s.project_id, s.event_id) s.org_id, s.project_id,
                       s.event_id, s.name, s.event_time, s.received_at, s.email_sha256
                  FROM staging s JOIN fresh USING (project_id, event_id)
                RETURNING org_id, project_id, event_id, received_at, seq)
            INSERT INTO relay_deliveries (org_id, project_id, event_received_at, event_seq,
                                          event_id, destination)
            SELECT s.org_id, s.project_id, s.received_at, s.seq, s.event_id, l.layer
              FROM stored s JOIN project_layers l ON l.project_id = s.project_id AND l.enabled""")
        cur.execute("""INSERT INTO sdk_event_ids (org_id, project_id, event_id)
                       SELECT org_id, project_id, event_id FROM staging
                       ON CONFLICT (project_id, event_id) DO NOTHING
                       RETURNING project_id, event_id""")
        assert cur.fetchall() == [], "re-sent events were not recognized as duplicates"
        conn.commit()
    finally:
        conn.close()
    with session(pg_cluster) as cur:
        cur.execute("""SELECT org_id::text, count(*) FROM sdk_events
                        WHERE event_id LIKE 'batch-%%' GROUP BY 1""")
        assert dict(cur.fetchall()) == {a["org"]: 3, b["org"]: 3}
        cur.execute("""SELECT org_id::text, destination, count(*) FROM relay_deliveries
                        WHERE event_id LIKE 'batch-%%' GROUP BY 1, 2""")
        assert sorted(cur.fetchall()) == sorted([(a["org"], "meta", 3), (b["org"], "meta", 3)])


def test_relay_works_the_outbox_across_tenants(pg_cluster, orgs):
    a, b = orgs
    with session(pg_cluster) as cur:
        cur.execute("SET LOCAL enable_seqscan = off")
        cur.execute("""EXPLAIN SELECT delivery_id FROM relay_deliveries
                        WHERE status = 'pending' AND next_attempt_at <= now()
                        ORDER BY next_attempt_at LIMIT 50 FOR UPDATE SKIP LOCKED""")
        plan = "\n".join(r[0] for r in cur.fetchall())
        assert "relay_deliveries_due" in plan, plan
    with session(pg_cluster, user="layers_relay") as cur:
        cur.execute("""SELECT delivery_id, org_id::text, project_id, event_received_at, event_seq
                         FROM relay_deliveries
                        WHERE status = 'pending' AND next_attempt_at <= now()
                        ORDER BY next_attempt_at LIMIT 50 FOR UPDATE SKIP LOCKED""")
        claimed = cur.fetchall()
        assert {a["org"], b["org"]} <= {r[1] for r in claimed}
        cur.execute("""UPDATE relay_deliveries SET status = 'in_flight', attempts = attempts + 1,
                              locked_by = 'relay-1', locked_until = now() + interval '1 minute'
                        WHERE delivery_id = ANY (%s)""", ([r[0] for r in claimed],))
        cur.execute("SELECT count(*) FROM sdk_events WHERE attribution_token IS NOT NULL")
        assert cur.fetchone()[0] >= 2
        cur.execute("""SELECT secret_ciphertext, config FROM project_layers
                        WHERE enabled ORDER BY org_id LIMIT 1""")
        assert cur.fetchone() is not None
        cur.execute("""INSERT INTO attributions (org_id, project_id, event_received_at, event_seq,
                           event_id, attribution, raw)
                       VALUES (%s, %s, now(), 7, 'relay-attr', false, '{"attribution": false}')
                       ON CONFLICT (project_id, event_id) DO NOTHING""", (b["org"], b["project"]))
        cur.execute("UPDATE sdk_events SET attribution_token = NULL WHERE org_id = %s",
                    (b["org"],))
        cur.execute("SELECT project_id, app_store_id FROM projects")   # TikTok's app_id
        assert len(cur.fetchall()) >= 2
        for sql in ("SELECT * FROM organizations", "SELECT * FROM members",
                    "SELECT name FROM projects", "UPDATE projects SET app_store_id = '1'",
                    "SELECT * FROM api_tokens", "UPDATE sdk_events SET user_id = 'x'",
                    "DELETE FROM sdk_events", "SELECT raw FROM attributions"):
            assert isinstance(refused(cur, sql), psycopg2.errors.InsufficientPrivilege), sql


def test_auth_looks_up_credentials_and_nothing_else(pg_cluster, orgs):
    a, b = orgs
    with session(pg_cluster, user="layers_auth") as cur:
        for org in (a, b):
            cur.execute("""SELECT token_id, org_id::text, member_id, expires_at, revoked_at
                             FROM api_tokens WHERE token_sha256 = %s""",
                        (psycopg2.Binary(org["token_sha256"]),))
            token = cur.fetchall()
            assert len(token) == 1 and token[0][1] == org["org"]
            cur.execute("UPDATE api_tokens SET last_used_at = now() WHERE token_id = %s",
                        (token[0][0],))
            assert cur.rowcount == 1
            cur.execute("""SELECT k.key_id, k.org_id::text, k.project_id, p.default_country_code
                             FROM sdk_keys k JOIN projects p USING (project_id)
                            WHERE k.key_sha256 = %s AND k.revoked_at IS NULL""",
                        (psycopg2.Binary(org["key_sha256"]),))
            key = cur.fetchall()
            assert len(key) == 1 and key[0][1] == org["org"] and key[0][3] == "1"
            cur.execute("UPDATE sdk_keys SET last_used_at = now() WHERE key_id = %s", (key[0][0],))
            assert cur.rowcount == 1
        for sql in ("SELECT name FROM projects", "SELECT * FROM members",
                    "SELECT * FROM organizations", "SELECT name, token_prefix FROM api_tokens",
                    "UPDATE api_tokens SET revoked_at = NULL", "DELETE FROM api_tokens",
                    "SELECT * FROM sdk_events", "SELECT * FROM project_layers",
                    "INSERT INTO sdk_keys (project_id, key_prefix, key_sha256) "
                    "VALUES (gen_random_uuid(), 'lys_x', '\\x00')"):
            assert isinstance(refused(cur, sql), psycopg2.errors.InsufficientPrivilege), sql


def test_content_claims_jobs_then_works_under_the_tenant(pg_cluster, orgs):
    a, b = orgs
    with session(pg_cluster, user="layers_content") as cur:
        cur.execute("""SELECT job_id, org_id::text FROM content_jobs
                        WHERE state = 'queued' AND next_attempt_at <= now()
                        ORDER BY next_attempt_at FOR UPDATE SKIP LOCKED""")
        jobs = cur.fetchall()
        assert {a["org"], b["org"]} <= {j[1] for j in jobs}, "the queue spans tenants"
        cur.execute("""UPDATE content_jobs SET state = 'running', attempts = attempts + 1,
                              locked_by = 'content-1', locked_until = now() + interval '5 minutes'
                        WHERE job_id = %s""", (b["job"],))
        assert cur.rowcount == 1
        assert isinstance(refused(cur, "UPDATE content_jobs SET org_id = %s WHERE job_id = %s",
                                  (a["org"], b["job"])), psycopg2.errors.InsufficientPrivilege)
        cur.execute("SELECT count(*) FROM projects")
        assert cur.fetchone()[0] == 0, "content sees projects with no tenant set"
        cur.execute("SELECT set_config('layers.org_id', %s, true)", (b["org"],))
        cur.execute("SELECT org_id::text, brand FROM projects WHERE project_id = %s",
                    (b["project"],))
        assert cur.fetchone()[0] == b["org"]
        cur.execute("SELECT count(*) FROM projects WHERE org_id = %s", (a["org"],))
        assert cur.fetchone()[0] == 0
        cur.execute("SELECT count(*) FROM ads_content")
        assert cur.fetchone()[0] >= 1
        cur.execute("""INSERT INTO content_containers (project_id, job_id, kind, media)
                       VALUES (%s, %s, 'reel', '[]') RETURNING org_id::text""",
                    (b["project"], b["job"]))
        assert cur.fetchone()[0] == b["org"], "org_id defaults to the tenant set"
        error = refused(cur, """INSERT INTO content_containers (org_id, project_id, kind)
                                VALUES (%s, %s, 'reel')""", (a["org"], a["project"]))
        assert error is not None and "row-level security" in str(error)
        for sql in ("SELECT * FROM members", "SELECT * FROM api_tokens",
                    "SELECT * FROM relay_deliveries", "SELECT * FROM attributions",
                    "INSERT INTO content_jobs (project_id, kind) VALUES (gen_random_uuid(), 'x')"):
            assert isinstance(refused(cur, sql), psycopg2.errors.InsufficientPrivilege), sql


def test_api_writes_secrets_but_cannot_read_them(pg_cluster, orgs):
    a, _ = orgs
    with session(pg_cluster, user="layers_api", org=a["org"]) as cur:
        cur.execute("""UPDATE project_layers SET secret_ciphertext = %s, secret_key_id = 'k2',
                              secret_key_version = 1, secret_names = '{access_token}'
                        WHERE layer = 'meta' RETURNING updated_at""",
                    (psycopg2.Binary(os.urandom(60)),))
        assert cur.rowcount >= 1
        cur.execute("SELECT layer, enabled, config, secret_names FROM project_layers")
        assert cur.fetchall()
        error = refused(cur, "SELECT secret_ciphertext FROM project_layers")
        assert isinstance(error, psycopg2.errors.InsufficientPrivilege)
        cur.execute("""UPDATE relay_deliveries SET status = 'pending', attempts = 0,
                              next_attempt_at = now(), reason = 'replay'
                        WHERE status = 'pending'""")
        assert isinstance(refused(cur, "UPDATE relay_deliveries SET org_id = gen_random_uuid()"),
                          psycopg2.errors.InsufficientPrivilege)
