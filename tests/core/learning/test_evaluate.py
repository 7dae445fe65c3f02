"""Detector calibration on held-out demonstrations (the steps-to-go model stubbed by fixed d)."""
from __future__ import annotations

import dataclasses
from types import SimpleNamespace

import numpy as np
import pytest

from core.learning import evaluate
from tests.core.learning.helpers import make_episode


@pytest.fixture
def fixed_d(monkeypatch):
    """demo_steps_to_go returns the given d sequences instead of running a model."""
    def use(seqs):
        monkeypatch.setattr(evaluate, "demo_steps_to_go", lambda model, eps: [np.asarray(d, np.float32) for d in seqs])
    return use


MODEL = SimpleNamespace(config=SimpleNamespace(stg_cap=60))


def test_a_demo_that_holds_the_goal_counts_its_goal_frames_as_positives(fixed_d):
    held = dataclasses.replace(make_episode(seed=1, T=5, size=16), goal_step=3)  # labels 3 2 1 0 0 0
    plain = make_episode(seed=2, T=5, size=16)  # labels 5 4 3 2 1 0
    fixed_d([[3.0, 2.0, 1.0, 0.0, 0.0, 0.0], [5.0, 4.0, 3.0, 2.0, 1.0, 0.0]])
    out = evaluate.calibrate_on_demos(MODEL, [held, plain], patience=1, tolerance=0)
    assert out["stg_mae_steps"] == 0.0
    assert out["threshold_s"] <= 0.75 and out["demo_precision"] == 1.0 and out["demo_recall"] == 1.0
    assert out["d_final_mean"] == 0.0  # the 3 held goal frames and the plain demo's last frame
    assert out["d_other_mean"] == pytest.approx(np.mean([3, 2, 1, 5, 4, 3, 2, 1]))


def test_without_goal_step_only_the_last_frame_is_the_goal(fixed_d):
    plain = make_episode(seed=2, T=5, size=16)
    # d reaches 0.5 one frame early: with the goal at the last frame that is a false positive at s = 1
    fixed_d([[5.0, 4.0, 3.0, 2.0, 0.5, 0.0]])
    out = evaluate.calibrate_on_demos(MODEL, [plain], patience=1, tolerance=0)
    assert out["threshold_s"] < 0.5 and out["d_final_mean"] == 0.0
