"""Import demonstration archives and export episodes, for the Data page.

Import: a ``.zip`` or ``.tar`` (optionally gzipped) holding one dataset in the format of
``core/learning/dataset.py`` (``dataset.json`` + ``episodes/ep_*.npz`` [+ ``rejected.jsonl``]), at
the archive's root or inside one top-level folder. The upload is hostile input: it is
unpacked member by member to a temporary folder under limits (``ui/archive.py``: streamed in
1 MiB chunks, sizes and the unpacked/compressed ratio counted as they are produced, paths,
links and device files refused), then every file is checked from disk one episode at a time
(``validate_archive``), so memory holds about one episode, never the archive. A bad archive
raises ``ArchiveError`` listing each problem with the file it is in, the folder is removed
and nothing is imported. A good one has its episodes written to the database (source
``demo``) in ONE transaction, and the folder is renamed into ``data/datasets/<name>`` last;
if any step fails the folder is removed and the transaction rolled back.

An archive holding a LeRobot v3.0 dataset instead (``meta/info.json`` at its root or in its
one top folder) is unpacked under the same limits, converted by ``core/datasets/lerobot.py``
(``import_lerobot``: the task's image size and action size, the task's backend), and the
converted folder goes through the same checks and the same all-or-nothing database write.

Export: episodes to a LeRobot v3.0 dataset (``core/datasets/lerobot.py``,
``export_lerobot_v3``: data parquet, mp4 videos, ``meta/info.json``, ``meta/stats.json``,
``meta/tasks.parquet``, ``meta/episodes/``), with ``README.md`` documenting Dojo's extra
columns. Zipped for download.
"""
from __future__ import annotations

import dataclasses
import io
import json
import re
import shutil
import tempfile
import uuid
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

import numpy as np
from sqlalchemy import select
from sqlalchemy.orm import Session

from core.datasets import from_db
from core.datasets import lerobot as lr
from core.datasets import lerobot_export as lrx
from storage import repo
from storage.models import Episode, Step, Task
from ui import archive as limits  # its limits are read at call time (the tests lower them)
from ui.archive import ArchiveError, Extracted, Source, extract, npz_unpacked_size, size

FORMAT = "dojo-demos"  # the same constants as core/learning/dataset.py, which imports torch
VERSION = 1
REQUIRED_KEYS = ("frames", "proprio", "actions", "instruction", "seed", "success")
OPTIONAL_KEYS = ("keypoints", "goal_step")
# dataset.json and each line of rejected.jsonl are parsed whole: a few hundred bytes each in
# practice, and json.loads of a huge file takes many times its size in memory.
MAX_JSON_BYTES = 1 << 20
_EP_RE = re.compile(r"^episodes/ep_[0-9]+\.npz$")


@dataclass
class DemoEpisode:
    """One checked episode file; its arrays stay on disk until the import reads them."""
    file: str  # path in the dataset, e.g. episodes/ep_000000007.npz
    instruction: str
    seed: int
    success: bool
    n_frames: int  # T+1
    goal_step: Optional[int] = None  # frame where the goal is first reached (default: the last)


@dataclass
class ValidArchive:
    meta: dict[str, Any]
    episodes: list[DemoEpisode]
    files: list[str]  # paths in the dataset
    root: Optional[Path] = None  # the unpacked dataset (None once validate_archive removed it)

    @property
    def n_frames(self) -> int:
        return sum(e.n_frames for e in self.episodes)


# --- checking an unpacked dataset -------------------------------------------------------------

def _check_meta(path: Path) -> tuple[dict[str, Any], list[str]]:
    n = path.stat().st_size
    if n > MAX_JSON_BYTES:
        return {}, [f"dataset.json: {size(n)}, over the {size(MAX_JSON_BYTES)} limit; it only describes the "
                    "dataset (format, version, backend, env_config)"]
    try:
        meta = json.loads(path.read_bytes())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        return {}, [f"dataset.json: not valid JSON ({e})"]
    if not isinstance(meta, dict):
        return {}, [f"dataset.json: must be a JSON object, got {type(meta).__name__}"]
    problems = []
    if meta.get("format") != FORMAT:
        problems.append(f"dataset.json: format is {meta.get('format')!r}, expected {FORMAT!r}")
    if meta.get("version") != VERSION:
        problems.append(f"dataset.json: version is {meta.get('version')!r}; this Dojo reads version {VERSION}")
    if not isinstance(meta.get("backend"), str) or not meta.get("backend"):
        problems.append("dataset.json: 'backend' (e.g. \"tabletop\") is missing")
    if "env_config" in meta and not isinstance(meta["env_config"], dict):
        problems.append("dataset.json: 'env_config' must be an object")
    return meta, problems


def _check_rejected(path: Path) -> list[str]:
    with open(path, "rb") as f:
        for i, line in enumerate(iter(lambda: f.readline(MAX_JSON_BYTES + 1), b""), 1):
            if len(line) > MAX_JSON_BYTES:
                return [f"rejected.jsonl line {i}: longer than {size(MAX_JSON_BYTES)}; each line is one small "
                        "JSON record"]
            if line.strip():
                try:
                    json.loads(line)
                except (json.JSONDecodeError, UnicodeDecodeError) as e:
                    return [f"rejected.jsonl line {i}: not JSON ({e})"]
    return []


def _load(path: Path) -> dict[str, np.ndarray]:
    with np.load(path, allow_pickle=False) as z:
        return {k: z[k] for k in z.files}


def _check_episode(name: str, path: Path) -> tuple[Optional[DemoEpisode], list[str]]:
    """Check one episode file; only its metadata is kept, so memory holds one episode at a time."""
    try:
        unpacked, largest = npz_unpacked_size(path)
        if unpacked > limits.MAX_MEMBER_BYTES:
            return None, [f"{name}: its arrays unpack to {size(unpacked)} (largest: {largest}), over the "
                          f"{size(limits.MAX_MEMBER_BYTES)} limit for one episode; split long episodes or lower the "
                          "image size"]
        arrays = _load(path)
    except Exception as e:  # noqa: BLE001 - any unreadable file is reported, never raised
        return None, [f"{name}: not a readable numpy .npz file ({type(e).__name__}: {e})"]
    missing = [k for k in REQUIRED_KEYS if k not in arrays]
    if missing:
        return None, [f"{name}: missing arrays {missing} (an episode needs {list(REQUIRED_KEYS)})"]
    extra = sorted(set(arrays) - set(REQUIRED_KEYS) - set(OPTIONAL_KEYS))
    problems = [f"{name}: unknown arrays {extra}"] if extra else []
    frames, proprio, actions = arrays["frames"], arrays["proprio"], arrays["actions"]
    if frames.dtype != np.uint8 or frames.ndim != 4 or frames.shape[-1] != 3:
        problems.append(f"{name}: frames must be uint8 [T+1, H, W, 3], got {frames.dtype} {list(frames.shape)}")
    if actions.ndim != 2 or not np.issubdtype(actions.dtype, np.floating):
        problems.append(f"{name}: actions must be float [T, A], got {actions.dtype} {list(actions.shape)}")
    elif not np.all(np.isfinite(actions)) or np.abs(actions).max(initial=0.0) > 1.0 + 1e-6:
        problems.append(f"{name}: actions must be finite and within [-1, 1]")
    if proprio.ndim != 2 or not np.issubdtype(proprio.dtype, np.floating):
        problems.append(f"{name}: proprio must be float [T+1, P], got {proprio.dtype} {list(proprio.shape)}")
    if frames.ndim == 4 and actions.ndim == 2:
        if len(frames) != len(actions) + 1:
            problems.append(f"{name}: {len(frames)} frames for {len(actions)} actions; frames must be T+1 "
                            "(the last frame is the goal reached)")
        if proprio.ndim == 2 and len(proprio) != len(frames):
            problems.append(f"{name}: {len(proprio)} proprio rows for {len(frames)} frames; they must match")
        if len(actions) == 0:
            problems.append(f"{name}: an episode needs at least one action")
    if "keypoints" in arrays:
        kp = arrays["keypoints"]
        if kp.ndim != 3 or kp.shape[-1] != 2 or len(kp) != len(frames):
            problems.append(f"{name}: keypoints must be float [T+1, K, 2], got {list(kp.shape)}")
    goal_step = None
    if "goal_step" in arrays:
        g = arrays["goal_step"]
        if g.ndim != 0 or g.dtype.kind not in "iu" or (actions.ndim == 2 and not 0 <= int(g) <= len(actions)):
            problems.append(f"{name}: goal_step must be an integer frame index 0..T (where the goal is first "
                            f"reached), got {g.dtype} {g.tolist() if g.ndim == 0 else list(g.shape)}")
        else:
            goal_step = int(g)
    instr, seed, success = arrays["instruction"], arrays["seed"], arrays["success"]
    if instr.ndim != 0 or instr.dtype.kind != "U" or not str(instr).strip():
        problems.append(f"{name}: instruction must be a non-empty string, got {instr.dtype} {list(instr.shape)}")
    if seed.ndim != 0 or seed.dtype.kind not in "iu":
        problems.append(f"{name}: seed must be an integer scalar, got {seed.dtype} {list(seed.shape)}")
    if success.ndim != 0 or success.dtype != np.bool_:
        problems.append(f"{name}: success must be a bool scalar, got {success.dtype} {list(success.shape)}")
    if problems:
        return None, problems
    return DemoEpisode(file=name, instruction=str(instr), seed=int(seed), success=bool(success),
                       n_frames=len(frames), goal_step=goal_step), []


def _unpack_and_check(source: Source, filename: str, dest: Path) -> ValidArchive:
    """Unpack into ``dest`` (which must not exist) and check every file; on any problem
    ``dest`` is removed and ArchiveError lists them all."""
    return _check_unpacked(extract(source, filename, dest), dest)


def _check_unpacked(ex: Extracted, dest: Path) -> ValidArchive:
    """Check every file of an unpacked dataset (``ex.root``, inside ``dest``); on any problem
    ``dest`` is removed and ArchiveError lists them all."""
    try:
        problems = list(ex.problems)
        members = set(ex.files)
        if "dataset.json" not in members:
            problems.append("dataset.json is missing (expected at the archive's root or in its one top folder); "
                            "a dataset is dataset.json + episodes/ep_<seed>.npz, see core/learning/dataset.py")
            meta: dict[str, Any] = {}
        else:
            meta, p = _check_meta(ex.root / "dataset.json")
            problems += p
        for rel in sorted(members):
            if rel in ("dataset.json", "rejected.jsonl") or _EP_RE.match(rel):
                continue
            problems.append(f"{rel}: not part of the dataset format (allowed: dataset.json, rejected.jsonl, "
                            "episodes/ep_<seed>.npz)")
        if "rejected.jsonl" in members:
            problems += _check_rejected(ex.root / "rejected.jsonl")
        ep_names = sorted(n for n in members if _EP_RE.match(n))
        if not ep_names:
            problems.append("episodes/: no episode files (episodes/ep_<seed>.npz)")
        episodes = []
        seeds: dict[int, str] = {}
        for rel in ep_names:
            ep, p = _check_episode(rel, ex.root / rel)
            problems += p
            if ep is not None:
                if ep.seed in seeds:
                    problems.append(f"{rel}: seed {ep.seed} repeats {seeds[ep.seed]}")
                seeds[ep.seed] = rel
                episodes.append(ep)
        if problems:
            raise ArchiveError(problems)
    except BaseException:
        shutil.rmtree(dest, ignore_errors=True)
        raise
    return ValidArchive(meta=meta, episodes=episodes, files=sorted(members), root=ex.root)


def validate_archive(source: Source, filename: str = "archive", *, tmp_dir: Optional[Path] = None) -> ValidArchive:
    """Unpack (to a temporary folder under ``tmp_dir``, the system's by default) and check
    every member; ArchiveError (listing each problem) if anything is wrong. ``source``: the
    archive's bytes, its path, or a binary file (an upload). The folder is removed after."""
    work = Path(tempfile.mkdtemp(prefix="dojo-validate-", dir=tmp_dir))
    try:
        return dataclasses.replace(_unpack_and_check(source, filename, work / "dataset"), root=None)
    finally:
        shutil.rmtree(work, ignore_errors=True)


# --- importing --------------------------------------------------------------------------------

def jpeg(frame: np.ndarray, quality: int = 85) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(frame).save(buf, format="JPEG", quality=quality)
    return buf.getvalue()


def _safe_name(name: str) -> str:
    stem = re.sub(r"(\.tar\.gz|\.tgz|\.tar|\.zip)$", "", name, flags=re.I)
    stem = re.sub(r"[^A-Za-z0-9_.-]+", "-", stem).strip("-.") or "dataset"
    return stem[:80]


@dataclass
class ImportResult:
    path: Path
    episodes: int
    frames: int
    episode_ids: list[int]
    lerobot: Optional[dict[str, Any]] = None  # import_lerobot's summary, for a LeRobot v3.0 archive


def import_archive(db, source: Source, filename: str, task_id: int, *, actor, datasets_dir: Path) -> ImportResult:
    """Unpack and check, then write episodes and files all-or-nothing (see the module
    docstring). ``source``: the archive's bytes, its path, or a binary file (Streamlit's
    UploadedFile, passed as it is so its bytes are not copied again)."""
    with db.read() as s:
        task = s.get(Task, task_id)
        if task is None:
            raise ArchiveError([f"task {task_id} does not exist"])
        task_backend, task_name, task_config = task.backend, task.name, dict(task.env_config or {})
        task_action_dim = _task_action_dim(s, task_id, task_config)
    # Before the upload is touched: importing training data is a supervisor's action, and
    # unpacking costs the server disk and CPU.
    repo.require_role(actor, "enqueue_job")
    datasets_dir.mkdir(parents=True, exist_ok=True)
    # Unpacked next to its final place, so the last step is a rename on the same disk.
    tmp = datasets_dir / f".import-{uuid.uuid4().hex[:8]}"
    try:
        ex = extract(source, filename, tmp)
        converted = None
        if "meta/info.json" in ex.files:  # a LeRobot dataset: converted first, then checked like any other
            ex, converted = _convert_lerobot(ex, tmp, task_config, task_backend, task_action_dim)
        archive = _check_unpacked(ex, tmp)
        assert archive.root is not None
        if archive.meta.get("backend") != task_backend:
            raise ArchiveError([f"dataset.json: backend {archive.meta.get('backend')!r} does not match task "
                                f"{task_name!r} (backend {task_backend!r}); pick a task of that backend"])
        base = _safe_name(filename)
        final = datasets_dir / base
        n = 1
        while final.exists():
            n += 1
            final = datasets_dir / f"{base}-{n}"
        batch = uuid.uuid4().hex[:8]
        ids = []
        with db.write() as s:
            for ep in archive.episodes:  # one episode's arrays in memory at a time
                arrays = _load(archive.root / ep.file)
                T = len(arrays["actions"])
                goal = T if ep.goal_step is None else ep.goal_step
                steps = repo.steps_from_arrays(d=[float(max(0, goal - t)) for t in range(T + 1)],
                                               actions=list(arrays["actions"].astype(np.float32)) + [None])
                res = repo.finish_episode(
                    s, uid=f"import-{final.name}-{batch}-seed{ep.seed}", task_id=task_id, steps=steps,
                    frames=[jpeg(f) for f in arrays["frames"]], gt_success=ep.success, length=T,
                    source="demo", instruction=ep.instruction, seed=ep.seed,
                    meta={"dataset": str(final), "file": ep.file})
                ids.append(res.episode.id)
                del arrays
            repo.audit(s, actor, "import_dataset", ("dataset", final.name),
                       {"file": filename, "episodes": len(ids), "task_id": task_id, "path": str(final)})
        archive.root.rename(final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    shutil.rmtree(tmp, ignore_errors=True)  # what is left when the dataset was the archive's top folder
    return ImportResult(path=final, episodes=len(ids), frames=archive.n_frames, episode_ids=ids, lerobot=converted)


def _task_action_dim(s: Session, task_id: int, env_config: dict[str, Any]) -> Optional[int]:
    """The task's action size: its config's, else that of an episode already stored for it."""
    if isinstance(env_config.get("action_dim"), int):
        return env_config["action_dim"]
    action = env_config.get("action")
    if isinstance(action, dict) and isinstance(action.get("dim"), int):  # a remote robot's spec
        return action["dim"]
    ids = list(s.scalars(select(Episode.id).where(Episode.task_id == task_id).limit(20)))
    return _action_dim(s, ids) if ids else None


def _convert_lerobot(ex: Extracted, tmp: Path, task_config: dict[str, Any], backend: str,
                     action_dim: Optional[int]) -> tuple[Extracted, dict[str, Any]]:
    """The unpacked LeRobot v3.0 dataset as a Dojo dataset in ``tmp/.dojo`` (the raw files go with
    ``tmp``); its problems as ArchiveError, like any archive's."""
    if ex.problems:  # refused names (links, '..' paths): the archive is refused as a whole
        raise ArchiveError(list(ex.problems))
    out = tmp / ".dojo"
    size_ = task_config.get("image_size")
    try:
        summary = lr.import_lerobot(ex.root, out, image_size=size_ if isinstance(size_, int) else None,
                                    expect_action_dim=action_dim, backend=backend, env_config=task_config)
    except lr.LeRobotError as e:
        raise ArchiveError([f"LeRobot dataset: {e}"]) from None
    except (OSError, ValueError, KeyError, TypeError) as e:  # a corrupt parquet or video file
        raise ArchiveError([f"LeRobot dataset: unreadable ({type(e).__name__}: {e})"]) from None
    files = sorted(p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file())
    return Extracted(root=out, files=files), summary


# --- exporting --------------------------------------------------------------------------------

EXPORT_README = """# Dojo episode export (LeRobot v3.0)

A LeRobot v3.0 dataset (LeRobotDataset loads it; layout and mapping in Dojo's
docs/dataset-format.md, "LeRobot"):
meta/info.json, meta/stats.json, meta/tasks.parquet, meta/episodes/chunk-000/file-000.parquet,
data/chunk-*/file-*.parquet (one row per frame), videos/observation.images.camera/chunk-*/file-*.mp4.
Per-frame columns beyond LeRobot's own (index, episode_index, frame_index, timestamp, task_index,
action, observation.state):
  dojo.d                 float32  d(o_t, g): the model's steps-to-go estimate (NaN: not recorded)
  dojo.reward            float32  reward r_t where recorded (NaN otherwise)
  dojo.detector_fired    bool     the success detector had fired by this frame
  dojo.gt_success        int8     the episode's ground truth (the simulator's): 1, 0, -1 unknown
  dojo.override_success  int8     a supervisor's override of the outcome: 1, 0, -1 none
  dojo.action_valid      bool     false on the last frame (Dojo takes no action there; the column
                                  repeats the previous action so every row has one)
Per-episode columns in meta/episodes: dojo/episode_id, dojo/source, dojo/seed, dojo/checkpoint_id,
dojo/session_id, dojo/detector_success, dojo/label_success (a reviewer's).
"""


def export_lerobot(db, *, task_id: Optional[int] = None, source: Optional[str] = None,
                   session_id: Optional[int] = None, limit: int = 100, fps: int = 10) -> tuple[bytes, dict[str, Any]]:
    """Zip bytes of the newest ``limit`` finished episodes matching the filters as a LeRobot
    v3.0 dataset, and a summary. Episodes are read from the database one at a time."""
    ids = from_db.select_episode_ids(db, task_id=task_id, source=source, session_id=session_id, limit=limit)
    if not ids:
        raise ValueError("no finished episodes match the filters; nothing to export")
    with tempfile.TemporaryDirectory(prefix="dojo-export-") as work:
        root = Path(work) / "lerobot"
        try:
            summary = lrx.export_lerobot_v3(from_db.db_episodes(db, ids), root, fps=fps, robot_type="dojo",
                                           readme=EXPORT_README)
        except lr.LeRobotError as e:
            raise ValueError(f"export failed: {e}") from None
        buf = io.BytesIO()
        with zipfile.ZipFile(buf, "w", zipfile.ZIP_STORED) as zf:  # parquet and mp4 are compressed already
            for p in sorted(root.rglob("*")):
                if p.is_file():
                    zf.write(p, p.relative_to(root).as_posix())
    return buf.getvalue(), {"episodes": summary["episodes"], "frames": summary["frames"], "tasks": summary["tasks"],
                            "format": "lerobot v3.0", "codec": summary["codec"]}


def _action_dim(s: Session, ids: list[int]) -> Optional[int]:
    for a in s.scalars(select(Step.action).where(Step.episode_id.in_(ids[:50])).limit(500)):
        if a is not None:  # JSON null (the last frame's action) is not SQL NULL
            return len(a)
    return None
