"""LeRobot v3.0 datasets in and out, without torch (the web app imports this module).

The v3.0 layout (LeRobot's own documentation and ``LeRobotDataset``), all paths relative to the
dataset folder::

    meta/info.json        codebase_version "v3.0", fps, robot_type, total_episodes/frames/tasks,
                          chunks_size, data_files_size_in_mb, video_files_size_in_mb,
                          data_path "data/chunk-{chunk_index:03d}/file-{file_index:03d}.parquet",
                          video_path "videos/{video_key}/chunk-{chunk_index:03d}/file-{file_index:03d}.mp4",
                          splits, features {name: {dtype, shape, names[, info]}}
    meta/stats.json       per feature: min, max, mean, std, count (+ quantiles q01..q99)
    meta/tasks.parquet    one row per task: the task text (a pandas index named "task") and task_index
    meta/episodes/chunk-*/file-*.parquet
                          one row per episode: episode_index, tasks, length, data/chunk_index,
                          data/file_index, dataset_from_index, dataset_to_index, and per camera
                          videos/<key>/chunk_index, file_index, from_timestamp, to_timestamp
                          (plus stats/<feature>/<stat> columns and meta/episodes/chunk_index, file_index)
    data/chunk-*/file-*.parquet
                          one row per frame, several episodes per file: index, episode_index,
                          frame_index, timestamp, task_index, action, observation.state, ...
                          (image features as struct{bytes, path})
    videos/<key>/chunk-*/file-*.mp4
                          several episodes per file, back to back; an episode's frame i is at
                          from_timestamp + i / fps in its file

Mapping to Dojo's dataset (``core/learning/dataset.py``): a LeRobot episode of N frames becomes
T = N - 1 actions and N frames: ``frames`` from the chosen camera (resized to ``image_size``),
``proprio`` from ``observation.state``, ``actions`` the first N - 1 rows of ``action`` scaled
into [-1, 1] with the dataset's per-dimension min/max from ``meta/stats.json`` (kept in
dataset.json as ``action_low``/``action_high``: a = low + (a' + 1) / 2 * (high - low) maps a
policy's action back), ``instruction`` the episode's task text. LeRobot records no outcome, so
every episode is taken as a demonstration that ends at success (``success`` True, the goal
reached at the last frame).
"""
from __future__ import annotations

import datetime as _dt
import io
import json
import os
import shutil
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator, Optional

import numpy as np

from core.method.action_units import bounds_to_unit, unit_to_bounds

CODEBASE_VERSION = "v3.0"
DATA_PATH = "data/chunk-{chunk_index:03d}/file-{file_index:03d}.parquet"
VIDEO_PATH = "videos/{video_key}/chunk-{chunk_index:03d}/file-{file_index:03d}.mp4"
EPISODES_PATH = "meta/episodes/chunk-{chunk_index:03d}/file-{file_index:03d}.parquet"
CHUNKS_SIZE = 1000  # files per chunk folder, LeRobot's default
CAMERA_KEY = "observation.images.camera"
QUANTILES = (0.01, 0.10, 0.50, 0.90, 0.99)
DEMO_NOTE = ("LeRobot records no outcome: every episode was imported as a demonstration that ends at "
             "success (success=True, goal reached at the last frame)")
DOJO_FORMAT, DOJO_VERSION = "dojo-demos", 1  # core/learning/dataset.py's (it imports torch)


class LeRobotError(ValueError):
    """A LeRobot dataset that cannot be read or imported; the message names what differs."""


# --- small helpers -------------------------------------------------------------------------

def is_lerobot(path: str | os.PathLike) -> bool:
    """A folder with meta/info.json (any version: read_info says which it is)."""
    return (Path(path) / "meta" / "info.json").is_file()


def _load_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        raise LeRobotError(f"{path} is missing; a LeRobot v3.0 dataset has meta/info.json, meta/tasks.parquet, "
                           "meta/episodes/ and data/") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise LeRobotError(f"{path}: not valid JSON ({e})") from None


def read_info(src: str | os.PathLike) -> dict[str, Any]:
    root = Path(src)
    info = _load_json(root / "meta" / "info.json")
    if not isinstance(info, dict):
        raise LeRobotError(f"{root}/meta/info.json must hold a JSON object")
    version = str(info.get("codebase_version", ""))
    if not version.startswith("v3."):
        raise LeRobotError(f"{root}/meta/info.json: codebase_version is {version or 'missing'!r}; this reader "
                           "reads LeRobot v3.0 datasets (convert a v2.x one with LeRobot's "
                           "convert_dataset_v21_to_v30 script)")
    if not isinstance(info.get("features"), dict) or not info["features"]:
        raise LeRobotError(f"{root}/meta/info.json: 'features' is missing or empty")
    fps = info.get("fps")
    if not isinstance(fps, (int, float)) or fps <= 0:
        raise LeRobotError(f"{root}/meta/info.json: fps must be a positive number, got {fps!r}")
    return info


def _matrix(column, width: Optional[int] = None) -> np.ndarray:
    """A parquet column of fixed-size lists (or scalars) -> float array [rows, width]."""
    import pyarrow as pa

    arr = column.combine_chunks() if isinstance(column, pa.ChunkedArray) else column
    if pa.types.is_list(arr.type) or pa.types.is_fixed_size_list(arr.type) or pa.types.is_large_list(arr.type):
        if arr.null_count:
            raise LeRobotError("a list column holds empty (null) rows")
        values = arr.flatten().to_numpy(zero_copy_only=False)
        return values.reshape(len(arr), -1 if width is None else width)
    return arr.to_numpy(zero_copy_only=False).reshape(len(arr), 1)


def _resize(img, image_size: Optional[int]) -> np.ndarray:
    """A PIL image -> uint8 [H, W, 3], square ``image_size`` if given."""
    from PIL import Image

    if img.mode != "RGB":
        img = img.convert("RGB")
    if image_size and img.size != (image_size, image_size):
        img = img.resize((image_size, image_size), Image.BILINEAR)
    return np.asarray(img, dtype=np.uint8)


# --- reading ---------------------------------------------------------------------------------

@dataclass
class LeRobotEpisode:
    episode_index: int
    frames: np.ndarray  # uint8 [N, H, W, 3]
    proprio: np.ndarray  # float32 [N, P]
    actions: np.ndarray  # float32 [N-1, A] in [-1, 1]
    raw_actions: np.ndarray  # float32 [N-1, A]: the dataset's own values
    instruction: str

    @property
    def length(self) -> int:
        return len(self.frames)


class _VideoCursor:
    """Decodes one video file front to back; episodes stored back to back are read in one pass.
    Reopens the file only when asked for an earlier time or another file."""

    def __init__(self, image_size: Optional[int]):
        self.image_size = image_size
        self.path: Optional[Path] = None
        self.container = None
        self.frames: Optional[Iterator] = None
        self.peeked: Optional[tuple[float, Any]] = None
        self.last_t = -1.0

    def close(self) -> None:
        if self.container is not None:
            self.container.close()
        self.container = self.frames = self.peeked = None
        self.path = None

    def _open(self, path: Path) -> None:
        import av

        self.close()
        try:
            self.container = av.open(str(path))
            stream = self.container.streams.video[0]
        except (av.error.FFmpegError, IndexError, OSError) as e:
            raise LeRobotError(f"{path}: cannot be opened as a video ({type(e).__name__}: {e})") from None
        stream.thread_type = "AUTO"
        self.frames = ((float(f.pts * f.time_base), f) for f in self.container.decode(stream))
        self.path, self.peeked, self.last_t = path, None, -1.0

    def _peek(self):
        if self.peeked is None:
            try:
                self.peeked = next(self.frames)
            except StopIteration:
                return None
        return self.peeked

    def read(self, path: Path, times: np.ndarray, tol: float) -> np.ndarray:
        if path != self.path or times[0] < self.last_t - tol:
            self._open(path)
        out = []
        for want in times:
            best = None
            while (f := self._peek()) is not None and f[0] <= want + tol:
                self.peeked = None
                if abs(f[0] - want) <= tol and (best is None or abs(f[0] - want) < abs(best[0] - want)):
                    best = f
            if best is None:
                raise LeRobotError(f"{path}: no frame at {want:.3f} s (the episodes meta says the episode is "
                                   "there); the video is shorter than its metadata or its timestamps differ")
            out.append(_resize(best[1].to_image(), self.image_size))
            self.last_t = want
        return np.stack(out)


class LeRobotReader:
    """A LeRobot v3.0 dataset folder, checked on construction; iterate for its episodes."""

    def __init__(self, src: str | os.PathLike, camera: Optional[str] = None, image_size: Optional[int] = None,
                 expect_action_dim: Optional[int] = None):
        import pyarrow.parquet as pq

        self.root = Path(src)
        if not self.root.is_dir():
            raise LeRobotError(f"{self.root} is not a folder (a LeRobot dataset is a folder with meta/info.json)")
        self.info = info = read_info(self.root)
        self.fps = float(info["fps"])
        self.image_size = image_size
        feats: dict[str, dict] = info["features"]
        self.features = feats
        cams = [k for k, f in feats.items() if f.get("dtype") == "video"]
        cams += [k for k, f in feats.items() if f.get("dtype") == "image"]
        self.cameras = cams
        if not cams:
            raise LeRobotError("the dataset has no camera (no feature of dtype 'video' or 'image' in meta/info.json); "
                               "Dojo's policies need camera frames")
        if camera is not None and camera not in cams:
            raise LeRobotError(f"camera {camera!r} is not in the dataset; its cameras: {cams}")
        self.camera = camera or cams[0]
        self.camera_is_video = feats[self.camera]["dtype"] == "video"
        if self.camera_is_video and not info.get("video_path"):
            raise LeRobotError("meta/info.json: a video feature but no video_path template")
        act = feats.get("action")
        if act is None:
            raise LeRobotError(f"the dataset has no 'action' feature (features: {sorted(feats)})")
        shape = list(act.get("shape") or [])
        if len(shape) != 1 or not str(act.get("dtype", "")).startswith("float"):
            raise LeRobotError(f"the dataset's action must be a float vector, got {act.get('dtype')} {shape}")
        self.action_dim = int(shape[0])
        if expect_action_dim is not None and self.action_dim != expect_action_dim:
            raise LeRobotError(f"the dataset's action has {self.action_dim} values; the task needs {expect_action_dim}")
        self.action_names = act.get("names")
        st = feats.get("observation.state")
        self.state_dim = int(st["shape"][0]) if st and len(st.get("shape") or []) == 1 else None
        # Tasks and episodes meta.
        self.tasks = self._read_tasks(pq)
        self.episodes = self._read_episodes(pq)
        if not self.episodes:
            raise LeRobotError(f"{self.root}/meta/episodes/ lists no episode")
        if self.camera_is_video:
            missing = [k for k in (f"videos/{self.camera}/chunk_index", f"videos/{self.camera}/file_index",
                                   f"videos/{self.camera}/from_timestamp") if k not in self.episodes[0]]
            if missing:
                raise LeRobotError(f"meta/episodes: columns {missing} are missing for camera {self.camera!r}")
        self.action_low, self.action_high, self.bounds_from = self._bounds()

    # meta -------------------------------------------------------------------------------------
    def _read_tasks(self, pq) -> dict[int, str]:
        path = self.root / "meta" / "tasks.parquet"
        if not path.exists():
            return {}
        t = pq.read_table(path).to_pydict()
        text = t.get("task") or t.get("__index_level_0__")
        if text is None or "task_index" not in t:
            raise LeRobotError(f"{path}: expected the columns task (the index) and task_index, got {sorted(t)}")
        return {int(i): str(s) for i, s in zip(t["task_index"], text)}

    def _read_episodes(self, pq) -> list[dict[str, Any]]:
        files = sorted((self.root / "meta" / "episodes").glob("chunk-*/file-*.parquet"))
        if not files:
            raise LeRobotError(f"{self.root}/meta/episodes/chunk-*/file-*.parquet: no file; not a v3.0 dataset?")
        rows = []
        for f in files:
            schema = pq.read_schema(f)
            cols = [c for c in schema.names if not c.startswith("stats/")]
            rows += pq.read_table(f, columns=cols).to_pylist()
        need = ("episode_index", "length", "data/chunk_index", "data/file_index")
        missing = [k for k in need if k not in rows[0]]
        if missing:
            raise LeRobotError(f"meta/episodes: columns {missing} are missing")
        return sorted(rows, key=lambda r: r["episode_index"])

    def _bounds(self) -> tuple[np.ndarray, np.ndarray, str]:
        path = self.root / "meta" / "stats.json"
        st = _load_json(path) if path.exists() else {}
        a = st.get("action") if isinstance(st, dict) else None
        try:
            low = np.asarray(a["min"], np.float64).reshape(-1)
            high = np.asarray(a["max"], np.float64).reshape(-1)
            src = "meta/stats.json"
        except (TypeError, KeyError, ValueError):
            low = high = None
        if low is None or len(low) != self.action_dim or len(high) != self.action_dim \
                or not (np.all(np.isfinite(low)) and np.all(np.isfinite(high))):
            (low, high), src = self._scan_action_bounds(), "the data (meta/stats.json has no action min/max)"
        return low, high, src

    def _scan_action_bounds(self) -> tuple[np.ndarray, np.ndarray]:
        import pyarrow.parquet as pq

        lo = np.full(self.action_dim, np.inf)
        hi = np.full(self.action_dim, -np.inf)
        for path in self._data_files():
            a = _matrix(pq.read_table(path, columns=["action"]).column("action"), self.action_dim)
            lo, hi = np.minimum(lo, a.min(0)), np.maximum(hi, a.max(0))
        return lo, hi

    def _data_files(self) -> list[Path]:
        seen: list[Path] = []
        for ep in self.episodes:
            p = self.root / self.info.get("data_path", DATA_PATH).format(
                chunk_index=ep["data/chunk_index"], file_index=ep["data/file_index"])
            if p not in seen:
                seen.append(p)
        return seen

    def scale(self, a: np.ndarray) -> np.ndarray:
        """The dataset's actions -> [-1, 1] per dimension (0 where a dimension never varies)."""
        return bounds_to_unit(a, self.action_low, self.action_high)

    def unscale(self, a: np.ndarray) -> np.ndarray:
        return unit_to_bounds(a, self.action_low, self.action_high)

    def meta_counts(self) -> dict[str, Any]:
        return {"total_episodes": self.info.get("total_episodes"), "total_frames": self.info.get("total_frames"),
                "total_tasks": self.info.get("total_tasks"), "episodes_listed": len(self.episodes),
                "lengths": [int(e["length"]) for e in self.episodes]}

    # episodes ---------------------------------------------------------------------------------
    def __iter__(self) -> Iterator[LeRobotEpisode]:
        import pyarrow.parquet as pq

        cursor = _VideoCursor(self.image_size)
        tol = 0.5 / self.fps
        try:
            by_file: dict[Path, list[dict]] = {}
            for ep in self.episodes:
                p = self.root / self.info.get("data_path", DATA_PATH).format(
                    chunk_index=ep["data/chunk_index"], file_index=ep["data/file_index"])
                by_file.setdefault(p, []).append(ep)
            for path, eps in by_file.items():
                if not path.exists():
                    raise LeRobotError(f"{path.relative_to(self.root)} is missing (episodes "
                                       f"{[e['episode_index'] for e in eps]} are in it, says meta/episodes)")
                names = set(pq.read_schema(path).names)
                cols = ["episode_index", "frame_index", "action"]
                cols += [c for c in ("task_index", "observation.state") if c in names]
                if not self.camera_is_video:
                    cols.append(self.camera)
                missing = [c for c in cols if c not in names]
                if missing:
                    raise LeRobotError(f"{path.relative_to(self.root)}: columns {missing} are missing")
                table = pq.read_table(path, columns=cols)  # one data file in memory at a time
                ep_col = table.column("episode_index").to_numpy()
                for ep in eps:
                    yield self._episode(ep, table, ep_col, path, cursor, tol)
                del table
        finally:
            cursor.close()

    def _episode(self, ep: dict, table, ep_col: np.ndarray, path: Path, cursor: _VideoCursor,
                 tol: float) -> LeRobotEpisode:
        e = int(ep["episode_index"])
        where = f"episode {e}"
        rows = np.nonzero(ep_col == e)[0]
        sub = table.take(rows)
        order = np.argsort(sub.column("frame_index").to_numpy(), kind="stable")
        sub = sub.take(order)
        n = len(sub)
        if n != int(ep["length"]):
            raise LeRobotError(f"{where}: {n} rows in {path.relative_to(self.root)}, meta/episodes says "
                               f"{ep['length']}")
        if n < 2:
            raise LeRobotError(f"{where}: {n} frame(s); an episode needs at least 2 (one action and the goal frame)")
        raw = _matrix(sub.column("action"), self.action_dim).astype(np.float64)
        if "observation.state" in sub.column_names:
            proprio = _matrix(sub.column("observation.state")).astype(np.float32)
        else:
            proprio = np.zeros((n, 1), np.float32)
        if not (np.all(np.isfinite(raw)) and np.all(np.isfinite(proprio))):
            raise LeRobotError(f"{where}: action or observation.state holds NaN/inf")
        if "task_index" in sub.column_names and self.tasks:
            ti = int(sub.column("task_index")[0].as_py())
            if ti not in self.tasks:
                raise LeRobotError(f"{where}: task_index {ti} is not in meta/tasks.parquet")
            instruction = self.tasks[ti]
        else:
            tasks = ep.get("tasks") or []
            instruction = str(tasks[0]) if tasks else ""
        if not instruction.strip():
            raise LeRobotError(f"{where}: no task text (meta/tasks.parquet / the episode's tasks)")
        if self.camera_is_video:
            vpath = self.root / self.info["video_path"].format(
                video_key=self.camera, chunk_index=ep[f"videos/{self.camera}/chunk_index"],
                file_index=ep[f"videos/{self.camera}/file_index"])
            if not vpath.exists():
                raise LeRobotError(f"{vpath.relative_to(self.root)} is missing ({where}'s {self.camera} video)")
            t0 = float(ep[f"videos/{self.camera}/from_timestamp"])
            frames = cursor.read(vpath, t0 + np.arange(n) / self.fps, tol)
        else:
            frames = np.stack([self._image(v, where) for v in sub.column(self.camera).to_pylist()])
        return LeRobotEpisode(episode_index=e, frames=frames, proprio=proprio, actions=self.scale(raw[:-1]),
                              raw_actions=raw[:-1].astype(np.float32), instruction=instruction)

    def _image(self, v: Any, where: str) -> np.ndarray:
        from PIL import Image

        data = v.get("bytes") if isinstance(v, dict) else v
        if data is None and isinstance(v, dict) and v.get("path"):
            p = (self.root / v["path"]).resolve()
            if self.root.resolve() not in p.parents:
                raise LeRobotError(f"{where}: image path {v['path']!r} points outside the dataset")
            data = p.read_bytes()
        if data is None:
            raise LeRobotError(f"{where}: an image of {self.camera} has neither bytes nor path")
        with Image.open(io.BytesIO(data)) as im:
            return _resize(im, self.image_size)


def read_lerobot(src: str | os.PathLike, camera: Optional[str] = None,
                 image_size: Optional[int] = None) -> Iterator[LeRobotEpisode]:
    """The episodes of a LeRobot v3.0 dataset folder, one at a time (module docstring: the mapping)."""
    return iter(LeRobotReader(src, camera=camera, image_size=image_size))


# --- importing into a Dojo dataset ----------------------------------------------------------

def _atomic_write(path: Path, data: bytes) -> None:
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex[:8]}.tmp")
    with open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def write_dojo_episode(root: Path, seed: int, frames: np.ndarray, proprio: np.ndarray, actions: np.ndarray,
                       instruction: str, success: bool = True) -> Path:
    """One episode file in core/learning/dataset.py's format (written here: that module imports torch)."""
    buf = io.BytesIO()
    np.savez_compressed(buf, frames=frames.astype(np.uint8), proprio=proprio.astype(np.float32),
                        actions=actions.astype(np.float32), instruction=np.array(instruction),
                        seed=np.int64(seed), success=np.bool_(success))
    path = Path(root) / "episodes" / f"ep_{seed:09d}.npz"
    path.parent.mkdir(parents=True, exist_ok=True)
    _atomic_write(path, buf.getvalue())
    return path


def import_lerobot(src: str | os.PathLike, out: str | os.PathLike, *, camera: Optional[str] = None,
                   image_size: Optional[int] = None, expect_action_dim: Optional[int] = None,
                   backend: str = "lerobot", env_config: Optional[dict] = None,
                   limit: Optional[int] = None) -> dict[str, Any]:
    """Write the LeRobot v3.0 dataset ``src`` as a Dojo dataset folder ``out`` (which must not
    exist): written to a temporary sibling, renamed last, removed on any failure. Returns a
    summary: the dataset's own meta counts next to what was imported."""
    t_start = time.perf_counter()
    out = Path(out)
    if out.exists():
        raise LeRobotError(f"{out} already exists; pick a new --out (an import never writes into a dataset)")
    reader = LeRobotReader(src, camera=camera, image_size=image_size, expect_action_dim=expect_action_dim)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.parent / f".{out.name}.importing-{uuid.uuid4().hex[:8]}"
    tmp.mkdir()
    lengths: list[int] = []
    shape = None
    try:
        for k, ep in enumerate(reader):
            if limit is not None and k >= limit:
                break
            if shape is None:
                shape = list(ep.frames.shape[1:])
            elif list(ep.frames.shape[1:]) != shape:
                raise LeRobotError(f"episode {ep.episode_index}: frames of {list(ep.frames.shape[1:])}, earlier ones "
                                   f"{shape}; pass image_size to resize them all")
            write_dojo_episode(tmp, ep.episode_index, ep.frames, ep.proprio, ep.actions, ep.instruction)
            lengths.append(ep.length)
        meta = {
            "format": DOJO_FORMAT, "version": DOJO_VERSION, "backend": backend,
            "env_config": env_config if env_config is not None else
            {"source": "lerobot", "robot_type": reader.info.get("robot_type"), "camera": reader.camera,
             "image_size": shape[0] if shape else image_size},
            "seed0": 0, "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
            "action_low": [float(x) for x in reader.action_low],
            "action_high": [float(x) for x in reader.action_high],
            "action_names": reader.action_names,
            "lerobot": {"source": str(Path(src)), "codebase_version": reader.info.get("codebase_version"),
                        "fps": reader.fps, "camera": reader.camera, "cameras": reader.cameras,
                        "action_bounds_from": reader.bounds_from,
                        "total_episodes": reader.info.get("total_episodes"),
                        "total_frames": reader.info.get("total_frames"), "note": DEMO_NOTE},
        }
        _atomic_write(tmp / "dataset.json", json.dumps(meta, indent=2).encode())
        tmp.rename(out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return {
        "out": str(out), "source": str(Path(src)), "format": f"lerobot {reader.info.get('codebase_version')}",
        "fps": reader.fps, "camera": reader.camera, "cameras": reader.cameras, "frame_shape": shape,
        "dataset": reader.meta_counts(),
        "imported": {"episodes": len(lengths), "frames": int(sum(lengths)), "actions": int(sum(lengths) - len(lengths)),
                     "lengths": lengths},
        "action_dim": reader.action_dim, "proprio_dim": reader.state_dim,
        "action_low": meta["action_low"], "action_high": meta["action_high"], "action_bounds_from": reader.bounds_from,
        "note": DEMO_NOTE + ("" if reader.state_dim else "; the dataset has no observation.state, so proprio is "
                             "one zero per frame"),
        "seconds": round(time.perf_counter() - t_start, 3),
    }
