"""bench.self_improvement end to end on a tiny plan (~3.5 min): `./scripts/test.sh -m slow`."""
from __future__ import annotations

import json

import pytest


@pytest.mark.slow
def test_self_improvement_bench_reports_every_arm_and_the_paired_gain(tmp_path, capsys):
    from bench.self_improvement import main

    result = main(["--quick", "--pool", "20", "--seeds", "1", "--eval-episodes", "6", "--practice-episodes", "4",
                   "--bc-fractions", "0.1,0.2", "--skip-bc80", "--skip-novel", "--fleet", "2", "--workers", "1", "--root", str(tmp_path)])
    last = capsys.readouterr().out.strip().splitlines()[-1]
    assert last.startswith("RESULT {") and json.loads(last[len("RESULT "):])["pool"] == 20
    for key in ("bc_10", "bc_20", "si_10"):
        lo, hi = result[f"{key}_ci"]
        assert 0.0 <= lo <= result[key] <= hi <= 1.0, key
    assert result["si_episodes"][0] >= 4 and result["seeds"] == 1 and result["minutes"] > 0
    # SI is paired with its starting checkpoint (BC 10 %) on the same test seeds.
    assert result["si_gain_vs_bc_10"] == pytest.approx(result["si_10"] - result["bc_10"])
    lo, hi = result["si_gain_vs_bc_10_ci"]
    assert lo <= result["si_gain_vs_bc_10"] <= hi and 0.0 <= result["si_gain_vs_bc_10_p"] <= 1.0
    assert result["bc_80"] is None and result["bc_fractions"] == [0.1, 0.2] and result["practice_lr"] == 3e-5
    assert (tmp_path / "self_improvement.png").stat().st_size > 1000
    # where the time went: every phase that ran, and practice's own split
    assert {"demos", "stage1_bc_10", "stage1_bc_20", "practice", "test_evaluation"} <= set(result["phase_minutes"])
    assert result["practice_split_minutes"]["rollouts"] > 0
    assert sorted(p.name for p in tmp_path.glob("sft-*")) == ["sft-10-kptokens-e8-s0", "sft-20-kptokens-e6-s0"]
    assert json.loads((tmp_path / "result.json").read_text())["si_10"] == result["si_10"]
