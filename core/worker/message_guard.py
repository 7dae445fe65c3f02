"""Hostile input on the worker's websocket routes (``/robot``, ``/telemetry``): parsing a
client message into a JSON object with bounded size and depth, error replies, and a
rate-limited log for unexpected failures.

Anyone who can reach the port can send anything, token or not. A malformed message is
answered with ``{"type": "error", "code", "message", "request_id"}`` on that connection,
which stays open (a robot's open request too); it is never logged, since a client could
fill the log with it. ``MAX_CONSECUTIVE_ERRORS`` in a row close the connection.
"""
from __future__ import annotations

import json
import logging
import re
import threading
import time
from dataclasses import dataclass
from typing import Any, Callable

import numpy as np

log = logging.getLogger("dojo.websocket")

# Limits (docs/remote_protocol.md, "Errors"):
MAX_JSON_DEPTH = 64  # deeper [ / { nesting is refused ("too_deep") before json.loads recurses
MAX_ERROR_CHARS = 500  # an error reply's message
MAX_CONSECUTIVE_ERRORS = 100  # malformed messages in a row before the connection is closed
CLOSE_TOO_MANY_ERRORS = 1008  # "policy violation", with a reason naming the bound
LOG_LINES_PER_MINUTE = 10  # unexpected-failure lines; the rest are counted and summarised
LOG_LINE_CHARS = 200  # an exception's text in such a line

# A JSON string, or an unterminated one running to the end: a match from every quote always
# succeeds, so the scan is linear even for hostile text such as '"\\"\\"\\"...' with no end.
_JSON_STRING = re.compile(r'"[^"\\]*(?:\\.[^"\\]*)*\\?(?:"|\Z)', re.DOTALL)
_NOT_BRACKET = re.compile(r"[^\[\]{}]+")


class ProtocolError(ValueError):
    """A client's message broke the protocol; the text (naming the field) goes back to it."""

    def __init__(self, code: str, message: str):
        super().__init__(message)
        self.code = code


def clip(text: Any, limit: int) -> str:
    """One printable line of at most ``limit`` characters: client text quoted in a reply or a
    log line must not forge extra lines or run on."""
    s = str(text)[: limit + 1]
    s = "".join(c if c.isprintable() else " " for c in s)
    return s if len(s) <= limit else s[: limit - 3] + "..."


def json_type(v: Any) -> str:
    """The JSON name of a parsed value's type, for error messages (clients are not all Python)."""
    if v is None:
        return "null"
    if isinstance(v, bool):
        return "boolean"
    if isinstance(v, (int, float)):
        return "number"
    return {str: "string", list: "array", dict: "object"}.get(type(v), type(v).__name__)


def json_depth(text: str) -> int:
    """Deepest nesting of [ and { outside strings. A cheap scan in C (two regexes and a cumsum),
    because json.loads recurses once per level and fails with RecursionError near 1,000."""
    brackets = _NOT_BRACKET.sub("", _JSON_STRING.sub("", text))
    if not brackets:
        return 0
    b = np.frombuffer(brackets.encode("ascii"), np.uint8)
    return int(np.cumsum(np.where((b == 91) | (b == 123), 1, -1), dtype=np.int64).max())


def _refuse_constant(name: str) -> Any:
    raise ProtocolError("bad_number", f"{name} is not a number this protocol accepts (finite JSON numbers only)")


def load_message(raw: Any, max_bytes: int) -> dict[str, Any]:
    """A websocket message -> a JSON object; ProtocolError (code and text for the reply) for
    anything else: binary, over ``max_bytes``, nested deeper than MAX_JSON_DEPTH, NaN or
    Infinity, not JSON, not an object."""
    if isinstance(raw, (bytes, bytearray, memoryview)):
        raise ProtocolError("binary_unsupported", "send JSON text messages (images as base64 inside)")
    if not isinstance(raw, str):
        raise ProtocolError("malformed", "send JSON text messages")
    if len(raw) > max_bytes:
        raise ProtocolError("oversized", f"message of {len(raw)} bytes exceeds the limit of {max_bytes} bytes; "
                            "send a smaller (compressed) frame")
    # (counting brackets first skips the scan for ordinary messages: base64 has none)
    if raw.count("[") + raw.count("{") > MAX_JSON_DEPTH and json_depth(raw) > MAX_JSON_DEPTH:
        raise ProtocolError("too_deep", f"message nests [ or {{ deeper than {MAX_JSON_DEPTH} levels")
    try:
        msg = json.loads(raw, parse_constant=_refuse_constant)
    except ProtocolError as e:  # NaN / Infinity: name the field it was given for
        m = re.search(r'"([^"\\]{1,64})"\s*:\s*(?:\[[^\[\]{}"]*?)?-?(?:NaN|Infinity)', raw)
        raise ProtocolError(e.code, f"{m.group(1)}: {e}" if m else str(e)) from None
    except RecursionError:  # the scan above should have caught it; never let it escape
        raise ProtocolError("too_deep", f"message nests deeper than {MAX_JSON_DEPTH} levels") from None
    except ValueError as e:
        raise ProtocolError("malformed", f"not valid JSON: {clip(e, 120)}") from None
    if not isinstance(msg, dict):
        raise ProtocolError("malformed", f"each message must be a JSON object, got {json_type(msg)}")
    return msg


class RateLimitedLog:
    """At most ``per_minute`` lines a minute; later ones are counted and summarised in one line
    when the next minute's first line is written. For failures a client may be able to
    trigger: one line each (no traceback), so a flood cannot fill the worker's log."""

    def __init__(self, logger: logging.Logger, per_minute: int = LOG_LINES_PER_MINUTE, window_s: float = 60.0,
                 clock: Callable[[], float] = time.monotonic):
        self.logger, self.per_minute, self.window_s, self.clock = logger, int(per_minute), float(window_s), clock
        self._lock = threading.Lock()
        self.reset()

    def reset(self) -> None:
        self._start, self._lines, self.suppressed, self.total_suppressed = self.clock(), 0, 0, 0

    def error(self, text: str) -> bool:
        now = self.clock()
        with self._lock:
            summary = 0
            if now - self._start >= self.window_s:
                summary, self.suppressed, self._start, self._lines = self.suppressed, 0, now, 0
            write = self._lines < self.per_minute
            if write:
                self._lines += 1
            else:
                self.suppressed += 1
                self.total_suppressed += 1
        if summary:
            self.logger.error("%d more websocket failure line(s) were not logged in the last minute", summary)
        if write:
            self.logger.error("%s", text)
        return write


FAILURE_LOG = RateLimitedLog(log)


def peer(connection) -> str:
    try:
        host, port = connection.remote_address[:2]
        return f"{host}:{port}"
    except Exception:  # noqa: BLE001 - a closed or fake connection
        return "?"


def log_failure(path: str, connection, e: BaseException) -> None:
    """One rate-limited line for an unexpected failure while serving a connection."""
    FAILURE_LOG.error(f"websocket {path} from {peer(connection)}: {type(e).__name__}: {clip(e, LOG_LINE_CHARS)}")


def internal_error(path: str, connection, e: BaseException) -> tuple[str, str]:
    """Log an unexpected failure in a per-message handler; the (code, text) of the reply."""
    log_failure(path, connection, e)
    return "internal", f"the worker failed to handle this message ({type(e).__name__}); it was ignored"


@dataclass
class ErrorTally:
    """A connection's malformed messages: all of them, and the current run (reset by a good one)."""

    errors: int = 0
    consecutive_errors: int = 0


async def refuse(connection, tally: Any, code: str, message: str, request_id: Any = None) -> None:
    """Answer a bad message with an error and count it on ``tally`` (``errors``,
    ``consecutive_errors``); the connection stays open until MAX_CONSECUTIVE_ERRORS in a row."""
    tally.errors += 1
    tally.consecutive_errors += 1
    await send_error(connection, code, message, request_id=request_id)
    if tally.consecutive_errors >= MAX_CONSECUTIVE_ERRORS:
        try:
            await connection.close(CLOSE_TOO_MANY_ERRORS, f"{MAX_CONSECUTIVE_ERRORS} malformed messages in a row")
        except Exception:  # noqa: BLE001 - already gone
            pass


async def send_error(connection, code: str, message: str, request_id: Any = None, **extra: Any) -> None:
    # Every error reply has the same four keys on both routes; the text is clipped because it
    # may quote what the client sent.
    try:
        await connection.send(json.dumps({"type": "error", "code": code, "message": clip(message, MAX_ERROR_CHARS),
                                          "request_id": request_id, **extra}))
    except Exception:  # noqa: BLE001 - the client may be gone
        pass
