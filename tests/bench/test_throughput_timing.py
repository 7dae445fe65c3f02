"""bench.throughput's bare simulator speed times steps only: building, resetting and closing
the simulator are outside the timed region, as practice's fleet start-up is (fast: a fake env)."""
from __future__ import annotations

import time

import numpy as np

SETUP_S = 0.2


class SlowToStartEnv:
    """Building, the first reset and closing take SETUP_S each; a step takes nothing."""

    action_dim = 2

    def __init__(self):
        time.sleep(SETUP_S)
        self.resets = 0

    def reset(self, *, seed=None, options=None):
        if self.resets == 0:
            time.sleep(SETUP_S)
        self.resets += 1
        return {}, {}

    def step(self, action):
        assert np.asarray(action).shape == (2,)
        return {}, 0.0, False, False, {}

    def close(self):
        time.sleep(SETUP_S)


def test_bare_speed_leaves_out_building_resetting_and_closing_the_simulator(monkeypatch):
    import torch

    import sim_backends.registry
    from bench.throughput import _bare_worker

    monkeypatch.setattr(sim_backends.registry, "make_env", lambda backend, config=None: SlowToStartEnv())
    threads = torch.get_num_threads()
    try:
        rate = _bare_worker(("tabletop", {}, 200, 0)) / 1000  # steps/s
    finally:
        torch.set_num_threads(threads)
    # with the set-up timed, 200 steps would take >= 0.6 s: <= ~330 steps/s
    assert rate > 20 * 200 / (3 * SETUP_S), rate
