"""bench.self_improvement's plans and arguments (fast: nothing is trained)."""
from __future__ import annotations

import pytest

from bench import self_improvement as si


def test_quick_plan_is_bc10_plus_practice_and_full_has_every_arm():
    assert si.QUICK["fractions"] == (0.1,) and si.FULL["fractions"] == si.FRACTIONS
    # the full run keeps the paper's budget: >= 3 training seeds, >= 300 test episodes a point
    assert si.FULL["seeds"] >= 3 and si.FULL["eval_episodes"] >= 300
    for plan in (si.QUICK, si.FULL):
        assert plan["novel_nouns"] in ("generic", "household") and plan["novel_single_demos"] > 0
    # si_episodes must stay below the 70 % of the pool that BC 80 % takes on top of BC 10 %
    assert si.FULL["practice_episodes"] < 0.7 * si.FULL["pool"]
    # one recipe: the quick run's seed-0 arms are the full run's (same run directories)
    for key in ("epochs", "fleet", "check_episodes", "si_eval_every", "select_episodes", "lr"):
        assert si.FULL[key] == si.QUICK[key], key


def test_bad_bc_fraction_is_refused_before_any_work(tmp_path, capsys):
    with pytest.raises(SystemExit):
        si.main(["--quick", "--bc-fractions", "0.1,0.3", "--root", str(tmp_path)])
    assert "0.3" in capsys.readouterr().err
    assert not any(tmp_path.iterdir()), "nothing may be generated for a refused plan"
