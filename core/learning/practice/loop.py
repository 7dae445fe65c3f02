"""Stage 2: self-improvement by on-policy REINFORCE on a fleet (METHOD.md).

The reward model / success detector is a frozen copy of a Stage-1 checkpoint (chosen
separately from the policy's starting checkpoint): d(o, g) = E[steps-to-go],
r_t = d(o_t, g) - d(o_{t+1}, g), an episode ends when d <= s has held for ``patience``
steps, at the step limit, or on an external stop. Ground truth is recorded beside the
detector's verdict and never used for reward or termination unless a flag asks for it.

Every iteration: roll the fleet out with the current (sampling) policy until
``tuples_per_iteration`` (o, a, g, R) tuples are collected, take
``tuples_per_iteration / minibatch`` gradient steps without replacement, clear the
buffer, write a checkpoint and its stats, and evaluate on fixed seeds every
``eval_every`` iterations. The best evaluated checkpoint is kept; practice stops at a
plateau or at the episode budget. Killed mid-run, it resumes from the last completed
iteration (same seeds -> same run).
"""
from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import os
import time
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import torch

from core.method import rewards as R
from core.method.detector import DetectorCounts, DetectorSpec, WIDE_CANDIDATES, calibrate_threshold, score_episode
from core.learning.action_bins import action_to_bins
from core.learning.checkpoint import (atomic_write_bytes, check_run_settings, file_sha256, load_checkpoint, read_checkpoint,
                             save_checkpoint)
from core.learning.evaluate import calibrate_on_demos
from core.method.detector import DEFAULT_TOLERANCE
from core.method.seeds import SELECT_SEED0
from core.learning.fleets import Fleet, LocalFleet, ProcessFleet
from core.learning.policy import ACTION_BINS, FRAMES, INSTRUCTION, PROPRIO, DojoPolicy, compile_enabled
from core.learning.rollout import END_DETECTOR, EpisodeRecord, rollout_batch, rollout_groups, run_episodes
from core.method.stats import format_points, paired_gain, precision_recall_f1, wilson_interval

from core.method.seeds import CHECK_SEED0, PRACTICE_SEED0, REFINE_SEED0


class PracticeRefused(RuntimeError):
    """The reward model failed its check; the message gives the figures and what would help."""


# Settings a resumed run may change: the budget, how it is evaluated and stopped, the fleet
# (a lab's robots come and go) and speed settings. Every other PracticeConfig field (and the
# two checkpoints' contents) defines what the run learns, so a resume with one of them changed
# is refused (run_practice) rather than continuing one run under another's settings.
PRACTICE_MAY_CHANGE = frozenset({
    "out", "policy_checkpoint", "reward_checkpoint",  # paths: compared by content (..._sha256)
    "max_episodes", "eval_every", "eval_episodes", "plateau_evals", "stop_after_drops", "min_precision",
    "min_recall", "fleet_size", "processes", "rollout_groups", "rollout_threads", "compile", "device",
    "refine_min_labels"})


@dataclass(frozen=True)
class PracticeConfig:
    policy_checkpoint: str
    """Where the policy starts (a Stage-1 'best_policy.pt', or a practice checkpoint)."""
    reward_checkpoint: str
    """The frozen reward model / success detector (a Stage-1 'best_stg.pt')."""
    out: str
    """Run directory: iter_XXXX.pt, best.pt, metrics.jsonl, state.json, detector_check.json,
    run.json (the settings it started with; a resume that changes one that defines the run
    is refused, see PRACTICE_MAY_CHANGE)."""
    backend: str | None = None
    """Defaults to the reward checkpoint's backend and env config."""
    env_config: dict[str, Any] | None = None
    fleet_size: int = 0
    """Robots (simulator processes); 0 = the machine's cores."""
    processes: bool = True
    """One simulator process per robot (False: all in this process, for tests)."""
    gamma: float = 0.9
    c: float = 0.05
    lr: float = 3e-5
    """Adam(W) learning rate. METHOD.md: >= 1e-4 destroyed the policy within a few hundred episodes."""
    weight_decay: float = 0.0
    """AdamW weight decay (c matters only through its interaction with this)."""
    tuples_per_iteration: int = 1024
    minibatch: int = 64
    freeze_vision: bool = True
    """Keep the image pathway frozen (as the paper's vision encoder in Stage 2)."""
    trainable: str = "policy"
    """What the REINFORCE update trains: 'policy' (everything but the frozen vision) or
    'action_head' (the action head alone, a linear map of the trunk's features)."""
    baseline: str = "none"
    """'none' (METHOD.md: the progress reward's shaping already holds -V(o_t)) or 'mean':
    subtract the iteration's mean R_t from every R_t before the update. A constant within
    the iteration, so the gradient stays unbiased; it removes the offset that steady
    progress puts on every return (about rate / (1 - gamma))."""
    bc_weight: float = 0.0
    """Demonstration anchor (not in the paper; the demo-augmented policy gradient of DAPG,
    Rajeswaran et al. 2018): every REINFORCE gradient step also adds ``bc_weight`` x the
    behavioural-cloning cross-entropy on a minibatch of the policy's own Stage-1 training
    demonstrations (held-out ones excluded), so the update moves the policy toward what
    practice rewards without unlearning the demonstrations. 0 = the paper's update."""
    update_dropout: bool = False
    """Dropout during the REINFORCE update. Off by default: the rollouts sample from the
    policy without dropout, so with it on the update's log pi(a|o) is not the behaviour
    policy's and the gradient is noisier."""
    threshold_s: float | None = None
    """Detector threshold; default: the reward checkpoint's calibration on held-out demos."""
    patience: int = 2
    """Consecutive frames with d <= s before the detector fires."""
    calibrate_on_rollouts: bool = True
    """Without an explicit threshold_s, pick s on half of the check rollouts (simulation:
    ground truth is known there) instead of on demonstration endings alone."""
    calibration_beta: float = 0.5
    """s maximises F-beta on those rollouts: 0.5 weighs precision twice as much as recall
    (a false positive rewards a failure; a miss only costs steps). With F1 and a starting
    policy that succeeds often, an always-firing detector can win (precision = the
    success rate, recall 1)."""
    ground_truth_reward: bool = False
    """Use the simulator's success for termination and a +1 terminal reward (an oracle
    ablation; never the default)."""
    check_episodes: int = 100
    """Held-out rollouts of the starting policy for the pre-practice detector check (0 = skip)."""
    refine_episodes: int = 0
    """Before the check, refine a copy of the reward model on this many labeled rollouts of
    the starting policy (``core.learning.refine``: the paper's fix for a detector fooled by failure
    states that demonstrations never show). Simulated robots only: the simulator's ground
    truth labels them, one label per episode, standing in for a reviewer. 0 = off (the
    paper's recipe: no labels). The refined model is ``reward_refined.pt`` in the run
    directory, and the check reports the detector before and after on the same rollouts."""
    refine_steps: int = 400
    """Gradient steps of that refinement."""
    refine_train_vision: bool = True
    """Let the refinement train the reward model's image pathway too (it is a separate copy:
    the policy's stays frozen). Frozen, the head could not tell a pressed button from a
    near-miss on Meta-World (README, issue 6 notes)."""
    refine_every: int = 0
    """Refine the reward model again every this many iterations, on the labeled practice
    episodes of those iterations (no extra rollouts): a refinement fitted on the starting
    policy's states is fooled again by a policy that moves away from them (the detector-gaming
    collapse on Meta-World, README). Labels: the simulator's ground truth on simulated robots
    (one per episode, counted as labels used); on real robots, only the episodes a supervisor
    gave a verdict (Live page overrides). The refined model replaces ``reward_refined.pt``
    (resume uses the latest). Where s is calibrated (no threshold_s given), every third
    episode of the window is held out of the refinement and s is re-calibrated on those
    (F-beta as in the check, precision/recall reported on half of them), since each
    refinement moves d's scale. 0 = off."""
    refine_min_labels: int = 8
    """A periodic refinement with fewer labeled episodes than this is skipped (and logged)."""
    refine_recalibrate: bool = True
    """With ``refine_every`` and s calibrated (no threshold_s given): re-calibrate s at each
    periodic refinement on a third of its new episodes, held out. False: s stays where the
    pre-practice check put it and every labeled episode trains (a refinement trains failures
    to read d above s, so a fixed s stays meaningful; ~18 held-out episodes could not pin s
    on Meta-World and moved it 0.75-1.25 between refinements, README)."""
    refine_memory: int = 0
    """With ``refine_every``: also train each periodic refinement on up to this many earlier
    labeled episodes (the most recent; at a fresh start the pre-practice refinement's
    rollouts of the starting policy come first), so a refinement does not forget the states
    the previous ones fixed. 0 = only the episodes since the last refinement. Held-out
    episodes for re-calibrating s come from the new episodes only. Not kept across a resume
    (the labeled frames live in memory): a resumed run's next refinement starts without it."""
    detector_tolerance: int = DEFAULT_TOLERANCE
    """Steps: a detector firing this close before ground truth counts as right when the
    check (and a periodic refinement) scores and calibrates it. A detector that ends the
    episode a step before the goal ends it unsolved, so 0 is the strict setting (Meta-World's
    button press: fires just before the press paid the policy for stopping short)."""
    min_precision: float = 0.5
    min_recall: float = 0.5
    eval_every: int = 5
    eval_episodes: int = 200
    max_episodes: int = 3000
    """Budget of practice episodes."""
    plateau_evals: int = 4
    """Stop after this many evaluations without a new best."""
    stop_after_drops: int = 2
    """Stop when this many evaluations in a row are below the start's beyond noise (the
    paired interval of the gain since the start lies below 0): the policy is getting worse
    while its reward says otherwise, i.e. it is gaming the detector. 0 = never."""
    seed: int = 0
    device: str = "auto"
    finish_running_episodes: bool = False
    """When an iteration's buffer is full, drop the episodes under way (default): the iteration
    ends as its buffer fills, each update is made from ~``tuples_per_iteration`` tuples' worth
    of episodes. True lets them run to their end (Dojo's behaviour before 2026-12-04): their
    tuples join the buffer, from which ``tuples_per_iteration`` are drawn, so with 16 robots
    an iteration collected ~2x the episodes it used while the fleet waited for the longest.
    Measured on the tabletop quick plan, two training seeds: +17.5 points over BC dropping
    them, +7.75 finishing them (README). The paper does not say."""
    plan_starts: bool = False
    """Start a new episode only while the buffer's tuples plus what the episodes under way
    are expected to add (each: the last iteration's mean episode length less its steps so
    far, at least 1) fall short of ``tuples_per_iteration``; the other robots wait. With
    ``finish_running_episodes`` this collects about one iteration's tuples with no episode
    chosen by its length (dropping leans towards short ones); with dropping, fewer are
    dropped. The decision uses other episodes' progress only, never the outcome of the one
    it starts."""
    rollout_groups: int = 0
    """Robot groups in the rollout loop: while one group's simulators step, the next group's
    observations go through the models (``core.learning.rollout``). 1 = lock-step; 0 = automatic
    (2 for a process fleet of >= 4 robots; ``DOJO_ROLLOUT_GROUPS`` overrides). A speed
    setting: every value gives the lock-step episodes (``core.learning.rollout``)."""
    rollout_threads: int | None = None
    """The learner's torch threads while the fleet rolls out (practice, selection evaluations,
    the detector check and labeled rollouts); updates keep torch's own. None: unchanged. On 2
    cores with a simulator that costs more than its inference (Meta-World, ~3 ms a rendered
    step), 1 leaves the robots a core: 196 practice steps/s against 158 with 2 (fleet 4,
    2026-12-05). A speed setting: the episodes are the same."""
    compile: bool = True
    """``torch.compile`` the policy's and the reward model's rollout forward passes (padded
    to the fleet size): ~1.5x faster inference at batch 8 on 2 CPU cores, after a one-off
    compile of ~30 s (a few seconds once inductor's cache is warm). Falls back to eager if
    compiling fails; ``DOJO_NO_COMPILE=1`` turns it off everywhere."""

    def resolved_fleet_size(self) -> int:
        return self.fleet_size or os.cpu_count() or 1

    def groups(self, fleet: Fleet) -> int:
        """The rollout's robot groups on ``fleet`` (``rollout_groups`` resolved)."""
        return rollout_groups(fleet, self.rollout_groups or None)

    def batch(self, fleet: Fleet) -> int:
        """The largest batch one rollout model call sees on ``fleet`` (what to compile for)."""
        return rollout_batch(fleet, self.rollout_groups or None)


@contextlib.contextmanager
def torch_threads(n: int | None):
    """``torch.set_num_threads(n)`` inside the block, the previous count after it (None: no change)."""
    if not n:
        yield
        return
    before = torch.get_num_threads()
    torch.set_num_threads(int(n))
    try:
        yield
    finally:
        torch.set_num_threads(before)


def _episode_tuples(rec: EpisodeRecord, gamma: float, ground_truth_reward: bool
                    ) -> tuple[np.ndarray, float]:
    """Returns R_t for every action of a practice episode, and its undiscounted return."""
    if ground_truth_reward:
        r = np.zeros(rec.length)
        if rec.length and any(rec.gt[1:]):
            r[min(rec.length - 1, rec.gt[1:].index(True))] = 1.0
    else:
        r = R.progress_rewards(rec.d[: rec.length + 1])
    return R.discounted_returns(r, gamma), float(r.sum())


def apply_override(rec: EpisodeRecord, success: bool) -> None:
    """A supervisor's verdict replaces the detector's for this episode's rewards: success
    sets the final d to 0 (all remaining progress earned); failure removes any progress
    credited on the final step (the final d is set back to the one before)."""
    if len(rec.d) < 2:
        return
    rec.d[-1] = 0.0 if success else max(rec.d[-1], rec.d[-2])


def detector_check(policy: DojoPolicy, reward: DojoPolicy, fleet: Fleet, spec: DetectorSpec,
                   n: int, seed: int, tolerance: int = DEFAULT_TOLERANCE, calibrate: bool = False,
                   beta: float = 1.0, baseline: DojoPolicy | None = None,
                   interrupt: Callable[[], None] | None = None, groups: int | None = None) -> dict[str, Any]:
    """Precision/recall of the detector against ground truth on ``n`` held-out rollouts of
    the starting policy (sampling, as in practice), each run to the step limit so that
    every (s, patience) can be scored on the same frames.

    ``calibrate``: pick s (max F-beta for this patience, ``beta`` = 1: F1) on the first half of the rollouts and
    report precision/recall on the second half, so the figures are not fitted to the
    episodes they are measured on. The demonstration-calibrated s only sees demo endings;
    the policy's own failure states are what fool a detector (METHOD.md, known limits).

    ``baseline``: another reward model (the unrefined one) scored the same way on the same
    rollouts, reported under "before"."""
    gen = torch.Generator().manual_seed(seed + 17)
    recs = run_episodes(policy, None, list(range(CHECK_SEED0, CHECK_SEED0 + n)), fleet=fleet, greedy=False,
                        reward_model=reward, stop_on_ground_truth=False, detector=None, generator=gen,
                        keep_frames=baseline is not None, control=_control(interrupt), groups=groups)
    recs = [r for r in recs if not r.error]
    # A refined model (``baseline`` given) may read the goal at d ~ 8-15: try s up to 20 for it.
    out = score_check([(r.d, r.gt) for r in recs], spec, tolerance, calibrate, beta,
                      wide=baseline is not None)
    if baseline is not None:
        from core.learning.refine import episode_d, from_record

        ds = episode_d(baseline, [from_record(r) for r in recs])
        out["before"] = score_check([(list(d), r.gt) for d, r in zip(ds, recs)], spec, tolerance, calibrate, beta)
    return out


def score_check(pairs: list[tuple[list[float], list[bool]]], spec: DetectorSpec, tolerance: int,
                calibrate: bool, beta: float, wide: bool = False) -> dict[str, Any]:
    held = pairs
    s_used, source = spec.threshold_s, "given"
    if calibrate and len(pairs) >= 4:
        fit, held = pairs[: len(pairs) // 2], pairs[len(pairs) // 2:]
        # ``wide``: up to 20 steps, for a refined reward model, which can read the goal at
        # d ~ 8-15 (its failure frames were pushed far above); else the usual 0.25-8.
        s_used, _ = calibrate_threshold(fit, candidates=WIDE_CANDIDATES if wide else None,
                                          patience=spec.patience, tolerance=tolerance, beta=beta, tie="middle")
        source = f"calibrated on {len(fit)} rollouts" + (f" (max F{beta:g})" if beta != 1.0 else " (max F1)")
    counts = DetectorCounts()
    for d, gt in held:
        counts = counts + score_episode(d, gt, s_used, spec.patience, tolerance)
    p, rc, f1 = precision_recall_f1(counts)
    return {"episodes": len(held), "precision": p, "recall": rc, "f1": f1,
            "counts": dataclasses.asdict(counts), "threshold_s": float(s_used), "threshold_source": source,
            "patience": spec.patience, "tolerance": tolerance, "calibration_beta": beta if calibrate else None,
            "true_success_rate": float(np.mean([any(gt) for _, gt in pairs])) if pairs else 0.0}


def _refined_reward(cfg: PracticeConfig, out: Path, policy: DojoPolicy, reward: DojoPolicy,
                    rmeta: dict[str, Any], fleet: Fleet, spec: DetectorSpec, log: Callable[..., None],
                    interrupt: Callable[[], None] | None = None) -> tuple[DojoPolicy, list]:
    """The reward model refined on ``cfg.refine_episodes`` rollouts of the starting policy
    labeled by the simulator's ground truth (``reward_refined.pt``; reused on resume), and
    those labeled rollouts (empty when reused)."""
    import copy

    from core.learning.refine import RefineConfig, from_record, refine_reward

    path = out / "reward_refined.pt"
    if path.exists():  # resumed: the latest refinement, compiled like the model it replaces
        refined, _ = load_checkpoint(path, reward.queries.device)
        refined.eval().requires_grad_(False)
        if cfg.compile and compile_enabled():
            refined.compile_inference(cfg.batch(fleet), warm_up=True)
        return refined, []
    if not getattr(fleet, "knows_success", True):
        raise PracticeRefused("refine_episodes needs simulated robots: their ground truth labels the rollouts. "
                              "On real robots, label episodes in the Review page instead, or set refine_episodes 0")
    t0 = time.perf_counter()
    gen = torch.Generator().manual_seed(cfg.seed + 29)
    recs = run_episodes(policy, None, list(range(REFINE_SEED0, REFINE_SEED0 + cfg.refine_episodes)), fleet=fleet,
                        greedy=False, keep_frames=True, stop_on_ground_truth=True, generator=gen,
                        control=_control(interrupt), groups=cfg.groups(fleet))
    labeled = [from_record(r) for r in recs if not r.error and r.frames]
    refined = copy.deepcopy(reward)
    refined.disable_compiled_inference()
    stats = refine_reward(refined, labeled, spec.threshold_s,
                          RefineConfig(steps=cfg.refine_steps, train_vision=cfg.refine_train_vision, seed=cfg.seed),
                          demos=_reward_demos(rmeta, log))
    stats["seconds"] = time.perf_counter() - t0
    save_checkpoint(path, refined, {**rmeta, "stage": "reward_refined", "refined_from": cfg.reward_checkpoint,
                                    "refine": stats})
    atomic_write_bytes(out / "refine.json", json.dumps(stats, indent=2).encode())
    log(f"reward model refined on {stats['labeled_episodes']} labeled rollouts ({stats['labeled_success']} "
        f"successes) in {stats['seconds']:.0f} s: mean d at the goal {stats['before']['d_goal_mean']:.2f} -> "
        f"{stats['after']['d_goal_mean']:.2f}, lowest d of failed episodes (mean) "
        f"{stats['before']['d_fail_min_mean']:.2f} -> {stats['after']['d_fail_min_mean']:.2f}")
    refined.eval().requires_grad_(False)
    if cfg.compile and compile_enabled():
        refined.compile_inference(cfg.batch(fleet), warm_up=True)
    return refined, labeled


def _reward_demos(rmeta: dict[str, Any], log: Callable[..., None]) -> list:
    """The reward model's Stage-1 demonstrations (mixed into every refinement step so the
    head keeps what it knew); none if they cannot be read (said in the log)."""
    try:
        from core.learning.dataset import load_datasets

        return load_datasets(rmeta["dataset"])[1] if rmeta.get("dataset") else []
    except (OSError, ValueError) as e:
        log(f"refinement without demonstrations (cannot read {rmeta.get('dataset')}: {e})")
        return []


def anchor_demos(pmeta: dict[str, Any]):
    """The policy's Stage-1 training demonstrations as a FrameTable and the rows that carry
    an action (``bc_weight``); held-out episodes are left out. Raises PracticeRefused when
    they cannot be read, naming the dataset and the fix."""
    from core.learning.dataset import FrameTable, held_out_episodes, held_out_key, load_datasets

    data = pmeta.get("dataset")
    if not data:
        raise PracticeRefused("bc_weight needs the policy's demonstrations, but its checkpoint names no dataset; "
                              "set bc_weight 0 or start from a Stage-1 checkpoint trained by Dojo")
    try:
        _, eps = load_datasets(data)
        held = {tuple(held_out_key(e)) for e in held_out_episodes(pmeta)}
    except (OSError, ValueError) as e:
        raise PracticeRefused(f"bc_weight needs the policy's demonstrations, and {data} cannot be read ({e}); "
                              "restore that dataset or set bc_weight 0") from e
    train = [e for e in eps if tuple(held_out_key(e)) not in held]
    if not train:
        raise PracticeRefused(f"bc_weight: {data} holds no training demonstrations; set bc_weight 0")
    table = FrameTable.from_episodes(train)
    return table, np.flatnonzero(table.action_mask)


def practice_label(rec: EpisodeRecord, verdict: bool | None, knows_success: bool):
    """A practice episode as a labeled episode for the reward model's refinement, or None
    when it has no label: a supervisor's verdict wins (success at the last frame); else the
    simulator's ground truth where the fleet has one (success at the first frame it held)."""
    from core.learning.refine import LabeledEpisode, from_record

    if not rec.frames or rec.error:
        return None
    if verdict is not None:
        return LabeledEpisode(np.stack(rec.frames), np.stack(rec.proprio).astype(np.float32), rec.instruction,
                              bool(verdict), None, rec.seed)
    return from_record(rec) if knows_success else None


def rerefine(reward: DojoPolicy, labeled: list, spec: DetectorSpec, cfg: PracticeConfig, out: Path,
             rmeta: dict[str, Any], demos: list, iteration: int, batch: int,
             interrupt: Callable[[], None] | None = None, memory: Sequence = ()) -> dict[str, Any]:
    """Refine ``reward`` in place on ``labeled`` practice episodes (``refine_every``) and
    ``memory`` (earlier labeled episodes, ``refine_memory``), save it as
    ``reward_refined.pt`` and recompile its rollout forward; returns the figures.
    ``interrupt`` may raise between gradient steps: the file on disk is then the previous
    refinement (the in-memory model is abandoned with the iteration)."""
    from core.learning.refine import RefineConfig, refine_reward

    t0 = time.perf_counter()
    recalibrate = cfg.threshold_s is None and cfg.calibrate_on_rollouts and cfg.refine_recalibrate \
        and len(labeled) >= 12
    held = labeled[::3] if recalibrate else []
    fit = list(memory) + ([e for i, e in enumerate(labeled) if i % 3] if recalibrate else list(labeled))
    reward.disable_compiled_inference()
    stats = refine_reward(reward, fit, spec.threshold_s,
                          RefineConfig(steps=cfg.refine_steps, train_vision=cfg.refine_train_vision,
                                       seed=cfg.seed * 1_000 + iteration), demos=demos, interrupt=interrupt)
    reward.eval().requires_grad_(False)
    if held:
        from core.learning.refine import episode_d

        pairs = [(list(d), [e.success and t >= (len(d) - 1 if e.goal_index is None else e.goal_index)
                            for t in range(len(d))]) for d, e in zip(episode_d(reward, held), held)]
        stats["check"] = score_check(pairs, spec, cfg.detector_tolerance, True, cfg.calibration_beta, wide=True)
    stats["seconds"] = time.perf_counter() - t0
    stats["iteration"] = iteration
    stats["memory_episodes"] = len(memory)
    save_checkpoint(out / "reward_refined.pt", reward, {**rmeta, "stage": "reward_refined",
                                                        "refined_from": cfg.reward_checkpoint,
                                                        "refined_at_iteration": iteration, "refine": stats})
    _append(out / "refine_log.jsonl", stats)
    if cfg.compile and compile_enabled():
        reward.compile_inference(batch, warm_up=True)
    return stats


def _control(interrupt: Callable[[], None] | None) -> Callable[[int, EpisodeRecord], None] | None:
    """A rollout's per-step hook that only lets ``interrupt`` raise (a worker asked to stop)."""
    if interrupt is None:
        return None

    def control(_robot: int, _rec: EpisodeRecord) -> None:
        interrupt()

    return control


def evaluate_success(policy: DojoPolicy, fleet: Fleet, n: int,
                     interrupt: Callable[[], None] | None = None,
                     on_step: Callable[[int, EpisodeRecord, dict[str, Any]], None] | None = None,
                     groups: int | None = None) -> dict[str, Any]:
    """Greedy success on fixed selection seeds (ground truth ends episodes). Test seeds
    (EVAL_SEED0) stay untouched, so a reported success is not fitted to them. ``interrupt``
    is called before every step and may raise to abandon the evaluation; ``on_step`` sees
    every frame (``run_episodes``'s hook: the worker streams the evaluation to Live)."""
    seeds = list(range(SELECT_SEED0, SELECT_SEED0 + n))
    recs = run_episodes(policy, None, seeds, fleet=fleet, greedy=True, control=_control(interrupt),
                        on_step=on_step, groups=groups)
    k = sum(r.success for r in recs)
    by_seed = {r.seed: int(bool(r.success)) for r in recs}
    return {"success": k / max(1, len(recs)), "success_ci": wilson_interval(k, len(recs)), "episodes": len(recs),
            "outcomes": [by_seed.get(sd) for sd in seeds]}


def gain_vs_start(start: list[int | None] | None, now: list[int | None]) -> dict[str, Any]:
    """Metrics row fields for the change in greedy success since the starting checkpoint,
    paired seed by seed (both evaluations run the selection seeds from SELECT_SEED0, so the
    common prefix is the same seeds); empty when the start's outcomes are unknown (a run
    begun before they were kept) or no seed was run by both."""
    if not start:
        return {}
    pairs = [(a, b) for a, b in zip(start, now) if a is not None and b is not None]
    if not pairs:
        return {}
    g = paired_gain([a for a, _ in pairs], [b for _, b in pairs])
    return {"eval_gain": g["gain"], "eval_gain_lo": g["ci"][0], "eval_gain_hi": g["ci"][1],
            "eval_gain_p": g["p"], "eval_gain_seeds": g["n"], "eval_gained": g["gained"], "eval_lost": g["lost"]}


def drop_message(row: dict[str, Any], state: dict[str, Any], rows: list[dict[str, Any]]) -> str:
    """Why practice stopped on a drop, with the figures and what would help. ``rows``: the
    run's metrics rows so far (the detector's false positives against ground truth, where
    the fleet knows it, show whether the policy is gaming it)."""
    first = next((r.get("eval_success") for r in rows if r.get("iteration") == 0), None)
    msg = (f"practice stopped at iteration {row['iteration']}: greedy success {100 * row['eval_success']:.0f} % "
           f"is below the start's{'' if first is None else f' {100 * first:.0f} %'} beyond noise in "
           f"{state['drops_in_row']} evaluations in a row ({format_points(row['eval_gain'])} pts, 95 % interval "
           f"[{format_points(row['eval_gain_lo'])}, {format_points(row['eval_gain_hi'])}] on the same "
           f"{row['eval_gain_seeds']} seeds).")
    its = [r for r in rows if r.get("iteration", 0) > 0 and "detector_fires" in r]
    if its:
        k = max(1, len(its) // 4)
        def share(block):
            fires = sum(r["detector_fires"] for r in block)
            return sum(r["detector_false_positives"] for r in block), fires
        (fp0, f0), (fp1, f1) = share(its[:k]), share(its[-k:])
        if f0 and f1:
            before, after = fp0 / f0, fp1 / f1
            gamed = after >= before + 0.1
            msg += (f" False positives among the detector's fires (against ground truth) went from {fp0}/{f0} in the "
                    f"first {k} iterations to {fp1}/{f1} in the last {k}"
                    + (": the policy is learning to fool the detector." if gamed else
                       ": not a clear rise, so the detector may not be the (only) cause."))
    best = state.get("best_iteration")
    msg += (f" The best checkpoint (iteration {best}, {100 * state['best_success']:.0f} %) is kept in best.pt. "
            "What would help: re-check the detector against labels (Review page, or the detector check with "
            "more rollouts), refine it on the labeled practice episodes as practice goes (refine_every), a larger s with "
            "patience, or a smaller learning rate; stop_after_drops 0 practises on regardless.")
    return msg


def _read_rows(path: Path) -> list[dict[str, Any]]:
    rows = []
    if path.exists():
        for line in path.read_text().splitlines():
            try:
                rows.append(json.loads(line))
            except ValueError:
                continue  # a line cut short by a crash
    return rows


def _batch(rows: list[tuple], n_frames: int, action_bins: int) -> dict[str, Any]:
    frames = np.stack([r[0] for r in rows])[:, :n_frames]
    prop = np.stack([r[1] for r in rows])[:, :n_frames]
    return {FRAMES: torch.from_numpy(frames), PROPRIO: torch.from_numpy(prop.astype(np.float32)),
            INSTRUCTION: [r[2] for r in rows],
            ACTION_BINS: torch.from_numpy(action_to_bins(np.stack([r[3] for r in rows]), action_bins))}


def _tuples(rec: EpisodeRecord, returns: np.ndarray) -> list[tuple]:
    """(frames [cur, prev], proprio [cur, prev], instruction, action, R_t) for every step."""
    out = []
    for t in range(rec.length):
        p = max(0, t - 1)
        out.append((np.stack([rec.frames[t], rec.frames[p]]), np.stack([rec.proprio[t], rec.proprio[p]]),
                    rec.instruction, rec.actions[t], float(returns[t])))
    return out


def _episode_stats(recs: list[EpisodeRecord], ep_returns: list[float]) -> dict[str, Any]:
    fired = [r.end_reason == END_DETECTOR for r in recs]
    fp = sum(f and not any(r.gt[max(0, r.detector_step - DEFAULT_TOLERANCE):]) for f, r in zip(fired, recs))
    fn = sum((not f) and r.success for f, r in zip(fired, recs))
    return {"episodes": len(recs), "mean_return": float(np.mean(ep_returns)) if ep_returns else 0.0,
            "mean_length": float(np.mean([r.length for r in recs])) if recs else 0.0,
            "detector_fires": int(sum(fired)), "detector_false_positives": int(fp),
            "detector_false_negatives": int(fn),
            "ground_truth_success": float(np.mean([r.success for r in recs])) if recs else 0.0}


def practice_settings(cfg: PracticeConfig) -> dict[str, Any]:
    """The run's settings as stored in its run.json: every field, and the starting and reward
    checkpoints' content hashes (a checkpoint gone since the run started is not compared)."""
    rec = dataclasses.asdict(cfg)
    for key in ("policy_checkpoint", "reward_checkpoint"):
        sha = file_sha256(rec[key])
        if sha is not None:
            rec[f"{key}_sha256"] = sha
    return rec


def run_practice(cfg: PracticeConfig, *, progress: bool = True,
                 callback: Callable[[dict[str, Any]], bool | None] | None = None,
                 fleet: Fleet | None = None,
                 on_episode_end: Callable[[EpisodeRecord, np.ndarray, int], None] | None = None,
                 control: Callable[[int, EpisodeRecord], str | None] | None = None,
                 on_step: Callable[[int, EpisodeRecord, dict[str, Any]], None] | None = None,
                 outcome_override: Callable[[EpisodeRecord], bool | None] | None = None,
                 on_detector: Callable[[dict[str, Any]], None] | None = None,
                 on_phase: Callable[[str], None] | None = None,
                 interrupt: Callable[[], None] | None = None,
                 on_eval_step: Callable[[int, EpisodeRecord, dict[str, Any]], None] | None = None,
                 on_discard: Callable[[int, EpisodeRecord], None] | None = None,
                 ) -> dict[str, Any]:
    """Self-improvement; returns a summary. ``callback(row)`` after every iteration
    (returning False stops). A given ``fleet`` is used and left open (the worker's).

    Hooks for the worker: ``on_episode_end(record, returns, iteration)`` (record it),
    ``control`` and ``on_step`` (see ``run_episodes``: stops, overrides, telemetry), and
    ``on_detector(check)`` receives the pre-practice detector check (its figures and the
    threshold s practice will use) before the first iteration; ``on_phase("evaluating")``
    before each greedy evaluation on the selection seeds (the fleet runs those episodes, no
    practice telemetry flows; ``on_eval_step`` sees their frames, like ``on_step``) and
    ``on_phase("practising")`` after it. ``on_discard(robot, record)``: an episode under way
    when the buffer filled was dropped (``finish_running_episodes`` False). ``interrupt()`` is
    called before every step of the rollouts outside practice (the refinement's, the
    detector check's, the evaluations') and may raise to abandon them: a worker asked to
    stop does not wait for a 100-episode evaluation to end (the iteration is redone on resume).
    ``outcome_override(record)`` -> True/False where a supervisor overrode the detector's
    verdict on that episode: its terminal step then gets d = 0 (success) or keeps the
    episode's last d with no terminal progress (failure), and the returns follow. It is asked
    when the episode ends and again before the iteration's update, so a verdict given while
    the episode is still in the buffer is used too."""
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    record = practice_settings(cfg)
    check_run_settings(out / "run.json", "practice", record, PRACTICE_MAY_CHANGE,
                       "Resume with the settings it started with, or give another run directory (--out) to "
                       "start a new run.")
    atomic_write_bytes(out / "run.json", json.dumps({"practice": record}, indent=2, default=str).encode())
    torch.manual_seed(cfg.seed)
    from core.learning.sft import resolve_device

    dev = resolve_device(cfg.device)
    reward, rmeta = load_checkpoint(cfg.reward_checkpoint, dev)
    reward.eval().requires_grad_(False)
    from sim_backends.multitask import resolve_task

    backend, env_config = resolve_task(rmeta.get("backend", "tabletop"), rmeta.get("env_config", {}),
                                       cfg.backend, cfg.env_config)
    env_config["terminate_on_success"] = bool(cfg.ground_truth_reward)

    state_path = out / "state.json"
    state = json.loads(state_path.read_text()) if state_path.exists() else {
        "iteration": 0, "episodes": 0, "best_success": -1.0, "best_iteration": None,
        "evals_since_best": 0, "seconds": 0.0, "done": False}
    start_ckpt = out / f"iter_{state['iteration']:04d}.pt" if state["iteration"] else Path(cfg.policy_checkpoint)
    policy, pmeta = load_checkpoint(start_ckpt, dev)
    if cfg.freeze_vision:
        for m in policy.vision_modules():
            m.requires_grad_(False)
    if cfg.trainable == "action_head":
        policy.requires_grad_(False)
        policy.action_head.requires_grad_(True)
    elif cfg.trainable != "policy":
        raise ValueError(f"trainable must be 'policy' or 'action_head', got {cfg.trainable!r}")
    params = [p for p in policy.parameters() if p.requires_grad]
    anchor = anchor_demos(pmeta) if cfg.bc_weight > 0 else None  # refused here, before any rollout
    opt = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    if state["iteration"]:
        payload = read_checkpoint(start_ckpt)
        if "optimizer" in payload:
            opt.load_state_dict(payload["optimizer"])

    threshold = cfg.threshold_s
    if threshold is None and int(rmeta.get("patience", 1)) == cfg.patience:
        threshold = rmeta.get("threshold_s")
    if threshold is None:
        from core.learning.dataset import held_out_episodes

        held = held_out_episodes(rmeta)
        if not held:
            raise PracticeRefused(f"{cfg.reward_checkpoint} carries no detector threshold and no held-out "
                                  "demonstrations to calibrate one; pass threshold_s (--threshold)")
        threshold = calibrate_on_demos(reward, held, cfg.patience)["threshold_s"]
    spec = DetectorSpec(float(threshold), cfg.patience)

    own = fleet is None
    if fleet is None:
        k = cfg.resolved_fleet_size()
        fleet = ProcessFleet(backend, env_config, k) if cfg.processes else \
            LocalFleet(partial(_make_env, backend, env_config), k)
    log = print if progress else (lambda *a, **k: None)
    if cfg.compile and compile_enabled():
        for model in (policy, reward):
            model.compile_inference(cfg.batch(fleet), warm_up=True)
    msg = f"rollout forward: policy {policy.inference_backend}; reward model {reward.inference_backend}"
    logging.getLogger("dojo.practice").info(msg)
    log(msg)
    summary: dict[str, Any] = {}
    try:
        check_path = out / "detector_check.json"
        unrefined, reward_path = None, cfg.reward_checkpoint
        memory: list = []  # labeled episodes earlier refinements trained on (refine_memory)
        if cfg.refine_episodes or (cfg.refine_every and (out / "reward_refined.pt").exists()):
            unrefined = reward
            reward, memory = _refined_reward(cfg, out, policy, reward, rmeta, fleet, spec, log, interrupt)
            memory = memory[-cfg.refine_memory:] if cfg.refine_memory > 0 else []
            reward_path = str(out / "reward_refined.pt")
        if cfg.check_episodes and not check_path.exists():
            with torch_threads(cfg.rollout_threads):
                chk = detector_check(policy, reward, fleet, spec, cfg.check_episodes, cfg.seed,
                                     tolerance=cfg.detector_tolerance,
                                     calibrate=cfg.threshold_s is None and cfg.calibrate_on_rollouts,
                                     beta=cfg.calibration_beta, baseline=unrefined, interrupt=interrupt,
                                     groups=cfg.groups(fleet))
            chk["passed"] = chk["precision"] >= cfg.min_precision and chk["recall"] >= cfg.min_recall
            atomic_write_bytes(check_path, json.dumps(chk, indent=2).encode())
            log(f"detector check: precision {chk['precision']:.2f} recall {chk['recall']:.2f} "
                f"(s={chk['threshold_s']:.2f} {chk['threshold_source']}, patience {spec.patience}, "
                f"{chk['episodes']} rollouts scored)")
            if "before" in chk:
                log(f"  before the refinement: precision {chk['before']['precision']:.2f} "
                    f"recall {chk['before']['recall']:.2f} (s={chk['before']['threshold_s']:.2f})")
        if check_path.exists():
            chk = json.loads(check_path.read_text())
            spec = DetectorSpec(float(chk["threshold_s"]), spec.patience)
            passed = chk["precision"] >= cfg.min_precision and chk["recall"] >= cfg.min_recall
            if passed != chk.get("passed"):  # judged against this start's bars (relaxed after a refusal)
                chk["passed"] = passed
                atomic_write_bytes(check_path, json.dumps(chk, indent=2).encode())
            if on_detector is not None:
                on_detector(chk)
            if not chk.get("passed", True):
                raise PracticeRefused(
                    f"practice refused: the success detector scored precision {chk['precision']:.2f} / "
                    f"recall {chk['recall']:.2f} against ground truth on {chk['episodes']} held-out rollouts "
                    f"(bar: {cfg.min_precision:.2f} / {cfg.min_recall:.2f}; s = {spec.threshold_s:.2f}, "
                    f"patience {spec.patience}). What would help: more demonstrations for Stage 1, a larger "
                    f"s with more patience (--patience), or a better image encoder. Figures: {check_path}")
        if state.get("threshold_s") is not None:  # re-calibrated by a periodic refinement
            spec = DetectorSpec(float(state["threshold_s"]), spec.patience)
        def evaluate() -> dict[str, Any]:
            if on_phase is not None:
                on_phase("evaluating")
            try:
                with torch_threads(cfg.rollout_threads):
                    return evaluate_success(policy, fleet, cfg.eval_episodes, interrupt, on_step=on_eval_step,
                                            groups=cfg.groups(fleet))
            finally:
                if on_phase is not None:
                    on_phase("practising")

        if state["iteration"] == 0 and state["best_success"] < 0 and cfg.eval_episodes:
            ev = evaluate()
            state["best_success"], state["best_iteration"] = ev["success"], 0
            state["eval_outcomes0"] = ev["outcomes"]
            save_checkpoint(out / "best.pt", policy, {**pmeta, "stage": "si", "iteration": 0,
                                                      "eval_success": ev["success"]})
            _append(out / "metrics.jsonl", {"iteration": 0, "episodes_total": 0, "eval_success": ev["success"],
                                            "eval_success_ci": ev["success_ci"], "eval_outcomes": ev["outcomes"]})
            log(f"iteration 0: eval success {ev['success']:.3f}")
            _save_state(state_path, state)
        # A budget or patience raised since the last run lets a finished run go on.
        dropped = bool(cfg.stop_after_drops) and state.get("drops_in_row", 0) >= cfg.stop_after_drops
        state["done"] = state["episodes"] >= cfg.max_episodes or state["evals_since_best"] >= cfg.plateau_evals \
            or dropped
        if not dropped:
            state.pop("stop_reason", None)
        t0 = time.perf_counter() - state["seconds"]
        n_frames, bins = policy.config.n_frames, policy.config.action_bins
        window: list = []  # labeled practice episodes since the last refinement (refine_every)
        demos: list | None = None
        while not state["done"]:
            it = state["iteration"] + 1
            t_it = time.perf_counter()
            gen = torch.Generator().manual_seed(cfg.seed * 100_003 + it)
            buffer: list[tuple] = []
            spans: list[tuple[EpisodeRecord, int, bool | None, float]] = []  # rec, buffer start, verdict, d_T
            recs: list[EpisodeRecord] = []
            ep_returns: list[float] = []
            seed_next = PRACTICE_SEED0 + cfg.seed * 1_000_000 + state["episodes"]

            def on_episode(rec: EpisodeRecord) -> bool:
                if rec.length == 0 or rec.error:
                    return True
                verdict = outcome_override(rec) if outcome_override is not None else None
                spans.append((rec, len(buffer), verdict, rec.d[-1] if rec.d else 0.0))
                if verdict is not None:
                    apply_override(rec, verdict)
                returns, ret = _episode_tuples(rec, cfg.gamma, cfg.ground_truth_reward)
                if on_episode_end is not None:
                    on_episode_end(rec, returns, it)
                buffer.extend(_tuples(rec, returns))
                recs.append(rec)
                ep_returns.append(ret)
                return len(buffer) < cfg.tuples_per_iteration

            # Ask for more seeds than needed; the rollout starts no episode once the buffer is
            # full, and the episodes under way then run to their end and join it (default) or
            # are dropped (finish_running_episodes False): on-policy, nothing carried over.
            seeds = list(range(seed_next, seed_next + cfg.tuples_per_iteration))
            dropped_eps: list[int] = []  # steps of each dropped episode (the fleet's work thrown away)
            length_hat = float(state.get("length_estimate") or fleet.max_steps)

            def may_start(steps: list[int]) -> bool:
                ahead = sum(max(length_hat - k, 1.0) for k in steps)
                return len(buffer) + ahead < cfg.tuples_per_iteration

            def discarded(robot: int, rec: EpisodeRecord) -> None:
                dropped_eps.append(rec.length)
                if on_discard is not None:
                    on_discard(robot, rec)

            with torch_threads(cfg.rollout_threads):
                run_episodes(policy, None, seeds, fleet=fleet, greedy=False, reward_model=reward,
                             stop_on_ground_truth=cfg.ground_truth_reward,
                             detector=None if cfg.ground_truth_reward else spec,
                             keep_frames=True, generator=gen, on_episode=on_episode, control=control,
                             on_step=on_step, groups=cfg.groups(fleet),
                             discard_on_stop=not cfg.finish_running_episodes, on_discard=discarded,
                             may_start=may_start if cfg.plan_starts else None)
            if outcome_override is not None:  # verdicts given after an episode ended, before this update
                for k, (rec, start, verdict, d_last) in enumerate(spans):
                    now = outcome_override(rec)
                    if now is None or now == verdict:
                        continue
                    spans[k] = (rec, start, now, d_last)
                    rec.d[-1] = d_last
                    apply_override(rec, now)
                    returns, ep_returns[k] = _episode_tuples(rec, cfg.gamma, cfg.ground_truth_reward)
                    buffer[start:start + rec.length] = _tuples(rec, returns)
            t_rollout = time.perf_counter() - t_it
            used = max([r.seed for r in recs], default=seed_next - 1) - seed_next + 1
            rng = np.random.default_rng([cfg.seed, it])
            order = rng.permutation(len(buffer))[: cfg.tuples_per_iteration]
            base = R.batch_baseline([buffer[j][4] for j in order], cfg.baseline)
            policy.train(cfg.update_dropout)
            for m in policy.vision_modules() if cfg.freeze_vision else []:
                m.eval()
            losses, bc_losses = [], []
            for k in range(0, len(order) - cfg.minibatch + 1, cfg.minibatch):
                rows = [buffer[j] for j in order[k:k + cfg.minibatch]]
                batch = _batch(rows, n_frames, bins)
                logp = policy.action_log_prob(batch)
                loss = R.reinforce_loss(logp, torch.tensor([r[4] - base for r in rows]), cfg.c)
                if anchor is not None:
                    table, acted = anchor
                    demo = table.batch(acted[rng.integers(0, len(acted), cfg.minibatch)], n_frames, bins)
                    bc = -policy.action_log_prob(demo).mean() / policy.config.action_dim
                    loss = loss + cfg.bc_weight * bc
                    bc_losses.append(bc.item())
                opt.zero_grad(set_to_none=True)
                loss.backward()
                torch.nn.utils.clip_grad_norm_(params, 1.0)
                opt.step()
                losses.append(loss.item())
            buffer.clear()
            t_update = time.perf_counter() - t_it - t_rollout
            steps = sum(r.length for r in recs)
            row = {"iteration": it, "episodes_total": state["episodes"] + used, **_episode_stats(recs, ep_returns),
                   "loss": float(np.mean(losses)) if losses else 0.0, "baseline": base,
                   # where the iteration's time went (the rest: refinement, evaluation, checkpoint)
                   "time_rollout_s": round(t_rollout, 3), "time_update_s": round(t_update, 3),
                   # steps of the kept episodes (those cut off when the buffer filled are not counted)
                   "rollout_steps_per_s": round(steps / t_rollout, 1) if t_rollout > 0 else None,
                   # episodes under way when the buffer filled, dropped, and the steps they had taken
                   "episodes_dropped": len(dropped_eps), "steps_dropped": int(sum(dropped_eps))}
            if bc_losses:
                row["bc_loss"] = float(np.mean(bc_losses))
            if cfg.refine_every:
                knows = bool(getattr(fleet, "knows_success", True))
                window += [lab for lab in (practice_label(r, v, knows) for r, _, v, _ in spans) if lab is not None]
                if it % cfg.refine_every == 0:
                    if len(window) < cfg.refine_min_labels:
                        log(f"iteration {it}: refinement skipped: {len(window)} labeled episodes "
                            f"(refine_min_labels {cfg.refine_min_labels})")
                    else:
                        demos = _reward_demos(rmeta, log) if demos is None else demos
                        rs = rerefine(reward, window, spec, cfg, out, rmeta, demos, it, cfg.batch(fleet), interrupt,
                                      memory=memory)
                        if cfg.refine_memory > 0:
                            memory = (memory + window)[-cfg.refine_memory:]
                        reward_path = str(out / "reward_refined.pt")
                        state["labels_used"] = state.get("labels_used", 0) + len(window)
                        if "check" in rs:
                            c = rs["check"]
                            spec = DetectorSpec(c["threshold_s"], spec.patience)
                            state["threshold_s"] = c["threshold_s"]
                            row.update(refine_threshold_s=c["threshold_s"], refine_precision=c["precision"],
                                       refine_recall=c["recall"], refine_held_out=len(window[::3]))
                            log(f"iteration {it}: s re-calibrated to {c['threshold_s']:.2f} on held-out practice "
                                f"episodes: precision {c['precision']:.2f} recall {c['recall']:.2f} "
                                f"({c['episodes']} scored)")
                        row.update(refine_labels=len(window), refine_label_success=sum(e.success for e in window),
                                   refine_memory=rs["memory_episodes"],
                                   refine_seconds=round(rs["seconds"], 1),
                                   refine_d_fail_min=[rs["before"]["d_fail_min_mean"], rs["after"]["d_fail_min_mean"]],
                                   refine_d_goal=[rs["before"]["d_goal_mean"], rs["after"]["d_goal_mean"]],
                                   labels_total=state["labels_used"])
                        log(f"iteration {it}: reward model refined on {rs['labeled_episodes']} labeled practice "
                            f"episodes ({rs['labeled_success']} successes) in {rs['seconds']:.0f} s: lowest d of "
                            f"failed episodes (mean) {rs['before']['d_fail_min_mean']:.2f} -> "
                            f"{rs['after']['d_fail_min_mean']:.2f}, d at the goal "
                            f"{rs['before']['d_goal_mean']:.2f} -> {rs['after']['d_goal_mean']:.2f}")
                    window = []
            state["iteration"], state["episodes"] = it, state["episodes"] + used
            if recs:  # plan_starts' estimate of an episode's length for the next iteration
                state["length_estimate"] = float(np.mean([r.length for r in recs]))
            if cfg.eval_every and cfg.eval_episodes and it % cfg.eval_every == 0:
                t_eval = time.perf_counter()
                ev = evaluate()
                row["time_eval_s"] = round(time.perf_counter() - t_eval, 3)
                row.update(eval_success=ev["success"], eval_success_ci=ev["success_ci"],
                           **gain_vs_start(state.get("eval_outcomes0"), ev["outcomes"]), eval_outcomes=ev["outcomes"])
                if ev["success"] > state["best_success"]:
                    state["best_success"], state["best_iteration"], state["evals_since_best"] = \
                        ev["success"], it, 0
                    save_checkpoint(out / "best.pt", policy, {**pmeta, "stage": "si", "iteration": it,
                                                              "eval_success": ev["success"]})
                else:
                    state["evals_since_best"] += 1
                dropped = row.get("eval_gain_hi") is not None and row["eval_gain_hi"] < 0
                state["drops_in_row"] = state.get("drops_in_row", 0) + 1 if dropped else 0
                if cfg.stop_after_drops and state["drops_in_row"] >= cfg.stop_after_drops:
                    state["stop_reason"] = drop_message(row, state, _read_rows(out / "metrics.jsonl") + [row])
                    log(state["stop_reason"])
            state["seconds"] = time.perf_counter() - t0
            row["seconds"] = state["seconds"]
            meta = {**pmeta, "stage": "si", "iteration": it, "parent": str(start_ckpt if it == 1 else
                                                                           out / f"iter_{it - 1:04d}.pt"),
                    "reward_checkpoint": reward_path, "practice": dataclasses.asdict(cfg), "stats": row}
            t_save = time.perf_counter()
            save_checkpoint(out / f"iter_{it:04d}.pt", policy, meta, optimizer=opt)
            row["time_checkpoint_s"] = round(time.perf_counter() - t_save, 3)
            if state["episodes"] >= cfg.max_episodes or state["evals_since_best"] >= cfg.plateau_evals \
                    or state.get("stop_reason"):
                state["done"] = True
            _append(out / "metrics.jsonl", row)
            _save_state(state_path, state)  # the iteration counts as completed from here
            log(json.dumps({k: (round(v, 4) if isinstance(v, float) else v) for k, v in row.items()
                            if k != "eval_outcomes"}))
            summary = row
            if callback is not None and callback(row) is False:
                break
    finally:
        if own:
            fleet.close()
    return {"run_dir": str(out), "best": str(out / "best.pt"), "best_success": state["best_success"],
            "best_iteration": state["best_iteration"], "episodes": state["episodes"],
            "iterations": state["iteration"], "seconds": state["seconds"], "last": summary,
            "threshold_s": spec.threshold_s, "inference": policy.inference_backend, "reward_checkpoint": reward_path,
            "reward_inference": reward.inference_backend,
            "stop_reason": state.get("stop_reason"), "labels_used": state.get("labels_used", 0)}


def _make_env(backend: str, env_config: dict[str, Any]):
    from sim_backends.registry import make_env

    return make_env(backend, env_config)


def _append(path: Path, row: dict[str, Any]) -> None:
    with open(path, "a") as f:
        f.write(json.dumps(row) + "\n")


def _save_state(path: Path, state: dict[str, Any]) -> None:
    atomic_write_bytes(path, json.dumps(state, indent=2).encode())
