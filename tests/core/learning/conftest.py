"""Fixtures of the practice tests: a tiny Stage-1 run made once per session with the CLI (~10 s)."""
from __future__ import annotations

import pytest

from core.cli import main
from core.learning.practice import PracticeConfig


@pytest.fixture(scope="session")
def stage1(tmp_path_factory):
    root = tmp_path_factory.mktemp("si")
    data, out = root / "demos", root / "sft"
    assert main(["demos", "--out", str(data), "--n", "6", "--workers", "1", "--image-size", "32", "--quiet"]) == 0
    assert main(["sft", "--data", str(data), "--out", str(out), "--epochs", "1", "--d-model", "32",
                 "--n-layers", "1", "--eval-episodes", "0", "--batch-size", "32", "--threads", "1",
                 "--device", "cpu", "--quiet"]) == 0
    return out


def practice_cfg(stage1, out, **kw):
    """A practice run that ends in seconds: 2 in-process robots, 32 tuples an iteration."""
    base = dict(policy_checkpoint=str(stage1 / "best_policy.pt"), reward_checkpoint=str(stage1 / "best_stg.pt"),
                out=str(out), fleet_size=2, fleet_kind="local", tuples_per_iteration=32, minibatch=16,
                check_episodes=3, min_precision=0.0, min_recall=0.0, eval_every=1, eval_episodes=2,
                max_episodes=2, plateau_evals=10, threshold_s=1.0, lr=1e-4)
    base.update(kw)
    return PracticeConfig(**base)
