"""The throughput and Meta-World benches end to end (minutes): `./scripts/test.sh -m slow`."""
from __future__ import annotations

import pytest


def _last_line(capsys) -> str:
    return capsys.readouterr().out.strip().splitlines()[-1]


@pytest.mark.slow
def test_throughput_bench_reports_ratio_and_latency(capsys):
    from bench.throughput import main

    result = main(["--episodes", "4", "--bare-steps", "200", "--skip-updates"])
    assert _last_line(capsys).startswith("RESULT {")
    for key in ("practice_steps_per_s", "bare_steps_per_s", "ratio", "latency_p50_ms", "latency_p99_ms"):
        assert result[key] > 0, key
    assert result["ratio"] == pytest.approx(result["practice_steps_per_s"] / result["bare_steps_per_s"])
    assert result["latency_p50_ms"] <= result["latency_p99_ms"]


@pytest.mark.slow
def test_metaworld_bench_on_one_task_reports_bc_si_and_the_detector(tmp_path, capsys):
    from bench.metaworld import main

    result = main(["--tasks", "reach-v3", "--demos-per-task", "6", "--epochs", "1", "--eval-per-task", "4",
                   "--practice-episodes", "4", "--fleet", "2", "--image-size", "32", "--root", str(tmp_path)])
    assert _last_line(capsys).startswith("RESULT {")
    row = result["per_task"]["reach-v3"]
    for key in ("bc", "si"):
        assert 0.0 <= row[key] <= 1.0
    assert result["si_episodes"] >= 4
    assert 0.0 <= result["detector_precision"] <= 1.0 and 0.0 <= result["detector_recall"] <= 1.0
