"""Stage 2 (practice): REINFORCE math, the fleet, detector check refusal, resume."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from core.method import rewards as R
from core.learning.fleets import LocalFleet, ProcessFleet, RobotFailure
from core.learning.practice import PracticeObserver, PracticeRefused, run_practice
from core.learning.practice.evaluation import gain_vs_start
from core.learning.practice.update import episode_rewards, reinforce_loss
from core.learning.rollout import EpisodeRecord
from tests.core.learning.conftest import practice_cfg as _cfg
from sim_backends.registry import make_env


def test_reinforce_loss_is_minus_c_times_return_times_logp():
    logp = torch.tensor([-1.0, -2.0], requires_grad=True)
    loss = reinforce_loss(logp, [3.0, -1.0], c=0.05)
    assert loss.item() == pytest.approx(-(0.05 * 3.0 * -1.0 + 0.05 * -1.0 * -2.0) / 2)
    loss.backward()
    # raising log pi of a positive-return action lowers the loss, of a negative one raises it
    assert logp.grad[0] < 0 < logp.grad[1]
    with pytest.raises(ValueError):
        reinforce_loss(logp, [1.0, 2.0, 3.0])


def test_mean_baseline_is_the_iterations_mean_return_and_none_is_zero():
    assert R.batch_baseline([10.0, 12.0, 8.0], "none") == 0.0
    assert R.batch_baseline([10.0, 12.0, 8.0], "mean") == pytest.approx(10.0)
    assert R.batch_baseline([], "mean") == 0.0
    with pytest.raises(ValueError, match="unknown baseline"):
        R.batch_baseline([1.0], "value-net")
    # Steady progress of 1 step per step gives every action R_t ~ 1 / (1 - gamma) = 10: the
    # offset the mean baseline removes, leaving the per-action differences.
    d = np.arange(60, 0, -1.0)
    returns = R.discounted_returns(R.progress_rewards(d), 0.9)
    assert returns[0] == pytest.approx(10.0, abs=0.05)
    assert abs(returns[0] - R.batch_baseline(returns[:20], "mean")) < 0.05


def test_episode_returns_come_from_steps_to_go_progress_not_ground_truth():
    rec = EpisodeRecord(seed=0, instruction="x", d=[5.0, 4.0, 4.5, 1.0], gt=[False, False, False, False],
                        actions=[np.zeros(2)] * 3)
    rewards = episode_rewards(rec, ground_truth_reward=False)
    returns = R.discounted_returns(rewards, 0.9)
    r = np.array([1.0, -0.5, 3.5])
    assert rewards.sum() == pytest.approx(4.0)  # d_0 - d_T
    assert returns == pytest.approx([r[0] + 0.9 * r[1] + 0.81 * r[2], r[1] + 0.9 * r[2], r[2]])
    rec.gt = [False, False, True, True]
    oracle = R.discounted_returns(episode_rewards(rec, ground_truth_reward=True), 0.9)
    assert oracle == pytest.approx([0.9, 1.0, 0.0])


def test_process_fleet_steps_in_parallel_and_survives_a_bad_action():
    fleet = ProcessFleet("tabletop", {"family": "block2block", "image_size": 32}, 2)
    try:
        obs0, _ = fleet.reset(0, 5)
        obs1, _ = fleet.reset(1, 5)
        assert np.array_equal(obs0["image"], obs1["image"])  # same seed, same scene
        res = fleet.step({0: np.array([np.nan, 0.0]), 1: np.array([0.5, 0.0])})
        assert isinstance(res[0], RobotFailure) and "nan" in res[0].message.lower()
        assert not isinstance(res[1], RobotFailure)
        assert fleet.reset(0, 6) is not None and not isinstance(fleet.reset(0, 6), RobotFailure)
    finally:
        fleet.close()


def test_practice_runs_checkpoints_every_iteration_and_resumes(stage1, tmp_path):
    out = tmp_path / "si"
    first = run_practice(_cfg(stage1, out), progress=False)
    assert first["iterations"] >= 1 and first["episodes"] >= 2
    rows = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    assert rows[0]["iteration"] == 0 and "eval_success" in rows[0]
    it_rows = [r for r in rows if r["iteration"] > 0]
    for r in it_rows:
        for key in ("mean_return", "mean_length", "detector_fires", "detector_false_positives",
                    "detector_false_negatives", "eval_success", "loss"):
            assert key in r, key
        assert (out / f"iter_{r['iteration']:04d}.pt").exists()
        # where the iteration's time went
        assert r["time_rollout_s"] > 0 and r["time_update_s"] >= 0 and r["time_checkpoint_s"] > 0
        assert r["time_eval_s"] > 0 and r["rollout_steps_per_s"] > 0
        # The change since the start is paired seed by seed (same selection seeds every time).
        assert len(r["eval_outcomes"]) == 2 and r["eval_gain_seeds"] == 2
        assert r["eval_gain"] == pytest.approx(r["eval_success"] - rows[0]["eval_success"])
        assert r["eval_gain_lo"] <= r["eval_gain"] <= r["eval_gain_hi"]
        assert r["eval_gained"] - r["eval_lost"] == sum(r["eval_outcomes"]) - sum(rows[0]["eval_outcomes"])
    assert (out / "best.pt").exists() and (out / "detector_check.json").exists()
    n = first["iterations"]
    # A larger budget continues from the last completed iteration instead of starting over.
    second = run_practice(_cfg(stage1, out, max_episodes=first["episodes"] + 2), progress=False)
    assert second["iterations"] > n
    rows = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["iteration"] for r in rows] == list(range(0, second["iterations"] + 1))
    from core.learning.checkpoint import read_checkpoint

    meta = read_checkpoint(out / f"iter_{n + 1:04d}.pt")["meta"]
    assert meta["stage"] == "si" and meta["parent"].endswith(f"iter_{n:04d}.pt")


def test_practice_refuses_a_bad_detector_with_figures_and_advice(stage1, tmp_path):
    out = tmp_path / "refused"
    with pytest.raises(PracticeRefused) as e:
        run_practice(_cfg(stage1, out, min_precision=1.01), progress=False)
    msg = str(e.value)
    assert "precision" in msg and "recall" in msg and "more demonstrations" in msg
    stored = json.loads((out / "detector_check.json").read_text())
    assert stored["passed"] is False and stored["episodes"] == 3
    assert not list(out.glob("iter_*.pt"))  # nothing practised


def test_a_relaxed_bar_lets_a_refused_run_start_on_its_stored_check(stage1, tmp_path):
    """The refusal says what would help; relaxing the bar must then work without deleting the
    stored check (it is judged against the bars of each start)."""
    out = tmp_path / "refused-then-relaxed"
    with pytest.raises(PracticeRefused):
        run_practice(_cfg(stage1, out, min_precision=1.01), progress=False)
    res = run_practice(_cfg(stage1, out, max_episodes=1), progress=False)
    assert res["iterations"] >= 1
    assert json.loads((out / "detector_check.json").read_text())["passed"] is True


def test_resuming_practice_with_other_settings_is_refused_and_touches_nothing(stage1, tmp_path):
    import shutil

    from core.learning.checkpoint import ResumeConflict

    start = tmp_path / "start.pt"
    shutil.copyfile(stage1 / "best_policy.pt", start)
    out = tmp_path / "si"
    first = run_practice(_cfg(stage1, out, policy_checkpoint=str(start), max_episodes=1), progress=False)
    kept = {n: (out / n).read_bytes() for n in ("run.json", "state.json", "metrics.jsonl")}
    with pytest.raises(ResumeConflict) as e:  # another learning rate: another run
        run_practice(_cfg(stage1, out, policy_checkpoint=str(start), max_episodes=3, lr=3e-4), progress=False)
    assert "lr: 0.0001 -> 0.0003" in str(e.value) and "--out" in str(e.value)
    assert "max_episodes" not in str(e.value)  # the budget may change
    shutil.copyfile(stage1 / "best_stg.pt", start)  # the starting checkpoint re-written since
    with pytest.raises(ResumeConflict, match="policy_checkpoint_sha256"):
        run_practice(_cfg(stage1, out, policy_checkpoint=str(start), max_episodes=3), progress=False)
    assert {n: (out / n).read_bytes() for n in kept} == kept
    # The same content under another path, a larger budget and another fleet size: resumed.
    moved = tmp_path / "moved.pt"
    shutil.copyfile(stage1 / "best_policy.pt", moved)
    start.unlink()
    second = run_practice(_cfg(stage1, out, policy_checkpoint=str(moved), max_episodes=first["episodes"] + 2,
                               fleet_size=1), progress=False)
    assert second["iterations"] > first["iterations"]
    assert json.loads((out / "run.json").read_text())["practice"]["fleet_size"] == 1


def test_practice_calibrates_s_on_its_rollouts_weighing_precision(stage1, tmp_path):
    out = tmp_path / "calibrated"
    run_practice(_cfg(stage1, out, threshold_s=None, check_episodes=4, max_episodes=1, eval_episodes=1),
                 progress=False)
    stored = json.loads((out / "detector_check.json").read_text())
    assert stored["calibration_beta"] == 0.5 and "F0.5" in stored["threshold_source"]
    assert stored["episodes"] == 2  # calibrated on the first half, scored on the other


def test_local_fleet_reports_a_failing_robot_instead_of_raising():
    fleet = LocalFleet(lambda: make_env("tabletop", {"family": "block2block", "image_size": 32}), 1)
    try:
        fleet.reset(0, 1)
        res = fleet.step({0: np.zeros(3)})
        assert isinstance(res[0], RobotFailure) and "shape" in res[0].message
    finally:
        fleet.close()


def test_a_supervisor_override_changes_the_episode_returns():
    rec = EpisodeRecord(seed=0, instruction="x", d=[6.0, 5.0, 4.0], gt=[False] * 3, actions=[np.zeros(2)] * 2)
    R.override_final_d(rec.d, True)
    assert rec.d[-1] == 0.0 and episode_rewards(rec, False).sum() == pytest.approx(6.0)
    rec = EpisodeRecord(seed=0, instruction="x", d=[6.0, 5.0, 1.0], gt=[False] * 3, actions=[np.zeros(2)] * 2)
    R.override_final_d(rec.d, False)  # the detector fired wrongly: no credit for the last step's "progress"
    assert episode_rewards(rec, False).sum() == pytest.approx(1.0)


def test_rollouts_after_an_update_sample_without_dropout(stage1, tmp_path, monkeypatch):
    """The update may run in train mode (dropout on); the next iteration's rollouts and the
    evaluations must not: they would sample a different policy from the one updated."""
    from core.learning.policy import DojoPolicy

    modes = []
    act = DojoPolicy.act

    def spy(self, *a, **k):
        modes.append(self.training)
        return act(self, *a, **k)

    monkeypatch.setattr(DojoPolicy, "act", spy)
    out = run_practice(_cfg(stage1, tmp_path / "si", update_dropout=True, baseline="mean", max_episodes=4),
                       progress=False)
    assert out["iterations"] >= 2 and modes and not any(modes)
    rows = [json.loads(x) for x in (tmp_path / "si" / "metrics.jsonl").read_text().splitlines()]
    assert all(r["baseline"] != 0.0 for r in rows if r["iteration"] > 0)


def test_action_head_only_practice_leaves_the_rest_of_the_policy_unchanged(stage1, tmp_path):
    from core.learning.checkpoint import load_checkpoint

    out = tmp_path / "si"
    run_practice(_cfg(stage1, out, trainable="action_head", lr=1e-2), progress=False)
    before, _ = load_checkpoint(stage1 / "best_policy.pt", torch.device("cpu"))
    after, _ = load_checkpoint(out / "iter_0001.pt", torch.device("cpu"))
    a, b = dict(before.named_parameters()), dict(after.named_parameters())
    changed = {n for n in a if not torch.equal(a[n], b[n])}
    assert changed and all(n.startswith("action_head.") for n in changed), changed
    with pytest.raises(ValueError, match="trainable"):
        run_practice(_cfg(stage1, tmp_path / "bad", trainable="trunk"), progress=False)


def test_a_simulator_process_that_dies_at_start_gives_an_error_naming_the_cause(tmp_path, monkeypatch):
    """A spawn child re-imports the parent's __main__; one without a main guard kills it."""
    import sys
    import types

    bad = tmp_path / "unguarded.py"
    bad.write_text("raise SystemExit(3)\n")
    main_mod = types.ModuleType("__main__")
    main_mod.__file__ = str(bad)
    monkeypatch.setitem(sys.modules, "__main__", main_mod)
    with pytest.raises(RuntimeError, match=r"exited while starting \(exit code 3\).*unguarded\.py.*__main__"):
        ProcessFleet("tabletop", {"family": "block2block", "image_size": 32}, 1)


def test_practice_rolls_out_with_the_compiled_forward_and_reports_it(stage1, tmp_path, monkeypatch):
    monkeypatch.setenv("DOJO_NO_COMPILE", "0")
    res = run_practice(_cfg(stage1, tmp_path / "compiled", max_episodes=2), progress=False)
    assert res["inference"].startswith("compiled (batch 2, compiled in"), res["inference"]
    assert res["iterations"] >= 1 and res["reward_inference"].startswith("compiled (batch 2")
    # Resumed with a refined reward model read back from the run directory: still compiled
    # (it used to come back eager, ~2x slower rollouts for the rest of the run).
    kw = dict(refine_episodes=2, refine_steps=1, check_episodes=0)
    first = run_practice(_cfg(stage1, tmp_path / "refined", max_episodes=2, **kw), progress=False)
    again = run_practice(_cfg(stage1, tmp_path / "refined", max_episodes=first["episodes"] + 2, **kw),
                         progress=False)
    assert again["iterations"] > first["iterations"]
    assert again["reward_inference"].startswith("compiled (batch 2"), again["reward_inference"]
    off = run_practice(_cfg(stage1, tmp_path / "eager", max_episodes=2, compile=False), progress=False)
    assert off["inference"] == "eager"


def test_practice_refines_the_reward_model_on_labeled_rollouts_and_reports_before_and_after(stage1, tmp_path):
    from core.learning.checkpoint import read_checkpoint

    out = tmp_path / "refined"
    res = run_practice(_cfg(stage1, out, refine_episodes=4, refine_steps=3, threshold_s=None, check_episodes=4),
                       progress=False)
    refined = out / "reward_refined.pt"
    assert res["reward_checkpoint"] == str(refined) and refined.exists()
    meta = read_checkpoint(refined)["meta"]
    assert meta["stage"] == "reward_refined" and meta["refined_from"].endswith("best_stg.pt")
    assert meta["refine"]["labeled_episodes"] == 4 and meta["refine"]["demo_episodes"] > 0  # demos kept in the mix
    chk = json.loads((out / "detector_check.json").read_text())
    assert {"precision", "recall", "threshold_s", "counts"} <= set(chk["before"])
    assert chk["before"]["episodes"] == chk["episodes"] == 2  # same held-out rollouts, scored both ways
    it_meta = read_checkpoint(out / "iter_0001.pt")["meta"]
    assert it_meta["reward_checkpoint"] == str(refined)  # a later practice run picks up the refined model
    stamp = refined.stat().st_mtime_ns
    run_practice(_cfg(stage1, out, refine_episodes=4, refine_steps=3, threshold_s=None, check_episodes=4,
                      max_episodes=res["episodes"] + 2), progress=False)
    assert refined.stat().st_mtime_ns == stamp  # resumed: refined once


def test_practice_refuses_to_refine_without_ground_truth(stage1, tmp_path):
    class RealRobots(LocalFleet):
        knows_success = False

    fleet = RealRobots(lambda: make_env("tabletop", {"family": "block2block", "image_size": 32}), 1)
    try:
        with pytest.raises(PracticeRefused, match="Review page"):
            run_practice(_cfg(stage1, tmp_path / "real", refine_episodes=2), progress=False, fleet=fleet)
    finally:
        fleet.close()
    assert not (tmp_path / "real" / "reward_refined.pt").exists()


def test_gain_vs_start_pairs_the_common_seeds():
    assert gain_vs_start(None, [1, 0]) == {} and gain_vs_start([], [1]) == {}
    assert gain_vs_start([None, None], [1, 0]) == {}
    # A seed missing on either side (a crashed robot's discarded episode) is left out of the pairs;
    # a longer evaluation is compared on the common prefix (the same seeds).
    g = gain_vs_start([0, 0, None, 1, 0], [1, 1, 1, 1, 0, 1, 1])
    assert g["eval_gain_seeds"] == 4 and (g["eval_gained"], g["eval_lost"]) == (2, 0)
    assert g["eval_gain"] == pytest.approx(0.5) and g["eval_gain_lo"] < 0.5 < g["eval_gain_hi"]


def test_practice_stops_when_success_falls_below_the_start_beyond_noise(stage1, tmp_path, monkeypatch):
    """Two evaluations in a row below the start's on the same seeds (paired interval < 0) stop
    practice with the figures and advice; the stop holds on a re-run, stop_after_drops 0 lifts it."""
    import core.learning.practice as P
    from core.method.stats import wilson_interval

    calls = []

    def scripted(policy, fleet, n, interrupt=None, on_step=None, groups=None):  # the start succeeds on 16 of 20 seeds, later 2 of 20
        k = 16 if not calls else 2
        calls.append(k)
        outcomes = [1] * k + [0] * (20 - k)
        return {"success": k / 20, "success_ci": wilson_interval(k, 20), "episodes": 20, "outcomes": outcomes}

    monkeypatch.setattr(P.loop, "evaluate_success", scripted)
    out = tmp_path / "si"
    res = run_practice(_cfg(stage1, out, max_episodes=50, eval_every=1, plateau_evals=100), progress=False)
    assert res["iterations"] == 2 and len(calls) == 3  # the start, then two drops
    reason = res["stop_reason"]
    assert reason.startswith("practice stopped at iteration 2: greedy success 10 % is below the start's 80 %")
    assert "2 evaluations in a row" in reason and "on the same 20 seeds" in reason
    assert "best checkpoint (iteration 0, 80 %)" in reason and "refine" in reason
    rows = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    assert all(r["eval_gain_hi"] < 0 for r in rows[1:])
    # The same command again: still stopped, nothing practised.
    again = run_practice(_cfg(stage1, out, max_episodes=50, eval_every=1, plateau_evals=100), progress=False)
    assert again["iterations"] == 2 and again["stop_reason"] == reason
    # stop_after_drops 0 practises on regardless.
    more = run_practice(_cfg(stage1, out, max_episodes=50, eval_every=1, plateau_evals=100, stop_after_drops=0),
                        progress=False)
    assert more["iterations"] > 2 and more["stop_reason"] is None


def test_one_drop_or_a_change_within_noise_does_not_stop_practice(stage1, tmp_path, monkeypatch):
    import core.learning.practice as P
    from core.method.stats import wilson_interval

    script = iter([16, 2, 15, 2, 14, 15, 16])  # start, drop, recovery, drop, within noise...

    def scripted(policy, fleet, n, interrupt=None, on_step=None, groups=None):
        k = next(script)
        return {"success": k / 20, "success_ci": wilson_interval(k, 20), "episodes": 20,
                "outcomes": [1] * k + [0] * (20 - k)}

    monkeypatch.setattr(P.loop, "evaluate_success", scripted)
    res = run_practice(_cfg(stage1, tmp_path / "si", max_episodes=12, eval_every=1, plateau_evals=100),
                       progress=False)
    assert res["stop_reason"] is None and res["episodes"] >= 12


def _rec(gt, seed=1, frames=True):
    n = len(gt)
    return EpisodeRecord(seed=seed, instruction="push the red block to the blue block", d=[3.0] * n, gt=list(gt),
                         actions=[np.zeros(2)] * (n - 1),
                         frames=[np.full((8, 8, 3), t, np.uint8) for t in range(n)] if frames else [],
                         proprio=[np.zeros(4, np.float32)] * n)


def test_a_practice_episode_is_labeled_by_a_verdict_first_then_by_ground_truth():
    from core.learning.practice.refinement import practice_label

    lab = practice_label(_rec([False, False, True, True]), None, knows_success=True)
    assert lab.success and lab.goal_index == 2 and lab.frames.shape == (4, 8, 8, 3)
    lab = practice_label(_rec([False, False, False]), None, knows_success=True)
    assert not lab.success
    # A supervisor's verdict beats the simulator's flag (success at the last frame).
    lab = practice_label(_rec([False, False, False]), True, knows_success=True)
    assert lab.success and lab.goal_index is None
    assert not practice_label(_rec([False, True]), False, knows_success=True).success
    # Real robots: no verdict, no label; no frames or a crashed robot's episode: no label.
    assert practice_label(_rec([False, True]), None, knows_success=False) is None
    assert practice_label(_rec([False, True]), True, knows_success=False).success
    assert practice_label(_rec([True], frames=False), None, knows_success=True) is None


def _demo_bc_loss(ckpt, table, rows) -> float:
    from core.learning.checkpoint import load_checkpoint

    model, _ = load_checkpoint(ckpt, torch.device("cpu"))
    model.eval()
    with torch.no_grad():
        batch = table.batch(rows, model.config.n_frames, model.config.action_bins)
        return float(-model.action_log_prob(batch).mean() / model.config.action_dim)


def test_the_demonstration_anchor_keeps_a_large_update_close_to_the_demonstrations(stage1, tmp_path):
    from core.learning.checkpoint import read_checkpoint
    from core.learning.dataset import held_out_episodes, load_datasets
    from core.learning.practice.update import anchor_demos

    meta = read_checkpoint(stage1 / "best_policy.pt")["meta"]
    table, acted = anchor_demos(meta)
    _, eps = load_datasets(meta["dataset"])
    held = held_out_episodes(meta)
    assert held and len(np.unique(table.episode_id)) == len(eps) - len(held)  # held-out demos stay out
    assert table.action_mask[acted].all() and len(acted) == int(table.action_mask.sum())

    # The same practice (same seeds, same rollouts in iteration 1) with a large learning rate,
    # with and without the anchor: the anchored update stays closer to the demonstrations.
    free = run_practice(_cfg(stage1, tmp_path / "free", lr=3e-2, eval_episodes=0), progress=False)
    anchored = run_practice(_cfg(stage1, tmp_path / "anchored", lr=3e-2, eval_episodes=0, bc_weight=5.0),
                            progress=False)
    assert free["iterations"] >= 1 and anchored["iterations"] >= 1
    rows = [json.loads(x) for x in (tmp_path / "anchored" / "metrics.jsonl").read_text().splitlines()]
    assert all(r["bc_loss"] > 0 for r in rows if r["iteration"] > 0)
    assert all("bc_loss" not in json.loads(x) for x in (tmp_path / "free" / "metrics.jsonl").read_text().splitlines())
    start = _demo_bc_loss(stage1 / "best_policy.pt", table, acted)
    drift_free = _demo_bc_loss(tmp_path / "free" / "iter_0001.pt", table, acted) - start
    drift_anchored = _demo_bc_loss(tmp_path / "anchored" / "iter_0001.pt", table, acted) - start
    assert drift_anchored < drift_free, (start, drift_free, drift_anchored)


def test_the_demonstration_anchor_refuses_when_the_demonstrations_are_gone(stage1, tmp_path):
    from core.learning.checkpoint import load_checkpoint, save_checkpoint

    model, meta = load_checkpoint(stage1 / "best_policy.pt", torch.device("cpu"))
    moved = tmp_path / "policy.pt"
    save_checkpoint(moved, model, {**meta, "dataset": str(tmp_path / "gone")})
    with pytest.raises(PracticeRefused, match="bc_weight.*gone.*set bc_weight 0"):
        run_practice(_cfg(stage1, tmp_path / "si", policy_checkpoint=str(moved), bc_weight=1.0), progress=False)
    assert not (tmp_path / "si" / "iter_0001.pt").exists()


def test_planned_starts_collect_about_one_iterations_tuples_and_drop_nothing(stage1, tmp_path):
    """plan_starts with finish_running_episodes: robots start an episode only while the
    buffer plus the running episodes' expected tuples fall short; every started episode is
    finished and kept (none dropped), fewer surplus episodes than starting freely, and the
    length estimate is carried to the next iteration (and across a resume)."""
    def run(name, **kw):
        out = tmp_path / name
        run_practice(_cfg(stage1, out, fleet_size=4, max_episodes=24, eval_every=0, tuples_per_iteration=24,
                          finish_running_episodes=True, **kw), progress=False)
        rows = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
        return [r for r in rows if r["iteration"] > 0], json.loads((out / "state.json").read_text())

    planned, state = run("plan", plan_starts=True)
    free, _ = run("free")
    assert all(r["episodes_dropped"] == 0 for r in planned + free)
    assert state["length_estimate"] > 0
    per_it = lambda rows: sum(r["episodes"] for r in rows) / len(rows)  # noqa: E731
    assert per_it(planned) < per_it(free)  # free starts run every robot's surplus episode to its end


def test_rollout_threads_apply_inside_the_block_only():
    import torch

    from core.learning.practice import PRACTICE_MAY_CHANGE
    from core.learning.practice.update import torch_threads

    before = torch.get_num_threads()
    with torch_threads(1):
        assert torch.get_num_threads() == 1
    assert torch.get_num_threads() == before
    with pytest.raises(RuntimeError):
        with torch_threads(1):
            raise RuntimeError("a failed rollout")
    assert torch.get_num_threads() == before
    with torch_threads(None):
        assert torch.get_num_threads() == before
    assert "rollout_threads" in PRACTICE_MAY_CHANGE  # a speed setting: a resume may change it


def test_practice_tells_one_observer_what_happens_and_a_resume_replays_completed_iterations(stage1, tmp_path):
    """The events carry what a recorder stores: each episode's rewards and returns (from the
    d it observed, the progress reward), the detector rule it ran with, ground truth; each
    iteration's checkpoint and metrics row. A resumed run announces its completed iterations
    again (replayed), so a recorder that missed one catches up."""
    from core.learning.practice.events import (DetectorReady, EpisodeEnded, IterationEnded, StartEvaluated,
                                               StepTaken)

    class Recorder(PracticeObserver):
        def __init__(self):
            self.events = []

        def on_event(self, ev):
            if not isinstance(ev, StepTaken) or ev.evaluating:
                self.events.append(ev)

    out, first = tmp_path / "si", Recorder()
    run_practice(_cfg(stage1, out, check_episodes=0), progress=False, observer=first)
    kinds = [type(e).__name__ for e in first.events]
    assert kinds.index("DetectorReady") < kinds.index("EpisodeEnded")
    ready = next(e for e in first.events if isinstance(e, DetectorReady))
    assert ready.spec.threshold_s == 1.0 and ready.spec.patience == 2 and ready.check is None
    assert any(isinstance(e, StartEvaluated) for e in first.events)
    episodes = [e for e in first.events if isinstance(e, EpisodeEnded)]
    for e in episodes:
        assert e.detector == ready.spec and e.ground_truth == e.record.success
        assert len(e.d_observed) == e.record.length + 1 and len(e.rewards) == e.record.length
        np.testing.assert_allclose(e.rewards, R.progress_rewards(e.d_observed))
        np.testing.assert_allclose(e.returns, R.discounted_returns(e.rewards, 0.9))
        assert len(e.record.detector_counts) == len(e.d_observed)  # the rule's count at every frame
    iterations = [e for e in first.events if isinstance(e, IterationEnded)]
    assert [e.iteration for e in iterations] == list(range(1, len(iterations) + 1)) and not any(
        e.replayed for e in iterations)
    assert all(Path(e.checkpoint).exists() and e.metrics["iteration"] == e.iteration for e in iterations)

    again = Recorder()
    run_practice(_cfg(stage1, out, check_episodes=0, max_episodes=4), progress=False, observer=again)
    replayed = [e for e in again.events if isinstance(e, IterationEnded) and e.replayed]
    assert [e.iteration for e in replayed] == [e.iteration for e in iterations]
    assert [e.metrics for e in replayed] == [json.loads(json.dumps(e.metrics)) for e in iterations]  # as written
    first_new = next(i for i, e in enumerate(again.events) if isinstance(e, IterationEnded) and not e.replayed)
    assert again.events[first_new].iteration == len(iterations) + 1
