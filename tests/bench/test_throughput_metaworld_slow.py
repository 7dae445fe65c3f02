"""The throughput and Meta-World benches end to end (minutes): `./scripts/test.sh -m slow`."""
from __future__ import annotations

import pytest


def _last_line(capsys) -> str:
    return capsys.readouterr().out.strip().splitlines()[-1]


@pytest.mark.slow
def test_throughput_bench_reports_ratio_and_latency(capsys):
    from bench.throughput import main

    result = main(["--episodes", "4", "--bare-steps", "200", "--skip-updates", "--threads", "1,2"])
    assert _last_line(capsys).startswith("RESULT {")
    for key in ("practice_steps_per_s", "bare_steps_per_s", "ratio", "latency_p50_ms", "latency_p99_ms"):
        assert result[key] > 0, key
    assert result["ratio"] == pytest.approx(result["practice_steps_per_s"] / result["bare_steps_per_s"])
    assert result["latency_p50_ms"] <= result["latency_p99_ms"]
    # each learner thread setting was timed; the headline is the best of them
    assert set(result["practice_steps_per_s_by_threads"]) == {1, 2}
    assert result["practice_steps_per_s"] == max(result["practice_steps_per_s_by_threads"].values())
    assert result["practice_steps_per_s_by_threads"][result["threads"]] == result["practice_steps_per_s"]


def test_throughput_bench_refuses_a_bad_thread_setting(capsys):
    from bench.throughput import main

    for bad in ("two", "0,1"):
        with pytest.raises(SystemExit):
            main(["--threads", bad])
        assert "--threads" in capsys.readouterr().err


@pytest.mark.slow
def test_metaworld_bench_on_one_task_reports_bc_si_and_the_detector(tmp_path, capsys):
    from bench.metaworld import main

    result = main(["--tasks", "reach-v3", "--demos-per-task", "6", "--epochs", "1", "--eval-per-task", "4",
                   "--practice-episodes", "4", "--fleet", "2", "--image-size", "32", "--root", str(tmp_path),
                   "--refine", "4"])
    assert _last_line(capsys).startswith("RESULT {")
    row = result["per_task"]["reach-v3"]
    for key in ("bc", "si"):
        assert 0.0 <= row[key] <= 1.0
    assert result["si_episodes"] >= 4
    lo, hi = result["si_gain_ci_points"]  # BC and SI on the same test seeds: a paired interval
    assert lo <= result["si_gain_points"] <= hi and 0.0 <= result["si_gain_p"] <= 1.0
    assert 0.0 <= result["detector_precision"] <= 1.0 and 0.0 <= result["detector_recall"] <= 1.0
    assert result["labels_used"] == 4 and 0.0 <= result["detector_unrefined"]["precision"] <= 1.0
    assert set(result["phase_minutes"]) == {"demos", "stage1", "test_evaluation", "practice"}
    assert result["practice_split_minutes"]["rollouts"] > 0 and result["mesh_cell"] == 0.01
    assert result["goal_observable"] is True  # the full plan's, kept with another task list
    assert (tmp_path / "demos-reach-v3-32px-goal-mesh0.01").is_dir()

    # the refinement's A/B bench on that Stage-1 run
    from bench.detector_refine import main as detector_refine

    sft = next(tmp_path.glob("runs/*/sft"))
    ab = detector_refine(["--run", str(sft), "--labels", "4", "--check", "4", "--steps", "2", "--fleet", "2"])
    assert _last_line(capsys).startswith("RESULT {")
    assert ab["labels"] == 4 and ab["check_episodes"] == 4
    for arm in ("unrefined", "refined_frozen_vision", "refined_trained_vision"):
        assert 0.0 <= ab[arm]["precision"] <= 1.0 and "reach-v3" in ab[arm]["per_task"], arm

    # the oracle ablation on the same Stage 1: ground truth rewards and ends practice episodes
    import json

    oracle = main(["--tasks", "reach-v3", "--demos-per-task", "6", "--epochs", "1", "--eval-per-task", "4",
                   "--practice-episodes", "4", "--fleet", "2", "--image-size", "32", "--root", str(tmp_path),
                   "--refine", "0", "--ground-truth-reward"])
    assert oracle["reward"].startswith("ground_truth") and result["reward"] == "steps_to_go"
    si_dir = next(tmp_path.glob("runs/*/si-oracle*"))
    rows = [json.loads(x) for x in (si_dir / "metrics.jsonl").read_text().splitlines()]
    practised = [r for r in rows if r["iteration"] > 0]
    assert practised and all(r["detector_fires"] == 0 for r in practised)  # the detector ends nothing
    for r in practised:  # the return is 1 per episode that reached ground-truth success, 0 otherwise
        assert r["mean_return"] == pytest.approx(r["ground_truth_success"])
