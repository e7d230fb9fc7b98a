"""The relay end to end: events posted to /l/events reach layers-mock's fakes of Meta,
TikTok and Apple in the shape each network documents, exactly once, or are parked with the
network's reason; faults are retried with backoff, a refused event is isolated, a killed
relay loses nothing, two relays never send the same event, secrets never leak.

The layer settings are written as the admin (the partner API route is tested elsewhere):
the secret is sealed here with AES-256-GCM under the server's master key, exactly as
actors/ly_crypto.c does, with the aad "project_layers/<project_id>/<layer>"."""
import hashlib
import json
import os
import signal
import subprocess
import time
import uuid

import pytest
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from lyserver import (BUILD, Layersd, api_call, binary, db_connect, files_containing, http,
                      post_events)

META_TOKEN = "EAAGm0PX4ZCpsBAL" + uuid.uuid4().hex          # never in a log or the database
TIKTOK_TOKEN = "tt-" + uuid.uuid4().hex + "-secret"
BAD_TOKEN = "bad-" + uuid.uuid4().hex                       # the fakes refuse it
SECRETS = [META_TOKEN, TIKTOK_TOKEN, BAD_TOKEN]
IPHONE = {"os": "iOS", "os_version": "17.1.2", "model": "iPhone15,2", "locale": "en_US",
          "timezone": "America/New_York"}
ANDROID = {"os": "Android", "os_version": "14", "model": "Pixel 8", "locale": "de_DE",
           "timezone": "CET"}
RELAY_ENV = {
    "LAYERS_RELAY_BACKOFF_MS": "150",       # first retry after 75..150 ms
    "LAYERS_RELAY_LEASE_MS": "4000",
    "LAYERS_RELAY_TIMEOUT_MS": "1200",
    "LAYERS_RELAY_APPLE_RETRY_MS": "300",
    "LAYERS_RELAY_POLL_MS": "100",
}


def sha(text):
    return hashlib.sha256(text.encode()).hexdigest()


def wait_for(predicate, timeout=20, interval=0.05, what="condition"):
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(interval)


class Mock:
    """layers-mock on a free port, with helpers for its control API."""

    def __init__(self, log_path):
        self.log = open(log_path, "wb")
        self.proc = subprocess.Popen([os.path.join(BUILD, "layers-mock"), "--listen", "127.0.0.1:0"],
                                     stdout=subprocess.PIPE, stderr=self.log,
                                     stdin=subprocess.DEVNULL)
        line = self.proc.stdout.readline().decode().strip()
        assert line.startswith("listening on http://"), line
        self.base = line.split("listening on ", 1)[1]

    def env(self):
        return {"LAYERS_META_URL": self.base + "/meta",
                "LAYERS_TIKTOK_URL": self.base + "/tiktok",
                "LAYERS_ADSERVICES_URL": self.base + "/apple/api/v1/"}

    def call(self, method, path, body=None):
        data = json.dumps(body).encode() if body is not None else None
        status, _, raw = http(method, self.base + path, body=data,
                              headers={"Content-Type": "application/json"} if data else {})
        assert status < 300, (status, raw)
        return json.loads(raw) if raw else None

    def requests(self, service):
        return self.call("GET", "/_mock/requests?service=" + service)

    def fault(self, **spec):
        return self.call("POST", "/_mock/faults", spec)

    def reset(self):
        self.call("POST", "/_mock/reset")

    def stop(self):
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.log.close()


@pytest.fixture(scope="module")
def mock(tmp_path_factory):
    m = Mock(str(tmp_path_factory.mktemp("mock") / "mock.log"))
    yield m
    m.stop()


@pytest.fixture(scope="module")
def server(mock):
    env = dict(RELAY_ENV)
    env.update(mock.env())
    # one supervised relay (the default is two): tests stop it to build a backlog, or to
    # let relays of their own compete
    with Layersd(env=env, args=["--relay", "1"]) as s:
        s.db = db_connect(s)
        s.org = s.credentials()["org_id"]
        yield s
        s.db.close()
        s.stop()
        check_no_secret(s)


@pytest.fixture(autouse=True)
def clean_mock(mock):
    mock.reset()
    yield
    mock.reset()


def seal(server, project_id, layer, plaintext):
    with open(os.path.join(server.data_dir, "master.key")) as f:
        key = bytes.fromhex(f.read().strip())
    nonce = os.urandom(12)
    aad = f"project_layers/{project_id}/{layer}".encode()
    return nonce + AESGCM(key).encrypt(nonce, plaintext, aad)


def set_layer(server, project_id, layer, config, token=None, enabled=True, plaintext=None):
    """Writes a project_layers row as the admin, the secret sealed like the API does."""
    if plaintext is None and token is not None:
        plaintext = json.dumps({"access_token": token}).encode()
    sealed = seal(server, project_id, layer, plaintext) if plaintext is not None else None
    cur = server.db.cursor()
    cur.execute("""INSERT INTO project_layers (org_id, project_id, layer, enabled, config,
                                               secret_names, secret_ciphertext, secret_key_id,
                                               secret_key_version, secret_updated_at)
                   VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, CASE WHEN %s THEN now () END)
                   ON CONFLICT (project_id, layer) DO UPDATE
                      SET enabled = EXCLUDED.enabled, config = EXCLUDED.config,
                          secret_names = EXCLUDED.secret_names,
                          secret_ciphertext = EXCLUDED.secret_ciphertext,
                          secret_key_id = EXCLUDED.secret_key_id,
                          secret_key_version = EXCLUDED.secret_key_version""",
                (server.org, project_id, layer, enabled, json.dumps(config),
                 ["access_token"] if sealed else [], sealed,
                 "master" if sealed else None, 1 if sealed else None, sealed is not None))


def new_project(server, meta=None, tiktok=None, apple=False, meta_token=META_TOKEN,
                tiktok_token=TIKTOK_TOKEN, app_store_id=None):
    """A project of the demo organization with its own SDK key and layers; returns
    (project_id, sdk_key)."""
    cur = server.db.cursor()
    cur.execute("""INSERT INTO projects (org_id, name, app_store_id) VALUES (%s, 'relay test', %s)
                   RETURNING project_id""", (server.org, app_store_id))
    project = str(cur.fetchone()[0])
    key = "lys_" + uuid.uuid4().hex
    cur.execute("""INSERT INTO sdk_keys (org_id, project_id, name, key_prefix, key_sha256)
                   VALUES (%s, %s, 'relay test', %s, decode (%s, 'hex'))""",
                (server.org, project, key[:12], sha(key)))
    if meta is not None:
        set_layer(server, project, "meta", meta, meta_token)
    if tiktok is not None:
        set_layer(server, project, "tiktok", tiktok, tiktok_token)
    if apple:
        set_layer(server, project, "apple_search_ads", {})
    return project, key


def post(server, key, events):
    status, _, body = post_events(server, {"events": events}, key=key,
                                  headers={"User-Agent": "relay-test"})
    assert status == 202 and body["accepted"] == len(events), body


def deliveries(server, project, destination=None):
    cur = server.db.cursor()
    cur.execute("""SELECT event_id, destination, status, attempts, reason, last_status,
                          last_response, fbtrace_id, request_id, locked_by, delivered_at
                     FROM relay_deliveries WHERE project_id = %s
                      AND (%s::text IS NULL OR destination = %s) ORDER BY delivery_id""",
                (project, destination, destination))
    cols = [d[0] for d in cur.description]
    return {(r[0], r[1]): dict(zip(cols, r)) for r in cur.fetchall()}


def settled(server, project, count=None):
    """Waits until no row of the project is pending or in flight; returns the rows."""
    def done():
        rows = deliveries(server, project)
        if count is not None and len(rows) < count:
            return None
        if rows and all(r["status"] not in ("pending", "in_flight") for r in rows.values()):
            return rows
        return None
    return wait_for(done, what="deliveries to settle")


def sent_events(mock, service):
    """[(request, event)] for every event the fake received, in order."""
    out = []
    for request in mock.requests(service):
        body = request["body"]
        if service == "apple":
            out.append((request, body))
            continue
        for event in body.get("data", []) if isinstance(body, dict) else []:
            out.append((request, event))
    return out


def check_no_secret(server):
    """Neither token appears in any file under the data directory (database files, WAL,
    logs) nor in the relay's database columns."""
    found = files_containing(server.data_dir, [secret.encode() for secret in SECRETS])
    assert not found, "access token found in %s" % [path for path, _ in found]


def event(name, **fields):
    e = {"event_id": str(uuid.uuid4()), "name": name}
    e.update(fields)
    return e


# ---------------------------------------------------------------------------------------
# What each network receives


def extinfo(platform, package="", short="", long="", os_version="", model="", locale="",
            tz_abbr="", tz=""):
    return [platform, package, short, long, os_version, model, locale, tz_abbr,
            "", "", "", "", "", "", "", tz]


def test_meta_receives_documented_shape(server, mock):
    project, key = new_project(server, meta={"dataset_id": "123456789012345",
                                             "test_event_code": "TEST4242"})
    now_ms = int(time.time() * 1000)
    full = event("purchase", timestamp=now_ms - 5000, user_id="u-42",
                 email="  Jane.Doe@Example.com ", phone="+1 (650) 555-1212",
                 device=IPHONE, app={"version": "2.3.1", "build": "231", "package": "com.example.app"},
                 consent={"ads": True, "att": "authorized"},
                 properties={"value": 9.99, "currency": "USD", "content_ids": ["sku-1", "sku-2"]})
    bare = event("app_open", timestamp=now_ms - 1000, device={"os": "Android"})
    denied = event("sign_up", timestamp=now_ms, device=ANDROID, user_id="u-7",
                   consent={"ads": True, "att": "denied"})
    refused = event("purchase", device=IPHONE, email="someone@example.com",
                    consent={"ads": False})
    no_os = event("purchase", email="x@example.com")
    post(server, key, [full, bare, denied, refused, no_os])
    rows = settled(server, project, 5)

    requests = mock.requests("meta")
    assert requests, "Meta received nothing"
    received = {}
    for request in requests:
        assert request["method"] == "POST"
        assert request["path"] == "/meta/v26.0/123456789012345/events"
        assert request["errors"] == [], request["errors"]
        assert request["headers"]["content-type"].startswith("application/json")
        body = request["body"]
        assert body["access_token"] == META_TOKEN
        assert body["test_event_code"] == "TEST4242"
        assert set(body) == {"data", "access_token", "test_event_code"}
        for e in body["data"]:
            received[e["event_id"]] = e
    assert set(received) == {full["event_id"], bare["event_id"], denied["event_id"]}

    assert received[full["event_id"]] == {
        "event_name": "layers_purchase",
        "event_time": (now_ms - 5000) // 1000,
        "event_id": full["event_id"],
        "action_source": "app",
        "user_data": {"em": [sha("jane.doe@example.com")], "ph": [sha("16505551212")],
                      "external_id": [sha("u-42")]},
        "app_data": {"advertiser_tracking_enabled": 1, "application_tracking_enabled": 1,
                     "extinfo": extinfo("i2", "com.example.app", "2.3.1", "231", "17.1.2",
                                        "iPhone15,2", "en_US", "", "America/New_York")},
        "custom_data": {"value": 9.99, "currency": "USD", "content_ids": ["sku-1", "sku-2"]},
    }
    assert received[bare["event_id"]] == {
        "event_name": "layers_app_open",
        "event_time": (now_ms - 1000) // 1000,
        "event_id": bare["event_id"],
        "action_source": "app",
        "user_data": {},
        "app_data": {"advertiser_tracking_enabled": 0, "application_tracking_enabled": 1,
                     "extinfo": extinfo("a2")},
    }
    got = received[denied["event_id"]]
    assert got["user_data"] == {"external_id": [sha("u-7")]}
    assert got["app_data"] == {"advertiser_tracking_enabled": 0, "application_tracking_enabled": 1,
                               "extinfo": extinfo("a2", os_version="14", model="Pixel 8",
                                                  locale="de_DE", tz_abbr="CET", tz="CET")}
    assert "custom_data" not in got

    for e in (full, bare, denied):
        row = rows[(e["event_id"], "meta")]
        assert row["status"] == "delivered" and row["delivered_at"] is not None
        assert row["last_status"] == 200
        assert row["fbtrace_id"] in {r["response"]["fbtrace_id"] for r in requests}
    assert rows[(refused["event_id"], "meta")]["status"] == "skipped"
    assert rows[(refused["event_id"], "meta")]["reason"] == "consent"
    dead = rows[(no_os["event_id"], "meta")]
    assert dead["status"] == "dead" and "device os" in dead["reason"]


def test_android_ads_consent_enables_meta_advertiser_tracking(server, mock):
    """Android has no App Tracking Transparency: an Android event whose user gave ads
    consent goes to Meta with advertiser_tracking_enabled 1 (0 when consent is unknown
    or refused by an ATT value all the same); on iOS only ATT authorized gives 1."""
    project, key = new_project(server, meta={"dataset_id": "42"})
    cases = {
        "consented": (dict(device=ANDROID, consent={"ads": True}), 1),
        "unknown": (dict(device=ANDROID), 0),
        "att denied": (dict(device=ANDROID, consent={"ads": True, "att": "denied"}), 0),
        "ios ads only": (dict(device=IPHONE, consent={"ads": True}), 0),
        "ios authorized": (dict(device=IPHONE, consent={"ads": True, "att": "authorized"}), 1),
    }
    events = {name: event("purchase", **fields) for name, (fields, _) in cases.items()}
    post(server, key, list(events.values()))
    settled(server, project, len(events))
    sent = {e["event_id"]: e for r in mock.requests("meta") for e in r["body"]["data"]}
    for name, (_, flag) in cases.items():
        got = sent[events[name]["event_id"]]["app_data"]["advertiser_tracking_enabled"]
        assert got == flag, (name, got)


def insert_event(server, project, destinations, received_ago="0", **columns):
    """Writes an event and its pending outbox rows as the admin, as the store would have
    (for states SDKs cannot produce: old events, expired tokens, inconsistent consent).
    Returns the event_id."""
    event_id = str(uuid.uuid4())
    cols = {"org_id": server.org, "project_id": project, "event_id": event_id,
            "name": "purchase", "device_os": "Android"}
    cols.update(columns)
    names = ", ".join(cols)
    marks = ", ".join(["%s"] * len(cols))
    given_time = cols.pop("event_time", None)
    names = ", ".join(cols)
    marks = ", ".join(["%s"] * len(cols))
    time_sql = "%s::timestamptz" if given_time else "now () - %s::interval"
    cur = server.db.cursor()
    cur.execute(f"""INSERT INTO sdk_events ({names}, received_at, event_time)
                    VALUES ({marks}, now () - %s::interval, {time_sql})
                    RETURNING seq, received_at""",
                list(cols.values()) + [received_ago, given_time or received_ago])
    seq, received_at = cur.fetchone()
    for destination in destinations:
        cur.execute("""INSERT INTO relay_deliveries (org_id, project_id, event_received_at,
                                                     event_seq, event_id, destination)
                       VALUES (%s, %s, %s, %s, %s, %s)""",
                    (server.org, project, received_at, seq, event_id, destination))
    return event_id


def test_tiktok_receives_documented_shape(server, mock):
    project, key = new_project(server, tiktok={
        "app_id": "7301234567890123456", "test_event_code": "TEST77", "app_name": "Example",
        "event_map": {"level_up": "AchieveLevel", "app_open": ""}}, app_store_id="6444444444")
    now_ms = int(time.time() * 1000)
    full = event("purchase", timestamp=now_ms, user_id="u-42", email="Jane.Doe@Example.com",
                 phone="+44 20 7946 0958", device=IPHONE,
                 app={"version": "2.3.1", "build": "231", "package": "com.example.app"},
                 consent={"ads": True, "att": "authorized"},
                 properties={"value": 19.5, "currency": "EUR", "content_ids": ["sku-9"],
                             "order_id": "o-1"})
    mapped = event("level_up", timestamp=now_ms, device=ANDROID)
    standard = event("sign_up", timestamp=now_ms)
    disabled = event("app_open")                # the project maps it to "" (do not send)
    custom = event("tutorial_skipped")          # no TikTok name
    refused = event("purchase", consent={"ads": False})
    post(server, key, [full, mapped, standard, disabled, custom, refused])
    rows = settled(server, project, 6)

    requests = mock.requests("tiktok")
    received = {}
    for request in requests:
        assert request["path"] == "/tiktok/open_api/v1.3/event/track/"
        assert request["errors"] == [], request["errors"]
        assert request["headers"]["access-token"] == TIKTOK_TOKEN
        assert request["headers"]["content-type"].startswith("application/json")
        body = request["body"]
        assert {k: v for k, v in body.items() if k != "data"} == {
            "event_source": "app", "event_source_id": "7301234567890123456",
            "test_event_code": "TEST77"}
        for e in body["data"]:
            received[e["event_id"]] = e
    assert set(received) == {full["event_id"], mapped["event_id"], standard["event_id"]}
    assert received[full["event_id"]] == {
        "event": "Purchase",
        "event_time": now_ms // 1000,
        "event_id": full["event_id"],
        "user": {"email": sha("jane.doe@example.com"), "phone": sha("+442079460958"),
                 "external_id": sha("u-42"), "att_status": "AUTHORIZED"},
        "app": {"app_id": "6444444444", "app_name": "Example", "app_version": "2.3.1"},
        "properties": {"value": 19.5, "currency": "EUR", "order_id": "o-1",
                       "contents": [{"content_id": "sku-9"}]},
    }
    assert received[mapped["event_id"]]["event"] == "AchieveLevel"
    assert received[mapped["event_id"]]["user"] == {"att_status": "NOT_APPLICABLE"}
    assert received[standard["event_id"]]["event"] == "Registration"
    for e in (full, mapped, standard):
        row = rows[(e["event_id"], "tiktok")]
        assert row["status"] == "delivered" and row["last_status"] == 200
        assert row["request_id"] in {r["response"]["request_id"] for r in requests}
    for e in (disabled, custom):
        assert (rows[(e["event_id"], "tiktok")]["status"],
                rows[(e["event_id"], "tiktok")]["reason"]) == ("skipped", "unmapped")
    assert rows[(refused["event_id"], "tiktok")]["reason"] == "consent"


def test_event_text_reaches_both_networks_intact(server, mock):
    """Strings that need escaping, non-ASCII text, nesting and numbers a double cannot
    hold arrive in each network's body as the app sent them."""
    project, key = new_project(server, meta={"dataset_id": "123456789012345"},
                               tiktok={"app_id": "7301234567890123456"})
    tricky = 'quote " backslash \\ tab \t newline \n bell \u0007 caf\u00e9 \u2028 \U0001F600'
    plain = event("purchase", device=IPHONE, user_id=tricky,
                  app={"version": 'v"1\\', "package": "com.example.app"},
                  properties={"note": tricky, "big": 4611686018427387905,
                              "exact": 0.1, "nested": {"list": [1, "two", None, True, {"k": tricky}]},
                              tricky: "key too"})
    rewritten = event("purchase", device=ANDROID,
                      properties={"content_ids": ["sku-\"1\"", 7], "ttclid": "E.C.P." + tricky,
                                  "note": tricky})
    post(server, key, [plain, rewritten])
    rows = settled(server, project, 4)
    assert {r["status"] for r in rows.values()} == {"delivered"}, rows

    meta = {e["event_id"]: e for r in mock.requests("meta") for e in r["body"]["data"]}
    tiktok = {e["event_id"]: e for r in mock.requests("tiktok") for e in r["body"]["data"]}
    for request in mock.requests("meta") + mock.requests("tiktok"):
        assert request["errors"] == [], request["errors"]
    assert meta[plain["event_id"]]["custom_data"] == plain["properties"]
    assert meta[plain["event_id"]]["user_data"]["external_id"] == [sha(tricky)]
    assert meta[plain["event_id"]]["app_data"]["extinfo"][2] == 'v"1\\'
    assert meta[rewritten["event_id"]]["custom_data"] == rewritten["properties"]
    assert tiktok[plain["event_id"]]["properties"] == plain["properties"]
    assert tiktok[plain["event_id"]]["app"]["app_version"] == 'v"1\\'
    assert "ad" not in tiktok[plain["event_id"]]
    got = tiktok[rewritten["event_id"]]
    assert got["properties"] == {"note": tricky,
                                 "contents": [{"content_id": 'sku-"1"'}, {"content_id": 7}]}
    assert got["ad"] == {"callback": "E.C.P." + tricky}


def test_a_click_id_sent_as_a_number_reaches_tiktok(server, mock):
    """An SDK that sends ttclid as a JSON number: it went nowhere (dropped from the
    properties, no ad.callback)."""
    project, key = new_project(server, tiktok={"app_id": "7301234567890123456"})
    e = event("purchase", device=ANDROID, properties={"ttclid": 123456789, "value": 1})
    post(server, key, [e])
    assert {r["status"] for r in settled(server, project, 1).values()} == {"delivered"}
    [(_, tiktok)] = sent_events(mock, "tiktok")
    assert tiktok["ad"] == {"callback": "123456789"}, tiktok
    assert tiktok["properties"] == {"value": 1}


def test_numbers_beyond_int64_reach_both_networks(server, mock):
    """An SDK's 1e19 comes back from PostgreSQL's jsonb as the integer 10000000000000000000,
    which jansson will not hold as an integer: the properties still reach TikTok (rewritten:
    contents, ad.callback) and Meta whole, each such number as a real and every other
    number as it was, and both deliveries are delivered."""
    project, key = new_project(server, meta={"dataset_id": "123456789012345"},
                               tiktok={"app_id": "7301234567890123456"})
    properties = {"session_ms": 1e19, "huge": 1e300, "below": -1e19,
                  "exact": 4611686018427387905, "value": 9.99, "currency": "USD",
                  "content_ids": ["sku-1", 7], "ttclid": "E.C.P.big"}
    big = event("purchase", device=ANDROID, properties=properties)
    post(server, key, [big])
    rows = settled(server, project, 2)
    assert {r["status"] for r in rows.values()} == {"delivered"}, rows

    for request in mock.requests("meta") + mock.requests("tiktok"):
        assert request["errors"] == [], request["errors"]
    [(_, meta)] = sent_events(mock, "meta")
    [(_, tiktok)] = sent_events(mock, "tiktok")
    assert meta["custom_data"] == properties
    assert tiktok["properties"] == {
        "session_ms": 1e19, "huge": 1e300, "below": -1e19, "exact": 4611686018427387905,
        "value": 9.99, "currency": "USD",
        "contents": [{"content_id": "sku-1"}, {"content_id": 7}]}
    assert type(tiktok["properties"]["exact"]) is int
    assert tiktok["ad"] == {"callback": "E.C.P.big"}


def test_tiktok_app_id_is_the_app_store_id_on_ios(server, mock):
    """TikTok's app.app_id is the App Store id for iOS apps and the package name for
    Android apps: iOS events carry the project's app_store_id (their package only when
    the project has none), Android events their package."""
    project, key = new_project(server, tiktok={"app_id": "7301234567890123456"},
                               app_store_id="6444444444")
    bare, bare_key = new_project(server, tiktok={"app_id": "7301234567890123456"})
    package = {"version": "2.3.1", "package": "com.example.app"}
    store = {"app_id": "6444444444", "app_version": "2.3.1"}
    cases = {
        "ios": (key, dict(device=IPHONE, app=package), store),
        "ipados": (key, dict(device=dict(IPHONE, os="iPadOS"), app=package), store),
        "ios without package": (key, dict(device=IPHONE), {"app_id": "6444444444"}),
        "android": (key, dict(device=ANDROID, app=package),
                    {"app_id": "com.example.app", "app_version": "2.3.1"}),
        "android without package": (key, dict(device=ANDROID), {}),
        "ios, no app_store_id": (bare_key, dict(device=IPHONE, app=package),
                                 {"app_id": "com.example.app", "app_version": "2.3.1"}),
    }
    events = {name: event("purchase", **fields) for name, (_, fields, _) in cases.items()}
    for sdk_key in (key, bare_key):
        post(server, sdk_key, [events[name] for name, case in cases.items() if case[0] == sdk_key])
    settled(server, project, 5)
    settled(server, bare, 1)
    sent = {e["event_id"]: e for _, e in sent_events(mock, "tiktok")}
    for name, (_, _, app) in cases.items():
        assert sent[events[name]["event_id"]]["app"] == app, name

    # set with the partner API, it reaches the next events
    status, _, got = api_call(server, "PATCH", "/v1/projects/" + bare,
                              token=server.credentials()["api_token"],
                              body={"app_store_id": "6555555555"})
    assert status == 200, got
    later = event("purchase", device=IPHONE, app=package)
    post(server, bare_key, [later])
    settled(server, bare, 2)
    sent = {e["event_id"]: e for _, e in sent_events(mock, "tiktok")}
    assert sent[later["event_id"]]["app"] == {"app_id": "6555555555", "app_version": "2.3.1"}


def test_tiktok_att_status_only_where_app_tracking_transparency_exists(server, mock):
    """user.att_status is NOT_APPLICABLE on Android and on iOS before 14 (no App Tracking
    Transparency there, whatever consent.att says); on iOS 14 and later it is consent.att,
    and left out when the event does not say."""
    project, key = new_project(server, tiktok={"app_id": "7301234567890123456"})
    old_iphone = dict(IPHONE, os_version="13.7")
    cases = {
        "android, att denied": (dict(device=ANDROID, consent={"ads": True, "att": "denied"}),
                                "NOT_APPLICABLE"),
        "android": (dict(device=ANDROID), "NOT_APPLICABLE"),
        "ios 13, att denied": (dict(device=old_iphone, consent={"att": "denied"}),
                               "NOT_APPLICABLE"),
        "ios 13": (dict(device=old_iphone), "NOT_APPLICABLE"),
        "ios 17, authorized": (dict(device=IPHONE, consent={"att": "authorized"}), "AUTHORIZED"),
        "ipados 14, restricted": (dict(device=dict(IPHONE, os="iPadOS", os_version="14.0"),
                                       consent={"att": "restricted"}), "RESTRICTED"),
        "ios, version unknown": (dict(device={"os": "iOS"}, consent={"att": "not_determined"}),
                                 "NOT_DETERMINED"),
        "ios 17, att unknown": (dict(device=IPHONE, consent={"ads": True}), None),
        "os unknown, att unknown": (dict(), None),
    }
    events = {name: event("purchase", **fields) for name, (fields, _) in cases.items()}
    post(server, key, list(events.values()))
    settled(server, project, len(events))
    sent = {e["event_id"]: e for _, e in sent_events(mock, "tiktok")}
    for name, (_, status) in cases.items():
        assert sent[events[name]["event_id"]]["user"].get("att_status") == status, name


def test_apple_attribution(server, mock):
    project, key = new_project(server, apple=True)
    tokens = {kind: f"{kind}{uuid.uuid4().hex}" for kind in
              ("tok-", "noattr-", "notyet-2-", "notyet-5-", "bad-")}
    events = {kind: event("install", user_id="u-" + kind, attribution_token=token)
              for kind, token in tokens.items()}
    plain = event("install")                    # no token: no Apple delivery at all
    post(server, key, list(events.values()) + [plain])
    expired = insert_event(server, project, ["apple_search_ads"], received_ago="25 hours",
                           attribution_token="tok-late")
    rows = settled(server, project, 6)
    assert (plain["event_id"], "apple_search_ads") not in rows

    requests = mock.requests("apple")
    by_token = {}
    for request in requests:
        assert request["method"] == "POST" and request["path"] == "/apple/api/v1/"
        assert request["headers"]["content-type"].startswith("text/plain")
        by_token.setdefault(request["body"], []).append(request)
    assert "tok-late" not in by_token           # its 24 hours were over: never asked
    assert len(by_token[tokens["notyet-2-"]]) == 3      # 404, 404, 200
    assert len(by_token[tokens["notyet-5-"]]) == 3      # 404 three times: given up
    gaps = [b["time_usec"] - a["time_usec"] for a, b in
            zip(by_token[tokens["notyet-2-"]], by_token[tokens["notyet-2-"]][1:])]
    assert all(gap >= 250000 for gap in gaps), gaps      # LAYERS_RELAY_APPLE_RETRY_MS=300

    def row(kind):
        return rows[(events[kind]["event_id"], "apple_search_ads")]
    assert row("tok-")["status"] == "delivered"
    assert row("noattr-")["status"] == "delivered"
    assert (row("notyet-2-")["status"], row("notyet-2-")["attempts"]) == ("delivered", 3)
    assert (row("notyet-5-")["status"], row("notyet-5-")["reason"],
            row("notyet-5-")["last_status"]) == ("dead", "not found", 404)
    assert (row("bad-")["status"], row("bad-")["reason"], row("bad-")["last_status"]) == \
        ("dead", "invalid token", 400)
    late = rows[(expired, "apple_search_ads")]
    assert (late["status"], late["reason"]) == ("dead", "token expired")

    cur = server.db.cursor()
    cur.execute("""SELECT event_id, user_id, attribution, apple_org_id, campaign_id, ad_group_id,
                          keyword_id, ad_id, conversion_type, country_or_region, claim_type, raw
                     FROM attributions WHERE project_id = %s""", (project,))
    found = {r[0]: r[1:] for r in cur.fetchall()}
    assert set(found) == {events[k]["event_id"] for k in ("tok-", "noattr-", "notyet-2-")}
    assert found[events["tok-"]["event_id"]][:10] == (
        "u-tok-", True, 40669820, 542370539, 542317095, 87675432, 542317136, "Download", "US",
        "Click")
    assert found[events["tok-"]["event_id"]][10]["orgId"] == 40669820
    assert found[events["noattr-"]["event_id"]][1:3] == (False, None)
    assert found[events["noattr-"]["event_id"]][10] == {"attribution": False}

    #  Resolved and refused tokens are dropped; a token Apple did not know yet is kept
    #  for a replay within its life; an expired one is dropped.
    cur.execute("SELECT event_id, attribution_token FROM sdk_events WHERE project_id = %s",
                (project,))
    left = {r[0]: r[1] for r in cur.fetchall()}
    for kind in ("tok-", "noattr-", "notyet-2-", "bad-"):
        assert left[events[kind]["event_id"]] is None, kind
    assert left[events["notyet-5-"]["event_id"]] == tokens["notyet-5-"]
    assert left[expired] is None


def test_apple_tokens_go_when_their_rows_end(server, mock):
    """An attribution token is kept only while its row may still use it: a row skipped
    because the Apple layer is off (or gone), or out of its retry window, drops it too."""
    project, _ = new_project(server)                     # no Apple layer
    off = insert_event(server, project, ["apple_search_ads"], attribution_token="tok-off")
    project2, _ = new_project(server, apple=True)
    late = insert_event(server, project2, ["apple_search_ads"],
                        attribution_token="error-" + uuid.uuid4().hex)      # the fake: 500
    cur = server.db.cursor()
    cur.execute("UPDATE relay_deliveries SET created_at = now () - interval '25 hours'"
                " WHERE event_id = %s", (late,))
    rows = settled(server, project, 1)
    assert (rows[(off, "apple_search_ads")]["status"],
            rows[(off, "apple_search_ads")]["reason"]) == ("skipped", "disabled")
    rows = settled(server, project2, 1)
    assert (rows[(late, "apple_search_ads")]["status"],
            rows[(late, "apple_search_ads")]["reason"]) == ("dead", "expired: server error")
    cur.execute("SELECT event_id, attribution_token FROM sdk_events WHERE event_id IN (%s, %s)",
                (off, late))
    assert dict(cur.fetchall()) == {off: None, late: None}


def test_consent_is_honored_even_for_a_pending_row(server, mock):
    project, key = new_project(server, meta={"dataset_id": "42"}, tiktok={"app_id": "7"},
                               apple=True)
    # The store parks these itself ...
    refused = event("purchase", device=IPHONE, consent={"ads": False}, attribution_token="tok-c")
    post(server, key, [refused])
    # ... and the relay refuses a row that says pending for an event without consent.
    sneaky = insert_event(server, project, ["meta", "tiktok", "apple_search_ads"],
                          consent_ads=False, attribution_token="tok-sneaky")
    rows = settled(server, project, 6)
    for event_id in (refused["event_id"], sneaky):
        for destination in ("meta", "tiktok", "apple_search_ads"):
            row = rows[(event_id, destination)]
            assert (row["status"], row["reason"]) == ("skipped", "consent"), row
    for service in ("meta", "tiktok", "apple"):
        assert mock.requests(service) == []
    cur = server.db.cursor()
    cur.execute("SELECT attribution_token FROM sdk_events WHERE event_id = %s", (sneaky,))
    assert cur.fetchone()[0] is None


def test_meta_validation_parks_an_old_event_without_sending_it(server, mock):
    project, key = new_project(server, meta={"dataset_id": "42"})
    old = insert_event(server, project, ["meta"],
                       event_time=time.strftime("%Y-%m-%dT%H:%M:%SZ",
                                                time.gmtime(time.time() - 8 * 86400)))
    good = event("purchase", device=IPHONE)
    post(server, key, [good])
    rows = settled(server, project, 2)
    assert rows[(old, "meta")]["status"] == "dead"
    assert rows[(old, "meta")]["reason"] == "invalid: event_time is more than 7 days old"
    assert rows[(good["event_id"], "meta")]["status"] == "delivered"
    sent = [e["event_id"] for _, e in sent_events(mock, "meta")]
    assert sent == [good["event_id"]]
    [request] = mock.requests("meta")
    assert set(request["body"]) == {"data", "access_token"}    # no test code configured


# ---------------------------------------------------------------------------------------
# Faults: retries, throttling, isolation of a refused event, timeouts, dropped connections


def requests_with(mock, service, event_id):
    """The fake's requests that carried event_id, oldest first."""
    found = []
    for request in mock.requests(service):
        body = request["body"]
        ids = [e.get("event_id") for e in body.get("data", [])] if isinstance(body, dict) else []
        if event_id in ids:
            found.append(request)
    return found


def test_server_errors_are_retried_with_backoff(server, mock):
    project, key = new_project(server, meta={"dataset_id": "42"}, tiktok={"app_id": "7"})
    mock.fault(service="meta", count=2, status=500)
    mock.fault(service="tiktok", count=3, status=503)
    events = [event("purchase", device=IPHONE) for _ in range(3)]
    post(server, key, events)
    rows = settled(server, project, 6)
    for e in events:
        assert rows[(e["event_id"], "meta")]["status"] == "delivered"
        assert rows[(e["event_id"], "meta")]["attempts"] == 3
        assert rows[(e["event_id"], "tiktok")]["status"] == "delivered"
        assert rows[(e["event_id"], "tiktok")]["attempts"] == 4
    for service, tries in (("meta", 3), ("tiktok", 4)):
        sent = requests_with(mock, service, events[0]["event_id"])
        assert [r["status"] for r in sent][-1] == 200
        assert len(sent) == tries, [r["status"] for r in sent]
        # the same events, with the same event_id, each time
        for request in sent:
            assert "test_event_code" not in request["body"]
            assert sorted(e["event_id"] for e in request["body"]["data"]) == \
                sorted(e["event_id"] for e in events)
        # exponential backoff: >= 75 ms, then >= 150 ms, then >= 300 ms (half of each step)
        gaps = [b["time_usec"] - a["time_usec"] for a, b in zip(sent, sent[1:])]
        for attempt, gap in enumerate(gaps):
            assert gap >= 75000 * 2 ** attempt, gaps


def test_throttling_pauses_then_delivers(server, mock):
    project, key = new_project(server, meta={"dataset_id": "42"}, tiktok={"app_id": "7"})
    mock.fault(service="meta", count=1, status=429, headers={"Retry-After": "1"})
    mock.fault(service="meta", count=1, status=400, code=17)        # user request limit
    mock.fault(service="tiktok", count=1, status=200, code=40100)   # too many requests
    events = [event("purchase", device=IPHONE) for _ in range(2)]
    post(server, key, events)
    rows = settled(server, project, 4)
    assert all(r["status"] == "delivered" for r in rows.values()), rows
    meta = requests_with(mock, "meta", events[0]["event_id"])
    assert [r["status"] for r in meta] == [429, 400, 200]
    assert meta[1]["time_usec"] - meta[0]["time_usec"] >= 950000     # Retry-After: 1
    tiktok = requests_with(mock, "tiktok", events[0]["event_id"])
    assert [r["response"]["code"] for r in tiktok] == [40100, 0]


def test_meta_business_use_case_throttle_waits_as_long_as_meta_says(server, mock):
    """Meta answers a rate limit (code 80004 here) without Retry-After; how long the
    block lasts is in X-Business-Use-Case-Usage (estimated_time_to_regain_access, in
    minutes). The relay pauses the pair that long, not its own 1 s backoff."""
    project, key = new_project(server, meta={"dataset_id": "42"})
    usage = json.dumps({"1234567890": [{"type": "ads_management", "call_count": 100,
                                         "total_cputime": 30, "total_time": 28,
                                         "estimated_time_to_regain_access": 2}]})
    mock.fault(service="meta", count=1, status=400, code=80004,
               headers={"X-Business-Use-Case-Usage": usage})
    events = [event("purchase", device=IPHONE)]
    post(server, key, events)
    wait_for(lambda: mock.requests("meta"), what="the throttled request")
    wait_for(lambda: server.db.cursor() and deliveries(server, project)[
        (events[0]["event_id"], "meta")]["status"] == "pending", what="the row back in the queue")
    cur = server.db.cursor()
    cur.execute("SELECT extract (epoch FROM next_attempt_at - now ()) FROM relay_deliveries"
                " WHERE project_id = %s", (project,))
    [(wait,)] = cur.fetchall()
    assert 100 < float(wait) <= 121, wait          # 2 minutes, not a second or two
    cur.execute("SELECT paused_until - now () > interval '100 seconds' FROM relay_pauses"
                " WHERE project_id = %s AND destination = 'meta'", (project,))
    assert cur.fetchone() == (True,)
    # not to be sent in the middle of a later test of this module
    cur.execute("UPDATE relay_deliveries SET status = 'skipped', reason = 'test over'"
                " WHERE project_id = %s AND status = 'pending'", (project,))


def test_one_refused_event_is_isolated_and_parked(server, mock):
    project, key = new_project(server, meta={"dataset_id": "42"}, tiktok={"app_id": "7"})
    events = [event("purchase", device=IPHONE, user_id=f"u-{i}") for i in range(9)]
    bad = events[5]
    mock.fault(service="meta", count=-1, status=400, match=bad["event_id"])
    mock.fault(service="tiktok", count=-1, status=200, code=40002,
               message="Invalid parameters: data[5].user.email", match=bad["event_id"])
    post(server, key, events)
    rows = settled(server, project, 18)
    for service, destination in (("meta", "meta"), ("tiktok", "tiktok")):
        row = rows[(bad["event_id"], destination)]
        assert (row["status"], row["reason"]) == ("dead", "rejected"), row
        assert row["last_status"] in (400, 200)
        assert row["last_response"], row
        delivered_ids = []
        for request in mock.requests(service):
            ids = [e["event_id"] for e in request["body"]["data"]]
            ok = request["status"] == 200 and (service == "meta" or request["response"]["code"] == 0)
            if ok:
                delivered_ids += ids
        assert sorted(delivered_ids) == sorted(e["event_id"] for e in events if e is not bad)
        for e in events:
            if e is not bad:
                assert rows[(e["event_id"], destination)]["status"] == "delivered"
    meta_row = rows[(bad["event_id"], "meta")]
    assert json.loads(meta_row["last_response"])["error"]["code"] == 100
    assert "data[5].user.email" in rows[(bad["event_id"], "tiktok")]["last_response"]


def arrival(request):
    """When the fake received a request (it records the time it answered)."""
    return request["time_usec"] - request["delay_ms"] * 1000


def test_timeouts_are_retried(server, mock):
    project, key = new_project(server, meta={"dataset_id": "42"})
    mock.fault(service="meta", count=1, delay_ms=2500, status=200)   # past the 1.2 s timeout
    events = [event("purchase", device=IPHONE) for _ in range(2)]
    post(server, key, events)
    rows = settled(server, project, 2)
    for e in events:
        row = rows[(e["event_id"], "meta")]
        assert (row["status"], row["attempts"]) == ("delivered", 2)
    # the fake records the slow request once it has answered it, into a closed socket
    wait_for(lambda: len(requests_with(mock, "meta", events[0]["event_id"])) == 2, timeout=5,
             what="both meta requests")
    meta = sorted(requests_with(mock, "meta", events[0]["event_id"]), key=arrival)
    assert meta[0]["delay_ms"] == 2500 and meta[1]["status"] == 200
    # the second try started once the first timed out, not after the fake's 2.5 s
    assert 1.0e6 < arrival(meta[1]) - arrival(meta[0]) < 2.4e6


def test_dropped_connections_are_retried(server, mock):
    """On a relay with no cached connection (libcurl itself sends again when a reused
    connection dies before answering), every drop reaches the relay's retries."""
    project, key = new_project(server, tiktok={"app_id": "7"})
    supervised = server.actors()["relay"]
    os.kill(supervised, signal.SIGSTOP)
    extra = None
    try:
        extra = start_relay(server, mock, "relay-drops.log")
        mock.fault(service="tiktok", count=2, drop=True)
        events = [event("purchase", device=IPHONE) for _ in range(2)]
        post(server, key, events)
        rows = settled(server, project, 2)
    finally:
        if extra:
            stop_relay(*extra)
        os.kill(supervised, signal.SIGCONT)
    for e in events:
        row = rows[(e["event_id"], "tiktok")]
        assert (row["status"], row["attempts"]) == ("delivered", 3)
    sent = sorted(requests_with(mock, "tiktok", events[0]["event_id"]), key=arrival)
    assert [r["dropped"] for r in sent] == [True, True, False]
    gaps = [arrival(b) - arrival(a) for a, b in zip(sent, sent[1:])]
    assert gaps[0] >= 75000 and gaps[1] >= 150000, gaps


def test_permanent_errors_park_the_batch_and_replay_delivers_it(server, mock):
    project, key = new_project(server, meta={"dataset_id": "42"})
    first = event("purchase", device=IPHONE)
    post(server, key, [first])
    settled(server, project, 1)
    set_layer(server, project, "meta", {"dataset_id": "42"}, BAD_TOKEN)
    parked = [event("purchase", device=IPHONE) for _ in range(3)]
    post(server, key, parked)
    rows = settled(server, project, 4)
    for e in parked:
        row = rows[(e["event_id"], "meta")]
        assert (row["status"], row["reason"], row["last_status"]) == ("dead", "auth", 400)
        assert json.loads(row["last_response"])["error"]["code"] == 190
    assert len(mock.requests("meta")) == 2          # one request each: no retry, no split

    # The customer fixes the token; the API's replay puts dead rows back to pending.
    set_layer(server, project, "meta", {"dataset_id": "42"}, META_TOKEN)
    cur = server.db.cursor()
    cur.execute("""UPDATE relay_deliveries SET status = 'pending', attempts = 0,
                          next_attempt_at = now (), reason = 'replay'
                    WHERE project_id = %s AND status = 'dead'""", (project,))
    assert cur.rowcount == 3
    rows = settled(server, project, 4)
    assert all(r["status"] == "delivered" for r in rows.values()), rows
    sent = [e["event_id"] for _, e in sent_events(mock, "meta")]
    assert sent.count(first["event_id"]) == 1       # delivered once, never re-sent
    for e in parked:
        assert sent.count(e["event_id"]) == 2       # refused once, delivered once


def test_many_slow_requests_at_once_are_not_cut_off_while_queued(server, mock):
    """40 projects' events go out together to a slow but healthy plain-http network (0.8 s
    answers, under the 1.2 s timeout). Every request but the first waited for the first
    answer (curl's wait for a connection that might multiplex) or for one of 16
    connections, its timeout running: cut off after the network had taken it, and sent
    twice. Each is sent once now."""
    events = []
    for _ in range(40):
        project, key = new_project(server, meta={"dataset_id": "42"})
        events.append((project, key, event("purchase", device=IPHONE)))
    mock.fault(service="meta", count=40, delay_ms=800)      # latency only: then 200
    for project, key, e in events:
        post(server, key, [e])
    for project, _, e in events:
        row = settled(server, project, 1)[(e["event_id"], "meta")]
        assert row["status"] == "delivered", row
    sent = meta_ids(mock)
    assert sorted(sent) == sorted(e["event_id"] for _, _, e in events), len(sent)


def test_a_replayed_dead_letter_gets_a_whole_retry_window(server, mock):
    """A token fixed days after its events were parked: the replay treats them like new
    rows, so a passing 503 on the way is retried, not the end (the window counted from
    when the row was first made, it expired at the first failure)."""
    from lyserver import api_call
    project, key = new_project(server, meta={"dataset_id": "42"}, meta_token=BAD_TOKEN)
    e = event("purchase", device=IPHONE)
    post(server, key, [e])
    row = settled(server, project, 1)[(e["event_id"], "meta")]
    assert (row["status"], row["reason"]) == ("dead", "auth")
    set_layer(server, project, "meta", {"dataset_id": "42"}, META_TOKEN)
    cur = server.db.cursor()
    cur.execute("""UPDATE relay_deliveries SET created_at = created_at - interval '3 days'
                    WHERE project_id = %s""", (project,))
    mock.fault(service="meta", count=1, status=503)
    status, _, body = api_call(server, "POST", "/v1/projects/%s/deliveries/replay" % project,
                               token=server.credentials()["api_token"], body={})
    assert status == 200, body
    row = settled(server, project, 1)[(e["event_id"], "meta")]
    assert row["status"] == "delivered", row


@pytest.mark.parametrize("echo", ["as_is", "json_slash", "json_unicode", "url"])
def test_secret_echoed_by_a_network_is_redacted(server, mock, echo):
    """However the network writes the token back (JSON may escape '/' as "\\/" or
    "\\u002f", a URL encodes it as %2F), last_response, which viewers read, shows none."""
    import urllib.parse
    token = "EAA/" + uuid.uuid4().hex + "+tail"
    written = {"as_is": token, "json_slash": token.replace("/", "\\/"),
               "json_unicode": token.replace("/", "\\u002f"),
               "url": urllib.parse.quote(token, safe="")}[echo]
    project, key = new_project(server, meta={"dataset_id": "42"}, meta_token=token)
    mock.fault(service="meta", count=1, status=400,     # a string: sent as it is
               body='{"error": {"message": "token ' + written + ' is not allowed", "code": 10,'
                    ' "type": "OAuthException"}}')
    e = event("purchase", device=IPHONE)
    post(server, key, [e])
    row = settled(server, project, 1)[(e["event_id"], "meta")]
    assert (row["status"], row["reason"]) == ("dead", "permission")
    assert token.split("/")[1].split("+")[0] not in row["last_response"], row["last_response"]
    assert "[redacted]" in row["last_response"]


# ---------------------------------------------------------------------------------------
# Several relays, crashes, batch size


def meta_ids(mock):
    """Every event_id the Meta fake received, once per time it was received."""
    return [e["event_id"] for _, e in sent_events(mock, "meta")]


def wait_for_held_request(mock, service="meta"):
    """Waits until the fake holds a request its delay fault applies to: a relay's rows
    are in_flight once claimed, before the request is sent."""
    wait_for(lambda: all(f["applied"] for f in mock.call("GET", "/_mock/faults")
                         if f["service"] == service), what="the request at the fake")


def test_kill_relay_mid_batch_loses_nothing(server, mock):
    project, key = new_project(server, meta={"dataset_id": "42"})
    mock.fault(service="meta", count=1, delay_ms=1000)      # keeps the first request open
    batch = [event("purchase", device=IPHONE) for _ in range(20)]
    relay = server.actors()["relay"]
    post(server, key, batch)

    def in_flight():
        rows = deliveries(server, project)
        held = {k[0] for k, r in rows.items() if r["status"] == "in_flight"}
        return held if len(held) == len(batch) else None
    held = wait_for(in_flight, what="the batch in flight")
    wait_for_held_request(mock)                             # the request is on the wire
    os.kill(relay, signal.SIGKILL)
    wait_for(lambda: server.actors().get("relay") not in (None, relay), what="a new relay")
    later = [event("purchase", device=IPHONE) for _ in range(5)]
    post(server, key, later)
    rows = settled(server, project, 25)
    assert all(r["status"] == "delivered" for r in rows.values()), rows
    # the killed relay's request is recorded once the fake has answered it
    wait_for(lambda: len(meta_ids(mock)) >= 45, timeout=5, what="both sends of the batch")
    sent = meta_ids(mock)
    resent = {i for i in sent if sent.count(i) > 1}
    assert resent == held                   # only the batch in flight, each exactly twice
    assert all(sent.count(i) == 2 for i in held)
    assert all(sent.count(e["event_id"]) == 1 for e in later)
    # given back by its restart, which saw its pid gone, or by the lease
    assert ("released 20 deliveries whose lease expired" in server.log()
            or "20 deliveries of relay" in server.log()), server.log()[-3000:]


def test_a_killed_relays_rows_come_back_long_before_its_lease(server, mock):
    """A relay killed with -9 holds a lease of 2 minutes; its sibling on the same host sees
    its pid gone and gives its rows back within seconds."""
    project, key = new_project(server, meta={"dataset_id": "42"})
    supervised = server.actors()["relay"]
    os.kill(supervised, signal.SIGSTOP)
    proc, _ = start_relay(server, mock, "relay-doomed.log", LAYERS_RELAY_LEASE_MS="120000",
                          LAYERS_RELAY_TIMEOUT_MS="30000")
    try:
        mock.fault(service="meta", count=1, delay_ms=2000)
        batch = [event("purchase", device=IPHONE) for _ in range(10)]
        post(server, key, batch)
        wait_for(lambda: [r for r in deliveries(server, project).values()
                          if r["status"] == "in_flight" and ":%d:" % proc.pid in r["locked_by"]]
                 .__len__() == 10, what="the batch in flight at the doomed relay")
        doomed = next(iter(deliveries(server, project).values()))["locked_by"]
        wait_for_held_request(mock)
        proc.kill()
        proc.wait(5)
    finally:
        os.kill(supervised, signal.SIGCONT)
    started = time.monotonic()
    rows = settled(server, project, 10)
    assert time.monotonic() - started < 15, "waited for the lease"
    assert all(r["status"] == "delivered" for r in rows.values()), rows
    # the log names the relay as the database does: no part of it is masked as personal data
    assert ("released 10 deliveries of relay %s, which is no longer running" % doomed
            in server.log()), (doomed, server.log()[-3000:])
    # the fake records the killed relay's request when its delay is over: wait for it,
    # so that it does not land in the next test's journal
    wait_for(lambda: len(meta_ids(mock)) >= 20, timeout=5, what="both sends of the batch")


def start_relay(server, mock, log_name, **env):
    """A second relay process on the server's database, like a scale-out node."""
    full = dict(os.environ)
    full.update(RELAY_ENV)
    full.update(mock.env())
    full.update({"LAYERS_DATA_DIR": server.data_dir, "LAYERS_LOG_LEVEL": "info",
                 "LAYERS_DATABASE_URL": "host='%s' dbname=layers user=postgres"
                                        % os.path.join(server.data_dir, "pg", "run")})
    full.update(env)
    log = open(os.path.join(server.data_dir, log_name), "wb")
    proc = subprocess.Popen([binary("layersd"), "--only", "relay"], env=full, stdout=log,
                            stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    log.close()
    path = os.path.join(server.data_dir, log_name)
    wait_for(lambda: b"relay: relay " in open(path, "rb").read(), what="the extra relay")
    return proc, path


def stop_relay(proc, path):
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(15) == 0
    text = open(path, "rb").read().decode("utf-8", "replace")
    for marker in ("AddressSanitizer", "LeakSanitizer", "runtime error:", "Assertion"):
        assert marker not in text, text[-4000:]
    return text


def test_two_relays_never_send_the_same_event(server, mock):
    project, key = new_project(server, meta={"dataset_id": "42"})
    supervised = server.actors()["relay"]
    os.kill(supervised, signal.SIGSTOP)     # only the two below compete
    extra = []
    try:
        extra = [start_relay(server, mock, f"relay-extra-{i}.log", LAYERS_RELAY_CLAIM="20")
                 for i in range(2)]
        mock.fault(service="meta", count=-1, delay_ms=100)  # latency only
        events = [event("purchase", device=IPHONE) for _ in range(400)]
        post(server, key, events)
        rows = settled(server, project, 400)
        assert all(r["status"] == "delivered" for r in rows.values())
        sent = meta_ids(mock)
        assert sorted(sent) == sorted(e["event_id"] for e in events)    # each exactly once
        assert max(len(r["body"]["data"]) for r in mock.requests("meta")) <= 20
        workers = {r["locked_by"] for r in rows.values()}
        assert len(workers) == 2, workers   # both took part
    finally:
        for proc, path in extra:
            stop_relay(proc, path)
        os.kill(supervised, signal.SIGCONT)


def test_a_throttle_pauses_every_relay(server, mock):
    """The network's Retry-After holds back every relay, not only the one that got the
    429: while events keep coming, no request for the project reaches the network until
    the pause ends (the relays share it through relay_pauses)."""
    project, key = new_project(server, meta={"dataset_id": "42"})
    extra = start_relay(server, mock, "relay-pause.log")
    try:
        mock.fault(service="meta", count=1, status=429, headers={"Retry-After": "3"})
        events = [event("purchase", device=IPHONE) for _ in range(25)]
        for e in events:
            post(server, key, [e])
            time.sleep(0.1)
        rows = settled(server, project, len(events))
        assert all(r["status"] == "delivered" for r in rows.values()), rows
        sent = mock.requests("meta")
        [throttled] = [r["time_usec"] for r in sent if r["status"] == 429]
        during = [r["time_usec"] - throttled for r in sent
                  if 300000 < r["time_usec"] - throttled < 2900000]
        # (without the shared pause the other relay sent ~20 requests meanwhile)
        assert during == [], "requests %s us after the 429 with Retry-After: 3" % during
    finally:
        stop_relay(*extra)


def test_answers_of_one_throttle_do_not_lengthen_its_pause(server, mock):
    """Requests already in flight when the network throttles are answered "throttled"
    too: that is one throttle, not one per answer (eight of them made a pause of
    backoff x 2^7; a burst of 64 the 15-minute cap)."""
    project, key = new_project(server, meta={"dataset_id": "42"})
    supervised = server.actors()["relay"]
    os.kill(supervised, signal.SIGSTOP)         # one relay sending 8 requests at once
    extra = None
    try:
        events = [event("purchase", device=IPHONE) for _ in range(16)]
        post(server, key, events)
        mock.fault(service="meta", count=8, status=400, code=17, delay_ms=400)
        extra = start_relay(server, mock, "relay-burst.log", LAYERS_RELAY_CLAIM="2",
                            LAYERS_RELAY_BACKOFF_MS="1000")
        rows = settled(server, project, len(events))
        assert all(r["status"] == "delivered" for r in rows.values()), rows
        sent = mock.requests("meta")
        throttled = [r["time_usec"] for r in sent if r["status"] != 200]
        delivered = [r["time_usec"] for r in sent if r["status"] == 200]
        assert len(throttled) == 8, [r["status"] for r in sent]
        # one throttle: a pause of the backoff (1 s), not 2^7 s
        assert min(delivered) - max(throttled) < 6000000, (throttled, delivered)
    finally:
        if extra:
            stop_relay(*extra)
        os.kill(supervised, signal.SIGCONT)


def test_a_stopped_relay_lets_its_requests_end(server, mock):
    """SIGTERM (a deploy, layersd stopping) lets the requests in flight end, for up to
    1.5 s, and records their answers: nothing is sent twice. Before, they were aborted
    and their events sent again by the next relay."""
    project, key = new_project(server, meta={"dataset_id": "42"})
    mock.fault(service="meta", count=1, delay_ms=700)
    events = [event("purchase", device=IPHONE) for _ in range(3)]
    post(server, key, events)
    relay = server.actors()["relay"]
    wait_for(lambda: any(r["status"] == "in_flight" for r in deliveries(server, project).values()),
             what="the request in flight")
    os.kill(relay, signal.SIGTERM)
    wait_for(lambda: server.actors().get("relay") not in (None, relay), what="a new relay")
    rows = settled(server, project, len(events))
    assert all(r["status"] == "delivered" and r["attempts"] == 1 for r in rows.values()), rows
    for e in events:
        assert len(requests_with(mock, "meta", e["event_id"])) == 1
    # the one request is the delayed one, answered (the fake records an abandoned
    # request not at all)
    assert [r["delay_ms"] for r in mock.requests("meta")] == [700]


def test_a_huge_retry_after_is_the_longest_pause(server, mock):
    """A Retry-After too large for the arithmetic (a UBSan report and no pause at all
    before) pauses the pair for the longest pause, 15 minutes."""
    project, key = new_project(server, meta={"dataset_id": "42"})
    mock.fault(service="meta", count=1, status=429,
               headers={"Retry-After": "99999999999999999999"})
    events = [event("purchase", device=IPHONE)]
    post(server, key, events)
    wait_for(lambda: mock.requests("meta"), what="the throttled request")
    wait_for(lambda: deliveries(server, project)[(events[0]["event_id"], "meta")]["status"]
             == "pending", what="the row back in the queue")
    cur = server.db.cursor()
    cur.execute("SELECT extract (epoch FROM next_attempt_at - now ()) FROM relay_deliveries"
                " WHERE project_id = %s", (project,))
    [(wait,)] = cur.fetchall()
    assert 880 < float(wait) <= 901, wait
    cur.execute("SELECT extract (epoch FROM paused_until - now ()) FROM relay_pauses"
                " WHERE project_id = %s AND destination = 'meta'", (project,))
    assert 880 < float(cur.fetchone()[0]) <= 901
    cur.execute("UPDATE relay_deliveries SET status = 'skipped', reason = 'test over'"
                " WHERE project_id = %s AND status = 'pending'", (project,))


def delivered_after(server, mock, **fault):
    """One event of a new project with Meta, sent while Meta answers as fault says;
    once it is delivered, Meta's requests that carried it, oldest first."""
    project, key = new_project(server, meta={"dataset_id": "42"})
    mock.fault(service="meta", **fault)
    events = [event("purchase", device=IPHONE)]
    post(server, key, events)
    rows = settled(server, project, 1)
    assert all(r["status"] == "delivered" for r in rows.values()), rows
    return requests_with(mock, "meta", events[0]["event_id"])


def test_a_throttle_with_retry_after_zero_still_pauses(server, mock):
    """Retry-After: 0 (or a date gone by) with a throttle is no licence to resend at once
    in a loop: the pause is at least the backoff (150 ms here)."""
    sent = delivered_after(server, mock, count=3, status=429, headers={"Retry-After": "0"})
    assert [r["status"] for r in sent] == [429, 429, 429, 200]
    gaps = [b["time_usec"] - a["time_usec"] for a, b in zip(sent, sent[1:])]
    assert min(gaps) >= 140000, gaps


def test_a_retry_after_with_a_server_error_is_the_least_wait(server, mock):
    """RFC 9110 gives 503 a Retry-After: the retry waits at least that long, not the
    backoff's 75-150 ms."""
    sent = delivered_after(server, mock, count=1, status=503, headers={"Retry-After": "2"})
    assert [r["status"] for r in sent] == [503, 200]
    assert sent[1]["time_usec"] - sent[0]["time_usec"] >= 1950000


@pytest.mark.parametrize("value", [" 5", "+5", "5 ", "-5", "5.0", "0x10"])
def test_a_knob_is_digits_only(server, mock, value):
    env = dict(server.env, LAYERS_RELAY_CLAIM=value, LAYERS_DATA_DIR="/tmp/layers-never-created")
    out = subprocess.run([binary("layersd")], env=env, capture_output=True, text=True, timeout=10)
    assert out.returncode == 2 and "LAYERS_RELAY_CLAIM" in out.stderr, (value, out.stderr)


@pytest.mark.parametrize("args", [[], ["--only", "relay"]])
def test_a_bad_knob_stops_layersd_at_start_named_with_its_range(server, mock, args):
    """An out-of-range LAYERS_RELAY_* stops layersd at start (exit 2), a scale-out relay
    node too, like any invalid setting, with the allowed range given readably (not
    redacted as if its large numbers were phone numbers)."""
    env = dict(server.env, LAYERS_RELAY_HELD_BYTES="10",
               LAYERS_DATA_DIR="/tmp/layers-never-created")
    out = subprocess.run([binary("layersd")] + args, env=env, capture_output=True, text=True,
                         timeout=10)
    assert out.returncode == 2, out.stderr
    assert ('LAYERS_RELAY_HELD_BYTES="10" is not a number from 65,536 to 4,294,967,296'
            in out.stderr), out.stderr
    assert not os.path.exists("/tmp/layers-never-created")


def test_a_stalled_relay_loses_its_lease_and_writes_nothing(server, mock):
    """A relay frozen past its lease (a long GC-like stall, a database outage) must not
    send or record anything for rows another relay has taken over."""
    project, key = new_project(server, meta={"dataset_id": "42"})
    supervised = server.actors()["relay"]
    extra = None
    try:
        mock.fault(service="meta", count=1, delay_ms=800)
        events = [event("purchase", device=IPHONE) for _ in range(5)]
        post(server, key, events)
        wait_for(lambda: all(r["status"] == "in_flight"
                             for r in deliveries(server, project).values())
                 and len(deliveries(server, project)) == 5, what="the batch in flight")
        wait_for_held_request(mock)     # or it could be frozen before sending: no send
        os.kill(supervised, signal.SIGSTOP)             # frozen with the request open
        extra = start_relay(server, mock, "relay-takeover.log")
        rows = settled(server, project, 5)              # after the lease (4 s) ran out
        workers = {r["locked_by"] for r in rows.values()}
        assert len(workers) == 1 and not workers.pop().endswith(":%d" % supervised)
    finally:
        os.kill(supervised, signal.SIGCONT)
    try:
        wait_for(lambda: "could not renew the leases of 5 deliveries" in server.log()
                 or "dropped the outcome of 5 deliveries: our lease is over" in server.log(),
                 timeout=5, what="the stalled relay to notice")
        time.sleep(0.5)
        rows = deliveries(server, project)
        assert all(r["status"] == "delivered" for r in rows.values())
        assert {r["attempts"] for r in rows.values()} == {1}    # its late answer was not written
        sent = meta_ids(mock)
        assert sorted(set(sent)) == sorted(e["event_id"] for e in events)
        assert all(sent.count(e["event_id"]) == 2 for e in events)  # its send, the takeover's
    finally:
        if extra:
            stop_relay(*extra)


def test_large_events_bound_what_a_relay_holds(server, mock):
    """With LAYERS_RELAY_HELD_BYTES at 200 kB and events of ~20 kB, the relay never holds
    the whole backlog at once (without the bound one claim takes all 40) and delivers
    everything."""
    project, key = new_project(server, meta={"dataset_id": "42"})
    supervised = server.actors()["relay"]
    os.kill(supervised, signal.SIGSTOP)
    extra = None
    try:
        events = [event("purchase", device=IPHONE, properties={"blob": "x" * 20000})
                  for _ in range(40)]
        post(server, key, events)
        mock.fault(service="meta", count=-1, delay_ms=300)
        extra = start_relay(server, mock, "relay-bytes.log", LAYERS_RELAY_HELD_BYTES="200000")
        most = 0
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            rows = deliveries(server, project)
            most = max(most, sum(r["status"] == "in_flight" for r in rows.values()))
            if len(rows) == 40 and all(r["status"] == "delivered" for r in rows.values()):
                break
            time.sleep(0.02)
        assert all(r["status"] == "delivered" for r in deliveries(server, project).values())
        assert 0 < most <= 20, most
        assert sorted(meta_ids(mock)) == sorted(e["event_id"] for e in events)
    finally:
        if extra:
            stop_relay(*extra)
        os.kill(supervised, signal.SIGCONT)


def metric(server, name, labels):
    """Values of a metric with these labels, one per reporting process."""
    status, _, body = http("GET", server.base + "/metrics")
    assert status == 200
    values = []
    for line in body.decode().splitlines():
        if line.startswith(name + "{") and all(l in line for l in labels):
            values.append(float(line.rsplit(" ", 1)[1]))
    return values


def test_backlog_is_in_the_metrics(server, mock):
    """layers_relay_due counts deliveries due and unclaimed; it rises with a backlog and
    returns to 0 once everything is delivered."""
    project, key = new_project(server, meta={"dataset_id": "42"})
    supervised = server.actors()["relay"]
    os.kill(supervised, signal.SIGSTOP)
    extra = None
    try:
        mock.fault(service="meta", count=-1, delay_ms=1500)
        extra = start_relay(server, mock, "relay-backlog.log", LAYERS_RELAY_CLAIM="1")
        ours = ['destination="meta"', 'instance="relay.%d"' % extra[0].pid]
        post(server, key, [event("purchase", device=IPHONE) for _ in range(30)])
        wait_for(lambda: any(v >= 10 for v in metric(server, "layers_relay_due", ours)),
                 what="the backlog in /metrics")
        assert any(v > 0 for v in metric(server, "layers_relay_due_oldest_seconds", ours))
        mock.reset()                        # no more latency: the backlog drains
        settled(server, project, 30)
        wait_for(lambda: metric(server, "layers_relay_due", ours) == [0.0],
                 what="the backlog back to 0 in /metrics")
    finally:
        if extra:
            stop_relay(*extra)
        os.kill(supervised, signal.SIGCONT)


def test_old_delivery_records_are_deleted_but_not_dead_letters(server, mock):
    """Rows delivered or skipped more than LAYERS_RELAY_KEEP_DAYS (30) days ago go; dead
    letters and recent rows stay."""
    project, _ = new_project(server, meta={"dataset_id": "42"})
    cur = server.db.cursor()
    planted = {}
    for status, age in (("delivered", "40 days"), ("delivered", "31 days"), ("skipped", "40 days"),
                        ("dead", "40 days"), ("delivered", "29 days"), ("delivered", "1 hour")):
        event_id = "keep-%s-%s-%s" % (status, age.replace(" ", ""), uuid.uuid4().hex[:8])
        cur.execute("""INSERT INTO relay_deliveries (org_id, project_id, event_received_at, event_seq,
                                                     event_id, destination, status, created_at)
                       VALUES (%s, %s, now () - %s::interval, 0, %s, 'meta', %s,
                               now () - %s::interval)""",
                    (server.org, project, age, event_id, status, age))
        planted[event_id] = (status, age)
    proc, path = start_relay(server, mock, "relay-prune.log")    # prunes as it starts
    try:
        def left():
            cur.execute("SELECT event_id FROM relay_deliveries WHERE project_id = %s", (project,))
            return {r[0] for r in cur.fetchall()}
        wait_for(lambda: len(left()) == 3, what="old records deleted")
        assert sorted(planted[e] for e in left()) == [
            ("dead", "40 days"), ("delivered", "1 hour"), ("delivered", "29 days")]
    finally:
        stop_relay(proc, path)


def test_notification_wakes_an_idle_relay(server, mock):
    """The store's commit sends NOTIFY layers_relay: a relay that polls only every minute
    delivers a new event at once."""
    project, key = new_project(server, meta={"dataset_id": "42"})
    supervised = server.actors()["relay"]
    os.kill(supervised, signal.SIGSTOP)
    extra = None
    try:
        extra = start_relay(server, mock, "relay-listen.log", LAYERS_RELAY_POLL_MS="60000")
        time.sleep(0.3)                     # past its first claim
        e = event("purchase", device=IPHONE)
        started = time.monotonic()
        post(server, key, [e])
        settled(server, project, 1)
        assert time.monotonic() - started < 2.0
        assert meta_ids(mock) == [e["event_id"]]
    finally:
        if extra:
            stop_relay(*extra)
        os.kill(supervised, signal.SIGCONT)


def test_notification_only_when_there_is_something_to_relay(server, mock):
    """A batch without deliveries (project without layers, consent refused) wakes no relay;
    one with deliveries does, once per batch."""
    import select
    quiet, quiet_key = new_project(server)
    loud, loud_key = new_project(server, meta={"dataset_id": "42"})
    listener = db_connect(server)
    listener.autocommit = True
    cur = listener.cursor()
    cur.execute("LISTEN layers_relay")

    def notifications(wait):
        deadline = time.monotonic() + wait
        while time.monotonic() < deadline:
            select.select([listener], [], [], max(0.0, deadline - time.monotonic()))
            listener.poll()
        got = len(listener.notifies)
        listener.notifies.clear()
        return got
    try:
        post(server, quiet_key, [event("purchase", device=IPHONE) for _ in range(3)])
        post(server, loud_key, [event("purchase", device=IPHONE, consent={"ads": False})])
        assert notifications(0.5) == 0
        post(server, loud_key, [event("purchase", device=IPHONE) for _ in range(3)])
        assert notifications(0.5) == 1
    finally:
        listener.close()


def test_at_most_1000_events_per_request(server, mock):
    project, key = new_project(server, meta={"dataset_id": "42"})
    relay = server.actors()["relay"]
    os.kill(relay, signal.SIGSTOP)          # let a backlog build up
    try:
        events = [event("purchase", device=IPHONE) for _ in range(1200)]
        for at in range(0, 1200, 400):
            post(server, key, events[at:at + 400])
    finally:
        os.kill(relay, signal.SIGCONT)
    settled(server, project, 1200)
    # one claim takes all 1,200 (twice LAYERS_RELAY_CLAIM): two requests of even size
    sizes = sorted(len(r["body"]["data"]) for r in mock.requests("meta"))
    assert sizes == [600, 600], sizes


def test_secrets_never_in_the_database_or_logs(server, mock):
    project, key = new_project(server, meta={"dataset_id": "42"}, tiktok={"app_id": "7"})
    post(server, key, [event("purchase", device=IPHONE)])
    settled(server, project, 2)
    assert mock.requests("meta")[0]["body"]["access_token"] == META_TOKEN
    assert mock.requests("tiktok")[0]["headers"]["access-token"] == TIKTOK_TOKEN
    cur = server.db.cursor()
    cur.execute("CHECKPOINT")
    for secret in SECRETS:
        cur.execute("""SELECT count (*) FROM relay_deliveries
                        WHERE last_response LIKE %s OR reason LIKE %s""",
                    ("%" + secret + "%", "%" + secret + "%"))
        assert cur.fetchone()[0] == 0
    check_no_secret(server)
