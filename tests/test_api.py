"""The partner API (/v1) end to end: one layersd with its embedded PostgreSQL, two
organizations made with `layersctl org create`, a member and a token per role in each.

Checks every documented route (docs/api.md, which must list exactly the routes of
storage/ly_apiv1.c) with every role, allowed and denied; cross-tenant ids on every route;
row-level security behind a deliberately unfiltered query; SQL injection in every string
parameter; revocation at once; the HTTP conventions (errors, ETag/If-Match,
Idempotency-Key, pagination, limits, request ids); write-only layer secrets; events,
deliveries and replay; media downloads; layersctl; and that failed authentication is
throttled per client while others are served. Run:
    LY_BUILD_DIR=build/test /usr/bin/python3 -m pytest -q tests/test_api.py
"""
import base64
import hashlib
import itertools
import json
import os
import re
import time
import urllib.parse
import uuid

import pytest

from lyserver import (Layersd, api_call, db_connect, held, http, layersctl_for, lock_waits,
                      post_events, wait_for_lock_waits)

SRC = os.environ.get("LY_SOURCE_DIR") or os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ROLES = ["owner", "admin", "editor", "viewer"]
RANK = {"owner": 40, "admin": 30, "editor": 20, "viewer": 10}
_ips = itertools.count(1)


def fresh_ip():
    """A client address of its own (X-Forwarded-For from the trusted 127.0.0.1), so the
    gateway's failed-authentication counters of one test do not touch another."""
    n = next(_ips)
    return "10.77.%d.%d" % (n // 250, n % 250 + 1)


# ----------------------------------------------------------------------------------------
# The documentation and the code

def doc_routes():
    """[(method, pattern, permission)] from the route table of docs/api.md."""
    with open(os.path.join(SRC, "docs", "api.md")) as f:
        text = f.read()
    return re.findall(r"^\| `(GET|POST|PUT|PATCH|DELETE)` \| `(/v1[^`]*)` \| `([a-z.]+)` \|",
                      text, re.M)


def doc_permissions():
    """{permission: least role} from the permission table of docs/api.md."""
    with open(os.path.join(SRC, "docs", "api.md")) as f:
        text = f.read()
    return dict(re.findall(r"^\| `([a-z]+(?:\.[a-z]+)?)` \| (owner|admin|editor|viewer) \|", text, re.M))


def code_routes():
    """[(method, pattern, permission)] from the route table of storage/ly_apiv1.c."""
    with open(os.path.join(SRC, "storage", "ly_apiv1.c")) as f:
        text = f.read()
    perms = {c: (name, role) for c, name, role in re.findall(
        r'\{ (LY_PERM_\w+),\s+"([a-z.]+)",\s+"(\w+)" \}', text)}
    routes = re.findall(r'\{ "(GET|POST|PUT|PATCH|DELETE)",\s+"(/v1[^"]*)", (LY_PERM_\w+),', text)
    return [(m, p, perms[c][0]) for m, p, c in routes], {n: r for n, r in perms.values()}


# ----------------------------------------------------------------------------------------
# Fixtures: one server, two organizations

class Org:
    """An organization made by layersctl, with a member and token per role and a project
    carrying a layer, an SDK key, linked ads content, a container with media, events and
    deliveries."""

    def __init__(self, server, name):
        self.server = server
        slug = name.lower()
        done = layersctl_for(server, "org", "create", name, "--owner", "owner@%s.test" % slug)
        assert done.returncode == 0, done.stderr
        out = json.loads(done.stdout)
        self.id = out["org_id"]
        self.tokens = {"owner": out["token"]}
        self.members = {"owner": out["member_id"]}
        self.token_ids = {"owner": out["token_id"]}
        for role in ROLES[1:]:
            status, _, body = self.call("owner", "POST", "/v1/members",
                                        {"email": "%s@%s.test" % (role, slug), "role": role,
                                         "display_name": role.title()})
            assert status == 201, body
            self.members[role] = body["member_id"]
            status, _, body = self.call("owner", "POST", "/v1/tokens",
                                        {"member_id": body["member_id"], "name": role})
            assert status == 201, body
            self.tokens[role] = body["token"]
            self.token_ids[role] = body["token_id"]
        status, _, body = self.call("owner", "POST", "/v1/projects", {"name": name + " app"})
        assert status == 201, body
        self.project = body["project_id"]
        status, _, body = self.call("owner", "PUT", "/v1/projects/%s/layers/meta" % self.project,
                                    {"dataset_id": "1234567890", "access_token": "EAAsecret" + slug,
                                     "enabled": False})
        assert status == 201, body
        status, _, body = self.call("owner", "POST", "/v1/projects/%s/sdk-keys" % self.project,
                                    {"name": "ios"})
        assert status == 201, body
        self.sdk_key, self.key_id = body["key"], body["key_id"]
        self.ad = self.new_ad()
        status, _, body = self.call("owner", "PUT", "/v1/projects/%s/ads-content/%s" % (self.project, self.ad))
        assert status == 201, body
        self.container, self.media = self.new_container()
        self.event_ids = []
        for i, name_ in enumerate(["app_open", "purchase", "purchase"]):
            event_id = "%s-ev-%d" % (slug, i)
            status, _, body = post_events(server, {"event_id": event_id, "name": name_,
                                                   "user_id": "%s-user-%d" % (slug, i % 2),
                                                   "email": "buyer%d@example.org" % i},
                                          key=self.sdk_key)
            assert status == 202 and body["accepted"] == 1, body
            self.event_ids.append(event_id)
        self.deliveries = self.new_deliveries(["dead", "dead", "delivered", "pending"])

    def call(self, role, method, path, body=None, headers=None, token=None):
        h = {"X-Forwarded-For": "10.1.0.1"}
        h.update(headers or {})
        return api_call(self.server, method, path, token=token or self.tokens[role], body=body,
                        headers=h)

    # Fresh resources, made as the owner, for routes that change or remove one.
    def new_member(self, role="viewer"):
        status, _, body = self.call("owner", "POST", "/v1/members",
                                    {"email": "m-%s@example.test" % uuid.uuid4().hex[:12], "role": role})
        assert status == 201, body
        return body["member_id"]

    def new_token(self, member_id=None):
        status, _, body = self.call("owner", "POST", "/v1/tokens",
                                    {"member_id": member_id or self.new_member()})
        assert status == 201, body
        return body["token_id"], body["token"]

    def new_project(self):
        status, _, body = self.call("owner", "POST", "/v1/projects", {"name": "fresh"})
        assert status == 201, body
        return body["project_id"]

    def new_ad(self):
        status, _, body = self.call("owner", "POST", "/v1/ads-content",
                                    {"kind": "video", "title": "Spring sale", "body": "Buy now",
                                     "metadata": {"length_s": 15}})
        assert status == 201, body
        return body["ad_content_id"]

    def new_key(self, project):
        status, _, body = self.call("owner", "POST", "/v1/projects/%s/sdk-keys" % project, {})
        assert status == 201, body
        return body["key_id"]

    def new_container(self, url=None, content_type="image/png", data=None):
        media_dir = os.path.join(self.server.data_dir, "media", self.id)
        os.makedirs(media_dir, exist_ok=True)
        data = data if data is not None else os.urandom(2048)
        path = os.path.join(media_dir, uuid.uuid4().hex + ".png")
        with open(path, "wb") as f:
            f.write(data)
        media = [{"url": url or "file://" + path, "content_type": content_type, "bytes": len(data),
                  "sha256": hashlib.sha256(data).hexdigest(), "width": 64, "height": 32}]
        container = str(uuid.uuid4())
        cur = self.server.db.cursor()
        cur.execute("""INSERT INTO content_containers (org_id, project_id, container_id, kind,
                                                       title, media)
                       VALUES (%s, %s, %s, 'image', 'generated', %s)""",
                    (self.id, self.project, container, json.dumps(media)))
        return container, data

    def new_deliveries(self, statuses, destination=None):
        """Outbox rows of the project. Pending ones are due tomorrow, so that a relay
        actor running meanwhile leaves them (and the dead ones) alone."""
        cur = self.server.db.cursor()
        ids = []
        for i, status in enumerate(statuses):
            dest = destination or ["meta", "tiktok", "apple_search_ads"][i % 3]
            # due tomorrow from the start: a relay polling meanwhile never sees it due
            cur.execute("""INSERT INTO relay_deliveries (org_id, project_id, event_received_at,
                               event_seq, event_id, destination, status, attempts, reason,
                               next_attempt_at)
                           VALUES (%s, %s, now(), %s, %s, %s, %s, 5, 'http_400',
                                   now() + CASE WHEN %s = 'pending' THEN interval '1 day'
                                                ELSE interval '0' END)
                           RETURNING delivery_id""",
                        (self.id, self.project, 1000 + i, "d-" + uuid.uuid4().hex, dest, status,
                         status))
            ids.append(cur.fetchone()[0])
        return ids


@pytest.fixture(scope="module")
def server():
    with Layersd(env={"LAYERS_TRUSTED_PROXIES": "127.0.0.1"}) as s:
        s.db = db_connect(s)
        yield s
        s.db.close()


@pytest.fixture(scope="module")
def orgs(server):
    return Org(server, "Alpha"), Org(server, "Beta")


def snapshot(server, org_id):
    """A digest of every row of the organization in every tenant table (last_used_at of
    tokens aside: using a token stamps it)."""
    cur = server.db.cursor()
    cur.execute("""SELECT c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
                    JOIN pg_attribute a ON a.attrelid = c.oid AND a.attname = 'org_id'
                   WHERE n.nspname = 'public' AND c.relkind IN ('r', 'p') AND NOT c.relispartition
                   ORDER BY 1""")
    digest = {}
    for (table,) in cur.fetchall():
        if table == "api_tokens":
            sql = """SELECT md5(string_agg(row(token_id, member_id, name, revoked_at, expires_at)::text,
                                           ',' ORDER BY token_id)) FROM api_tokens WHERE org_id = %s"""
        else:
            sql = "SELECT md5(string_agg(t::text, ',' ORDER BY t::text)) FROM %s t WHERE org_id = %%s" % table
        cur.execute(sql, (org_id,))
        digest[table] = cur.fetchone()[0]
    return digest


# ----------------------------------------------------------------------------------------
# Requests for every route: (path, body) that a role allowed to use it should succeed with

OK = {"GET": 200, "POST": 201, "PATCH": 200, "DELETE": 204}


def request_for(org, method, pattern):
    """A concrete request for the documented route: (path, body, expected success status).
    Routes that change or remove something get a fresh target each time."""
    key = (method, pattern)
    ids = {"project_id": org.project, "member_id": org.members["viewer"],
           "ad_content_id": org.ad, "container_id": org.container, "layer": "meta",
           "key_id": org.key_id, "token_id": None}
    body, expect = None, OK.get(method, 200)
    if key == ("PATCH", "/v1/organization"):
        body = {"name": "Renamed"}
    elif key == ("POST", "/v1/members"):
        body = {"email": "n-%s@example.test" % uuid.uuid4().hex[:12], "role": "viewer"}
    elif key in (("PATCH", "/v1/members/{member_id}"), ("DELETE", "/v1/members/{member_id}")):
        ids["member_id"] = org.new_member()
        body = {"display_name": "Renamed"} if method == "PATCH" else None
    elif key == ("POST", "/v1/tokens"):
        body = {"name": "ci"}
    elif key == ("DELETE", "/v1/tokens/{token_id}"):
        ids["token_id"] = org.new_token()[0]
    elif key == ("POST", "/v1/projects"):
        body = {"name": "New app", "timezone": "Europe/Berlin", "default_country_code": "49"}
    elif key == ("PATCH", "/v1/projects/{project_id}"):
        body = {"ios_bundle_id": "com.example.app"}
    elif key == ("DELETE", "/v1/projects/{project_id}"):
        ids["project_id"] = org.new_project()
    elif key == ("PUT", "/v1/projects/{project_id}/layers/{layer}"):
        ids["layer"] = "tiktok"
        body = {"app_id": "7001", "access_token": "tt-secret", "enabled": False,
                "event_map": {"purchase": "CompletePayment"}}
        expect = (200, 201)
    elif key == ("DELETE", "/v1/projects/{project_id}/layers/{layer}"):
        ids["project_id"] = org.new_project()
        ids["layer"] = "apple_search_ads"
        status, _, got = org.call("owner", "PUT", "/v1/projects/%s/layers/apple_search_ads" % ids["project_id"],
                                  {"enabled": True})
        assert status == 201, got
    elif key == ("POST", "/v1/projects/{project_id}/sdk-keys"):
        body = {"name": "android"}
    elif key == ("DELETE", "/v1/projects/{project_id}/sdk-keys/{key_id}"):
        ids["key_id"] = org.new_key(org.project)
    elif key == ("PUT", "/v1/projects/{project_id}/ads-content/{ad_content_id}"):
        ids["ad_content_id"] = org.new_ad()
        expect = 201
    elif key == ("DELETE", "/v1/projects/{project_id}/ads-content/{ad_content_id}"):
        ids["ad_content_id"] = org.new_ad()
        status, _, got = org.call("owner", "PUT", "/v1/projects/%s/ads-content/%s" % (org.project, ids["ad_content_id"]))
        assert status == 201, got
    elif key == ("POST", "/v1/projects/{project_id}/deliveries/replay"):
        body = {"delivery_ids": [999999999]}
        expect = 200
    elif key == ("POST", "/v1/ads-content"):
        body = {"kind": "text", "title": "Hello"}
    elif key == ("PATCH", "/v1/ads-content/{ad_content_id}"):
        body = {"title": "Summer sale"}
    elif key == ("DELETE", "/v1/ads-content/{ad_content_id}"):
        ids["ad_content_id"] = org.new_ad()
    path = re.sub(r"\{(\w+)\}", lambda m: ids[m.group(1)], pattern)
    return path, body, expect


# ----------------------------------------------------------------------------------------
# Documentation and routes

def test_docs_list_exactly_the_routes_and_permissions_of_the_code():
    documented = doc_routes()
    routes, perms = code_routes()
    assert len(documented) >= 38
    assert len(set(documented)) == len(documented), "a route is documented twice"
    assert sorted(documented) == sorted(routes)
    assert doc_permissions() == perms


def test_every_documented_route_with_every_role(server, orgs):
    a, _ = orgs
    perms = doc_permissions()
    for method, pattern, perm in doc_routes():
        for role in ROLES:
            path, body, expect = request_for(a, method, pattern)
            status, headers, got = a.call(role, method, path, body)
            allowed = RANK[role] >= RANK[perms[perm]]
            where = "%s %s as %s" % (method, pattern, role)
            if allowed:
                expected = expect if isinstance(expect, tuple) else (expect,)
                assert status in expected, (where, status, got)
            else:
                assert status == 403, (where, status, got)
                assert got["error"]["code"] == "forbidden", where
            assert headers.get("x-request-id"), where
        # without a token: 401, from a client address of its own
        path, body, _ = request_for(a, method, pattern)
        status, _, got = api_call(server, method, path, body=body,
                                  headers={"X-Forwarded-For": fresh_ip()})
        assert status == 401 and got["error"]["code"] == "unauthorized", (method, pattern, got)


def test_a_viewer_cannot_change_anything(server, orgs):
    a, b = orgs
    before = snapshot(server, a.id), snapshot(server, b.id)
    for method, pattern, _ in doc_routes():
        if method == "GET":
            continue
        path = re.sub(r"\{(\w+)\}", lambda m: {"project_id": a.project, "member_id": a.members["owner"],
                                               "ad_content_id": a.ad, "layer": "meta",
                                               "key_id": a.key_id, "token_id": a.token_ids["owner"],
                                               "container_id": a.container}[m.group(1)], pattern)
        for body in ({"name": "x", "role": "owner", "email": "v@x.test", "kind": "text",
                      "dataset_id": "1", "access_token": "t"}, None):
            status, _, got = a.call("viewer", method, path, body)
            assert status == 403, (method, pattern, status, got)
    assert (snapshot(server, a.id), snapshot(server, b.id)) == before


# ----------------------------------------------------------------------------------------
# Tenancy

def test_other_tenants_ids_are_404_on_every_route(server, orgs):
    a, b = orgs
    before = snapshot(server, b.id)
    b_ids = {"project_id": b.project, "member_id": b.members["viewer"], "ad_content_id": b.ad,
             "container_id": b.container, "layer": "meta", "key_id": b.key_id,
             "token_id": b.token_ids["viewer"]}
    checked = 0
    for method, pattern, _ in doc_routes():
        if "{" not in pattern:
            continue
        path = re.sub(r"\{(\w+)\}", lambda m: b_ids[m.group(1)], pattern)
        _, body, _ = request_for(a, method, pattern)
        status, _, got = a.call("owner", method, path, body)
        assert status == 404 and got["error"]["code"] == "not_found", (method, pattern, status, got)
        checked += 1
    assert checked >= 25
    # links across tenants, both ways
    for path in ("/v1/projects/%s/ads-content/%s" % (a.project, b.ad),
                 "/v1/projects/%s/ads-content/%s" % (b.project, a.ad)):
        for method in ("PUT", "DELETE"):
            status, _, got = a.call("owner", method, path)
            assert status == 404, (method, path, got)
    # a token of org B that org A names in a body
    status, _, got = a.call("owner", "POST", "/v1/tokens", {"member_id": b.members["viewer"]})
    assert status == 422 and got["error"]["field"] == "member_id", got
    assert snapshot(server, b.id) == before


def test_lists_and_filters_never_show_another_tenant(server, orgs):
    a, b = orgs
    b_values = {b.id, b.project, b.ad, b.container, b.key_id, b.sdk_key} | set(b.members.values()) \
        | set(b.token_ids.values()) | set(b.event_ids)
    lists = ["/v1/organization", "/v1/me", "/v1/members?limit=200", "/v1/tokens?limit=200",
             "/v1/projects?limit=200", "/v1/ads-content?limit=200", "/v1/content/containers?limit=200",
             "/v1/projects/%s/events?limit=200" % a.project,
             "/v1/projects/%s/deliveries?limit=200" % a.project,
             "/v1/projects/%s/sdk-keys" % a.project, "/v1/projects/%s/ads-content" % a.project,
             "/v1/projects/%s/layers" % a.project]
    for path in lists:
        status, _, got = a.call("owner", "GET", path)
        assert status == 200, (path, got)
        text = json.dumps(got)
        assert not [v for v in b_values if str(v) in text], path
        assert "Beta" not in text, path
    for path in ("/v1/ads-content?project_id=%s" % b.project,
                 "/v1/content/containers?project_id=%s" % b.project,
                 "/v1/tokens?member_id=%s" % b.members["owner"]):
        status, _, got = a.call("owner", "GET", path)
        assert status == 200 and got["data"] == [], (path, got)
    status, _, got = a.call("owner", "GET", "/v1/members?role=owner")
    assert [m["member_id"] for m in got["data"]] == [a.members["owner"]]


def test_row_level_security_filters_a_deliberately_unfiltered_query(server, orgs):
    """The projects list is `SELECT ... FROM projects` without any org_id condition (see
    ly_apiv1_projects_list): only row-level security keeps org B's projects out. The same
    unfiltered query on every tenant table, as layers_api under A's tenant, sees A only."""
    a, b = orgs
    status, _, got = a.call("owner", "GET", "/v1/projects?limit=200")
    listed = {p["project_id"] for p in got["data"]}
    cur = server.db.cursor()
    cur.execute("SELECT project_id::text FROM projects WHERE org_id = %s", (a.id,))
    assert listed == {r[0] for r in cur.fetchall()}
    cur.execute("SELECT count(*) FROM projects WHERE org_id <> %s", (a.id,))
    assert cur.fetchone()[0] > 0, "the test needs other tenants' projects"

    with open(os.path.join(SRC, "storage", "ly_apiv1_workspace.c")) as f:
        source = f.read()
    listing = source[source.index("ly_apiv1_projects_list (ly_apiv1_ctx_t *ctx)"):]
    listing = listing[:listing.index("\n}\n")]
    assert "FROM projects" in listing and "org_id" not in listing.split("//")[-1]

    conn = db_connect(server)
    conn.autocommit = False
    try:
        cur = conn.cursor()
        cur.execute("SET ROLE layers_api")
        cur.execute("SELECT set_config('layers.org_id', %s, true)", (a.id,))
        cur.execute("""SELECT c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
                        JOIN pg_attribute a ON a.attrelid = c.oid AND a.attname = 'org_id'
                       WHERE n.nspname = 'public' AND c.relkind IN ('r', 'p')
                         AND NOT c.relispartition
                         AND has_table_privilege('layers_api', c.oid, 'SELECT')""")
        tables = [r[0] for r in cur.fetchall()]
        assert "projects" in tables and "sdk_events" in tables
        for table in tables:
            cur.execute("SELECT DISTINCT org_id::text FROM %s" % table)   # no WHERE
            assert {r[0] for r in cur.fetchall()} <= {a.id}, table
    finally:
        conn.rollback()
        conn.close()


# ----------------------------------------------------------------------------------------
# SQL injection

INJECTIONS = ["' OR '1'='1", "'; DROP TABLE projects; --", "\" OR 1=1 --", "1) OR (1=1",
              "%' OR org_id IS NOT NULL --", "' UNION SELECT token_sha256::text FROM api_tokens --",
              "$1", "\\'; SELECT pg_sleep(5); --", "é'||(SELECT 1)||'"]


def test_sql_injection_is_inert_everywhere(server, orgs):
    a, b = orgs
    before_b = snapshot(server, b.id)
    q = urllib.parse.quote
    lists = {"/v1/members": ["role", "limit", "cursor"],
             "/v1/tokens": ["member_id", "limit", "cursor"],
             "/v1/projects": ["limit", "cursor"],
             "/v1/ads-content": ["project_id", "kind", "limit", "cursor"],
             "/v1/content/containers": ["project_id", "kind", "limit", "cursor"],
             "/v1/projects/%s/events" % a.project: ["from", "to", "name", "user_id", "limit", "cursor"],
             "/v1/projects/%s/deliveries" % a.project: ["status", "destination", "limit", "cursor"],
             "/v1/projects/%s/sdk-keys" % a.project: ["limit", "cursor"],
             "/v1/projects/%s/ads-content" % a.project: ["limit", "cursor"],
             "/v1/content/containers/%s/media" % a.container: ["index"]}
    for path, params in lists.items():
        for param in params:
            for payload in INJECTIONS:
                status, _, got = a.call("owner", "GET", "%s?%s=%s" % (path, param, q(payload)))
                assert status in (200, 400), (path, param, payload, status, got)
                if status == 200:
                    assert got["data"] == [], (path, param, payload)
    # path segments: ids and the layer name
    for method, pattern, _ in doc_routes():
        if "{" not in pattern:
            continue
        for payload in INJECTIONS:
            path = re.sub(r"\{\w+\}", q(payload, safe=""), pattern)
            status, _, got = a.call("owner", method, path, {} if method in ("POST", "PUT", "PATCH") else None)
            assert status == 404, (method, pattern, payload, status, got)
    # strings in bodies are stored as they are
    for payload in INJECTIONS:
        status, _, got = a.call("owner", "POST", "/v1/projects", {"name": payload})
        assert status == 201 and got["name"] == payload, got
        status, _, got = a.call("owner", "GET", "/v1/projects/" + got["project_id"])
        assert got["name"] == payload
        status, _, got = a.call("owner", "POST", "/v1/ads-content",
                                {"kind": "text", "title": payload, "body": payload,
                                 "metadata": {payload: payload}})
        assert status == 201 and got["title"] == payload and got["metadata"] == {payload: payload}
        status, _, got = a.call("owner", "POST", "/v1/ads-content", {"kind": payload})
        assert status == 422 and got["error"]["field"] == "kind"
        status, _, got = a.call("owner", "POST", "/v1/members",
                                {"email": "x%s@example.test" % payload.replace(" ", ""),
                                 "role": "viewer", "display_name": payload})
        assert status in (201, 422), got
        if status == 201:
            assert got["display_name"] == payload
        status, _, got = a.call("owner", "POST", "/v1/tokens", {"name": payload})
        assert status == 201 and got["name"] == payload
        status, _, got = a.call("owner", "POST", "/v1/projects/%s/sdk-keys" % a.project, {"name": payload})
        assert status == 201 and got["name"] == payload
        status, _, got = a.call("owner", "PATCH", "/v1/organization", {"name": payload})
        assert status == 200 and got["name"] == payload
        status, _, got = a.call("owner", "PATCH", "/v1/members/" + a.members["viewer"],
                                {"display_name": payload})
        assert status == 200 and got["display_name"] == payload
        status, _, got = a.call("owner", "POST", "/v1/members", {"email": "a@b.c", "role": payload})
        assert status == 422 and got["error"]["field"] == "role"
        status, _, got = a.call("owner", "PATCH", "/v1/projects/" + a.project, {"name": "x"},
                                headers={"If-Match": payload.encode("ascii", "ignore").decode()})
        assert status == 412, got
        status, _, got = a.call("owner", "PUT", "/v1/projects/%s/layers/meta" % a.project,
                                {"dataset_id": payload})
        assert status == 422 and got["error"]["field"] == "dataset_id"
    status, _, got = a.call("owner", "POST", "/v1/projects", {"name": "idem"},
                            headers={"Idempotency-Key": "';DROP/**/TABLE/**/projects;--"})
    assert status == 201, got
    cur = server.db.cursor()
    cur.execute("SELECT count(*) FROM projects")
    assert cur.fetchone()[0] > 0
    assert snapshot(server, b.id) == before_b


# ----------------------------------------------------------------------------------------
# Tokens: revocation at once, layersctl, throttling

def test_revoked_token_is_refused_at_once(server, orgs):
    a, _ = orgs
    member = a.new_member("editor")
    token_id, token = a.new_token(member)
    assert a.call(None, "GET", "/v1/me", token=token)[0] == 200
    status, _, _ = a.call("owner", "DELETE", "/v1/tokens/" + token_id)
    assert status == 204
    status, _, got = a.call(None, "GET", "/v1/me", token=token)
    assert status == 401 and got["error"]["code"] == "unauthorized"
    # listed with revoked_at
    status, _, got = a.call("owner", "GET", "/v1/tokens?member_id=" + member)
    assert [t["revoked_at"] is not None for t in got["data"]] == [True]
    assert "token" not in got["data"][0]
    # revoked with layersctl
    token_id, token = a.new_token(member)
    assert a.call(None, "GET", "/v1/me", token=token)[0] == 200
    done = layersctl_for(server, "token", "revoke", token_id)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["token_id"] == token_id
    assert a.call(None, "GET", "/v1/me", token=token)[0] == 401
    # a removed member's tokens go with it
    token_id, token = a.new_token(member)
    assert a.call(None, "GET", "/v1/projects", token=token)[0] == 200
    assert a.call("owner", "DELETE", "/v1/members/" + member)[0] == 204
    assert a.call(None, "GET", "/v1/projects", token=token)[0] == 401
    # an expired token
    status, _, got = a.call("owner", "POST", "/v1/tokens", {"expires_at": "2001-01-01T00:00:00Z"})
    assert status == 422 and got["error"]["field"] == "expires_at"
    soon = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(time.time() + 2))
    status, _, got = a.call("owner", "POST", "/v1/tokens", {"expires_at": soon})
    assert status == 201, got
    assert a.call(None, "GET", "/v1/me", token=got["token"])[0] == 200
    time.sleep(2.5)
    assert a.call(None, "GET", "/v1/me", token=got["token"])[0] == 401


def test_layersctl_org_and_token_commands(server, orgs):
    a, _ = orgs
    done = layersctl_for(server, "--help")
    assert done.returncode == 0
    for command in ("migrate", "org create", "token create", "token revoke"):
        assert command in done.stdout
    done = layersctl_for(server, "token", "create", "--org", a.id, "--member", "EDITOR@alpha.test",
                         "--name", "cli")
    assert done.returncode == 0, done.stderr
    out = json.loads(done.stdout)
    assert out["member_id"] == a.members["editor"] and out["token"].startswith("lya_")
    status, _, me = a.call(None, "GET", "/v1/me", token=out["token"])
    assert status == 200 and me["role"] == "editor" and me["token_id"] == out["token_id"]
    cur = server.db.cursor()
    cur.execute("SELECT token_prefix, encode(token_sha256, 'hex') FROM api_tokens WHERE token_id = %s",
                (out["token_id"],))
    assert cur.fetchone() == (out["token"][:12], hashlib.sha256(out["token"].encode()).hexdigest())
    for args in (["token", "create", "--org", a.id, "--member", "nobody@alpha.test"],
                 ["token", "revoke", str(uuid.uuid4())]):
        done = layersctl_for(server, *args)
        assert done.returncode == 1 and done.stderr, args
    for args in (["org", "create"], ["org", "create", "X"], ["org", "create", "X", "--owner"],
                 ["token", "create", "--org", "nope", "--member", "a@b.c"], ["token", "revoke", "x"],
                 ["token"], ["org", "create", "X", "--owner", "a@b.c", "--bogus", "1"]):
        done = layersctl_for(server, *args)
        assert done.returncode == 2 and done.stderr, args


def test_failed_authentication_is_throttled_per_client(server, orgs):
    a, _ = orgs
    attacker, other = fresh_ip(), fresh_ip()
    statuses = []
    for _ in range(12):
        status, headers, got = api_call(server, "GET", "/v1/projects", token="lya_wrong",
                                        headers={"X-Forwarded-For": attacker})
        statuses.append(status)
        assert got["error"]["code"] in ("unauthorized", "too_many_failures")
    assert statuses[0] == 401 and statuses[-1] == 429, statuses
    assert int(headers["retry-after"]) > 0
    # the attacker is refused even with other wrong tokens after enough of them, while a
    # good token from another client is served
    status, _, _ = api_call(server, "GET", "/v1/projects", token=a.tokens["viewer"],
                            headers={"X-Forwarded-For": other})
    assert status == 200
    status, _, _ = api_call(server, "GET", "/v1/projects", token="lya_other_wrong",
                            headers={"X-Forwarded-For": other})
    assert status == 401


# ----------------------------------------------------------------------------------------
# HTTP conventions

def test_error_shapes_and_statuses(server, orgs):
    a, _ = orgs
    p = "/v1/projects"

    def check(status, got, code, want_status):
        assert status == want_status, (status, got)
        assert set(got) == {"error"} and got["error"]["code"] == code and got["error"]["message"]

    check(*a.call("owner", "GET", "/v1/nowhere")[::2], "not_found", 404)
    check(*a.call("owner", "GET", "/v1/projects/not-a-uuid")[::2], "not_found", 404)
    check(*a.call("owner", "GET", "/v1/projects/%s" % uuid.uuid4())[::2], "not_found", 404)
    check(*a.call("owner", "PUT", p)[::2], "method_not_allowed", 405)
    status, headers, _ = a.call("owner", "PUT", p)
    assert headers["allow"] == "GET, HEAD, POST", headers     # HEAD is served where GET is
    assert a.call("owner", "HEAD", p)[0] == 200
    check(*a.call("owner", "POST", p, b"name=x", headers={"Content-Type": "text/plain"})[::2],
          "unsupported_media_type", 415)
    # the same rule as the SDK endpoint: JSON in another charset would be misread
    status, _, got = a.call("owner", "POST", p, b'{"name": "x"}',
                            headers={"Content-Type": "application/json; charset=iso-8859-1"})
    check(status, got, "unsupported_media_type", 415)
    assert "UTF-8" in got["error"]["message"], got
    status, _, got = a.call("owner", "POST", p, b'{"name": "x"}',
                            headers={"Content-Type": "application/json; charset=\"UTF-8\""})
    assert status == 201, got
    check(*a.call("owner", "POST", p, b"{\"name\": ", headers={"Content-Type": "application/json"})[::2],
          "bad_json", 400)
    check(*a.call("owner", "POST", p, b"[1]", headers={"Content-Type": "application/json"})[::2],
          "bad_json", 400)
    check(*a.call("owner", "POST", p, b"{\"name\":\"a\",\"name\":\"b\"}",
                  headers={"Content-Type": "application/json"})[::2], "bad_json", 400)
    status, _, got = a.call("owner", "POST", p, b"{\"name\": \"a\\u0000b\"}",
                            headers={"Content-Type": "application/json"})
    check(status, got, "bad_json", 400)
    assert got["error"]["message"].startswith(    # in the client's terms, not jansson's
        "the body is not valid JSON: \\u0000 is not allowed in a string"), got
    status, _, got = a.call("owner", "POST", p, b"{\"name\": \"jane@example.com\x01\"}",
                            headers={"Content-Type": "application/json"})
    check(status, got, "bad_json", 400)   # what and where, not the bytes near (personal data)
    assert "jane" not in got["error"]["message"] and "position" in got["error"]["message"], got
    check(*a.call("owner", "POST", p, b"", headers={"Content-Type": "application/json"})[::2],
          "bad_request", 400)
    status, _, got = a.call("owner", "POST", p, {"name": ""})
    check(status, {"error": {k: v for k, v in got["error"].items() if k != "field"}}, "invalid_field", 422)
    assert got["error"]["field"] == "name"
    for body, field in (({}, "name"), ({"name": "x", "colour": "red"}, "colour"),
                        ({"name": "x", "timezone": "Mars/Olympus"}, "timezone"),
                        # POSIX (UTC+5 is 5 hours behind), other case, zone files
                        ({"name": "x", "timezone": "UTC+5"}, "timezone"),
                        ({"name": "x", "timezone": "+05"}, "timezone"),
                        ({"name": "x", "timezone": "utc"}, "timezone"),
                        ({"name": "x", "timezone": "posix/Europe/Paris"}, "timezone"),
                        ({"name": "x", "timezone": "localtime"}, "timezone"),
                        ({"name": "x", "timezone": "Factory"}, "timezone"),
                        # POSIX specs without a sign, which PostgreSQL takes
                        ({"name": "x", "timezone": "Asia/Tokyo2"}, "timezone"),
                        ({"name": "x", "timezone": "UTC5"}, "timezone"),
                        ({"name": "x", "timezone": "XYZ0ABC"}, "timezone"),
                        ({"name": "x", "timezone": "Etc/GMT+99"}, "timezone"),
                        ({"name": "x", "default_country_code": "0049"}, "default_country_code"),
                        ({"name": "x", "app_store_id": "12a"}, "app_store_id"),
                        ({"name": "x", "brand": "calm"}, "brand"), ({"name": 7}, "name"),
                        ({"name": "x" * 201}, "name"), ({"name": "\u0007bell"}, "name"),
                        ({"name": "two\nlines"}, "name")):
        status, _, got = a.call("owner", "POST", p, body)
        assert status == 422 and got["error"]["field"] == field, (body, got)
    for zone in ("UTC", "Etc/GMT+5", "Etc/GMT-14", "EST5EDT", "America/Port-au-Prince",
                 "America/Argentina/Buenos_Aires"):
        status, _, got = a.call("owner", "POST", p, {"name": "tz", "timezone": zone})
        assert status == 201 and got["timezone"] == zone, (zone, got)
    check(*a.call("owner", "GET", p + "?limit=201")[::2], "bad_query", 400)
    check(*a.call("owner", "GET", p + "?limit=0")[::2], "bad_query", 400)
    check(*a.call("owner", "GET", p + "?limit=ten")[::2], "bad_query", 400)
    check(*a.call("owner", "GET", p + "?colour=red")[::2], "bad_query", 400)
    check(*a.call("owner", "GET", p + "?limit=1&limit=2")[::2], "bad_query", 400)
    check(*a.call("owner", "GET", p + "?cursor=AAAA")[::2], "bad_cursor", 400)
    check(*a.call("owner", "GET", p + "?cursor=" + "x" * 300)[::2], "bad_cursor", 400)
    check(*a.call("owner", "GET", "/v1/projects/%s/events?from=yesterday" % a.project)[::2],
          "bad_query", 400)
    check(*a.call("owner", "GET", "/v1/projects/%s/deliveries?status=lost" % a.project)[::2],
          "bad_query", 400)
    check(*a.call("owner", "POST", "/v1/projects", {"name": "x"},
                  headers={"Idempotency-Key": "has space"})[::2], "bad_idempotency_key", 400)
    # 413 from the gateway, also on /v1
    status, _, got = a.call("owner", "POST", p, b"{\"name\": \"" + b"x" * (1 << 20) + b"\"}",
                            headers={"Content-Type": "application/json"})
    check(status, got, "too_large", 413)
    # a cursor of another list
    status, _, got = a.call("owner", "GET", "/v1/projects/%s/deliveries?limit=1" % a.project)
    assert got["next_cursor"]
    check(*a.call("owner", "GET", p + "?cursor=" + got["next_cursor"])[::2], "bad_cursor", 400)


def test_request_id_in_every_response_and_log_line(server, orgs):
    a, _ = orgs
    ids = []
    for method, path in (("GET", "/v1/projects"), ("GET", "/v1/nowhere"), ("DELETE", "/v1/roles")):
        status, headers, _ = a.call("viewer", method, path)
        ids.append(headers["x-request-id"])
    status, headers, _ = api_call(server, "GET", "/v1/projects", headers={"X-Forwarded-For": fresh_ip()})
    assert status == 401
    ids.append(headers["x-request-id"])
    assert len(set(ids)) == len(ids)
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline and not all("request %s:" % i in server.log() for i in ids):
        time.sleep(0.05)
    log = server.log()
    for i in ids:
        assert re.search(r"api: request %s: [A-Z]+ \S+ -> \d{3} in " % re.escape(i), log), i


def test_etag_and_if_match(server, orgs):
    a, _ = orgs
    project = a.new_project()
    path = "/v1/projects/" + project
    status, headers, got = a.call("admin", "GET", path)
    etag = headers["etag"]
    assert re.fullmatch(r'"\d+"', etag)
    status, headers, got = a.call("admin", "PATCH", path, {"name": "v2"}, headers={"If-Match": etag})
    assert status == 200 and got["name"] == "v2" and headers["etag"] != etag
    new = headers["etag"]
    status, _, got = a.call("admin", "PATCH", path, {"name": "v3"}, headers={"If-Match": etag})
    assert status == 412 and got["error"]["code"] == "precondition_failed"
    assert a.call("admin", "GET", path)[2]["name"] == "v2"
    status, _, _ = a.call("admin", "PATCH", path, {"name": "v3"}, headers={"If-Match": 'W/' + new})
    assert status == 200
    status, _, _ = a.call("admin", "PATCH", path, {"name": "v4"}, headers={"If-Match": "*"})
    assert status == 200
    status, _, _ = a.call("admin", "DELETE", path, headers={"If-Match": new})
    assert status == 412
    assert a.call("admin", "GET", path)[0] == 200
    etag = a.call("admin", "GET", path)[1]["etag"]
    assert a.call("admin", "DELETE", path, headers={"If-Match": etag})[0] == 204
    assert a.call("admin", "GET", path)[0] == 404
    # organization, members, ads content and layers carry ETags too
    for path in ("/v1/organization", "/v1/members/" + a.members["viewer"], "/v1/ads-content/" + a.ad,
                 "/v1/projects/%s/layers/meta" % a.project, "/v1/content/containers/" + a.container):
        status, headers, _ = a.call("owner", "GET", path)
        assert status == 200 and re.fullmatch(r'"\d+"', headers["etag"]), path
    status, _, got = a.call("owner", "PATCH", "/v1/members/" + a.members["viewer"],
                            {"display_name": "V"}, headers={"If-Match": '"1"'})
    assert status == 412


def test_an_idempotent_answer_is_replayed_only_to_its_member(server, orgs):
    """The owner makes an API token for itself with an Idempotency-Key; an admin of the
    same organization sending the same key and body must not get the owner's token (an
    admin may not hold an owner's token): 422, and the token appears in no answer."""
    a, _ = orgs
    key = "token-" + uuid.uuid4().hex
    status, _, mine = a.call("owner", "POST", "/v1/tokens", {}, headers={"Idempotency-Key": key})
    assert status == 201, mine
    status, _, got = a.call("admin", "POST", "/v1/tokens", {}, headers={"Idempotency-Key": key})
    assert status == 422 and got["error"]["code"] == "idempotency_mismatch", got
    assert mine["token"] not in json.dumps(got)
    status, _, again = a.call("owner", "POST", "/v1/tokens", {}, headers={"Idempotency-Key": key})
    assert status == 201 and again["token"] == mine["token"]      # the owner's own retry


def test_an_sdk_key_in_use_shows_when_it_was_last_used(server, orgs):
    """last_used_at of an SDK key is stamped when a gateway looks the key up for a
    request, and shown by the API."""
    a, _ = orgs
    path = "/v1/projects/%s/sdk-keys" % a.project
    status, _, made = a.call("admin", "POST", path, {"name": "used"})
    assert status == 201 and made["last_used_at"] is None, made
    status, _, body = post_events(server, {"event_id": uuid.uuid4().hex, "name": "x"},
                                  key=made["key"])
    assert status == 202, body
    keys = {k["key_id"]: k for k in a.call("viewer", "GET", path + "?limit=200")[2]["data"]}
    assert keys[made["key_id"]]["last_used_at"] is not None, keys[made["key_id"]]


def test_times_always_have_microseconds(server, orgs):
    """Times are RFC 3339 in UTC with six fraction digits, also when PostgreSQL leaves
    trailing zeros out (or the whole fraction, for a time on the second)."""
    import re
    a, _ = orgs
    status, _, got = a.call("owner", "POST", "/v1/tokens", {"expires_at": "2031-01-02T03:04:05Z"})
    assert status == 201, got
    assert got["expires_at"] == "2031-01-02T03:04:05.000000Z", got
    status, _, got = a.call("owner", "POST", "/v1/tokens", {"expires_at": "2031-01-02T03:04:05.12Z"})
    assert got["expires_at"] == "2031-01-02T03:04:05.120000Z", got
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z", got["created_at"]), got


def test_a_nul_in_the_query_and_an_encoded_body_are_refused(server, orgs):
    """A %00 in a query value would cut the value short on the way (name=purchase%00xyz
    filtering as purchase): 400. A Content-Encoding the partner API does not decode is
    415, not a body read as if it were plain."""
    a, _ = orgs
    base = "/v1/projects/%s/events" % a.project
    for query in ("?name=purchase%00xyz", "?user_id=u1%00zzz", "?na%00me=x"):
        status, _, got = a.call("viewer", "GET", base + query)
        assert status == 400 and got["error"]["code"] == "bad_query", (query, got)
    for encoding in ("gzip", "br"):
        status, _, got = a.call("admin", "POST", "/v1/projects", {"name": "plain"},
                                headers={"Content-Encoding": encoding})
        assert status == 415 and got["error"]["code"] == "unsupported_encoding", got


def test_an_encoded_nul_or_slash_in_the_path_is_refused(server, orgs):
    """libmicrohttpd decodes the path and cut it at an encoded NUL: DELETE of a
    project's layer with P%00 in the path deleted the project. A %00 or %2F in the path
    is 400, the connection closed, and nothing is done."""
    a, _ = orgs
    status, _, body = a.call("owner", "POST", "/v1/projects", {"name": "kept"})
    assert status == 201, body
    project = body["project_id"]
    for method, path in (("DELETE", "/v1/projects/%s%%00/layers/meta" % project),
                         ("DELETE", "/v1/projects/%s%%00/sdk-keys/%s" % (project, a.key_id)),
                         ("DELETE", "/v1/members/%s%%00x" % a.members["viewer"]),
                         ("GET", "/v1/projects%%2F%s" % project),
                         ("GET", "/v1/organization%%2f")):
        status, headers, got = a.call("owner", method, path)
        assert status == 400 and got["error"]["code"] == "malformed", (path, got)
        assert headers.get("connection") == "close", headers
    assert a.call("owner", "GET", "/v1/projects/%s" % project)[0] == 200
    assert a.call("owner", "GET", "/v1/members/%s" % a.members["viewer"])[0] == 200
    status, _, got = post_events(server, {"event_id": "after-an-encoded-path", "name": "x"},
                                 key=a.sdk_key)
    assert status == 202, got


def test_a_page_of_large_items_is_cut_to_fit_and_continues_by_cursor(server, orgs):
    """Ten ads with ~1 MiB of metadata each are more than one answer can carry to the
    gateway (8 MiB): the list answered nothing and the client waited 30 s for a 503.
    A page now holds as many items as fit in about 4 MiB, and next_cursor goes on."""
    a, _ = orgs
    made = set()
    for i in range(10):
        status, _, body = a.call("owner", "POST", "/v1/ads-content",
                                 {"kind": "bulk_pages", "title": "big %d" % i,
                                  "metadata": {"blob": "x" * 1000000}})
        assert status == 201, body
        made.add(body["ad_content_id"])
    seen, cursor, pages = [], None, 0
    while True:
        query = "?kind=bulk_pages&limit=10" + ("&cursor=" + cursor if cursor else "")
        started = time.monotonic()
        status, _, body = a.call("viewer", "GET", "/v1/ads-content" + query)
        assert status == 200, (status, body if not isinstance(body, bytes) else body[:200])
        assert time.monotonic() - started < 10
        pages += 1
        assert 1 <= len(body["data"]) <= 4, len(body["data"])
        seen += [item["ad_content_id"] for item in body["data"]]
        cursor = body["next_cursor"]
        if not cursor:
            break
    assert pages >= 3 and len(seen) == 10 and set(seen) == made
    for ad in made:
        assert a.call("owner", "DELETE", "/v1/ads-content/%s" % ad)[0] == 204


def test_a_cursor_works_only_for_the_list_that_gave_it(server, orgs):
    """A cursor of the members list is refused by the projects list, and a cursor of
    organization A's list by the same list of organization B (400 bad_cursor)."""
    a, b = orgs
    status, _, page = a.call("viewer", "GET", "/v1/members?limit=1")
    assert status == 200 and page["next_cursor"], page
    cursor = page["next_cursor"]
    assert a.call("viewer", "GET", "/v1/members?limit=1&cursor=" + cursor)[0] == 200
    status, _, got = a.call("viewer", "GET", "/v1/projects?limit=1&cursor=" + cursor)
    assert status == 400 and got["error"]["code"] == "bad_cursor", got
    status, _, got = b.call("viewer", "GET", "/v1/members?limit=1&cursor=" + cursor)
    assert status == 400 and got["error"]["code"] == "bad_cursor", got
    # one made up from a real one, another position under the same list's tag, too
    plain = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
    kind, when, rest = plain.split(".", 2)
    forged = "%s.%d.%s" % (kind, int(when) + 1, rest)
    forged = base64.urlsafe_b64encode(forged.encode()).decode().rstrip("=")
    status, _, got = a.call("viewer", "GET", "/v1/members?limit=1&cursor=" + forged)
    assert status == 400 and got["error"]["code"] == "bad_cursor", got


def test_a_body_on_a_route_that_takes_none_is_refused(server, orgs):
    """A route that reads no body says so (400) rather than ignore one; an empty JSON
    object, which some clients send with every PUT or DELETE, is nothing."""
    a, _ = orgs
    ad = a.new_ad()
    link = "/v1/projects/%s/ads-content/%s" % (a.project, ad)
    status, _, got = a.call("admin", "PUT", link, {"x": 1})
    assert status == 400 and got["error"]["code"] == "bad_request", got
    status, _, got = a.call("admin", "PUT", link, b"garbage", headers={"Content-Type": "text/plain"})
    assert status == 400, got
    status, _, got = a.call("admin", "PUT", link, b"{}", headers={"Content-Type": "text/plain"})
    assert status == 400 and got["error"]["code"] == "bad_request", got
    status, _, got = a.call("admin", "PUT", link, {})
    assert status in (200, 201), got
    status, _, got = a.call("admin", "DELETE", "/v1/ads-content/" + ad, b"garbage",
                            headers={"Content-Type": "text/plain"})
    assert status == 400, got
    assert a.call("admin", "DELETE", "/v1/ads-content/" + ad)[0] == 204


def test_a_401_says_how_to_authenticate(server, orgs):
    """Every 401, of the partner API and of SDK ingest, carries WWW-Authenticate: Bearer
    (RFC 9110)."""
    status, headers, _ = api_call(server, "GET", "/v1/projects", token="lya_nope")
    assert status == 401 and headers.get("www-authenticate") == "Bearer", headers
    status, headers, _ = api_call(server, "GET", "/v1/projects")
    assert status == 401 and headers.get("www-authenticate") == "Bearer", headers
    status, headers, _ = api_call(server, "POST", "/l/events", body={"event_id": "e", "name": "x"})
    assert status == 401 and headers.get("www-authenticate") == "Bearer", headers


def test_a_member_email_with_unicode_space_is_refused(server, orgs):
    """'no spaces' holds beyond ASCII: a no-break space, a line separator or a C1
    control in a member's email is refused (422); letters beyond ASCII are fine."""
    a, _ = orgs
    for email in ("a\u00a0b@example.test", "a\u2028b@example.test", "a\u0085b@example.test",
                  "a@exa\u3000mple.test"):
        status, _, got = a.call("owner", "POST", "/v1/members", {"email": email, "role": "viewer"})
        assert status == 422 and got["error"]["field"] == "email", (email, got)
    status, _, got = a.call("owner", "POST", "/v1/members",
                            {"email": "zoë-%s@exämple.test" % uuid.uuid4().hex[:6], "role": "viewer"})
    assert status == 201, got


def test_idempotency_key(server, orgs):
    a, b = orgs
    key = "create-" + uuid.uuid4().hex
    body = {"name": "Idempotent app"}
    first = a.call("admin", "POST", "/v1/projects", body, headers={"Idempotency-Key": key})
    again = a.call("admin", "POST", "/v1/projects", body, headers={"Idempotency-Key": key})
    assert first[0] == again[0] == 201
    assert first[2] == again[2]
    assert first[1]["location"] == again[1]["location"] == "/v1/projects/" + first[2]["project_id"]
    cur = server.db.cursor()
    cur.execute("SELECT count(*) FROM projects WHERE org_id = %s AND name = 'Idempotent app'", (a.id,))
    assert cur.fetchone()[0] == 1
    status, _, got = a.call("admin", "POST", "/v1/projects", {"name": "Other"}, headers={"Idempotency-Key": key})
    assert status == 422 and got["error"]["code"] == "idempotency_mismatch"
    status, _, got = a.call("admin", "POST", "/v1/ads-content", body, headers={"Idempotency-Key": key})
    assert status == 422
    # keys are per organization
    status, _, got = b.call("admin", "POST", "/v1/projects", body, headers={"Idempotency-Key": key})
    assert status == 201 and got["project_id"] != first[2]["project_id"]
    # a shown-once secret is replayed to the retry, and stored only sealed
    key = "key-" + uuid.uuid4().hex
    path = "/v1/projects/%s/sdk-keys" % a.project
    one = a.call("admin", "POST", path, {"name": "retry"}, headers={"Idempotency-Key": key})
    two = a.call("admin", "POST", path, {"name": "retry"}, headers={"Idempotency-Key": key})
    assert one[0] == two[0] == 201 and one[2]["key"] == two[2]["key"]
    cur.execute("SELECT response_body FROM api_idempotency WHERE idempotency_key = %s", (key,))
    stored = cur.fetchone()[0]
    assert one[2]["key"] not in stored and "retry" not in stored
    # a failed request stores nothing: the key can be used again
    key = "fail-" + uuid.uuid4().hex
    status, _, _ = a.call("admin", "POST", "/v1/projects", {"name": ""}, headers={"Idempotency-Key": key})
    assert status == 422
    status, _, _ = a.call("admin", "POST", "/v1/projects", {"name": "ok"}, headers={"Idempotency-Key": key})
    assert status == 201


def test_pagination_walks_newest_first(server, orgs):
    a, _ = orgs
    made = [a.new_ad() for _ in range(7)]
    seen, cursor, pages = [], None, 0
    while True:
        path = "/v1/ads-content?limit=3" + ("&cursor=" + cursor if cursor else "")
        status, _, got = a.call("viewer", "GET", path)
        assert status == 200 and len(got["data"]) <= 3
        seen += [x["ad_content_id"] for x in got["data"]]
        pages += 1
        cursor = got["next_cursor"]
        if not cursor:
            break
    assert len(seen) == len(set(seen))
    assert seen[:7] == made[::-1]
    status, _, got = a.call("viewer", "GET", "/v1/ads-content?limit=200")
    assert [x["ad_content_id"] for x in got["data"]] == seen and pages == -(-len(seen) // 3)
    status, _, got = a.call("viewer", "GET", "/v1/ads-content")
    assert len(got["data"]) == min(50, len(seen))


# ----------------------------------------------------------------------------------------
# Members and roles

def test_member_rules(server, orgs):
    a, _ = orgs
    owner = a.members["owner"]
    status, _, got = a.call("owner", "PATCH", "/v1/members/" + owner, {"role": "admin"})
    assert status == 409 and got["error"]["code"] == "last_owner"
    status, _, got = a.call("owner", "DELETE", "/v1/members/" + owner)
    assert status == 409 and got["error"]["code"] == "last_owner"
    status, _, got = a.call("owner", "POST", "/v1/members", {"email": "OWNER@alpha.test", "role": "viewer"})
    assert status == 409 and got["error"]["code"] == "conflict"
    # ignoring case beyond ASCII too
    status, _, got = a.call("owner", "POST", "/v1/members", {"email": "ünï@exämple.test", "role": "viewer"})
    assert status == 201, got
    status, _, got = a.call("owner", "POST", "/v1/members", {"email": "ÜNÏ@EXÄMPLE.TEST", "role": "viewer"})
    assert status == 409 and got["error"]["code"] == "conflict", got
    # admins manage only below admin
    status, _, got = a.call("admin", "POST", "/v1/members", {"email": "o2@alpha.test", "role": "owner"})
    assert status == 403
    status, _, got = a.call("admin", "POST", "/v1/members", {"email": "a2@alpha.test", "role": "admin"})
    assert status == 403
    for method, body in (("PATCH", {"role": "viewer"}), ("DELETE", None)):
        status, _, got = a.call("admin", method, "/v1/members/" + owner, body)
        assert status == 403, got
    viewer = a.new_member("viewer")
    status, _, got = a.call("admin", "PATCH", "/v1/members/" + viewer, {"role": "editor"})
    assert status == 200 and got["role"] == "editor"
    status, _, got = a.call("admin", "PATCH", "/v1/members/" + viewer, {"role": "admin"})
    assert status == 403
    status, _, got = a.call("admin", "PATCH", "/v1/members/" + a.members["admin"], {"display_name": "Me"})
    assert status == 200 and got["display_name"] == "Me"
    status, _, got = a.call("admin", "PATCH", "/v1/members/" + a.members["admin"], {"role": "owner"})
    assert status == 403
    status, _, got = a.call("admin", "PATCH", "/v1/members/" + viewer, {"email": "new@alpha.test"})
    assert status == 422 and got["error"]["field"] == "email"
    status, _, got = a.call("admin", "POST", "/v1/tokens", {"member_id": owner})
    assert status == 403
    status, _, got = a.call("admin", "DELETE", "/v1/tokens/" + a.token_ids["owner"])
    assert status == 403
    # a second owner; then the first may step down, but not the last
    second = a.new_member("owner")
    status, _, got = a.call("owner", "PATCH", "/v1/members/" + second, {"role": "admin"})
    assert status == 200
    status, _, got = a.call("owner", "PATCH", "/v1/members/" + second, {"role": "owner"})
    assert status == 200
    assert a.call("owner", "DELETE", "/v1/members/" + second)[0] == 204
    status, _, got = a.call("viewer", "GET", "/v1/me")
    assert got["role"] == "viewer" and got["permissions"] == ["read"]
    status, _, got = a.call("viewer", "GET", "/v1/roles")
    assert [r["role"] for r in got["data"]] == ROLES
    assert got["data"][0]["permissions"] == ["read", "content.write", "project.write",
                                             "member.write", "token.write", "org.write"]


# ----------------------------------------------------------------------------------------
# Project layers: secrets write-only, sealed for the relay

def open_secret(server, project, layer):
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM
    with open(os.path.join(server.data_dir, "master.key")) as f:
        key = bytes.fromhex(f.read().strip())
    cur = server.db.cursor()
    cur.execute("""SELECT secret_ciphertext, secret_key_id, secret_key_version, secret_names, config,
                          enabled
                     FROM project_layers WHERE project_id = %s AND layer = %s""", (project, layer))
    sealed, key_id, version, names, config, enabled = cur.fetchone()
    sealed = bytes(sealed)
    plain = AESGCM(key).decrypt(sealed[:12], sealed[12:], ("project_layers/%s/%s" % (project, layer)).encode())
    return json.loads(plain), key_id, version, names, config, enabled


def test_a_layer_set_at_the_same_moment_is_replaced_not_a_conflict(server, orgs):
    """PUT sets or replaces: a layer another request made since this one looked (here an
    insert held open by the test) is updated, 200, not 409 "this already exists"."""
    import threading
    a, _ = orgs
    project = a.new_project()
    other = db_connect(server)
    other.autocommit = False
    cur = other.cursor()
    cur.execute("INSERT INTO project_layers (org_id, project_id, layer, enabled, config)"
                " VALUES (%s, %s, 'apple_search_ads', false, '{}')", (a.id, project))
    answer = []
    put = threading.Thread(target=lambda: answer.append(a.call(
        "admin", "PUT", "/v1/projects/%s/layers/apple_search_ads" % project, {"enabled": True})))
    put.start()
    time.sleep(1.0)                     # the PUT looked, found nothing, and waits to insert
    other.commit()
    other.close()
    put.join(30)
    status, _, body = answer[0]
    assert status == 200 and body["enabled"] is True, body


def test_a_stuck_request_holds_neither_other_tenants_nor_sdk_key_lookups(server, orgs):
    """Partner API requests are served by several workers, SDK key lookups beside them,
    and one token holds at most all workers but one: five requests of one token stuck
    behind a lock (here on ads_content, held by the test) leave another organization's
    requests and a new SDK key's first events alone, and are answered themselves once
    the lock goes."""
    import threading
    a, b = orgs
    status, _, got = a.call("admin", "POST", "/v1/projects/%s/sdk-keys" % a.project,
                            {"name": "fresh"})
    assert status == 201, got
    fresh_key = got["key"]
    stuck = []
    waiters = [threading.Thread(target=lambda: stuck.append(
        a.call("viewer", "GET", "/v1/ads-content"))) for _ in range(5)]
    with held(server, "LOCK TABLE ads_content IN ACCESS EXCLUSIVE MODE"):
        for waiter in waiters:
            waiter.start()
        wait_for_lock_waits(server.db, "layers_api", 3, "the requests did not wait for the lock")
        started = time.monotonic()
        status, _, body = b.call("viewer", "GET", "/v1/projects")
        assert status == 200, body
        status, _, body = post_events(server, {"event_id": "fresh-" + uuid.uuid4().hex,
                                               "name": "app_open"}, key=fresh_key)
        assert status == 202, body
        assert time.monotonic() - started < 5
        assert lock_waits(server.db, "layers_api") == 3, \
            "one token held more than all workers but one"
        assert not stuck, "a stuck request was answered while the lock was held"
    for waiter in waiters:
        waiter.join(30)
    assert len(stuck) == 5 and all(answer[0] == 200 for answer in stuck), stuck


def test_a_held_key_or_token_row_stalls_neither_lookups_nor_requests(server, orgs):
    """Stamping last_used_at never waits for the row: with an SDK key's row and an API
    token's row held by another transaction (a project being deleted, a revocation, an
    administrator's session), the key's events, readiness, the token's requests and
    other organizations' requests are all answered at once."""
    a, b = orgs
    status, _, got = a.call("admin", "POST", "/v1/projects/%s/sdk-keys" % a.project,
                            {"name": "held"})
    assert status == 201, got
    key, key_id = got["key"], got["key_id"]
    status, _, got = a.call("owner", "POST", "/v1/tokens",
                            {"member_id": a.members["viewer"], "name": "held"})
    assert status == 201, got
    token, token_id = got["token"], got["token_id"]
    cur = server.db.cursor()
    cur.execute("UPDATE api_tokens SET last_used_at = now () - interval '2 minutes'"
                " WHERE token_id = %s", (token_id,))
    with held(server, "SELECT 1 FROM sdk_keys WHERE key_id = %s FOR UPDATE", (key_id,)) as locker:
        locker.cursor().execute("SELECT 1 FROM api_tokens WHERE token_id = %s FOR UPDATE",
                                (token_id,))
        started = time.monotonic()
        status, _, body = post_events(server, {"event_id": "held-" + uuid.uuid4().hex,
                                               "name": "app_open"}, key=key, timeout=10)
        assert status == 202, body
        assert http("GET", server.base + "/readyz", timeout=10)[0] == 200
        status, _, body = a.call(None, "GET", "/v1/me", token=token)
        assert status == 200, body
        status, _, body = b.call("viewer", "GET", "/v1/projects")
        assert status == 200, body
        assert time.monotonic() - started < 4
    # the stamp skipped the held row; the next request after the lock stamps it
    assert a.call(None, "GET", "/v1/me", token=token)[0] == 200
    cur.execute("SELECT last_used_at > now () - interval '1 minute' FROM api_tokens"
                " WHERE token_id = %s", (token_id,))
    assert cur.fetchone()[0] is True


def test_an_idempotency_key_in_use_by_a_running_request_gets_409_at_once(server, orgs):
    """A retry with the Idempotency-Key of a request still running (here held by a lock
    on ads_content) is told 409 idempotency_conflict at once, not made to wait for the
    first one (holding a worker); once that one is done, the retry gets its answer."""
    import threading
    a, _ = orgs
    key = "in-use-" + uuid.uuid4().hex
    ad = {"kind": "video", "title": "In use", "body": "Wait", "metadata": {}}
    first = []
    thread = threading.Thread(target=lambda: first.append(a.call(
        "editor", "POST", "/v1/ads-content", ad, headers={"Idempotency-Key": key})))
    with held(server, "LOCK TABLE ads_content IN ACCESS EXCLUSIVE MODE"):
        thread.start()
        wait_for_lock_waits(server.db, "layers_api", 1,
                            "the first request did not wait for the lock")
        started = time.monotonic()
        status, _, body = a.call("editor", "POST", "/v1/ads-content", ad,
                                 headers={"Idempotency-Key": key})
        assert status == 409 and body["error"]["code"] == "idempotency_conflict", body
        assert time.monotonic() - started < 3
    thread.join(30)
    status, _, body = first[0]
    assert status == 201, body
    again = a.call("editor", "POST", "/v1/ads-content", ad, headers={"Idempotency-Key": key})
    assert again[0] == 201 and again[2] == body


def test_idempotency_keys_are_forgotten_after_a_day_without_a_request(server, orgs):
    """The store's minutely chore (ly_expire_event_ids) forgets stored answers older than
    24 hours, sealed tokens among them, even for an organization that sends no more
    keyed requests (only those used to clear them)."""
    a, _ = orgs
    cur = server.db.cursor()
    for key, age in (("old-key", "25 hours"), ("young-key", "23 hours")):
        cur.execute("INSERT INTO api_idempotency (org_id, idempotency_key, method, path,"
                    " request_sha256, response_status, response_body, created_at, completed_at)"
                    " VALUES (%s, %s, 'POST', '/v1/tokens', decode (repeat ('ab', 32), 'hex'),"
                    " 201, '{}', now () - %s::interval, now () - %s::interval)",
                    (a.id, key, age, age))
    cur.execute("SELECT ly_expire_event_ids ('8 days', 1000)")
    cur.execute("SELECT idempotency_key FROM api_idempotency WHERE org_id = %s"
                " AND idempotency_key IN ('old-key', 'young-key')", (a.id,))
    assert [r[0] for r in cur.fetchall()] == ["young-key"]


def test_layers_keep_secrets_write_only(server, orgs):
    a, _ = orgs
    project = a.new_project()
    base = "/v1/projects/%s/layers/" % project
    secret = "EAAG" + uuid.uuid4().hex
    status, headers, got = a.call("admin", "PUT", base + "meta",
                                  {"dataset_id": "987654321", "access_token": secret,
                                   "test_event_code": "TEST123", "api_version": "v19.0"})
    assert status == 201 and headers["location"] == base + "meta"
    assert got["secrets"] == {"access_token": "set"} and got["enabled"] is True
    assert got["config"] == {"dataset_id": "987654321", "test_event_code": "TEST123", "api_version": "v19.0"}
    plain, key_id, version, names, config, _ = open_secret(server, project, "meta")
    assert plain == {"access_token": secret} and key_id == "master" and version == 1
    assert names == ["access_token"] and config == got["config"]
    for path in (base + "meta", "/v1/projects/%s/layers" % project):
        status, _, got = a.call("viewer", "GET", path)
        assert status == 200 and secret not in json.dumps(got)
    # without access_token the stored one stays; config is replaced
    updated_at = a.call("viewer", "GET", base + "meta")[2]["secret_updated_at"]
    status, _, got = a.call("admin", "PUT", base + "meta", {"dataset_id": "111", "enabled": False})
    assert status == 200 and got["enabled"] is False and got["config"] == {"dataset_id": "111"}
    assert got["secret_updated_at"] == updated_at
    assert open_secret(server, project, "meta")[0] == {"access_token": secret}
    status, _, got = a.call("admin", "PUT", base + "meta", {"dataset_id": "111", "access_token": "rotated"})
    assert status == 200 and open_secret(server, project, "meta")[0] == {"access_token": "rotated"}
    # tiktok and apple
    status, _, got = a.call("admin", "PUT", base + "tiktok",
                            {"app_id": "7301", "access_token": "tt", "event_map": {"purchase": "CompletePayment"}})
    assert status == 201 and got["config"]["event_map"] == {"purchase": "CompletePayment"}
    # "" and null mean "do not send"; app_name is what the relay sends as app.app_name
    status, _, got = a.call("admin", "PUT", base + "tiktok",
                            {"app_id": "7301", "app_name": "Example Ünïcode App" + "é" * 200,
                             "event_map": {"app_open": "", "login": None, "purchase": "Purchase"}})
    assert status == 200, got
    assert got["config"]["event_map"] == {"app_open": "", "login": None, "purchase": "Purchase"}
    assert got["config"]["app_name"] == "Example Ünïcode App" + "é" * 200   # 219 characters
    status, _, got = a.call("admin", "PUT", base + "apple_search_ads", {"enabled": True})
    assert status == 201 and got["secrets"] == {} and got["config"] == {}
    # validation names the field
    for layer, body, field in (
            ("meta", {"access_token": "x"}, "dataset_id"),
            ("meta", {"dataset_id": "12ab", "access_token": "x"}, "dataset_id"),
            ("meta", {"dataset_id": "1", "access_token": "has space"}, "access_token"),
            ("meta", {"dataset_id": "1", "access_token": 'EAA"quote'}, "access_token"),
            ("tiktok", {"app_id": "1", "access_token": "tt\\backslash"}, "access_token"),
            ("meta", {"dataset_id": "1", "access_token": 5}, "access_token"),
            ("meta", {"dataset_id": "1", "api_version": "19"}, "api_version"),
            ("meta", {"dataset_id": "1", "test_event_code": "a b"}, "test_event_code"),
            ("meta", {"dataset_id": "1", "pixel": "1"}, "pixel"),
            ("meta", {"dataset_id": "1", "enabled": "yes"}, "enabled"),
            ("tiktok", {"access_token": "x"}, "app_id"),
            ("tiktok", {"app_id": "1", "access_token": "x", "event_map": {"Bad Name": "X"}}, "event_map"),
            ("tiktok", {"app_id": "1", "access_token": "x", "event_map": ["x"]}, "event_map"),
            ("tiktok", {"app_id": "1", "access_token": "x", "event_map": {"a": 5}}, "event_map"),
            ("tiktok", {"app_id": "1", "access_token": "x", "app_name": ""}, "app_name"),
            ("tiktok", {"app_id": "1", "access_token": "x", "app_name": "a\nb"}, "app_name"),
            ("tiktok", {"app_id": "1", "access_token": "x", "app_name": "x" * 256}, "app_name"),
            ("tiktok", {"app_id": "1", "access_token": "x", "app_name": "é" * 256}, "app_name"),
            ("tiktok", {"app_id": "1", "access_token": "x", "app_name": "a\u0085b"}, "app_name"),
            ("tiktok", {"app_id": "1", "access_token": "x", "app_name": 7}, "app_name"),
            ("meta", {"dataset_id": "1", "app_name": "x"}, "app_name"),
            ("apple_search_ads", {"enabled": True, "access_token": "x"}, "access_token")):
        status, _, got = a.call("admin", "PUT", base + layer, body)
        assert status == 422 and got["error"]["field"] == field, (layer, body, got)
    fresh = a.new_project()
    status, _, got = a.call("admin", "PUT", "/v1/projects/%s/layers/meta" % fresh, {"dataset_id": "1"})
    assert status == 422 and got["error"]["field"] == "access_token"
    # If-Match: * asks for a current version: there is none yet (RFC 9110)
    status, _, got = a.call("admin", "PUT", "/v1/projects/%s/layers/meta" % fresh,
                            {"dataset_id": "1", "access_token": "t"}, headers={"If-Match": "*"})
    assert status == 412, got
    status, _, got = a.call("admin", "PUT", base + "snapchat", {"enabled": True})
    assert status == 404
    status, _, got = a.call("admin", "PUT", base + "meta", {"dataset_id": "1"}, headers={"If-Match": '"1"'})
    assert status == 412
    assert a.call("admin", "DELETE", base + "tiktok")[0] == 204
    assert a.call("admin", "GET", base + "tiktok")[0] == 404
    assert secret not in server.log() and "rotated" not in server.log()


# ----------------------------------------------------------------------------------------
# SDK keys, ads content links

def test_sdk_keys_are_shown_once_and_revocable(server, orgs):
    a, _ = orgs
    path = "/v1/projects/%s/sdk-keys" % a.project
    status, _, got = a.call("admin", "POST", path, {"name": "web"})
    assert status == 201 and got["key"].startswith("lys_") and got["key_prefix"] == got["key"][:12]
    key, key_id = got["key"], got["key_id"]
    status, _, listed = a.call("viewer", "GET", path)
    assert key not in json.dumps(listed)
    assert any(k["key_id"] == key_id and k["key_prefix"] == key[:12] for k in listed["data"])
    status, _, got = post_events(server, {"event_id": "k-" + uuid.uuid4().hex, "name": "app_open"}, key=key)
    assert status == 202
    assert a.call("admin", "DELETE", "%s/%s" % (path, key_id))[0] == 204
    # refused at once, though the gateway had just looked the key up
    status, _, got = post_events(server, {"event_id": "k-" + uuid.uuid4().hex, "name": "app_open"}, key=key)
    assert status == 401, got
    listed = a.call("viewer", "GET", path)[2]["data"]
    assert [k["revoked_at"] is not None for k in listed if k["key_id"] == key_id] == [True]
    cur = server.db.cursor()
    cur.execute("SELECT encode(key_sha256, 'hex') FROM sdk_keys WHERE key_id = %s", (key_id,))
    assert cur.fetchone()[0] == hashlib.sha256(key.encode()).hexdigest()
    # revoked behind the gateway's back (SQL, another gateway): refused within its 5 s cache
    status, _, got = a.call("admin", "POST", path, {"name": "other"})
    other, other_id = got["key"], got["key_id"]
    assert post_events(server, {"event_id": "k-" + uuid.uuid4().hex, "name": "x"}, key=other)[0] == 202
    cur.execute("UPDATE sdk_keys SET revoked_at = now () WHERE key_id = %s", (other_id,))
    server.db.commit()
    revoked = time.monotonic()
    while post_events(server, {"event_id": "k-" + uuid.uuid4().hex, "name": "x"}, key=other)[0] == 202:
        assert time.monotonic() - revoked < 6.5, "a revoked SDK key still works"
        time.sleep(0.2)


def test_a_project_change_reaches_the_gateway_at_once(server, orgs):
    """The gateway caches what an SDK key stands for; a change to the key's project made
    through the API (its default country code) applies from the next request, and a
    deleted project's keys are refused at once."""
    a, _ = orgs
    project = a.new_project()
    assert a.call("admin", "PATCH", "/v1/projects/" + project, {"default_country_code": "1"})[0] == 200
    status, _, got = a.call("admin", "POST", "/v1/projects/%s/sdk-keys" % project, {"name": "cc"})
    key = got["key"]
    cur = server.db.cursor()

    def phone_hash():
        event_id = "cc-" + uuid.uuid4().hex
        status, _, got = post_events(server, {"event_id": event_id, "name": "x", "phone": "650 555 1212"},
                                     key=key)
        assert status == 202 and got["accepted"] == 1, got
        cur.execute("SELECT phone_sha256 FROM sdk_events WHERE event_id = %s", (event_id,))
        return cur.fetchone()[0]
    assert phone_hash() == hashlib.sha256(b"16505551212").hexdigest()     # the key is cached now
    assert a.call("admin", "PATCH", "/v1/projects/" + project, {"default_country_code": "44"})[0] == 200
    assert phone_hash() == hashlib.sha256(b"446505551212").hexdigest()
    assert a.call("admin", "DELETE", "/v1/projects/" + project)[0] == 204
    status, _, got = post_events(server, {"event_id": "cc-" + uuid.uuid4().hex, "name": "x"}, key=key)
    assert status == 401, got


def test_ads_content_links(server, orgs):
    a, _ = orgs
    ad, project = a.new_ad(), a.new_project()
    link = "/v1/projects/%s/ads-content/%s" % (project, ad)
    status, _, got = a.call("editor", "PUT", link)
    assert status == 201 and got["project_id"] == project and got["ad_content_id"] == ad
    assert a.call("editor", "PUT", link)[0] == 200
    assert a.call("viewer", "GET", "/v1/ads-content/" + ad)[2]["project_ids"] == [project]
    status, _, got = a.call("viewer", "GET", "/v1/projects/%s/ads-content" % project)
    assert [x["ad_content_id"] for x in got["data"]] == [ad]
    status, _, got = a.call("viewer", "GET", "/v1/ads-content?project_id=" + project)
    assert [x["ad_content_id"] for x in got["data"]] == [ad]
    assert a.call("editor", "DELETE", link)[0] == 204
    assert a.call("editor", "DELETE", link)[0] == 404
    assert a.call("viewer", "GET", "/v1/ads-content/" + ad)[2]["project_ids"] == []


# ----------------------------------------------------------------------------------------
# Events and deliveries

def test_event_properties_come_back_as_stored(server, orgs):
    """Numbers in properties come back as the database stores them: 19.990 as 19.99
    (not jansson's 19.989999999999998), 0.1 as 0.1, and a whole number beyond 64 bits
    (an SDK's 1e19, which jsonb writes as 20 digits) as a number, without losing the
    other properties to a null."""
    a, _ = orgs
    project = a.new_project()
    key = a.call("admin", "POST", "/v1/projects/%s/sdk-keys" % project, {})[2]["key"]
    body = (b'{"event_id": "numbers-1", "name": "purchase", "properties": {"value": 19.990,'
            b' "c": 0.1, "third": 0.30000000000000004, "order": 1e19, "neg": -1e19,'
            b' "big": 1e300, "n": 42, "currency": "EUR"}}')
    status, _, got = post_events(server, body, key=key)
    assert status == 202 and got["accepted"] == 1, got
    status, _, raw = a.call("viewer", "GET", "/v1/projects/%s/events" % project)
    assert status == 200
    [event] = raw["data"]
    props = event["properties"]
    assert props is not None and props["currency"] == "EUR" and props["n"] == 42, event
    assert props["value"] == 19.99 and props["c"] == 0.1 and props["third"] == 0.30000000000000004
    assert props["order"] == 1e19 and props["neg"] == -1e19 and props["big"] == 1e300
    status, headers, body = http("GET", server.base + "/v1/projects/%s/events" % project,
                                 headers={"Authorization": "Bearer " + a.tokens["viewer"]})
    assert b'"value":19.99,' in body or b'"value":19.99}' in body, body
    assert b'"c":0.1,' in body or b'"c":0.1}' in body, body


def test_deep_metadata_is_answered_and_stored_as_sent(server, orgs):
    """Metadata nested deep (a body may nest 2,048 levels, as jansson reads it) is
    stored and answered, in the list too (three levels deeper), without the api actor
    falling over; its reals are stored and answered in their shortest form."""
    a, _ = orgs
    for depth in (62, 100, 900):          # (Python reads ~1,000 levels at most)
        metadata = 19.99
        for _ in range(depth):
            metadata = {"a": metadata}
        status, _, made = a.call("admin", "POST", "/v1/ads-content",
                                 {"kind": "image", "metadata": metadata})
        assert status == 201, (depth, made)
        assert made["metadata"] == metadata
        started = time.monotonic()
        status, _, got = a.call("viewer", "GET", "/v1/ads-content?limit=200")
        assert status == 200 and time.monotonic() - started < 10, (depth, got)
        assert metadata in [c["metadata"] for c in got["data"]]
    status, _, made = a.call("admin", "POST", "/v1/ads-content",
                             {"kind": "image", "metadata": {"r": 19.99, "one": 0.1}})
    assert status == 201, made
    cur = server.db.cursor()
    cur.execute("SELECT metadata::text FROM ads_content WHERE ad_content_id = %s",
                (made["ad_content_id"],))
    stored = cur.fetchone()[0]
    assert "19.99" in stored and "19.98999" not in stored and "0.1000" not in stored, stored


def test_events_newest_first_with_filters_and_hashes_only(server, orgs):
    a, _ = orgs
    project = a.new_project()
    key = a.call("admin", "POST", "/v1/projects/%s/sdk-keys" % project, {})[2]["key"]
    sent = []
    for i in range(6):
        event = {"event_id": "e-%d-%s" % (i, uuid.uuid4().hex[:6]), "name": "purchase" if i % 2 else "app_open",
                 "user_id": "u-%d" % (i % 3), "email": "Person%d@Example.org" % i, "phone": "+1 650 555 12%02d" % i,
                 "attribution_token": "apple-token-%d" % i, "properties": {"value": i}}
        assert post_events(server, event, key=key)[0] == 202
        sent.append(event)
        time.sleep(0.01)
    path = "/v1/projects/%s/events" % project
    status, _, got = a.call("viewer", "GET", path)
    assert status == 200
    assert [e["event_id"] for e in got["data"]] == [e["event_id"] for e in reversed(sent)]
    first = got["data"][0]
    assert first["email_sha256"] == hashlib.sha256(b"person5@example.org").hexdigest()
    assert set(first["device"]) == {"os", "os_version", "model", "brand", "locale", "timezone"}
    assert set(first) >= {"event_time", "received_at", "user_id", "properties", "app", "geo", "consent", "seq"}
    text = json.dumps(got)
    assert "attribution_token" not in text and "apple-token" not in text
    assert "@" not in text and "+1 650" not in text
    # filters
    assert {e["name"] for e in a.call("viewer", "GET", path + "?name=purchase")[2]["data"]} == {"purchase"}
    assert [e["user_id"] for e in a.call("viewer", "GET", path + "?user_id=u-1")[2]["data"]] == ["u-1", "u-1"]
    middle = got["data"][2]["received_at"]
    newer = a.call("viewer", "GET", path + "?from=" + urllib.parse.quote(middle))[2]["data"]
    older = a.call("viewer", "GET", path + "?to=" + urllib.parse.quote(middle))[2]["data"]
    assert [e["event_id"] for e in newer + older] == [e["event_id"] for e in got["data"]]
    assert a.call("viewer", "GET", path + "?from=2999-01-01T00:00:00%2B02:00")[2]["data"] == []
    # pages
    seen, cursor = [], None
    while True:
        page = a.call("viewer", "GET", path + "?limit=4" + ("&cursor=" + cursor if cursor else ""))[2]
        seen += [e["event_id"] for e in page["data"]]
        cursor = page["next_cursor"]
        if not cursor:
            break
    assert seen == [e["event_id"] for e in got["data"]]


def test_a_page_of_events_does_not_sort_the_whole_project(server, orgs):
    """The events list (newest first, by cursor) walks an index: with 100k events, the
    plan of its statement has no sort of the project's rows (which took seconds a page
    at 720k events, while the api actor served nothing else), and pages stay right."""
    a, _ = orgs
    project = a.new_project()
    cur = server.db.cursor()
    cur.execute("""INSERT INTO sdk_events (org_id, project_id, event_id, name, event_time, received_at)
                   SELECT %s, %s, 'bulk-' || i, 'bulk', now (), now () - i * interval '1 ms'
                     FROM generate_series (1, 100000) i""", (a.id, project))
    cur.execute("ANALYZE sdk_events")
    shape = ("SELECT seq FROM sdk_events WHERE project_id = %s {} "
             "ORDER BY received_at DESC, seq DESC LIMIT 101")
    for extra, params in (("", (project,)),
                          ("AND (received_at, seq) < (now () - interval '50 s', 0::bigint)", (project,))):
        cur.execute("EXPLAIN (FORMAT JSON) " + shape.format(extra), params)
        nodes, todo = [], [cur.fetchone()[0][0]["Plan"]]
        while todo:
            node = todo.pop()
            nodes.append((node["Node Type"], node.get("Index Name", "")))
            todo += node.get("Plans", [])
        assert not [n for n in nodes if "Sort" in n[0] or "Seq Scan" in n[0]], nodes
        assert any(n[1].endswith("project_id_received_at_seq_idx") for n in nodes), nodes
    path = "/v1/projects/%s/events?limit=3" % project
    status, _, page = a.call("viewer", "GET", path)
    assert status == 200 and [e["event_id"] for e in page["data"]] == ["bulk-1", "bulk-2", "bulk-3"]
    status, _, page = a.call("viewer", "GET", path + "&cursor=" + page["next_cursor"])
    assert [e["event_id"] for e in page["data"]] == ["bulk-4", "bulk-5", "bulk-6"]


def test_deliveries_filter_and_replay_only_dead_ones(server, orgs):
    a, b = orgs
    ids = a.new_deliveries(["dead", "dead", "delivered", "pending", "skipped", "dead"], destination="meta")
    other = a.new_deliveries(["dead"], destination="tiktok")
    path = "/v1/projects/%s/deliveries" % a.project
    dead = a.call("viewer", "GET", path + "?status=dead&limit=200")[2]["data"]
    assert {d["delivery_id"] for d in dead} >= {ids[0], ids[1], ids[5], other[0]}
    assert all(d["status"] == "dead" for d in dead)
    assert all(d["destination"] == "tiktok"
               for d in a.call("viewer", "GET", path + "?destination=tiktok&limit=200")[2]["data"])
    # replay by id: a delivered id in the list is left alone
    status, _, got = a.call("admin", "POST", path + "/replay", {"delivery_ids": [ids[0], ids[2]]})
    assert status == 200 and got == {"replayed": 1, "delivery_ids": [ids[0]]}
    # replay by destination
    status, _, got = a.call("admin", "POST", path + "/replay", {"destination": "meta"})
    assert status == 200 and set(got["delivery_ids"]) >= {ids[1], ids[5]} and other[0] not in got["delivery_ids"]
    cur = server.db.cursor()
    cur.execute("SELECT delivery_id, status, attempts, reason, next_attempt_at <= now() FROM relay_deliveries"
                " WHERE delivery_id = ANY(%s) ORDER BY delivery_id", (ids + other,))
    rows = {r[0]: r[1:] for r in cur.fetchall()}
    for i in (ids[0], ids[1], ids[5]):
        # pending for a new first attempt, unless a running relay actor took it since
        assert rows[i] == ("pending", 0, "replay", True) or rows[i][0] != "dead" \
            or rows[i][2] != "http_400", rows[i]
    assert rows[ids[2]] == ("delivered", 5, "http_400", True)
    assert rows[ids[3]][:3] == ("pending", 5, "http_400") and rows[ids[3]][3] is False
    assert rows[ids[4]][:3] == ("skipped", 5, "http_400") and rows[other[0]][:3] == ("dead", 5, "http_400")
    status, _, got = a.call("admin", "POST", path + "/replay", {"delivery_ids": "all"})
    assert status == 422 and got["error"]["field"] == "delivery_ids"
    status, _, got = a.call("admin", "POST", path + "/replay", {"destination": "myspace"})
    assert status == 422 and got["error"]["field"] == "destination"
    # org A cannot replay org B's dead letters, even naming their ids
    before = snapshot(server, b.id)
    status, _, got = a.call("admin", "POST", path + "/replay", {"delivery_ids": b.deliveries})
    assert status == 200 and got["replayed"] == 0
    status, _, got = a.call("admin", "POST", "/v1/projects/%s/deliveries/replay" % b.project, {})
    assert status == 404
    assert snapshot(server, b.id) == before


# ----------------------------------------------------------------------------------------
# Content containers and media

def test_container_media_download_is_confined_to_the_media_store(server, orgs):
    a, _ = orgs
    status, _, got = a.call("viewer", "GET", "/v1/content/containers/" + a.container)
    assert status == 200
    item = got["media"][0]
    assert "url" not in item and item["index"] == 0
    assert item["download"] == "/v1/content/containers/%s/media?index=0" % a.container
    status, headers, raw = a.call("viewer", "GET", item["download"])
    assert status == 200 and raw == a.media and headers["content-type"] == "image/png"
    assert a.call("viewer", "GET", item["download"].replace("index=0", "index=1"))[0] == 404
    # a row pointing outside the store, directly or through a symbolic link
    media_root = os.path.join(server.data_dir, "media")
    link = os.path.join(media_root, a.id, "escape.png")
    os.symlink(os.path.join(server.data_dir, "master.key"), link)
    for url in ("file://%s/../master.key" % media_root, "file://" + link,
                "file://" + os.path.join(server.data_dir, "master.key"), "file:///etc/passwd"):
        container, _ = a.new_container(url=url)
        status, _, got = a.call("viewer", "GET", "/v1/content/containers/%s/media" % container)
        assert status == 404, (url, got)
    container, _ = a.new_container(url="s3://bucket/x.png")
    assert a.call("viewer", "GET", "/v1/content/containers/%s/media" % container)[0] == 501
    container, _ = a.new_container(content_type="text/html; charset=utf-8")
    status, headers, _ = a.call("viewer", "GET", "/v1/content/containers/%s/media" % container)
    assert status == 200 and headers["content-type"] == "application/octet-stream"
    status, _, got = a.call("viewer", "GET", "/v1/content/containers?project_id=%s&kind=image&limit=200" % a.project)
    assert a.container in [c["container_id"] for c in got["data"]]


def test_container_media_holds_against_swaps_fifos_and_odd_files(server, orgs):
    """The media route judges the file it opened, not the path it looked at: a directory
    swapped for a symbolic link to the data directory between the two never serves the
    master key; a FIFO is 404 at once (it held the api actor); a media file as large as a
    frame between actors allows is served, a larger one 413 at once; HTML and SVG go out
    as application/octet-stream; RFC 8089 file URLs (localhost, %-escapes) are read."""
    import ctypes
    import threading
    a, _ = orgs
    media_root = os.path.join(server.data_dir, "media", a.id)
    os.makedirs(media_root, exist_ok=True)
    inside = os.path.join(media_root, "race")
    os.makedirs(inside, exist_ok=True)
    with open(os.path.join(inside, "master.key"), "w") as f:
        f.write("INSIDE")
    swapped = os.path.join(media_root, "racelink")
    if not os.path.lexists(swapped):
        os.symlink(server.data_dir, swapped)
    with open(os.path.join(server.data_dir, "master.key")) as f:
        secret = f.read().strip()
    container, _ = a.new_container(url="file://" + os.path.join(inside, "master.key"))
    libc = ctypes.CDLL(None, use_errno=True)
    stop = threading.Event()

    def swap():
        while not stop.is_set():        # renameat2 (RENAME_EXCHANGE): atomic swaps
            libc.renameat2(-100, inside.encode(), -100, swapped.encode(), 2)
    t = threading.Thread(target=swap, daemon=True)
    t.start()
    try:
        answers = [a.call("viewer", "GET", "/v1/content/containers/%s/media" % container)
                   for _ in range(300)]
    finally:
        stop.set()
        t.join()
    leaked = [raw for status, _, raw in answers
              if status == 200 and secret.encode() in (raw if isinstance(raw, bytes) else b"")]
    assert not leaked and {s for s, _, _ in answers} <= {200, 404}, [s for s, _, _ in answers]
    if os.path.islink(inside):          # leave the names as they were
        libc.renameat2(-100, inside.encode(), -100, swapped.encode(), 2)

    fifo = os.path.join(media_root, "pipe.png")
    os.mkfifo(fifo)
    container, _ = a.new_container(url="file://" + fifo)
    started = time.monotonic()
    assert a.call("viewer", "GET", "/v1/content/containers/%s/media" % container)[0] == 404
    assert time.monotonic() - started < 5
    assert a.call("viewer", "GET", "/v1/me")[0] == 200

    big = os.urandom(8_000_000)
    container, _ = a.new_container(data=big)
    status, _, raw = a.call("viewer", "GET", "/v1/content/containers/%s/media" % container)
    assert status == 200 and raw == big
    container, _ = a.new_container(data=os.urandom(8 << 20))
    started = time.monotonic()
    status, _, got = a.call("viewer", "GET", "/v1/content/containers/%s/media" % container)
    assert status == 413 and got["error"]["code"] == "too_large", got
    assert time.monotonic() - started < 5

    for kind in ("text/html", "image/svg+xml", "application/xhtml+xml"):
        container, _ = a.new_container(content_type=kind, data=b"<script>alert(1)</script>")
        status, headers, _ = a.call("viewer", "GET", "/v1/content/containers/%s/media" % container)
        assert status == 200 and headers["content-type"] == "application/octet-stream", kind
    with open(os.path.join(media_root, "a b.png"), "wb") as f:
        f.write(b"spaced")
    for url in ("file://localhost" + os.path.join(media_root, "a b.png"),
                "file://" + os.path.join(media_root, "a%20b.png")):
        container, _ = a.new_container(url=url)
        status, _, raw = a.call("viewer", "GET", "/v1/content/containers/%s/media" % container)
        assert status == 200 and raw == b"spaced", url
    container, _ = a.new_container(url="file://data/media/x.png")     # a host, not a path
    assert a.call("viewer", "GET", "/v1/content/containers/%s/media" % container)[0] == 404
    # an item that is not an object (a bare URL) never shows the store's URL
    container = str(uuid.uuid4())
    cur = server.db.cursor()
    cur.execute("""INSERT INTO content_containers (org_id, project_id, container_id, kind, media)
                   VALUES (%s, %s, %s, 'image', %s)""",
                (a.id, a.project, container, json.dumps(["file:///srv/internal/secret-path.png"])))
    status, _, got = a.call("viewer", "GET", "/v1/content/containers/" + container)
    assert status == 200 and "secret-path" not in json.dumps(got), got
    assert got["media"][0]["index"] == 0
    assert a.call("viewer", "GET", "/v1/content/containers/%s/media" % container)[0] == 404


def test_nothing_secret_reaches_the_log(server, orgs):
    a, b = orgs
    log = server.log()
    for org in (a, b):
        for token in org.tokens.values():
            assert token not in log
        assert org.sdk_key not in log
    assert "EAAsecret" not in log
    assert "ERROR: api:" not in log and "WARNING: api:" not in log
