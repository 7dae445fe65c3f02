"""Generate scripted-expert demonstrations into a dataset directory (resumable).

Seeds are tried in order from ``seed0``; a successful expert episode is written as
``episodes/ep_<seed>.npz``, a failed one is listed in ``rejected.jsonl``. Re-running
the same command skips every seed already decided, so an interrupted run resumes and
the final dataset is the same: the first N seeds on which the expert succeeded.
"""
from __future__ import annotations

import json
import multiprocessing as mp
import os
import re
import shutil
import sys
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np

from core.learning.dataset import (DatasetError, Episode, episode_path, list_episode_files, read_meta,
                          write_episode, write_meta)

_WORKER_ENV: dict[str, Any] = {}


def _expert_rng(seed: int) -> np.random.Generator:
    return np.random.default_rng([seed, 0xD0_70])


def _run_seed(args: tuple[str, dict[str, Any], int, str]) -> tuple[int, bool, int]:
    """Worker: one expert episode for ``seed``; writes the file on success."""
    from sim_backends.registry import expert_episode, make_env

    backend, env_config, seed, root = args
    key = json.dumps([backend, env_config], sort_keys=True)
    if key not in _WORKER_ENV:
        _WORKER_ENV.clear()
        _WORKER_ENV[key] = make_env(backend, env_config)
    env = _WORKER_ENV[key]
    res = expert_episode(backend, env, seed, _expert_rng(seed))
    if res["success"]:
        write_episode(Path(root), Episode(
            frames=np.stack(res["images"]).astype(np.uint8),
            proprio=np.stack(res["proprio"]).astype(np.float32),
            actions=np.stack(res["actions"]).astype(np.float32),
            instruction=res["instruction"], seed=seed, success=True,
            keypoints=np.stack(res["keypoints"]).astype(np.float32) if res.get("keypoints") else None,
            goal_step=res.get("goal_step")))
    return seed, bool(res["success"]), int(res["length"])


def decided_seeds(root: Path) -> tuple[set[int], set[int]]:
    """Seeds with a written episode, and seeds the expert failed on."""
    ok = {int(m.group(1)) for p in list_episode_files(root)
          if (m := re.match(r"ep_(\d+)\.npz$", p.name))}
    rejected: set[int] = set()
    rej = Path(root) / "rejected.jsonl"
    if rej.exists():
        for line in rej.read_text().splitlines():
            try:
                rejected.add(int(json.loads(line)["seed"]))
            except (ValueError, KeyError, TypeError):
                continue  # a line cut short by a crash: that seed is simply tried again
    return ok, rejected


def _task_name(backend: str, env_config: dict[str, Any]) -> str:
    """How errors name the task: tabletop:block2block, metaworld:push-v3, gym, ..."""
    sub = env_config.get("family", "block2block") if backend == "tabletop" else env_config.get("task")
    return f"{backend}:{sub}" if sub else backend


def _check_request(root: Path, n: int, backend: str, env_config: dict[str, Any], seed0: int,
                   workers: int) -> dict[str, Any] | None:
    """Refuse a request that cannot make a dataset, before anything is created or written;
    returns the existing dataset's metadata when ``root`` is one to resume (None: a new one).
    The environment is built here to validate the config; it is kept for ``_run_seed`` in
    this process (workers=1), so the check costs nothing extra there."""
    from sim_backends.registry import EXPERTS, make_env

    if not isinstance(n, int) or n < 1:
        raise DatasetError(f"n (--n, the successful episodes wanted) must be at least 1, got {n!r}")
    if not isinstance(seed0, int) or seed0 < 0:
        # episode files are named ep_<seed>.npz and found again by \d+: a negative seed would not resume
        raise DatasetError(f"seed0 (--seed0) must be 0 or more, got {seed0!r}")
    if not isinstance(workers, int) or workers < 1:
        raise DatasetError(f"workers (--workers) must be at least 1, got {workers!r}")
    if backend not in EXPERTS:
        raise DatasetError(f"backend {backend!r} has no scripted expert to make demonstrations; "
                           f"use one of {sorted(EXPERTS)} (--backend)")
    if root.exists() and not root.is_dir():
        raise DatasetError(f"--out {root} is a file, not a dataset folder; choose another --out")
    existing = (root / "dataset.json").exists()
    if not existing and root.is_dir() and any(root.iterdir()):
        raise DatasetError(f"--out {root} already exists and is not a Dojo dataset (no dataset.json); "
                           "choose a new folder (demos creates it) or an empty one")
    # A new dataset is made beside ``root`` and renamed into place: its parent must be writable.
    where = root if existing else next(p for p in root.parents if p.exists())
    if not where.is_dir() or not os.access(where, os.W_OK | os.X_OK):
        raise DatasetError(f"cannot write the dataset {root}: {where} is not a folder this user may write in; "
                           "choose another --out")
    # The config first: an invalid one is the problem whatever --out holds.
    try:
        env = make_env(backend, env_config)
    except (ValueError, ImportError) as e:
        raise DatasetError(f"invalid task {_task_name(backend, env_config)}: {e}. Fix --env-config "
                           "(or --family / --task / --image-size); nothing was written") from e
    _close_envs()
    _WORKER_ENV[json.dumps([backend, env_config], sort_keys=True)] = env
    if not existing:
        return None
    meta = read_meta(root)
    if meta["backend"] != backend or meta["env_config"] != env_config or meta.get("seed0") != seed0:
        raise DatasetError(
            f"{root} already holds a dataset made with backend={meta['backend']!r}, "
            f"env_config={meta['env_config']}, seed0={meta.get('seed0')}; these options differ "
            f"(backend={backend!r}, env_config={env_config}, seed0={seed0}). Use another --out, "
            "or the same options to resume it.")
    return meta


def _made_parents(path: Path) -> list[Path]:
    """Create ``path``'s missing parent folders; returns those it created, deepest first."""
    made = [p for p in path.parents if not p.exists()]
    path.parent.mkdir(parents=True, exist_ok=True)
    return made


def generate_demos(out: str | Path, n: int, backend: str = "tabletop",
                   env_config: dict[str, Any] | None = None, seed0: int = 0, workers: int = 1,
                   progress: bool = True, callback: Callable[[dict[str, Any]], bool | None] | None = None
                   ) -> dict[str, Any]:
    """Make sure ``out`` holds at least ``n`` successful expert episodes; returns a summary.

    Every option is checked before anything is written. An existing dataset is resumed in
    place (episode files are written whole and never rewritten, so a failure there leaves the
    dataset as it was plus whole new episodes). A new one is made in ``<out>.partial-<pid>``
    and renamed to ``out`` at the end, so ``out`` never holds a dataset that is being made."""
    root = Path(out)
    env_config = dict(env_config or {})
    try:
        resume = _check_request(root, n, backend, env_config, seed0, workers) is not None
    except BaseException:
        _close_envs()
        raise
    if resume:
        return _generate(root, root, n, backend, env_config, seed0, workers, progress, callback)
    made = _made_parents(root)
    full = Path(os.path.abspath(root))  # "." and "x/.." have a name to put the suffix on
    partial = full.with_name(f"{full.name}.partial-{os.getpid()}")
    try:
        partial.mkdir()
    except FileExistsError:
        _close_envs()
        raise DatasetError(f"{partial} exists (left by a killed run with this process id); delete it, or "
                           "rename it to the --out path to resume it") from None
    try:
        write_meta(partial, {"backend": backend, "env_config": env_config, "seed0": seed0,
                             "created": time.strftime("%Y-%m-%dT%H:%M:%S")})
        summary = _generate(partial, root, n, backend, env_config, seed0, workers, progress, callback)
    except BaseException:
        # Failed or interrupted: whole episodes are worth keeping (minutes of expert time, and
        # the same command resumes them), so they are published as the dataset; with none
        # there is nothing worth keeping, and the folders this call made go.
        _publish_or_remove(partial, root, made, quiet=True)
        raise
    _publish_or_remove(partial, root, made)  # stopped by the callback before any episode: removed
    return summary


def _publish_or_remove(partial: Path, root: Path, made: list[Path], quiet: bool = False) -> None:
    """Rename ``partial`` to ``root`` (an empty ``root`` is replaced) if it holds an episode,
    else delete it and the empty parent folders ``made`` for it. ``quiet``: report a failed
    rename on stderr instead of raising (an error is already on its way)."""
    if not list_episode_files(partial):
        shutil.rmtree(partial, ignore_errors=True)
        for p in made:
            try:
                p.rmdir()
            except OSError:
                break  # something else was put there meanwhile: not ours to remove
        return
    try:
        os.replace(partial, root)
    except OSError as e:
        msg = (f"{root} appeared while the dataset was being made ({e}); the new episodes are in "
               f"{partial}: move them or use another --out")
        if not quiet:
            raise DatasetError(msg) from e
        print(f"demos: {msg}", file=sys.stderr)


def _close_envs() -> None:
    for env in _WORKER_ENV.values():
        env.close()
    _WORKER_ENV.clear()


def _generate(root: Path, final: Path, n: int, backend: str, env_config: dict[str, Any], seed0: int,
              workers: int, progress: bool, callback: Callable[[dict[str, Any]], bool | None] | None
              ) -> dict[str, Any]:
    """Run the expert on undecided seeds from ``seed0`` until ``root`` holds ``n`` episodes
    (the summary names ``final``, where the dataset will be)."""
    from tqdm import tqdm

    (root / "episodes").mkdir(exist_ok=True)
    ok, rejected = decided_seeds(root)
    t0 = time.perf_counter()
    bar = tqdm(total=n, initial=min(n, len(ok)), desc=f"demos -> {final}", disable=not progress)
    lengths: list[int] = []
    next_seed = seed0
    pool = None
    stopped = False
    try:
        if workers > 1 and len(ok) < n:
            _close_envs()  # the check's environment: the pool's processes build their own
            pool = mp.get_context("spawn").Pool(workers)
        while len(ok) < n and not stopped:
            todo: list[int] = []
            while len(todo) < n - len(ok):
                if next_seed not in ok and next_seed not in rejected:
                    todo.append(next_seed)
                next_seed += 1
            jobs = [(backend, env_config, s, str(root)) for s in todo]
            results = pool.imap(_run_seed, jobs) if pool else map(_run_seed, jobs)
            for seed, success, length in results:
                if success:
                    ok.add(seed)
                    lengths.append(length)
                    bar.update(1)
                else:
                    rejected.add(seed)
                    with open(root / "rejected.jsonl", "a") as f:
                        f.write(json.dumps({"seed": seed, "length": length}) + "\n")
                if callback is not None and callback({"done": len(ok), "total": n}) is False:
                    stopped = True
                    break
    finally:
        bar.close()
        if pool is not None:
            pool.terminate()
            pool.join()
        _close_envs()
    tried = len(ok) + len(rejected)
    return {"dataset": str(final), "episodes": len(ok), "rejected": len(rejected),
            "expert_success_rate": len(ok) / max(1, tried), "seconds": time.perf_counter() - t0,
            "mean_length_new": float(np.mean(lengths)) if lengths else None}


def seeds_in(root: Path) -> list[int]:
    return sorted(decided_seeds(root)[0])


__all__ = ["generate_demos", "decided_seeds", "episode_path", "seeds_in"]
