"""tools/up as the README promises: from the sources, it installs what is missing, builds
the release build, starts the server on its embedded defaults, answers /healthz, writes
the demo credentials (0600), and stops everything on Ctrl-C."""
import json
import os
import signal
import stat
import subprocess
import tempfile
import time

from lyserver import free_port, http, alive

SOURCE = os.environ.get("LY_SOURCE_DIR", os.path.join(os.path.dirname(__file__), ".."))


def test_tools_up_serves_and_stops_on_ctrl_c():
    data = tempfile.mkdtemp(prefix="layers-up-")
    os.chmod(data, 0o755)
    port = free_port()
    # run from elsewhere with a relative data directory: taken from where tools/up ran
    env = dict(os.environ, LAYERS_DATA_DIR=os.path.basename(data),
               LAYERS_HTTP_ADDR=f"127.0.0.1:{port}")
    env.pop("LAYERS_DATABASE_URL", None)
    log_path = os.path.join(data, "up.log")
    with open(log_path, "wb") as log:
        up = subprocess.Popen([os.path.join(os.path.abspath(SOURCE), "tools", "up")],
                              cwd=os.path.dirname(data), env=env,
                              stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 840      # a first release build takes a while
        while time.monotonic() < deadline:
            assert up.poll() is None, open(log_path, errors="replace").read()[-4000:]
            try:
                if http("GET", f"http://127.0.0.1:{port}/healthz", timeout=2)[0] == 200:
                    break
            except OSError:
                pass
            time.sleep(0.5)
        else:
            raise AssertionError("tools/up never answered /healthz")
        creds_path = os.path.join(data, "credentials.json")
        assert stat.S_IMODE(os.stat(creds_path).st_mode) == 0o600
        creds = json.load(open(creds_path))
        assert set(creds) >= {"base_url", "org_id", "project_id", "sdk_key", "api_token"}
        assert "curl" in open(log_path, errors="replace").read()
        with open(os.path.join(data, "pg", "data", "postmaster.pid")) as f:
            pg_pid = int(f.readline())
        up.send_signal(signal.SIGINT)
        assert up.wait(10) == 0
        assert not alive(pg_pid)
    finally:
        if up.poll() is None:
            up.kill()
            up.wait()
        subprocess.run(["rm", "-rf", data])
