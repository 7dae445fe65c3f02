"""The on-disk demonstration dataset format, and loading it for training.

Layout of a dataset directory::

    dataset.json            {"format": "dojo-demos", "version": 1, "backend": "tabletop",
                             "env_config": {...}, "seed0": int, "created": iso-time}
    episodes/ep_<seed>.npz  one successful episode per file (numpy .npz, deflate-compressed):
        frames       uint8   [T+1, H, W, 3]  camera images o_0..o_T (o_T: goal reached)
        proprio      float32 [T+1, P]        proprioception at each frame
        actions      float32 [T, A]          continuous actions a_0..a_{T-1} in [-1, 1]
        instruction  str                      the language goal g
        seed         int64                    the environment seed (replays the episode)
        success      bool                     ground truth at the last frame
        keypoints    float32 [T+1, K, 2]      optional, simulation only: image position (u, v)
                                              in [-1, 1] of the pushed object and its target,
                                              an auxiliary label for the image encoder
        goal_step    int64                    optional: the frame where the goal is first
                                              reached when the demo went on holding it
                                              (default T); steps-to-go label max(0, goal_step - t)
    rejected.jsonl          seeds whose expert episode failed (skipped on resume)

Each episode file is written atomically, so an interrupted generation leaves only
whole episodes and is resumed by re-running the same command.
"""
from __future__ import annotations

import hashlib
import io
import json
import zipfile
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np

from core.files import atomic_write_bytes

FORMAT = "dojo-demos"
VERSION = 1
EPISODE_KEYS = ("frames", "proprio", "actions", "instruction", "seed", "success")


class DatasetError(ValueError):
    """A dataset directory or episode file is malformed; the message names the file."""


@dataclass
class Episode:
    frames: np.ndarray
    proprio: np.ndarray
    actions: np.ndarray
    instruction: str
    seed: int
    success: bool
    keypoints: np.ndarray | None = None  # float32 [T+1, K, 2], optional privileged label
    source: int = 0  # which dataset of a multi-dataset run it came from (load_datasets)
    goal_step: int | None = None
    """Frame at which the goal is first reached; None = the last frame. Frames after it are
    the expert holding the goal (the demo went on for a few steps): steps-to-go label 0."""

    @property
    def length(self) -> int:
        """Number of actions T (frames are T + 1)."""
        return len(self.actions)

    @property
    def goal_index(self) -> int:
        """The frame where the goal is first reached (``goal_step``, default the last)."""
        return self.length if self.goal_step is None else int(self.goal_step)

    def steps_to_go(self) -> np.ndarray:
        """The steps-to-go label of every frame: goal_index - t, 0 from the goal on."""
        return np.maximum(self.goal_index - np.arange(len(self.frames)), 0)


def episodes_fingerprint(episodes: list[Episode]) -> str:
    """A short hash of what training sees: every episode's seed, instruction, goal step,
    actions, proprio and a few frames. Two datasets with the same names but regenerated
    with other settings (e.g. expert noise) get different fingerprints."""
    h = hashlib.blake2b(digest_size=12)
    for ep in episodes:
        h.update(f"{ep.source}|{ep.seed}|{ep.instruction}|{ep.goal_step}|{ep.frames.shape}".encode())
        for arr in (ep.actions, ep.proprio, ep.frames[:: max(1, len(ep.frames) // 4)]):
            h.update(np.ascontiguousarray(arr).tobytes())
    return h.hexdigest()


def labels_fingerprint(episodes: list[Episode]) -> str:
    """A short hash of every episode's frame-0 keypoints (or their absence). Apart from
    ``episodes_fingerprint`` (runs recorded before it keep resuming): a reviewer's clicks (the
    Keypoints page) change a dataset's labels in place, and a run must not resume past them."""
    h = hashlib.blake2b(digest_size=12)
    for ep in episodes:
        kp = b"-" if ep.keypoints is None else np.ascontiguousarray(ep.keypoints[0], np.float32).tobytes()
        h.update(f"{ep.source}|{ep.seed}|".encode() + kp)
    return h.hexdigest()


def episode_path(root: Path, seed: int) -> Path:
    return Path(root) / "episodes" / f"ep_{seed:09d}.npz"


def write_meta(root: Path, meta: dict[str, Any]) -> None:
    meta = {"format": FORMAT, "version": VERSION, **meta}
    atomic_write_bytes(Path(root) / "dataset.json", json.dumps(meta, indent=2).encode())


def read_meta(root: Path) -> dict[str, Any]:
    path = Path(root) / "dataset.json"
    if not Path(root).is_dir():
        raise DatasetError(f"dataset folder {root} does not exist (or is not a folder), so there is no {path}; "
                           f"pass the --out of a demos run, or generate one with `python -m core.cli demos "
                           f"--out {root} --n 100`")
    if not path.exists():
        raise DatasetError(f"{root} is not a Dojo dataset: {path} is missing; generate one with "
                           f"`python -m core.cli demos --out {root} --n 100`")
    try:
        meta = json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise DatasetError(f"{path} is not valid JSON ({e}); fix or regenerate the dataset") from e
    if not isinstance(meta, dict):
        raise DatasetError(f"{path} must hold a JSON object, got {type(meta).__name__}; "
                           "fix or regenerate the dataset")
    if meta.get("format") != FORMAT or meta.get("version") != VERSION:
        raise DatasetError(f"{path}: expected format '{FORMAT}' version {VERSION}, got "
                           f"{meta.get('format')!r} version {meta.get('version')!r}")
    for key in ("backend", "env_config"):
        if key not in meta:
            raise DatasetError(f"{path} lacks '{key}'; regenerate the dataset")
    return meta


def validate_episode(ep: Episode, where: str) -> None:
    """Shape and value checks; raises DatasetError naming ``where`` and the problem."""
    f, p, a = ep.frames, ep.proprio, ep.actions
    if f.dtype != np.uint8 or f.ndim != 4 or f.shape[-1] != 3:
        raise DatasetError(f"{where}: frames must be uint8 [T+1, H, W, 3], got {f.dtype} {f.shape}")
    if a.ndim != 2 or len(f) != len(a) + 1:
        raise DatasetError(f"{where}: need one more frame than actions (frames {f.shape[0]}, "
                           f"actions {a.shape})")
    if p.ndim != 2 or len(p) != len(f):
        raise DatasetError(f"{where}: proprio must be [T+1, P] matching frames, got {p.shape}")
    if len(a) < 1:
        raise DatasetError(f"{where}: an episode needs at least one action")
    if not (np.all(np.isfinite(a)) and np.all(np.isfinite(p))):
        raise DatasetError(f"{where}: actions or proprio contain NaN/inf")
    if np.abs(a).max() > 1.0 + 1e-6:
        raise DatasetError(f"{where}: actions must lie in [-1, 1], max |a| = {np.abs(a).max():.3f}")
    k = ep.keypoints
    # Frame 0's keypoints must be known; later frames may be NaN (unknown: a reviewer's
    # first-frame clicks, which Stage 1 can track through the frames).
    if k is not None and (k.ndim != 3 or len(k) != len(f) or k.shape[-1] != 2 or not np.all(np.isfinite(k[0]))
                          or np.any(np.isinf(k))):
        raise DatasetError(f"{where}: keypoints must be float [T+1, K, 2] matching frames, finite on frame 0 "
                           f"(NaN = unknown on later frames), got {k.shape}")
    if not ep.instruction.strip():
        raise DatasetError(f"{where}: empty instruction")
    if ep.goal_step is not None and not 0 <= int(ep.goal_step) <= len(a):
        raise DatasetError(f"{where}: goal_step {ep.goal_step} must be a frame index 0..{len(a)} "
                           "(where the goal is first reached)")


def write_episode(root: Path, ep: Episode) -> Path:
    validate_episode(ep, f"episode seed {ep.seed}")
    buf = io.BytesIO()
    extra = {} if ep.keypoints is None else {"keypoints": ep.keypoints.astype(np.float32)}
    if ep.goal_step is not None:
        extra["goal_step"] = np.int64(ep.goal_step)
    np.savez_compressed(buf, frames=ep.frames, proprio=ep.proprio.astype(np.float32),
                        actions=ep.actions.astype(np.float32), instruction=np.array(ep.instruction),
                        seed=np.int64(ep.seed), success=np.bool_(ep.success), **extra)
    path = episode_path(root, ep.seed)
    atomic_write_bytes(path, buf.getvalue())
    return path


def read_episode(path: Path) -> Episode:
    try:
        with np.load(path, allow_pickle=False) as z:
            missing = [k for k in EPISODE_KEYS if k not in z.files]
            if missing:
                raise DatasetError(f"{path}: missing arrays {missing}; expected {list(EPISODE_KEYS)}")
            ep = Episode(frames=z["frames"], proprio=z["proprio"], actions=z["actions"],
                         instruction=str(z["instruction"]), seed=int(z["seed"]),
                         success=bool(z["success"]),
                         keypoints=z["keypoints"].astype(np.float32) if "keypoints" in z.files else None,
                         goal_step=int(z["goal_step"]) if "goal_step" in z.files else None)
    except DatasetError:
        raise
    except (OSError, ValueError, zipfile.BadZipFile, EOFError, zlib.error) as e:
        raise DatasetError(f"{path}: unreadable episode file ({type(e).__name__}: {e}); "
                           "delete it and re-run the generation to regenerate it") from e
    validate_episode(ep, str(path))
    return ep


def list_episode_files(root: Path) -> list[Path]:
    return sorted((Path(root) / "episodes").glob("ep_*.npz"))


def load_episodes(root: Path, limit: int | None = None) -> tuple[dict[str, Any], list[Episode]]:
    """Metadata and episodes (sorted by seed; the first ``limit`` if given)."""
    meta = read_meta(root)
    files = list_episode_files(root)
    if not files:
        raise DatasetError(f"{root} holds no episodes (episodes/ep_*.npz); generate some with `python -m core.cli "
                           f"demos --out {root} --n 100` and the options it was made with (its dataset.json)")
    if limit is not None:
        files = files[:limit]
    return meta, [read_episode(f) for f in files]


def dataset_dirs(spec: str | Path | list | tuple) -> list[Path]:
    """``"a,b"`` or ``[a, b]`` -> [Path(a), Path(b)]: several datasets train one model."""
    if isinstance(spec, (list, tuple)):
        parts = [str(p) for p in spec]
    else:
        parts = str(spec).split(",")
    dirs = [Path(p.strip()) for p in parts if p.strip()]
    if not dirs:
        raise DatasetError(f"no dataset directory given ({spec!r}); pass one, or several separated by commas")
    return dirs


def load_datasets(spec: str | Path | list | tuple, limit: int | None = None
                  ) -> tuple[dict[str, Any], list[Episode]]:
    """Episodes of one or several datasets (``limit`` applies to each), and the task they
    define: the dataset's own (backend, env_config) when they all share one, else a
    ``multitask`` backend over the distinct ones (sim_backends/multitask.py), so that
    evaluation and practice run every task the model was trained on."""
    dirs = dataset_dirs(spec)
    tasks: list[dict[str, Any]] = []
    episodes: list[Episode] = []
    first: dict[str, Any] | None = None
    bounds: dict[str, Any] = {}  # dataset -> its action units (an imported dataset's action_low/high)
    for k, d in enumerate(dirs):
        meta, eps = load_episodes(d, limit)
        for e in eps:
            e.source = k
        first = first or meta
        bounds[str(d)] = [meta.get("action_low"), meta.get("action_high")]
        task = {"backend": meta["backend"], "env_config": meta["env_config"]}
        if task not in tasks:
            tasks.append(task)
        episodes.extend(eps)
    assert first is not None
    units = {"action_low": first.get("action_low"), "action_high": first.get("action_high")}
    if len({json.dumps(b) for b in bounds.values()}) > 1:
        raise DatasetError(
            f"datasets {sorted(bounds)} record actions in different units (action_low/action_high in their "
            f"dataset.json: {bounds}); one model acts in one set of units: import them with the same bounds "
            "(the same robot), or train on them separately")
    if len(tasks) == 1:
        return {**first, **units, "datasets": [str(d) for d in dirs]}, episodes
    shapes = {(e.frames.shape[1:], e.proprio.shape[1], e.actions.shape[1]) for e in episodes}
    if len(shapes) > 1:
        raise DatasetError(
            f"datasets {[str(d) for d in dirs]} disagree on (image shape, proprio size, action size): "
            f"{sorted(shapes)}; one model reads them all, so generate them with the same image_size "
            f"and a backend with the same action and proprioception sizes")
    return {"backend": "multitask", "env_config": {"tasks": tasks}, **units,
            "datasets": [str(d) for d in dirs]}, episodes


def held_out_key(e: Episode) -> list[int]:
    """How a checkpoint names one of its held-out episodes: [dataset index, seed]."""
    return [int(e.source), int(e.seed)]


def held_out_episodes(ckpt_meta: dict[str, Any], data: str | None = None) -> list[Episode]:
    """The held-out demonstrations a Stage-1 checkpoint was validated on (for calibrating
    the detector), from ``data`` or the dataset(s) it was trained on; [] if unknown."""
    data = data or ckpt_meta.get("dataset")
    if not data:
        return []
    _, eps = load_datasets(data)
    if ckpt_meta.get("val_keys") is not None:
        keys = {tuple(k) for k in ckpt_meta["val_keys"]}
        return [e for e in eps if tuple(held_out_key(e)) in keys]
    val = set(ckpt_meta.get("val_seeds") or [])
    return [e for e in eps if e.seed in val]


@dataclass
class FrameTable:
    """All frames of a set of episodes, flattened for fast batch assembly.

    Sample i is frame ``idx[i]`` with its previous frame ``prev[i]`` (itself at t=0),
    the instruction ``instr[i]``, the action bins at that frame (masked on the last
    frame) and the steps-to-go label T - t (``Episode.steps_to_go``: counted to the
    goal frame, 0 on the frames that hold the goal after it).
    """

    frames: np.ndarray  # uint8 [N, H, W, 3]
    proprio: np.ndarray  # float32 [N, P]
    prev: np.ndarray  # int64 [N]
    actions: np.ndarray  # float32 [N, A] (zeros where masked)
    action_mask: np.ndarray  # bool [N]
    stg: np.ndarray  # int64 [N]
    instr_id: np.ndarray  # int64 [N]
    instructions: list[str]
    episode_id: np.ndarray  # int64 [N]
    keypoints: np.ndarray | None = None  # float32 [N, K, 2], NaN where an episode has none
    features: Any = None  # torch float16 [N, ...]: a frozen backbone's features per frame (cache_features)

    def __len__(self) -> int:
        return len(self.frames)

    @classmethod
    def from_episodes(cls, episodes: list[Episode]) -> "FrameTable":
        instructions = sorted({e.instruction for e in episodes})
        lookup = {s: i for i, s in enumerate(instructions)}
        frames, proprio, prev, acts, mask, stg, iid, eid = [], [], [], [], [], [], [], []
        n_kp = max((e.keypoints.shape[1] for e in episodes if e.keypoints is not None), default=0)
        kps = []
        offset = 0
        for k, e in enumerate(episodes):
            n = len(e.frames)
            frames.append(e.frames)
            proprio.append(e.proprio.astype(np.float32))
            prev.append(offset + np.maximum(np.arange(n) - 1, 0))
            acts.append(np.concatenate([e.actions, np.zeros((1, e.actions.shape[1]), np.float32)]))
            m = np.ones(n, bool)
            m[-1] = False
            mask.append(m)
            stg.append(e.steps_to_go())
            iid.append(np.full(n, lookup[e.instruction]))
            eid.append(np.full(n, k))
            if n_kp:
                kp = np.full((n, n_kp, 2), np.nan, np.float32)
                if e.keypoints is not None and e.keypoints.shape[1] == n_kp:
                    kp[:] = e.keypoints
                kps.append(kp)
            offset += n
        return cls(np.concatenate(frames), np.concatenate(proprio), np.concatenate(prev),
                   np.concatenate(acts).astype(np.float32), np.concatenate(mask),
                   np.concatenate(stg).astype(np.int64), np.concatenate(iid), instructions,
                   np.concatenate(eid), np.concatenate(kps) if n_kp else None)

    def cache_features(self, features_of: Callable, batch_size: int = 256) -> None:
        """Compute ``features_of(frames [B, 1, H, W, 3])`` once per frame (a frozen backbone's,
        ``DojoPolicy.frozen_features``) and hand them out with every batch from now on: each
        frame is encoded once, not once per epoch. Kept in float16 (half the memory; the
        relative error, ~1e-3, is far below what the heads resolve)."""
        import torch

        parts = []
        for start in range(0, len(self), batch_size):
            frames = torch.from_numpy(self.frames[start:start + batch_size])[:, None]
            parts.append(features_of(frames)[:, 0].to(torch.float16))
        self.features = torch.cat(parts) if parts else None

    def batch(self, idx: np.ndarray, n_frames: int, action_bins: int) -> dict[str, Any]:
        import torch

        from core.learning import policy as P
        from core.learning.action_bins import action_to_bins

        if n_frames == 2:
            fr = np.stack([self.frames[idx], self.frames[self.prev[idx]]], 1)
            pr = np.stack([self.proprio[idx], self.proprio[self.prev[idx]]], 1)
        else:
            fr, pr = self.frames[idx][:, None], self.proprio[idx][:, None]
        out = {} if self.keypoints is None else {P.KEYPOINTS: torch.from_numpy(self.keypoints[idx])}
        if self.features is not None:
            ids = torch.from_numpy(np.stack([idx, self.prev[idx]], 1)[:, :n_frames])
            out[P.FEATURES] = self.features[ids].float()
        return out | {P.FRAMES: torch.from_numpy(fr), P.PROPRIO: torch.from_numpy(pr),
                P.INSTRUCTION: [self.instructions[i] for i in self.instr_id[idx]],
                P.ACTION_BINS: torch.from_numpy(action_to_bins(self.actions[idx], action_bins)),
                P.ACTION_MASK: torch.from_numpy(self.action_mask[idx]),
                P.STG: torch.from_numpy(self.stg[idx])}
