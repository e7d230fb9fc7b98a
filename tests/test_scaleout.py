"""Scale-out: `layersd --only ingest --connect ...` started apart from the supervisor (as on
another host, here over tcp on loopback) takes a share of the ingest work."""
import json
import os
import re
import shutil
import select
import signal
import subprocess
import tempfile
import time
import uuid

import pytest

from lyserver import Layersd, binary, free_endpoint_port, post_events


@pytest.mark.parametrize("host", ["127.0.0.1", "[::1]"])
def test_extra_ingest_node_over_tcp(host):
    """Over IPv4 and IPv6 (ZeroMQ sockets take IPv6 only when asked)."""
    ingest_port, store_port = free_endpoint_port(), free_endpoint_port()
    links = ["--connect", f"ingest=tcp://{host}:{ingest_port}",
             "--connect", f"store=tcp://{host}:{store_port}"]
    with Layersd(args=links) as server:
        # copied carelessly: readable by all (warned of, below)
        node, env = start_ingest_node(server, links, secret_mode=0o644)
        try:
            lines = [json.loads(l) for l in node_work(server, env, 3).splitlines()]
            assert len(lines) == 3 and all(l["actor"] == "ingest" for l in lines)
            assert all(l["pid"] == node.pid for l in lines)
        finally:
            node.send_signal(signal.SIGTERM)
            out = node.communicate(timeout=10)[0].decode(errors="replace")
            assert node.returncode == 0, out
            assert "may be read by others (mode 644): chmod 600 it" in out, out
            assert "Sanitizer" not in out


def start_ingest_node(server, links, secret_mode=0o600):
    """Starts `layersd --only ingest` on a data directory of its own that shares the
    server's cluster certificate, as an operator would copy it. Returns (Popen, env)."""
    other_dir = tempfile.mkdtemp(prefix="layers-node-")
    os.makedirs(os.path.join(other_dir, "curve"))
    for name in ("cluster.cert", "cluster.cert_secret"):
        shutil.copy(os.path.join(server.data_dir, "curve", name),
                    os.path.join(other_dir, "curve", name))
    os.chmod(os.path.join(other_dir, "curve", "cluster.cert_secret"), secret_mode)
    env = dict(os.environ, LAYERS_DATA_DIR=other_dir, LAYERS_LOG_LEVEL="info")
    env.pop("LAYERS_DATABASE_URL", None)
    node = subprocess.Popen([binary("layersd"), "--only", "ingest"] + links, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    return node, env


def node_work(server, env, count):
    """Posts events until the node's debug tap saw it take `count` of them; returns the
    tap's lines."""
    key = server.credentials()["sdk_key"]
    tap = subprocess.Popen([binary("layers-tap"), "--filter", "EVENTS_SUBMIT",
                            "--count", str(count), "--timeout", "30", "ingest"],
                           env=env, stdout=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 30
    while tap.poll() is None and time.monotonic() < deadline:
        status, _, body = post_events(server, {"event_id": str(uuid.uuid4()), "name": "x"}, key=key)
        assert status in (202, 503), body
        time.sleep(0.02)
    seen = tap.communicate(timeout=10)[0]
    assert tap.returncode == 0, "the extra ingest node got no work"
    return seen


def test_a_stalled_node_stops_getting_work():
    """A node that stops answering (stopped, hung, its host gone without a FIN) is cut
    off by ZeroMQ's heartbeats within seconds: the gateway's other ingest actors take
    every request, rather than one in two waiting out the 10 s deadline."""
    ingest_port, store_port = free_endpoint_port(), free_endpoint_port()
    links = ["--connect", f"ingest=tcp://127.0.0.1:{ingest_port}",
             "--connect", f"store=tcp://127.0.0.1:{store_port}"]
    with Layersd(args=links) as server:
        node, env = start_ingest_node(server, links)
        try:
            node_work(server, env, 1)
            node.send_signal(signal.SIGSTOP)
            time.sleep(8)
            key = server.credentials()["sdk_key"]
            for i in range(6):
                started = time.monotonic()
                status, _, body = post_events(server, {"event_id": f"stalled-{i}", "name": "x"},
                                              key=key)
                assert status == 202, body
                assert time.monotonic() - started < 5, "a request went to the stalled node"
        finally:
            node.send_signal(signal.SIGCONT)
            node.send_signal(signal.SIGTERM)
            out = node.communicate(timeout=10)[0].decode(errors="replace")
            assert "Sanitizer" not in out, out


def rss_kib(pid):
    with open(f"/proc/{pid}/status") as f:
        return int(next(line for line in f if line.startswith("VmRSS:")).split()[1])


def test_a_huge_frame_before_the_handshake_is_refused_not_held():
    """libzmq reads a frame whole before CURVE can refuse its sender: a peer without any
    certificate that announces a 1 GiB command frame and sends it must be cut off at the
    frame limit, not make the store (or any actor with a tcp endpoint) hold it."""
    import socket
    import struct
    store_port = free_endpoint_port()
    with Layersd(args=["--connect", f"store=tcp://127.0.0.1:{store_port}"]) as server:
        store = server.actors()["store"]
        before = rss_kib(store)
        greeting = (b"\xff" + b"\0" * 8 + b"\x7f" + b"\x03\x00" + b"CURVE".ljust(20, b"\0")
                    + b"\x00" + b"\0" * 31)
        sent = 0
        with socket.create_connection(("127.0.0.1", store_port), timeout=10) as conn:
            conn.sendall(greeting + b"\x06" + struct.pack(">Q", 1 << 30))
            chunk = b"\0" * (1 << 20)
            try:
                while sent < (300 << 20):
                    conn.sendall(chunk)
                    sent += len(chunk)
            except OSError:
                pass
            time.sleep(0.5)
            grown = rss_kib(store) - before
        assert sent < (300 << 20), "the store read 300 MiB of a frame from an unknown peer"
        assert grown < 64 * 1024, grown
        status, _, body = post_events(server, {"event_id": "after-the-frame", "name": "x"},
                                      key=server.credentials()["sdk_key"])
        assert status == 202, body


@pytest.mark.parametrize("role", ["relay", "api", "store"])
def test_a_node_with_another_master_key_is_refused(role):
    """A scale-out node on the same database with another master key would park
    deliveries as "the secret does not open" (relay) or seal secrets no one else can
    open (api): it stops at start, naming the key file, as the supervisor would."""
    with Layersd() as server:
        node = tempfile.mkdtemp(prefix="layers-node-")
        try:
            key = os.path.join(node, "master.key")
            with open(key, "w") as f:
                f.write(os.urandom(32).hex() + "\n")
            os.chmod(key, 0o600)
            env = dict(os.environ, LAYERS_DATA_DIR=node,
                       LAYERS_DATABASE_URL="host='%s' dbname=layers user=postgres"
                                           % os.path.join(server.data_dir, "pg", "run"))
            out = subprocess.run([binary("layersd"), "--only", role], env=env,
                                 capture_output=True, text=True, timeout=30)
            assert out.returncode != 0, out.stderr
            assert "is not the one the database" in out.stderr and key in out.stderr, out.stderr
            # with the right key it runs
            shutil.copy(os.path.join(server.data_dir, "master.key"), key)
            proc = subprocess.Popen([binary("layersd"), "--only", role], env=env,
                                    stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
            time.sleep(2)
            assert proc.poll() is None, proc.stderr.read()
            proc.terminate()
            proc.wait(10)
        finally:
            shutil.rmtree(node, ignore_errors=True)


def test_an_endpoint_that_cannot_be_bound_stops_layersd_at_start(tmp_path):
    """An address no interface has, a name ZeroMQ cannot bind, or a port another process
    listens on: layersd says so and stops, as for LAYERS_HTTP_ADDR, rather than restart
    the binding actor for ever."""
    import socket
    taken = socket.socket()
    taken.bind(("127.0.0.1", 0))
    taken.listen()
    port = free_endpoint_port()
    long_dir = "/tmp/" + "d" * 120
    cases = [(["store=tcp://192.0.2.1:%d" % port], "cannot bind endpoint \"store\""),
             (["store=tcp://localhost:%d" % port], "is no IP address"),
             (["store=tcp://127.0.0.1:%d" % taken.getsockname()[1]], "Address already in use"),
             # two endpoints on one address: one of them would restart for ever
             (["store=tcp://127.0.0.1:%d" % port, "api=tcp://127.0.0.1:%d" % port],
              "are both at"),
             (["store=ipc:///tmp/layers-same.ipc", "api=ipc:///tmp/layers-same.ipc"],
              "are both at"),
             # longer than a unix socket's path
             (["store=ipc://" + long_dir + "/store"], "at most 107 bytes")]
    try:
        for links, said in cases:
            env = dict(os.environ, LAYERS_DATA_DIR=str(tmp_path / "data"),
                       LAYERS_HTTP_ADDR="127.0.0.1:%d" % free_endpoint_port())
            env.pop("LAYERS_DATABASE_URL", None)
            args = [arg for link in links for arg in ("--connect", link)]
            out = subprocess.run([binary("layersd")] + args, env=env,
                                 capture_output=True, text=True, timeout=30)
            assert out.returncode != 0 and said in out.stderr, (links, out.stderr)
    finally:
        taken.close()


def test_a_connect_host_that_does_not_resolve_is_named_in_the_log():
    """libzmq takes tcp://no-such-host:PORT and retries in the background for ever: the
    actor says at start that the host does not resolve (and keeps running)."""
    with Layersd() as server:
        env = dict(server.env, LAYERS_LOG_LEVEL="info")
        node = subprocess.Popen([binary("layersd"), "--only", "relay", "--connect",
                                 "metrics=tcp://no-such-host.invalid:7609"], env=env,
                                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        try:
            said = ""
            deadline = time.monotonic() + 20
            while "does not resolve" not in said and time.monotonic() < deadline:
                if select.select([node.stderr], [], [], 0.5)[0]:
                    chunk = os.read(node.stderr.fileno(), 65536)
                    if not chunk:
                        break
                    said += chunk.decode(errors="replace")
            assert 'endpoint "metrics" at "tcp://no-such-host.invalid:7609": host ' \
                   '"no-such-host.invalid" does not resolve' in said, said
            assert node.poll() is None, said
        finally:
            node.send_signal(signal.SIGTERM)
            node.wait(15)


def test_a_data_directory_too_long_for_unix_sockets_stops_layersd_at_start(tmp_path):
    """Its actors could not bind their sockets and would restart for ever, the gateway
    never listening: layersd names LAYERS_DATA_DIR and how long it may be."""
    data = tmp_path / ("d" * (110 - len(str(tmp_path))))
    env = dict(os.environ, LAYERS_DATA_DIR=str(data),
               LAYERS_HTTP_ADDR="127.0.0.1:%d" % free_endpoint_port())
    env.pop("LAYERS_DATABASE_URL", None)
    out = subprocess.run([binary("layersd")], env=env, capture_output=True, text=True,
                         timeout=30)
    assert out.returncode != 0, out.stderr
    assert "choose a shorter LAYERS_DATA_DIR" in out.stderr, out.stderr


def test_an_ipc_endpoint_keeps_its_directory_s_mode_and_is_ours_alone(tmp_path):
    """An ipc endpoint in a directory that is there (a shared one, 1777 like /tmp) leaves
    its mode alone, where the actor once made it 0700; the socket file itself is 0600,
    as it carries raw personal data."""
    shared = tmp_path / "shared"
    shared.mkdir()
    os.chmod(shared, 0o1777)
    socket_path = shared / "store.ipc"
    with Layersd(args=["--connect", "store=ipc://%s" % socket_path]) as server:
        status, _, body = post_events(server, {"event_id": "in-a-shared-dir", "name": "x"},
                                      key=server.credentials()["sdk_key"])
        assert status == 202, body
        assert oct(os.stat(shared).st_mode & 0o7777) == oct(0o1777)
        assert oct(os.stat(socket_path).st_mode & 0o777) == oct(0o600)


def test_an_only_node_on_a_running_server_s_data_directory_is_refused():
    """`layersd --only store` on the data directory of a running server: libzmq would
    remove the running store's socket file and take its peers, the server broken once
    it stopped. It stops at start instead, and the server goes on."""
    with Layersd() as server:
        store = server.actors()["store"]
        env = dict(server.env)
        out = subprocess.run([binary("layersd"), "--only", "store"], env=env,
                             capture_output=True, text=True, timeout=30)
        assert out.returncode != 0, out.stderr
        assert "another process listens there" in out.stderr, out.stderr
        assert server.actors()["store"] == store
        status, _, body = post_events(server, {"event_id": "after-the-only-node", "name": "x"},
                                      key=server.credentials()["sdk_key"])
        assert status == 202, body


def test_node_without_the_cluster_certificate_is_refused():
    ingest_port, store_port = free_endpoint_port(), free_endpoint_port()
    links = ["--connect", f"ingest=tcp://127.0.0.1:{ingest_port}",
             "--connect", f"store=tcp://127.0.0.1:{store_port}"]
    with Layersd(args=links) as server:
        # no certificate at all: the node says what is missing and stops
        bare = tempfile.mkdtemp(prefix="layers-node-")
        env = dict(os.environ, LAYERS_DATA_DIR=bare)
        env.pop("LAYERS_DATABASE_URL", None)
        out = subprocess.run([binary("layersd"), "--only", "ingest"] + links, env=env,
                             capture_output=True, text=True, timeout=20)
        assert out.returncode != 0 and "cluster certificate" in out.stderr
        # a certificate of its own: CURVE refuses it, so it never gets work
        rogue = tempfile.mkdtemp(prefix="layers-rogue-")
        subprocess.run([binary("layersd"), "--help"], check=True, capture_output=True)
        env = dict(os.environ, LAYERS_DATA_DIR=rogue)
        env.pop("LAYERS_DATABASE_URL", None)
        boot = Layersd(data_dir=rogue)      # makes rogue/curve with another certificate
        boot.start()
        boot.stop()
        node = subprocess.Popen([binary("layersd"), "--only", "ingest"] + links, env=env,
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            key = server.credentials()["sdk_key"]
            tap = subprocess.Popen([binary("layers-tap"), "--filter", "EVENTS_SUBMIT",
                                    "--count", "1", "--timeout", "4", "ingest"],
                                   env=env, stdout=subprocess.PIPE, text=True)
            while tap.poll() is None:
                status, _, _ = post_events(server, {"event_id": str(uuid.uuid4()), "name": "x"}, key=key)
                assert status == 202
                time.sleep(0.05)
            assert tap.returncode == 1, "a node with a foreign certificate got work"
        finally:
            node.send_signal(signal.SIGTERM)
            node.wait(10)


class UnixForwarder:
    """A TCP port on loopback that forwards each connection to a Unix socket: PostgreSQL
    reached over TCP, as on another host."""

    def __init__(self, path):
        import socket
        import threading
        self.path = path
        self.listener = socket.socket()
        self.listener.bind(("127.0.0.1", 0))
        self.listener.listen(16)
        self.port = self.listener.getsockname()[1]
        threading.Thread(target=self.accept, daemon=True).start()

    def accept(self):
        import socket
        import threading
        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            server = socket.socket(socket.AF_UNIX)
            server.connect(self.path)
            for a, b in ((client, server), (server, client)):
                threading.Thread(target=self.pump, args=(a, b), daemon=True).start()

    @staticmethod
    def pump(a, b):
        try:
            while True:
                data = a.recv(65536)
                if not data:
                    break
                b.sendall(data)
        except OSError:
            pass
        finally:
            for s in (a, b):
                try:
                    s.shutdown(2)
                except OSError:
                    pass

    def close(self):
        self.listener.close()


def keepalive_timers(pid, port):
    """The `ss` timers of pid's TCP connections to 127.0.0.1:port."""
    out = subprocess.run(["ss", "-tnpo", "state", "established", "dst", f"127.0.0.1:{port}"],
                         capture_output=True, text=True).stdout
    return [line for line in out.splitlines() if f"pid={pid}," in line]


def test_database_connections_over_tcp_notice_a_vanished_server():
    """Over TCP, every database session turns on keepalives (and tcp_user_timeout), so a
    server that vanished without a word (a failover, a partition) is noticed within
    ~30 s, not after the kernel's ~15 minutes; settings in the database URL win."""
    with Layersd() as server:
        forwarder = UnixForwarder(os.path.join(server.data_dir, "pg", "run", ".s.PGSQL.5432"))
        nodes = []
        try:
            for extra in ("", " keepalives=0"):
                env = dict(os.environ, LAYERS_DATA_DIR=server.data_dir, LAYERS_LOG_LEVEL="info",
                           LAYERS_DATABASE_URL=f"host=127.0.0.1 port={forwarder.port}"
                                               f" dbname=layers user=postgres{extra}")
                nodes.append(subprocess.Popen([binary("layersd"), "--only", "relay"], env=env,
                                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
            keepalive = re.compile(r"timer:\(keepalive,(\d+(\.\d+)?)(ms|sec),")
            # A connection with a query in flight shows its retransmit timer ("on") instead
            # of the keepalive one: sample until every connection is idle at once.
            deadline = time.monotonic() + 20
            while True:
                default, disabled = (keepalive_timers(node.pid, forwarder.port) for node in nodes)
                if (default and disabled and all(keepalive.search(line) for line in default)
                        or time.monotonic() > deadline):
                    break
                time.sleep(0.1)
            # libpq turns keepalives on by itself, but after the kernel's 2 hours idle
            assert default and all(keepalive.search(line) for line in default), default
            assert disabled and not any("keepalive" in line for line in disabled), disabled
        finally:
            for node in nodes:
                node.send_signal(signal.SIGTERM)
                node.wait(15)
            forwarder.close()
