"""Finding 2 (one token did two jobs, every viewer held it, it was on the worker's command
line), replayed over real websockets against the worker's own access classes and a real
SQLite database of robot tokens: each credential opens only its own door."""
from __future__ import annotations

import json
import time

import pytest
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import connect

from core.worker.remote import RemoteHub
from core.worker.telemetry import TelemetryHub, WebsocketServer
from tests.endpoint import SECRET, RobotTokens, viewer_access, viewer_ticket

RECHECK_S = 0.2


@pytest.fixture
def endpoint(tmp_path):
    tokens = RobotTokens(tmp_path, recheck_s=RECHECK_S)
    tele, hub = TelemetryHub(viewer_access()), RemoteHub(tokens.access)
    srv = WebsocketServer({"/telemetry": tele.handler, "/robot": hub.handler}, port=0)
    tele.attach(srv)
    hub.attach(srv)
    srv.start()
    yield srv, hub, tokens
    srv.stop()


def register(ws, token, name="arm-1") -> dict:
    ws.send(json.dumps({"type": "register", "token": token, "protocol": 1, "name": name,
                        "camera": {"height": 16, "width": 16}, "action": {"dim": 2}}))
    return json.loads(ws.recv(5))


def closed_with(ws) -> int:
    with pytest.raises(ConnectionClosed) as e:
        ws.recv(5)
    return e.value.rcvd.code


@pytest.mark.parametrize("what", ["viewer ticket", "worker secret", "nothing", "forged token"])
def test_only_a_robot_token_registers_a_robot(endpoint, what):
    srv, hub, tokens = endpoint
    credential = {"viewer ticket": viewer_ticket(), "worker secret": SECRET, "nothing": None,
                  "forged token": "dojo_rt_" + "A" * 43}[what]
    with connect(srv.url("/robot")) as ws:
        err = register(ws, credential)
        assert err["type"] == "error" and err["code"] == "unauthorized", err
        assert "robot token" in err["message"]
        assert closed_with(ws) == 4401
    with connect(srv.url("/robot") + "?token=" + viewer_ticket()) as ws:  # nor in the URL
        assert register(ws, None)["code"] == "unauthorized"
    assert not hub.connected()


def test_a_robot_token_does_not_open_the_telemetry_feed(endpoint):
    srv, _hub, tokens = endpoint
    with connect(srv.url("/telemetry") + "?token=" + tokens.fleet_token) as ws:
        err = json.loads(ws.recv(5))
        assert err["code"] == "unauthorized" and "not a viewer ticket" in err["message"]
        assert closed_with(ws) == 4401
    with connect(srv.url("/telemetry")) as ws:
        ws.send(json.dumps({"ticket": tokens.fleet_token}))
        assert json.loads(ws.recv(5))["code"] == "unauthorized"


def test_a_token_bound_to_a_name_registers_only_that_name(endpoint):
    srv, hub, tokens = endpoint
    bound = tokens.create("arm-1 lab PC", robot_name="arm-1")
    with connect(srv.url("/robot")) as ws:
        err = register(ws, bound, "arm-2")
        assert err["code"] == "unauthorized" and "for robot 'arm-1' only" in err["message"]
    with connect(srv.url("/robot")) as ws:
        assert register(ws, bound, "arm-1")["type"] == "registered"


def test_revoking_a_token_disconnects_its_robots_and_refuses_them_again(endpoint):
    srv, hub, tokens = endpoint
    keep = tokens.create("kept")
    with connect(srv.url("/robot")) as gone, connect(srv.url("/robot")) as kept:
        assert register(gone, tokens.fleet_token, "arm-1")["type"] == "registered"
        assert register(kept, keep, "arm-2")["type"] == "registered"
        with tokens.db.write() as s:
            from storage import repo

            fleet_id = next(t.id for t in repo.list_robot_tokens(s) if t.label == "test fleet")
            repo.revoke_robot_token(s, fleet_id)
        t0 = time.monotonic()
        err = json.loads(gone.recv(5))
        assert err["code"] == "unauthorized" and "revoked" in err["message"]
        assert closed_with(gone) == 4401
        assert time.monotonic() - t0 < RECHECK_S * 10
        kept.send(json.dumps({"type": "ping"}))
        assert json.loads(kept.recv(5))["type"] == "pong"  # the other token's robot goes on
    with connect(srv.url("/robot")) as ws:
        err = register(ws, tokens.fleet_token, "arm-1")
        assert "was revoked" in err["message"]


def test_no_secret_travels_on_a_command_line(tmp_path, monkeypatch):
    """The worker has no --token; the launcher's children get the data folder, not the secret."""
    import argparse

    from core.worker.main import build_parser
    from scripts import launch
    from storage.credentials import load_worker_secret

    opts = {a for action in build_parser()._actions for a in action.option_strings}
    assert "--token" not in opts and "--secret-file" in opts
    monkeypatch.delenv("DOJO_WORKER_SECRET", raising=False)
    monkeypatch.delenv("DOJO_WORKER_SECRET_FILE", raising=False)
    launch.ensure_worker_secret(tmp_path)
    secret = load_worker_secret(tmp_path, create=False)
    args = argparse.Namespace(no_worker=False, telemetry_port=8765, host="127.0.0.1", port=8501)
    children = launch.make_children(args, {}, "sqlite:///x", tmp_path)
    argv = " ".join(" ".join(c.argv) for c in children)
    assert secret not in argv and "token" not in argv
