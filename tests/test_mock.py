"""layers-mock: the fakes of Meta, TikTok, Apple AdServices and a model provider check
requests against the documented shapes, keep what they received for tests, and inject
faults (status, body, count, match, delay, dropped connections) on command."""
import base64
import hashlib
import json
import os
import signal
import subprocess
import tempfile
import threading
import time

import pytest
import requests

from lyserver import binary

SANITIZER_MARKS = ("AddressSanitizer", "LeakSanitizer", "UndefinedBehaviorSanitizer",
                   "runtime error:")


class Mock:
    """One layers-mock on a free port; stop() checks a clean exit."""

    def __init__(self, *args):
        self.stderr = tempfile.NamedTemporaryFile(prefix="lymock-", suffix=".log", delete=False)
        self.proc = subprocess.Popen([binary("layers-mock"), "--listen", "127.0.0.1:0", *args],
                                     stdout=subprocess.PIPE, stderr=self.stderr, text=True)
        line = self.proc.stdout.readline().strip()
        assert line.startswith("listening on http://127.0.0.1:"), (line, self.log())
        self.base = line.split(" ", 2)[2]

    def log(self):
        with open(self.stderr.name, errors="replace") as f:
            return f.read()

    def stop(self, timeout=10):
        """SIGTERM; returns (exit status, seconds taken, stderr)."""
        started = time.monotonic()
        self.proc.send_signal(signal.SIGTERM)
        try:
            rc = self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            rc = "hung"
        self.proc.stdout.close()
        log = self.log()
        os.unlink(self.stderr.name)
        return rc, time.monotonic() - started, log


def assert_clean_stop(mock, within=5):
    rc, took, log = mock.stop()
    assert rc == 0, log
    assert took < within, log
    for mark in SANITIZER_MARKS:
        assert mark not in log, log


@pytest.fixture(scope="module")
def mock():
    m = Mock()
    yield m
    assert_clean_stop(m)


@pytest.fixture(autouse=True)
def fresh(mock):
    assert requests.post(mock.base + "/_mock/reset", timeout=5).status_code == 200


def sha(text):
    return hashlib.sha256(text.encode()).hexdigest()


EXTINFO = ["i2", "com.example.app", "1.4", "1.4 (120)", "17.4", "iPhone15,2", "en_US", "UTC",
           "", "", "", "", "", "", "", ""]


def meta_event(i=0, **over):
    event = {
        "event_name": "layers_purchase",
        "event_time": int(time.time()) - 60,
        "event_id": "evt-%d" % i,
        "action_source": "app",
        "app_data": {"advertiser_tracking_enabled": 1, "application_tracking_enabled": 1,
                     "extinfo": list(EXTINFO)},
        "user_data": {"em": [sha("jane@example.com")], "ph": [sha("15551234567")],
                      "external_id": [sha("user-1")]},
        "custom_data": {"value": 9.99, "currency": "USD"},
    }
    event.update(over)
    return event


def meta_post(mock, body, token="EAAtoken123456", dataset="1234567890", version="v21.0",
              timeout=10):
    params = {"access_token": token} if token else {}
    return requests.post("%s/meta/%s/%s/events" % (mock.base, version, dataset),
                         params=params, json=body, timeout=timeout)


def tiktok_event(i=0, **over):
    event = {
        "event": "Purchase",
        "event_time": int(time.time()) - 60,
        "event_id": "evt-%d" % i,
        "user": {"email": sha("jane@example.com"), "phone": sha("15551234567"),
                 "external_id": sha("user-1"), "att_status": "AUTHORIZED"},
        "properties": {"value": 9.99, "currency": "USD"},
        "app": {"app_id": "6444444444", "app_name": "Example", "app_version": "1.4"},
    }
    event.update(over)
    return event


def tiktok_post(mock, events, token="tt-token-123456", **body_over):
    body = {"event_source": "app", "event_source_id": "7200000000000000001", "data": events}
    body.update(body_over)
    headers = {"Access-Token": token} if token else {}
    return requests.post(mock.base + "/tiktok/open_api/v1.3/event/track/", json=body,
                         headers=headers, timeout=10)


def apple_post(mock, token, content_type="text/plain"):
    return requests.post(mock.base + "/apple/api/v1/", data=token.encode(),
                         headers={"Content-Type": content_type}, timeout=10)


def recorded(mock, **params):
    r = requests.get(mock.base + "/_mock/requests", params=params, timeout=10)
    assert r.status_code == 200
    return r.json()


def add_fault(mock, **fault):
    r = requests.post(mock.base + "/_mock/faults", json=fault, timeout=5)
    assert r.status_code == 201, r.text
    return r.json()


# --- the fakes --------------------------------------------------------------------------

def test_help_lists_routes_and_faults():
    out = subprocess.run([binary("layers-mock"), "--help"], capture_output=True, text=True,
                         timeout=10)
    assert out.returncode == 0
    for word in ("/meta/{version}/{dataset_id}/events", "/tiktok/open_api/v1.3/event/track/",
                 "/apple/api/v1/", "/model/v1/chat/completions", "/_mock/faults", "drop",
                 "match", "delay_ms"):
        assert word in out.stdout
    bad = subprocess.run([binary("layers-mock"), "--listen", "nonsense"], capture_output=True,
                         text=True, timeout=10)
    assert bad.returncode == 2 and "--listen" in bad.stderr
    # HOST:PORT, but a host that does not resolve: said so, not "is not HOST:PORT"
    bad = subprocess.run([binary("layers-mock"), "--listen", "no-such-host.invalid:8090"],
                         capture_output=True, text=True, timeout=10)
    assert bad.returncode == 2 and 'host "no-such-host.invalid" does not resolve' in bad.stderr, \
        bad.stderr


def test_healthz(mock):
    r = requests.get(mock.base + "/_mock/healthz", timeout=5)
    assert r.status_code == 200 and r.json() == {"status": "ok"}


def test_meta_accepts_documented_batch_and_records_it(mock):
    events = [meta_event(i) for i in range(3)]
    r = meta_post(mock, {"data": events, "test_event_code": "TEST123"})
    assert r.status_code == 200, r.text
    answer = r.json()
    assert answer["events_received"] == 3 and answer["messages"] == []
    assert isinstance(answer["fbtrace_id"], str) and len(answer["fbtrace_id"]) >= 10

    [rec] = recorded(mock, service="meta")
    assert rec["method"] == "POST" and rec["path"] == "/meta/v21.0/1234567890/events"
    assert rec["query"] == {"access_token": "EAAtoken123456"}
    assert rec["headers"]["content-type"] == "application/json"
    assert rec["body"] == {"data": events, "test_event_code": "TEST123"}
    assert rec["status"] == 200 and rec["events"] == 3 and not rec["dropped"]
    assert rec["errors"] == [] and rec["warnings"] == []
    assert rec["response"]["fbtrace_id"] == answer["fbtrace_id"]


def test_meta_accepts_form_encoded_with_token_in_body(mock):
    events = [meta_event(0, user_data={"em": sha("a@b.co")})]     # a single string is fine
    r = requests.post(mock.base + "/meta/v21.0/42/events", timeout=10,
                      data={"data": json.dumps(events), "access_token": "EAAformtoken"})
    assert r.status_code == 200, r.text
    assert r.json()["events_received"] == 1
    [rec] = recorded(mock, service="meta")
    assert rec["body"]["access_token"] == "EAAformtoken"
    assert rec["body"]["data"] == events


def stale():
    return int(time.time()) - 8 * 24 * 3600


@pytest.mark.parametrize("case, mutate, code, subcode, field", [
    ("too old", lambda e: e.update(event_time=stale()), 100, 2804003, "data[1].event_time"),
    ("milliseconds", lambda e: e.update(event_time=int(time.time() * 1000)), 100, 2804004,
     "data[1].event_time"),
    ("time as text", lambda e: e.update(event_time=str(int(time.time()))), 100, 2804008,
     "data[1].event_time"),
    ("no app_data", lambda e: e.pop("app_data"), 100, 2804008, "data[1].app_data"),
    ("short extinfo", lambda e: e["app_data"].update(extinfo=EXTINFO[:15]), 100, 2804008,
     "data[1].app_data.extinfo"),
    ("extinfo version", lambda e: e["app_data"]["extinfo"].__setitem__(0, "x2"), 100, 2804008,
     "data[1].app_data.extinfo[0]"),
    ("no ATT flag", lambda e: e["app_data"].pop("advertiser_tracking_enabled"), 100, 2804008,
     "data[1].app_data.advertiser_tracking_enabled"),
    ("raw email", lambda e: e["user_data"].update(em=["jane@example.com"]), 100, 2804008,
     "data[1].user_data.em"),
    ("unhashed external_id", lambda e: e["user_data"].update(external_id="user-1"), 100, 2804008,
     "data[1].user_data.external_id"),
    ("no event_id", lambda e: e.pop("event_id"), 100, 2804008, "data[1].event_id"),
    ("no event_name", lambda e: e.pop("event_name"), 100, 2804008, "data[1].event_name"),
    ("no action_source", lambda e: e.pop("action_source"), 100, 2804008, "data[1].action_source"),
])
def test_meta_refuses_a_bad_event_naming_it(mock, case, mutate, code, subcode, field):
    events = [meta_event(i) for i in range(3)]
    mutate(events[1])
    r = meta_post(mock, {"data": events})
    assert r.status_code == 400, case
    error = r.json()["error"]
    assert error["type"] == "OAuthException" and error["code"] == code
    assert error["error_subcode"] == subcode, (case, error)
    assert error["error_user_msg"].startswith(field + ":"), (case, error)
    assert error["fbtrace_id"]
    [rec] = recorded(mock, service="meta")
    assert rec["status"] == 400 and rec["refused"] and rec["events"] == 0
    assert rec["errors"][0].startswith(field), rec["errors"]


def test_meta_request_level_errors(mock):
    ok = {"data": [meta_event()]}
    r = meta_post(mock, ok, token=None)
    assert r.status_code == 400 and r.json()["error"]["code"] == 104
    r = meta_post(mock, ok, token="bad-token-1")
    assert r.status_code == 400 and r.json()["error"]["code"] == 190
    r = meta_post(mock, ok, dataset="not-a-number")
    assert r.status_code == 400 and r.json()["error"]["error_subcode"] == 33
    r = meta_post(mock, ok, version="latest")
    assert r.status_code == 400 and r.json()["error"]["code"] == 2500
    r = meta_post(mock, {"data": []})
    assert r.status_code == 400 and r.json()["error"]["code"] == 100
    r = meta_post(mock, {"data": [meta_event(i) for i in range(1001)]})
    assert r.status_code == 400 and "1000" in r.json()["error"]["message"]
    r = meta_post(mock, {"nodata": 1})
    assert r.status_code == 400 and "data" in r.json()["error"]["message"]
    r = meta_post(mock, {"data": [meta_event(i) for i in range(1000)]})
    assert r.status_code == 200 and r.json()["events_received"] == 1000
    stats = requests.get(mock.base + "/_mock/stats", timeout=5).json()["meta"]
    assert stats["requests"] == 8 and stats["refused"] == 7 and stats["events"] == 1000


def test_meta_warns_about_accepted_deviations(mock):
    event = meta_event()
    event["app_data"]["extinfo"][4] = ""
    event["user_data"]["client_ip_address"] = "203.0.113.7"
    r = meta_post(mock, {"data": [event]})
    assert r.status_code == 200
    [rec] = recorded(mock)
    assert any("extinfo[4]" in w for w in rec["warnings"])
    assert any("client_ip_address" in w for w in rec["warnings"])


def test_both_fakes_warn_about_money_that_is_not_money(mock):
    """A value that is not a number or a currency that is not a 3-letter code is accepted
    with a warning by Meta's fake (custom_data) and TikTok's (properties) alike."""
    bad = {"value": "9.99", "currency": "dollars"}
    assert meta_post(mock, {"data": [meta_event(custom_data=bad)]}).status_code == 200
    assert tiktok_post(mock, [tiktok_event(properties=bad)]).status_code == 200
    for service, field in (("meta", "custom_data"), ("tiktok", "properties")):
        [rec] = recorded(mock, service=service)
        assert rec["errors"] == [], rec
        assert "data[0].%s.value: not a number" % field in rec["warnings"], rec["warnings"]
        assert "data[0].%s.currency: not an ISO 4217 code" % field in rec["warnings"], rec["warnings"]


def test_fakes_accept_integers_beyond_int64(mock):
    """Valid JSON with integers no int64 holds (PostgreSQL's jsonb writes an SDK's 1e19 as
    10000000000000000000) is accepted by Meta's fake, as JSON or as a form's data, and by
    TikTok's, like the real APIs do; such numbers are recorded as reals, the others as
    they were."""
    big = {"value": 9.99, "currency": "USD", "session_ms": 10 ** 19, "huge": 10 ** 300,
           "below": -10 ** 19, "exact": 2 ** 62 + 1}
    events = [meta_event(0, custom_data=big)]
    assert meta_post(mock, {"data": events}).status_code == 200
    r = requests.post(mock.base + "/meta/v21.0/42/events", timeout=10,
                      data={"data": json.dumps(events), "access_token": "EAAformtoken"})
    assert r.status_code == 200, r.text
    r = tiktok_post(mock, [tiktok_event(properties=big)])
    assert r.json()["code"] == 0, r.json()
    records = recorded(mock)
    assert len(records) == 3
    for rec in records:
        assert rec["errors"] == [] and rec["events"] == 1, rec
        event = rec["body"]["data"][0]
        assert type(event["event_time"]) is int
        got = event.get("custom_data") or event.get("properties")
        assert got == {"value": 9.99, "currency": "USD", "session_ms": 1e19, "huge": 1e300,
                       "below": -1e19, "exact": 2 ** 62 + 1}
        assert type(got["exact"]) is int and type(got["session_ms"]) is float


def test_tiktok_accepts_documented_batch(mock):
    events = [tiktok_event(i) for i in range(2)]
    r = tiktok_post(mock, events, test_event_code="TEST42")
    assert r.status_code == 200
    answer = r.json()
    assert answer["code"] == 0 and answer["message"] == "OK" and answer["data"] == {}
    assert answer["request_id"]
    [rec] = recorded(mock, service="tiktok")
    assert rec["headers"]["access-token"] == "tt-token-123456"
    assert rec["body"]["event_source"] == "app" and rec["body"]["data"] == events
    assert rec["events"] == 2 and rec["errors"] == [] and rec["warnings"] == []
    assert rec["response"]["request_id"] == answer["request_id"]


@pytest.mark.parametrize("case, mutate, text", [
    ("milliseconds", lambda e: e.update(event_time=int(time.time() * 1000)), "data[1].event_time"),
    ("no event_id", lambda e: e.pop("event_id"), "data[1].event_id"),
    ("no event", lambda e: e.pop("event"), "data[1].event"),
    ("raw email", lambda e: e["user"].update(email="jane@example.com"), "data[1].user.email"),
    ("raw phone", lambda e: e["user"].update(phone=["+15551234567"]), "data[1].user.phone"),
    ("att status", lambda e: e["user"].update(att_status="yes"), "data[1].user.att_status"),
    ("properties", lambda e: e.update(properties=[1]), "data[1].properties"),
])
def test_tiktok_refuses_bad_event_with_code_40002(mock, case, mutate, text):
    events = [tiktok_event(i) for i in range(3)]
    mutate(events[1])
    r = tiktok_post(mock, events)
    assert r.status_code == 200
    answer = r.json()
    assert answer["code"] == 40002 and text in answer["message"], (case, answer)
    [rec] = recorded(mock, service="tiktok")
    assert rec["refused"] and rec["events"] == 0


def test_tiktok_request_level_errors(mock):
    events = [tiktok_event()]
    assert tiktok_post(mock, events, token=None).json()["code"] == 40104
    assert tiktok_post(mock, events, token="bad-revoked").json()["code"] == 40105
    assert tiktok_post(mock, events, event_source_id="").json()["code"] == 40002
    assert tiktok_post(mock, events, event_source="tv").json()["code"] == 40002
    assert tiktok_post(mock, []).json()["code"] == 40002
    assert tiktok_post(mock, [tiktok_event(i) for i in range(1001)]).json()["code"] == 40002
    r = tiktok_post(mock, [tiktok_event(event="MadeUpEvent")])
    assert r.json()["code"] == 0
    assert any("standard" in w for w in recorded(mock, limit=1)[0]["warnings"])


def test_apple_scripted_tokens(mock):
    record = apple_post(mock, "plain-token-abc")
    assert record.status_code == 200
    assert record.json() == {"attribution": True, "orgId": 40669820, "campaignId": 542370539,
                             "conversionType": "Download", "claimType": "Click",
                             "adGroupId": 542317095, "countryOrRegion": "US",
                             "keywordId": 87675432, "adId": 542317136}
    assert [apple_post(mock, "notyet-2-xyz").status_code for _ in range(3)] == [404, 404, 200]
    assert apple_post(mock, "notyet-2-xyz").status_code == 200
    assert apple_post(mock, "bad-token").status_code == 400
    assert apple_post(mock, "error-token").status_code == 500
    noattr = apple_post(mock, "noattr-1")
    assert noattr.status_code == 200 and noattr.json() == {"attribution": False}
    assert apple_post(mock, "plain", content_type="application/json").status_code == 400
    recs = recorded(mock, service="apple")
    assert [r["body"] for r in recs[:4]] == ["plain-token-abc"] + ["notyet-2-xyz"] * 3
    assert recs[0]["headers"]["content-type"] == "text/plain"
    assert recs[-1]["refused"]


def test_model_provider(mock):
    auth = {"Authorization": "Bearer sk-test"}
    r = requests.post(mock.base + "/model/v1/chat/completions", headers=auth, timeout=5,
                      json={"model": "gpt-test", "messages": [{"role": "user", "content": "hi"}]})
    assert r.status_code == 200
    body = r.json()
    assert body["object"] == "chat.completion" and body["model"] == "gpt-test"
    assert body["choices"][0]["message"]["role"] == "assistant"
    assert body["choices"][0]["message"]["content"]
    r = requests.post(mock.base + "/model/v1/images/generations", headers=auth, timeout=5,
                      json={"prompt": "a reel cover", "n": 2})
    assert r.status_code == 200 and len(r.json()["data"]) == 2
    png = base64.b64decode(r.json()["data"][0]["b64_json"])
    assert png.startswith(b"\x89PNG\r\n\x1a\n")
    r = requests.post(mock.base + "/model/v1/messages", timeout=5,
                      headers={"x-api-key": "k", "anthropic-version": "2023-06-01"},
                      json={"model": "claude-test", "max_tokens": 100,
                            "messages": [{"role": "user", "content": "hi"}]})
    assert r.status_code == 200 and r.json()["content"][0]["type"] == "text"
    r = requests.post(mock.base + "/model/v1/chat/completions", timeout=5,
                      json={"model": "m", "messages": [{"role": "user", "content": "hi"}]})
    assert r.status_code == 401 and r.json()["error"]["code"] == "invalid_api_key"
    # A scripted completion: a fault with status 200 and a body.
    add_fault(mock, service="model", body={"id": "x", "choices": [{"message": {"content": "{}"}}]})
    r = requests.post(mock.base + "/model/v1/chat/completions", headers=auth, timeout=5,
                      json={"model": "m", "messages": [{"role": "user", "content": "hi"}]})
    assert r.status_code == 200 and r.json()["id"] == "x"


# --- faults -------------------------------------------------------------------------------

def test_fault_status_for_next_n_requests_of_one_service(mock):
    fault = add_fault(mock, service="meta", status=500, count=2)
    assert fault["id"] > 0 and fault["count"] == 2
    body = {"data": [meta_event()]}
    first = meta_post(mock, body)
    assert first.status_code == 500
    error = first.json()["error"]
    assert error["code"] == 2 and error["is_transient"] is True and error["fbtrace_id"]
    assert tiktok_post(mock, [tiktok_event()]).json()["code"] == 0     # other services unaffected
    assert meta_post(mock, body).status_code == 500
    assert meta_post(mock, body).status_code == 200
    assert requests.get(mock.base + "/_mock/faults", timeout=5).json() == []
    recs = recorded(mock, service="meta")
    assert [r["status"] for r in recs] == [500, 500, 200]
    assert recs[0]["faults"] == [fault["id"]] and recs[2]["faults"] == []
    assert recs[0]["errors"] == [] and recs[0]["events"] == 0 and recs[2]["events"] == 1
    stats = requests.get(mock.base + "/_mock/stats", timeout=5).json()
    assert stats["meta"]["faulted"] == 2 and stats["tiktok"]["faulted"] == 0


def test_fault_default_bodies_per_service(mock):
    add_fault(mock, service="meta", status=429, code=17)
    r = meta_post(mock, {"data": [meta_event()]})
    assert r.status_code == 429 and r.json()["error"]["code"] == 17
    add_fault(mock, service="meta", code=190)
    r = meta_post(mock, {"data": [meta_event()]})
    assert r.status_code == 400 and r.json()["error"]["code"] == 190
    add_fault(mock, service="tiktok", code=40100)
    r = tiktok_post(mock, [tiktok_event()])
    assert r.status_code == 200 and r.json()["code"] == 40100 and r.json()["request_id"]
    add_fault(mock, service="tiktok", status=500)
    r = tiktok_post(mock, [tiktok_event()])
    assert r.status_code == 500 and r.json()["code"] == 50000
    add_fault(mock, service="apple", status=500)
    assert apple_post(mock, "tok").status_code == 500
    add_fault(mock, service="*", status=503, count=2)
    assert apple_post(mock, "tok").status_code == 503
    assert meta_post(mock, {"data": [meta_event()]}).status_code == 503


def test_fault_custom_body_and_headers(mock):
    add_fault(mock, service="meta", status=400, headers={"Retry-After": "3"},
              body={"error": {"message": "custom", "type": "OAuthException", "code": 80004,
                              "fbtrace_id": "Afixed"}})
    r = meta_post(mock, {"data": [meta_event()]})
    assert r.status_code == 400 and r.headers["Retry-After"] == "3"
    assert r.json()["error"] == {"message": "custom", "type": "OAuthException", "code": 80004,
                                 "fbtrace_id": "Afixed"}


def test_fault_match_fails_only_the_batch_with_the_substring(mock):
    add_fault(mock, service="meta", status=400, code=100, subcode=2804008, match="evt-poison")
    clean = meta_post(mock, {"data": [meta_event(1), meta_event(2)]})
    assert clean.status_code == 200
    poisoned = meta_post(mock, {"data": [meta_event(3), meta_event(0, event_id="evt-poison")]})
    assert poisoned.status_code == 400
    assert poisoned.json()["error"]["error_subcode"] == 2804008
    again = meta_post(mock, {"data": [meta_event(0, event_id="evt-poison")]})
    assert again.status_code == 200          # count 1: used up


def test_faults_apply_in_order(mock):
    add_fault(mock, service="tiktok", status=500, count=2)
    add_fault(mock, service="tiktok", code=40100, count=1)
    codes = [tiktok_post(mock, [tiktok_event()]).json()["code"] for _ in range(4)]
    assert codes == [50000, 50000, 40100, 0]


def test_delay_does_not_block_other_connections(mock):
    add_fault(mock, service="meta", delay_ms=1500, match="slow-one")
    results = {}

    def slow():
        started = time.monotonic()
        r = meta_post(mock, {"data": [meta_event(0, event_id="slow-one")]})
        results["slow"] = (r.status_code, time.monotonic() - started)

    thread = threading.Thread(target=slow)
    thread.start()
    time.sleep(0.2)
    started = time.monotonic()
    fast = meta_post(mock, {"data": [meta_event(1)]})
    fast_took = time.monotonic() - started
    thread.join()
    assert fast.status_code == 200 and fast_took < 1.0
    assert results["slow"][0] == 200 and results["slow"][1] >= 1.4
    slow_rec = [r for r in recorded(mock) if r["delay_ms"]][0]
    assert slow_rec["delay_ms"] == 1500 and slow_rec["status"] == 200


def test_lasting_latency_composes_with_later_faults_until_cleared(mock):
    add_fault(mock, service="apple", delay_ms=1000, count=-1)
    add_fault(mock, service="apple", status=500)
    started = time.monotonic()
    assert apple_post(mock, "t1").status_code == 500
    assert apple_post(mock, "t2").status_code == 200
    assert time.monotonic() - started >= 2.0
    [latency] = requests.get(mock.base + "/_mock/faults", timeout=5).json()
    assert latency["count"] == -1 and latency["applied"] == 2
    r = requests.delete(mock.base + "/_mock/faults", timeout=5)
    assert r.json() == {"cleared": 1}
    started = time.monotonic()
    assert apple_post(mock, "t3").status_code == 200
    assert time.monotonic() - started < 0.9


def test_a_latency_queued_after_an_answer_waits_for_a_later_request(mock):
    """Faults apply in order: a latency-only fault queued after an answer does not slow
    the request that answer goes to, but the next one."""
    add_fault(mock, service="apple", status=500)
    add_fault(mock, service="apple", delay_ms=1500)
    started = time.monotonic()
    assert apple_post(mock, "t1").status_code == 500
    assert time.monotonic() - started < 1.4
    started = time.monotonic()
    assert apple_post(mock, "t2").status_code == 200
    assert time.monotonic() - started >= 1.45
    assert requests.get(mock.base + "/_mock/faults", timeout=5).json() == []


def test_a_port_in_use_is_named_with_its_address(mock):
    """layers-mock on a port another server holds says which address it could not
    listen on, and why (the address is its own, not masked as a client's)."""
    port = mock.base.rsplit(":", 1)[1]
    out = subprocess.run([binary("layers-mock"), "--listen", "127.0.0.1:" + port],
                         capture_output=True, text=True, timeout=10)
    assert out.returncode != 0
    assert 'could not listen on "127.0.0.1:%s": Address already in use' % port in out.stderr, \
        out.stderr


def test_drop_closes_the_connection_without_an_answer(mock):
    add_fault(mock, service="tiktok", drop=True)
    with pytest.raises(requests.exceptions.ConnectionError):
        tiktok_post(mock, [tiktok_event()])
    assert tiktok_post(mock, [tiktok_event()]).json()["code"] == 0
    dropped, answered = recorded(mock, service="tiktok")
    assert dropped["dropped"] and dropped["status"] == 0 and dropped["response"] is None
    assert dropped["body"]["data"][0]["event_id"] == "evt-0"
    assert not answered["dropped"] and answered["status"] == 200


def test_delay_then_drop_acts_as_a_timeout(mock):
    add_fault(mock, service="meta", delay_ms=400, drop=True)
    started = time.monotonic()
    with pytest.raises(requests.exceptions.ConnectionError):
        meta_post(mock, {"data": [meta_event()]})
    assert time.monotonic() - started >= 0.35


def test_invalid_faults_are_refused_whole(mock):
    for bad in ({"service": "google", "status": 500}, {"service": "meta", "sttus": 500},
                {"service": "meta", "status": 700}, {"service": "meta", "count": 0, "status": 500},
                {"service": "meta"}, [{"service": "meta", "status": 500}, {"service": "x"}]):
        r = requests.post(mock.base + "/_mock/faults", json=bad, timeout=5)
        assert r.status_code == 400, bad
        assert r.json()["error"]
    assert requests.get(mock.base + "/_mock/faults", timeout=5).json() == []
    r = requests.post(mock.base + "/_mock/faults", timeout=5,
                      json=[{"service": "meta", "status": 500}, {"service": "apple", "status": 500}])
    assert r.status_code == 201 and len(r.json()) == 2
    r = requests.delete(mock.base + "/_mock/faults", params={"service": "meta"}, timeout=5)
    assert r.json() == {"cleared": 1}
    assert [f["service"] for f in requests.get(mock.base + "/_mock/faults", timeout=5).json()] \
        == ["apple"]


# --- the journal --------------------------------------------------------------------------

def test_journal_filters_and_clearing(mock):
    meta_post(mock, {"data": [meta_event()]})
    tiktok_post(mock, [tiktok_event()])
    apple_post(mock, "tok-1")
    everything = recorded(mock)
    assert [r["service"] for r in everything] == ["meta", "tiktok", "apple"]
    seqs = [r["seq"] for r in everything]
    assert seqs == sorted(seqs)
    assert [r["service"] for r in recorded(mock, since=seqs[0])] == ["tiktok", "apple"]
    assert [r["service"] for r in recorded(mock, limit=1)] == ["apple"]
    light = recorded(mock, bodies=0)
    assert "body" not in light[0] and light[0]["body_bytes"] > 0
    assert requests.get(mock.base + "/_mock/requests", params={"service": "nope"},
                        timeout=5).status_code == 400
    assert requests.get(mock.base + "/elsewhere", timeout=5).status_code == 404
    r = requests.delete(mock.base + "/_mock/requests", timeout=5)
    assert r.json() == {"cleared": 3}
    assert recorded(mock) == []
    stats = requests.get(mock.base + "/_mock/stats", timeout=5).json()
    assert stats["meta"]["requests"] == 0 and stats["last_seq"] >= 3


def test_journal_is_bounded():
    small = Mock("--max-records", "5")
    try:
        for i in range(8):
            apple_post(small, "tok-%d" % i)
        recs = recorded(small)
        assert [r["body"] for r in recs] == ["tok-%d" % i for i in range(3, 8)]
        assert requests.get(small.base + "/_mock/stats", timeout=5).json()["apple"]["requests"] == 8
    finally:
        assert_clean_stop(small)


def test_sigterm_stops_cleanly_even_during_a_delay():
    m = Mock()
    add_fault(m, service="meta", delay_ms=60000)
    errors = []

    def waiting():
        try:
            meta_post(m, {"data": [meta_event()]}, timeout=30)
        except requests.exceptions.RequestException as e:
            errors.append(e)

    thread = threading.Thread(target=waiting)
    thread.start()
    time.sleep(0.3)
    assert_clean_stop(m, within=5)
    thread.join(timeout=30)
    assert not thread.is_alive()


def test_a_second_mock_on_a_busy_port_fails(mock):
    """layers-mock does not share a port with another server."""
    port = mock.base.rsplit(":", 1)[1]
    proc = subprocess.run([binary("layers-mock"), "--listen", "127.0.0.1:" + port],
                          capture_output=True, text=True, timeout=30)
    assert proc.returncode != 0, (proc.stdout, proc.stderr)
