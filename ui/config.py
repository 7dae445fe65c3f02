"""Where the UI finds things, from environment variables the launcher sets.

DOJO_DB / DATABASE_URL   the database (see storage.db.resolve_url)
DOJO_DATA                data folder (imports, exports), default ``data``
DOJO_TELEMETRY_PORT      the worker's websocket telemetry port (default 8765)
DOJO_TELEMETRY_PUBLIC_HOST  host the *browser* connects to; default: the host the page came from
DOJO_TELEMETRY_TOKEN     shared token the worker requires on its websocket; default: the
                         worker's ``<DOJO_DATA>/telemetry.token`` (core/worker/telemetry.py writes it)
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]


@dataclass(frozen=True)
class Telemetry:
    port: int
    """TCP port of the worker's websocket endpoint."""
    host: str
    """Host name the browser connects to; empty: the page's own host."""
    token: str
    """Token sent on connect (query string ``?token=``); empty when the worker needs none."""


def data_dir() -> Path:
    d = Path(os.environ.get("DOJO_DATA", "data"))
    return d if d.is_absolute() else REPO_ROOT / d


def telemetry() -> Telemetry:
    raw = os.environ.get("DOJO_TELEMETRY_PORT", "8765")
    try:
        port = int(raw)
    except ValueError:
        raise ValueError(f"DOJO_TELEMETRY_PORT must be a port number, got {raw!r}") from None
    token = os.environ.get("DOJO_TELEMETRY_TOKEN", "")
    if not token:
        path = data_dir() / "telemetry.token"
        try:
            token = path.read_text().strip()
        except OSError:
            token = ""
    return Telemetry(port=port, host=os.environ.get("DOJO_TELEMETRY_PUBLIC_HOST", ""), token=token)
