"""bench/practice_probe.py starts where bench.self_improvement --quick leaves its BC 10 %
checkpoint, and collects its buffer as practice does: episodes end by the detector (practice's
s and patience), never by ground truth. Nothing is trained or simulated here."""
from __future__ import annotations

import pytest

from bench import practice_probe


class _Stop(Exception):
    pass


def test_the_default_run_is_where_the_quick_self_improvement_bench_trains_bc_10(monkeypatch):
    import core.learning.demos
    import core.learning.sft
    from bench import self_improvement

    trained: list[str] = []

    def train_sft(cfg, **_kw):
        trained.append(cfg.out)
        raise _Stop

    monkeypatch.setattr(core.learning.demos, "generate_demos", lambda *a, **k: None)
    monkeypatch.setattr(core.learning.sft, "train_sft", train_sft)
    with pytest.raises(_Stop):
        self_improvement.main(["--quick"])  # its first run: BC on 10 % of the pool, seed 0
    assert trained == [practice_probe.DEFAULT_RUN]
    args = practice_probe.build_parser().parse_args([])
    assert args.policy == f"{trained[0]}/best_policy.pt" and args.reward == f"{trained[0]}/best_stg.pt"


def test_the_buffer_is_collected_with_practice_detector_and_not_ground_truth(monkeypatch):
    import core.learning.checkpoint
    import core.learning.fleets
    import core.learning.rollout
    from core.learning.practice import PracticeConfig
    from core.method.detector import DetectorSpec

    class Model:
        def requires_grad_(self, flag):
            return self

    rmeta = {"backend": "tabletop", "env_config": {"family": "block2block"}, "threshold_s": 0.7,
             "patience": PracticeConfig.patience}
    models = {"p.pt": (Model(), {}), "r.pt": (Model(), rmeta)}
    monkeypatch.setattr(core.learning.checkpoint, "load_checkpoint", lambda path, *a, **k: models[path])
    fleets: list = []

    class Fleet:
        def __init__(self, backend, env_config, k):
            self.env_config, self.closed = env_config, False
            fleets.append(self)

        def close(self):
            self.closed = True

    calls: list[dict] = []

    def run_episodes(policy, make_env, seeds, **kw):
        calls.append(kw)
        raise _Stop

    monkeypatch.setattr(core.learning.fleets, "ProcessFleet", Fleet)
    monkeypatch.setattr(core.learning.rollout, "run_episodes", run_episodes)
    with pytest.raises(_Stop):
        practice_probe.main(["--policy", "p.pt", "--reward", "r.pt", "--episodes", "4", "--fleet", "2"])
    kw = calls[0]
    assert kw.get("stop_on_ground_truth", True) is False and kw["greedy"] is False
    assert kw["detector"] == DetectorSpec(0.7, PracticeConfig.patience)  # the reward model's s, practice's patience
    assert fleets[0].env_config["terminate_on_success"] is False and fleets[0].closed
