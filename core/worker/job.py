"""A claimed job as the worker's threads see it, and the signal that it must stop."""
from __future__ import annotations

import collections
import logging
import threading
import time
from dataclasses import dataclass, field
from typing import Any

LOG_TAIL_LINES = 40
"""Lines of a job's log kept for its page (jobs.log_tail): enough to see what led to its state."""
LOG_LINE_CHARS = 400
# Job-specific loggers; the websocket and telemetry loggers speak for every job and robot at once.
_NOT_THE_JOBS = ("dojo.websocket", "dojo.telemetry")


class JobStopped(Exception):
    """The job must stop now: cancelled, its session stopped, or the worker is shutting down."""

    def __init__(self, reason: str):
        super().__init__(reason)
        self.reason = reason


@dataclass
class JobContext:
    """Shared with the heartbeat thread, which writes ``progress``, ``message`` and ``state``
    to the job's row and sets ``cancelled`` when the row says so."""

    job_id: int
    kind: str
    params: dict[str, Any]
    session_id: int | None
    task_id: int | None
    attempts: int = 1
    progress: float = 0.0
    message: str = ""
    state: dict[str, Any] | None = None
    cancelled: threading.Event = field(default_factory=threading.Event)
    log: collections.deque = field(default_factory=lambda: collections.deque(maxlen=LOG_TAIL_LINES))

    def __setattr__(self, name: str, value: Any) -> None:
        # Every new progress message joins the log tail: the page shows the steps, not only the last.
        if name == "message" and value and value != getattr(self, "message", None) and hasattr(self, "log"):
            self.note(str(value))
        super().__setattr__(name, value)

    def note(self, line: str) -> None:
        """One line into the job's log tail, time-stamped (UTC) and cut to a readable length."""
        line = " ".join(str(line).split())
        if len(line) > LOG_LINE_CHARS:
            line = line[:LOG_LINE_CHARS - 1] + "…"
        self.log.append(f"{time.strftime('%H:%M:%S', time.gmtime())} {line}")

    def log_text(self) -> str:
        for _ in range(3):  # another thread may append while we copy
            try:
                return "\n".join(list(self.log))
            except RuntimeError:
                continue
        return ""


class JobLogHandler(logging.Handler):
    """Copies the log records of the running job's loggers (``dojo.*``) into its log tail."""

    def __init__(self, ctx: JobContext, level: int = logging.INFO):
        super().__init__(level)
        self.ctx = ctx

    def emit(self, record: logging.LogRecord) -> None:
        if not record.name.startswith("dojo.") or record.name.startswith(_NOT_THE_JOBS):
            return
        try:
            msg = record.getMessage()
        except Exception:  # noqa: BLE001 - a bad format string must not break the job
            msg = str(record.msg)
        self.ctx.note(f"{record.levelname.lower()}: {msg}" if record.levelno >= logging.WARNING else msg)
