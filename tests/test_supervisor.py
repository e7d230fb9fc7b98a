"""layersd as a user runs it: embedded PostgreSQL, demo credentials, health routes,
restarts of killed actors, clean stops, and clear errors for bad configuration."""
import json
import re
import os
import signal
import stat
import subprocess
import time

import pytest

from lyserver import (Layersd, binary, http, alive, children_of, cmdline, db_connect, free_port,
                      held, post_events, wait_for_lock_waits)


@pytest.fixture(scope="module")
def server():
    with Layersd() as s:
        yield s


def test_help_on_every_binary():
    for name in ("layersd", "layersctl", "layers-tap", "layers-mock"):
        out = subprocess.run([binary(name), "--help"], capture_output=True, text=True, timeout=10)
        assert out.returncode == 0, out.stderr
        assert "Usage:" in out.stdout


def test_help_on_every_script(tmp_path):
    """--help describes the script and does nothing else: no install, build or test run.
    The scripts run with a PATH that holds nothing but sed, so any of those would fail."""
    tools = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tools")
    os.symlink("/usr/bin/sed", tmp_path / "sed")
    env = dict(os.environ, PATH=str(tmp_path))
    for name in ("up", "test", "deps", "bench"):
        for flag in ("--help", "-h"):
            started = time.monotonic()
            out = subprocess.run([os.path.join(tools, name), flag], capture_output=True,
                                 text=True, timeout=30, env=env)
            assert out.returncode == 0, (name, out.stderr)
            assert "Usage:" in out.stdout or "usage:" in out.stdout, (name, out.stdout)
            assert time.monotonic() - started < 10, name


def test_health_and_readiness(server):
    status, headers, body = http("GET", server.base + "/healthz")
    assert status == 200 and json.loads(body) == {"status": "ok"}
    status, headers, body = http("GET", server.base + "/readyz")
    assert status == 200 and json.loads(body)["status"] == "ready"
    assert headers["Content-Type"].startswith("application/json")
    # 16 hex digits: an id of 9 to 15 decimal digits would be masked as a phone number in
    # the log lines that name it
    assert re.fullmatch(r"[0-9a-f]{16}", headers.get("X-Request-Id", "")), headers


def test_readiness_names_the_actor_that_does_not_answer(server):
    """/readyz pings the store and the api actor: a stalled one is named, not always
    the store."""
    actors = server.actors()
    for stalled, named in (("api", "the api actor did not answer"),
                           ("store", "the store did not answer")):
        os.kill(actors[stalled], signal.SIGSTOP)
        try:
            status, _, body = http("GET", server.base + "/readyz")
        finally:
            os.kill(actors[stalled], signal.SIGCONT)
        assert status == 503, body
        assert json.loads(body)["error"]["message"].startswith(named), body
    wait_for_ready = time.monotonic() + 10
    while http("GET", server.base + "/readyz")[0] != 200:
        assert time.monotonic() < wait_for_ready
        time.sleep(0.1)


def test_readiness_tells_a_stalled_ingest_actor(server):
    """An ingest actor stopped (or stuck) stays connected and answers no ping: once an
    event request goes unanswered to its deadline, /readyz says not ready, until events
    are answered again."""
    from lyserver import post_events
    ingest = server.actors()["ingest"]
    os.kill(ingest, signal.SIGSTOP)
    try:
        status, _, body = post_events(server, {"event_id": "stalled-1", "name": "app_open"},
                                      key=server.credentials()["sdk_key"], timeout=20)
        assert status == 503 and body["error"]["code"] == "timeout", body
        status, _, body = http("GET", server.base + "/readyz")
        assert status == 503 and "not answered in time" in json.loads(body)["error"]["message"], body
    finally:
        os.kill(ingest, signal.SIGCONT)
    deadline = time.monotonic() + 10
    while http("GET", server.base + "/readyz")[0] != 200:
        assert time.monotonic() < deadline
        time.sleep(0.1)


def test_unknown_route_and_method(server):
    status, _, body = http("GET", server.base + "/nope")
    assert status == 404 and json.loads(body)["error"]["code"] == "not_found"
    status, headers, body = http("POST", server.base + "/healthz", body=b"{}")
    assert status == 405 and json.loads(body)["error"]["code"] == "method_not_allowed"
    assert headers["Allow"] == "GET, HEAD"
    status, headers, body = http("DELETE", server.base + "/v1/organization",
                                 headers={"Authorization": "Bearer " + server.credentials()["api_token"]})
    assert status == 405 and "GET" in headers["Allow"] and "PATCH" in headers["Allow"]


def test_metrics_are_prometheus_text(server):
    http("GET", server.base + "/healthz")
    status, headers, body = http("GET", server.base + "/metrics")
    assert status == 200
    assert headers["Content-Type"].startswith("text/plain")
    text = body.decode()
    assert "# TYPE layers_http_requests_total counter" in text
    assert 'layers_http_requests_total{route="/healthz",code="200"}' in text
    assert "# TYPE layers_http_request_duration_seconds histogram" in text


def test_demo_credentials(server):
    path = os.path.join(server.data_dir, "credentials.json")
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    creds = server.credentials()
    assert set(creds) >= {"base_url", "org_id", "project_id", "sdk_key", "api_token"}
    assert creds["base_url"] == server.base
    assert creds["sdk_key"] != creds["api_token"]
    key = os.path.join(server.data_dir, "master.key")
    assert stat.S_IMODE(os.stat(key).st_mode) == 0o600


def test_a_removed_credentials_file_makes_no_second_demo_workspace():
    """The demo workspace is made on a database without organizations only: removing
    credentials.json (it holds secrets) and starting again makes no second one; the
    first's credentials still work."""
    s = Layersd().start()
    try:
        creds = s.credentials()
        s.stop()
        os.unlink(os.path.join(s.data_dir, "credentials.json"))
        s.start()
        assert not os.path.exists(os.path.join(s.data_dir, "credentials.json"))
        assert "no demo workspace made" in s.log()
        conn = db_connect(s)
        try:
            cur = conn.cursor()
            cur.execute("SELECT count(*) FROM organizations")
            assert cur.fetchone()[0] == 1
        finally:
            conn.close()
        status, _, _ = http("GET", s.base + "/v1/projects",
                            headers={"Authorization": "Bearer " + creds["api_token"]})
        assert status == 200
    finally:
        s.cleanup()


def test_credentials_of_a_database_that_is_gone_are_replaced():
    """The embedded cluster removed (as the master key refusal suggests, to start
    afresh): the new database gets its demo workspace, and credentials.json, which
    named the old one's, is kept aside as credentials.json.old with a warning."""
    s = Layersd().start()
    try:
        old = s.credentials()
        s.stop()
        subprocess.run(["rm", "-rf", os.path.join(s.data_dir, "pg")], check=True)
        s.start()
        new = s.credentials()
        assert new["org_id"] != old["org_id"] and new["sdk_key"] != old["sdk_key"]
        with open(os.path.join(s.data_dir, "credentials.json.old")) as f:
            assert json.load(f) == old
        assert "is of another database" in s.log()
        status, _, body = post_events(s, {"event_id": "after-a-new-database", "name": "x"},
                                      key=new["sdk_key"])
        assert status == 202, body
    finally:
        s.cleanup()


def test_credentials_left_aside_by_a_start_cut_off_are_taken():
    """The demo's credentials are written aside (credentials.json.new) before the COMMIT
    that makes the workspace, and renamed after it: a start cut off between the two
    leaves the file aside, which the next start takes when the database has its
    organization, and removes when it has not."""
    s = Layersd().start()
    try:
        creds = s.credentials()
        s.stop()
        path = os.path.join(s.data_dir, "credentials.json")
        os.rename(path, path + ".new")
        s.start()
        assert s.credentials() == creds
        assert "restored from the start before" in s.log()
        s.stop()
        os.rename(path, path + ".new")
        with open(path + ".new", "w") as f:
            json.dump(dict(creds, org_id="00000000-0000-4000-8000-000000000000"), f)
        s.start()
        assert not os.path.exists(path) and not os.path.exists(path + ".new")
        assert "no demo workspace made" in s.log()
    finally:
        s.cleanup()


def test_a_master_key_that_is_not_the_database_s_is_refused():
    """A master key file lost or replaced (a new one would be made without a word, and
    no sealed layer secret would open any more), or a LAYERS_MASTER_KEY_FILE that names
    another key: layersd and layersctl refuse, naming the key file and the database;
    the right key works again."""
    from lyserver import layersctl_for
    s = Layersd().start()
    try:
        s.stop()
        key = os.path.join(s.data_dir, "master.key")
        kept = key + ".kept"
        os.rename(key, kept)
        s.start(wait=False)
        assert s.proc.wait(60) != 0
        assert "is not the one the database" in s.log() and key in s.log(), s.log()[-2000:]
        assert "master key" in s.log()
        assert not os.path.exists(key), "the key file this start made is left behind"
        other = key + ".other"                      # another key
        with open(other, "w") as f:
            f.write(os.urandom(32).hex() + "\n")
        os.chmod(other, 0o600)
        os.rename(kept, key)
        s.start()
        project = s.credentials()["project_id"]
        out = layersctl_for(s, "layer", "set", project, "meta", "-",
                            input='{"dataset_id": "42", "access_token": "sealed-secret"}')
        assert out.returncode == 0, out.stderr
        right = dict(s.env)
        s.env["LAYERS_MASTER_KEY_FILE"] = other
        out = layersctl_for(s, "layer", "get", project, "meta")
        assert out.returncode != 0 and "is not the one the database" in out.stderr, out.stderr
        # a database from before the check (no check row yet) with a secret sealed: a
        # wrong key run first must not be recorded as the database's
        conn = db_connect(s)
        try:
            conn.autocommit = True
            conn.cursor().execute("DELETE FROM master_key_check")
            out = layersctl_for(s, "layer", "get", project, "meta")
            assert out.returncode != 0 and "does not open the secrets" in out.stderr, out.stderr
            cur = conn.cursor()
            cur.execute("SELECT count(*) FROM master_key_check")
            assert cur.fetchone()[0] == 0
        finally:
            conn.close()
        s.env = right
        out = layersctl_for(s, "layer", "get", project, "meta")
        assert out.returncode == 0, out.stderr
    finally:
        s.cleanup()


def test_embedded_postgresql_settings(server):
    """The embedded cluster runs with layers.conf: WAL room for sustained ingest, new WAL
    segments not zero-filled while commits wait, and table writes pushed to the disk as
    they go rather than in 30-second bursts (docs/bench.md)."""
    conn = db_connect(server)
    try:
        cur = conn.cursor()
        settings = {}
        for name in ("max_wal_size", "min_wal_size", "wal_init_zero", "backend_flush_after",
                     "listen_addresses"):
            cur.execute("SELECT current_setting(%s)", (name,))
            settings[name] = cur.fetchone()[0]
    finally:
        conn.close()
    assert settings == {"max_wal_size": "4GB", "min_wal_size": "1GB", "wal_init_zero": "off",
                        "backend_flush_after": "256kB", "listen_addresses": ""}


def test_embedded_postgresql_is_never_reachable_over_tcp():
    """The embedded cluster is for its unix socket alone, however layersd is started: under
    a strict umask (027) its configuration files are still the postgres user's to read (an
    unreadable layers.conf left PostgreSQL on 127.0.0.1:5432, trusting every login);
    listen_addresses is given on its command line, so ALTER SYSTEM cannot open a port;
    pg_hba.conf refuses TCP clients all the same; and none of layersd's environment
    (LAYERS_MODEL_KEY) reaches PostgreSQL's processes."""
    import pwd
    s = Layersd(env={"LAYERS_MODEL_KEY": "sk-not-for-postgres"})
    old = os.umask(0o027)
    try:
        s.start()
    finally:
        os.umask(old)
    try:
        data = os.path.join(s.data_dir, "pg", "data")
        for name in ("layers.conf", "pg_hba.conf"):
            st = os.stat(os.path.join(data, name))
            assert pwd.getpwuid(st.st_uid).pw_name == "postgres", name
        with open(os.path.join(data, "pg_hba.conf")) as f:
            rules = [l.split() for l in f if l.strip() and not l.startswith("#")]
        assert all(r[0] == "local" or r[-1] == "reject" for r in rules), rules
        with open(os.path.join(data, "postmaster.pid")) as f:
            postmaster = int(f.readline())
        with open(f"/proc/{postmaster}/environ", "rb") as f:
            environ = f.read()
        assert b"LAYERS_" not in environ and b"sk-not-for-postgres" not in environ
        conn = db_connect(s)
        conn.autocommit = True
        conn.cursor().execute("ALTER SYSTEM SET listen_addresses = '127.0.0.1'")
        conn.close()
        s.stop()
        s.start()
        conn = db_connect(s)
        cur = conn.cursor()
        cur.execute("SELECT current_setting('listen_addresses')")
        assert cur.fetchone()[0] == ""
        conn.close()
    finally:
        s.cleanup()


def initdb_processes(data_dir):
    """Pids of the initdb processes working under data_dir."""
    pids = []
    for entry in os.listdir("/proc"):
        argv = cmdline(int(entry)) if entry.isdigit() else []
        if argv and argv[0].endswith(b"/initdb") and any(data_dir.encode() in a for a in argv):
            pids.append(int(entry))
    return pids


def one_value(conn, sql):
    """The first column of sql's first row; closes conn."""
    try:
        cur = conn.cursor()
        cur.execute(sql)
        return cur.fetchone()[0]
    finally:
        conn.close()


# max_wal_size is a setting of layers.conf: read as written there, layers.conf is in use
MAX_WAL_SIZE = "SELECT current_setting('max_wal_size')"


def test_a_first_start_killed_during_initdb_is_made_again():
    """A first start killed while initdb makes the cluster (initdb, in a process group of
    its own, runs on to its end without the supervisor) leaves no cluster half made: the
    next start makes it again, whole, with layersd's settings (its socket in pg/run), and
    leaves no temporary directory behind."""
    import glob
    s = Layersd()
    try:
        s.start(wait=False)
        pg = os.path.join(s.data_dir, "pg")
        deadline = time.monotonic() + 30
        while not glob.glob(os.path.join(pg, "*", "PG_VERSION")):
            assert s.proc.poll() is None and time.monotonic() < deadline, s.log()
            time.sleep(0.01)
        assert initdb_processes(s.data_dir), "initdb was over before the kill"
        s.proc.send_signal(signal.SIGKILL)
        s.proc.wait(5)
        deadline = time.monotonic() + 60
        while initdb_processes(s.data_dir):
            assert time.monotonic() < deadline, "initdb did not end"
            time.sleep(0.05)
        s.start()
        assert one_value(db_connect(s), MAX_WAL_SIZE) == "4GB"
        assert sorted(os.listdir(pg)) == ["data", "initdb.log", "log", "run"]
    finally:
        s.cleanup()


@pytest.mark.parametrize("name", ["it's a dir", "a,dir", "it's,a dir"])
def test_a_data_directory_with_quotes_or_commas_in_its_path(name):
    """A ' or a , in the data directory's path (a ' ended the socket directory's string in
    layers.conf; PostgreSQL split unix_socket_directories at the ,): the cluster runs with
    its settings, on a socket in one directory, and starts again."""
    import psycopg2
    import tempfile
    parent = tempfile.mkdtemp(prefix="layers-test-")
    os.chmod(parent, 0o755)
    data_dir = os.path.join(parent, name)
    os.mkdir(data_dir)
    s = Layersd(data_dir=data_dir)
    sockdir = None
    try:
        for _ in range(2):
            s.start()
            with open(os.path.join(data_dir, "pg", "data", "postmaster.pid")) as f:
                sockdir = f.read().splitlines()[4]
            assert os.path.exists(os.path.join(sockdir, ".s.PGSQL.5432")), sockdir
            conn = psycopg2.connect(host=sockdir, dbname="layers", user="postgres")
            assert one_value(conn, MAX_WAL_SIZE) == "4GB"
            s.stop()
    finally:
        s.cleanup()
        if sockdir and not sockdir.startswith(data_dir):
            subprocess.run(["rm", "-rf", sockdir])
        subprocess.run(["rm", "-rf", parent])


def test_a_data_directory_whose_path_pg_ctl_cannot_pass_is_refused():
    """pg_ctl starts PostgreSQL through a shell, with the data directory between double
    quotes: a path with a " (or $, `, \\) is refused at start, saying why."""
    import tempfile
    parent = tempfile.mkdtemp(prefix="layers-test-")
    os.chmod(parent, 0o755)
    data_dir = os.path.join(parent, 'a "quoted" dir')
    os.mkdir(data_dir)
    s = Layersd(data_dir=data_dir)
    try:
        s.start(wait=False)
        with pytest.raises(AssertionError, match="exited with 1"):
            s.wait_ready()
        said = [line for line in s.log().splitlines() if "ERROR" in line][-1]
        assert "shell" in said and "LAYERS_DATABASE_URL" in said, said
        assert not os.path.exists(os.path.join(data_dir, "pg"))
    finally:
        s.cleanup()
        subprocess.run(["rm", "-rf", parent])


def fallback_cluster_root(data_dir):
    """Where layersd, as root, keeps the cluster of a data directory the postgres user
    cannot reach (README)."""
    import hashlib
    return "/var/lib/layers/pg-" + hashlib.sha256(data_dir.encode()).hexdigest()[:16]


def test_a_new_data_directory_the_postgres_user_cannot_reach_gets_its_cluster_elsewhere():
    """A data directory closed to others (a home directory, 0700) and without a cluster
    yet: the cluster is made under /var/lib/layers, with a warning that says where."""
    s = Layersd()
    fallback = fallback_cluster_root(s.data_dir)
    try:
        os.chmod(s.data_dir, 0o700)
        s.start()
        assert "the postgres user cannot reach" in s.log() and fallback in s.log()
        assert os.path.exists(os.path.join(fallback, "data", "PG_VERSION"))
        assert not os.path.exists(os.path.join(s.data_dir, "pg"))
    finally:
        s.cleanup()
        subprocess.run(["rm", "-rf", fallback])


def test_a_cluster_the_postgres_user_cannot_reach_is_not_replaced_by_an_empty_one():
    """chmod 700 on a data directory whose pg/ holds the cluster: layersd stops at start,
    saying how to let the postgres user in, rather than making an empty cluster
    elsewhere; let in, it finds its data again."""
    s = Layersd().start()
    fallback = fallback_cluster_root(s.data_dir)
    try:
        conn = db_connect(s)
        conn.cursor().execute("CREATE TABLE still_here ()")
        conn.close()
        s.stop()
        os.chmod(s.data_dir, 0o700)
        s.start(wait=False)
        with pytest.raises(AssertionError, match="exited with 1"):
            s.wait_ready()
        said = [line for line in s.log().splitlines() if "ERROR" in line][-1]
        assert "cannot reach" in said and s.data_dir in said and "chmod" in said, said
        assert not os.path.exists(fallback)
        os.chmod(s.data_dir, 0o711)
        s.start()
        assert one_value(db_connect(s), "SELECT to_regclass('still_here') IS NOT NULL")
    finally:
        s.cleanup()
        subprocess.run(["rm", "-rf", fallback])


def test_killed_actor_is_restarted(server):
    for role in ("gateway", "store", "api", "ingest"):
        before = server.actors()
        assert role in before, before
        os.kill(before[role], signal.SIGKILL)
        killed = time.monotonic()
        deadline = killed + 2.0
        while time.monotonic() < deadline:
            now = server.actors()
            if role in now and now[role] != before[role]:
                try:
                    if http("GET", server.base + "/readyz", timeout=1)[0] == 200:
                        break
                except OSError:
                    pass
            time.sleep(0.02)
        else:
            pytest.fail(f"{role} not back within 2 s:\n{server.log()[-3000:]}")
        assert "terminated by signal 9" in server.log()


def test_stray_signals_are_ignored(server):
    """SIGHUP, SIGUSR1 and SIGUSR2 (a log rotator's, a monitoring script's) stop neither
    the supervisor nor an actor: their default action would end the process without a
    word and leave the embedded PostgreSQL running without its supervisor."""
    actors = server.actors()
    for signum in (signal.SIGHUP, signal.SIGUSR1, signal.SIGUSR2):
        server.proc.send_signal(signum)
        os.kill(actors["gateway"], signum)
        os.kill(actors["store"], signum)
    deadline = time.monotonic() + 10
    while "received SIGUSR2: ignored" not in server.log() and time.monotonic() < deadline:
        time.sleep(0.1)
    assert "received SIGUSR1: ignored" in server.log(), server.log()[-3000:]
    assert server.proc.poll() is None
    assert server.actors() == actors
    assert http("GET", server.base + "/readyz")[0] == 200


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGQUIT])
def test_sigterm_leaves_nothing_behind(signum):
    """SIGTERM, and SIGQUIT alike, stop every actor and PostgreSQL, and say so."""
    s = Layersd().start()
    try:
        kids = list(s.actors().values())
        assert len(kids) >= 2
        pg_pid_file = os.path.join(s.data_dir, "pg", "data", "postmaster.pid")
        with open(pg_pid_file) as f:
            pg_pid = int(f.readline())
        assert alive(pg_pid)
        started = time.monotonic()
        s.proc.send_signal(signum)
        s.proc.wait(10)
        assert time.monotonic() - started < 5.0
        assert s.proc.returncode == 0, s.log()
        assert f"received {signal.Signals(signum).name}, stopping" in s.log()
        for pid in kids:
            assert not alive(pid), f"actor {pid} survived"
        assert not alive(pg_pid), "PostgreSQL survived"
        assert not os.path.exists(pg_pid_file)
        s.check_sanitizers()
    finally:
        s.cleanup()


def held_by_the_store(s, count, prefix, timeout):
    """Stops the store (SIGSTOP) and sends count events, each on a thread of its own,
    until the gateway holds them all; returns (the store's pid, the threads, the list
    the answers go to: (status, headers, body) or the error's repr)."""
    import threading
    from lyserver import post_events
    key = s.credentials()["sdk_key"]
    store = s.actors()["store"]
    os.kill(store, signal.SIGSTOP)
    answers = []

    def send(i):
        try:
            answers.append(post_events(s, {"event_id": "%s-%d" % (prefix, i), "name": "x"},
                                       key=key, timeout=timeout))
        except OSError as e:
            answers.append(repr(e))
    threads = [threading.Thread(target=send, args=(i,)) for i in range(count)]
    for t in threads:
        t.start()
    deadline = time.monotonic() + 10
    while "layers_gateway_in_flight %d" % count not in http("GET", s.base + "/metrics")[2].decode():
        assert time.monotonic() < deadline, "the requests did not reach the gateway"
        time.sleep(0.05)
    return store, threads, answers


def test_sigterm_answers_503_to_what_the_store_never_took():
    """When the requests in flight cannot be stored before the gateway's 5 s are over
    (the store hangs), each still gets an answer, 503 shutting_down with Retry-After,
    not a closed connection that a client cannot tell from a stored request."""
    s = Layersd().start()
    store = None
    try:
        store, threads, answers = held_by_the_store(s, 4, "hung", timeout=30)
        s.proc.send_signal(signal.SIGTERM)
        for t in threads:
            t.join(30)
        said = [a if isinstance(a, str) else (a[0], a[2]["error"]["code"], a[1].get("Retry-After"))
                for a in answers]
        assert said == [(503, "shutting_down", "1")] * 4, said
        s.proc.wait(30)
    finally:
        try:
            if store:
                os.kill(store, signal.SIGCONT)
        except ProcessLookupError:
            pass
        s.cleanup()


def test_sigterm_answers_the_requests_in_flight_first():
    """A stop (a deploy, a rolling restart) does not drop requests: the gateway stops
    first, takes no new connection, and answers every request it holds (here while the
    store is held back, then let go) before the rest stop."""
    s = Layersd().start()
    try:
        store, threads, answers = held_by_the_store(s, 5, "drain", timeout=20)
        s.proc.send_signal(signal.SIGTERM)
        time.sleep(0.5)
        os.kill(store, signal.SIGCONT)
        for t in threads:
            t.join(20)
        s.proc.wait(15)
        answers = [a if isinstance(a, str) else a[0] for a in answers]
        assert answers == [202] * 5, answers
        assert s.proc.returncode == 0, s.log()[-3000:]
        # the five, and maybe the last /metrics request, its connection not yet done
        import re
        said = re.search(r"answering the (\d+) requests in flight first", s.log())
        assert said and int(said.group(1)) >= 5, s.log()[-3000:]
        s.check_sanitizers()
    finally:
        s.cleanup()


def test_killed_supervisor_is_recovered_on_next_start():
    s = Layersd().start()
    try:
        kids = list(s.actors().values())
        s.proc.send_signal(signal.SIGKILL)
        s.proc.wait(5)
        # actors die with their supervisor
        deadline = time.monotonic() + 5
        while any(alive(p) for p in kids) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not any(alive(p) for p in kids)
        # PostgreSQL was left running; the next start must stop or adopt it
        creds = s.credentials()
        s.start()
        assert s.credentials() == creds, "demo credentials must be created once"
        assert "left running" in s.log()
    finally:
        s.cleanup()


def test_a_killed_supervisor_s_postgresql_is_stopped_and_started_without_its_log():
    """PostgreSQL left running by a killed supervisor, its log removed meanwhile (rotated
    away): stopping it first made the log anew as root's, 0600, and the server, run as
    postgres, could then not start writing to it."""
    import pwd
    s = Layersd().start()
    try:
        s.proc.send_signal(signal.SIGKILL)
        s.proc.wait(5)
        log = os.path.join(s.data_dir, "pg", "log")
        os.unlink(log)
        s.start()
        assert "left running" in s.log()
        assert pwd.getpwuid(os.stat(log).st_uid).pw_name == "postgres"
    finally:
        s.cleanup()


@pytest.mark.parametrize("name,value", [
    ("LAYERS_HTTP_ADDR", "no-port"),
    ("LAYERS_LOG_LEVEL", "loud"),
    ("LAYERS_MODEL_KIND", "gpt"),
    ("LAYERS_MEDIA_URL", "ftp://x"),
    ("LAYERS_ACTOR_TIMEOUT", "off"),
])
def test_bad_configuration_is_named(name, value):
    out = subprocess.run([binary("layersd")], env=dict(os.environ, **{name: value},
                         LAYERS_DATA_DIR="/tmp/layers-never-created"),
                         capture_output=True, text=True, timeout=10)
    assert out.returncode == 2
    assert name in out.stderr
    assert not os.path.exists("/tmp/layers-never-created")


@pytest.mark.parametrize("spec", [
    "ingest=tcp://0.0.0.0:99999", "store=tcp://127.0.0.1:abc", "store=tcp://:7602",
    "store=tcp://127.0.0.1:0", "store=tcp://127.0.0.1:*", "store=ipc://", "nothing=tcp://h:1",
])
def test_a_bad_connect_address_is_refused_at_start(spec):
    """Not a port ZeroMQ wraps around (99999 would bind 34463 on every interface) or a
    crash loop of the actor that cannot bind it: exit 2, naming the address."""
    out = subprocess.run([binary("layersd"), "--connect", spec],
                         env=dict(os.environ, LAYERS_DATA_DIR="/tmp/layers-never-created"),
                         capture_output=True, text=True, timeout=10)
    assert out.returncode == 2, out.stderr
    assert spec.split("=")[1] in out.stderr or "nothing" in out.stderr, out.stderr
    assert not os.path.exists("/tmp/layers-never-created")


def test_s3_media_says_at_start_that_it_is_not_implemented():
    """LAYERS_MEDIA_URL=s3://... is a valid setting this version cannot serve yet:
    layersd says so at start, not only when a media route answers 501."""
    s = Layersd(env={"LAYERS_MEDIA_URL": "s3://layers-media/prod"}).start()
    try:
        assert "LAYERS_MEDIA_URL is s3://" in s.log() and "501" in s.log(), s.log()[-2000:]
    finally:
        s.cleanup()


def test_stopping_with_a_stuck_request_and_a_kept_alive_client_is_clean():
    """SIGTERM while a partner API request waits for a lock and a client keeps sending on
    a kept-alive connection: requests that come after the gateway's last look at its
    queue are answered 503 at once instead of being suspended (libmicrohttpd aborted
    the gateway when it stopped with one), and the api actor's worker stuck in its
    statement is cancelled, so every actor stops by itself."""
    import threading
    import requests
    s = Layersd().start()
    stop = threading.Event()
    try:
        token = s.credentials()["api_token"]
        headers = {"Authorization": "Bearer " + token}
        with held(s, "LOCK TABLE ads_content IN ACCESS EXCLUSIVE MODE"):
            stuck = threading.Thread(target=lambda: http("GET", s.base + "/v1/ads-content",
                                                         headers=headers, timeout=40),
                                     daemon=True)
            stuck.start()

            def keep_sending():
                with requests.Session() as session:
                    while not stop.is_set():
                        try:
                            session.get(s.base + "/v1/me", headers=headers, timeout=10)
                        except requests.RequestException:
                            time.sleep(0.01)
            senders = [threading.Thread(target=keep_sending, daemon=True) for _ in range(3)]
            for sender in senders:
                sender.start()
            db = db_connect(s)
            try:
                wait_for_lock_waits(db, "layers_api", 1, "the request did not wait for the lock")
            finally:
                db.close()
            time.sleep(0.5)
            s.proc.send_signal(signal.SIGTERM)
            assert s.proc.wait(40) == 0, s.log()[-3000:]
        stop.set()
        log = s.log()
        assert "Fatal error" not in log and "signal 6" not in log, log[-3000:]
        assert "did not stop" not in log, log[-3000:]
    finally:
        stop.set()
        s.cleanup()


def test_a_misspelled_setting_is_named_at_start():
    """A LAYERS_* variable that nothing reads (a typo, a retired name) would be ignored
    without a word: layersd names it once, with the setting it is closest to, and says
    nothing of the ones it reads (the relay's knobs among them)."""
    s = Layersd(env={"LAYERS_GEOIP_DBB": "/nowhere.mmdb", "LAYERS_FROBNICATE": "1",
                     "LAYERS_RELAY_POLL_MS": "200", "LAYERS_EVENT_MAX_AGE": "3600",
                     "LAYERS_Project_Event_Rate": "5"}).start()
    try:
        lines = [l for l in s.log().splitlines() if "no setting of layersd" in l]
        assert len(lines) == 3, lines
        assert any("LAYERS_Project_Event_Rate is no setting of layersd and is ignored (did you "
                   "mean LAYERS_PROJECT_EVENT_RATE?)" in l for l in lines), lines
        assert any("LAYERS_GEOIP_DBB is no setting of layersd and is ignored (did you mean "
                   "LAYERS_GEOIP_DB?)" in l for l in lines), lines
        assert any("LAYERS_FROBNICATE is no setting of layersd and is ignored" in l
                   and "did you mean" not in l for l in lines), lines
    finally:
        s.cleanup()


def test_an_endpoint_that_cannot_bind_is_named_in_the_log():
    """An address no interface has (192.0.2.1, TEST-NET) cannot be bound: layersd stops
    at start, and its message names the address (the server's own, not masked as a
    client's would be)."""
    s = Layersd(args=["--connect", "store=tcp://192.0.2.1:7602"]).start(wait=False)
    try:
        assert s.proc.wait(30) != 0
        lines = [l for l in s.log().splitlines() if "cannot bind" in l]
        assert lines and all("tcp://192.0.2.1:7602" in l for l in lines), s.log()[-3000:]
    finally:
        s.cleanup()


@pytest.mark.parametrize("case, reason", [("not a database", "invalid metadata"),
                                          ("missing", "No such file or directory"),
                                          ("a directory", "Is a directory")])
def test_a_file_that_is_no_geoip_database_is_refused_at_start(tmp_path, case, reason):
    """Not a crash loop of the ingest actor: layersd names the variable and the reason."""
    bad = tmp_path / "city.mmdb"
    if case == "not a database":
        bad.write_bytes(b"not a MaxMind database")
    if case == "a directory":
        bad.mkdir()
    out = subprocess.run([binary("layersd")], env=dict(os.environ, LAYERS_GEOIP_DB=str(bad),
                         LAYERS_DATA_DIR="/tmp/layers-never-created"),
                         capture_output=True, text=True, timeout=10)
    assert out.returncode == 2
    assert "LAYERS_GEOIP_DB" in out.stderr and reason in out.stderr, out.stderr
    assert not os.path.exists("/tmp/layers-never-created")


def test_a_log_reader_that_stops_reading_does_not_stop_the_server():
    """stderr a pipe nobody reads (a stuck journald, Docker's blocking log mode): once it
    is full, log lines are left out and counted rather than blocking the actors (the
    api actor logs every request) and the supervisor's watchdog."""
    import threading
    from lyserver import post_events
    s = Layersd()
    s.proc = subprocess.Popen([binary("layersd")], env=s.env, stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    drained = []
    try:
        s.wait_ready()
        token = s.credentials()["api_token"]
        me = s.base + "/v1/me"
        for _ in range(1500):               # ~150 kB of request lines: the pipe holds 64 kB
            status, _, _ = http("GET", me, headers={"Authorization": "Bearer " + token}, timeout=5)
            assert status == 200
        status, _, body = post_events(s, {"event_id": "after-the-flood", "name": "app_open"},
                                      key=s.credentials()["sdk_key"], timeout=5)
        assert status == 202, body
        reader = threading.Thread(target=lambda: drained.append(s.proc.stdout.read()))
        reader.start()
        assert http("GET", me, headers={"Authorization": "Bearer " + token})[0] == 200
        s.proc.send_signal(signal.SIGTERM)
        assert s.proc.wait(15) == 0
        reader.join(10)
        text = drained[0].decode("utf-8", "replace")
        assert "log lines were left out: the log output was not being read" in text, text[-3000:]
    finally:
        if s.proc.poll() is None:
            s.proc.kill()
            s.proc.wait()
        with open(s.log_path, "wb") as f:
            f.write(drained[0] if drained else b"")
        s.cleanup()


def test_second_supervisor_on_same_data_dir_is_refused(server):
    """Also once every file that looks like a lock was removed as stale (a second layersd
    then stopped the first one's PostgreSQL), and on another port."""
    for name in os.listdir(server.data_dir):
        if name.endswith(".lock") or name.endswith(".pid"):
            os.unlink(os.path.join(server.data_dir, name))
    port = free_port()
    for env in (server.env, dict(server.env, LAYERS_HTTP_ADDR="127.0.0.1:%d" % port)):
        out = subprocess.run([binary("layersd")], env=env, capture_output=True,
                             text=True, timeout=20)
        assert out.returncode != 0
        assert "another layersd" in out.stderr
    assert http("GET", server.base + "/readyz")[0] == 200


def test_threads_mode_serves_everything_in_one_process():
    from lyserver import post_events
    import uuid
    with Layersd(args=["--threads"]) as s:
        assert s.actors() == {}, "no actor processes in --threads mode"
        key = s.credentials()["sdk_key"]
        status, _, body = post_events(s, {"event_id": str(uuid.uuid4()), "name": "app_open"}, key=key)
        assert status == 202 and body["accepted"] == 1


def test_default_actors(server):
    roles = [cmdline_role(pid) for pid in children_of(server.proc.pid)]
    assert sorted(r for r in roles if r) == sorted(
        ["store", "api", "ingest", "gateway", "relay", "relay"]), roles


def test_no_process_may_write_a_core_file(server):
    """A core file would hold raw personal data of the requests in flight and the master
    key: layersd, its actors and its PostgreSQL run with a core size limit of 0, soft and
    hard (so no child can raise it)."""
    pids = [server.proc.pid] + children_of(server.proc.pid)
    assert len(pids) == 7, pids                 # layersd and its 6 actors
    with open(os.path.join(server.data_dir, "pg", "data", "postmaster.pid")) as f:
        postmaster = int(f.readline())          # started by pg_ctl: not our child
    pids += [postmaster] + children_of(postmaster)
    assert len(pids) >= 12, pids                # and PostgreSQL's processes
    for pid in set(pids):
        try:
            with open("/proc/%d/limits" % pid) as f:
                limits = f.read()
        except FileNotFoundError:
            continue                            # a short-lived process
        line = next(l for l in limits.splitlines() if l.startswith("Max core file size"))
        assert line.split()[4:6] == ["0", "0"], (pid, cmdline(pid), line)


def test_several_relays_and_ingests_are_supervised():
    # counts other than the defaults (one ingest, two relays), so that an ignored option fails
    with Layersd(args=["--relay", "3", "--ingest", "2"]) as s:
        roles = [cmdline_role(pid) for pid in children_of(s.proc.pid)]
        assert sorted(r for r in roles if r) == sorted(
            ["store", "api", "ingest", "ingest", "gateway", "relay", "relay", "relay"]), roles


def cmdline_role(pid):
    with open("/proc/%d/cmdline" % pid, "rb") as f:
        argv = f.read().split(b"\0")
    return argv[argv.index(b"--only") + 1].decode() if b"--only" in argv else None


@pytest.mark.parametrize("args", [["--relay", "0"], ["--relay", "17"], ["--relay", ""],
                                  ["--relay", "2x"], ["--ingest", "-1"], ["--relay"]])
def test_bad_counts_are_refused(args):
    out = subprocess.run([binary("layersd")] + args, capture_output=True, text=True, timeout=10,
                         env=dict(os.environ, LAYERS_DATA_DIR="/tmp/layers-never-created"))
    assert out.returncode == 2
    assert args[0] in out.stderr
    assert not os.path.exists("/tmp/layers-never-created")


def test_metrics_of_every_actor_process(server):
    import uuid
    from lyserver import post_events
    key = server.credentials()["sdk_key"]
    assert post_events(server, {"event_id": str(uuid.uuid4()), "name": "x"}, key=key)[0] == 202
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        text = http("GET", server.base + "/metrics")[2].decode()
        if 'layers_store_events_total{outcome="stored",instance="store.' in text \
           and 'layers_ingest_events_total{outcome="accepted",instance="ingest.' in text:
            break
        time.sleep(0.2)
    else:
        pytest.fail("store and ingest metrics never reached /metrics:\n" + text)
    # one HELP/TYPE per family, as Prometheus requires
    types = [l for l in text.splitlines() if l.startswith("# TYPE ")]
    assert len(types) == len(set(types))
    assert "# TYPE layers_store_batch_seconds histogram" in text


def test_a_second_server_on_a_busy_http_port_stops_with_a_clear_error():
    """A second layersd (another data directory) given the HTTP address of one that runs
    stops at once, saying the address is in use: it must not share the port with it
    (the kernel would then split the clients between two servers with different keys)."""
    with Layersd() as first:
        second = Layersd(env={"LAYERS_HTTP_ADDR": f"127.0.0.1:{first.port}"})
        try:
            second.start(wait=False)
            rc = second.proc.wait(30)
            assert rc != 0 and "LAYERS_HTTP_ADDR" in second.log() \
                and "Address already in use" in second.log(), second.log()
        finally:
            second.cleanup()
        key = first.credentials()["sdk_key"]
        for i in range(10):
            status, _, body = http("POST", first.base + "/l/events",
                                   json.dumps({"event_id": f"alone-{i}", "name": "x"}).encode(),
                                   {"Authorization": "Bearer " + key,
                                    "Content-Type": "application/json"})
            assert status == 202, body


def test_the_ipv6_wildcard_address_takes_ipv4_clients_too():
    """LAYERS_HTTP_ADDR=[::]:PORT listens on every address, IPv4 ones too (as the
    kernel's dual stack allows), not on IPv6 alone."""
    s = Layersd()
    s.env["LAYERS_HTTP_ADDR"] = f"[::]:{s.port}"
    with s:                                     # ready: /readyz answered on 127.0.0.1
        for base in (f"http://127.0.0.1:{s.port}", f"http://[::1]:{s.port}"):
            assert http("GET", base + "/healthz")[0] == 200, base


def test_credentials_follow_a_new_http_address():
    """Started again on another LAYERS_HTTP_ADDR, layersd keeps the demo credentials but
    writes the new base_url into credentials.json (0600 still), so the ready curl line and
    scripts that read it reach the server."""
    s = Layersd()
    try:
        s.start()
        creds = s.credentials()
        s.stop()
        s.port = free_port()
        s.base = f"http://127.0.0.1:{s.port}"
        s.env["LAYERS_HTTP_ADDR"] = f"127.0.0.1:{s.port}"
        s.start()
        moved = s.credentials()
        assert moved["base_url"] == s.base, moved
        assert {k: v for k, v in moved.items() if k != "base_url"} == \
            {k: v for k, v in creds.items() if k != "base_url"}
        path = os.path.join(s.data_dir, "credentials.json")
        assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    finally:
        s.cleanup()
