"""Practice re-refining its reward model on its own labeled episodes (simulated and real robots),
and recalibrating or keeping s."""
from __future__ import annotations

import json

import torch

from core.learning.fleets import LocalFleet
from core.learning.practice import PracticeObserver, run_practice
from sim_backends.registry import make_env
from tests.core.learning.conftest import practice_cfg as _cfg


def _stg_weights(path):
    from core.learning.checkpoint import read_checkpoint

    return read_checkpoint(path)["state_dict"]


def test_practice_re_refines_the_reward_model_on_its_labeled_episodes_and_resumes_with_it(stage1, tmp_path):
    from core.learning.checkpoint import read_checkpoint

    out = tmp_path / "refine-during"
    res = run_practice(_cfg(stage1, out, refine_every=1, refine_min_labels=1, refine_steps=2, eval_every=0,
                            max_episodes=4), progress=False)
    refined = out / "reward_refined.pt"
    assert res["reward_checkpoint"] == str(refined) and refined.exists()
    rows = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    it_rows = [r for r in rows if r["iteration"] > 0]
    assert len(it_rows) == res["iterations"] >= 2
    total = 0
    for r in it_rows:  # every iteration's episodes, all labeled by ground truth (simulated robots)
        assert r["refine_labels"] == r["episodes"] and 0 <= r["refine_label_success"] <= r["refine_labels"]
        total += r["refine_labels"]
        assert r["labels_total"] == total and len(r["refine_d_fail_min"]) == 2
    assert res["labels_used"] == total
    log = [json.loads(x) for x in (out / "refine_log.jsonl").read_text().splitlines()]
    assert [x["iteration"] for x in log] == [r["iteration"] for r in it_rows]
    meta = read_checkpoint(refined)["meta"]
    assert meta["stage"] == "reward_refined" and meta["refined_at_iteration"] == res["iterations"]
    assert read_checkpoint(out / f"iter_{res['iterations']:04d}.pt")["meta"]["reward_checkpoint"] == str(refined)
    # The refinement changed the steps-to-go pathway, not the action head.
    base, new = _stg_weights(stage1 / "best_stg.pt"), _stg_weights(refined)
    changed = [k for k in base if not torch.equal(base[k], new[k])]
    assert changed and not any(k.startswith("action_head") for k in changed)
    # Resumed with a larger budget: practice goes on with the latest refined model and refines it again.
    before = _stg_weights(refined)
    res2 = run_practice(_cfg(stage1, out, refine_every=1, refine_min_labels=1, refine_steps=2, eval_every=0,
                             max_episodes=res["episodes"] + 2), progress=False)
    assert res2["iterations"] > res["iterations"] and res2["reward_checkpoint"] == str(refined)
    assert read_checkpoint(refined)["meta"]["refined_at_iteration"] == res2["iterations"]
    after = _stg_weights(refined)
    assert any(not torch.equal(before[k], after[k]) for k in before)
    assert len((out / "refine_log.jsonl").read_text().splitlines()) == res2["iterations"]


def test_on_real_robots_only_episodes_with_a_supervisor_verdict_refine_the_reward_model(stage1, tmp_path):
    class RealRobots(LocalFleet):
        knows_success = False

    def fleet():
        return RealRobots(lambda: make_env("tabletop", {"family": "block2block", "image_size": 32}), 2)

    kw = dict(refine_every=1, refine_min_labels=1, refine_steps=2, eval_every=0, check_episodes=0, max_episodes=4)
    f = fleet()
    try:  # no verdicts: nothing to learn from, the refinement is skipped and said so
        res = run_practice(_cfg(stage1, tmp_path / "none", **kw), progress=False, fleet=f)
    finally:
        f.close()
    assert res["reward_checkpoint"].endswith("best_stg.pt") and not (tmp_path / "none" / "reward_refined.pt").exists()
    rows = [json.loads(x) for x in (tmp_path / "none" / "metrics.jsonl").read_text().splitlines()]
    assert not any("refine_labels" in r for r in rows)
    f = fleet()
    class Verdicts(PracticeObserver):  # a supervisor marked every other episode a failure
        def outcome_override(self, rec):
            return False if rec.seed % 2 == 0 else None

    try:
        res = run_practice(_cfg(stage1, tmp_path / "some", **kw), progress=False, fleet=f, observer=Verdicts())
    finally:
        f.close()
    rows = [json.loads(x) for x in (tmp_path / "some" / "metrics.jsonl").read_text().splitlines()]
    labeled = [r for r in rows if "refine_labels" in r]
    assert labeled and all(r["refine_label_success"] == 0 for r in labeled)
    assert sum(r["refine_labels"] for r in labeled) <= sum(r["episodes"] for r in rows if r["iteration"] > 0)
    assert (tmp_path / "some" / "reward_refined.pt").exists()


def test_a_periodic_refinement_recalibrates_s_on_practice_episodes_it_held_out(stage1, tmp_path):
    from core.learning.checkpoint import read_checkpoint

    out = tmp_path / "recal"
    kw = dict(refine_every=2, refine_min_labels=1, refine_steps=2, eval_every=0, check_episodes=4,
              threshold_s=None, detector_tolerance=0, tuples_per_iteration=400, minibatch=100, max_episodes=16)
    res = run_practice(_cfg(stage1, out, **kw), progress=False)
    rows = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    done = [r for r in rows if "refine_labels" in r]
    assert done, rows
    log = [json.loads(x) for x in (out / "refine_log.jsonl").read_text().splitlines()]
    for r, entry in zip(done, log):
        assert r["refine_labels"] >= 12, r  # enough labels to hold some out
        held = len(range(0, r["refine_labels"], 3))
        assert r["refine_held_out"] == held and entry["labeled_episodes"] == r["refine_labels"] - held
        assert 0.25 <= r["refine_threshold_s"] <= 20.0 and 0 <= r["refine_precision"] <= 1
        assert entry["check"]["tolerance"] == 0 and entry["check"]["episodes"] == held - held // 2
    state = json.loads((out / "state.json").read_text())
    assert state["threshold_s"] == done[-1]["refine_threshold_s"] == res["threshold_s"]
    assert read_checkpoint(out / "reward_refined.pt")["meta"]["refined_at_iteration"] == done[-1]["iteration"]
    # An explicit s is the supervisor's: refinements keep it.
    fixed = run_practice(_cfg(stage1, tmp_path / "fixed", **{**kw, "threshold_s": 1.5}), progress=False)
    assert fixed["threshold_s"] == 1.5
    assert not any("refine_threshold_s" in json.loads(x)
                   for x in (tmp_path / "fixed" / "metrics.jsonl").read_text().splitlines())


def test_refinements_can_keep_s_and_remember_earlier_labeled_episodes(stage1, tmp_path):
    out = tmp_path / "memory"
    kw = dict(refine_episodes=3, refine_every=1, refine_min_labels=1, refine_steps=2, eval_every=0,
              check_episodes=4, threshold_s=None, tuples_per_iteration=200, minibatch=100, max_episodes=12,
              refine_memory=5, refine_recalibrate=False)
    res = run_practice(_cfg(stage1, out, **kw), progress=False)
    check_s = json.loads((out / "detector_check.json").read_text())["threshold_s"]
    rows = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    done = [r for r in rows if "refine_labels" in r]
    assert len(done) >= 2, rows
    log = [json.loads(x) for x in (out / "refine_log.jsonl").read_text().splitlines()]
    # Memory: the first refinement's 3 rollouts, then the most recent labeled episodes, capped at 5.
    expected, seen = [], 3
    for r in done:
        expected.append(min(5, seen))
        seen += r["refine_labels"]
    assert [r["refine_memory"] for r in done] == expected
    for r, entry in zip(done, log):  # nothing held out: memory + the new episodes all train
        assert entry["labeled_episodes"] == r["refine_labels"] + r["refine_memory"]
        assert "refine_threshold_s" not in r and "check" not in entry
    assert res["threshold_s"] == check_s  # s stays where the check put it
