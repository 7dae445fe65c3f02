"""Where the UI finds things, from environment variables the launcher sets.

DOJO_DB / DATABASE_URL   the database (see storage.db.resolve_url)
DOJO_DATA                data folder (imports, exports), default ``data``
DOJO_TELEMETRY_PORT      the worker's websocket telemetry port (default 8765)
DOJO_TELEMETRY_PUBLIC_HOST  host the *browser* connects to; default: the host the page came from
DOJO_TELEMETRY_PUBLIC_PORT  port the *browser* connects to, when a TLS proxy sits in front of the
                         worker (docs/security.md); default: DOJO_TELEMETRY_PORT
DOJO_WORKER_SECRET       the secret viewer tickets are signed with, shared with the worker; default:
                         the file ``DOJO_WORKER_SECRET_FILE`` or ``<DOJO_DATA>/worker.secret``
                         (storage/credentials.py). It stays on the server: browsers get tickets.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from storage.credentials import load_worker_secret, mint_viewer_ticket

REPO_ROOT = Path(__file__).resolve().parents[1]


@dataclass(frozen=True)
class Telemetry:
    port: int
    """TCP port of the worker's websocket endpoint."""
    host: str
    """Host name the browser connects to; empty: the page's own host."""
    ticket: str
    """Read-only viewer ticket sent on connect (``?ticket=``): short-lived, never the worker secret."""


def data_dir() -> Path:
    d = Path(os.environ.get("DOJO_DATA", "data"))
    return d if d.is_absolute() else REPO_ROOT / d


def telemetry(user: str, session: str) -> Telemetry:
    """Where the browser of ``user`` (in browser session ``session``) reads live telemetry, with a
    fresh viewer ticket. Raises storage.credentials.CredentialError when no secret can be had."""
    name = "DOJO_TELEMETRY_PUBLIC_PORT" if os.environ.get("DOJO_TELEMETRY_PUBLIC_PORT") else "DOJO_TELEMETRY_PORT"
    raw = os.environ.get(name, "8765")
    try:
        port = int(raw)
    except ValueError:
        raise ValueError(f"{name} must be a port number, got {raw!r}") from None
    ticket = mint_viewer_ticket(load_worker_secret(data_dir()), user, session)
    return Telemetry(port=port, host=os.environ.get("DOJO_TELEMETRY_PUBLIC_HOST", ""), ticket=ticket)
