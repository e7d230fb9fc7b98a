"""layersctl configures project layers and replays dead letters through the same code as
the partner API: validation, tenancy and sealing of secrets."""
import json
import os
import subprocess
import uuid

import pytest

from lyserver import Layersd, binary, db_connect, layersctl_for


@pytest.fixture(scope="module")
def server():
    with Layersd() as s:
        s.project = s.credentials()["project_id"]
        yield s


def test_layer_set_seals_the_secret_and_get_never_shows_it(server):
    secret = "EAAB-layersctl-secret-" + uuid.uuid4().hex
    out = layersctl_for(server, "layer", "set", server.project, "meta",
                        json.dumps({"enabled": True, "dataset_id": "123456", "access_token": secret}))
    assert out.returncode == 0, out.stderr
    assert secret not in out.stdout + out.stderr
    out = layersctl_for(server, "layer", "get", server.project, "meta")
    assert out.returncode == 0, out.stderr
    shown = json.loads(out.stdout)
    assert shown["config"]["dataset_id"] == "123456" and secret not in out.stdout
    db = db_connect(server)
    cur = db.cursor()
    cur.execute("SELECT secret_ciphertext FROM project_layers WHERE project_id = %s AND layer = 'meta'",
                (server.project,))
    sealed = bytes(cur.fetchone()[0])
    assert secret.encode() not in sealed
    db.close()


def test_layer_set_takes_its_json_on_standard_input(server):
    """`-` reads the settings from standard input, so that a secret need not be on the
    command line (where ps shows it to every user)."""
    secret = "TT-stdin-secret-" + uuid.uuid4().hex
    out = layersctl_for(server, "layer", "set", server.project, "tiktok", "-",
                        input=json.dumps({"enabled": False, "app_id": "7000000000",
                                          "access_token": secret}))
    assert out.returncode == 0, out.stderr
    assert secret not in out.stdout + out.stderr
    shown = json.loads(layersctl_for(server, "layer", "get", server.project, "tiktok").stdout)
    assert shown["config"]["app_id"] == "7000000000", shown
    db = db_connect(server)
    cur = db.cursor()
    cur.execute("SELECT secret_ciphertext FROM project_layers WHERE project_id = %s"
                " AND layer = 'tiktok'", (server.project,))
    assert cur.fetchone()[0] is not None
    db.close()
    out = layersctl_for(server, "layer", "set", server.project, "tiktok", "-", input="")
    assert out.returncode == 2 and "400" in out.stderr, out.stderr


def test_layer_set_refuses_bad_settings(server):
    out = layersctl_for(server, "layer", "set", server.project, "meta", '{"dataset_id": "not digits"}')
    assert out.returncode == 2 and "422" in out.stderr and "dataset_id" in out.stderr
    out = layersctl_for(server, "layer", "set", str(uuid.uuid4()), "meta", "{}")
    assert out.returncode == 1 and "no project" in out.stderr
    # bad arguments are 2 (a project id that is no id, a layer that is none, a limit
    # the API refuses), a failure 1 (no such project)
    out = layersctl_for(server, "layer", "set", "notuuid", "meta", "{}")
    assert out.returncode == 2 and "UUID" in out.stderr, out.stderr
    out = layersctl_for(server, "layer", "get", server.project, "bogus")
    assert out.returncode == 2 and "meta, tiktok or apple_search_ads" in out.stderr, out.stderr
    out = layersctl_for(server, "layer", "set", server.project)
    assert out.returncode == 2


def test_deadletters_and_replay(server):
    db = db_connect(server)
    cur = db.cursor()
    creds = server.credentials()
    cur.execute("""INSERT INTO relay_deliveries (org_id, project_id, event_received_at, event_seq,
                       event_id, destination, status, attempts, last_status, last_response, reason)
                   VALUES (%s, %s, now (), 1, %s, 'meta', 'dead', 5, 400, '{"error":{"code":100}}', 'invalid'),
                          (%s, %s, now (), 2, %s, 'meta', 'delivered', 1, 200, '{}', NULL)
                   RETURNING delivery_id""",
                (creds["org_id"], server.project, "ev-dead-1", creds["org_id"], server.project, "ev-done-1"))
    dead_id, done_id = [r[0] for r in cur.fetchall()]
    out = layersctl_for(server, "deadletters", server.project, "--destination", "meta")
    assert out.returncode == 0, out.stderr
    listed = json.loads(out.stdout)
    ids = [d["delivery_id"] for d in listed["data"]]
    assert any(d.get("last_response") for d in listed["data"])
    assert dead_id in ids and done_id not in ids
    out = layersctl_for(server, "replay", server.project, "--destination", "meta")
    assert out.returncode == 0, out.stderr
    answer = json.loads(out.stdout)
    assert answer["replayed"] == 1, answer
    cur.execute("SELECT status FROM relay_deliveries WHERE delivery_id = %s", (done_id,))
    assert cur.fetchone()[0] == "delivered", "a replay never touches delivered events"
    db.close()


def test_deadletters_pages(server):
    """deadletters shows N at a time (--limit) and the page after a next_cursor
    (--cursor), through all of them; a bad limit is the API's 400."""
    db = db_connect(server)
    db.autocommit = True
    cur = db.cursor()
    creds = server.credentials()
    for i in range(5):
        cur.execute("""INSERT INTO relay_deliveries (org_id, project_id, event_received_at,
                           event_seq, event_id, destination, status, attempts, reason)
                       VALUES (%s, %s, now (), %s, %s, 'apple_search_ads', 'dead', 1, 'invalid')""",
                    (creds["org_id"], server.project, 100 + i, f"ev-page-{i}"))
    db.close()
    seen, cursor = [], None
    while True:
        args = ["deadletters", server.project, "--destination", "apple_search_ads", "--limit", "2"]
        out = layersctl_for(server, *args, *(["--cursor", cursor] if cursor else []))
        assert out.returncode == 0, out.stderr
        page = json.loads(out.stdout)
        assert len(page["data"]) <= 2
        seen += [d["event_id"] for d in page["data"]]
        cursor = page.get("next_cursor")
        if not cursor:
            break
    assert sorted(seen) == [f"ev-page-{i}" for i in range(5)], seen
    out = layersctl_for(server, "deadletters", server.project, "--limit", "0")
    assert out.returncode == 2 and "400" in out.stderr, out.stderr


def test_replay_of_chosen_deliveries(server):
    """replay --delivery ID puts back those dead deliveries only; an id that is not a
    positive integer is refused before anything is asked."""
    db = db_connect(server)
    db.autocommit = True
    cur = db.cursor()
    creds = server.credentials()
    cur.execute("""INSERT INTO relay_deliveries (org_id, project_id, event_received_at, event_seq,
                       event_id, destination, status, attempts, last_status, reason)
                   VALUES (%s, %s, now (), 11, 'ev-pick-1', 'tiktok', 'dead', 5, 400, 'invalid'),
                          (%s, %s, now (), 12, 'ev-pick-2', 'tiktok', 'dead', 5, 400, 'invalid')
                   RETURNING delivery_id""",
                (creds["org_id"], server.project, creds["org_id"], server.project))
    chosen, other = [r[0] for r in cur.fetchall()]
    out = layersctl_for(server, "replay", server.project, "--delivery", str(chosen))
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout)["replayed"] == 1, out.stdout
    cur.execute("SELECT delivery_id, status FROM relay_deliveries WHERE delivery_id IN (%s, %s)",
                (chosen, other))
    status = dict(cur.fetchall())
    assert status[chosen] != "dead" and status[other] == "dead", status
    for bad in ("x", "0", "-3", "1.5"):
        out = layersctl_for(server, "replay", server.project, "--delivery", bad)
        assert out.returncode == 2 and "--delivery" in out.stderr, (bad, out.stderr)
    db.close()


def test_every_command_takes_help_and_only_migrate_makes_a_master_key(tmp_path):
    """COMMAND --help shows the help (exit 0), whatever the command; a command other
    than migrate run where there is no master key says so and makes none (a new key
    could not open the server's secrets)."""
    env = dict(os.environ, LAYERS_DATA_DIR=str(tmp_path / "var"))
    env.pop("LAYERS_DATABASE_URL", None)
    env.pop("LAYERS_MASTER_KEY_FILE", None)
    for args in (["migrate", "--help"], ["org", "create", "--help"], ["token", "--help"],
                 ["layer", "--help"], ["deadletters", "--help"], ["replay", "-h"]):
        out = subprocess.run([binary("layersctl")] + args, env=env, capture_output=True,
                             text=True, timeout=30)
        assert out.returncode == 0 and "Usage: layersctl" in out.stdout, (args, out.stderr)
    out = subprocess.run([binary("layersctl"), "deadletters", str(uuid.uuid4())], env=env,
                         capture_output=True, text=True, timeout=30)
    assert out.returncode != 0 and "master key" in out.stderr, out.stderr
    assert not (tmp_path / "var" / "master.key").exists()
    # migrate on the embedded PostgreSQL (no LAYERS_DATABASE_URL) needs layersd's key too:
    # a mistyped LAYERS_DATA_DIR is not made
    out = subprocess.run([binary("layersctl"), "migrate"], env=env,
                         capture_output=True, text=True, timeout=30)
    assert out.returncode != 0 and "master key" in out.stderr, out.stderr
    assert "LAYERS_DATA_DIR" in out.stderr, out.stderr
    assert not (tmp_path / "var").exists()


def test_messages_say_what_is_wrong(server):
    """An invalid id is called invalid (not missing); an organization that does not exist
    is named so (not 'has no member'); and without LAYERS_LOG_LEVEL a command prints its
    answer without the server's info lines."""
    out = layersctl_for(server, "layer", "set", server.project, "meta", '{"dataset_id": "abc"}')
    assert out.returncode == 2 and "dataset_id must be" in out.stderr, out.stderr
    out = layersctl_for(server, "layer", "set", server.project, "tiktok", '{}')
    assert out.returncode == 2 and "app_id is required" in out.stderr, out.stderr
    for args in (["org", "create", "x" * 201, "--owner", "a@example.com"],
                 ["org", "create", "Line\nbreak", "--owner", "a@example.com"],
                 ["org", "create", "Ok", "--owner", "a@example.com", "--display-name", "d" * 201],
                 ["token", "create", "--org", server.credentials()["org_id"], "--member", "a@example.com",
                  "--name", "tab\there"]):
        out = layersctl_for(server, *args)
        assert out.returncode == 2 and "200 characters" in out.stderr, (args, out.stderr)
    out = layersctl_for(server, "org", "create", "é" * 200, "--owner", "e200@example.com")
    assert out.returncode == 0, out.stderr
    # an owner's email as the API takes a member's: no second '@', no white space of any kind
    for owner in ("a@@example.com", "a\u00a0b@example.com", "a\u2028@example.com"):
        out = layersctl_for(server, "org", "create", "Owner test", "--owner", owner)
        assert out.returncode == 2 and "--owner" in out.stderr, (owner, out.stderr)
    missing = str(uuid.uuid4())
    out = layersctl_for(server, "token", "create", "--org", missing, "--member", "a@example.com")
    assert out.returncode == 1 and "there is no organization " + missing in out.stderr, out.stderr
    env = dict(server.env)
    env.pop("LAYERS_LOG_LEVEL")
    out = subprocess.run([binary("layersctl"), "layer", "get", server.project, "meta"], env=env,
                         capture_output=True, text=True, timeout=60)
    assert "INFO" not in out.stderr, out.stderr
