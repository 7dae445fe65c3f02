"""Stage 2: self-improvement by on-policy REINFORCE on a fleet (docs/method.md, "Stage 2
practice").

The reward model / success detector is a frozen copy of a Stage-1 checkpoint (chosen
separately from the policy's starting checkpoint): d(o, g) = E[steps-to-go],
r_t = d(o_t, g) - d(o_{t+1}, g), an episode ends when d <= s has held for ``patience``
frames, at the step limit, or on an external stop. Ground truth is recorded beside the
detector's verdict and never used for reward or termination unless a flag asks for it.

Every iteration: roll the fleet out with the current (sampling) policy until
``tuples_per_iteration`` (o, a, g, R) tuples are collected, take
``tuples_per_iteration / minibatch`` gradient steps without replacement, clear the
buffer, write a checkpoint and its stats, and evaluate on fixed seeds every
``eval_every`` iterations. The best evaluated checkpoint is kept; practice stops at a
plateau or at the episode budget. Killed mid-run, it resumes from the last completed
iteration (same seeds -> same run). What happens is told to one observer as typed events
(``core.learning.practice.events``).
"""
from __future__ import annotations

import dataclasses
import json
import logging
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

from core.learning.checkpoint import load_checkpoint, read_checkpoint, save_checkpoint
from core.learning.fleet_kinds import make_sim_fleet
from core.learning.fleets import Fleet
from core.learning.policy import compile_enabled
from core.learning.practice.checks import check_refusal, checked_detector, demo_threshold, detector_check
from core.learning.practice.config import PRACTICE_MAY_CHANGE, PracticeConfig, PracticeRefused, practice_settings
from core.learning.practice.evaluation import drop_message, evaluate_success, gain_vs_start
from core.learning.practice.events import (PHASE_EVALUATING, PHASE_PRACTISING, DetectorReady, EpisodeDropped,
                                           EpisodeEnded, IterationEnded, PhaseChanged, PracticeObserver,
                                           StartEvaluated, StepTaken)
from core.learning.practice.refinement import PeriodicRefinement, refine_before_practice
from core.learning.practice.run_files import RunFiles
from core.learning.practice.update import (anchor_demos, episode_rewards, episode_stats, episode_tuples,
                                           torch_threads, update_policy)
from core.learning.rollout import EpisodeRecord, RolloutHooks, run_episodes
from core.method import rewards as rewards_math
from core.method.detector import DetectorSpec
from core.method.seeds import PRACTICE_SEED0


def run_practice(cfg: PracticeConfig, *, progress: bool = True, fleet: Fleet | None = None,
                 observer: PracticeObserver | None = None) -> dict[str, Any]:
    """Self-improvement; returns a summary. A given ``fleet`` is used and left open (the
    worker's); without one, a fleet of ``cfg.fleet_size`` simulators is made and closed here.
    ``observer`` receives the events and answers practice's questions (``PracticeObserver``)."""
    run = _Practice(cfg, observer or PracticeObserver(), print if progress else (lambda *a, **k: None))
    own = fleet is None
    run.fleet = fleet if fleet is not None else run.make_fleet()
    try:
        run.start()
        while not run.state["done"]:
            run.iterate()
            if not run.observer.keep_going():
                break
    finally:
        if own:
            run.fleet.close()
    return run.summary()


class _Practice:
    """One practice run: the models, the run directory's state, the detector, the fleet."""

    def __init__(self, cfg: PracticeConfig, observer: PracticeObserver, log: Callable[..., None]):
        from core.learning.device import resolve_device
        from sim_backends.multitask import resolve_task

        self.cfg, self.observer, self.log = cfg, observer, log
        self.files = RunFiles(cfg.out)
        self.files.start(practice_settings(cfg), PRACTICE_MAY_CHANGE)
        torch.manual_seed(cfg.seed)
        self.dev = resolve_device(cfg.device)
        self.reward, self.reward_meta = load_checkpoint(cfg.reward_checkpoint, self.dev)
        self.reward.eval().requires_grad_(False)
        self.reward_path = cfg.reward_checkpoint
        self.backend, self.env_config = resolve_task(self.reward_meta.get("backend", "tabletop"),
                                                     self.reward_meta.get("env_config", {}), cfg.backend, cfg.env_config)
        self.env_config["terminate_on_success"] = bool(cfg.ground_truth_reward)
        self.state = self.files.load_state()
        self.start_ckpt = (self.files.iteration(self.state["iteration"]) if self.state["iteration"]
                           else Path(cfg.policy_checkpoint))
        self._load_policy()
        patience = cfg.patience
        threshold = cfg.threshold_s if cfg.threshold_s is not None else \
            demo_threshold(cfg.reward_checkpoint, self.reward_meta, patience, self.reward)
        self.spec = DetectorSpec(float(threshold), patience)
        self.fleet: Fleet | None = None
        self.refinement: PeriodicRefinement | None = None

    def _load_policy(self) -> None:
        cfg = self.cfg
        self.policy, self.policy_meta = load_checkpoint(self.start_ckpt, self.dev)
        if cfg.freeze_vision:
            for m in self.policy.vision_modules():
                m.requires_grad_(False)
        if cfg.trainable == "action_head":
            self.policy.requires_grad_(False)
            self.policy.action_head.requires_grad_(True)
        elif cfg.trainable != "policy":
            raise ValueError(f"trainable must be 'policy' or 'action_head', got {cfg.trainable!r}")
        self.params = [p for p in self.policy.parameters() if p.requires_grad]
        self.anchor = anchor_demos(self.policy_meta) if cfg.bc_weight > 0 else None  # refused here, before any rollout
        self.opt = torch.optim.AdamW(self.params, lr=cfg.lr, weight_decay=cfg.weight_decay)
        if self.state["iteration"]:
            payload = read_checkpoint(self.start_ckpt)
            if "optimizer" in payload:
                self.opt.load_state_dict(payload["optimizer"])

    def make_fleet(self) -> Fleet:
        return make_sim_fleet(self.cfg.fleet_kind, self.backend, self.env_config, self.cfg.resolved_fleet_size(),
                              ray_address=self.cfg.ray_address)

    def emit(self, event: Any) -> None:
        self.observer.on_event(event)

    # --- before the first iteration ---------------------------------------------------
    def start(self) -> None:
        cfg = self.cfg
        if cfg.compile and compile_enabled():
            for model in (self.policy, self.reward):
                model.compile_inference(cfg.batch(self.fleet), warm_up=True)
        msg = (f"rollout forward: policy {self.policy.inference_backend}; "
               f"reward model {self.reward.inference_backend}")
        logging.getLogger("dojo.practice").info(msg)
        self.log(msg)
        self._replay_completed()
        self._prepare_detector()
        if self.state["iteration"] == 0 and self.state["best_success"] < 0 and cfg.eval_episodes:
            self._evaluate_start()
        # A budget or patience raised since the last run lets a finished run go on.
        state = self.state
        dropped = bool(cfg.stop_after_drops) and state.get("drops_in_row", 0) >= cfg.stop_after_drops
        state["done"] = state["episodes"] >= cfg.max_episodes or state["evals_since_best"] >= cfg.plateau_evals \
            or dropped
        if not dropped:
            state.pop("stop_reason", None)
        self.t0 = time.perf_counter() - state["seconds"]

    def _replay_completed(self) -> None:
        """Announce the iterations a previous run of this directory completed (a resume)."""
        rows = self.files.completed_rows(int(self.state["iteration"]))
        if 0 in rows and "eval_success" in rows[0]:
            self.emit(StartEvaluated(float(rows[0]["eval_success"]), int(self.cfg.eval_episodes)))
        for it in sorted(k for k in rows if k > 0):
            self.emit(IterationEnded(it, str(self.files.iteration(it)), rows[it],
                                     int(rows[it].get("episodes_total", self.state["episodes"])),
                                     self.reward_path, replayed=True))

    def _prepare_detector(self) -> None:
        cfg = self.cfg
        unrefined, memory = None, []
        if cfg.refine_episodes or (cfg.refine_every and self.files.refined_path.exists()):
            unrefined = self.reward
            self.reward, memory = refine_before_practice(cfg, self.files.out, self.policy, self.reward, self.reward_meta,
                                                         self.fleet, self.spec, self.log, self.observer.interrupt)
            self.reward_path = str(self.files.refined_path)
        if cfg.refine_every:
            self.refinement = PeriodicRefinement(cfg, self.files.out, self.reward_meta, memory, self.log)

        def run_check() -> dict[str, Any]:
            with torch_threads(cfg.rollout_threads):
                return detector_check(self.policy, self.reward, self.fleet, self.spec, cfg.check_episodes, cfg.seed,
                                      tolerance=cfg.detector_tolerance,
                                      calibrate=cfg.threshold_s is None and cfg.calibrate_on_rollouts,
                                      beta=cfg.calibration_beta, baseline=unrefined,
                                      interrupt=self.observer.interrupt, groups=cfg.groups(self.fleet))

        self.spec, chk = checked_detector(cfg, self.files, self.spec, run_check, self.log)
        refusal = check_refusal(cfg, chk, self.spec, self.files.check_path)
        if self.state.get("threshold_s") is not None and refusal is None:  # re-calibrated by a periodic refinement
            self.spec = DetectorSpec(float(self.state["threshold_s"]), self.spec.patience)
        self.emit(DetectorReady(self.spec, chk))
        if refusal is not None:
            raise PracticeRefused(refusal)

    def _evaluate(self) -> dict[str, Any]:
        self.emit(PhaseChanged(PHASE_EVALUATING))
        try:
            with torch_threads(self.cfg.rollout_threads):
                return evaluate_success(self.policy, self.fleet, self.cfg.eval_episodes, self.observer.interrupt,
                                        on_step=self._eval_step, groups=self.cfg.groups(self.fleet))
        finally:
            self.emit(PhaseChanged(PHASE_PRACTISING))

    def _eval_step(self, robot: int, rec: EpisodeRecord, obs: dict[str, Any]) -> None:
        self.emit(StepTaken(robot, rec, obs, evaluating=True))

    def _evaluate_start(self) -> None:
        ev = self._evaluate()
        state = self.state
        state["best_success"], state["best_iteration"] = ev["success"], 0
        state["eval_outcomes0"] = ev["outcomes"]
        save_checkpoint(self.files.best_path, self.policy, {**self.policy_meta, "stage": "si", "iteration": 0,
                                                            "eval_success": ev["success"]})
        self.files.append_metrics({"iteration": 0, "episodes_total": 0, "eval_success": ev["success"],
                                   "eval_success_ci": ev["success_ci"], "eval_outcomes": ev["outcomes"]})
        self.log(f"iteration 0: eval success {ev['success']:.3f}")
        self.files.save_state(state)
        self.emit(StartEvaluated(float(ev["success"]), int(self.cfg.eval_episodes)))

    # --- one iteration ----------------------------------------------------------------
    def iterate(self) -> None:
        cfg, state = self.cfg, self.state
        it = state["iteration"] + 1
        t_it = time.perf_counter()
        batch = _Collected(self, it)
        batch.collect()
        t_rollout = time.perf_counter() - t_it
        rng = np.random.default_rng([cfg.seed, it])
        losses = update_policy(self.policy, self.opt, self.params, batch.buffer, cfg, rng, self.anchor)
        batch.buffer.clear()
        t_update = time.perf_counter() - t_it - t_rollout
        steps = sum(r.length for r in batch.recs)
        row = {"iteration": it, "episodes_total": state["episodes"] + batch.used,
               **episode_stats(batch.recs, batch.ep_returns), "loss": losses["loss"], "baseline": losses["baseline"],
               # where the iteration's time went (the rest: refinement, evaluation, checkpoint)
               "time_rollout_s": round(t_rollout, 3), "time_update_s": round(t_update, 3),
               # steps of the kept episodes (those cut off when the buffer filled are not counted)
               "rollout_steps_per_s": round(steps / t_rollout, 1) if t_rollout > 0 else None,
               # episodes under way when the buffer filled, dropped, and the steps they had taken
               "episodes_dropped": len(batch.dropped), "steps_dropped": int(sum(batch.dropped))}
        if "bc_loss" in losses:
            row["bc_loss"] = losses["bc_loss"]
        self._refine(it, batch, row)
        state["iteration"], state["episodes"] = it, state["episodes"] + batch.used
        if batch.recs:  # plan_starts' estimate of an episode's length for the next iteration
            state["length_estimate"] = float(np.mean([r.length for r in batch.recs]))
        if cfg.eval_every and cfg.eval_episodes and it % cfg.eval_every == 0:
            self._evaluate_iteration(it, row)
        self._finish_iteration(it, row)

    def _refine(self, it: int, batch: "_Collected", row: dict[str, Any]) -> None:
        if self.refinement is None:
            return
        self.refinement.gather([(rec, verdict) for rec, _, verdict, _ in batch.spans],
                               bool(getattr(self.fleet, "knows_success", True)))
        if not self.refinement.due(it):
            return
        refined, spec = self.refinement.refine(self.reward, self.spec, it, self.cfg.batch(self.fleet), self.state,
                                               row, self.observer.interrupt)
        if refined:
            self.reward_path = str(self.files.refined_path)
        if spec is not None:
            self.spec = spec
            self.emit(DetectorReady(spec))

    def _evaluate_iteration(self, it: int, row: dict[str, Any]) -> None:
        cfg, state = self.cfg, self.state
        t_eval = time.perf_counter()
        ev = self._evaluate()
        row["time_eval_s"] = round(time.perf_counter() - t_eval, 3)
        row.update(eval_success=ev["success"], eval_success_ci=ev["success_ci"],
                   **gain_vs_start(state.get("eval_outcomes0"), ev["outcomes"]), eval_outcomes=ev["outcomes"])
        if ev["success"] > state["best_success"]:
            state["best_success"], state["best_iteration"], state["evals_since_best"] = ev["success"], it, 0
            save_checkpoint(self.files.best_path, self.policy, {**self.policy_meta, "stage": "si", "iteration": it,
                                                                "eval_success": ev["success"]})
        else:
            state["evals_since_best"] += 1
        dropped = row.get("eval_gain_hi") is not None and row["eval_gain_hi"] < 0
        state["drops_in_row"] = state.get("drops_in_row", 0) + 1 if dropped else 0
        if cfg.stop_after_drops and state["drops_in_row"] >= cfg.stop_after_drops:
            state["stop_reason"] = drop_message(row, state, self.files.metrics_rows() + [row])
            self.log(state["stop_reason"])

    def _finish_iteration(self, it: int, row: dict[str, Any]) -> None:
        cfg, state = self.cfg, self.state
        state["seconds"] = time.perf_counter() - self.t0
        row["seconds"] = state["seconds"]
        parent = self.start_ckpt if it == 1 else self.files.iteration(it - 1)
        meta = {**self.policy_meta, "stage": "si", "iteration": it, "parent": str(parent),
                "reward_checkpoint": self.reward_path, "practice": dataclasses.asdict(cfg), "stats": row}
        t_save = time.perf_counter()
        save_checkpoint(self.files.iteration(it), self.policy, meta, optimizer=self.opt)
        row["time_checkpoint_s"] = round(time.perf_counter() - t_save, 3)
        if state["episodes"] >= cfg.max_episodes or state["evals_since_best"] >= cfg.plateau_evals \
                or state.get("stop_reason"):
            state["done"] = True
        self.files.append_metrics(row)
        self.files.save_state(state)  # the iteration counts as completed from here
        self.log(json.dumps({k: (round(v, 4) if isinstance(v, float) else v) for k, v in row.items()
                             if k != "eval_outcomes"}))
        self.last_row = row
        self.emit(IterationEnded(it, str(self.files.iteration(it)), row, int(state["episodes"]), self.reward_path))

    def summary(self) -> dict[str, Any]:
        state, out = self.state, self.files.out
        return {"run_dir": str(out), "best": str(self.files.best_path), "best_success": state["best_success"],
                "best_iteration": state["best_iteration"], "episodes": state["episodes"],
                "iterations": state["iteration"], "seconds": state["seconds"], "last": getattr(self, "last_row", {}),
                "threshold_s": self.spec.threshold_s, "inference": self.policy.inference_backend,
                "reward_checkpoint": self.reward_path, "reward_inference": self.reward.inference_backend,
                "stop_reason": state.get("stop_reason"), "labels_used": state.get("labels_used", 0)}


class _Collected:
    """One iteration's rollouts: episodes until the buffer holds ``tuples_per_iteration``
    tuples, each told to the observer as it ends."""

    def __init__(self, run: _Practice, it: int):
        self.run, self.it = run, it
        self.buffer: list[tuple] = []
        self.spans: list[tuple[EpisodeRecord, int, bool | None, float]] = []  # rec, buffer start, verdict, d_T
        self.recs: list[EpisodeRecord] = []
        self.ep_returns: list[float] = []
        self.dropped: list[int] = []  # steps of each dropped episode (the fleet's work thrown away)
        self.seed_next = PRACTICE_SEED0 + run.cfg.seed * 1_000_000 + run.state["episodes"]
        self.length_hat = float(run.state.get("length_estimate") or run.fleet.max_steps)
        self.knows_success = bool(getattr(run.fleet, "knows_success", True))

    @property
    def used(self) -> int:
        """Seeds this iteration consumed: up to the last kept episode's (later ones are played again)."""
        return max([r.seed for r in self.recs], default=self.seed_next - 1) - self.seed_next + 1

    def collect(self) -> None:
        run, cfg = self.run, self.run.cfg
        gen = torch.Generator().manual_seed(cfg.seed * 100_003 + self.it)
        # Ask for more seeds than needed; the rollout starts no episode once the buffer is
        # full, and the episodes under way then are dropped (default) or run to their end and
        # join it (finish_running_episodes): on-policy, nothing carried over.
        seeds = list(range(self.seed_next, self.seed_next + cfg.tuples_per_iteration))
        with torch_threads(cfg.rollout_threads):
            run_episodes(run.policy, None, seeds, fleet=run.fleet, greedy=False, reward_model=run.reward,
                         stop_on_ground_truth=cfg.ground_truth_reward,
                         detector=None if cfg.ground_truth_reward else run.spec,
                         keep_frames=True, generator=gen, groups=cfg.groups(run.fleet),
                         discard_on_stop=not cfg.finish_running_episodes,
                         hooks=RolloutHooks(on_episode=self.on_episode, control=run.observer.control,
                                            on_step=self.on_step, on_discard=self.on_discard,
                                            may_start=self.may_start if cfg.plan_starts else None))
        self.late_overrides()

    def on_step(self, robot: int, rec: EpisodeRecord, obs: dict[str, Any]) -> None:
        self.run.emit(StepTaken(robot, rec, obs))

    def may_start(self, steps: list[int]) -> bool:
        ahead = sum(max(self.length_hat - k, 1.0) for k in steps)
        return len(self.buffer) + ahead < self.run.cfg.tuples_per_iteration

    def on_discard(self, robot: int, rec: EpisodeRecord) -> None:
        self.dropped.append(rec.length)
        self.run.emit(EpisodeDropped(robot, rec))

    def _returns(self, rec: EpisodeRecord) -> tuple[np.ndarray, np.ndarray]:
        r = episode_rewards(rec, self.run.cfg.ground_truth_reward)
        return r, rewards_math.discounted_returns(r, self.run.cfg.gamma)

    def on_episode(self, rec: EpisodeRecord) -> bool:
        run = self.run
        if rec.length == 0 or rec.error:
            return True
        verdict = run.observer.outcome_override(rec)
        observed = list(rec.d[: rec.length + 1])
        self.spans.append((rec, len(self.buffer), verdict, rec.d[-1] if rec.d else 0.0))
        if verdict is not None:
            rewards_math.override_final_d(rec.d, verdict)
        r, returns = self._returns(rec)
        full = len(self.buffer) + rec.length >= run.cfg.tuples_per_iteration
        run.emit(EpisodeEnded(rec, self.it, r, returns, observed, run.spec, verdict,
                              bool(rec.success) if self.knows_success else None, buffer_full=full))
        self.buffer.extend(episode_tuples(rec, returns))
        self.recs.append(rec)
        self.ep_returns.append(float(r.sum()))
        return len(self.buffer) < run.cfg.tuples_per_iteration

    def late_overrides(self) -> None:
        """Verdicts given after an episode ended, before this update: its returns follow."""
        for k, (rec, start, verdict, d_last) in enumerate(self.spans):
            now = self.run.observer.outcome_override(rec)
            if now is None or now == verdict:
                continue
            self.spans[k] = (rec, start, now, d_last)
            rec.d[-1] = d_last
            rewards_math.override_final_d(rec.d, now)
            r, returns = self._returns(rec)
            self.ep_returns[k] = float(r.sum())
            self.buffer[start:start + rec.length] = episode_tuples(rec, returns)
