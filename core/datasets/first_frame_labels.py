"""A reviewer's first-frame keypoint clicks, written into a demonstration dataset.

Stage 1's keypoint head learns where the pushed object and its target are in the image; without
that label its steps-to-go head stayed ~8 steps off on the tabletop and practice had no detector
(docs/method.md, "Where the keypoint labels are needed"). Simulated demonstrations carry the
positions on every frame; a lab's own (imported, recorded on real robots) carry none. The cheap
human substitute: a reviewer clicks the object, then where it should go, on each demonstration's
first frame (the Keypoints page), and Stage 1 follows the clicks through the other frames
(``SFTConfig.keypoint_labels="tracked"``, core/learning/keypoint_tracks.py).

The clicks are stored in the dataset format's own ``keypoints`` array (core/learning/dataset.py):
float32 [T+1, 2, 2], (u, v) in [-1, 1] at the image's edges (u left to right, v top to bottom),
frame 0 filled and the other frames NaN. Each episode file is rewritten atomically with its other
arrays unchanged. Labels on every frame (a simulator's) are never overwritten: clicks would lose
them. Numpy only: the web app imports this.
"""
from __future__ import annotations

import io
import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Sequence

import numpy as np

from core.files import atomic_write_bytes

# The keypoint head's order (what sim_backends' goal_keypoints() give): the object, its target.
POINTS = ("object", "target")
_EPISODE_RE = re.compile(r"^episodes/ep_[0-9]+\.npz$")
_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")


class LabelError(ValueError):
    """A dataset, episode or click that cannot be labelled; the message names the fix."""


@dataclass(frozen=True)
class EpisodeLabels:
    file: str  # episodes/ep_<seed>.npz, inside the dataset
    instruction: str
    n_frames: int  # T+1
    kind: str  # "none", "first" (frame 0 only: a reviewer's clicks) or "all" (every frame: a simulator's)
    first: Optional[tuple[tuple[float, float], ...]] = None  # frame 0's (u, v) per point, when labelled


def list_datasets(datasets_dir: Path) -> list[str]:
    """Dataset folders (``dataset.json`` inside) directly under ``datasets_dir``, by name."""
    if not Path(datasets_dir).is_dir():
        return []
    return sorted(p.name for p in Path(datasets_dir).iterdir()
                  if p.is_dir() and _NAME_RE.match(p.name) and (p / "dataset.json").is_file())


def dataset_root(datasets_dir: Path, name: str) -> Path:
    """``datasets_dir/name``, refusing anything that is not one dataset folder directly inside it."""
    if not isinstance(name, str) or not _NAME_RE.match(name):
        raise LabelError(f"dataset {name!r}: not a dataset folder name (letters, digits, '.', '_', '-')")
    root = Path(datasets_dir) / name
    if not (root / "dataset.json").is_file():
        raise LabelError(f"dataset {name!r}: no dataset.json in {root}; import the dataset on the Data page first")
    return root


def _episode_path(root: Path, file: str) -> Path:
    if not isinstance(file, str) or not _EPISODE_RE.match(file):
        raise LabelError(f"{file!r}: not an episode file of this dataset (episodes/ep_<seed>.npz)")
    path = Path(root) / file
    if not path.is_file():
        raise LabelError(f"{file}: not in {root}; the list of episodes is out of date, reload the page")
    return path


def _kind(kp: Optional[np.ndarray]) -> str:
    if kp is None:
        return "none"
    finite = np.isfinite(kp).all(axis=(1, 2))
    return "all" if finite.all() else "first"


def _read(path: Path, file: str, keys: Sequence[str]) -> dict[str, np.ndarray]:
    """The arrays ``keys`` (those present) of one episode file; NpzFile reads only those members."""
    try:
        with np.load(path, allow_pickle=False) as z:
            return {k: z[k] for k in keys if k in z.files}
    except Exception as e:  # noqa: BLE001 - an unreadable file is named, never a crash
        raise LabelError(f"{file}: not a readable episode file ({type(e).__name__}: {e}); "
                         "re-import the dataset") from e


def list_episodes(root: Path) -> list[EpisodeLabels]:
    """Every episode of the dataset at ``root`` with what keypoint labels it carries (frames are not read)."""
    out = []
    for path in sorted((Path(root) / "episodes").glob("ep_*.npz")):
        file = f"episodes/{path.name}"
        if not _EPISODE_RE.match(file):
            continue
        a = _read(path, file, ("instruction", "actions", "keypoints"))
        kp = a.get("keypoints")
        kind = _kind(kp)
        first = None if kp is None else tuple((float(u), float(v)) for u, v in kp[0])
        out.append(EpisodeLabels(file=file, instruction=str(a.get("instruction", "")),
                                 n_frames=len(a["actions"]) + 1 if "actions" in a else 0, kind=kind, first=first))
    return out


def first_frame(root: Path, file: str) -> np.ndarray:
    """Frame 0 of one episode, uint8 [H, W, 3]."""
    frames = _read(_episode_path(root, file), file, ("frames",)).get("frames")
    if frames is None or frames.ndim != 4 or frames.shape[-1] != 3 or len(frames) == 0:
        raise LabelError(f"{file}: no frames [T+1, H, W, 3]; re-import the dataset")
    return np.asarray(frames[0])


def pixel_to_uv(x: float, y: float, width: float, height: float) -> tuple[float, float]:
    """A click at pixel (x, y) of an image shown ``width`` x ``height`` -> (u, v) in [-1, 1]."""
    if width <= 0 or height <= 0:
        raise LabelError(f"image size {width} x {height}: must be positive")
    return (float(np.clip(2.0 * x / width - 1.0, -1.0, 1.0)), float(np.clip(2.0 * y / height - 1.0, -1.0, 1.0)))


def uv_to_pixel(u: float, v: float, width: float, height: float) -> tuple[float, float]:
    return (u + 1.0) / 2.0 * width, (v + 1.0) / 2.0 * height


def save_clicks(root: Path, file: str, points: Sequence[Sequence[float]]) -> EpisodeLabels:
    """Write ``points`` (one (u, v) in [-1, 1] per entry of POINTS) as frame 0's keypoints of one
    episode; its other arrays are kept byte for byte. Refused, with nothing written, where the
    episode already has labels on every frame."""
    path = _episode_path(root, file)
    pts = np.asarray(points, dtype=np.float64)
    if pts.shape != (len(POINTS), 2) or not np.isfinite(pts).all() or np.abs(pts).max() > 1.0:
        raise LabelError(f"{file}: need {len(POINTS)} clicks ({', then '.join(POINTS)}) inside the image, "
                         f"each (u, v) in [-1, 1]; got {pts.tolist()}")
    try:
        with np.load(path, allow_pickle=False) as z:
            arrays = {k: z[k] for k in z.files}
    except Exception as e:  # noqa: BLE001
        raise LabelError(f"{file}: not a readable episode file ({type(e).__name__}: {e}); nothing written") from e
    if "frames" not in arrays or arrays["frames"].ndim != 4:
        raise LabelError(f"{file}: no frames [T+1, H, W, 3]; nothing written")
    old = arrays.get("keypoints")
    if _kind(old) == "all":
        raise LabelError(f"{file}: already has keypoint labels on every frame (a simulator's); clicks would "
                         "replace them with one frame's. Nothing written; train with keypoint_labels='all'")
    kp = np.full((len(arrays["frames"]), len(POINTS), 2), np.nan, np.float32)
    kp[0] = pts
    arrays["keypoints"] = kp
    buf = io.BytesIO()
    np.savez_compressed(buf, **arrays)
    atomic_write_bytes(path, buf.getvalue())
    return EpisodeLabels(file=file, instruction=str(arrays.get("instruction", "")), n_frames=len(kp),
                         kind="first", first=tuple((float(u), float(v)) for u, v in kp[0]))


def dataset_backend(root: Path) -> Optional[str]:
    """The backend ``dataset.json`` names (which tasks can train on the dataset), or None if unreadable."""
    try:
        meta = json.loads((Path(root) / "dataset.json").read_text())
    except (OSError, ValueError):
        return None
    return meta.get("backend") if isinstance(meta, dict) else None
