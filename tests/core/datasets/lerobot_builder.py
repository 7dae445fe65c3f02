"""A small LeRobot v3.0 dataset built by hand (pyarrow, pandas, PyAV directly; not with
core/datasets/lerobot.py's writer), so the reader is checked against the format itself.

Five episodes of 6, 4, 8, 5 and 7 frames, three tasks, and three cameras of different sizes:
``observation.images.top`` (video, H.264, 24x32; episodes 0-2 in file-000, 3-4 in file-001),
``observation.images.wrist`` (video, AV1, 16x16; all episodes in one file) and
``observation.images.side`` (an image feature: PNG bytes in the parquet, 8x8). The data parquet
holds episodes 0-1 in file-000 and 2-4 in file-001. ``action`` has 3 values well outside
[-1, 1] (the last one constant), ``observation.state`` 4. Every frame is one solid colour that
encodes (camera, episode, frame), see ``colour``.
"""
from __future__ import annotations

import io
import json
import os
from pathlib import Path

import numpy as np

FPS = 10
LENGTHS = [6, 4, 8, 5, 7]
TASKS = ["pick up the red cube", "open the drawer", "stack the blue block on the green one"]
EP_TASK = [0, 1, 2, 0, 1]
CAMERAS = {"observation.images.top": (24, 32), "observation.images.wrist": (16, 16),
           "observation.images.side": (8, 8)}
DATA_FILE = [0, 0, 1, 1, 1]  # episode -> data file
VIDEO_FILE = {"observation.images.top": [0, 0, 0, 1, 1], "observation.images.wrist": [0, 0, 0, 0, 0]}
CODEC = {"observation.images.top": "libx264", "observation.images.wrist": "libsvtav1"}


def colour(cam: int, ep: int, t: int) -> np.ndarray:
    return np.array([30 + 40 * ep, 20 + 20 * t, 40 + 80 * cam], np.uint8)


def raw_actions(ep: int) -> np.ndarray:
    n = LENGTHS[ep]
    t = np.arange(n)
    return np.stack([5 * np.sin(t + ep), 10.0 * t + 3 * ep, np.full(n, 7.0)], 1).astype(np.float32)


def states(ep: int) -> np.ndarray:
    n = LENGTHS[ep]
    return (np.arange(n * 4, dtype=np.float32).reshape(n, 4) / 10 + ep)


def _encode(path: Path, frames: list[np.ndarray], codec: str) -> None:
    import av

    os.environ.setdefault("SVT_LOG", "1")  # SVT-AV1's banner: errors only
    path.parent.mkdir(parents=True, exist_ok=True)
    with av.open(str(path), "w") as c:
        s = c.add_stream(codec, rate=FPS)
        s.height, s.width = frames[0].shape[:2]
        s.pix_fmt = "yuv420p"
        s.options = {"g": "2", "crf": "20"} if codec == "libx264" else {"g": "2", "crf": "30", "preset": "12"}
        for i, f in enumerate(frames):
            vf = av.VideoFrame.from_ndarray(f, format="rgb24")
            vf.pts = i
            for p in s.encode(vf):
                c.mux(p)
        for p in s.encode():
            c.mux(p)


def _png(rgb: np.ndarray, hw: tuple[int, int]) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(np.broadcast_to(rgb, (*hw, 3)).copy()).save(buf, format="PNG")
    return buf.getvalue()


def build(root: Path, *, cameras: tuple[str, ...] = tuple(CAMERAS)) -> Path:
    import pandas as pd
    import pyarrow as pa
    import pyarrow.parquet as pq

    root.mkdir(parents=True)
    cam_ids = {k: i for i, k in enumerate(CAMERAS)}
    features = {}
    for key in cameras:
        h, w = CAMERAS[key]
        if key in VIDEO_FILE:
            features[key] = {"dtype": "video", "shape": [h, w, 3], "names": ["height", "width", "channels"],
                             "info": {"video.height": h, "video.width": w, "video.fps": FPS, "video.channels": 3,
                                      "video.codec": "h264" if CODEC[key] == "libx264" else "av1",
                                      "video.pix_fmt": "yuv420p", "video.is_depth_map": False, "has_audio": False}}
        else:
            features[key] = {"dtype": "image", "shape": [h, w, 3], "names": ["height", "width", "channel"]}
    features |= {
        "observation.state": {"dtype": "float32", "shape": [4], "names": ["j0", "j1", "j2", "j3"]},
        "action": {"dtype": "float32", "shape": [3], "names": ["x", "y", "gripper"]},
        **{k: {"dtype": d, "shape": [1], "names": None} for k, d in
           (("timestamp", "float32"), ("frame_index", "int64"), ("episode_index", "int64"), ("index", "int64"),
            ("task_index", "int64"))},
    }
    total = sum(LENGTHS)
    info = {"codebase_version": "v3.0", "robot_type": "so100", "total_episodes": len(LENGTHS), "total_frames": total,
            "total_tasks": len(TASKS), "chunks_size": 1000, "data_files_size_in_mb": 100,
            "video_files_size_in_mb": 200, "fps": FPS, "splits": {"train": f"0:{len(LENGTHS)}"},
            "data_path": "data/chunk-{chunk_index:03d}/file-{file_index:03d}.parquet",
            "video_path": "videos/{video_key}/chunk-{chunk_index:03d}/file-{file_index:03d}.mp4",
            "features": features}
    (root / "meta").mkdir()
    (root / "meta" / "info.json").write_text(json.dumps(info, indent=2))
    all_actions = np.concatenate([raw_actions(e) for e in range(len(LENGTHS))])
    stats = {"action": {"min": all_actions.min(0).tolist(), "max": all_actions.max(0).tolist(),
                        "mean": all_actions.mean(0).tolist(), "std": all_actions.std(0).tolist(), "count": [total]}}
    (root / "meta" / "stats.json").write_text(json.dumps(stats))
    pd.DataFrame({"task_index": range(len(TASKS))}, index=pd.Index(TASKS, name="task")).to_parquet(
        root / "meta" / "tasks.parquet")

    # data files
    index = 0
    starts = []
    rows: dict[int, dict[str, list]] = {}
    for e, n in enumerate(LENGTHS):
        starts.append(index)
        r = rows.setdefault(DATA_FILE[e], {k: [] for k in ("action", "observation.state", "timestamp", "frame_index",
                                                            "episode_index", "index", "task_index",
                                                            "observation.images.side")})
        r["action"] += raw_actions(e).tolist()
        r["observation.state"] += states(e).tolist()
        r["timestamp"] += [t / FPS for t in range(n)]
        r["frame_index"] += list(range(n))
        r["episode_index"] += [e] * n
        r["index"] += list(range(index, index + n))
        r["task_index"] += [EP_TASK[e]] * n
        r["observation.images.side"] += [{"bytes": _png(colour(2, e, t), CAMERAS["observation.images.side"]),
                                          "path": f"frame_{e}_{t}.png"} for t in range(n)]
        index += n
    for f, r in rows.items():
        cols = {"action": pa.array(r["action"], pa.list_(pa.float32(), 3)),
                "observation.state": pa.array(r["observation.state"], pa.list_(pa.float32(), 4)),
                "timestamp": pa.array(r["timestamp"], pa.float32()),
                **{k: pa.array(r[k], pa.int64()) for k in ("frame_index", "episode_index", "index", "task_index")}}
        if "observation.images.side" in cameras:
            cols["observation.images.side"] = pa.array(
                r["observation.images.side"], pa.struct([("bytes", pa.binary()), ("path", pa.string())]))
        path = root / f"data/chunk-000/file-{f:03d}.parquet"
        path.parent.mkdir(parents=True, exist_ok=True)
        pq.write_table(pa.table(cols), path)

    # videos, several episodes back to back per file
    ep_meta = {k: [] for k in ("episode_index", "tasks", "length", "data/chunk_index", "data/file_index",
                               "dataset_from_index", "dataset_to_index", "meta/episodes/chunk_index",
                               "meta/episodes/file_index")}
    for e, n in enumerate(LENGTHS):
        for k, v in (("episode_index", e), ("tasks", [TASKS[EP_TASK[e]]]), ("length", n), ("data/chunk_index", 0),
                     ("data/file_index", DATA_FILE[e]), ("dataset_from_index", starts[e]),
                     ("dataset_to_index", starts[e] + n), ("meta/episodes/chunk_index", 0),
                     ("meta/episodes/file_index", 0)):
            ep_meta[k].append(v)
    for key in cameras:
        if key not in VIDEO_FILE:
            continue
        h, w = CAMERAS[key]
        by_file: dict[int, list[np.ndarray]] = {}
        for e, n in enumerate(LENGTHS):
            frames = by_file.setdefault(VIDEO_FILE[key][e], [])
            t0 = len(frames) / FPS
            frames += [np.broadcast_to(colour(cam_ids[key], e, t), (h, w, 3)).copy() for t in range(n)]
            for k, v in (("chunk_index", 0), ("file_index", VIDEO_FILE[key][e]), ("from_timestamp", t0),
                         ("to_timestamp", t0 + n / FPS)):
                ep_meta.setdefault(f"videos/{key}/{k}", []).append(v)
        for f, frames in by_file.items():
            _encode(root / f"videos/{key}/chunk-000/file-{f:03d}.mp4", frames, CODEC[key])
    ep_meta["stats/action/min"] = [raw_actions(e).min(0).tolist() for e in range(len(LENGTHS))]  # dropped on read
    path = root / "meta/episodes/chunk-000/file-000.parquet"
    path.parent.mkdir(parents=True)
    pq.write_table(pa.table(ep_meta), path)
    return root
