"""Scale-out: `layersd --only ingest --connect ...` started apart from the supervisor (as on
another host, here over tcp on loopback) takes a share of the ingest work."""
import json
import os
import signal
import subprocess
import tempfile
import time
import uuid

from lyserver import Layersd, binary, free_port, post_events


def test_extra_ingest_node_over_tcp():
    ingest_port, store_port = free_port(), free_port()
    links = ["--connect", f"ingest=tcp://127.0.0.1:{ingest_port}",
             "--connect", f"store=tcp://127.0.0.1:{store_port}"]
    with Layersd(args=links) as server:
        other_dir = tempfile.mkdtemp(prefix="layers-node-")
        env = dict(os.environ, LAYERS_DATA_DIR=other_dir, LAYERS_LOG_LEVEL="info")
        env.pop("LAYERS_DATABASE_URL", None)
        node = subprocess.Popen([binary("layersd"), "--only", "ingest"] + links, env=env,
                                stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        try:
            key = server.credentials()["sdk_key"]
            tap = subprocess.Popen([binary("layers-tap"), "--filter", "EVENTS_SUBMIT",
                                    "--count", "3", "--timeout", "30", "ingest"],
                                   env=env, stdout=subprocess.PIPE, text=True)
            seen = ""
            deadline = time.monotonic() + 30
            while tap.poll() is None and time.monotonic() < deadline:
                status, _, body = post_events(server, {"event_id": str(uuid.uuid4()), "name": "x"}, key=key)
                assert status in (202, 503), body
                time.sleep(0.02)
            seen = tap.communicate(timeout=10)[0]
            assert tap.returncode == 0, "the extra ingest node got no work"
            lines = [json.loads(l) for l in seen.splitlines()]
            assert len(lines) == 3 and all(l["actor"] == "ingest" for l in lines)
            assert all(l["pid"] == node.pid for l in lines)
        finally:
            node.send_signal(signal.SIGTERM)
            out = node.communicate(timeout=10)[0].decode(errors="replace")
            assert node.returncode == 0, out
            assert "Sanitizer" not in out
