"""The worker's side of a practice job: an observer of practice's events
(``core.learning.practice.events``) that writes what they carry to the database (episodes
with their steps and frames, checkpoint rows, metrics, promotion, the task's detector
calibration) and to live telemetry, and answers practice's questions from the supervisors'
commands in the database (stop, pause, overrides)."""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from sqlalchemy import select

from core.learning.practice.events import (PHASE_EVALUATING, DetectorReady, EpisodeDropped, EpisodeEnded,
                                           IterationEnded, PhaseChanged, PracticeObserver, StartEvaluated, StepTaken)
from core.learning.rollout import END_ABORTED, END_DETECTOR, END_STOPPED, HOLD
from core.method.detector import DetectorSpec
from core.method.stats import format_points
from core.worker.checkpoints import jsonable, norm_path, promote_if_not_worse
from core.worker.job import JobContext, JobStopped
from core.worker.telemetry import encode_jpeg
from storage import repo
from storage.models import Checkpoint, Episode, Job, PracticeSession, Robot

EVALUATING_MESSAGE = "evaluating the policy on the selection seeds"


@dataclass
class _Slot:
    """What the recorder knows of the episode a robot is running."""

    rec: Any = None
    uid: str | None = None
    episode_id: int | None = None
    started: bool = False
    jpegs: dict[int, bytes] = field(default_factory=dict)
    status: str = "running"


class PracticeRecorder(PracticeObserver):
    def __init__(self, worker: Any, ctx: JobContext, cfg: Any, fleet: Any, *, task_id: int, session_id: int,
                 start_checkpoint_id: int, frame_every: int, jpeg_quality: int, promote: bool,
                 promote_tolerance: float, sim_robot_ids: dict[int, int] | None = None):
        self.w, self.ctx, self.cfg, self.fleet, self.db = worker, ctx, cfg, fleet, worker.db
        self.task_id, self.session_id = task_id, session_id
        self.start_checkpoint_id = self.checkpoint_id = start_checkpoint_id
        self.spec: DetectorSpec | None = None  # told by DetectorReady before the first practice episode
        self.frame_every, self.jpeg_quality = int(frame_every), int(jpeg_quality)
        self.promote, self.promote_tolerance = promote, promote_tolerance
        self.slots = [_Slot() for _ in range(fleet.size)]
        self.slot_robot: dict[int, int] = dict(sim_robot_ids or {})  # slot -> robots.id
        self._robot_names: dict[int, str] = {}
        self._message_before_eval: str | None = None
        self.iteration, self.episodes_total = 1, 0
        self.buffer_full, self.recorded = False, 0  # buffer_full: told by EpisodeEnded, reset per iteration
        self._ep_of: dict[int, tuple[Any, int]] = {}  # id(record) -> (record, episodes.id), this iteration
        self.control_state = _ControlState(self)

    # --- events ------------------------------------------------------------------------
    def on_event(self, event: Any) -> None:
        if isinstance(event, StepTaken):
            (self._eval_step if event.evaluating else self._step)(event)
        elif isinstance(event, EpisodeEnded):
            self._episode_ended(event)
        elif isinstance(event, EpisodeDropped):
            self._episode_dropped(event)
        elif isinstance(event, IterationEnded):
            self._iteration_ended(event)
        elif isinstance(event, StartEvaluated):
            self._start_evaluated(event)
        elif isinstance(event, DetectorReady):
            self._detector_ready(event)
        elif isinstance(event, PhaseChanged):
            self._phase_changed(event.phase)

    def uid(self, iteration: int, seed: int) -> str:
        return f"job{self.ctx.job_id}-it{iteration:04d}-seed{seed}"

    def robot_key(self, i: int) -> str:
        name = self.fleet.robot_name(i)
        return name if name else f"{self.w.name}/sim-{i}"

    def robot_id(self, i: int) -> int | None:
        name = self.fleet.robot_name(i)
        if name is None:
            return self.slot_robot.get(i)
        if self._robot_names.get(i) != name:  # a remote slot got (another) robot
            spec = getattr(self.fleet.inner, "robot_spec", lambda i: None)(i)
            with self.db.write() as s:
                r = repo.register_robot(s, name, "remote", task_id=self.task_id, worker=self.w.name,
                                        spec=spec.to_json() if spec is not None else None)
                self.slot_robot[i] = r.id
            self._robot_names[i] = name
        return self.slot_robot.get(i)

    def _publish(self, i: int, msg: dict[str, Any], jpeg: bytes | None = None) -> None:
        tele = self.w.telemetry
        if tele is not None:
            tele.publish(self.robot_key(i), {"robot_id": self.slot_robot.get(i), "slot": i,
                                             "job_id": self.ctx.job_id, "session_id": self.session_id,
                                             "task_id": self.task_id, "checkpoint_id": self.checkpoint_id, **msg}, jpeg)

    def _step(self, ev: StepTaken) -> None:
        i, rec = ev.robot, ev.record
        st = self.slots[i]
        if st.rec is not rec:
            st = self.slots[i] = _Slot(rec=rec, uid=self.uid(self.iteration, rec.seed))
        t, d = len(rec.d) - 1, float(rec.d[-1])
        count = rec.detector_counts[t] if t < len(rec.detector_counts) else None
        parked = self.fleet.parked[i]
        want_frame = not parked and self.frame_every > 0 and t % self.frame_every == 0
        tele = self.w.telemetry
        jpeg = None
        if want_frame or (tele is not None and tele.n_clients and not parked):
            jpeg = encode_jpeg(ev.observation["image"], self.jpeg_quality)
        if want_frame:
            for k in [k for k in st.jpegs if k >= t]:  # a held frame is seen again
                del st.jpegs[k]
            st.jpegs[t] = jpeg
        spec = self.spec
        self._publish(i, {
            "episode_uid": None if parked else st.uid, "episode_id": st.episode_id, "seed": rec.seed,
            "instruction": rec.instruction, "step": t, "d": d,
            "reward": (float(rec.d[t - 1]) - d) if t > 0 else None,
            "detector": {"count": count, "patience": spec.patience if spec else None,
                         "threshold": spec.threshold_s if spec else None,
                         "fired": bool(spec and count is not None and count >= spec.patience)},
            "status": "parked" if parked else st.status}, jpeg)

    def _eval_step(self, ev: StepTaken) -> None:
        """A frame of an evaluation episode: streamed to Live (status "evaluating"), never
        stored; ground truth ends these episodes, so the detector is not shown."""
        tele = self.w.telemetry
        if tele is None or not tele.n_clients:
            return
        rec = ev.record
        self._publish(ev.robot, {
            "episode_uid": f"eval-{rec.seed}", "episode_id": None, "seed": rec.seed, "instruction": rec.instruction,
            "step": len(rec.d) - 1, "d": float(rec.d[-1]), "reward": None, "detector": "evaluating",
            "status": "evaluating"}, encode_jpeg(ev.observation["image"], self.jpeg_quality))

    def _phase_changed(self, phase: str) -> None:
        """Practice evaluates its policy on the selection seeds every few iterations; the
        fleet is busy then but sends no practice frames, so every robot's Live card is told
        "evaluating" instead of looking stalled."""
        if phase == PHASE_EVALUATING:
            self._message_before_eval = self.ctx.message
            self.ctx.message = EVALUATING_MESSAGE
            for i in range(self.fleet.size):
                self._publish(i, {"episode_uid": None, "episode_id": None, "step": None, "d": None,
                                  "detector": "evaluating", "status": "evaluating"})
        elif self.ctx.message == EVALUATING_MESSAGE:
            self.ctx.message = self._message_before_eval

    def publish_ended(self, reason: str) -> None:
        """Each robot's last Live message when the job ends: a browser that opens Live later
        sees "offline" and why, not a stale frame that looks live."""
        for i in range(self.fleet.size):
            self._publish(i, {"episode_uid": None, "episode_id": None, "step": None, "d": None,
                              "detector": reason, "status": "offline"})

    def _detector_ready(self, ev: DetectorReady) -> None:
        """Practice's detector from now on; a pre-practice check's figures become the task's
        calibration (the Tasks page shows how s was chosen)."""
        self.spec = ev.spec
        check = ev.check
        if check is None:
            return
        figures = {k: check.get(k) for k in ("precision", "recall", "f1", "counts", "threshold_s",
                                             "threshold_source", "patience", "episodes", "passed")}
        figures["source"] = f"pre-practice check on the starting policy's rollouts (job {self.ctx.job_id})"
        if check.get("before"):  # the reward model was refined on labeled rollouts first
            b = check["before"]
            figures["before_refinement"] = {k: b.get(k) for k in ("precision", "recall", "threshold_s", "counts")}
            figures["source"] += ", with the reward model refined on labeled rollouts"
        with self.db.write() as s:
            repo.update_task(s, self.task_id, calibration=jsonable(figures))
        self.ctx.message = (f"detector check: precision {check['precision']:.2f} recall {check['recall']:.2f} "
                            f"(s = {check['threshold_s']:.2f})" + (
                                f"; before the refinement {check['before']['precision']:.2f} / "
                                f"{check['before']['recall']:.2f}" if check.get("before") else ""))

    def _start_episode(self, i: int, rec: Any) -> None:
        st = self.slots[i]
        with self.db.write() as s:
            ep = repo.start_episode(s, uid=st.uid, task_id=self.task_id, session_id=self.session_id,
                                    robot_id=self.slot_robot.get(i), checkpoint_id=self.checkpoint_id,
                                    job_id=self.ctx.job_id, worker=self.w.name, instruction=rec.instruction,
                                    seed=int(rec.seed), source="practice",
                                    detector_threshold=self.spec.threshold_s if self.spec else None)
            st.episode_id = ep.id
        st.started = True
        self._ep_of[id(rec)] = (rec, ep.id)

    def _episode_rows(self, ev: EpisodeEnded, st: _Slot) -> tuple[list[dict[str, Any]], dict[int, bytes]]:
        """The episode's steps (one per frame; the last frame has no action) and stored frames."""
        rec, T = ev.record, ev.record.length
        d, counts = ev.d_observed, rec.detector_counts
        stored = sorted(st.jpegs)
        steps = []
        for t in range(len(d)):
            ft = max((k for k in stored if k <= t), default=None)
            steps.append({"t": t, "action": np.asarray(rec.actions[t]).tolist() if t < T else None,
                          "d": float(d[t]), "reward": float(ev.rewards[t]) if t < T else None,
                          "detector_count": counts[t] if t < len(counts) else None,
                          "detector_fired": rec.detector_step == t, "frame_t": ft,
                          "proprio": np.asarray(rec.proprio[t], np.float32).tolist() if t < len(rec.proprio) else None})
        return steps, {t: st.jpegs[t] for t in stored if t < len(d)}

    def _episode_ended(self, ev: EpisodeEnded) -> None:
        rec, T = ev.record, ev.record.length
        i = rec.robot if 0 <= rec.robot < len(self.slots) and self.slots[rec.robot].rec is rec else None
        st = self.slots[i] if i is not None else _Slot(rec=rec)
        uid = self.uid(ev.iteration, rec.seed)
        steps, frames = self._episode_rows(ev, st)
        with self.db.write() as s:
            if st.uid and st.uid != uid and st.episode_id is not None:
                repo.abort_episode(s, st.episode_id, f"superseded by {uid}")
            res = repo.finish_episode(
                s, uid=uid, task_id=self.task_id, steps=steps, frames=frames,
                detector_success=rec.detector_step is not None, detector_step=rec.detector_step,
                gt_success=ev.ground_truth, length=T, total_return=ev.total_return,
                final_d=float(ev.d_observed[-1]) if ev.d_observed else None,
                session_id=self.session_id, robot_id=self.slot_robot.get(i) if i is not None else None,
                checkpoint_id=self.checkpoint_id, job_id=self.ctx.job_id, worker=self.w.name,
                instruction=rec.instruction, seed=int(rec.seed), source="practice",
                detector_threshold=ev.detector.threshold_s,
                meta={"end_reason": rec.end_reason, "iteration": ev.iteration, "patience": ev.detector.patience})
            override, eid = res.episode.override_success, res.episode.id
        self.recorded += int(res.written)
        self._ep_of[id(rec)] = (rec, eid)
        self.buffer_full = self.buffer_full or ev.buffer_full
        if self.w.telemetry is not None and i is not None:
            self.w.telemetry.publish_event(self.robot_key(i), {
                "episode_uid": uid, "episode_id": eid, "end_reason": rec.end_reason, "length": T,
                "detector_success": rec.detector_step is not None, "override": override,
                "gt_success": ev.ground_truth, "return": ev.total_return, "iteration": ev.iteration})
        st.started, st.episode_id = False, None

    def _episode_dropped(self, ev: EpisodeDropped) -> None:
        """The learner dropped an episode under way when the buffer filled: its stored row ends
        as aborted, saying why."""
        st = self.slots[ev.robot]
        if st.rec is ev.record and st.episode_id is not None:
            with self.db.write() as s:
                repo.abort_episode(s, st.episode_id, "discarded: the iteration's buffer was full",
                                   length=ev.record.length)
        self._ep_of.pop(id(ev.record), None)
        st.started, st.episode_id = False, None

    def on_failure(self, i: int, failure: Any) -> None:
        """A robot failed mid-episode (the supervised fleet says so): its episode is aborted."""
        st = self.slots[i]
        if st.started and st.episode_id is not None:
            with self.db.write() as s:
                repo.abort_episode(s, st.episode_id, f"robot failed: {failure.message}")
            if self.w.telemetry is not None:
                self.w.telemetry.publish_event(self.robot_key(i), {"episode_uid": st.uid, "episode_id": st.episode_id,
                                                                   "end_reason": "aborted", "error": failure.message})
            st.started, st.episode_id = False, None

    def abort_leftovers(self, reason: str) -> list[int]:
        with self.db.write() as s:
            return repo.abort_running_episodes(s, job_id=self.ctx.job_id, reason=reason)

    # --- iterations, checkpoints, promotion ---------------------------------------------
    def _start_evaluated(self, ev: StartEvaluated) -> None:
        """The start's evaluation on the selection seeds. Stage 1 evaluated a prefix of the same
        seeds (often 50): a larger evaluation replaces a smaller one, so the baseline of the
        success curve is the better-measured one."""
        with self.db.write() as s:
            ck = repo.get_checkpoint(s, self.start_checkpoint_id)
            same_seeds = (ck.metrics or {}).get("eval_seeds") == "selection"
            if ck.eval_success is None or (same_seeds and (ck.eval_episodes or 0) < ev.episodes):
                repo.set_evaluation(s, ck.id, ev.success, ev.episodes,
                                    metrics={"eval_seeds": "selection", "evaluated_by_job": self.ctx.job_id})
                if self.promote:
                    promote_if_not_worse(s, ck, self.promote_tolerance)

    def _record_checkpoint(self, ev: IterationEnded) -> None:
        """The iteration's checkpoint row (parent: the one it was trained from), its metrics and
        the promotion decision. Idempotent: a row found by path is kept."""
        path = norm_path(ev.checkpoint)
        with self.db.read() as s:
            cid = s.scalar(select(Checkpoint.id).where(Checkpoint.path == path))
        if cid is not None:
            self.checkpoint_id = cid
            return
        row = ev.metrics
        numeric = {k: float(v) for k, v in row.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}
        evaluated = row.get("eval_success")
        with self.db.write() as s:
            ck = repo.add_checkpoint(s, "si", path, parent_id=self.checkpoint_id, task_id=self.task_id,
                                     iteration=ev.iteration,
                                     metrics={**row, "run_dir": norm_path(self.cfg.out), "job_id": self.ctx.job_id,
                                              "reward_checkpoint": self.cfg.reward_checkpoint,
                                              "start_checkpoint_id": self.start_checkpoint_id},
                                     eval_success=None if evaluated is None else float(evaluated),
                                     eval_episodes=int(self.cfg.eval_episodes) if evaluated is not None else None)
            repo.log_metrics(s, numeric, ev.iteration, session_id=self.session_id, checkpoint_id=ck.id,
                             task_id=self.task_id, job_id=self.ctx.job_id)
            if evaluated is not None and self.promote:
                promote_if_not_worse(s, ck, self.promote_tolerance)
            self.checkpoint_id = ck.id

    def _iteration_ended(self, ev: IterationEnded) -> None:
        self._record_checkpoint(ev)
        self.iteration, self.episodes_total = ev.iteration + 1, ev.episodes_total
        if ev.replayed:
            return
        self.buffer_full = False
        self._ep_of.clear()
        self.ctx.progress = min(1.0, self.episodes_total / max(1, self.cfg.max_episodes))
        self.ctx.message = iteration_message(ev.metrics, self.episodes_total, self.cfg.max_episodes)
        self.ctx.state = {"iteration": ev.iteration, "episodes": self.episodes_total,
                          "checkpoint_id": self.checkpoint_id, "run_dir": str(self.cfg.out)}

    def keep_going(self) -> bool:
        return not self.w.stopping.is_set()

    # --- questions practice asks ----------------------------------------------------------
    def interrupt(self) -> None:
        """Asked at every step of practice's other rollouts (detector check, refinement,
        evaluations): raises JobStopped when the worker, the job or the session is stopping."""
        self.control_state.poll()
        self.control_state.check_stop()

    def control(self, i: int, rec: Any) -> str | None:
        return self.control_state.verdict(i, rec)

    def outcome_override(self, rec: Any) -> bool | None:
        """The supervisor's verdict on this episode, if any (asked at its end and again before
        the learner's update, while it is still in the buffer)."""
        entry = self._ep_of.get(id(rec))
        if entry is None or entry[0] is not rec:
            return None
        with self.db.read() as s:
            return repo.episode_override(s, entry[1])


def iteration_message(row: dict[str, Any], episodes_total: int, max_episodes: int) -> str:
    """The job's progress message after an iteration."""
    ev = f", eval success {row['eval_success']:.3f}" if "eval_success" in row else ""
    if "eval_gain" in row:
        ev += (f" ({format_points(row['eval_gain'])} pts since the start on the same {row['eval_gain_seeds']} "
               f"seeds, 95 % interval [{format_points(row['eval_gain_lo'])}, {format_points(row['eval_gain_hi'])}])")
    if row.get("episodes_dropped"):
        ev += (f"; {row['episodes_dropped']} episodes under way dropped when the buffer filled "
               f"({row['steps_dropped']} steps)")
    if "refine_labels" in row:
        ev += (f"; reward model re-refined on {row['refine_labels']} labeled practice episodes "
               f"({row['labels_total']} labels so far)")
    return (f"iteration {row['iteration']}: {episodes_total}/{max_episodes} episodes, "
            f"mean return {row.get('mean_return', 0.0):.2f}{ev}")


class _ControlState:
    """The supervisors' commands as last read from the database (at most every ``poll_s``):
    job and session status, robot statuses, overrides of running episodes."""

    def __init__(self, rec: PracticeRecorder):
        self.r = rec
        self._polled = 0.0
        self.session_status = "running"
        self.robot_status: dict[int, str] = {}
        self.overrides: dict[int, bool] = {}
        self.job_running = True
        self._last_go = time.monotonic()
        self._last_sleep = 0.0

    def poll(self, force: bool = False) -> None:
        r, now = self.r, time.monotonic()
        if not force and now - self._polled < r.w.poll_s:
            return
        self._polled = now
        rids = [x for x in r.slot_robot.values() if x is not None]
        eids = [s.episode_id for s in r.slots if s.episode_id is not None]
        with r.db.read() as s:
            job = s.execute(select(Job.status, Job.claimed_by).where(Job.id == r.ctx.job_id)).first()
            self.job_running = job is not None and job[0] == "running" and job[1] == r.w.name
            self.session_status = s.scalar(select(PracticeSession.status)
                                           .where(PracticeSession.id == r.session_id)) or "running"
            if rids:
                self.robot_status = dict(s.execute(select(Robot.id, Robot.status).where(Robot.id.in_(rids))).all())
            self.overrides = ({eid: bool(v) for eid, v in s.execute(
                select(Episode.id, Episode.override_success).where(Episode.id.in_(eids),
                                                                   Episode.override_success.is_not(None))).all()}
                if eids else {})

    def check_stop(self) -> None:
        if self.r.w.stopping.is_set():
            raise JobStopped("worker stopping")
        if self.r.ctx.cancelled.is_set() or not self.job_running:
            raise JobStopped("cancelled")
        if self.session_status in ("stopped", "finished"):
            raise JobStopped("session stopped")

    def _hold(self, i: int, why: str) -> str:
        self.r.slots[i].status = why
        now = time.monotonic()
        if now - self._last_go > 0.1 and now - self._last_sleep > 0.05:  # nobody steps: do not spin
            time.sleep(0.05)
            self._last_sleep = time.monotonic()
        return HOLD

    def verdict(self, i: int, rec: Any) -> str | None:
        """None to step on, an end reason, or HOLD (see ``PracticeObserver.control``)."""
        r = self.r
        self.poll()
        self.check_stop()
        st = r.slots[i]
        if r.fleet.parked[i]:
            if r.fleet.retry_ready(i) or r.buffer_full:
                return END_ABORTED  # ends the empty placeholder episode; the next reset is real
            return self._hold(i, "parked")
        rid = r.robot_id(i)
        rstatus = self.robot_status.get(rid, "online") if rid is not None else "online"
        if rstatus == "stopped" and rec.length > 0:
            st.status = "stopped"
            return END_STOPPED
        hold = ("session_paused" if self.session_status == "paused" else
                "stopped" if rstatus == "stopped" else "paused" if rstatus == "paused" else None)
        if hold is not None:
            if r.buffer_full:  # the learner waits for this episode: end it instead of holding
                return END_STOPPED if rec.length > 0 else END_ABORTED
            return self._hold(i, hold)
        if st.episode_id is not None and self.overrides.get(st.episode_id) is True:
            return END_DETECTOR  # a supervisor says it succeeded: end it as a success
        st.status = "running"
        if not st.started:
            r._start_episode(i, rec)
        self._last_go = time.monotonic()
        return None
