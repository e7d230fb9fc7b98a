"""layers-tap shows live actor frames as JSON lines; the frames on the tap sockets are
plain msgpack, readable by an independent implementation (pyzmq + python3-msgpack)."""
import glob
import json
import os
import subprocess
import threading
import time

import msgpack
import pytest
import zmq

from lyserver import Layersd, binary, children_of, http


@pytest.fixture(scope="module")
def server():
    with Layersd() as s:
        yield s


class Traffic:
    """Sends requests until stopped: send() every pause seconds; by default /readyz
    (gateway PING -> store, PONG back)."""

    def __init__(self, server, send=None, pause=0.05):
        self.server = server
        self.send = send or (lambda: http("GET", server.base + "/readyz", timeout=2))
        self.pause = pause
        self.stopping = threading.Event()
        self.thread = threading.Thread(target=self.run, daemon=True)

    def run(self):
        while not self.stopping.is_set():
            try:
                self.send()
            except OSError:
                pass
            self.stopping.wait(self.pause)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.stopping.set()
        self.thread.join()


def run_tap(server, *args):
    return subprocess.run([binary("layers-tap"), *args], env=server.env,
                          capture_output=True, text=True, timeout=60)


def test_tap_prints_live_frames(server):
    with Traffic(server):
        out = run_tap(server, "--count", "8", "--timeout", "30")
    assert out.returncode == 0, out.stderr
    lines = [json.loads(line) for line in out.stdout.splitlines()]
    assert len(lines) == 8
    seen = set()
    for line in lines:
        assert set(line) == {"time", "actor", "pid", "direction", "type", "fields"}
        assert line["time"].endswith("Z")
        seen.add((line["actor"], line["direction"], line["type"]))
        if line["type"] == "PING":
            assert line["fields"]["sender"] == "gateway"
            assert isinstance(line["fields"]["request_id"], int)
    assert ("gateway", "out", "PING") in seen or ("store", "in", "PING") in seen
    assert ("store", "out", "PONG") in seen or ("gateway", "in", "PONG") in seen


def test_key_info_leaves_out_a_country_code_the_project_has_not(server):
    """KEY_INFO carries default_country_code only when the project has one
    (docs/protocol.md), like every other optional field of a frame."""
    from lyserver import api_call, post_events
    creds = server.credentials()
    status, _, made = api_call(server, "POST", f"/v1/projects/{creds['project_id']}/sdk-keys",
                               token=creds["api_token"], body={})
    assert status == 201, made
    # a key the gateway has not looked up yet
    with Traffic(server, lambda: post_events(server, {"event_id": "kc", "name": "x"},
                                             key=made["key"]), pause=0.2):
        out = run_tap(server, "--filter", "KEY_INFO", "--count", "1", "--timeout", "30")
    assert out.returncode == 0, out.stderr
    fields = json.loads(out.stdout.splitlines()[0])["fields"]
    assert fields["status"] == "found" and "default_country_code" not in fields, fields


def test_tap_redacts_api_queries_and_bodies(server):
    """A client may put a token or an email in a /v1 query (or the body): the tap shows
    neither."""
    import urllib.parse
    from lyserver import api_call
    token = server.credentials()["api_token"]
    secret = "lya_querysecret" + "9" * 20

    def send():
        api_call(server, "GET", "/v1/projects?" + urllib.parse.urlencode(
            {"token": secret, "email": "tap.query@example.com"}), token=token)
        api_call(server, "POST", "/v1/projects", token=token,
                 body={"name": secret, "no_such_field": 1})   # 422: nothing made
        # the path too is anyone's to write, with a token or without
        api_call(server, "GET", "/v1/members/tap.path@example.com", token=token)
        api_call(server, "GET", "/v1/projects/+447700900123/events")

    with Traffic(server, send):
        out = run_tap(server, "--filter", "API_REQUEST", "--count", "12", "--timeout", "30")
    assert out.returncode == 0, out.stderr
    assert secret not in out.stdout and "tap.query" not in out.stdout, out.stdout
    assert "tap.path" not in out.stdout and "7700900123" not in out.stdout, out.stdout
    fields = [json.loads(l)["fields"] for l in out.stdout.splitlines()]
    assert "[redacted]" in [f.get("query") for f in fields], fields
    paths = {f.get("path") for f in fields}
    assert "/v1/members/[email]" in paths and "/v1/projects/[phone]/events" in paths, paths


def test_tap_filter_and_actor_selection(server):
    with Traffic(server):
        out = run_tap(server, "--filter", "PONG", "--count", "3", "--timeout", "30", "store")
    assert out.returncode == 0, out.stderr
    lines = [json.loads(line) for line in out.stdout.splitlines()]
    assert len(lines) == 3
    assert all(l["type"] == "PONG" and l["actor"] == "store" for l in lines)
    assert all(l["fields"]["db_ok"] is True for l in lines)


def test_tap_timeout_without_traffic_fails_count(server):
    out = run_tap(server, "--filter", "ERROR", "--count", "1", "--timeout", "1")
    assert out.returncode == 1


def test_tap_frames_are_plain_msgpack(server):
    ctx = zmq.Context()
    sub = ctx.socket(zmq.SUB)
    sub.setsockopt(zmq.SUBSCRIBE, b"")
    sub.setsockopt(zmq.LINGER, 0)
    endpoints = glob.glob(os.path.join(server.data_dir, "tap", "*.*"))
    assert endpoints
    for path in endpoints:
        sub.connect("ipc://" + path)
    frames = []
    try:
        with Traffic(server):
            deadline = time.monotonic() + 20
            while len(frames) < 6 and time.monotonic() < deadline:
                if sub.poll(200):
                    frames.append(sub.recv())
    finally:
        sub.close()
        ctx.term()
    assert len(frames) >= 6
    for raw in frames:
        tap = msgpack.unpackb(raw, raw=False)
        version, usec, actor, pid, direction, message = tap
        assert version == 1
        assert abs(usec / 1e6 - time.time()) < 60
        assert actor in ("gateway", "store", "api")
        assert direction in ("in", "out")
        assert message[0] == 1              # protocol version
        assert message[1] in (1, 2)         # PING, PONG
        assert isinstance(message[2], int)  # request_id


@pytest.mark.parametrize("args, says", [
    (["--count", "abc"], "--count"), (["--count", "0"], "--count"), (["--timeout", "abc"], "--timeout"),
    (["--timeout", "-1"], "--timeout"), (["--count"], "--count"), (["--filter"], "--filter"),
    (["nosuch"], "not an actor"), (["--bogus"], "not an option"),
])
def test_tap_refuses_bad_arguments(server, args, says):
    """A bad option value or an unknown actor is an error (exit 2) naming it, not a tap
    that ends at once or runs for ever."""
    out = run_tap(server, *args)
    assert out.returncode == 2 and says in out.stderr, (args, out.returncode, out.stderr)


def test_tap_says_when_there_is_no_tap_to_read(server, tmp_path):
    """A wrong LAYERS_DATA_DIR would look like a quiet server: layers-tap says once that
    it finds no running actor's tap there (and goes on waiting); with the server's
    directory it says nothing of the kind."""
    env = dict(server.env, LAYERS_DATA_DIR=str(tmp_path / "elsewhere"))
    out = subprocess.run([binary("layers-tap"), "--timeout", "1"], env=env,
                         capture_output=True, text=True, timeout=10)
    assert out.returncode == 0 and "no running actor's tap" in out.stderr, out
    assert str(tmp_path / "elsewhere") in out.stderr, out.stderr
    out = run_tap(server, "--timeout", "1")
    assert "no running actor's tap" not in out.stderr, out.stderr


def test_tap_version(server):
    out = run_tap(server, "--version")
    assert out.returncode == 0 and out.stdout.startswith("layers-tap "), out


def test_tap_files_of_dead_processes_do_not_pile_up():
    """Each actor process binds a tap file (tap/ACTOR.PID); one killed cannot remove its
    own, so the next tap made removes those of processes that are gone: after restarts
    the directory holds the taps of the running actors only."""
    import signal as signals
    with Layersd() as server:
        tap_dir = os.path.join(server.data_dir, "tap")
        for _ in range(3):
            before = server.actors()["ingest"]
            os.kill(before, signals.SIGKILL)
            deadline = time.monotonic() + 20
            while server.actors().get("ingest") in (None, before):
                assert time.monotonic() < deadline, server.log()[-2000:]
                time.sleep(0.1)
            server.wait_ready()
        time.sleep(0.5)
        running = {str(pid) for pid in children_of(server.proc.pid)}   # two relays too
        files = sorted(os.listdir(tap_dir))
        assert {name.rsplit(".", 1)[1] for name in files} <= running, (files, running)
