"""``python -m core.cli data``: datasets in and out.

  data import SRC --out DST [--camera KEY] [--image-size N] [--action-dim A]
      SRC is a LeRobot v3.0 dataset folder (meta/info.json), a Dojo dataset folder
      (dataset.json + episodes/), or a .zip/.tar(.gz) of either; DST becomes a Dojo dataset
      folder (core/learning/dataset.py) that ``sft --data DST`` trains on. Nothing is left at
      DST on failure.
  data export --format lerobot --out DIR (--db URL | --data DOJO_DIR) [--task ID]
              [--source practice|eval|demo] [--session ID] [--limit N] [--fps F]
      stored episodes (or a Dojo dataset folder) as a LeRobot v3.0 dataset folder.

Formats and the mapping: docs/dataset-format.md, "LeRobot".
"""
from __future__ import annotations

import argparse
import json
import shutil
import tarfile
import tempfile
import uuid
import zipfile
from pathlib import Path
from typing import Any, Optional


def _options(p: argparse.ArgumentParser, show_all: bool) -> None:
    sub = p.add_subparsers(dest="data_command", required=True)
    imp = sub.add_parser("import", help="a LeRobot v3.0 dataset, or a Dojo dataset (folder or archive), into a "
                                        "Dojo dataset folder")
    imp.add_argument("src", help="LeRobot v3.0 folder (meta/info.json), Dojo dataset folder, or a .zip/.tar(.gz) "
                                 "of either")
    imp.add_argument("--out", required=True, help="the Dojo dataset folder to create (must not exist)")
    imp.add_argument("--camera", default=None, help="LeRobot: the camera feature (default: the first video one)")
    imp.add_argument("--image-size", type=int, default=None, help="resize frames to N x N (default: as stored)")
    imp.add_argument("--action-dim", type=int, default=None,
                     help="refuse a dataset whose action size differs (the task's action size)")
    imp.add_argument("--backend", default="lerobot",
                     help="LeRobot: the backend written into dataset.json (the task the data is for)")
    imp.add_argument("--limit", type=int, default=None, help="LeRobot: import only the first N episodes")
    exp = sub.add_parser("export", help="stored episodes or a Dojo dataset as a LeRobot v3.0 dataset folder")
    exp.add_argument("--format", choices=["lerobot"], default="lerobot", help="output format (LeRobot v3.0)")
    exp.add_argument("--out", required=True, help="folder to create (must not exist or be empty)")
    exp.add_argument("--db", default=None, help="database URL or SQLite path (default: DOJO_DB, data/dojo.sqlite)")
    exp.add_argument("--data", default=None, help="export a Dojo dataset folder instead of the database")
    exp.add_argument("--task", type=int, default=None, help="only this task's episodes")
    exp.add_argument("--source", choices=["practice", "eval", "demo"], default=None, help="only this source")
    exp.add_argument("--session", type=int, default=None, help="only this practice session's episodes")
    exp.add_argument("--limit", type=int, default=100, help="the newest N finished episodes")
    exp.add_argument("--fps", type=int, default=10, help="frames per second written into the dataset")


def cmd_data(args: argparse.Namespace) -> dict[str, Any]:
    if args.data_command == "import":
        return import_any(args.src, args.out, camera=args.camera, image_size=args.image_size,
                          action_dim=args.action_dim, backend=args.backend, limit=args.limit)
    return export(args)


# --- import -----------------------------------------------------------------------------------

def _unpack(archive: Path, dest: Path) -> Path:
    """Unpack a zip/tar of a dataset (paths kept inside ``dest``) and return its root: ``dest``
    or its one top folder."""
    if zipfile.is_zipfile(archive) and not tarfile.is_tarfile(archive):
        with zipfile.ZipFile(archive) as zf:
            for name in zf.namelist():
                if name.startswith("/") or ".." in Path(name).parts:
                    raise ValueError(f"{archive}: member {name!r} points outside the archive")
            zf.extractall(dest)
    elif tarfile.is_tarfile(archive):
        with tarfile.open(archive) as tf:
            tf.extractall(dest, filter="data")  # refuses links out, absolute paths, devices
    else:
        raise ValueError(f"{archive}: neither a folder nor a .zip/.tar(.gz) archive")
    entries = [p for p in dest.iterdir() if p.name not in ("__MACOSX", ".DS_Store")]
    return entries[0] if len(entries) == 1 and entries[0].is_dir() else dest


def import_any(src: str, out: str, *, camera: Optional[str] = None, image_size: Optional[int] = None,
               action_dim: Optional[int] = None, backend: str = "lerobot", limit: Optional[int] = None) -> dict:
    from core.datasets import lerobot as lr

    src_p, out_p = Path(src), Path(out)
    if out_p.exists():
        raise ValueError(f"{out_p} already exists; pick a new --out")
    work = None
    try:
        if src_p.is_file():
            work = Path(tempfile.mkdtemp(prefix="dojo-data-import-"))
            root = _unpack(src_p, work)
        elif src_p.is_dir():
            root = src_p
        else:
            raise ValueError(f"{src_p} does not exist")
        if lr.is_lerobot(root):
            return lr.import_lerobot(root, out_p, camera=camera, image_size=image_size,
                                     expect_action_dim=action_dim, backend=backend, limit=limit)
        if (root / "dataset.json").is_file():
            return _import_dojo(root, out_p, image_size=image_size, action_dim=action_dim)
        raise ValueError(f"{src_p}: neither a LeRobot v3.0 dataset (meta/info.json) nor a Dojo dataset "
                         "(dataset.json + episodes/ep_*.npz)")
    finally:
        if work is not None:
            shutil.rmtree(work, ignore_errors=True)


def _import_dojo(root: Path, out: Path, *, image_size: Optional[int], action_dim: Optional[int]) -> dict:
    """Check every episode of a Dojo dataset (core/learning/dataset.py's reader), then copy it
    (resized if asked) to a temporary sibling of ``out`` and rename it."""
    import numpy as np

    from core.datasets.lerobot import _atomic_write, _resize
    from core.learning.dataset import list_episode_files, read_episode, read_meta

    meta = read_meta(root)
    files = list_episode_files(root)
    if not files:
        raise ValueError(f"{root}: no episodes (episodes/ep_*.npz)")
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.parent / f".{out.name}.importing-{uuid.uuid4().hex[:8]}"
    (tmp / "episodes").mkdir(parents=True)
    lengths = []
    try:
        for f in files:
            ep = read_episode(f)  # validates; DatasetError (a ValueError) names the file
            if action_dim is not None and ep.actions.shape[1] != action_dim:
                raise ValueError(f"{f}: the dataset's action has {ep.actions.shape[1]} values; the task needs "
                                 f"{action_dim}")
            if image_size and ep.frames.shape[1:3] != (image_size, image_size):
                from PIL import Image

                frames = np.stack([_resize(Image.fromarray(x), image_size) for x in ep.frames])
                with np.load(f, allow_pickle=False) as z:
                    arrays = {k: z[k] for k in z.files}
                arrays["frames"] = frames
                import io

                buf = io.BytesIO()
                np.savez_compressed(buf, **arrays)
                _atomic_write(tmp / "episodes" / f.name, buf.getvalue())
            else:
                shutil.copy2(f, tmp / "episodes" / f.name)
            lengths.append(len(ep.frames))
        for extra in ("rejected.jsonl",):
            if (root / extra).exists():
                shutil.copy2(root / extra, tmp / extra)
        if image_size:
            meta = {**meta, "env_config": {**meta["env_config"], "image_size": image_size}}
        _atomic_write(tmp / "dataset.json", json.dumps(meta, indent=2).encode())
        tmp.rename(out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return {"out": str(out), "source": str(root), "format": "dojo-demos",
            "imported": {"episodes": len(lengths), "frames": sum(lengths), "lengths": lengths}}


# --- export -----------------------------------------------------------------------------------

def export(args: argparse.Namespace) -> dict:
    from core.datasets import lerobot_export as lrx

    if args.data:
        from core.learning.dataset import list_episode_files, read_episode, read_meta

        read_meta(Path(args.data))
        files = list_episode_files(Path(args.data))[: args.limit]
        if not files:
            raise ValueError(f"{args.data}: no episodes to export")
        episodes = (lrx.from_dojo_episode(read_episode(f)) for f in files)
    else:
        from core.datasets import from_db
        from storage import init_db

        db = init_db(args.db)
        ids = from_db.select_episode_ids(db, task_id=args.task, source=args.source, session_id=args.session,
                                         limit=args.limit)
        if not ids:
            raise ValueError("no finished episodes match the filters; nothing to export")
        episodes = from_db.db_episodes(db, ids)
    return lrx.export_lerobot_v3(episodes, args.out, fps=args.fps, robot_type="dojo")


COMMAND = ("datasets in and out: import LeRobot v3.0 (or a Dojo archive), export stored episodes as LeRobot v3.0",
           _options, cmd_data)
