"""Generate scripted-expert demonstrations into a dataset directory (resumable).

Seeds are tried in order from ``seed0``; a successful expert episode is written as
``episodes/ep_<seed>.npz``, a failed one is listed in ``rejected.jsonl``. Re-running
the same command skips every seed already decided, so an interrupted run resumes and
the final dataset is the same: the first N seeds on which the expert succeeded.
"""
from __future__ import annotations

import json
import multiprocessing as mp
import re
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


def generate_demos(out: str | Path, n: int, backend: str = "tabletop",
                   env_config: dict[str, Any] | None = None, seed0: int = 0, workers: int = 1,
                   progress: bool = True, callback: Callable[[dict[str, Any]], bool | None] | None = None
                   ) -> dict[str, Any]:
    """Make sure ``out`` holds at least ``n`` successful expert episodes; returns a summary."""
    from tqdm import tqdm

    root = Path(out)
    env_config = dict(env_config or {})
    if (root / "dataset.json").exists():
        meta = read_meta(root)
        if meta["backend"] != backend or meta["env_config"] != env_config or meta.get("seed0") != seed0:
            raise DatasetError(
                f"{root} already holds a dataset made with backend={meta['backend']!r}, "
                f"env_config={meta['env_config']}, seed0={meta.get('seed0')}; these options differ "
                f"(backend={backend!r}, env_config={env_config}, seed0={seed0}). Use another --out, "
                "or the same options to resume it.")
    else:
        root.mkdir(parents=True, exist_ok=True)
        write_meta(root, {"backend": backend, "env_config": env_config, "seed0": seed0,
                          "created": time.strftime("%Y-%m-%dT%H:%M:%S")})
    (root / "episodes").mkdir(exist_ok=True)
    ok, rejected = decided_seeds(root)
    t0 = time.perf_counter()
    bar = tqdm(total=n, initial=min(n, len(ok)), desc=f"demos -> {root}", disable=not progress)
    lengths: list[int] = []
    next_seed = seed0
    pool = mp.get_context("spawn").Pool(workers) if workers > 1 else None
    stopped = False
    try:
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
        for env in _WORKER_ENV.values():
            env.close()
        _WORKER_ENV.clear()
    tried = len(ok) + len(rejected)
    return {"dataset": str(root), "episodes": len(ok), "rejected": len(rejected),
            "expert_success_rate": len(ok) / max(1, tried), "seconds": time.perf_counter() - t0,
            "mean_length_new": float(np.mean(lengths)) if lengths else None}


def seeds_in(root: Path) -> list[int]:
    return sorted(decided_seeds(root)[0])


__all__ = ["generate_demos", "decided_seeds", "episode_path", "seeds_in"]
