"""Checkpoints: written atomically, loaded with errors that name the file and the fix.

Format (a ``torch.save`` dict, loadable with ``weights_only=True``):
  format: "dojo-checkpoint", version: 1,
  config: PolicyConfig as a dict, state_dict: model weights,
  meta: free-form JSON-able dict (stage, metrics, dataset, threshold_s, ...),
  optimizer (optional): optimizer state for resuming training.
"""
from __future__ import annotations

import dataclasses
import hashlib
import io
import json
from pathlib import Path
from typing import Any

import torch

from core.files import atomic_write_bytes
from core.learning.policy import DojoPolicy, PolicyConfig

FORMAT = "dojo-checkpoint"
VERSION = 1


class CheckpointError(RuntimeError):
    """A checkpoint file is missing, corrupt or incompatible with this version of Dojo."""


class ResumeConflict(CheckpointError):
    """A run directory holds a run trained with other settings than the ones now given:
    resuming would continue one run under another's settings, so it is refused."""


def file_sha256(path) -> str | None:
    """Content hash of a file (a checkpoint named by a run), None where it is gone."""
    h = hashlib.sha256()
    try:
        with open(path, "rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                h.update(block)
    except FileNotFoundError:
        return None
    return h.hexdigest()


def setting_changes(was: dict[str, Any], now: dict[str, Any], may_change: frozenset[str] | set[str]
                    ) -> list[str]:
    """The settings (``was`` -> ``now``, plain JSON values) that differ, one line each,
    other than those in ``may_change``. A key only one side has is not compared: a setting
    added to Dojo since the run started (or one since retired) cannot have been chosen.
    A nested object (the model's settings, an environment config) is compared key by key, a
    key there on one side only included: ``policy.d_model: 32 -> 64``.
    """
    return _changes(was, now, may_change, set(was) & set(now))


def _changes(was: dict[str, Any], now: dict[str, Any], may_change, keys) -> list[str]:
    show = lambda v: "(absent)" if v is _ABSENT else json.dumps(v, default=str)[:120]  # noqa: E731
    out = []
    for key in sorted(keys):
        if key in may_change:
            continue
        a, b = was.get(key, _ABSENT), now.get(key, _ABSENT)
        if isinstance(a, dict) and isinstance(b, dict):
            out += [f"{key}.{line}" for line in _changes(a, b, (), set(a) | set(b))]
        elif a is _ABSENT or b is _ABSENT or \
                json.dumps(a, sort_keys=True, default=str) != json.dumps(b, sort_keys=True, default=str):
            out.append(f"{key}: {show(a)} -> {show(b)}")
    return out


_ABSENT = object()


def check_run_settings(path: Path, section: str, now: dict[str, Any], may_change: frozenset[str] | set[str],
                       fix: str) -> None:
    """Compare ``now`` with the settings stored under ``section`` in ``path`` (a run's
    run.json) by an earlier start of the same run directory; raise ResumeConflict naming
    every changed setting and ``fix``. Nothing is written here."""
    path = Path(path)
    if not path.exists():
        return
    try:
        was = json.loads(path.read_text())[section]
        if not isinstance(was, dict):
            raise TypeError(f"{section!r} is not an object")
    except (ValueError, KeyError, TypeError) as e:
        raise ResumeConflict(f"{path}: cannot read the settings this run started with ({e}); {fix}") from e
    changed = setting_changes(was, now, may_change)
    if changed:
        raise ResumeConflict(f"{path.parent}: cannot resume, this run started with other settings (kept in "
                             f"{path.name}: " + "; ".join(changed) + f"). {fix}")


def save_checkpoint(path, model: DojoPolicy, meta: dict[str, Any] | None = None,
                    optimizer: torch.optim.Optimizer | None = None) -> Path:
    payload = {"format": FORMAT, "version": VERSION,
               "config": dataclasses.asdict(model.config),
               "state_dict": {k: v.detach().cpu() for k, v in model.state_dict().items()},
               "meta": meta or {}}
    if optimizer is not None:
        payload["optimizer"] = optimizer.state_dict()
    buf = io.BytesIO()
    torch.save(payload, buf)
    atomic_write_bytes(Path(path), buf.getvalue())
    return Path(path)


def read_checkpoint(path) -> dict[str, Any]:
    """The raw checkpoint dict, validated; raises CheckpointError naming the file and problem."""
    path = Path(path)
    if not path.exists():
        raise CheckpointError(f"checkpoint {path} does not exist; train one with "
                              "`python -m core.cli sft` or pass an existing file")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:
        raise CheckpointError(
            f"checkpoint {path} is corrupt or not a Dojo checkpoint ({type(e).__name__}: "
            f"{(str(e).splitlines() or ['empty or truncated file'])[0][:200]}); "
            "restore it from a copy or re-train it") from e
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise CheckpointError(f"checkpoint {path} is not a Dojo checkpoint (no '{FORMAT}' "
                              "format marker); pass a file written by Dojo's sft or practice")
    if payload.get("version") != VERSION:
        raise CheckpointError(f"checkpoint {path} has format version {payload.get('version')}, "
                              f"this Dojo reads version {VERSION}; re-train or upgrade Dojo")
    for key in ("config", "state_dict"):
        if key not in payload:
            raise CheckpointError(f"checkpoint {path} lacks '{key}'; it was cut short or hand-made: re-train it")
    return payload


def load_checkpoint(path, device: str | torch.device = "cpu") -> tuple[DojoPolicy, dict[str, Any]]:
    """Rebuild the policy stored in ``path``; returns (model in eval mode, meta)."""
    payload = read_checkpoint(path)
    try:
        config = PolicyConfig.from_dict(payload["config"])
    except (TypeError, ValueError) as e:
        raise CheckpointError(f"checkpoint {path} has an incompatible config: {e}; it was written "
                              "by a different Dojo version: re-train it with this one") from e
    model = DojoPolicy(config)
    missing, unexpected = model.load_state_dict(payload["state_dict"], strict=False)
    if missing or unexpected:
        raise CheckpointError(
            f"checkpoint {path} does not match its own config: missing weights {missing[:5]}, "
            f"unexpected weights {unexpected[:5]}; it was written by an incompatible Dojo version")
    model.to(device).eval()
    return model, dict(payload.get("meta", {}))
