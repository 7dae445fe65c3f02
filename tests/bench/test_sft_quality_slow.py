"""The --quick Stage-1 bench end to end (minutes): run with `./scripts/test.sh -m slow`."""
from __future__ import annotations

import math

import pytest


@pytest.mark.slow
def test_quick_sft_quality_bench_reports_every_figure(tmp_path, capsys):
    from bench.sft_quality import main

    result = main(["--quick", "--root", str(tmp_path)])
    last = capsys.readouterr().out.strip().splitlines()[-1]
    assert last.startswith("RESULT {")
    for key in ("bc_success", "bc_success_ci", "stg_mae_steps", "detector_precision",
                "detector_recall", "threshold_s", "demos", "train_seconds", "eval_seconds"):
        assert key in result, key
    lo, hi = result["bc_success_ci"]
    assert 0.0 <= lo <= result["bc_success"] <= hi <= 1.0
    assert result["eval_episodes"] >= 200
    assert math.isfinite(result["stg_mae_steps"]) and result["stg_mae_steps"] >= 0
    assert result["minutes"] < 8.0, "the quick bench must fit in 8 minutes on 2 cores"
