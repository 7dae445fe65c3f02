"""A hostile robot on ``/robot`` (security issue, items 4, 5 and the name rule of item 1):
"one bad field drops a whole robot" (a non-numeric reward killed the handler, disconnecting
the robot and aborting its episode) and "anyone can fill the worker's log" (tracebacks for
deep JSON). Replayed over real websockets against a real RemoteHub + WebsocketServer: each
hostile message gets an error naming the field, the connection and the open request stay,
and a corrected observation then completes the step; nothing is logged for client input.
"""
from __future__ import annotations

import json
import logging
import threading

import numpy as np
import pytest
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import connect

from core.learning.fleets import RobotFailure
from core.worker import message_guard
from core.worker.message_guard import MAX_CONSECUTIVE_ERRORS, MAX_JSON_DEPTH
from core.worker.remote import RemoteFleet, RemoteHub
from core.worker.telemetry import WebsocketServer
from sim_backends.remote.client import encode_image
from tests.endpoint import RobotTokens

TOKEN = ""  # a real robot token, made by the module's ``tokens`` fixture
INSTR = "push the red moon to the blue cube"
MAX_BYTES = 64 * 1024


@pytest.fixture(scope="module", autouse=True)
def tokens(tmp_path_factory):
    global TOKEN
    made = RobotTokens(tmp_path_factory.mktemp("robot-tokens"))
    TOKEN = made.fleet_token
    return made


@pytest.fixture
def hub(tokens):
    message_guard.FAILURE_LOG.reset()
    h = RemoteHub(tokens.access, max_message_bytes=MAX_BYTES)
    srv = WebsocketServer({"/robot": h.handler}, port=0, max_message_bytes=MAX_BYTES)
    h.attach(srv)
    srv.start()
    yield h
    srv.stop()


def register_msg(name="arm-1", **over) -> str:
    msg = {"type": "register", "token": TOKEN, "protocol": 1, "name": name, "camera": {"height": 16, "width": 16},
           "action": {"dim": 2, "low": -1, "high": 1}, "proprio_dim": 2, "max_steps": 20, "tasks": []}
    msg.update(over)
    return json.dumps(msg)


def obs_msg(rid, **over) -> dict:
    img = np.full((16, 16, 3), 7, np.uint8)
    m = {"type": "observation", "request_id": rid, "image": encode_image(img, "png"), "proprio": [0.25, 0.5],
         "instruction": INSTR, "success": None, "terminated": False, "truncated": False, "reward": 0.0, "info": {}}
    m.update(over)
    return m


def recv(ws) -> dict:
    return json.loads(ws.recv(5))


def registered_robot(hub, name="arm-1"):
    ws = connect(hub.server.url("/robot"), max_size=None, legacy=True)
    ws.send(register_msg(name))
    assert recv(ws)["type"] == "registered"
    return ws


def start_step(hub):
    """A fleet step in a thread (as the practice loop does); the robot's socket gets the action."""
    fleet = RemoteFleet(hub, 1, action_dim=2, wait_s=5, step_timeout_s=20)
    out: dict = {}
    th = threading.Thread(target=lambda: out.update(r=fleet.step({0: np.array([0.5, -0.5])})[0]), daemon=True)
    th.start()
    return th, out


def assert_still_open(ws):
    ws.send(json.dumps({"type": "ping"}))
    assert recv(ws)["type"] == "pong"


def deep(n: int) -> str:
    return "[" * n + "]" * n


# (label, message given the open request's id, code, text the reply must contain, the reply's request_id)
E, N = (lambda r: r), (lambda r: None)  # echoes the open request's id / null
HOSTILE = [
    ("reward str", lambda r: obs_msg(r, reward="abc"), "bad_observation", "observation.reward must be a number", E),
    ("reward obj", lambda r: obs_msg(r, reward={"x": 1}), "bad_observation", "observation.reward", E),
    ("reward huge", lambda r: json.dumps(obs_msg(r)).replace('"reward": 0.0', '"reward": 1e999'),
     "bad_observation", "observation.reward must be a finite number", E),
    ("reward NaN", lambda r: json.dumps(obs_msg(r)).replace('"reward": 0.0', '"reward": NaN'),
     "bad_number", "reward", N),
    ("proprio -Infinity", lambda r: json.dumps(obs_msg(r)).replace("[0.25, 0.5]", "[0.25, -Infinity]"),
     "bad_number", "proprio", N),
    ("terminated 'false'", lambda r: obs_msg(r, terminated="false"), "bad_observation", "observation.terminated", E),
    ("truncated 0", lambda r: obs_msg(r, truncated=0), "bad_observation", "observation.truncated", E),
    ("success 'true'", lambda r: obs_msg(r, success="true"), "bad_observation", "observation.success", E),
    ("info flag 'yes'", lambda r: obs_msg(r, info={"off_table": "yes"}), "bad_observation",
     "observation.info.off_table", E),
    ("info nested", lambda r: obs_msg(r, info={"x": {"y": [1]}}), "bad_observation", "observation.info.x", E),
    ("info not object", lambda r: obs_msg(r, info=[1, 2]), "bad_observation", "observation.info", E),
    ("proprio nested", lambda r: obs_msg(r, proprio=[[0.25], [0.5]]), "bad_observation", "observation.proprio[0]",
     E),
    ("proprio dict", lambda r: obs_msg(r, proprio={"a": 1}), "bad_observation", "observation.proprio", E),
    ("proprio 1e39 (float32)", lambda r: obs_msg(r, proprio=[1e39, 0.0]), "bad_observation", "observation.proprio",
     E),
    ("instruction too long", lambda r: obs_msg(r, instruction="x" * 5000), "bad_observation",
     "observation.instruction", E),
    ("instruction number", lambda r: obs_msg(r, instruction=5), "bad_observation", "observation.instruction", E),
    ("instruction lone surrogate", lambda r: obs_msg(r, instruction="push \ud800"), "bad_observation",
     "observation.instruction", E),
    ("image.encoding number", lambda r: obs_msg(r, image={"encoding": 5, "data": ""}), "bad_observation",
     "observation.image.encoding", E),
    ("image.encoding gif", lambda r: obs_msg(r, image={"encoding": "gif", "data": ""}), "bad_observation",
     "observation.image.encoding", E),
    ("image.data list", lambda r: obs_msg(r, image={"encoding": "png", "data": [1]}), "bad_observation",
     "observation.image.data", E),
    ("image not png", lambda r: obs_msg(r, image={"encoding": "png", "data": "aGVsbG8="}), "bad_observation",
     "observation.image", E),
    ("request_id str", lambda r: obs_msg(str(r)), "bad_request_id", "request_id", N),
    ("request_id true", lambda r: obs_msg(True), "bad_request_id", "request_id", N),
    ("request_id list", lambda r: obs_msg([r]), "bad_request_id", "request_id", N),
    ("request_id 10**30", lambda r: obs_msg(10**30), "bad_request_id", "request_id", N),
    ("request_id missing", lambda r: {k: v for k, v in obs_msg(r).items() if k != "request_id"}, "unexpected",
     "observation.request_id", N),
    ("request_id not open", lambda r: obs_msg(r + 1000), "unexpected", "observation.request_id",
     lambda r: r + 1000),
    ("2,000-deep JSON", lambda r: '{"type": "observation", "request_id": %d, "info": %s}' % (r, deep(2000)),
     "too_deep", f"deeper than {MAX_JSON_DEPTH}", N),
    ("65-deep JSON", lambda r: '{"type": "log", "x": %s}' % deep(MAX_JSON_DEPTH), "too_deep", "deeper", N),
    ("binary frame", lambda r: b"\x00\x01binary", "binary_unsupported", "JSON text", N),
    ("oversized", lambda r: json.dumps({"type": "log", "x": "y" * (MAX_BYTES + 1)}), "oversized", "exceeds", N),
    ("not JSON", lambda r: "{not json", "malformed", "not valid JSON", N),
    ("JSON array", lambda r: "[1, 2]", "malformed", "JSON object", N),
    ("unknown type", lambda r: {"type": "dance", "request_id": r}, "unknown_type", "type must be", E),
    ("type object", lambda r: {"type": {"a": 1}, "request_id": r}, "unknown_type", "type must be", E),
]


@pytest.mark.parametrize("label, make, code, text, echo", HOSTILE, ids=[h[0] for h in HOSTILE])
def test_a_hostile_observation_gets_an_error_and_the_step_still_completes(hub, caplog, label, make, code, text,
                                                                          echo):
    caplog.set_level(logging.INFO)
    ws = registered_robot(hub)
    th, out = start_step(hub)
    req = recv(ws)
    assert req["type"] == "action"
    rid = req["request_id"]
    bad = make(rid)
    ws.send(bad if isinstance(bad, (str, bytes)) else json.dumps(bad))
    err = recv(ws)
    assert err["type"] == "error" and err["code"] == code, err
    assert text in err["message"], err
    assert set(err) == {"type", "code", "message", "request_id"}
    assert err["request_id"] == echo(rid)
    assert_still_open(ws)
    assert th.is_alive()  # the request is still open
    ws.send(json.dumps(obs_msg(rid, proprio=[3.0, 4.0], reward=1.5, terminated=True, info={"off_table": False})))
    th.join(10)
    assert not isinstance(out["r"], RobotFailure), out["r"]
    obs, reward, term, trunc, info = out["r"]
    assert obs["proprio"].tolist() == [3.0, 4.0] and obs["image"][0, 0, 0] == 7 and obs["instruction"] == INSTR
    assert (reward, term, trunc, info) == (1.5, True, False, {"off_table": False})
    assert_still_open(ws)
    robot = hub.get("arm-1")
    assert robot is not None and robot.errors == 1 and robot.consecutive_errors == 0
    ws.close()
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING], caplog.text


BAD_NAMES = ["<img src=x onerror=alert(1)>", "__CFG__", "", "a" * 65, "ロボット", "arm 1", "arm\n", " arm",
             ".hidden", "-x", "a/b", "../../etc", "arm\u200b", 42, None, ["arm"]]


def test_bad_robot_names_are_refused_with_the_rule_and_the_robot_may_retry(hub):
    ws = connect(hub.server.url("/robot"), legacy=True)
    for name in BAD_NAMES:
        ws.send(register_msg(name))
        err = recv(ws)
        assert err["type"] == "error" and err["code"] == "bad_register", (name, err)
        assert "register.name must be 1 to 64 characters" in err["message"], err
        assert "starting with a letter or digit" in err["message"]
    ws.send(register_msg("a" * 64))  # the longest name allowed
    assert recv(ws)["type"] == "registered"
    assert hub.get("a" * 64) is not None and not any(hub.get(n) for n in BAD_NAMES if isinstance(n, str) and n)
    ws.close()
    ws = registered_robot(hub, "Arm_2.left:cam-0")  # every allowed character
    assert_still_open(ws)
    ws.close()


@pytest.mark.parametrize("over, text", [
    ({"camera": {"height": "16", "width": 16}}, "register.camera.height"),
    ({"camera": [16, 16]}, "register.camera must be an object"),
    ({"action": {"dim": True}}, "register.action.dim"),
    ({"action": {"dim": 2, "low": "a"}}, "register.action.low"),
    ({"action": {"dim": 2, "low": [0, 1, 2]}}, "register.action.low"),
    ({"action": {"dim": 2, "high": [[1], [1]]}}, "register.action.high[0]"),
    ({"proprio_dim": 2.5}, "register.proprio_dim"),
    ({"max_steps": "80"}, "register.max_steps"),
    ({"tasks": "tabletop"}, "register.tasks"),
    ({"tasks": [5]}, "register.tasks[0]"),
    ({"protocol": True}, "register.protocol"),
])
def test_a_bad_register_field_is_named_and_the_robot_may_retry(hub, over, text):
    ws = connect(hub.server.url("/robot"), legacy=True)
    ws.send(register_msg("arm-9", **over))
    err = recv(ws)
    assert err["code"] == "bad_register" and text in err["message"], err
    ws.send(deep(3000))  # before registering too: an error, not a dead handler
    assert recv(ws)["code"] == "too_deep"
    ws.send(register_msg("arm-9"))
    assert recv(ws)["type"] == "registered"
    ws.close()


def test_a_robot_sending_only_garbage_is_closed_after_the_documented_bound(hub):
    ws = registered_robot(hub)
    th, out = start_step(hub)
    rid = recv(ws)["request_id"]
    for i in range(MAX_CONSECUTIVE_ERRORS - 1):
        ws.send(json.dumps(obs_msg(rid, reward="abc")))
        assert recv(ws)["code"] == "bad_observation"
    ws.send(json.dumps({"type": "ping"}))  # a good message resets the count
    assert recv(ws)["type"] == "pong"
    for i in range(MAX_CONSECUTIVE_ERRORS):
        ws.send("{not json")
        assert recv(ws)["code"] == "malformed"
    with pytest.raises(ConnectionClosed) as e:
        recv(ws)
    assert e.value.rcvd.code == 1008 and str(MAX_CONSECUTIVE_ERRORS) in e.value.rcvd.reason
    th.join(10)
    assert isinstance(out["r"], RobotFailure) and "disconnected" in out["r"].message


def test_a_flood_of_1000_hostile_messages_leaves_the_log_almost_empty(hub, caplog):
    """Client input errors log nothing; unexpected failures log one rate-limited line each."""
    caplog.set_level(logging.INFO)
    url = hub.server.url("/robot")
    for _ in range(5):  # before any token: deep JSON and junk
        with connect(url) as ws:
            for raw in (deep(2000), b"\x00", "{not json", '{"type": "subscribe", "robots": 5}'):
                ws.send(raw)  # the last one is no register message: "not_registered"
                assert recv(ws)["type"] == "error"
    ws = registered_robot(hub)
    th, out = start_step(hub)
    rid = recv(ws)["request_id"]
    hostile = [make(rid) for _label, make, *_ in HOSTILE]
    for i in range(1000):
        bad = hostile[i % len(hostile)]
        ws.send(bad if isinstance(bad, (str, bytes)) else json.dumps(bad))
        assert recv(ws)["type"] == "error"
        if i % 50 == 49:
            assert_still_open(ws)  # a good message now and then: under the consecutive-error bound
    assert_still_open(ws)
    ws.send(json.dumps(obs_msg(rid)))
    th.join(10)
    assert not isinstance(out["r"], RobotFailure)
    assert hub.get("arm-1").errors == 1000
    lines = [r for r in caplog.records if r.levelno >= logging.INFO]  # any logger: the library's too
    assert lines == [], caplog.text
    ws.close()


def test_unexpected_failures_become_internal_errors_and_rate_limited_single_lines(hub, caplog, monkeypatch):
    """A bug in a handler (simulated: parse_observation raising) costs that message only: the
    robot gets an "internal" error, keeps its connection, and the log gets at most
    LOG_LINES_PER_MINUTE one-line records, no traceback, whatever the flood."""
    import core.worker.remote as remote

    caplog.set_level(logging.INFO)

    def broken(msg, spec):
        raise RuntimeError("boom\nTraceback (most recent call last):\n  forged line " + "x" * 1000)

    ws = registered_robot(hub)
    th, out = start_step(hub)
    rid = recv(ws)["request_id"]
    monkeypatch.setattr(remote, "parse_observation", broken)
    for i in range(1000):
        ws.send(json.dumps(obs_msg(rid)))
        err = recv(ws)
        assert err["code"] == "internal" and "RuntimeError" in err["message"] and err["request_id"] == rid
        if i % 50 == 49:
            assert_still_open(ws)
    monkeypatch.undo()
    ws.send(json.dumps(obs_msg(rid)))
    th.join(10)
    assert not isinstance(out["r"], RobotFailure)
    recs = [r for r in caplog.records if r.name.startswith("dojo")]
    assert 1 <= len(recs) <= message_guard.LOG_LINES_PER_MINUTE, caplog.text
    for r in recs:
        line = r.getMessage()
        assert r.exc_info is None and "\n" not in line and len(line) < 300, line
        assert "/robot" in line and "127.0.0.1:" in line and "RuntimeError: boom" in line
    assert message_guard.FAILURE_LOG.total_suppressed >= 1000 - message_guard.LOG_LINES_PER_MINUTE
    ws.close()


def test_dispatch_logs_one_short_line_per_failed_connection_and_summarises_the_rest(caplog):
    """A route handler that fails outside the per-message guards: _dispatch logs one line
    (path, client, exception) per connection, at most LOG_LINES_PER_MINUTE a minute."""
    caplog.set_level(logging.INFO)
    message_guard.FAILURE_LOG.reset()

    async def failing(connection, authed):
        await connection.recv()
        raise KeyError("multi\nline " + "k" * 500)

    srv = WebsocketServer({"/boom": failing}, port=0).start()
    try:
        for _ in range(25):
            with connect(srv.url("/boom")) as ws:
                ws.send("x")
                with pytest.raises(ConnectionClosed):
                    ws.recv(5)
    finally:
        srv.stop()
    recs = [r for r in caplog.records if r.name.startswith("dojo")]
    assert len(recs) == message_guard.LOG_LINES_PER_MINUTE, caplog.text
    assert all(r.exc_info is None and "\n" not in r.getMessage() and len(r.getMessage()) < 300 for r in recs)
    assert "websocket /boom from 127.0.0.1:" in recs[0].getMessage() and "KeyError" in recs[0].getMessage()
    assert message_guard.FAILURE_LOG.suppressed == 25 - message_guard.LOG_LINES_PER_MINUTE


def test_the_rate_limited_log_summarises_suppressed_lines_in_the_next_minute():
    records: list[str] = []

    class Sink(logging.Handler):
        def emit(self, record):
            records.append(record.getMessage())

    logger = logging.getLogger("dojo.test-rate-limit")
    logger.addHandler(Sink())
    logger.propagate = False  # (its own logger: the records stay out of other tests' caplog)
    now = [0.0]
    lim = message_guard.RateLimitedLog(logger, per_minute=3, clock=lambda: now[0])
    assert [lim.error(f"line {i}") for i in range(10)] == [True] * 3 + [False] * 7
    now[0] = 61.0
    assert lim.error("next minute")
    assert records == ["line 0", "line 1", "line 2",
                       "7 more websocket failure line(s) were not logged in the last minute", "next minute"]
