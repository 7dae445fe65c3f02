"""Remote robots over a real websocket on localhost: registration, the Fleet view, bad
messages answered with errors to that robot only, disconnects mid-episode, and a practice
job driving reference clients that wrap the tabletop simulator."""
from __future__ import annotations

import base64
import json
import threading
import time

import numpy as np
import pytest
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import connect

from core.learning.fleets import RobotFailure
from core.worker.remote import RemoteFleet, RemoteHub
from core.worker.telemetry import TelemetryHub, WebsocketServer
from sim_backends.remote.client import RemoteRobotClient, encode_image
from tests.endpoint import RobotTokens, viewer_access, viewer_ticket

TOKEN = ""  # a real robot token, made by the module's ``tokens`` fixture
INSTR = "push the red moon to the blue cube"


class FakeEnv:
    """A numpy 'robot': 16x16 frames whose value is the step count."""

    action_dim, proprio_dim, image_shape, max_steps = 2, 2, (16, 16, 3), 20

    def __init__(self):
        self.t = 0

    def reset(self, *, seed=None, options=None):
        self.t = 0
        return self._obs(), {"success": False}

    def step(self, action):
        assert np.asarray(action).shape == (2,)
        self.t += 1
        return self._obs(), 0.0, False, self.t >= self.max_steps, {"success": self.t >= 3}

    def _obs(self):
        return {"image": np.full((16, 16, 3), self.t, np.uint8), "proprio": np.array([self.t, 0.5], np.float32),
                "instruction": INSTR}

    def close(self):
        pass


@pytest.fixture(scope="module", autouse=True)
def tokens(tmp_path_factory):
    global TOKEN
    made = RobotTokens(tmp_path_factory.mktemp("robot-tokens"))
    TOKEN = made.fleet_token
    return made


@pytest.fixture
def hub(tokens):
    h = RemoteHub(tokens.access, max_message_bytes=64 * 1024)
    srv = WebsocketServer({"/robot": h.handler}, port=0, max_message_bytes=64 * 1024)
    h.attach(srv)
    srv.start()
    yield h
    srv.stop()


def _serve(hub, name, env=None, **kw):
    client = RemoteRobotClient(hub.server.url("/robot"), TOKEN, name, env or FakeEnv(), **kw)
    client.connect()
    stop = threading.Event()
    th = threading.Thread(target=client.serve, args=(stop,), daemon=True)
    th.start()
    return client, stop, th


def test_remote_robots_form_a_fleet_and_a_disconnect_fails_only_that_robot(hub):
    a, stop_a, _ = _serve(hub, "arm-a")
    b, stop_b, tb = _serve(hub, "arm-b", encoding="raw")
    fleet = RemoteFleet(hub, 2, action_dim=2, image_size=(8, 8), wait_s=5)
    assert sorted(fleet.slots) == ["arm-a", "arm-b"] and fleet.max_steps == 20
    ia, ib = fleet.slots.index("arm-a"), fleet.slots.index("arm-b")
    obs, info = fleet.reset(ia, 3)
    assert obs["image"].shape == (8, 8, 3) and obs["instruction"] == INSTR and info["success"] is False
    assert not isinstance(fleet.reset(ib, 3), RobotFailure)
    for t in range(1, 4):
        res = fleet.step({ia: np.array([0.5, 2.0]), ib: np.array([0.0, 0.0])})
        for i in (ia, ib):
            o, _r, term, trunc, inf = res[i]
            assert o["proprio"][0] == t and inf["success"] == (t >= 3) and not term
    assert fleet.knows_success
    # b drops its connection mid-episode: its step fails, a's goes on
    stop_b.set()
    tb.join(5)
    b.close()
    time.sleep(0.2)
    res = fleet.step({ia: np.zeros(2), ib: np.zeros(2)})
    assert isinstance(res[ib], RobotFailure) and "arm-b" in res[ib].message
    assert res[ia][0]["proprio"][0] == 4
    assert not fleet.available(ib)
    # it comes back under the same name and gets its slot back
    b2, stop_b2, _ = _serve(hub, "arm-b")
    assert fleet.available(ib) and fleet.slots[ib] == "arm-b"
    assert not isinstance(fleet.reset(ib, 4), RobotFailure)
    stop_a.set()
    stop_b2.set()


def _register(ws, name="raw-1", **over):
    msg = {"type": "register", "token": TOKEN, "protocol": 1, "name": name, "camera": {"height": 16, "width": 16},
           "action": {"dim": 2, "low": -1, "high": 1}, "proprio_dim": 2, "max_steps": 20, "tasks": []}
    msg.update(over)
    ws.send(json.dumps(msg))
    return json.loads(ws.recv(5))


def _obs_msg(rid, image=None, **over):
    img = np.zeros((16, 16, 3), np.uint8) if image is None else image
    m = {"type": "observation", "request_id": rid, "image": encode_image(img, "png"), "proprio": [0.0, 0.0],
         "instruction": INSTR, "success": None}
    m.update(over)
    return json.dumps(m)


def test_bad_messages_get_an_error_for_that_robot_only(hub):
    url = hub.server.url("/robot")
    good, stop_good, _ = _serve(hub, "good")
    with connect(url) as ws:  # wrong token: error, then closed with 4401
        assert _register(ws, "x", token="nope")["code"] == "unauthorized"
        with pytest.raises(ConnectionClosed) as e:
            ws.recv(5)
        assert e.value.rcvd.code == 4401
    with connect(url) as ws:  # duplicate name: 4409
        assert _register(ws, "good")["code"] == "duplicate_name"
    ws = connect(url, legacy=True)
    assert _register(ws, action={"dim": 0})["code"] == "bad_register"  # may try again
    assert _register(ws)["type"] == "registered"
    fleet = RemoteFleet(hub, 2, action_dim=2, wait_s=5)
    i_raw, i_good = fleet.slots.index("raw-1"), fleet.slots.index("good")
    res: dict = {}
    th = threading.Thread(target=lambda: res.update(r=fleet.reset(i_raw, 1)))
    th.start()
    req = json.loads(ws.recv(5))
    assert req["type"] == "reset" and req["seed"] == 1
    rid = req["request_id"]
    ws.send("{not json")
    assert json.loads(ws.recv(5))["code"] == "malformed"
    ws.send(_obs_msg(rid, image=np.zeros((12, 16, 3), np.uint8)))
    err = json.loads(ws.recv(5))
    assert err["code"] == "bad_shape" and err["request_id"] == rid and "16x16" in err["message"]
    ws.send(_obs_msg(rid, proprio=[1.0, 2.0, 3.0]))
    assert json.loads(ws.recv(5))["code"] == "bad_shape"
    ws.send(json.dumps({"type": "observation", "request_id": rid, "image": {"encoding": "png",
                                                                           "data": "x" * 100_000}}))
    assert json.loads(ws.recv(5))["code"] == "oversized"
    ws.send(json.dumps({"type": "dance"}))
    assert json.loads(ws.recv(5))["code"] == "unknown_type"
    # meanwhile the other robot is unaffected
    assert not isinstance(fleet.reset(i_good, 2), RobotFailure)
    assert not isinstance(fleet.step({i_good: np.zeros(2)})[i_good], RobotFailure)
    # the open request is still served by a correct observation
    ws.send(_obs_msg(rid))
    th.join(5)
    assert not isinstance(res["r"], RobotFailure) and res["r"][0]["image"].shape == (16, 16, 3)
    assert hub.get("raw-1") is not None and hub.get("raw-1").errors == 5
    ws.close()
    stop_good.set()


def test_practice_job_over_remote_tabletop_robots(tmp_path, stage1, tokens):
    """Two reference clients wrap tabletop simulators; the worker practises on them through
    /robot, one of them drops its connection mid-episode and comes back."""
    from sqlalchemy import select

    from core.worker.runner import Worker
    from sim_backends.registry import make_env
    from storage import init_db, repo
    from storage.models import Episode, Robot
    from tests.core.worker.conftest import TINY_ENV, practice_params

    db = init_db(tmp_path / "dojo.sqlite")
    tele, hub_ = TelemetryHub(viewer_access()), RemoteHub(tokens.access)
    srv = WebsocketServer({"/telemetry": tele.handler, "/robot": hub_.handler}, port=0)
    tele.attach(srv)
    hub_.attach(srv)
    srv.start()
    stop = threading.Event()
    dropped = threading.Event()

    def robot(name, drop_after=None):
        env = make_env("tabletop", TINY_ENV)
        c = RemoteRobotClient(srv.url("/robot"), TOKEN, name, env)
        while not stop.is_set():
            c.connect()
            if drop_after is not None and not dropped.is_set():
                while c.steps < drop_after and not stop.is_set():
                    c.serve(stop, max_seconds=0.05)
                dropped.set()
                c.close()  # gone mid-episode
                time.sleep(0.3)
                continue
            c.serve(stop)
        env.close()

    threads = [threading.Thread(target=robot, args=("remote-a",), daemon=True),
               threading.Thread(target=robot, args=("remote-b", 45), daemon=True)]
    for t in threads:
        t.start()
    frames: list[dict] = []

    def viewer():
        with connect(srv.url("/telemetry") + "?ticket=" + viewer_ticket()) as ws:
            while not stop.is_set():
                try:
                    frames.append(json.loads(ws.recv(0.2)))
                except TimeoutError:
                    continue
                except ConnectionClosed:
                    return

    tv = threading.Thread(target=viewer, daemon=True)
    tv.start()
    with db.write() as s:
        job_id = repo.enqueue_job(s, "practice", practice_params(
            stage1, fleet={"kind": "remote", "size": 2, "wait_s": 30}, max_episodes=6, eval_every=3)).id
    try:
        w = Worker(db, name="wr", data_dir=tmp_path, server=srv, telemetry=tele, hub=hub_, poll_s=0.1)
        assert w.run(exit_when_idle=True) == 1
    finally:
        stop.set()
        for t in threads + [tv]:
            t.join(10)
        srv.stop()
    with db.read() as s:
        job = repo.get_job(s, job_id)
        eps = s.scalars(select(Episode).where(Episode.job_id == job_id)).all()
        robots = {r.id: r for r in s.scalars(select(Robot)).all()}
    assert job.status == "done", job.error
    assert dropped.is_set()
    aborted = [e for e in eps if e.status == "aborted"]
    finished = [e for e in eps if e.status == "finished"]
    lost = [e for e in aborted if "disconnected" in e.abort_reason or "robot failed" in e.abort_reason]
    assert lost  # the robot that went away mid-episode; the rest were under way when a buffer filled
    assert all(e in lost or e.abort_reason == "discarded: the iteration's buffer was full" for e in aborted)
    assert len(eps) >= 6 and len(finished) >= 3  # the budget counts the dropped episodes too
    assert {robots[e.robot_id].name for e in finished} == {"remote-a", "remote-b"}
    assert all(robots[e.robot_id].kind == "remote" for e in finished)
    assert all(e.gt_success is not None for e in finished)  # the simulator behind the client reports it
    got = {m["robot"] for m in frames if m.get("type") == "frame" and m.get("jpeg")}
    assert got == {"remote-a", "remote-b"}
    assert base64.b64decode(next(m for m in frames if m.get("jpeg"))["jpeg"])[:2] == b"\xff\xd8"


def test_a_remote_robot_task_takes_only_robots_whose_spec_matches(hub):
    """A task made with `core.cli tasks add --backend remote`: its fleet binds the robots whose
    registered camera, action and proprio spec match it, and no other."""
    a, stop_a, _ = _serve(hub, "arm-16")
    spec = {"camera": {"height": 16, "width": 16}, "action": {"dim": 2, "low": -1.0, "high": 1.0}, "proprio_dim": 2}
    fleet = RemoteFleet(hub, 1, task="arm task", task_spec=spec, wait_s=5)
    assert fleet.slots == ["arm-16"]
    with pytest.raises(RuntimeError, match="waited 1 s for 1 remote robot"):
        RemoteFleet(hub, 1, task="arm task", task_spec={**spec, "camera": {"height": 32, "width": 32}}, wait_s=1)
    stop_a.set()
