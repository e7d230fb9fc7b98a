"""SDK ingest end to end: POST /l/events through gateway, ingest and store into
PostgreSQL, with personal data scrubbed at the edge and bad input refused alone."""
import contextlib
import gzip
import hashlib
import json
import os
import re
import signal
import time
import uuid

import pytest

from lyserver import Layersd, api_call, db_connect, files_containing, make_mmdb, post_events

IPHONE_UA = ("Mozilla/5.0 (iPhone; CPU iPhone OS 17_1_2 like Mac OS X) AppleWebKit/605.1.15 "
             "(KHTML, like Gecko) Version/17.1 Mobile/15E148 Safari/604.1")
ANDROID_UA = ("Mozilla/5.0 (Linux; Android 13; SM-S918B) AppleWebKit/537.36 (KHTML, like Gecko) "
              "Chrome/119.0.0.0 Mobile Safari/537.36")


def sha(text):
    return hashlib.sha256(text.encode()).hexdigest()


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    mmdb = make_mmdb(str(tmp_path_factory.mktemp("geo") / "test.mmdb"))
    os.chmod(os.path.dirname(mmdb), 0o755)
    with Layersd(env={"LAYERS_GEOIP_DB": mmdb, "LAYERS_TRUSTED_PROXIES": "127.0.0.1, 10.0.0.0/8, 2001:db8:ffff::/48"}) as s:
        s.key = s.credentials()["sdk_key"]
        s.project = s.credentials()["project_id"]
        s.db = db_connect(s)
        yield s
        s.db.close()


def row(server, event_id):
    cur = server.db.cursor()
    cur.execute("SELECT * FROM sdk_events WHERE project_id = %s AND event_id = %s",
                (server.project, event_id))
    cols = [d[0] for d in cur.description]
    rows = [dict(zip(cols, r)) for r in cur.fetchall()]
    return rows


def eid():
    return str(uuid.uuid4())


def test_event_is_scrubbed_and_stored(server):
    event_id = eid()
    status, headers, body = post_events(server, {
        "event_id": event_id, "name": "purchase", "user_id": "u-42",
        "email": "  John_Smith@Gmail.com ", "phone": "+1 (650) 555-1212",
        "properties": {"value": 9.99, "currency": "USD", "content_ids": ["sku-1"]},
        "app": {"version": "2.3.1", "build": "231", "package": "com.example.app"},
        "consent": {"ads": True, "att": "authorized"},
    }, key=server.key, headers={"User-Agent": IPHONE_UA, "X-Forwarded-For": "81.2.69.160"})
    assert status == 202, body
    assert body == {"accepted": 1, "duplicates": 0, "rejected": []}
    [r] = row(server, event_id)
    assert r["email_sha256"] == sha("john_smith@gmail.com")
    assert r["phone_sha256"] == sha("16505551212")
    assert r["phone_e164_sha256"] == sha("+16505551212")
    assert r["geo_country"] == "GB" and r["geo_region"] == "ENG"
    assert r["device_os"] == "iOS" and r["device_os_version"].startswith("17.1")
    assert r["device_model"] == "iPhone" and r["device_brand"] == "Apple"
    assert r["user_id"] == "u-42" and r["name"] == "purchase"
    assert r["properties"]["currency"] == "USD"
    assert r["app_version"] == "2.3.1" and r["consent_ads"] is True
    assert r["consent_att"] == "authorized"


def test_explicit_device_fields_win_over_user_agent(server):
    event_id = eid()
    status, _, body = post_events(server, {
        "event_id": event_id, "name": "app_open",
        "device": {"os": "Android", "os_version": "14", "model": "Pixel 8"}},
        key=server.key, headers={"User-Agent": IPHONE_UA})
    assert status == 202, body
    [r] = row(server, event_id)
    assert (r["device_os"], r["device_os_version"], r["device_model"]) == ("Android", "14", "Pixel 8")


def test_ipv6_geo_and_prehashed_values(server):
    event_id = eid()
    hashed = sha("someone@example.org")
    status, _, body = post_events(server, {"event_id": event_id, "name": "sign_up",
                                           "email": hashed.upper()},
                                  key=server.key, headers={"X-Forwarded-For": "2001:db8::7"})
    assert status == 202, body
    [r] = row(server, event_id)
    assert r["email_sha256"] == hashed
    assert r["geo_country"] == "DE" and r["geo_region"] == "BE"


@pytest.mark.parametrize("lines,country", [
    (["81.2.69.160, 10.1.2.3"], "GB"),              # a proxy trusted by its range
    (["81.2.69.160, 2001:db8:ffff::1"], "GB"),      # an IPv6 range
    (["81.2.69.160, 2001:db8::9"], "DE"),           # not in the range: the client
    (["81.2.69.160, 11.0.0.1"], None),              # just past 10.0.0.0/8
    (["81.2.69.160", "175.16.199.1"], "CN"),        # a proxy's own line comes last
    (["81.2.69.160:4711"], "GB"),                   # IPv4:port, as some proxies write it
    (["[2001:db8::7]:443"], "DE"),
    (["81.2.69.160, unknown, 10.0.0.1"], None),     # not an address: the client is unknown
    (["81.2.69.160, unknown, 2001:db8:ffff::1"], None),  # not the proxy's own region (DE)
    (["81.2.69.160,"], None),
    (["2001:db8:ffff::1"], None),                   # every entry a proxy: not its region
    (["2001:db8:ffff::1", "10.1.2.3"], None),
])
def test_client_ip_through_trusted_proxies(server, lines, country):
    """The client is the right-most X-Forwarded-For entry that is not a trusted proxy
    (LAYERS_TRUSTED_PROXIES holds addresses and CIDR ranges), reading every header line
    in order."""
    import http.client
    event_id = eid()
    conn = http.client.HTTPConnection(server.base.split("//")[1], timeout=15)
    try:
        conn.putrequest("POST", "/l/events")
        body = json.dumps({"event_id": event_id, "name": "x"}).encode()
        for name, value in (("Authorization", "Bearer " + server.key),
                            ("Content-Type", "application/json"),
                            ("Content-Length", str(len(body)))):
            conn.putheader(name, value)
        for line in lines:
            conn.putheader("X-Forwarded-For", line)
        conn.endheaders(body)
        answer = conn.getresponse()
        assert answer.status == 202, answer.read()
    finally:
        conn.close()
    [r] = row(server, event_id)
    assert r["geo_country"] == country, r


def test_invalid_email_and_phone_drop_the_field_not_the_event(server):
    event_id = eid()
    status, _, body = post_events(server, {"event_id": event_id, "name": "sign_up",
                                           "email": "not-an-email", "phone": "12"},
                                  key=server.key)
    assert status == 202 and body["accepted"] == 1, body
    [r] = row(server, event_id)
    assert r["email_sha256"] is None and r["phone_sha256"] is None


def test_event_and_receive_times_are_stored_exactly(server):
    """The SDK's timestamp (RFC 3339 with microseconds, or epoch milliseconds, with a
    fraction too) is stored to the microsecond, whatever the session's time zone;
    received_at is the gateway's receive time, the same in sdk_events and the
    deduplication key."""
    import datetime
    utc = datetime.timezone.utc
    sent = datetime.datetime.now(utc).replace(microsecond=123456) - datetime.timedelta(hours=1)
    millis = int(time.time() * 1000) - 90061001
    ids = [eid(), eid(), eid()]
    before = datetime.datetime.now(utc)
    body = ('{"events": [{"event_id": "%s", "name": "x", "timestamp": "%s+02:00"},'
            ' {"event_id": "%s", "name": "x", "timestamp": %d},'
            ' {"event_id": "%s", "name": "x", "timestamp": %d.25}]}'
            % (ids[0], sent.strftime("%Y-%m-%dT%H:%M:%S.%f"), ids[1], millis, ids[2], millis))
    status, _, body = post_events(server, body.encode(), key=server.key)
    after = datetime.datetime.now(utc)
    assert status == 202 and body["accepted"] == 3, body
    [first], [second], [third] = row(server, ids[0]), row(server, ids[1]), row(server, ids[2])
    assert first["event_time"] == sent - datetime.timedelta(hours=2)
    assert second["event_time"] == datetime.datetime.fromtimestamp(millis // 1000, utc) \
        + datetime.timedelta(milliseconds=millis % 1000)
    assert third["event_time"] == second["event_time"] + datetime.timedelta(microseconds=250)
    for r in (first, second):
        assert before - datetime.timedelta(seconds=1) <= r["received_at"] <= after
    cur = server.db.cursor()
    cur.execute("SELECT received_at FROM sdk_event_ids WHERE project_id = %s AND event_id = %s",
                (server.project, ids[0]))
    assert cur.fetchone()[0] == first["received_at"]


def test_duplicates_are_stored_once(server):
    event_id = eid()
    event = {"event_id": event_id, "name": "purchase"}
    assert post_events(server, event, key=server.key)[2]["accepted"] == 1
    status, _, body = post_events(server, event, key=server.key)
    assert status == 202 and body == {"accepted": 0, "duplicates": 1, "rejected": []}
    status, _, body = post_events(server, {"events": [event, event, {"event_id": eid(), "name": "x"}]},
                                  key=server.key)
    assert body["accepted"] == 1 and body["duplicates"] == 2
    assert len(row(server, event_id)) == 1


def hold_key(server, event_id):
    """An open transaction of the test's own that holds the deduplication key event_id:
    a store batch with that key waits until it ends. Returns the connection."""
    conn = db_connect(server)
    conn.autocommit = False
    conn.cursor().execute(
        "INSERT INTO sdk_event_ids (project_id, event_id, org_id) VALUES (%s, %s, %s)",
        (server.project, event_id, server.credentials()["org_id"]))
    return conn


def wait_for_store_lock(server):
    """Waits until a store session waits on a lock (a key hold_key holds)."""
    watch = server.db.cursor()
    deadline = time.time() + 10
    while time.time() < deadline:
        watch.execute("SELECT count (*) FROM pg_stat_activity"
                      " WHERE usename = 'layers_store' AND wait_event_type = 'Lock'")
        if watch.fetchone()[0] == 1:
            return
        time.sleep(0.05)
    pytest.fail("no store batch waited on the held key")


def beside_batches(server):
    """{rule: count} of layers_store_beside_batches_total, summed over store processes."""
    import re
    text = api_call(server, "GET", "/metrics")[2]
    text = text.decode() if isinstance(text, bytes) else text
    counts = {"rows": 0, "wait": 0}
    for rule, value in re.findall(r'^layers_store_beside_batches_total\{rule="(\w+)"[^}]*\} (\d+)',
                                  text, re.M):
        counts[rule] += int(value)
    return counts


def test_a_second_batch_is_written_beside_a_stuck_one(server):
    """The store writes on two sessions: while one batch waits (here on a lock the test
    holds on one of its keys), a big request that comes meanwhile is written on the
    other session and answered at once (400 rows waiting start it), and a small one
    after a few ms (its wait starts it); layers_store_beside_batches_total counts each
    by its rule. A request repeating the stuck batch's keys waits for it and then counts
    them as duplicates: each event is stored once."""
    import threading
    before = beside_batches(server)
    blocker = "m-" + eid()                  # sorts among the batch's uuid keys
    first = [{"event_id": eid(), "name": "purchase"} for _ in range(499)]
    first.append({"event_id": blocker, "name": "purchase"})
    second = [{"event_id": eid(), "name": "purchase"} for _ in range(500)]
    answers = {}

    def send(name, events):
        answers[name] = post_events(server, {"events": events}, key=server.key, timeout=30)
    stuck = threading.Thread(target=send, args=("first", first))
    again = threading.Thread(target=send, args=("again", first))
    lock = hold_key(server, blocker)
    try:
        stuck.start()
        wait_for_store_lock(server)
        status, _, body = post_events(server, {"events": second}, key=server.key, timeout=15)
        assert status == 202 and body["accepted"] == 500, body
        # a small one does not wait for rows to pile up: only a few ms
        small = {"event_id": eid(), "name": "purchase"}
        status, _, body = post_events(server, small, key=server.key, timeout=15)
        assert status == 202 and body["accepted"] == 1, body
        assert stuck.is_alive()             # the first is still waiting
        again.start()
        time.sleep(0.5)
    finally:
        lock.rollback()
        lock.close()
    stuck.join(30)
    again.join(30)
    assert answers["first"][0] == 202 and answers["first"][2]["accepted"] == 500, answers
    assert answers["again"][0] == 202, answers
    assert (answers["again"][2]["accepted"], answers["again"][2]["duplicates"]) == (0, 500)
    cur = server.db.cursor()
    cur.execute("SELECT count (*), count (DISTINCT event_id) FROM sdk_events"
                " WHERE project_id = %s AND event_id = ANY (%s)",
                (server.project, [e["event_id"] for e in first + second]))
    assert cur.fetchone() == (1000, 1000)
    # the big ones were started by the rows rule, the small one by its wait
    deadline = time.monotonic() + 10
    while True:
        after = beside_batches(server)
        if after["rows"] > before["rows"] and after["wait"] > before["wait"]:
            break
        assert time.monotonic() < deadline, (before, after)
        time.sleep(0.2)


def test_a_batch_chosen_as_a_deadlock_victim_is_written_again(server):
    """When PostgreSQL breaks a deadlock by aborting a batch of the store, the store
    writes the batch again instead of answering 503: here the test's own session takes
    a key the batch needs, then waits on one the batch holds."""
    import threading
    first, second = "a-" + eid(), "m-" + eid()      # the batch inserts `first` first
    answers = {}

    def send():
        answers["batch"] = post_events(server, {"events": [
            {"event_id": first, "name": "purchase"}, {"event_id": second, "name": "purchase"}]},
            key=server.key, timeout=30)
    sender = threading.Thread(target=send)
    other = hold_key(server, second)
    try:
        sender.start()
        wait_for_store_lock(server)
        # waits on the batch's key until PostgreSQL aborts the batch (deadlock_timeout)
        other.cursor().execute(
            "INSERT INTO sdk_event_ids (project_id, event_id, org_id) VALUES (%s, %s, %s)",
            (server.project, first, server.credentials()["org_id"]))
    finally:
        other.rollback()
        other.close()
    sender.join(30)
    assert answers["batch"][0] == 202, answers
    assert answers["batch"][2]["accepted"] == 2, answers
    assert len(row(server, first)) == 1 and len(row(server, second)) == 1
    # the session that was the victim writes the next batches once, not twice
    for _ in range(3):
        status, _, body = post_events(server, {"event_id": eid(), "name": "purchase"},
                                      key=server.key)
        assert (status, body["accepted"], body["duplicates"]) == (202, 1, 0), body


def test_mixed_batch_keeps_good_events(server):
    good = [eid(), eid()]
    status, _, body = post_events(server, {"events": [
        {"event_id": good[0], "name": "purchase"},
        {"event_id": eid(), "name": "Bad Name"},
        "not an object",
        {"name": "no_id"},
        {"event_id": good[1], "name": "add_to_cart", "timestamp": int(time.time() * 1000)},
        {"event_id": eid(), "name": "purchase", "timestamp": "yesterday"},
        {"event_id": eid(), "name": "purchase", "properties": "nope"},
    ]}, key=server.key)
    assert status == 202, body
    assert body["accepted"] == 2
    assert sorted(r["index"] for r in body["rejected"]) == [1, 2, 3, 5, 6]
    assert all(r["error"] for r in body["rejected"])
    for event_id in good:
        assert len(row(server, event_id)) == 1


def test_gzip_body(server):
    event_id = eid()
    raw = gzip.compress(json.dumps({"event_id": event_id, "name": "app_open"}).encode())
    status, _, body = post_events(server, raw, key=server.key, headers={"Content-Encoding": "gzip"})
    assert status == 202 and body["accepted"] == 1
    assert len(row(server, event_id)) == 1
    # a body compressed as several gzip members (RFC 1952), split inside a string
    ids = [eid(), eid()]
    text = json.dumps({"events": [{"event_id": i, "name": "app_open"} for i in ids]}).encode()
    cut = text.index(ids[1].encode()) + 3
    raw = gzip.compress(text[:cut]) + gzip.compress(text[cut:])
    status, _, body = post_events(server, raw, key=server.key, headers={"Content-Encoding": "gzip"})
    assert status == 202 and body["accepted"] == 2, body
    assert all(len(row(server, i)) == 1 for i in ids)
    # a member followed by bytes that are not one
    status, _, body = post_events(server, gzip.compress(text) + b"trailing", key=server.key,
                                  headers={"Content-Encoding": "gzip"})
    assert status == 400 and body["error"]["message"] == "the body is not valid gzip", body
    # zero padding after the last member is not a member (gzip(1) skips it, with a
    # warning); zeros followed by anything else are still refused
    padded = eid()
    raw = gzip.compress(json.dumps({"event_id": padded, "name": "app_open"}).encode())
    status, _, body = post_events(server, raw + bytes(512), key=server.key,
                                  headers={"Content-Encoding": "gzip"})
    assert status == 202 and body["accepted"] == 1, body
    assert len(row(server, padded)) == 1
    status, _, body = post_events(server, raw + bytes(10) + b"x", key=server.key,
                                  headers={"Content-Encoding": "gzip"})
    assert status == 400 and body["error"]["message"] == "the body is not valid gzip", body
    # ... and padding between members, as gzip -dc and Python read it
    ids = [eid(), eid()]
    text = json.dumps({"events": [{"event_id": i, "name": "app_open"} for i in ids]}).encode()
    cut = len(text) // 2
    raw = gzip.compress(text[:cut]) + bytes(100) + gzip.compress(text[cut:]) + bytes(7)
    status, _, body = post_events(server, raw, key=server.key, headers={"Content-Encoding": "gzip"})
    assert status == 202 and body["accepted"] == 2, body


@pytest.mark.parametrize("encoding, status", [
    ("x-gzip", 202), ("GZIP", 202), ("gzip, identity", 202), ("identity ,gzip", 202),
    ("gzip,", 202), (", gzip", 202), ("gzip ,identity", 202),
    ("gzip br", 415), ("gzip ,br", 415), ("gzip, br", 415), ("gzip, gzip", 415),
    ("gzip;q=1", 415), ("deflate", 415),
])
def test_a_content_encoding_list_is_read_as_one(server, encoding, status):
    """Content-Encoding is a list (RFC 9110 8.4): empty elements and identity are
    nothing, gzip once is inflated, anything else (a second coding, however the white
    space falls) is 415: never a coding silently left undone."""
    event_id = eid()
    raw = gzip.compress(json.dumps({"event_id": event_id, "name": "app_open"}).encode())
    got, _, body = post_events(server, raw, key=server.key, headers={"Content-Encoding": encoding})
    assert got == status, (encoding, body)
    if status == 202:
        assert len(row(server, event_id)) == 1
    else:
        assert body["error"]["code"] == "unsupported_encoding", body
    # an identity list stays identity
    event_id = eid()
    plain = json.dumps({"event_id": event_id, "name": "app_open"}).encode()
    got, _, body = post_events(server, plain, key=server.key,
                               headers={"Content-Encoding": "identity, ,identity"})
    assert got == 202, body


def read_head(conn):
    """Reads from conn until the end of an answer's header lines (the server must not
    close first)."""
    answer = b""
    while b"\r\n\r\n" not in answer:
        data = conn.recv(65536)
        assert data, answer
        answer += data
    return answer


def test_the_properties_limit_counts_numbers_as_they_are_stored(server):
    """jsonb writes a number back as a plain decimal (5e-324 as 326 characters), and
    that is what the relay sends: the 32 KiB limit holds for it, not for the text sent."""
    fits, over = eid(), eid()
    status, _, body = post_events(server, {"events": [
        {"event_id": fits, "name": "tiny", "properties": {"a": [5e-324] * 100}},
        {"event_id": over, "name": "tiny", "properties": {"a": [5e-324] * 101}},
    ]}, key=server.key)
    assert status == 202 and body["accepted"] == 1, body
    assert body["rejected"] == [{"index": 1, "error": "properties must be at most 32 KiB as JSON"}], body
    cur = server.db.cursor()
    cur.execute("SELECT length(replace(properties::text, ' ', '')) FROM sdk_events"
                " WHERE project_id = %s AND event_id = %s", (server.project, fits))
    assert cur.fetchone()[0] == 32707           # compact: jsonb puts a space after ':' and ','

    assert row(server, over) == []


def test_a_request_whose_events_grow_too_large_once_stored_keeps_what_fits(server):
    """300 events of 100 tiny numbers each are 230 kB sent but ~33 kB each once stored
    (9.8 MB in all, more than a frame to the store carries): the events that fit are
    stored, the others refused by index with the reason, rather than the whole request
    lost to a timeout."""
    ids = [eid() for _ in range(300)]
    status, _, body = post_events(server, {"events": [
        {"event_id": i, "name": "tiny", "properties": {"a": [5e-324] * 100}} for i in ids]},
        key=server.key)
    assert status == 202, body
    assert 150 < body["accepted"] < 200, body["accepted"]
    refused = [r["index"] for r in body["rejected"]]
    assert refused == list(range(body["accepted"], 300))
    assert all("send fewer per request" in r["error"] for r in body["rejected"])
    assert len(row(server, ids[0])) == 1 and row(server, ids[-1]) == []


def test_a_body_over_the_limit_is_read_to_its_end_but_not_for_ever(server):
    """A client sending a body over 1 MiB without waiting for 100 Continue gets its answer
    once the body is in (an answer sent before would be lost with the connection), up
    to 64 MiB; past that the gateway closes the connection instead of reading for ever,
    with a key or without one (whose answer would be 401), without an "internal error"
    in the log."""
    import socket
    host, port = server.base.split("//")[1].split(":")
    errors_before = server.log().count("internal error")
    for size, answered, auth in ((5 << 20, True, "Authorization: Bearer %s\r\n" % server.key),
                                 (200 << 20, False, "Authorization: Bearer %s\r\n" % server.key),
                                 (200 << 20, False, "")):
        with socket.create_connection((host, int(port)), timeout=20) as conn:
            conn.sendall(("POST /l/events HTTP/1.1\r\nHost: x\r\n%s"
                          "Content-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n"
                          % auth).encode())
            chunk = b"10000\r\n" + b"x" * 65536 + b"\r\n"
            sent, cut = 0, False
            try:
                while sent < size:
                    conn.sendall(chunk)
                    sent += 65536
                conn.sendall(b"0\r\n\r\n")
            except OSError:
                cut = True
            if answered:
                answer = read_head(conn)
                assert answer.startswith(b"HTTP/1.1 413"), answer
            else:
                assert cut and sent < size, (auth, sent)
    status, _, body = post_events(server, {"event_id": eid(), "name": "x"}, key=server.key)
    assert status == 202, body
    assert server.log().count("internal error") == errors_before


def test_a_body_said_far_too_large_is_answered_at_once(server):
    """A Content-Length past what the gateway reads and throws away (64 MiB) gets its 413
    before the body, whether or not the client waits for 100 Continue: reading it to the
    cut would leave the client without any answer."""
    import socket
    host, port = server.base.split("//")[1].split(":")
    with socket.create_connection((host, int(port)), timeout=10) as conn:
        conn.sendall(("POST /l/events HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer %s\r\n"
                      "Content-Type: application/json\r\nContent-Length: 200000000\r\n\r\n"
                      % server.key).encode() + b"{" * 65536)
        answer = read_head(conn)
    assert answer.startswith(b"HTTP/1.1 413"), answer


def test_a_body_said_too_large_is_refused_before_it_is_sent(server):
    """A client that waits for 100 Continue and says its body is over 1 MiB gets 413
    at once: it need not send the body."""
    import socket
    host, port = server.base.split("//")[1].split(":")
    with socket.create_connection((host, int(port)), timeout=10) as conn:
        conn.sendall(("POST /l/events HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer %s\r\n"
                      "Content-Type: application/json\r\nContent-Length: 200000000\r\n"
                      "Expect: 100-continue\r\n\r\n" % server.key).encode())
        answer = read_head(conn)
    assert answer.startswith(b"HTTP/1.1 413"), answer


def test_a_client_waiting_for_100_continue_hears_a_refusal_before_it_sends(server):
    """No key, a wrong content type or encoding: a client that waits for 100 Continue
    gets its 401 or 415 instead, and need not send the body; one the server would take
    gets 100 Continue, then its answer."""
    import socket
    host, port = server.base.split("//")[1].split(":")
    body = json.dumps({"event_id": eid(), "name": "expect"}).encode()
    cases = [
        (b"", b"application/json", None, b"401"),
        (b"Authorization: Bearer " + b"k" * 300 + b"\r\n", b"application/json", None, b"401"),
        (b"Authorization: Bearer " + server.key.encode() + b"\r\n", b"text/plain", None, b"415"),
        (b"Authorization: Bearer " + server.key.encode() + b"\r\n", b"application/json",
         b"br", b"415"),
        (b"Authorization: Bearer " + server.key.encode() + b"\r\n", b"application/json",
         None, b"100"),
    ]
    for auth, content_type, encoding, wanted in cases:
        with socket.create_connection((host, int(port)), timeout=10) as conn:
            conn.sendall(b"POST /l/events HTTP/1.1\r\nHost: x\r\n" + auth
                         + b"Content-Type: " + content_type + b"\r\n"
                         + (b"Content-Encoding: " + encoding + b"\r\n" if encoding else b"")
                         + b"Content-Length: %d\r\nExpect: 100-continue\r\n\r\n" % len(body))
            answer = read_head(conn)
            assert answer.startswith(b"HTTP/1.1 " + wanted), (wanted, answer)
            if wanted != b"100":
                # The body may still come (curl sends it after a second without an
                # answer): the connection closes rather than read it as a request.
                assert b"Connection: close" in answer, answer
                while conn.recv(65536):
                    pass
            else:
                conn.sendall(body)
                answer = answer.split(b"\r\n\r\n", 1)[1]
                while b"\r\n\r\n" not in answer:
                    answer += conn.recv(65536)
                assert answer.startswith(b"HTTP/1.1 202"), answer


def raw_exchange(server, data, timeout=10):
    """Sends data on a new connection and reads until the server closes it; returns the
    bytes read and the seconds it took."""
    import socket
    host, port = server.base.split("//")[1].split(":")
    started = time.monotonic()
    answer = b""
    with socket.create_connection((host, int(port)), timeout=timeout) as conn:
        conn.sendall(data)
        while True:
            chunk = conn.recv(65536)
            if not chunk:
                break
            answer += chunk
    return answer, time.monotonic() - started


def raw_request(server, headers, body, target=b"/l/events"):
    return (b"POST " + target + b" HTTP/1.1\r\nHost: x\r\n"
            + b"".join(name + b": " + value + b"\r\n" for name, value in headers)
            + b"\r\n" + body)


def event_body(event_id):
    return json.dumps({"event_id": event_id, "name": "x"}).encode()


def auth_headers(server):
    return [(b"Authorization", b"Bearer " + server.key.encode()),
            (b"Content-Type", b"application/json")]


@pytest.mark.parametrize("framing, status", [
    ("two lengths", 400), ("length and chunked", 400), ("space before colon", 400),
    ("identity transfer coding", 501), ("gzip transfer coding", 501),
    ("two content types", 400), ("two authorizations", 400),
    ("folded length", 400), ("folded chunked", 400), ("folded user agent", 400),
])
def test_a_request_whose_framing_is_in_doubt_is_refused_and_its_connection_closed(
        server, framing, status):
    """Header lines that could make another server on the way read where the body ends
    otherwise (request smuggling), or that give a header twice, get a JSON error at
    once and the connection closes: nothing after them is read as a request."""
    first, smuggled = eid(), eid()
    body = event_body(first)
    inner = raw_request(server, auth_headers(server) + [(b"Content-Length", b"%d" % len(event_body(smuggled)))],
                        event_body(smuggled))
    length = [(b"Content-Length", b"%d" % len(body))]
    headers = auth_headers(server) + {
        "two lengths": length + [(b"Content-Length", b"%d" % (len(body) + len(inner)))],
        "length and chunked": [(b"Transfer-Encoding", b"chunked"), (b"Content-Length", b"5")],
        "space before colon": [(b"Content-Length ", b"%d" % len(body))],
        "identity transfer coding": [(b"Transfer-Encoding", b"identity")],
        "gzip transfer coding": [(b"Transfer-Encoding", b"gzip, chunked")],
        "two content types": [(b"Content-Type", b"text/plain")] + length,
        "two authorizations": [(b"Authorization", b"Bearer lys_nope")] + length,
        # obs-fold: a line that begins with white space continues the header above
        "folded length": [(b"Content-Length", b"\r\n %d" % len(body))],
        "folded chunked": [(b"Transfer-Encoding", b"\r\n chunked")],
        "folded user agent": [(b"User-Agent", b"Mozilla/5.0\r\n\t(iPhone;CPU)")]
                             + length,
    }[framing]
    if framing in ("length and chunked", "folded chunked"):
        body = b"%x\r\n" % len(body) + body + b"\r\n0\r\n\r\n"
    answer, took = raw_exchange(server, raw_request(server, headers, body + inner))
    head, _, payload = answer.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 %d" % status), answer
    assert b"\r\nConnection: close" in head, answer
    assert json.loads(payload)["error"]["code"] in ("malformed", "not_implemented"), answer
    assert took < 5, took
    assert row(server, first) == [] and row(server, smuggled) == []
    status, _, body = post_events(server, {"event_id": eid(), "name": "x"}, key=server.key)
    assert status == 202, body


@pytest.mark.parametrize("version", ["HTTP/1.1", "HTTP/1.0"])
def test_an_http_1_1_request_without_host_is_refused(server, version):
    """An HTTP/1.1 request without Host is 400 (RFC 9112 3.2) and closes the connection;
    HTTP/1.0 needs no Host."""
    event_id = eid()
    body = event_body(event_id)
    request = raw_request(server, auth_headers(server) + [
        (b"Content-Length", b"%d" % len(body)), (b"Connection", b"close")], body)
    request = request.replace(b"Host: x\r\n", b"").replace(b" HTTP/1.1\r\n",
                                                          b" " + version.encode() + b"\r\n")
    answer, _ = raw_exchange(server, request)
    head, _, payload = answer.partition(b"\r\n\r\n")
    if version == "HTTP/1.0":
        assert re.match(rb"HTTP/1\.[01] 202", head), answer
        assert len(row(server, event_id)) == 1
        return
    assert head.startswith(b"HTTP/1.1 400"), answer
    assert b"\r\nConnection: close" in head, answer
    assert json.loads(payload)["error"]["code"] == "malformed", answer
    assert row(server, event_id) == []


@pytest.mark.parametrize("name", [b"If-Match", b"Idempotency-Key"])
def test_a_repeated_precondition_or_idempotency_header_is_refused(server, name):
    """Only the first line of a header would be read: two If-Match lines made a PATCH
    412 that one line with both tags passes, two Idempotency-Key lines created under the
    first key. Refused (400), as a repeated Authorization is; and every answer says
    X-Content-Type-Options: nosniff."""
    token = server.credentials()["api_token"]
    body = b'{"name": "renamed"}'
    request = (b"PATCH /v1/organization HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer "
               + token.encode() + b"\r\nContent-Type: application/json\r\n"
               + name + b": \"a\"\r\n" + name + b": \"b\"\r\nConnection: close\r\n"
               + b"Content-Length: %d\r\n\r\n" % len(body) + body)
    answer, _ = raw_exchange(server, request)
    head, _, payload = answer.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 400"), answer
    assert json.loads(payload)["error"]["message"] == \
        "the %s header is given more than once" % name.decode(), payload
    assert b"\r\nX-Content-Type-Options: nosniff" in head, head


def test_requests_the_http_layer_cannot_read_do_not_fill_the_log(server):
    """libmicrohttpd logs a line or two for each request it cannot read (here a chunk
    size that is not hexadecimal); the gateway lets at most 20 a minute through."""
    before = server.log().count("libmicrohttpd:")
    bad = raw_request(server, auth_headers(server) + [(b"Transfer-Encoding", b"chunked")],
                      b"zz\r\n{}\r\n0\r\n\r\n")
    for _ in range(60):
        answer, _ = raw_exchange(server, bad)
        assert answer.startswith(b"HTTP/1.1 400"), answer
    time.sleep(0.5)
    logged = server.log().count("libmicrohttpd:") - before
    assert logged <= 41, logged         # a minute may begin meanwhile: 20 + 1 + 20
    status, _, body = post_events(server, {"event_id": eid(), "name": "x"}, key=server.key)
    assert status == 202, body


def test_an_sdk_key_with_white_space_around_it_and_an_absolute_target_are_read(server):
    """White space around a header value is not part of it (RFC 9110), and a request
    target may be in absolute form ("http://host/path", RFC 9112)."""
    first, second = eid(), eid()
    headers = [(b"Authorization", b"Bearer  " + server.key.encode() + b" \t"),
               (b"Content-Type", b"application/json"), (b"Connection", b"close")]
    for event_id, target in ((first, b"/l/events"), (second, b"http://layers.example/l/events")):
        body = event_body(event_id)
        answer, _ = raw_exchange(server, raw_request(
            server, headers + [(b"Content-Length", b"%d" % len(body))], body, target))
        assert answer.startswith(b"HTTP/1.1 202"), answer
        assert len(row(server, event_id)) == 1


def test_content_type_parameters(server):
    """Parameters of application/json are allowed; a charset other than UTF-8 (or ASCII,
    a subset of it) is refused, since the body would be read as something its sender did
    not mean."""
    for value in ("application/json; charset=utf-8", "Application/JSON;charset=\"UTF-8\"",
                  "application/json; charset=utf8 ; foo=bar", "application/json; charset=US-ASCII"):
        status, _, body = post_events(server, {"event_id": eid(), "name": "x"}, key=server.key,
                                      headers={"Content-Type": value})
        assert status == 202 and body["accepted"] == 1, (value, body)
    for value in ("application/json; charset=iso-8859-1", "application/json;charset=utf-16"):
        status, _, body = post_events(server, {"event_id": eid(), "name": "x"}, key=server.key,
                                      headers={"Content-Type": value})
        assert status == 415 and "UTF-8" in body["error"]["message"], (value, body)


@pytest.mark.parametrize("case", [
    "malformed", "content_type", "oversized", "gzip_bomb", "deep_body", "invalid_utf8",
    "ten_thousand", "missing_key", "unknown_key", "empty", "bad_encoding", "not_gzip",
    "events_not_array", "events_null", "top_level_array"])
def test_bad_input_gets_its_status(server, case):
    key = server.key
    headers = {}
    body = json.dumps({"event_id": eid(), "name": "x"}).encode()
    expect = 400
    if case == "malformed":
        body = b'{"event_id": "a", "name": '
    elif case == "content_type":
        headers["Content-Type"] = "text/plain"
        expect = 415
    elif case == "oversized":
        body = json.dumps({"event_id": eid(), "name": "x", "properties": {"p": "x" * (1 << 21)}}).encode()
        expect = 413
    elif case == "gzip_bomb":
        body = gzip.compress(b'{"events": [' + b" " * (64 << 20) + b"]}")
        headers["Content-Encoding"] = "gzip"
        expect = 413
    elif case == "deep_body":
        body = b"[" * 100000 + b"]" * 100000
    elif case == "invalid_utf8":
        body = b'{"event_id": "\xff\xfe", "name": "x"}'
    elif case == "ten_thousand":
        body = json.dumps({"events": [{"event_id": str(i), "name": "x"} for i in range(10000)]}).encode()
        expect = 413
    elif case == "missing_key":
        key = None
        expect = 401
    elif case == "unknown_key":
        key = "lys_thisisnotakey"
        expect = 401
    elif case == "empty":
        body = b""
    elif case == "bad_encoding":
        headers["Content-Encoding"] = "br"
        expect = 415
    elif case == "not_gzip":
        headers["Content-Encoding"] = "gzip"
    elif case == "events_not_array":
        body = json.dumps({"events": {"event_id": eid(), "name": "x"}}).encode()
    elif case == "events_null":
        body = json.dumps({"events": None}).encode()
    elif case == "top_level_array":
        body = json.dumps([{"event_id": eid(), "name": "x"}]).encode()
    status, hdrs, parsed = post_events(server, body, key=key, headers=headers)
    assert status == expect, parsed
    assert parsed["error"]["code"] and parsed["error"]["message"]
    # the server keeps serving
    ok = post_events(server, {"event_id": eid(), "name": "app_open"}, key=server.key)
    assert ok[0] == 202


@pytest.mark.parametrize("body", [
    b'{"event_id": "e1", "name": "purchase", "email": "Jane@Example.com\x01"}',
    b'{"event_id": "e1", "name": "purchase", "phone": "+44 20 7946 0958\xff"}',
    b'{"event_id": "e1", "name": "purchase", "email": "Jane@Example.com" ',
])
def test_a_refusal_does_not_quote_the_body(server, body):
    """The parser's message quotes the bytes near the error, which may be a raw email or
    phone: the 400 answer says what and where, never those bytes."""
    status, _, parsed = post_events(server, body, key=server.key)
    assert status == 400 and parsed["error"]["code"] == "malformed", parsed
    message = parsed["error"]["message"]
    assert "line 1 column" in message, message
    for raw in ("Jane", "Example", "7946", "0958"):
        assert raw not in message, message


def pss_mib(pid):
    with open(f"/proc/{pid}/smaps_rollup") as f:
        return next(int(l.split()[1]) for l in f if l.startswith("Pss:")) // 1024


def test_bodies_being_received_are_bounded_together(server):
    """Bodies count against the gateway's in-flight bound as they arrive, not once whole:
    many large bodies sent at once get 503 overloaded past it (with Retry-After) rather
    than all held; a body without an SDK key is not kept at all (it gets 401)."""
    import socket
    gateway = server.actors()["gateway"]
    host, port = server.base.split("//")[1].split(":")
    size = 1 << 20
    for keyed, count in ((False, 60), (True, 320)):
        before = pss_mib(gateway)
        socks = []
        try:
            for _ in range(count):
                s = socket.create_connection((host, int(port)))
                head = (f"POST /l/events HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                        f"Content-Length: {size}\r\n")
                if keyed:
                    head += f"Authorization: Bearer {server.key}\r\n"
                s.sendall(head.encode() + b"\r\n" + b" " * (size - 1))
                socks.append(s)
            # until the gateway has read what it will (its memory stops growing)
            last, deadline = -1, time.monotonic() + 30
            while time.monotonic() < deadline and pss_mib(gateway) != last:
                last = pss_mib(gateway)
                time.sleep(1)
            held = last - before
            for s in socks:
                s.sendall(b"x")
            answers = []
            for s in socks:
                s.settimeout(15)
                answers.append(s.recv(4096))
        finally:
            for s in socks:
                s.close()
        statuses = [a.split(b" ", 2)[1] for a in answers]
        if not keyed:
            assert statuses == [b"401"] * count, statuses
            assert held < 30, f"{held} MiB held for {count} keyless bodies"
        else:
            overloaded = [a for a in answers if a.startswith(b"HTTP/1.1 503")]
            assert overloaded and b"Retry-After: 1" in overloaded[0], statuses
            assert b'"overloaded"' in overloaded[0], overloaded[0]
            assert set(statuses) == {b"400", b"503"}, statuses   # the rest: not JSON
            # (what the process holds then is not measured: the sanitizer's quarantine
            # keeps what was freed)
    assert post_events(server, {"event_id": eid(), "name": "x"}, key=server.key)[0] == 202


def test_an_unreadable_event_in_a_batch_is_refused_alone(server):
    """Events that do not parse (a syntax error, a number out of range, invalid UTF-8)
    are refused by index with the parser's reason, as are events the gateway refuses
    itself (not an object, nested too deeply); the batch's readable events are stored."""
    good = [eid(), eid()]
    parts = [json.dumps({"event_id": good[0], "name": "x"}).encode(),
             b'{"event_id": "a", "name": "x",}',
             b'{"event_id": "b", "name": "x", "properties": {"n": 123456789012345678901234567890}}',
             b'{"event_id": "c\xff", "name": "x"}',
             b'{"event_id": "d", "name": "x", "properties": {"r": 1e999}}',
             b'"just a string"',
             json.dumps({"event_id": good[1], "name": "x", "properties": {"s": "[{\"}]"}}).encode(),
             b'{"event_id": "e", "name": "x", "properties": ' + b'{"a": ' * 20 + b"1" + b"}" * 21,
             b'{"event_id": "f", "name": "x", "properties": {"s": "a\\u0000b"}}']
    body = b'{"events": [' + b",\n ".join(parts) + b"]}"
    status, _, parsed = post_events(server, body, key=server.key)
    assert status == 202, parsed
    assert parsed["accepted"] == 2, parsed
    refused = {r["index"]: r["error"] for r in parsed["rejected"]}
    assert set(refused) == {1, 2, 3, 4, 5, 7, 8}, parsed
    for index in (1, 2, 3, 4, 8):
        assert refused[index].startswith("the event is not valid JSON: "), refused
    # in the SDK's terms, not jansson's
    assert refused[2].endswith("an integer beyond the signed 64-bit range") and "0xff" in refused[3], refused
    assert refused[4].endswith("a number beyond the range of a double"), refused
    assert refused[8].endswith("\\u0000 is not allowed in a string"), refused
    assert not any("JSON_" in reason for reason in refused.values()), refused
    assert not any("near" in reason for reason in refused.values()), refused
    assert refused[5] == "an event must be a JSON object"
    assert refused[7].startswith("the event nests too deeply"), refused   # the gateway's reason
    for event_id in good:
        assert len(row(server, event_id)) == 1
    # keys beside "events" (an SDK's own, before or after it) leave the batch whole
    for key, before, after in ((b'"events"', b'{"sdk": {"v": "1.2"}, ', b"}"),
                               (b'"\\u0065vents"', b"{", b', "sent_at": 1700000000000}')):
        late = eid()
        status, _, parsed = post_events(server, before + key + b': [' + parts[1] + b", "
                                        + json.dumps({"event_id": late, "name": "x"}).encode()
                                        + b"]" + after, key=server.key)
        assert status == 202 and parsed["accepted"] == 1, parsed
        assert [r["index"] for r in parsed["rejected"]] == [0], parsed
        assert len(row(server, late)) == 1
    status, _, parsed = post_events(server, b'{"events": [{"event_id": "g", "name": "x", "properties":'
                                    b' {"n": -123456789012345678901234567890}}]}', key=server.key)
    assert parsed["rejected"][0]["error"].endswith("an integer beyond the signed 64-bit range"), parsed
    # a batch that is not whole, or not only a batch, is still refused whole
    for broken in (b'{"events": [' + parts[0] + b", " + parts[1],
                   b'{"events": [' + parts[0] + b", " + parts[1] + b'], "more": tru}',
                   b'{"events": [' + parts[0] + b", " + parts[1] + b"]} trailing",
                   b'{"events": [' + parts[0] + b", " + parts[1] + b"}]}"):
        status, _, parsed = post_events(server, broken, key=server.key)
        assert status == 400 and parsed["error"]["code"] == "malformed", (broken, parsed)


def test_a_byte_order_mark_is_ignored(server):
    event_id = eid()
    body = b"\xef\xbb\xbf" + json.dumps({"event_id": event_id, "name": "x"}).encode()
    status, _, parsed = post_events(server, body, key=server.key)
    assert status == 202 and parsed["accepted"] == 1, parsed
    assert len(row(server, event_id)) == 1


def test_epoch_seconds_are_named_in_the_refusal(server):
    status, _, parsed = post_events(server, {"events": [
        {"event_id": eid(), "name": "x", "timestamp": int(time.time())},
        {"event_id": eid(), "name": "x", "timestamp": int(time.time() * 1000)}]}, key=server.key)
    assert status == 202 and parsed["accepted"] == 1, parsed
    [refused] = parsed["rejected"]
    assert refused["index"] == 0 and "epoch seconds" in refused["error"], refused


def test_deeply_nested_properties_reject_that_event_alone(server):
    deep = {}
    cur = deep
    for _ in range(30):
        cur["n"] = {}
        cur = cur["n"]
    good = eid()
    status, _, body = post_events(server, {"events": [
        {"event_id": eid(), "name": "x", "properties": deep},
        {"event_id": good, "name": "x"}]}, key=server.key)
    assert status == 202 and body["accepted"] == 1
    assert [r["index"] for r in body["rejected"]] == [0]


def test_raw_personal_data_is_nowhere_on_disk(server):
    email = "Scan.Me.Unique7731@Example.COM"
    phone = "+44 20 7946 0958"
    ip = "81.2.69.171"
    ua = IPHONE_UA.replace("Safari/604.1", "Safari/604.1 ScanMarker9931")
    ids = []
    for i in range(20):
        ids.append(eid())
        status, _, body = post_events(server, {"event_id": ids[-1], "name": "purchase",
                                               "email": email, "phone": phone},
                                      key=server.key,
                                      headers={"User-Agent": ua, "X-Forwarded-For": ip})
        assert status == 202
    cur = server.db.cursor()
    cur.execute("CHECKPOINT")
    cur.execute("SELECT pg_switch_wal()")
    needles = [email.encode(), email.lower().encode(), email.strip().lower().encode(),
               phone.encode(), b"442079460958", b"+442079460958", ip.encode(),
               b"ScanMarker9931", ua.encode()[:60]]
    found = files_containing(server.data_dir, needles)
    assert not found, found


def test_tap_redacts_personal_data_on_the_wire(server):
    import subprocess
    import threading
    from lyserver import binary
    email, ip = "Tap.Secret.991@example.com", "81.2.69.99"
    stop = threading.Event()

    def traffic():
        while not stop.is_set():
            post_events(server, {"event_id": eid(), "name": "purchase", "email": email,
                                 "phone": "+1 650 555 0199"},
                        key=server.key, headers={"User-Agent": ANDROID_UA, "X-Forwarded-For": ip})
            stop.wait(0.05)

    t = threading.Thread(target=traffic, daemon=True)
    t.start()
    try:
        out = subprocess.run([binary("layers-tap"), "--filter", "EVENTS_SUBMIT", "--count", "2",
                              "--timeout", "30"], env=server.env, capture_output=True,
                             text=True, timeout=60)
    finally:
        stop.set()
        t.join()
    assert out.returncode == 0, out.stderr
    for line in out.stdout.splitlines():
        frame = json.loads(line)
        fields = frame["fields"]
        assert fields["client_ip"] == "[redacted]"
        assert fields["user_agent"] == "[redacted]"
        assert fields["events"][0]["email"] == "[redacted]"
        assert fields["events"][0]["phone"] == "[redacted]"
        assert email not in line and ip not in line and "Android 13" not in line


def burst(server, source, heads, body=b""):
    """Opens a connection from the address source per request head (bytes), writes every
    request before reading any answer, then returns the statuses, in order."""
    import socket
    host, port = server.base.split("//")[1].split(":")
    socks = []
    try:
        for head in heads:
            s = socket.socket()
            s.bind((source, 0))
            s.connect((host, int(port)))
            socks.append(s)
        for s, head in zip(socks, heads):
            s.sendall(head + b"Content-Length: %d\r\n\r\n" % len(body) + body)
        statuses = []
        for s in socks:
            s.settimeout(30)
            statuses.append(int(s.recv(4096).split(b" ", 2)[1]))
        return statuses
    finally:
        for s in socks:
            s.close()


def test_keys_sent_at_once_count_as_failures_before_their_answers(server):
    """A client that sends hundreds of different keys at once, before any answer comes,
    gets no more guesses than one that waits for each: 100 (401), the rest 429 at once.
    So for API tokens."""
    import secrets
    events = [b"POST /l/events HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
              b"Authorization: Bearer lys_" + secrets.token_hex(16).encode() + b"\r\n"
              for _ in range(300)]
    statuses = burst(server, "127.0.0.123", events, b'{"event_id": "e", "name": "x"}')
    assert statuses.count(401) == 100 and statuses.count(429) == 200, statuses
    api = [b"GET /v1/me HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer lya_"
           + secrets.token_hex(16).encode() + b"\r\n" for _ in range(150)]
    statuses = burst(server, "127.0.0.124", api)
    assert statuses.count(401) == 100 and statuses.count(429) == 50, statuses


def test_many_good_keys_from_one_address_are_never_refused(server):
    """Keys that turn out good end their 'being checked' count: a forwarder that carries
    the events of 120 projects' keys from one address is served every time."""
    token = server.credentials()["api_token"]
    keys = []
    for _ in range(120):
        status, _, made = api_call(server, "POST", f"/v1/projects/{server.project}/sdk-keys",
                                   token=token, body={})
        assert status == 201, made
        keys.append(made["key"])
    body = b'{"event_id": "e", "name": "x"}'
    for round_ in range(2):
        statuses = [burst(server, "127.0.0.127",
                          [b"POST /l/events HTTP/1.1\r\nHost: x\r\nContent-Type: application/json"
                           b"\r\nAuthorization: Bearer " + k.encode() + b"\r\n"], body)[0]
                    for k in keys]
        assert set(statuses) == {202}, statuses


def test_failures_of_the_minute_before_still_count(server):
    """The failure limit holds over any 60 s, not per fixed minute: failures just before a
    minute ends still count just after it."""
    key = "lys_slidingwindow" + uuid.uuid4().hex
    head = [b"POST /l/events HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            b"Authorization: Bearer " + key.encode() + b"\r\n"]
    body = b'{"event_id": "e", "name": "x"}'
    first = [burst(server, "127.0.0.126", head, body)[0] for _ in range(9)]
    assert first == [401] * 9
    time.sleep(60.5)
    later = [burst(server, "127.0.0.126", head, body)[0] for _ in range(5)]
    assert later.count(401) <= 2 and later[-1] == 429, later


def test_repeated_bad_keys_are_refused_while_good_keys_are_served(server):
    statuses = []
    for _ in range(15):
        statuses.append(post_events(server, {"event_id": eid(), "name": "x"}, key="lys_wrong-key-1")[0])
    assert statuses[:10] == [401] * 10
    assert 429 in statuses[10:], statuses
    status, headers, body = post_events(server, {"event_id": eid(), "name": "x"}, key="lys_wrong-key-1")
    assert status == 429 and int(headers["Retry-After"]) > 0
    assert body["error"]["code"] == "too_many_failures"
    # a good key from the same address is still served
    assert post_events(server, {"event_id": eid(), "name": "x"}, key=server.key)[0] == 202


def test_attribution_token_is_not_kept_without_the_apple_layer(server):
    event_id = eid()
    status, _, body = post_events(server, {"event_id": event_id, "name": "install",
                                           "attribution_token": "tok-abc-123"}, key=server.key)
    assert status == 202, body
    [r] = row(server, event_id)
    assert r["attribution_token"] is None


def test_old_deduplication_keys_are_forgotten_in_chunks():
    """The store forgets sdk_event_ids keys older than 8 days, 5,000 per call between
    batches: a re-sent event past that window is stored again, one inside it is still a
    duplicate."""
    with Layersd() as s:
        key = s.credentials()["sdk_key"]
        project, org = s.credentials()["project_id"], s.credentials()["org_id"]
        db = db_connect(s)
        cur = db.cursor()
        cur.execute("""INSERT INTO sdk_event_ids (project_id, event_id, org_id, received_at)
                       SELECT %s, 'old-' || g, %s, now () - interval '9 days'
                         FROM generate_series (1, 12000) g""", (project, org))
        cur.execute("""INSERT INTO sdk_event_ids (project_id, event_id, org_id, received_at)
                       VALUES (%s, 'recent-1', %s, now () - interval '7 days')""", (project, org))

        def old_keys():
            cur.execute("SELECT count (*) FROM sdk_event_ids WHERE event_id LIKE 'old-%%'")
            return cur.fetchone()[0]
        for _ in range(20):                 # each batch lets the store forget a chunk
            if old_keys() == 0:
                break
            assert post_events(s, {"event_id": eid(), "name": "x"}, key=key)[0] == 202
        assert old_keys() == 0
        status, _, body = post_events(s, {"events": [{"event_id": "old-7", "name": "x"},
                                                     {"event_id": "recent-1", "name": "x"}]},
                                      key=key)
        assert status == 202 and (body["accepted"], body["duplicates"]) == (1, 1), body
        db.close()


def test_timestamp_windows_are_configurable():
    """LAYERS_EVENT_MAX_AGE and LAYERS_EVENT_MAX_FUTURE set the window of accepted event
    times, named in the reasons; the store then recognizes a re-sent event for that
    window and a day: a key older than that is forgotten, a younger one is not."""
    with Layersd(env={"LAYERS_EVENT_MAX_AGE": "1h", "LAYERS_EVENT_MAX_FUTURE": "30s"}) as s:
        key, project = s.credentials()["sdk_key"], s.credentials()["project_id"]
        now = int(time.time() * 1000)
        db = db_connect(s)
        db.autocommit = True
        cur = db.cursor()
        # keys received 26 hours ago (past 1 h + 1 day) and 20 hours ago (within it)
        old, young = eid(), eid()
        for event_id, hours in ((old, 26), (young, 20)):
            cur.execute("INSERT INTO sdk_event_ids (project_id, event_id, org_id, received_at)"
                        " SELECT project_id, %s, org_id, now () - %s * interval '1 hour'"
                        "   FROM projects WHERE project_id = %s", (event_id, hours, project))
        status, _, body = post_events(s, {"events": [
            {"event_id": eid(), "name": "x", "timestamp": now - 3540 * 1000},
            {"event_id": eid(), "name": "x", "timestamp": now - 3660 * 1000},
            {"event_id": eid(), "name": "x", "timestamp": now + 20 * 1000},
            {"event_id": eid(), "name": "x", "timestamp": now + 40 * 1000}]}, key=key)
        assert status == 202 and body["accepted"] == 2, body
        assert body["rejected"] == [
            {"index": 1, "error": "timestamp is more than 1 hour in the past"},
            {"index": 3, "error": "timestamp is more than 30 seconds in the future"}], body
        # the batch above let the store expire keys
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            cur.execute("SELECT count(*) FROM sdk_event_ids WHERE event_id = %s", (old,))
            if cur.fetchone()[0] == 0:
                break
            time.sleep(0.1)
        else:
            raise AssertionError("the 26-hour-old key was not forgotten")
        status, _, body = post_events(s, {"events": [{"event_id": old, "name": "x"},
                                                     {"event_id": young, "name": "x"}]}, key=key)
        assert status == 202 and (body["accepted"], body["duplicates"]) == (1, 1), body
        db.close()


def test_months_past_the_retention_are_dropped():
    """With LAYERS_EVENT_RETENTION, the store drops each month of sdk_events once the
    whole month is older than the retention, at its partition check (at start, then
    hourly); younger months stay."""
    import datetime
    import signal
    with Layersd(env={"LAYERS_EVENT_RETENTION": "60d"}) as s:
        creds = s.credentials()
        db = db_connect(s)
        db.autocommit = True
        cur = db.cursor()
        today = datetime.datetime.now(datetime.timezone.utc)
        recent = (today - datetime.timedelta(days=40)).replace(day=1, hour=0, minute=0, second=0,
                                                                microsecond=0)
        months = {"sdk_events_p202001": datetime.datetime(2020, 1, 1, tzinfo=datetime.timezone.utc),
                  "sdk_events_p%04d%02d" % (recent.year, recent.month): recent}
        for name, start in months.items():
            end = (start + datetime.timedelta(days=32)).replace(day=1)
            cur.execute("SELECT to_regclass (%s)", ("public." + name,))
            if cur.fetchone()[0] is None:     # owned by the schema's owner, as ours are
                cur.execute("SET ROLE layers_owner; CREATE TABLE %s PARTITION OF sdk_events"
                            " FOR VALUES FROM ('%s') TO ('%s'); RESET ROLE"
                            % (name, start.isoformat(), end.isoformat()))
            cur.execute("INSERT INTO sdk_events (org_id, project_id, event_id, name, event_time,"
                        " received_at) VALUES (%s, %s, %s, 'x', %s, %s)",
                        (creds["org_id"], creds["project_id"], eid(), start, start))
        os.kill(s.actors()["store"], signal.SIGKILL)      # its next session checks at once
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            cur.execute("SELECT to_regclass ('public.sdk_events_p202001')")
            if cur.fetchone()[0] is None:
                break
            time.sleep(0.1)
        else:
            raise AssertionError("the month of 2020-01 is still there: " + s.log()[-2000:])
        cur.execute("SELECT count(*) FROM sdk_events WHERE received_at = %s", (recent,))
        assert cur.fetchone()[0] == 1
        cur.execute("SELECT count(*) FROM sdk_events WHERE received_at < '2021-01-01'")
        assert cur.fetchone()[0] == 0
        # the line comes once the store's transaction is over, a moment after the drop
        deadline = time.monotonic() + 10
        while "dropped 1 month of events older than the retention" not in s.log():
            assert time.monotonic() < deadline, s.log()[-2000:]
            time.sleep(0.1)
        # and ingest goes on
        status, _, body = post_events(s, {"event_id": eid(), "name": "x"}, key=creds["sdk_key"])
        assert status == 202 and body["accepted"] == 1, body
        db.close()


@contextlib.contextmanager
def geo_server(tmp_path):
    """A layersd whose LAYERS_GEOIP_DB is a test .mmdb in a folder of its own (its
    client IP taken from X-Forwarded-For); yields (server, folder, the database's path,
    region): region() sends an event from 81.2.69.160 and answers the stored
    (geo_country, geo_region)."""
    folder = tmp_path / "geo"
    folder.mkdir()
    os.chmod(str(folder), 0o755)
    path = make_mmdb(str(folder / "city.mmdb"))
    os.chmod(path, 0o644)
    with Layersd(env={"LAYERS_GEOIP_DB": path, "LAYERS_TRUSTED_PROXIES": "127.0.0.1"}) as s:
        db = db_connect(s)
        key = s.credentials()["sdk_key"]

        def region():
            event_id = eid()
            status, _, body = post_events(s, {"event_id": event_id, "name": "x"}, key=key,
                                          headers={"X-Forwarded-For": "81.2.69.160"})
            assert status == 202 and body["accepted"] == 1, (status, body)
            cur = db.cursor()
            cur.execute("SELECT geo_country, geo_region FROM sdk_events WHERE event_id = %s",
                        (event_id,))
            return cur.fetchone()
        try:
            yield s, folder, path, region
        finally:
            db.close()


def test_a_new_geoip_database_is_used_without_a_restart(tmp_path):
    """A new .mmdb put in place of LAYERS_GEOIP_DB with a rename (as geoipupdate does) is
    used within seconds; a broken one is refused with a warning and the last good one
    stays in use."""
    with geo_server(tmp_path) as (s, folder, path, region):
        def replace(make):
            staged = str(folder / "staged.mmdb")
            make(staged)
            os.chmod(staged, 0o644)
            os.replace(staged, path)

        assert region() == ("GB", "ENG")
        replace(lambda p: make_mmdb(p, "next"))
        deadline = time.monotonic() + 15
        while region() != ("FR", "IDF"):
            assert time.monotonic() < deadline, "the new database was not used"
            time.sleep(0.3)
        assert "opened the new geo-IP database" in s.log()
        replace(lambda p: open(p, "wb").write(b"not a MaxMind database"))
        deadline = time.monotonic() + 15
        while "still using the one opened before" not in s.log():
            assert time.monotonic() < deadline, s.log()[-2000:]
            region()
            time.sleep(0.3)
        assert region() == ("FR", "IDF")


def test_actors_restarted_after_the_geoip_database_went_away_still_run(tmp_path):
    """The file was good at start and is then removed (or broken): an ingest actor or
    gateway restarted meanwhile must still run (no region until the file is back), not
    fail to start again and again with the server down."""
    with geo_server(tmp_path) as (s, folder, path, region):
        assert region() == ("GB", "ENG")
        saved = str(folder / "saved.mmdb")
        os.replace(path, saved)
        for role in ("ingest", "gateway"):
            before = s.actors()[role]
            os.kill(before, signal.SIGKILL)
            deadline = time.monotonic() + 30
            while s.actors().get(role) in (None, before):
                assert time.monotonic() < deadline, s.log()[-3000:]
                time.sleep(0.1)
        s.wait_ready()
        assert region() == (None, None)
        assert "events get no region until it opens" in s.log()
        os.replace(saved, path)
        deadline = time.monotonic() + 20
        while region() != ("GB", "ENG"):
            assert time.monotonic() < deadline, s.log()[-3000:]
            time.sleep(0.5)


def test_a_geoip_database_replaced_during_a_quiet_spell_serves_the_next_request(tmp_path):
    """A new .mmdb that was put in place while no event came (last written a second ago
    or more) is used by the very next request, not only by the one after; a file that
    cannot be opened is warned of once and not read again until it changes, and each
    different bad file gets its own warning."""
    with geo_server(tmp_path) as (s, folder, path, region):
        def replace(staged):
            os.chmod(staged, 0o644)
            old = time.time() - 5
            os.utime(staged, (old, old))        # written a while ago, as geoipupdate's
            os.replace(staged, path)

        assert region() == ("GB", "ENG")
        replace(make_mmdb(str(folder / "next.mmdb"), "next"))
        time.sleep(2.5)                         # quiet: no request looks meanwhile
        assert region() == ("FR", "IDF")
        ingest = s.actors()["ingest"]

        def read_bytes():
            with open("/proc/%d/io" % ingest) as f:
                return int(next(l for l in f if l.startswith("rchar:")).split()[1])
        for n, size in enumerate((30 << 20, 20 << 20)):
            bad = str(folder / ("bad%d.mmdb" % n))
            with open(bad, "wb") as f:
                f.write(os.urandom(size))
            replace(bad)
            time.sleep(1.2)
            before = read_bytes()
            for _ in range(5):                  # five looks at the file, a second apart
                assert region() == ("FR", "IDF")
                time.sleep(1.05)
            assert read_bytes() - before < size * 1.5, "the bad file is read at every look"
            assert s.log().count("still using the one opened before") == n + 1, s.log()[-3000:]
        # rewritten in place keeping the bad file's size and times (cp -p): still a
        # change, and the good database is used
        with open(make_mmdb(str(folder / "good.mmdb")), "rb") as f:
            good = f.read()
        with open(path, "wb") as f:
            f.write(good[:-100] + b"\0" * 100)
        old = time.time() - 3600
        os.utime(path, (old, old))
        wait = time.monotonic() + 15
        while s.log().count("still using the one opened before") < 3:
            assert time.monotonic() < wait, s.log()[-3000:]
            region()
            time.sleep(0.3)
        with open(path, "r+b") as f:
            f.write(good)
        os.utime(path, (old, old))
        wait = time.monotonic() + 15
        while region() != ("GB", "ENG"):
            assert time.monotonic() < wait, "a rewrite keeping size and times was not seen"
            time.sleep(0.3)


def test_a_geoip_database_rewritten_in_place_is_used_once_written(tmp_path):
    """A new .mmdb copied over LAYERS_GEOIP_DB in place (cp, shutil.copyfile: the same
    file cut to nothing, then written) neither crashes an ingest actor that has the old
    one open (lookups go on with the old one meanwhile) nor is read half-written: once
    it has stopped changing it is used."""
    with geo_server(tmp_path) as (s, folder, path, region):
        with open(make_mmdb(str(folder / "next.mmdb"), "next"), "rb") as f:
            fresh = f.read()
        assert region() == ("GB", "ENG")
        with open(path, "r+b") as f:
            f.truncate(0)                       # cut: the old map would now fault
            f.flush()
            for _ in range(8):                  # lookups while it is empty, then half written
                assert region() == ("GB", "ENG")
                time.sleep(0.25)
            f.write(fresh[:len(fresh) // 2])
            f.flush()
            for _ in range(8):
                assert region() == ("GB", "ENG")
                time.sleep(0.25)
            f.write(fresh[len(fresh) // 2:])
        deadline = time.monotonic() + 15
        while region() != ("FR", "IDF"):
            assert time.monotonic() < deadline, "the rewritten database was not used"
            time.sleep(0.3)
        log = s.log()
        assert "restarting" not in log, log[-3000:]


def test_a_project_over_its_event_rate_gets_429():
    """LAYERS_PROJECT_EVENT_RATE: a project may send that many events a second through a
    gateway, in bursts of up to ten seconds' worth (at least one full request); past
    that it gets 429 rate_limited with Retry-After and nothing of the request is stored,
    while other projects go on."""
    with Layersd(env={"LAYERS_PROJECT_EVENT_RATE": "50"}) as s:
        creds = s.credentials()
        key, token = creds["sdk_key"], creds["api_token"]
        status, _, other = api_call(s, "POST", "/v1/projects", token, {"name": "Other app"})
        assert status == 201, other
        status, _, made = api_call(s, "POST", "/v1/projects/%s/sdk-keys" % other["project_id"],
                                   token, {})
        assert status == 201, made

        def batch():
            return {"events": [{"event_id": eid(), "name": "x"} for _ in range(20)]}

        accepted, limited = 0, None
        for _ in range(40):                     # 800 events against a burst of 500
            status, headers, body = post_events(s, batch(), key=key)
            if status == 202:
                accepted += body["accepted"]
                continue
            limited = (status, headers, body)
            break
        assert limited, "never limited"
        status, headers, body = limited
        assert status == 429 and body["error"]["code"] == "rate_limited", body
        assert "50 events a second" in body["error"]["message"]
        assert 1 <= int(headers["Retry-After"]) <= 2, headers
        assert 500 <= accepted <= 560, accepted
        # another project is not held back
        status, _, body = post_events(s, batch(), key=made["key"])
        assert status == 202 and body["accepted"] == 20, body
        # and the limited one goes on once it waited
        time.sleep(int(headers["Retry-After"]))
        status, _, body = post_events(s, batch(), key=key)
        assert status == 202 and body["accepted"] == 20, body
        db = db_connect(s)
        cur = db.cursor()
        cur.execute("SELECT count(*) FROM sdk_events WHERE project_id = %s", (creds["project_id"],))
        assert cur.fetchone()[0] == accepted + 20
        db.close()
        metrics = api_call(s, "GET", "/metrics")[2]
        metrics = metrics.decode() if isinstance(metrics, bytes) else metrics
        assert "layers_gateway_rate_limited_total 1" in metrics, metrics[-3000:]
