"""A hostile browser on ``/telemetry`` (security issue, items 4 and 5): "subscribe robots:5"
and deeply nested JSON raised in the handler, dropping the viewer and logging a ~20-line
traceback each, no token needed for the deep JSON. Replayed over real websockets: each gets
an error reply naming the field, the connection stays, frames still arrive after, and the
log stays empty.
"""
from __future__ import annotations

import json
import logging
import time

import pytest
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import connect

from core.worker import message_guard
from core.worker.message_guard import MAX_CONSECUTIVE_ERRORS, MAX_JSON_DEPTH
from core.worker.telemetry import VIEWER_MAX_MESSAGE_BYTES, TelemetryHub, WebsocketServer

from tests.endpoint import viewer_access, viewer_ticket

TICKET = viewer_ticket()


def feed(srv) -> str:
    return srv.url("/telemetry") + "?ticket=" + TICKET


@pytest.fixture
def server():
    message_guard.FAILURE_LOG.reset()
    hub = TelemetryHub(viewer_access())
    srv = WebsocketServer({"/telemetry": hub.handler}, port=0)
    hub.attach(srv)
    srv.start()
    yield srv, hub
    srv.stop()


def recv(ws) -> dict:
    return json.loads(ws.recv(5))


def deep(n: int) -> str:
    return "[" * n + "]" * n


def wait_clients(hub, n):
    t0 = time.monotonic()
    while hub.n_clients < n:
        assert time.monotonic() - t0 < 5, "client not registered"
        time.sleep(0.01)


HOSTILE = [
    ("robots 5", json.dumps({"type": "subscribe", "robots": 5}), "bad_subscribe", "subscribe.robots"),
    ("robots str", json.dumps({"type": "subscribe", "robots": "a"}), "bad_subscribe", "subscribe.robots"),
    ("robots dict", json.dumps({"type": "subscribe", "robots": {"a": 1}}), "bad_subscribe", "subscribe.robots"),
    ("robots nested", json.dumps({"type": "subscribe", "robots": [["a"]]}), "bad_subscribe", "subscribe.robots[0]"),
    ("robots number item", json.dumps({"type": "subscribe", "robots": ["a", 7]}), "bad_subscribe",
     "subscribe.robots[1]"),
    ("robots too many", json.dumps({"type": "subscribe", "robots": ["r"] * 5000}), "bad_subscribe",
     "subscribe.robots"),
    ("2,000-deep JSON", deep(2000), "too_deep", f"deeper than {MAX_JSON_DEPTH}"),
    ("deep in subscribe", '{"type": "subscribe", "robots": %s}' % deep(100), "too_deep", "deeper"),
    ("NaN", '{"type": "subscribe", "robots": NaN}', "bad_number", "robots"),
    ("binary frame", b"\x00\xffbinary", "binary_unsupported", "JSON text"),
    ("not JSON", "{nope", "malformed", "not valid JSON"),
    ("JSON string", '"subscribe"', "malformed", "JSON object"),
    ("unknown type", json.dumps({"type": "dance"}), "unknown_type", "type must be"),
    ("type number", json.dumps({"type": 5}), "unknown_type", "type must be"),
    ("oversized", json.dumps({"type": "subscribe", "robots": ["x" * VIEWER_MAX_MESSAGE_BYTES]}), "oversized",
     "exceeds"),
]


def test_hostile_viewer_messages_get_errors_and_frames_still_arrive(server, caplog):
    caplog.set_level(logging.INFO)
    srv, hub = server
    with connect(feed(srv), max_size=None) as ws:
        assert recv(ws)["type"] == "hello"
        wait_clients(hub, 1)
        for label, raw, code, text in HOSTILE:
            ws.send(raw)
            err = recv(ws)
            assert err["type"] == "error" and err["code"] == code, (label, err)
            assert text in err["message"], (label, err)
            assert set(err) == {"type", "code", "message", "request_id"} and err["request_id"] is None
        client = hub._clients[0]
        assert client.errors == len(HOSTILE) and client.robots is None  # no bad subscribe took effect
        ws.send(json.dumps({"type": "subscribe", "robots": ["b"]}))
        ws.send(json.dumps({"ticket": TICKET}))  # a redundant ticket message: no reply
        time.sleep(0.1)
        for i in range(3):
            hub.publish("a", {"step": i})
            hub.publish("b", {"step": i})
            time.sleep(0.02)
        got = []
        try:
            while True:
                got.append(recv(ws))
        except TimeoutError:
            pass
    assert got and {m["type"] for m in got} == {"frame"} and {m["robot"] for m in got} == {"b"}
    assert client.consecutive_errors == 0
    assert not [r for r in caplog.records if r.levelno >= logging.INFO], caplog.text  # any logger


@pytest.mark.parametrize("first", [deep(2000), b"\x00", '{"type": "subscribe", "robots": 5}', "x" * 200_000])
def test_hostile_first_messages_without_a_ticket_are_refused_quietly(server, caplog, first):
    caplog.set_level(logging.INFO)
    srv, _hub = server
    with connect(srv.url("/telemetry"), max_size=None) as ws:
        ws.send(first)
        assert recv(ws)["code"] == "unauthorized"
        with pytest.raises(ConnectionClosed) as e:
            ws.recv(5)
        assert e.value.rcvd.code == 4401
    assert not [r for r in caplog.records if r.levelno >= logging.INFO], caplog.text  # any logger


def test_a_viewer_sending_only_garbage_is_closed_after_the_bound(server):
    srv, hub = server
    with connect(feed(srv)) as ws:
        assert recv(ws)["type"] == "hello"
        for _ in range(MAX_CONSECUTIVE_ERRORS):
            ws.send('{"type": "subscribe", "robots": 5}')
            assert recv(ws)["code"] == "bad_subscribe"
        with pytest.raises(ConnectionClosed) as e:
            recv(ws)
        assert e.value.rcvd.code == 1008 and str(MAX_CONSECUTIVE_ERRORS) in e.value.rcvd.reason


def test_a_viewer_flood_of_1000_hostile_messages_logs_nothing(server, caplog):
    caplog.set_level(logging.INFO)
    srv, hub = server
    with connect(feed(srv), max_size=None) as ws:
        assert recv(ws)["type"] == "hello"
        for i in range(1000):
            ws.send(HOSTILE[i % len(HOSTILE)][1])
            assert recv(ws)["type"] == "error"
            if i % 50 == 49:  # a good message now and then: under the consecutive-error bound
                ws.send(json.dumps({"type": "subscribe", "robots": None}))
        wait_clients(hub, 1)
        assert hub._clients[0].errors == 1000
    assert not [r for r in caplog.records if r.levelno >= logging.INFO], caplog.text  # any logger
