"""Refining the frozen reward model on labeled episodes during practice (``core.learning.refine``
does the training): before practice, on labeled rollouts of the starting policy
(``refine_episodes``), and every few iterations on the labeled practice episodes
(``refine_every``). Labels come from the simulator's ground truth or a supervisor's verdict."""
from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import torch

from core.files import atomic_write_bytes
from core.learning.checkpoint import load_checkpoint, save_checkpoint
from core.learning.fleets import Fleet
from core.learning.policy import DojoPolicy, compile_enabled
from core.learning.practice.checks import score_check
from core.learning.practice.config import PracticeConfig, PracticeRefused
from core.learning.practice.evaluation import interrupt_control
from core.learning.practice.run_files import append_jsonl
from core.learning.rollout import EpisodeRecord, RolloutHooks, run_episodes
from core.method.detector import DetectorSpec
from core.method.seeds import REFINE_SEED0


def refine_before_practice(cfg: PracticeConfig, out: Path, policy: DojoPolicy, reward: DojoPolicy,
                    reward_meta: dict[str, Any], fleet: Fleet, spec: DetectorSpec, log: Callable[..., None],
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
                        hooks=RolloutHooks(control=interrupt_control(interrupt)), groups=cfg.groups(fleet))
    labeled = [from_record(r) for r in recs if not r.error and r.frames]
    refined = copy.deepcopy(reward)
    refined.disable_compiled_inference()
    stats = refine_reward(refined, labeled, spec.threshold_s,
                          RefineConfig(steps=cfg.refine_steps, train_vision=cfg.refine_train_vision, seed=cfg.seed),
                          demos=reward_demos(reward_meta, log))
    stats["seconds"] = time.perf_counter() - t0
    save_checkpoint(path, refined, {**reward_meta, "stage": "reward_refined", "refined_from": cfg.reward_checkpoint,
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


def reward_demos(reward_meta: dict[str, Any], log: Callable[..., None]) -> list:
    """The reward model's Stage-1 demonstrations (mixed into every refinement step so the
    head keeps what it knew); none if they cannot be read (said in the log)."""
    try:
        from core.learning.dataset import load_datasets

        return load_datasets(reward_meta["dataset"])[1] if reward_meta.get("dataset") else []
    except (OSError, ValueError) as e:
        log(f"refinement without demonstrations (cannot read {reward_meta.get('dataset')}: {e})")
        return []


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


def refine_on_practice_episodes(reward: DojoPolicy, labeled: list, spec: DetectorSpec, cfg: PracticeConfig, out: Path,
             reward_meta: dict[str, Any], demos: list, iteration: int, batch: int,
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
    save_checkpoint(out / "reward_refined.pt", reward, {**reward_meta, "stage": "reward_refined",
                                                        "refined_from": cfg.reward_checkpoint,
                                                        "refined_at_iteration": iteration, "refine": stats})
    append_jsonl(out / "refine_log.jsonl", stats)
    if cfg.compile and compile_enabled():
        reward.compile_inference(batch, warm_up=True)
    return stats


class PeriodicRefinement:
    """``refine_every``: gathers the labeled practice episodes of each iteration and, every
    ``refine_every`` iterations, refines the reward model on them (and on up to
    ``refine_memory`` earlier ones); where s is calibrated, re-calibrates it on a held-out
    third. Labeled frames live in memory only: a resumed run's next refinement starts without
    the episodes gathered before it stopped."""

    def __init__(self, cfg: PracticeConfig, out: Path, reward_meta: dict[str, Any], memory: list,
                 log: Callable[..., None]):
        self.cfg, self.out, self.reward_meta, self.log = cfg, out, reward_meta, log
        self.memory = memory[-cfg.refine_memory:] if cfg.refine_memory > 0 else []
        self.window: list = []  # labeled practice episodes since the last refinement
        self.demos: list | None = None

    def gather(self, judged: Sequence[tuple[EpisodeRecord, bool | None]], knows_success: bool) -> None:
        self.window += [lab for lab in (practice_label(r, v, knows_success) for r, v in judged) if lab is not None]

    def due(self, it: int) -> bool:
        return bool(self.cfg.refine_every) and it % self.cfg.refine_every == 0

    def refine(self, reward: DojoPolicy, spec: DetectorSpec, it: int, batch: int, state: dict[str, Any],
               row: dict[str, Any], interrupt: Callable[[], None] | None) -> tuple[bool, DetectorSpec | None]:
        """Refine ``reward`` in place (iteration ``it``); the metrics ``row`` gets the figures and
        ``state`` the labels used. Returns whether it refined, and the re-calibrated detector if
        s moved."""
        cfg, window, self.window = self.cfg, self.window, []
        if len(window) < cfg.refine_min_labels:
            self.log(f"iteration {it}: refinement skipped: {len(window)} labeled episodes "
                     f"(refine_min_labels {cfg.refine_min_labels})")
            return False, None
        self.demos = reward_demos(self.reward_meta, self.log) if self.demos is None else self.demos
        rs = refine_on_practice_episodes(reward, window, spec, cfg, self.out, self.reward_meta, self.demos, it, batch,
                                         interrupt, memory=self.memory)
        if cfg.refine_memory > 0:
            self.memory = (self.memory + window)[-cfg.refine_memory:]
        state["labels_used"] = state.get("labels_used", 0) + len(window)
        new_spec = None
        if "check" in rs:
            c = rs["check"]
            new_spec = DetectorSpec(c["threshold_s"], spec.patience)
            state["threshold_s"] = c["threshold_s"]
            row.update(refine_threshold_s=c["threshold_s"], refine_precision=c["precision"],
                       refine_recall=c["recall"], refine_held_out=len(window[::3]))
            self.log(f"iteration {it}: s re-calibrated to {c['threshold_s']:.2f} on held-out practice "
                     f"episodes: precision {c['precision']:.2f} recall {c['recall']:.2f} ({c['episodes']} scored)")
        row.update(refine_labels=len(window), refine_label_success=sum(e.success for e in window),
                   refine_memory=rs["memory_episodes"], refine_seconds=round(rs["seconds"], 1),
                   refine_d_fail_min=[rs["before"]["d_fail_min_mean"], rs["after"]["d_fail_min_mean"]],
                   refine_d_goal=[rs["before"]["d_goal_mean"], rs["after"]["d_goal_mean"]],
                   labels_total=state["labels_used"])
        self.log(f"iteration {it}: reward model refined on {rs['labeled_episodes']} labeled practice "
                 f"episodes ({rs['labeled_success']} successes) in {rs['seconds']:.0f} s: lowest d of "
                 f"failed episodes (mean) {rs['before']['d_fail_min_mean']:.2f} -> "
                 f"{rs['after']['d_fail_min_mean']:.2f}, d at the goal "
                 f"{rs['before']['d_goal_mean']:.2f} -> {rs['after']['d_goal_mean']:.2f}")
        return True, new_spec
