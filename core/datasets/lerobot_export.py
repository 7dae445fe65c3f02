"""Writing a LeRobot v3.0 dataset (``export_lerobot_v3``) from Dojo episodes: the layout, parquet
schema, info.json features and AV1/H.264 video of LeRobot's own writer (see ``core.datasets.lerobot``
for the format and the reader). Torch-free."""
from __future__ import annotations

import io
import json
import os
import shutil
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Optional, Sequence

import numpy as np

from core.datasets.lerobot import CAMERA_KEY, CHUNKS_SIZE, CODEBASE_VERSION, DATA_PATH, EPISODES_PATH, LeRobotError, QUANTILES, VIDEO_PATH, _resize


# --- writing a LeRobot v3.0 dataset ---------------------------------------------------------

@dataclass
class ExportEpisode:
    """One episode to export. ``frames``: N images, uint8 [H, W, 3] arrays or encoded bytes
    (JPEG/PNG); ``actions``: [N-1, A] (Dojo: none on the last frame, which then repeats the
    last action with ``dojo.action_valid`` false) or [N, A]. Per-frame Dojo extras are optional."""
    frames: Sequence[Any]
    actions: np.ndarray
    instruction: str
    proprio: Optional[np.ndarray] = None  # [N, P]
    d: Optional[Sequence[Optional[float]]] = None  # steps-to-go d(o_t, g) per frame
    reward: Optional[Sequence[Optional[float]]] = None
    detector_fired: Optional[Sequence[bool]] = None
    gt_success: Optional[bool] = None
    override_success: Optional[bool] = None
    meta: dict[str, Any] = field(default_factory=dict)  # episodes meta columns dojo/<key>


def from_dojo_episode(ep: Any) -> ExportEpisode:
    """A core.learning.dataset.Episode (or anything with its fields) -> ExportEpisode."""
    T = len(ep.actions)
    goal = T if getattr(ep, "goal_step", None) is None else int(ep.goal_step)
    return ExportEpisode(frames=ep.frames, actions=np.asarray(ep.actions, np.float32), instruction=ep.instruction,
                         proprio=np.asarray(ep.proprio, np.float32),
                         d=[float(max(0, goal - t)) for t in range(T + 1)],
                         gt_success=bool(ep.success), meta={"seed": int(ep.seed)})


def pick_codec(codec: Optional[str] = None) -> str:
    """libsvtav1 (AV1, LeRobot's default) when the PyAV wheel has it, else libx264 (H.264)."""
    import av

    if codec:
        return codec
    have = av.codecs_available
    for c in ("libsvtav1", "libx264"):
        if c in have:
            try:
                av.codec.Codec(c, "w")
                return c
            except Exception:  # noqa: BLE001 - listed but not usable as an encoder
                continue
    return "mpeg4"


class _Stats:
    """Per-feature min/max/mean/std/count and quantiles, as LeRobot's stats.json holds them."""

    def __init__(self):
        self.values: dict[str, list[np.ndarray]] = {}
        self.images: dict[str, list] = {}

    def add(self, key: str, v: np.ndarray) -> None:
        self.values.setdefault(key, []).append(np.asarray(v, np.float64).reshape(len(v), -1))

    def add_image(self, key: str, frames: np.ndarray) -> None:
        x = frames.reshape(-1, 3).astype(np.float64) / 255.0
        acc = self.images.setdefault(key, [np.full(3, np.inf), np.full(3, -np.inf), np.zeros(3), np.zeros(3), 0, 0])
        acc[0], acc[1] = np.minimum(acc[0], x.min(0)), np.maximum(acc[1], x.max(0))
        acc[2] += x.sum(0)
        acc[3] += (x ** 2).sum(0)
        acc[4] += len(x)
        acc[5] += len(frames)

    def one(self, key: str) -> dict[str, Any]:
        v = np.concatenate(self.values[key])
        ok = np.isfinite(v)
        if not ok.any():
            v = np.zeros((1, v.shape[1]))
        elif not ok.all():
            v = np.where(ok, v, np.nan)
        stats = {"min": np.nanmin(v, 0), "max": np.nanmax(v, 0), "mean": np.nanmean(v, 0), "std": np.nanstd(v, 0),
                 "count": np.array([len(v)])}
        for q in QUANTILES:
            stats[f"q{int(round(q * 100)):02d}"] = np.nanquantile(v, q, axis=0)
        return {k: np.nan_to_num(x).tolist() for k, x in stats.items()}

    def image(self, key: str) -> dict[str, Any]:
        lo, hi, s, s2, n, frames = self.images[key]
        mean = s / n
        std = np.sqrt(np.maximum(s2 / n - mean ** 2, 0.0))
        c = lambda x: np.asarray(x).reshape(3, 1, 1).tolist()  # noqa: E731 - LeRobot's [C, 1, 1]
        return {"min": c(lo), "max": c(hi), "mean": c(mean), "std": c(std), "count": [int(frames)]}


def _to_array(frame: Any) -> np.ndarray:
    if isinstance(frame, (bytes, bytearray, memoryview)):
        from PIL import Image

        with Image.open(io.BytesIO(bytes(frame))) as im:
            return _resize(im, None)
    a = np.asarray(frame)
    if a.dtype != np.uint8 or a.ndim != 3 or a.shape[-1] != 3:
        raise LeRobotError(f"a frame must be uint8 [H, W, 3] or encoded image bytes, got {a.dtype} {list(a.shape)}")
    return a


def _tristate(v: Optional[bool]) -> int:
    return -1 if v is None else int(bool(v))


def export_lerobot_v3(episodes: Iterable[ExportEpisode], out_dir: str | os.PathLike, fps: int = 10, *,
                      robot_type: str = "dojo", camera_key: str = CAMERA_KEY, codec: Optional[str] = None,
                      episodes_per_file: int = 1000, chunks_size: int = CHUNKS_SIZE,
                      action_names: Optional[list[str]] = None, state_names: Optional[list[str]] = None,
                      readme: Optional[str] = None) -> dict[str, Any]:
    """Write ``episodes`` (streamed: one in memory at a time) as a LeRobot v3.0 dataset folder
    ``out_dir`` (which must not exist; written to a temporary sibling and renamed last). Data
    parquet and video files each hold up to ``episodes_per_file`` episodes. Returns a summary."""
    import av
    import pyarrow as pa
    import pyarrow.parquet as pq

    t_start = time.perf_counter()
    out = Path(out_dir)
    if out.exists() and any(out.iterdir()):
        raise LeRobotError(f"{out} already exists and is not empty; pick a new folder")
    codec = pick_codec(codec)
    os.environ.setdefault("SVT_LOG", "1")  # SVT-AV1 prints its whole configuration otherwise (1: errors only)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.parent / f".{out.name}.exporting-{uuid.uuid4().hex[:8]}"
    tmp.mkdir()
    stats = _Stats()
    tasks: dict[str, int] = {}
    ep_rows: list[dict[str, Any]] = []
    writer: Optional[pq.ParquetWriter] = None
    video = None  # (container, stream)
    schema = None
    A = P = None
    H = W = None
    index = 0
    file_no = -1
    frames_in_video = 0
    has_state = False

    def loc(n: int) -> tuple[int, int]:
        return n // chunks_size, n % chunks_size

    def close_video():
        nonlocal video
        if video is not None:
            container, stream = video
            for pkt in stream.encode():
                container.mux(pkt)
            container.close()
            video = None

    try:
        for ei, ep in enumerate(episodes):
            frames = np.stack([_to_array(f) for f in ep.frames])
            n = len(frames)
            acts = np.asarray(ep.actions, np.float32).reshape(len(ep.actions), -1)
            if n < 1 or len(acts) not in (n - 1, n) or (len(acts) == 0 and n > 1):
                raise LeRobotError(f"episode {ei}: {n} frames and {len(acts)} actions; need N frames and N-1 or N "
                                   "actions")
            if ei == 0:
                H, W = frames.shape[1:3]
                A = acts.shape[1]
                has_state = ep.proprio is not None
                P = np.asarray(ep.proprio).reshape(n, -1).shape[1] if has_state else None
            if frames.shape[1:3] != (H, W):
                raise LeRobotError(f"episode {ei}: frames of {list(frames.shape[1:3])}, the first episode's "
                                   f"{[H, W]}; one camera feature has one shape")
            if acts.shape[1] != A:
                raise LeRobotError(f"episode {ei}: action has {acts.shape[1]} values, the first episode's {A}")
            valid = np.ones(n, bool)
            if len(acts) == n - 1:
                valid[-1] = False
                acts = np.concatenate([acts, acts[-1:]]) if len(acts) else np.zeros((1, A), np.float32)
            cols: dict[str, Any] = {}
            if has_state:
                st = np.zeros((n, P), np.float32) if ep.proprio is None else \
                    np.asarray(ep.proprio, np.float32).reshape(n, -1)
                if st.shape[1] != P:
                    raise LeRobotError(f"episode {ei}: observation.state has {st.shape[1]} values, the first "
                                       f"episode's {P}")
                cols["observation.state"] = pa.FixedSizeListArray.from_arrays(pa.array(st.reshape(-1)), P)
                stats.add("observation.state", st)
            task_index = tasks.setdefault(ep.instruction or "", len(tasks))
            if ei % episodes_per_file == 0:  # a new data file and video file
                if writer is not None:
                    writer.close()
                close_video()
                file_no += 1
                chunk, fidx = loc(file_no)
                dpath = tmp / DATA_PATH.format(chunk_index=chunk, file_index=fidx)
                dpath.parent.mkdir(parents=True, exist_ok=True)
                writer = None
                vpath = tmp / VIDEO_PATH.format(video_key=camera_key, chunk_index=chunk, file_index=fidx)
                vpath.parent.mkdir(parents=True, exist_ok=True)
                container = av.open(str(vpath), "w")
                stream = container.add_stream(codec, rate=int(fps))
                stream.width, stream.height, stream.pix_fmt = W, H, "yuv420p"
                opts = {"g": "2", "crf": "30"}
                if codec == "libsvtav1":
                    opts["preset"] = "12"
                elif codec == "libx264" and (W % 2 or H % 2):
                    stream.pix_fmt = "yuv444p"  # 4:2:0 needs even sides
                stream.options = opts
                video = (container, stream)
                frames_in_video = 0
            d = np.array([np.nan if x is None else float(x) for x in (ep.d if ep.d is not None else [None] * n)],
                         np.float32)
            r = np.array([np.nan if x is None else float(x)
                          for x in (ep.reward if ep.reward is not None else [None] * n)], np.float32)
            fired = np.array([bool(x) for x in (ep.detector_fired if ep.detector_fired is not None else [False] * n)])
            if not (len(d) == len(r) == len(fired) == n):
                raise LeRobotError(f"episode {ei}: d/reward/detector_fired must have one value per frame ({n})")
            ts = (np.arange(n) / fps).astype(np.float32)
            cols = {
                "action": pa.FixedSizeListArray.from_arrays(pa.array(acts.reshape(-1).astype(np.float32)), A),
                **cols,
                "timestamp": pa.array(ts, pa.float32()),
                "frame_index": pa.array(np.arange(n), pa.int64()),
                "episode_index": pa.array(np.full(n, ei), pa.int64()),
                "index": pa.array(np.arange(index, index + n), pa.int64()),
                "task_index": pa.array(np.full(n, task_index), pa.int64()),
                "dojo.d": pa.array(d, pa.float32()),
                "dojo.reward": pa.array(r, pa.float32()),
                "dojo.detector_fired": pa.array(fired, pa.bool_()),
                "dojo.gt_success": pa.array(np.full(n, _tristate(ep.gt_success)), pa.int8()),
                "dojo.override_success": pa.array(np.full(n, _tristate(ep.override_success)), pa.int8()),
                "dojo.action_valid": pa.array(valid, pa.bool_()),
            }
            table = pa.table(cols)
            if writer is None:
                schema = table.schema
                writer = pq.ParquetWriter(dpath, schema=schema, compression="snappy")
            writer.write_table(table.cast(schema))  # one row group per episode, as LeRobot writes
            container, stream = video
            t0 = frames_in_video / fps
            for i, f in enumerate(frames):
                vf = av.VideoFrame.from_ndarray(f, format="rgb24")
                vf.pts = frames_in_video + i
                for pkt in stream.encode(vf):
                    container.mux(pkt)
            frames_in_video += n
            for k, v in (("action", acts), ("timestamp", ts), ("frame_index", np.arange(n)),
                         ("episode_index", np.full(n, ei)), ("index", np.arange(index, index + n)),
                         ("task_index", np.full(n, task_index)), ("dojo.d", d), ("dojo.reward", r),
                         ("dojo.detector_fired", fired), ("dojo.gt_success", np.full(n, _tristate(ep.gt_success))),
                         ("dojo.override_success", np.full(n, _tristate(ep.override_success))),
                         ("dojo.action_valid", valid)):
                stats.add(k, np.asarray(v))
            stats.add_image(camera_key, frames[:: max(1, n // 20)])  # a sample of frames per episode
            chunk, fidx = loc(file_no)
            row = {"episode_index": ei, "tasks": [ep.instruction or ""], "length": n,
                   "data/chunk_index": chunk, "data/file_index": fidx,
                   "dataset_from_index": index, "dataset_to_index": index + n,
                   f"videos/{camera_key}/chunk_index": chunk, f"videos/{camera_key}/file_index": fidx,
                   f"videos/{camera_key}/from_timestamp": t0, f"videos/{camera_key}/to_timestamp": t0 + n / fps,
                   "meta/episodes/chunk_index": 0, "meta/episodes/file_index": 0}
            for k, v in ep.meta.items():
                row[f"dojo/{k}"] = v
            ep_rows.append(row)
            index += n
        if not ep_rows:
            raise LeRobotError("no episodes to export")
        if writer is not None:
            writer.close()
            writer = None
        close_video()
        _write_meta(tmp, ep_rows, tasks, stats, fps=fps, robot_type=robot_type, camera_key=camera_key, codec=codec,
                    A=A, P=P if has_state else None, H=H, W=W, total_frames=index, chunks_size=chunks_size,
                    action_names=action_names, state_names=state_names)
        if readme:
            (tmp / "README.md").write_text(readme)
        if out.exists():
            out.rmdir()  # empty (checked above)
        tmp.rename(out)
    except BaseException:
        if writer is not None:
            writer.close()
        try:
            close_video()
        except Exception:  # noqa: BLE001 - already failing; the folder goes anyway
            pass
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return {"out": str(out), "episodes": len(ep_rows), "frames": index, "tasks": len(tasks), "codec": codec,
            "data_files": file_no + 1, "camera": camera_key, "frame_shape": [H, W, 3],
            "seconds": round(time.perf_counter() - t_start, 3)}


def _write_meta(root: Path, ep_rows: list[dict], tasks: dict[str, int], stats: _Stats, *, fps: int, robot_type: str,
                camera_key: str, codec: str, A: int, P: Optional[int], H: int, W: int, total_frames: int,
                chunks_size: int, action_names, state_names) -> None:
    import pandas as pd
    import pyarrow as pa
    import pyarrow.parquet as pq

    codec_name = {"libsvtav1": "av1", "libx264": "h264"}.get(codec, codec)

    def scalar(dtype):
        return {"dtype": dtype, "shape": [1], "names": None}

    features: dict[str, Any] = {
        camera_key: {"dtype": "video", "shape": [H, W, 3], "names": ["height", "width", "channels"],
                     "info": {"video.height": H, "video.width": W, "video.codec": codec_name,
                              "video.pix_fmt": "yuv420p", "video.is_depth_map": False, "video.fps": int(fps),
                              "video.channels": 3, "has_audio": False, "is_depth_map": False}},
        "action": {"dtype": "float32", "shape": [A], "names": action_names or [f"a{i}" for i in range(A)]},
    }
    if P is not None:
        features["observation.state"] = {"dtype": "float32", "shape": [P],
                                         "names": state_names or [f"s{i}" for i in range(P)]}
    features |= {"timestamp": scalar("float32"), "frame_index": scalar("int64"), "episode_index": scalar("int64"),
                 "index": scalar("int64"), "task_index": scalar("int64"),
                 "dojo.d": scalar("float32"), "dojo.reward": scalar("float32"), "dojo.detector_fired": scalar("bool"),
                 "dojo.gt_success": scalar("int8"), "dojo.override_success": scalar("int8"),
                 "dojo.action_valid": scalar("bool")}
    info = {
        "codebase_version": CODEBASE_VERSION, "robot_type": robot_type, "total_episodes": len(ep_rows),
        "total_frames": total_frames, "total_tasks": len(tasks), "chunks_size": chunks_size,
        "data_files_size_in_mb": 100, "video_files_size_in_mb": 200, "fps": int(fps),
        "splits": {"train": f"0:{len(ep_rows)}"}, "data_path": DATA_PATH, "video_path": VIDEO_PATH,
        "features": features,
    }
    meta = root / "meta"
    meta.mkdir(parents=True, exist_ok=True)
    all_stats = {k: stats.one(k) for k in stats.values}
    all_stats[camera_key] = stats.image(camera_key)
    (meta / "info.json").write_text(json.dumps(info, indent=4))
    (meta / "stats.json").write_text(json.dumps(all_stats, indent=4))
    # tasks.parquet: LeRobot reads it with pandas, the task text as the index named "task".
    df = pd.DataFrame({"task_index": list(tasks.values())}, index=pd.Index(list(tasks), name="task"))
    df.to_parquet(meta / "tasks.parquet")
    # The episodes meta, one file (LeRobot starts a new one past data_files_size_in_mb).
    keys: list[str] = []
    for r in ep_rows:
        keys += [k for k in r if k not in keys]
    table = pa.table({k: [r.get(k) for r in ep_rows] for k in keys})
    path = root / EPISODES_PATH.format(chunk_index=0, file_index=0)
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(table, path)
