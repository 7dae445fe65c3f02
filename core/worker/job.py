"""A claimed job as the worker's threads see it, and the signal that it must stop."""
from __future__ import annotations

import threading
from dataclasses import dataclass, field
from typing import Any


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
