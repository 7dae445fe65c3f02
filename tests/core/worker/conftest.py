"""Worker fixtures: a tiny Stage-1 checkpoint made by the worker itself (a demos job, then an
sft job; ~10 s), and the params of a tiny practice job (2 simulated robots, 32 px, 30 steps)."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pytest

from storage import init_db, repo

TINY_ENV = {"family": "block2block", "image_size": 32, "max_steps": 30}


@dataclass
class Stage1:
    root: Path
    policy: Path
    reward: Path
    db_url: str


@pytest.fixture(scope="session")
def stage1(tmp_path_factory) -> Stage1:
    from core.worker.runner import Worker

    root = tmp_path_factory.mktemp("worker-stage1")
    db = init_db(root / "stage1.sqlite")
    with db.write() as s:
        d = repo.enqueue_job(s, "demos", {"n": 6, "workers": 1, "out": str(root / "demos"),
                                          "env_config": {"family": "block2block", "image_size": 32}})
        repo.enqueue_job(s, "sft", {"demos_job": d.id, "out": str(root / "sft"), "epochs": 1, "batch_size": 32,
                                    "eval_episodes": 0, "threads": 1, "device": "cpu",
                                    "policy": {"d_model": 32, "n_layers": 1}})
    assert Worker(db, name="stage1", data_dir=root).run(exit_when_idle=True) == 2
    with db.read() as s:
        jobs = {j.kind: j for j in repo.list_jobs(s)}
    assert jobs["demos"].status == "done", jobs["demos"].error
    assert jobs["sft"].status == "done", jobs["sft"].error
    out = Stage1(root, root / "sft" / "best_policy.pt", root / "sft" / "best_stg.pt", str(root / "stage1.sqlite"))
    db.dispose()
    return out


def practice_params(stage1: Stage1, **kw) -> dict:
    """A practice job that finishes in seconds: 2 in-process robots, 32 tuples per iteration."""
    p = dict(policy_checkpoint=str(stage1.policy), reward_checkpoint=str(stage1.reward),
             env_config=dict(TINY_ENV), fleet={"kind": "local", "size": 2}, tuples_per_iteration=32,
             minibatch=16, check_episodes=0, eval_every=1, eval_episodes=2, max_episodes=4, plateau_evals=10,
             threshold_s=1.0, lr=1e-4)
    p.update(kw)
    return p
