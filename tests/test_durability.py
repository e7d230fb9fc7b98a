"""A 202 means durable: under continuous load, kill -9 of the store, an ingest and the
gateway (one at a time, repeatedly) and a PostgreSQL outage lose no acknowledged event
and store none twice; the server recovers by itself."""
import contextlib
import os
import signal
import subprocess
import threading
import time
import uuid

import pytest

from lyserver import Layersd, api_call, db_connect, http, post_events


class Load:
    """Threads posting small batches; remembers every event id that got a 202."""

    def __init__(self, server, threads=4, batch=5, timeout=15):
        self.server = server
        self.batch = batch
        self.timeout = timeout
        self.stop = threading.Event()
        self.lock = threading.Lock()
        self.acked = set()
        self.statuses = {}
        self.retry_after_seen = False
        self.threads = [threading.Thread(target=self.run, daemon=True) for _ in range(threads)]

    def run(self):
        key = self.server.credentials()["sdk_key"]
        while not self.stop.is_set():
            ids = [str(uuid.uuid4()) for _ in range(self.batch)]
            try:
                status, headers, body = post_events(
                    self.server, {"events": [{"event_id": i, "name": "purchase"} for i in ids]},
                    key=key, timeout=self.timeout)
            except OSError:
                status, headers = "error", {}
            with self.lock:
                self.statuses[status] = self.statuses.get(status, 0) + 1
                if status == 202:
                    assert body["accepted"] + body["duplicates"] == self.batch, body
                    self.acked.update(ids)
                elif status == 503 and headers.get("Retry-After"):
                    self.retry_after_seen = True
            if status != 202:
                time.sleep(0.05)

    def __enter__(self):
        for t in self.threads:
            t.start()
        return self

    def __exit__(self, *exc):
        self.stop.set()
        for t in self.threads:
            t.join(30)

    def count(self, status):
        with self.lock:
            return self.statuses.get(status, 0)


def process_state(pid):
    """The state letter of a process (R, S, Z, ...), or None when it is gone."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0]
    except OSError:
        return None


def wait_for(predicate, timeout, what):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


def check_all_stored_once(server, acked):
    db = db_connect(server)
    cur = db.cursor()
    cur.execute("SELECT event_id, count(*) FROM sdk_events GROUP BY event_id HAVING count(*) > 1")
    assert cur.fetchall() == [], "events stored twice"
    cur.execute("CREATE TEMP TABLE acked (event_id text)")
    cur.executemany("INSERT INTO acked VALUES (%s)", [(i,) for i in acked])
    cur.execute("SELECT count(*) FROM acked a LEFT JOIN sdk_events e USING (event_id) "
                "WHERE e.event_id IS NULL")
    missing = cur.fetchone()[0]
    db.close()
    assert missing == 0, f"{missing} acknowledged events are missing"


def test_kill_actors_under_load():
    with Layersd() as server:
        with Load(server) as load:
            wait_for(lambda: load.count(202) > 20, 30, "first acknowledgements")
            for round_ in range(2):
                for role in ("store", "ingest", "gateway"):
                    before = server.actors()
                    acked_before = load.count(202)
                    os.kill(before[role], signal.SIGKILL)
                    wait_for(lambda: server.actors().get(role) not in (None, before[role]),
                             10, f"{role} restart")
                    wait_for(lambda: load.count(202) > acked_before + 5, 20,
                             f"acknowledgements after killing {role}")
        assert len(load.acked) > 100
        check_all_stored_once(server, load.acked)


def pg_ctl(server, *args):
    data = os.path.join(server.data_dir, "pg", "data")
    log = os.path.join(server.data_dir, "pg", "log")
    subprocess.run(["runuser", "-u", "postgres", "--", "/usr/lib/postgresql/15/bin/pg_ctl",
                    *args, "-D", data, "-l", log, "-w"], check=True, timeout=60,
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def test_postgres_outage_under_load():
    with Layersd() as server:
        with Load(server) as load:
            wait_for(lambda: load.count(202) > 20, 30, "first acknowledgements")
            pg_ctl(server, "stop", "-m", "fast")
            down_since = time.monotonic()
            wait_for(lambda: load.count(503) > 5, 15, "503 while PostgreSQL is down")
            status, headers, body = api_call(server, "GET", "/v1/projects",
                                             token=server.credentials()["api_token"])
            assert status == 503 and int(headers["retry-after"]) > 0, (status, headers, body)
            time.sleep(max(0.0, 10 - (time.monotonic() - down_since)))
            assert load.retry_after_seen
            acked_during = load.count(202)
            pg_ctl(server, "start")
            wait_for(lambda: load.count(202) > acked_during + 20, 30,
                     "acknowledgements after PostgreSQL is back")
            wait_for(lambda: http("GET", server.base + "/readyz")[0] == 200, 10, "ready again")
        check_all_stored_once(server, load.acked)
        # the supervisor leaves a clean stop alone, but says so, and when it is over (it
        # looks at the cluster once a second: the actors may be back before it)
        wait_for(lambda: "was started again" in server.log(), 10, "the supervisor to see it")
        assert "was stopped (pg_ctl stop?)" in server.log(), server.log()[-3000:]


def test_postgres_that_stops_without_a_clean_shut_down_is_started_again():
    """A PostgreSQL that exits by itself (its recovery failed on a full disk) removes its
    postmaster.pid as a clean stop does, but leaves pg_control's state unclean, as an
    immediate stop does: layersd starts it again, rather than leaving it stopped as it
    leaves a pg_ctl stop (smart or fast), and ingest resumes."""
    with Layersd() as server:
        with Load(server) as load:
            wait_for(lambda: load.count(202) > 20, 30, "first acknowledgements")
            pg_ctl(server, "stop", "-m", "immediate")
            acked_before = load.count(202)
            wait_for(lambda: "stopped without a clean shut-down" in server.log(), 15,
                     "the supervisor to notice")
            wait_for(lambda: load.count(202) > acked_before + 20, 60,
                     "acknowledgements after PostgreSQL is back")
        wait_for(lambda: "runs again" in server.log(), 15, "the supervisor's pg_ctl to return")
        assert "was stopped (pg_ctl stop?)" not in server.log()
        check_all_stored_once(server, load.acked)


def test_idle_sessions_the_database_ended_are_replaced_without_a_503():
    """After a restart of PostgreSQL, each idle session's first use reads "server closed
    the connection unexpectedly" while libpq still says the connection is fine: the
    first partner API request and the first lookup of an SDK key got 503 though /readyz
    said ready. They are sent again on a new session."""
    with Layersd() as server:
        creds = server.credentials()
        token = creds["api_token"]
        assert api_call(server, "GET", "/v1/me", token=token)[0] == 200
        status, _, body = api_call(server, "POST", "/v1/projects/%s/sdk-keys" % creds["project_id"],
                                   token=token, body={"name": "after the restart"})
        assert status == 201, body
        new_key = body["key"]
        pg_ctl(server, "stop", "-m", "immediate")
        wait_for(lambda: "runs again" in server.log(), 30, "PostgreSQL to be started again")
        server.wait_ready()
        time.sleep(1)
        status, _, body = api_call(server, "GET", "/v1/me", token=token)
        assert status == 200, body
        status, _, body = post_events(server, {"event_id": "first-after-restart", "name": "x"},
                                      key=new_key)
        assert status == 202, body


@contextlib.contextmanager
def small_disk(megabytes):
    """A directory on a tmpfs of its own, as small as asked (root only)."""
    import tempfile
    path = tempfile.mkdtemp(prefix="layers-disk-")
    if subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={megabytes}m,mode=0755",
                       "tmpfs", path], stderr=subprocess.DEVNULL).returncode != 0:
        os.rmdir(path)
        pytest.skip("cannot mount a tmpfs here (not root?)")
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", path])
        os.rmdir(path)


def fill(path):
    """Writes a file until the file system is full; returns its name."""
    filler = os.path.join(path, "filler")
    chunk = b"\0" * (1 << 20)
    with open(filler, "wb") as f:
        try:
            while True:
                f.write(chunk)
                f.flush()
        except OSError:
            pass
    return filler


def test_a_full_disk_gets_503_and_the_server_recovers_by_itself():
    """With the data directory's disk full under load, the store cannot write: requests
    get 503 with Retry-After (send again), never 500 (a bug); PostgreSQL may PANIC and
    fail its recovery, and is then started again until it can; /readyz says 503 meanwhile.
    Once space is freed, ingest resumes without a restart of Layersd and /readyz says 200,
    every acknowledged event stored once."""
    with small_disk(300) as disk:
        os.mkdir(os.path.join(disk, "data"))
        server = Layersd(data_dir=os.path.join(disk, "data"))
        with server:
            with Load(server) as load:
                wait_for(lambda: load.count(202) > 20, 30, "first acknowledgements")
                filler = fill(disk)
                wait_for(lambda: load.count(503) + load.count(500) > 10, 60,
                         "refusals while the disk is full")
                # not ready while writes fail, whether PostgreSQL is down or answers
                # SELECT 1 but cannot write
                wait_for(lambda: http("GET", server.base + "/readyz")[0] == 503, 5,
                         "/readyz 503 while the disk is full")
                time.sleep(3)
                os.unlink(filler)
                acked = load.count(202)
                wait_for(lambda: load.count(202) > acked + 20, 90,
                         "acknowledgements once the disk has room")
                wait_for(lambda: http("GET", server.base + "/readyz")[0] == 200, 10,
                         "/readyz 200 once the disk has room")
            assert load.count(500) == 0, load.statuses
            assert load.retry_after_seen, load.statuses
            check_all_stored_once(server, load.acked)
            # the store's failures: the first, a summary every 10 s, not one per batch
            failures = [line for line in server.log().splitlines()
                        if "could not write" in line]
            assert 1 <= len(failures) <= 4, "\n".join(failures[:50])


def test_writes_the_database_refuses_make_the_server_unready_for_a_while():
    """A database that answers SELECT 1 but refuses writes (disk_full, 53100, raised by
    a trigger here): 503 to ingest and /readyz 503; with no write tried for 10 s,
    /readyz is 200 again (nothing left to tell); the next refusal starts a new run,
    logged at once; once writes succeed, ingest and the log say so."""
    with Layersd() as server:
        conn = db_connect(server)
        conn.autocommit = True
        cur = conn.cursor()
        cur.execute("""CREATE FUNCTION refuse() RETURNS trigger LANGUAGE plpgsql AS
                       $$ BEGIN RAISE EXCEPTION 'no room' USING ERRCODE = '53100'; END $$""")
        cur.execute("""CREATE TRIGGER refuse BEFORE INSERT ON sdk_event_ids
                       FOR EACH ROW EXECUTE FUNCTION refuse()""")
        try:
            def post():
                return post_events(server, {"event_id": str(uuid.uuid4()), "name": "x"},
                                   key=server.credentials()["sdk_key"])
            assert post()[0] == 503
            assert http("GET", server.base + "/readyz")[0] == 503
            wait_for(lambda: http("GET", server.base + "/readyz")[0] == 200, 20,
                     "/readyz 200 once no write was tried for 10 s")
            assert post()[0] == 503
            assert http("GET", server.base + "/readyz")[0] == 503
            firsts = [l for l in server.log().splitlines()
                      if "could not write 1 requests" in l and "no room" in l]
            assert len(firsts) == 2, server.log()[-3000:]
            assert "failures stopped" in server.log() or "batches failed" in server.log()
        finally:
            cur.execute("DROP TRIGGER refuse ON sdk_event_ids")
            cur.execute("DROP FUNCTION refuse()")
            conn.close()
        assert post()[0] == 202
        assert http("GET", server.base + "/readyz")[0] == 200
        assert "writing again" in server.log()


def cluster_pids(server):
    """The embedded PostgreSQL's postmaster and its children."""
    with open(os.path.join(server.data_dir, "pg", "data", "postmaster.pid")) as f:
        postmaster = int(f.readline())
    pids = [postmaster]
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as f:
                    stat = f.read()
            except OSError:
                continue
            if int(stat.rsplit(")", 1)[1].split()[1]) == postmaster:
                pids.append(int(entry))
    return pids


def test_a_hanging_postgres_gets_503s_within_seconds():
    """A database that hangs instead of refusing (SIGSTOP here; a full disk, a network
    partition to a remote server): requests get 503 with Retry-After within a few
    seconds, those already in a batch included, and /readyz says 503, instead of
    every client waiting for the gateway's 10 s deadline; nothing acknowledged is lost,
    and ingest resumes by itself when the database answers again."""
    with Layersd() as server:
        with Load(server, timeout=6) as load:
            wait_for(lambda: load.count(202) > 20, 30, "first acknowledgements")
            pids = cluster_pids(server)
            for pid in pids:
                os.kill(pid, signal.SIGSTOP)
            stopped = time.monotonic()
            try:
                wait_for(lambda: load.count(503) > 20, 10, "503s while PostgreSQL hangs")
                assert load.retry_after_seen
                assert http("GET", server.base + "/readyz")[0] == 503
                # past the gateway's 5 s trust in the key: it is not asked of the
                # hanging database before each request
                time.sleep(max(0.0, 7 - (time.monotonic() - stopped)))
                refused = load.count(503)
                time.sleep(1)
                assert load.count(503) > refused
            finally:
                for pid in pids:
                    os.kill(pid, signal.SIGCONT)
            acked_during = load.count(202)
            wait_for(lambda: load.count(202) > acked_during + 20, 30,
                     "acknowledgements after PostgreSQL answers again")
        assert load.count("error") == 0, load.statuses     # no client waited 6 s
        check_all_stored_once(server, load.acked)


@contextlib.contextmanager
def cluster_frozen(server):
    """The embedded PostgreSQL stopped (SIGSTOP) for the block: a database that hangs."""
    pids = cluster_pids(server)
    for pid in pids:
        os.kill(pid, signal.SIGSTOP)
    try:
        yield
    finally:
        for pid in pids:
            os.kill(pid, signal.SIGCONT)


def wait_for_202(server, post, timeout=20):
    """Posts (timed_post) until a request is stored again."""
    deadline = time.monotonic() + timeout
    while post()[0] != 202:
        assert time.monotonic() < deadline, server.log()[-3000:]
        time.sleep(0.3)


def assert_answered(server, post, status, within, times=1):
    """Posts (timed_post) times times; each must get status within so many seconds."""
    for _ in range(times):
        got, took = post()
        assert got == status and took < within, (got, took, server.log()[-3000:])


def timed_post(server, key):
    """A function that posts one new event and returns its status and how long the
    answer took."""
    def post():
        started = time.monotonic()
        status, _, _ = post_events(server, {"event_id": str(uuid.uuid4()), "name": "purchase"},
                                   key=key, timeout=15)
        return status, time.monotonic() - started
    return post


def test_a_lone_request_to_a_hanging_postgres_gets_503_within_seconds():
    """One request at a time while the database hangs: its batch is the only one (the
    store's other session stays idle), and it is answered 503 after ~2 s all the same,
    not at the gateway's 10 s deadline; so is the next one."""
    with Layersd() as server:
        post = timed_post(server, server.credentials()["sdk_key"])
        assert post()[0] == 202                 # the key is now trusted for 5 s
        with cluster_frozen(server):
            assert_answered(server, post, 503, within=4.0, times=2)
        wait_for_202(server, post)


def test_a_key_not_seen_lately_gets_503_within_seconds_while_postgres_hangs():
    """A key the gateway has no answer for (new, or not used for a minute) must be
    looked up in the database; while the database hangs, its requests get 503 once the
    lookup has gone unanswered for 5 s, not at the gateway's 10 s deadline, and the key
    works again once the database answers."""
    with Layersd() as server:
        post = timed_post(server, server.credentials()["sdk_key"])
        with cluster_frozen(server):
            assert_answered(server, post, 503, within=8.0, times=2)
        wait_for_202(server, post)


def test_a_store_session_reconnecting_to_a_hanging_postgres_does_not_hold_the_store():
    """When a store session must connect again while the database hangs (here /readyz
    dropped the session whose "SELECT 1" went unanswered), the new connection is made
    beside the store's loop: a request gets its 503 within ~2 s instead of after the
    5 s connection timeout, and the store connects by itself once the database answers."""
    with Layersd() as server:
        key = server.credentials()["sdk_key"]

        post = timed_post(server, key)

        assert post()[0] == 202                 # the key is now trusted for 5 s
        with cluster_frozen(server):
            assert http("GET", server.base + "/readyz", timeout=10)[0] == 503
            time.sleep(1.3)                     # past the session's 1 s before a retry
            # and again, the connection still waiting
            assert_answered(server, post, 503, within=4.0, times=2)
        wait_for_202(server, post)


def test_a_store_session_whose_set_up_waits_for_a_lock_does_not_hold_the_store():
    """A new store session's set-up (its temporary table and prepared statement) is
    answered beside the store's loop: here the PREPARE waits for a table another session
    has locked, and requests still get their 503 within ~2 s; once the lock goes the
    session is set up and requests are stored."""
    with Layersd() as server:
        key = server.credentials()["sdk_key"]

        post = timed_post(server, key)

        assert post()[0] == 202
        db = db_connect(server)
        locker = db_connect(server)
        locker.autocommit = False
        locker.cursor().execute("LOCK TABLE project_layers IN ACCESS EXCLUSIVE MODE")
        try:
            cur = db.cursor()
            cur.execute("SELECT pg_terminate_backend (pid) FROM pg_stat_activity"
                        " WHERE usename = 'layers_store'")
            assert_answered(server, post, 503, within=4.0)     # finds its session gone
            time.sleep(1.3)                     # past the session's 1 s before a retry
            # its new connection's set-up waits
            assert_answered(server, post, 503, within=4.0, times=2)
            cur.execute("SELECT count (*) FROM pg_stat_activity WHERE usename = 'layers_store'"
                        " AND wait_event_type = 'Lock'"
                        " AND query LIKE 'CREATE TEMPORARY TABLE ly_staging%'")
            assert cur.fetchone()[0] >= 1, "no store session was setting up"
        finally:
            locker.rollback()
        wait_for_202(server, post)
        assert "could not set up" not in server.log()


def test_maintenance_that_waits_for_a_lock_does_not_hold_the_store():
    """The store's maintenance (here the expiry of old deduplication keys, which follows
    a batch) waits on a row lock another session holds: it waits on its own session,
    and requests go on being written on the other one and answered at once."""
    with Layersd() as server:
        creds = server.credentials()
        db = db_connect(server)
        cur = db.cursor()
        cur.execute("INSERT INTO sdk_event_ids (project_id, event_id, org_id, received_at)"
                    " VALUES (%s, 'old', %s, now () - interval '30 days')",
                    (creds["project_id"], creds["org_id"]))
        locker = db_connect(server)
        locker.autocommit = False
        locker.cursor().execute("SELECT 1 FROM sdk_event_ids WHERE event_id = 'old' FOR UPDATE")

        post = timed_post(server, creds["sdk_key"])

        assert post()[0] == 202                 # the expiry is due after the first batch

        def expiry_waits():
            cur.execute("SELECT count (*) FROM pg_stat_activity WHERE usename = 'layers_store'"
                        " AND wait_event_type = 'Lock' AND query LIKE '%ly_expire_event_ids%'")
            return cur.fetchone()[0] == 1

        deadline = time.monotonic() + 10
        while not expiry_waits():
            assert time.monotonic() < deadline, "the expiry did not wait:\n" + server.log()[-3000:]
            time.sleep(0.05)
        assert_answered(server, post, 202, within=3.0, times=5)
        status = http("GET", server.base + "/readyz", timeout=10)[0]
        assert status == 200, (status, server.log()[-3000:])
        locker.rollback()

        def old_key_gone():
            cur.execute("SELECT count (*) FROM sdk_event_ids WHERE event_id = 'old'")
            return cur.fetchone()[0] == 0

        wait_for(old_key_gone, 10, "the expiry to end")
        assert post()[0] == 202
        locker.close()
        db.close()


def test_a_known_key_serves_while_its_lookup_fails():
    """When the key lookup's session cannot log in (connections exhausted, a role
    locked), a key that was good within the last minute serves as it was, as when the
    lookup is slow: the store may still write (it does here). A key never seen gets
    503 unavailable."""
    with Layersd() as server:
        creds = server.credentials()
        post = timed_post(server, creds["sdk_key"])
        assert post()[0] == 202
        db = db_connect(server)
        db.autocommit = True
        cur = db.cursor()
        try:
            cur.execute("ALTER ROLE layers_auth NOLOGIN")
            cur.execute("SELECT pg_terminate_backend (pid) FROM pg_stat_activity"
                        " WHERE usename = 'layers_auth'")
            time.sleep(5.5)                     # past the key's 5 s in the cache
            for _ in range(3):
                status, took = post()
                assert status == 202 and took < 3, (status, took, server.log()[-3000:])
            status, _, body = post_events(server, {"event_id": "x", "name": "x"},
                                          key="lys_" + "0" * 40)
            assert status == 503 and body["error"]["code"] == "unavailable", body
        finally:
            cur.execute("ALTER ROLE layers_auth LOGIN")
            db.close()
        assert post()[0] == 202


def test_embedded_postgres_killed_under_load_is_started_again():
    """kill -9 of the embedded PostgreSQL (the OOM killer's way): layersd starts it
    again by itself, PostgreSQL recovers from its WAL, and ingest resumes with every
    acknowledged event stored once. The first start after the crash may be refused
    while the dead server's backends still hold its shared memory: it is retried."""
    with Layersd() as server:
        pid_file = os.path.join(server.data_dir, "pg", "data", "postmaster.pid")
        with Load(server) as load:
            wait_for(lambda: load.count(202) > 20, 30, "first acknowledgements")
            with open(pid_file) as f:
                postmaster = int(f.readline())
            os.kill(postmaster, signal.SIGKILL)
            acked_before = load.count(202)
            wait_for(lambda: "died; starting it again" in server.log(), 15,
                     "the supervisor to notice")
            wait_for(lambda: load.count(202) > acked_before + 20, 60,
                     "acknowledgements after PostgreSQL is back")
        with open(pid_file) as f:
            assert int(f.readline()) != postmaster
        # pg_ctl, which the supervisor waits for, may notice the server is up after the
        # actors did
        wait_for(lambda: "runs again" in server.log(), 15, "the supervisor's pg_ctl to return")
        check_all_stored_once(server, load.acked)


def test_the_first_requests_after_postgres_restarted_are_served():
    """After the embedded PostgreSQL was killed and started again while no request came,
    the api actor's sessions are dead connections until used: the first key lookup, the
    first API token check and /readyz each find theirs broken and connect again, rather
    than answer 503 (or, for /readyz, ready without having tried)."""
    with Layersd() as server:
        creds = server.credentials()
        post = timed_post(server, creds["sdk_key"])
        assert post()[0] == 202
        assert api_call(server, "GET", "/v1/projects", token=creds["api_token"])[0] == 200
        pid_file = os.path.join(server.data_dir, "pg", "data", "postmaster.pid")
        with open(pid_file) as f:
            os.kill(int(f.readline()), signal.SIGKILL)
        wait_for(lambda: "runs again" in server.log(), 30, "PostgreSQL to run again")
        time.sleep(5.5)                         # past the gateway's trust in the key
        status, took = post()
        assert status == 202, (status, server.log()[-3000:])
        status, _, body = api_call(server, "GET", "/v1/projects", token=creds["api_token"])
        assert status == 200, body
        assert http("GET", server.base + "/readyz")[0] == 200
        # what the dying server told idle sessions is in the log as our lines, not raw
        raw = [line for line in server.log().splitlines()
               if line.startswith(("FATAL:", "ERROR:", "WARNING:", "NOTICE:"))]
        assert raw == [], raw


def test_requests_while_no_ingest_actor_is_connected_are_unavailable_not_overload():
    """With every ingest actor gone (killed while the supervisor, stopped here, cannot
    start another yet) requests get 503 unavailable at once, not "overloaded" (which
    counts in layers_gateway_overloaded_total and says to look at capacity); ingest
    resumes once an ingest actor is back."""
    with Layersd() as server:
        post = timed_post(server, server.credentials()["sdk_key"])
        assert post()[0] == 202
        os.kill(server.proc.pid, signal.SIGSTOP)
        try:
            os.kill(server.actors()["ingest"], signal.SIGKILL)
            time.sleep(0.5)
            status, _, body = post_events(server, {"event_id": str(uuid.uuid4()), "name": "x"},
                                          key=server.credentials()["sdk_key"])
            assert status == 503 and body["error"]["code"] == "unavailable", body
            assert "ingest" in body["error"]["message"], body
            metrics = http("GET", server.base + "/metrics")[2].decode()
            assert "layers_gateway_overloaded_total 0" in metrics
        finally:
            os.kill(server.proc.pid, signal.SIGCONT)
        wait_for_202(server, post)


@pytest.mark.parametrize("role", ["store", "ingest"])
def test_requests_a_dead_actor_held_are_answered_at_once(role):
    """The store (or the only ingest actor) dies holding requests: their acknowledgement
    will not come, and the gateway answers 503 at once (the events may have been stored:
    the retry counts them as duplicates), not at its 10 s deadline."""
    with Layersd() as server:
        key = server.credentials()["sdk_key"]
        post = timed_post(server, key)
        assert post()[0] == 202
        actor = server.actors()[role]
        os.kill(actor, signal.SIGSTOP)
        event = {"event_id": str(uuid.uuid4()), "name": "purchase"}
        answers = []
        thread = threading.Thread(target=lambda: answers.append(
            post_events(server, event, key=key, timeout=15)))
        try:
            thread.start()
            time.sleep(1.0)                 # with the stopped actor now
            assert not answers, answers
            killed = time.monotonic()
            os.kill(actor, signal.SIGKILL)
            thread.join(15)
            took = time.monotonic() - killed
        finally:
            with contextlib.suppress(ProcessLookupError):
                os.kill(actor, signal.SIGKILL)
        status, headers, body = answers[0]
        assert status == 503 and body["error"]["code"] == "unavailable", body
        assert "went away" in body["error"]["message"], body
        assert took < 4, took
        wait_for_202(server, post)
        status, _, body = post_events(server, event, key=key)
        assert status == 202 and body["accepted"] + body["duplicates"] == 1, body


def test_an_actor_that_stops_answering_is_killed_and_started_again():
    """An actor process that stops answering (SIGSTOP here; a deadlock or a hung system
    call alike) is killed by the supervisor after LAYERS_ACTOR_TIMEOUT and started
    again: ingest resumes by itself, and every acknowledged event is stored once.
    Actors that answer, idle or busy, are left alone."""
    with Layersd(env={"LAYERS_ACTOR_TIMEOUT": "3s"}) as server:
        before = server.actors()
        time.sleep(4)                                   # idle
        with Load(server) as load:
            wait_for(lambda: load.count(202) > 20, 30, "first acknowledgements")
            time.sleep(4)                               # busy
            assert server.actors() == before, server.log()[-3000:]
            assert "has not answered" not in server.log()
            os.kill(before["ingest"], signal.SIGSTOP)
            wait_for(lambda: server.actors().get("ingest") not in (None, before["ingest"]),
                     20, "ingest started again")
            acked = load.count(202)
            wait_for(lambda: load.count(202) > acked + 20, 30,
                     "acknowledgements after the restart")
        assert f"actor ingest (pid {before['ingest']}) has not answered for 3 s" in server.log()
        assert server.actors()["store"] == before["store"]
        check_all_stored_once(server, load.acked)


def test_a_key_lookup_lost_with_the_api_actor_is_asked_again():
    """kill -9 of the api actor while it holds the gateway's lookup of an SDK key: the
    gateway asks the restarted api actor again, and the request waiting for the key
    gets its 202 (before, it and every later request with that key waited for the
    deadline, for as long as the gateway ran)."""
    import threading
    with Layersd() as server:
        key = server.credentials()["sdk_key"]
        api = server.actors()["api"]
        os.kill(api, signal.SIGSTOP)
        answer = []
        try:
            sender = threading.Thread(target=lambda: answer.append(post_events(
                server, {"event_id": str(uuid.uuid4()), "name": "x"}, key=key, timeout=20)))
            sender.start()
            wait_for(lambda: b"layers_gateway_in_flight 1"
                     in http("GET", server.base + "/metrics")[2], 10, "the request in flight")
        finally:
            os.kill(api, signal.SIGKILL)
        sender.join(20)
        assert answer and answer[0][0] == 202, answer
        status, _, body = post_events(server, {"event_id": str(uuid.uuid4()), "name": "x"},
                                      key=key)
        assert status == 202, body


def test_an_acknowledgement_waits_for_a_gateway_that_reconnects_late():
    """After the store restarts, a gateway may reconnect to it later than an ingest
    actor: the acknowledgement of a request committed in between waits for the gateway
    (its client gets its 202), instead of being dropped (a 503 at the deadline). Here
    the gateway is frozen while the new store commits the request."""
    import threading
    server = Layersd().start()
    try:
        key = server.credentials()["sdk_key"]
        post_events(server, {"event_id": str(uuid.uuid4()), "name": "x"}, key=key)  # key cached
        actors = server.actors()
        os.kill(server.proc.pid, signal.SIGSTOP)        # no restart of the store yet
        try:
            os.kill(actors["store"], signal.SIGKILL)
            # Its sockets close only once the kernel has torn the process down (a
            # zombie, as nobody reaps it yet); a message sent to it before that is lost
            # in flight, as ZeroMQ allows (its client would get a 503 and retry)
            wait_for(lambda: process_state(actors["store"]) in ("Z", None), 10,
                     "the killed store to be gone")
            time.sleep(0.2)                             # and the ingest to notice
            event_id = str(uuid.uuid4())
            answer = []
            sender = threading.Thread(target=lambda: answer.append(post_events(
                server, {"event_id": event_id, "name": "x"}, key=key, timeout=20)[:3:2]))
            sender.start()
            wait_for(lambda: b"layers_gateway_in_flight 1"
                     in http("GET", server.base + "/metrics")[2], 10, "the request in flight")
            os.kill(actors["gateway"], signal.SIGSTOP)  # it cannot reconnect to the new store
        finally:
            os.kill(server.proc.pid, signal.SIGCONT)
        try:
            db = db_connect(server)
            db.autocommit = True

            def stored():
                cur = db.cursor()
                cur.execute("SELECT count(*) FROM sdk_events WHERE event_id = %s", (event_id,))
                return cur.fetchone()[0] == 1
            wait_for(stored, 15, "the new store to commit the request")
            db.close()
        finally:
            os.kill(actors["gateway"], signal.SIGCONT)
        sender.join(20)
        assert answer and answer[0][0] == 202, answer
        assert answer[0][1]["accepted"] == 1, answer
    finally:
        server.cleanup()
