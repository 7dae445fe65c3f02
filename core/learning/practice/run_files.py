"""A practice run's directory: ``run.json`` (the settings it started with), ``state.json``
(the last completed iteration, counters, the best evaluation), ``metrics.jsonl`` (one row per
iteration; row 0 the starting checkpoint's evaluation), ``iter_XXXX.pt`` (each iteration's
policy and optimizer), ``best.pt``, ``detector_check.json``, ``reward_refined.pt``,
``refine.json`` / ``refine_log.jsonl``. Only practice reads and writes these files; the
worker learns of them through events."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from core.files import atomic_write_bytes
from core.learning.checkpoint import check_run_settings, read_checkpoint

FRESH_STATE = {"iteration": 0, "episodes": 0, "best_success": -1.0, "best_iteration": None,
               "evals_since_best": 0, "seconds": 0.0, "done": False}


class RunFiles:
    def __init__(self, out: str | Path):
        self.out = Path(out)
        self.state_path = self.out / "state.json"
        self.metrics_path = self.out / "metrics.jsonl"
        self.check_path = self.out / "detector_check.json"
        self.refined_path = self.out / "reward_refined.pt"
        self.best_path = self.out / "best.pt"

    def iteration(self, it: int) -> Path:
        return self.out / f"iter_{it:04d}.pt"

    def start(self, settings: dict[str, Any], may_change: frozenset[str]) -> None:
        """Create the directory and record the settings; a resume under other settings is refused."""
        self.out.mkdir(parents=True, exist_ok=True)
        check_run_settings(self.out / "run.json", "practice", settings, may_change,
                           "Resume with the settings it started with, or give another run directory (--out) to "
                           "start a new run.")
        atomic_write_bytes(self.out / "run.json", json.dumps({"practice": settings}, indent=2, default=str).encode())

    def load_state(self) -> dict[str, Any]:
        return json.loads(self.state_path.read_text()) if self.state_path.exists() else dict(FRESH_STATE)

    def save_state(self, state: dict[str, Any]) -> None:
        atomic_write_bytes(self.state_path, json.dumps(state, indent=2).encode())

    def append_metrics(self, row: dict[str, Any]) -> None:
        append_jsonl(self.metrics_path, row)

    def metrics_rows(self) -> list[dict[str, Any]]:
        rows = []
        if self.metrics_path.exists():
            for line in self.metrics_path.read_text().splitlines():
                try:
                    rows.append(json.loads(line))
                except ValueError:
                    continue  # a line cut short by a crash
        return rows

    def completed_rows(self, done: int) -> dict[int, dict[str, Any]]:
        """Iterations 0..done that completed, with their metrics row: from metrics.jsonl, or
        from the iteration's checkpoint where a crash cut the append short."""
        rows: dict[int, dict[str, Any]] = {}
        for r in self.metrics_rows():
            try:
                rows[int(r["iteration"])] = r
            except (KeyError, TypeError, ValueError):
                continue
        out = {0: rows[0]} if 0 in rows else {}
        for it in range(1, done + 1):
            if self.iteration(it).exists():
                out[it] = rows.get(it) or self._stats_in_checkpoint(it) or {"iteration": it}
        return out

    def _stats_in_checkpoint(self, it: int) -> dict[str, Any] | None:
        try:
            return dict(read_checkpoint(self.iteration(it))["meta"].get("stats") or {}) or None
        except Exception:  # noqa: BLE001 - an unreadable checkpoint has no statistics to offer
            return None

    def read_check(self) -> dict[str, Any] | None:
        return json.loads(self.check_path.read_text()) if self.check_path.exists() else None

    def write_check(self, check: dict[str, Any]) -> None:
        atomic_write_bytes(self.check_path, json.dumps(check, indent=2).encode())


def append_jsonl(path: Path, row: dict[str, Any]) -> None:
    with open(path, "a") as f:
        f.write(json.dumps(row) + "\n")
