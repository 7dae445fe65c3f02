"""Stage-1 training (core.learning.sft.train_sft) on a tiny synthetic dataset, without rollouts."""
from __future__ import annotations

import json

from core.learning.checkpoint import read_checkpoint
from core.learning.dataset import write_episode, write_meta
from core.learning.sft import SFTConfig, train_sft
from tests.core.learning.helpers import INSTRUCTIONS, make_episode, tiny_config


def _dataset(root, n: int = 5):
    write_meta(root, {"backend": "tabletop", "env_config": {"image_size": 32}, "seed0": 0, "created": "x"})
    for seed in range(n):
        write_episode(root, make_episode(seed=seed, T=4, size=32, instruction=INSTRUCTIONS[seed % 2]))
    return root


def test_a_callback_stop_keeps_the_last_weights_and_a_resume_goes_on_from_there(tmp_path):
    data, out = _dataset(tmp_path / "ds"), tmp_path / "run"
    cfg = SFTConfig(data=str(data), out=str(out), epochs=3, batch_size=4, eval_every=0, threads=1, device="cpu",
                    policy=tiny_config())
    events = []
    res = train_sft(cfg, progress=False, callback=lambda e: events.append(e) or False)  # stop after epoch 1
    assert [e["event"] for e in events] == ["epoch"] and events[0]["epoch"] == 1
    assert set(res) == {"run_dir", "best_stg", "best_policy", "train_seconds", "best_select_success", "last",
                        "calibration"}
    assert res["last"]["epoch"] == 1 and res["best_select_success"] == -1.0  # never evaluated
    assert read_checkpoint(out / "best_policy.pt")["meta"]["selected_by"] == "last"
    assert read_checkpoint(out / "last.pt")["meta"]["train_state"]["epoch"] == 1
    run = json.loads((out / "run.json").read_text())
    assert run["train_episodes"] + run["val_episodes"] == 5

    res = train_sft(cfg, progress=False)  # resumes at epoch 2
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in rows] == [1, 2, 3]
    assert res["last"]["epoch"] == 3 and read_checkpoint(out / "last.pt")["meta"]["train_state"]["epoch"] == 3
    assert res["calibration"] and "threshold_s" in res["calibration"]
