"""Black-box harness: runs the real layersd against a throwaway data directory (embedded
PostgreSQL by default) and checks, when it stops, that no sanitizer complained."""
import contextlib
import json
import os
import signal
import socket
import subprocess
import tempfile
import time
import shutil
import urllib.request
import urllib.error

BUILD = os.environ.get("LY_BUILD_DIR", os.path.join(os.path.dirname(__file__), "..", "build", "test"))


def binary(name):
    return os.path.join(BUILD, name)


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def free_endpoint_port():
    """A free port below the ephemeral range (32768 and up), for a --connect endpoint:
    actors connect to an endpoint before its owner binds it, and a connection to a
    port of the ephemeral range on the loopback may be given that very port as its own
    source (TCP self-connect), holding it so that the bind fails."""
    import random
    while True:
        port = random.randrange(20000, 32000)
        s = socket.socket()
        try:
            s.bind(("127.0.0.1", port))
            return port
        except OSError:
            continue
        finally:
            s.close()


def http(method, url, body=None, headers=None, timeout=5):
    """Returns (status, headers, body bytes); never raises on HTTP error statuses."""
    req = urllib.request.Request(url, data=body, method=method, headers=headers or {})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            return r.status, dict(r.headers), r.read()
    except urllib.error.HTTPError as e:
        return e.code, dict(e.headers), e.read()


def children_of(pid):
    """Direct child pids of pid, from /proc."""
    kids = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
            if int(fields[1]) == pid:
                kids.append(int(entry))
        except (OSError, IndexError):
            pass
    return kids


def cmdline(pid):
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return f.read().split(b"\0")
    except OSError:
        return []


def alive(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


class Layersd:
    """One layersd supervisor with its own data dir and HTTP port."""

    def __init__(self, env=None, args=(), data_dir=None):
        self.owns_dir = data_dir is None
        self.data_dir = data_dir or tempfile.mkdtemp(prefix="layers-test-")
        os.chmod(self.data_dir, 0o755)
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.env = dict(os.environ)
        self.env.update({"LAYERS_DATA_DIR": self.data_dir,
                         "LAYERS_HTTP_ADDR": f"127.0.0.1:{self.port}",
                         "LAYERS_LOG_LEVEL": "info"})
        self.env.pop("LAYERS_DATABASE_URL", None)
        self.env.update(env or {})
        self.args = list(args)
        self.log_path = os.path.join(self.data_dir, "layersd.log")
        self.proc = None

    def start(self, wait=True, timeout=60):
        log = open(self.log_path, "ab")
        self.proc = subprocess.Popen([binary("layersd")] + self.args, env=self.env,
                                     stdout=log, stderr=subprocess.STDOUT,
                                     stdin=subprocess.DEVNULL)
        log.close()
        if wait:
            self.wait_ready(timeout)
        return self

    def log(self):
        with open(self.log_path, "rb") as f:
            return f.read().decode("utf-8", "replace")

    def wait_ready(self, timeout=60, path="/readyz"):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(f"layersd exited with {self.proc.returncode}:\n{self.log()}")
            try:
                status, _, _ = http("GET", self.base + path, timeout=2)
                if status == 200:
                    return
            except OSError:
                pass
            time.sleep(0.05)
        raise AssertionError(f"layersd not ready after {timeout}s:\n{self.log()}")

    def actors(self):
        """{role: pid} of the supervised actor processes."""
        found = {}
        for pid in children_of(self.proc.pid):
            argv = cmdline(pid)
            if b"--only" in argv:
                found[argv[argv.index(b"--only") + 1].decode()] = pid
        return found

    def credentials(self):
        with open(os.path.join(self.data_dir, "credentials.json")) as f:
            return json.load(f)

    def stop(self, timeout=10):
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
                raise AssertionError("layersd did not stop on SIGTERM within %ss" % timeout)
        self.check_sanitizers()

    def check_sanitizers(self):
        text = self.log()
        for marker in ("AddressSanitizer", "LeakSanitizer", "runtime error:",
                       "dangling", "Assertion"):
            assert marker not in text, f"{marker} in layersd log:\n{text[-6000:]}"

    def cleanup(self):
        try:
            self.stop()
        finally:
            if self.owns_dir:
                # the embedded cluster is owned by postgres; root can remove it
                shutil.rmtree(self.data_dir, ignore_errors=True)

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.cleanup()


def db_connect(server, dbname="layers", user="postgres"):
    """An admin psycopg2 session to the server's embedded PostgreSQL."""
    import psycopg2
    conn = psycopg2.connect(host=os.path.join(server.data_dir, "pg", "run"),
                            dbname=dbname, user=user)
    conn.autocommit = True
    return conn


@contextlib.contextmanager
def held(server, statement, params=()):
    """An admin transaction that runs statement (a LOCK TABLE, a SELECT ... FOR UPDATE)
    and holds what it took until the block ends (the connection is yielded, for more)."""
    import psycopg2
    conn = db_connect(server)
    conn.autocommit = False
    try:
        conn.cursor().execute(statement, params)
        yield conn
    finally:
        try:
            conn.rollback()
            conn.close()
        except psycopg2.Error:
            pass                            # PostgreSQL stopped meanwhile (with layersd)


def lock_waits(conn, role):
    """How many sessions of role wait on a lock now (conn: an admin session)."""
    cur = conn.cursor()
    cur.execute("SELECT count (*) FROM pg_stat_activity"
                " WHERE usename = %s AND wait_event_type = 'Lock'", (role,))
    return cur.fetchone()[0]


def wait_for_lock_waits(conn, role, count=1, what="no session waited for the lock",
                        timeout=10):
    """Waits until at least count sessions of role wait on a lock; fails with what."""
    deadline = time.monotonic() + timeout
    while lock_waits(conn, role) < count:
        assert time.monotonic() < deadline, what
        time.sleep(0.05)


def files_containing(root, needles):
    """(path, needle) for every file under root (database files, WAL, logs, spools)
    that contains one of the byte strings."""
    found = []
    for folder, _, files in os.walk(root):
        for name in files:
            path = os.path.join(folder, name)
            try:
                with open(path, "rb") as f:
                    data = f.read()
            except OSError:
                continue
            found.extend((path, needle) for needle in needles if needle in data)
    return found


def make_mmdb(path, edition=None):
    """Builds the test geo-IP database (tests/data/make_test_mmdb.pl); edition "next"
    moves 81.2.69.0/24 from GB/ENG to FR/IDF."""
    script = os.path.join(os.path.dirname(os.path.abspath(__file__)), "data", "make_test_mmdb.pl")
    subprocess.run(["perl", script, path] + ([edition] if edition else []), check=True, timeout=120)
    return path


def post_events(server, body, key=None, headers=None, timeout=15):
    """POSTs to /l/events; body is bytes or JSON-able. Returns (status, headers, parsed)."""
    if not isinstance(body, (bytes, bytearray)):
        body = json.dumps(body).encode()
    h = {"Content-Type": "application/json"}
    if key is not None:
        h["Authorization"] = "Bearer " + key
    h.update(headers or {})
    status, hdrs, raw = http("POST", server.base + "/l/events", body=body, headers=h,
                             timeout=timeout)
    try:
        parsed = json.loads(raw) if raw else None
    except ValueError:
        parsed = raw
    return status, hdrs, parsed


def layersctl_for(server, *args, timeout=60, input=None):
    """Runs the built layersctl against a running Layersd (its embedded cluster and master
    key), input (text) on its standard input; returns the CompletedProcess with text
    stdout and stderr."""
    env = dict(server.env)
    return subprocess.run([binary("layersctl")] + list(args), env=env, capture_output=True,
                          text=True, timeout=timeout, input=input)


def api_call(server, method, path, token=None, body=None, headers=None, timeout=15):
    """One partner API request. body: bytes, or JSON-able (sent as application/json).
    Returns (status, headers with lower-case names, parsed JSON or the raw bytes)."""
    h = {}
    if token is not None:
        h["Authorization"] = "Bearer " + token
    if body is not None and not isinstance(body, (bytes, bytearray)):
        body = json.dumps(body).encode()
        h["Content-Type"] = "application/json"
    h.update(headers or {})
    status, hdrs, raw = http(method, server.base + path, body=body, headers=h, timeout=timeout)
    hdrs = {k.lower(): v for k, v in hdrs.items()}
    parsed = raw
    if hdrs.get("content-type", "").startswith("application/json") and raw:
        try:
            parsed = json.loads(raw)
        except ValueError:
            pass
    return status, hdrs, parsed
