"""Checkpoints: written atomically, loaded with errors that name the file and the fix.

Format (a ``torch.save`` dict, loadable with ``weights_only=True``):
  format: "dojo-checkpoint", version: 1,
  config: PolicyConfig as a dict, state_dict: model weights,
  meta: free-form JSON-able dict (stage, metrics, dataset, threshold_s, ...),
  optimizer (optional): optimizer state for resuming training.
"""
from __future__ import annotations

import dataclasses
import io
import os
import tempfile
from pathlib import Path
from typing import Any

import torch

from core.policy import DojoPolicy, PolicyConfig

FORMAT = "dojo-checkpoint"
VERSION = 1


class CheckpointError(RuntimeError):
    """A checkpoint file is missing, corrupt or incompatible with this version of Dojo."""


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` so that readers see the old file or the new one, never half."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o644)  # mkstemp creates 0600; datasets and checkpoints are shared
        os.replace(tmp, path)
        dir_fd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


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
