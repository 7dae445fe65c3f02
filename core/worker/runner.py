"""The Dojo worker: claims jobs from the database and runs them; records practice episodes,
checkpoints and metrics; serves live telemetry and remote robots on a websocket endpoint.

    python -m core.worker [--db URL] [--data DIR] [--name NAME] [--host 127.0.0.1]
                          [--telemetry-port 8765 | --no-server] [--token T] [--exit-when-idle]
    python -m core.cli worker ...          (the same)

Jobs (``jobs`` table, enqueued by the UI with ``storage.jobs.enqueue_job``; params in
``JOB_PARAMS`` below, printed by ``python -m core.worker --params``):

- ``demos``: scripted-expert demonstrations into a dataset directory (``core.learning.demos``).
- ``sft``: Stage 1 (``core.learning.sft.train_sft``); its best policy becomes an ``sft`` checkpoint row.
- ``practice``: Stage 2 on a fleet (``core.learning.practice.run_practice``) for a practice session:
  every episode is written at its end, with its steps and JPEG frames, in ONE transaction
  (``storage.episodes.finish_episode``) under the uid ``job<J>-it<IIII>-seed<S>``, so an
  iteration replayed after a crash writes nothing twice; every iteration's checkpoint becomes
  an ``si`` row whose parent is the one it was trained from, its statistics go to
  ``metrics``, and it is promoted only if its evaluated success is not worse than the
  promoted one's (``promote_tolerance``). Supervisor commands are polled from the database
  (at most every ``poll_s`` = 0.15 s, one read) and take effect at the robot's next control
  step: session pause (all robots hold), resume, stop (the job ends); robot pause (that robot
  holds mid-episode), stop (its episode ends now, ``stopped``; it then holds), resume
  ("online"); an override on a running episode (success: the episode ends as a success;
  failure: it continues and its outcome is failure) and on a finished episode still in the
  learner's buffer (``outcome_override``). Not covered: the evaluation rollouts a practice job
  runs every ``eval_every`` iterations (and the detector check before the first) use every
  robot, paused ones included; with real robots set ``eval_every=0`` and use ``eval`` jobs.
- ``eval``: evaluate a checkpoint (``core.cli.evaluate_checkpoint``), store its success and
  optionally promote it.

Crash safety: at start the worker calls ``recover_worker`` (its jobs left running go back to
the queue, its running episodes are marked aborted) and periodically ``requeue_stale_jobs``
(for workers that died elsewhere). A re-claimed practice job resumes from the last
completed iteration in its run directory (``<data>/runs/practice-job<J>`` unless ``out``).
A job that raises is marked failed with the error, a suggested fix and the traceback; the
worker goes on with the next job.

What the fleet is served: a practice job starts from ``checkpoint_id``/``policy_checkpoint``
if given, else from the task's promoted checkpoint; an eval job defaults to the promoted one.
During practice the robots act with the learner's current weights (on-policy REINFORCE);
telemetry shows which checkpoint row that is.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import os
import signal
import socket
import sys
import threading
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np
from sqlalchemy import select, update

from storage import repo
from storage.db import Database, init_db
from storage.models import Checkpoint, Episode, Job, PracticeSession, Robot, Task
from core.method.stats import format_points

log = logging.getLogger("dojo.worker")

JOB_KINDS = ("demos", "sft", "practice", "eval", "refine")


class JobParamsError(ValueError):
    """The job's params are wrong; the message names the field and the accepted ones."""


class JobStopped(Exception):
    """The job must stop now: cancelled, its session stopped, or the worker is shutting down."""

    def __init__(self, reason: str):
        super().__init__(reason)
        self.reason = reason


# --- job params (what the UI enqueues) -------------------------------------------------

def _practice_param_spec() -> dict[str, dict[str, Any]]:
    from core.learning.practice import PracticeConfig

    spec: dict[str, dict[str, Any]] = {}
    for f in dataclasses.fields(PracticeConfig):
        if f.name in ("out", "policy_checkpoint", "reward_checkpoint", "processes", "fleet_size"):
            continue
        default = f.default if f.default is not dataclasses.MISSING else None
        spec[f.name] = {"type": _type_name(f.type, default), "default": default}
    spec.update({
        "policy_checkpoint": {"type": "str", "default": None,
                              "help": "starting policy file; default: checkpoint_id's, else the task's promoted"},
        "checkpoint_id": {"type": "int", "default": None, "help": "starting policy as a checkpoints row"},
        "reward_checkpoint": {"type": "str", "default": None,
                              "help": "frozen Stage-1 reward model; default: the start checkpoint's recorded "
                                      "reward_checkpoint, else best_stg.pt beside it"},
        "out": {"type": "str", "default": None, "help": "run directory; default <data>/runs/practice-job<J>"},
        "fleet": {"type": "dict", "default": None,
                  "help": '{"kind": "process"|"local"|"remote", "size": N, "wait_s": 120, "min_robots": N}; '
                          "default: one simulator process per core"},
        "frame_every": {"type": "int", "default": 1, "help": "store every k-th frame (0 = none)"},
        "jpeg_quality": {"type": "int", "default": 80},
        "promote": {"type": "bool", "default": True,
                    "help": "promote an evaluated iteration if not worse than the promoted checkpoint"},
        "promote_tolerance": {"type": "float", "default": 0.0},
    })
    return spec


def _type_name(t: Any, default: Any) -> str:
    s = str(t)
    for name in ("dict", "bool", "float", "int", "str"):
        if name in s:
            return name
    return type(default).__name__ if default is not None else "any"


JOB_PARAMS: dict[str, dict[str, dict[str, Any]]] = {
    "demos": {
        "n": {"type": "int", "required": True, "help": "successful expert episodes wanted"},
        "out": {"type": "str", "default": None, "help": "dataset directory; default <data>/demos/job<J>"},
        "backend": {"type": "str", "default": None, "help": "default: the job's task's backend, else tabletop"},
        "env_config": {"type": "dict", "default": None, "help": "default: the job's task's env_config"},
        "seed0": {"type": "int", "default": 0},
        "workers": {"type": "int", "default": 1, "help": "expert processes"},
    },
    "sft": {
        "data": {"type": "str", "default": None, "help": "dataset directory (or demos_job)"},
        "demos_job": {"type": "int", "default": None, "help": "use the dataset a finished demos job made"},
        "out": {"type": "str", "default": None, "help": "run directory; default <data>/runs/sft-job<J>"},
        "max_episodes": {"type": "int", "default": None}, "val_fraction": {"type": "float", "default": 0.1},
        "epochs": {"type": "int", "default": 20}, "batch_size": {"type": "int", "default": 64},
        "lr": {"type": "float", "default": 1e-3}, "seed": {"type": "int", "default": 0},
        "eval_every": {"type": "int", "default": 5}, "eval_episodes": {"type": "int", "default": 50},
        "threads": {"type": "int", "default": 0}, "device": {"type": "str", "default": "auto"},
        "max_minutes": {"type": "float", "default": None},
        "policy": {"type": "dict", "default": None, "help": "core.learning.policy.PolicyConfig fields, e.g. {\"d_model\": 64}"},
        "promote": {"type": "bool", "default": True, "help": "promote the best policy if evaluated and not worse"},
        "promote_tolerance": {"type": "float", "default": 0.0},
    },
    "practice": {},  # filled lazily from PracticeConfig (see job_params_spec)
    "refine": {
        "session_id": {"type": "int", "default": None,
                       "help": "the practice session whose judged episodes (labels, overrides) to learn from; "
                               "default: the job's session, else the task's newest one with judged episodes"},
        "reward_checkpoint": {"type": "str", "default": None,
                              "help": "the reward model to re-train; default: the one that session ran with"},
        "out": {"type": "str", "default": None, "help": "run directory; default <data>/runs/refine-job<J>"},
        "steps": {"type": "int", "default": 300, "help": "gradient steps"},
        "lr": {"type": "float", "default": 1e-4}, "seed": {"type": "int", "default": 0},
        "min_labels": {"type": "int", "default": 10, "help": "usable judged episodes needed"},
        "fail_tail": {"type": "int", "default": 10,
                      "help": "train on the last K frames of a failed episode only (0: every frame)"},
        "anchor": {"type": "float", "default": 1.0,
                   "help": "with fail_tail: keep d where it was on a failure's earlier frames (weight; 0 = off)"},
    },
    "eval": {
        "checkpoint_id": {"type": "int", "default": None, "help": "default: the task's promoted checkpoint"},
        "checkpoint": {"type": "str", "default": None, "help": "a checkpoint file instead of a row"},
        "reward_checkpoint": {"type": "str", "default": None},
        "episodes": {"type": "int", "default": 50}, "threshold": {"type": "float", "default": None},
        "patience": {"type": "int", "default": 1}, "n_envs": {"type": "int", "default": 8},
        "seed0": {"type": "int", "default": None}, "device": {"type": "str", "default": "auto"},
        "promote": {"type": "bool", "default": False}, "promote_tolerance": {"type": "float", "default": 0.0},
    },
}


def job_params_spec(kind: str) -> dict[str, dict[str, Any]]:
    if kind == "practice" and not JOB_PARAMS["practice"]:
        JOB_PARAMS["practice"] = _practice_param_spec()
    if kind not in JOB_PARAMS:
        raise JobParamsError(f"unknown job kind {kind!r}; kinds: {JOB_KINDS}")
    return JOB_PARAMS[kind]


_TYPES = {"int": (int,), "float": (int, float), "str": (str,), "bool": (bool,), "dict": (dict,)}


def check_params(kind: str, params: dict[str, Any] | None) -> dict[str, Any]:
    """Params with defaults filled in; JobParamsError on unknown keys, missing or mistyped values."""
    spec = job_params_spec(kind)
    params = dict(params or {})
    bad = sorted(set(params) - set(spec))
    if bad:
        raise JobParamsError(f"{kind} job: unknown params {bad}; accepted: {sorted(spec)}")
    out: dict[str, Any] = {}
    for name, s in spec.items():
        if name not in params or params[name] is None:
            if s.get("required"):
                raise JobParamsError(f"{kind} job: param {name!r} ({s['type']}) is required")
            out[name] = s.get("default")
            continue
        v = params[name]
        types = _TYPES.get(s["type"])
        if types and (not isinstance(v, types) or (s["type"] in ("int", "float") and isinstance(v, bool))):
            raise JobParamsError(f"{kind} job: param {name!r} must be {s['type']}, got {v!r}")
        out[name] = float(v) if s["type"] == "float" else v
    return out


def describe_error(kind: str, e: BaseException) -> str:
    """The text stored in jobs.error: what went wrong, what to do, the traceback."""
    from core.learning.checkpoint import CheckpointError, ResumeConflict

    try:
        from core.learning.practice import PracticeRefused
        from core.worker.refine_from_labels import RelabelError
    except Exception:  # noqa: BLE001
        PracticeRefused = RelabelError = ()  # type: ignore[assignment]
    if isinstance(e, JobParamsError):
        fix = f"correct the job's params and enqueue it again (accepted: {sorted(job_params_spec(kind))})"
    elif isinstance(e, RelabelError):
        fix = "see above: label more episodes of that session on the Review page, then re-queue"
    elif isinstance(e, PracticeRefused):
        fix = "see above: improve the Stage-1 reward model or relax the detector settings, then re-queue"
    elif isinstance(e, ResumeConflict):
        fix = ("the job's run directory holds a run started with other settings (listed above): enqueue the "
               "job with those settings, or as a new job (a new run directory)")
    elif isinstance(e, (FileNotFoundError, CheckpointError)):
        fix = ("a file named in the params is missing or unreadable: check the path, or run the job that "
               "makes it first (demos -> sft -> practice/eval)")
    elif isinstance(e, repo.NotFound):
        fix = "the params name a row (task, checkpoint, session, job) that does not exist: pick an existing one"
    elif isinstance(e, MemoryError):
        fix = "out of memory: use a smaller fleet, batch or model"
    else:
        fix = "read the traceback below; fix the params or the data and re-queue the job"
    tb = "".join(traceback.format_exception(type(e), e, e.__traceback__, limit=12))
    return f"{type(e).__name__}: {e}\nFix: {fix}\n\n{tb}"


# --- the job context shared with the heartbeat thread ----------------------------------

@dataclass
class JobContext:
    job_id: int
    kind: str
    params: dict[str, Any]
    session_id: int | None
    task_id: int | None
    attempts: int = 1
    progress: float = 0.0
    message: str = ""
    state: dict[str, Any] | None = None
    cancelled: threading.Event = field(default_factory=threading.Event)


# --- the fleet seen by the learner while the worker supervises it ----------------------

class SupervisedFleet:
    """Wraps the job's fleet (local, process or remote). A robot that cannot reset (a remote
    robot that is gone, a dead simulator) is *parked*: it gets a placeholder observation and
    the worker holds it (``HOLD``) instead of letting the rollout burn through the seed queue;
    once it is available again its placeholder episode is ended (length 0, ignored by the
    learner) and it resets for real. Failures of a running episode are reported to
    ``on_failure(slot, RobotFailure)`` (the worker marks that episode aborted)."""

    def __init__(self, inner: Any, *, on_failure: Callable[[int, Any], None] | None = None,
                 retry_s: float = 2.0):
        self.inner = inner
        self.size = inner.size
        self.max_steps = inner.max_steps
        self.on_failure = on_failure
        self.retry_s = retry_s
        self.parked = [False] * self.size
        self.park_reason = [""] * self.size
        self._parked_at = [0.0] * self.size
        self._template: dict[str, Any] | None = None
        self._ops: Any = None  # SplitPhase over inner, made on first use
        self._out: dict[int, tuple[str, Any]] = {}  # submitted, not collected
        self._sent: set[int] = set()  # ...of which went out to the inner fleet

    @property
    def knows_success(self) -> bool:
        return bool(getattr(self.inner, "knows_success", True))

    @property
    def pipelined(self) -> bool:
        return bool(getattr(self.inner, "pipelined", False))

    def robot_name(self, i: int) -> str | None:
        f = getattr(self.inner, "robot_name", None)
        return f(i) if f is not None else None

    def available(self, i: int) -> bool:
        f = getattr(self.inner, "available", None)
        return True if f is None else bool(f(i))

    def retry_ready(self, i: int) -> bool:
        if not self.parked[i]:
            return False
        if hasattr(self.inner, "available"):
            return self.available(i)
        return time.monotonic() - self._parked_at[i] >= self.retry_s

    def reset(self, i: int, seed: int):
        from core.learning.fleets import RobotFailure

        res = self.inner.reset(i, seed) if self.available(i) else RobotFailure(i, "robot unavailable")
        if isinstance(res, RobotFailure):
            if self._template is None:
                return res
            self.parked[i], self.park_reason[i], self._parked_at[i] = True, res.message, time.monotonic()
            obs = dict(self._template)
            obs["image"] = np.zeros_like(obs["image"])
            return obs, {"parked": res.message}
        self.parked[i] = False
        self._template = res[0]
        return res

    def step(self, actions: dict[int, np.ndarray]):
        self.submit({i: ("step", a) for i, a in actions.items()})
        return self.collect(list(actions))

    def submit(self, cmds: dict[int, tuple[str, Any]]) -> None:
        """Steps of robots that are not parked go out to the inner fleet at once (its own
        ``submit`` where it has one); resets wait for ``collect`` (parking needs their reply)."""
        from core.learning.fleets import SplitPhase

        if self._ops is None:
            self._ops = SplitPhase(self.inner)
        self._out.update(cmds)
        live = {i: c for i, c in cmds.items() if c[0] == "step" and not self.parked[i]}
        if live:
            self._ops.submit(live)
            self._sent.update(live)

    def collect(self, indices) -> dict[int, Any]:
        from core.learning.fleets import RobotFailure

        indices = list(indices)
        sent = [i for i in indices if i in self._sent]
        got = self._ops.collect(sent) if sent else {}
        out: dict[int, Any] = {}
        for i in indices:
            cmd, arg = self._out.pop(i)
            self._sent.discard(i)
            if cmd == "reset":
                out[i] = self.reset(i, arg)
            elif i in got:
                out[i] = got[i]
                if isinstance(out[i], RobotFailure) and self.on_failure is not None:
                    self.on_failure(i, out[i])
            else:
                out[i] = RobotFailure(i, f"robot unavailable: {self.park_reason[i]}")
        return out

    def close(self) -> None:
        self.inner.close()


# --- practice: the hooks into run_practice ---------------------------------------------

@dataclass
class _Slot:
    rec: Any = None
    uid: str | None = None
    episode_id: int | None = None
    started: bool = False
    d: list[float] = field(default_factory=list)
    counts: list[int] = field(default_factory=list)
    jpegs: dict[int, bytes] = field(default_factory=dict)
    status: str = "running"


class PracticeRunner:
    """Everything the worker does around ``run_practice`` for one practice job."""

    def __init__(self, worker: "Worker", ctx: JobContext, cfg: Any, fleet: SupervisedFleet, *, task_id: int,
                 session_id: int, start_checkpoint_id: int, threshold: float, patience: int,
                 frame_every: int, jpeg_quality: int, promote: bool, promote_tolerance: float,
                 sim_robot_ids: dict[int, int] | None = None):
        self.w, self.ctx, self.cfg, self.fleet = worker, ctx, cfg, fleet
        self.db = worker.db
        self.task_id, self.session_id = task_id, session_id
        self.start_checkpoint_id = start_checkpoint_id
        self.checkpoint_id = start_checkpoint_id
        self.threshold, self.patience = float(threshold), int(patience)
        self.frame_every, self.jpeg_quality = int(frame_every), int(jpeg_quality)
        self.promote, self.promote_tolerance = promote, promote_tolerance
        self.out = Path(cfg.out)
        self.slots = [_Slot() for _ in range(fleet.size)]
        self._message_before_eval: str | None = None
        self.slot_robot: dict[int, int] = dict(sim_robot_ids or {})  # slot -> robots.id
        self._robot_names: dict[int, str] = {}
        state = self._state()
        self.iteration = int(state.get("iteration", 0)) + 1
        self.episodes_total = int(state.get("episodes", 0))
        self.iter_steps = 0
        self.buffer_full = False
        # cached control state (refreshed at most every poll_s)
        self._polled = 0.0
        self.session_status = "running"
        self.robot_status: dict[int, str] = {}
        self.overrides: dict[int, bool] = {}
        self.job_running = True
        self._last_go = time.monotonic()
        self._last_sleep = 0.0
        self.recorded = 0
        self._ep_of: dict[int, tuple[Any, int]] = {}  # id(record) -> (record, episodes.id), this iteration

    # --- helpers -----------------------------------------------------------------------
    def _state(self) -> dict[str, Any]:
        p = self.out / "state.json"
        try:
            return json.loads(p.read_text()) if p.exists() else {}
        except ValueError:
            return {}

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

    def poll(self, force: bool = False) -> None:
        now = time.monotonic()
        if not force and now - self._polled < self.w.poll_s:
            return
        self._polled = now
        rids = [r for r in self.slot_robot.values() if r is not None]
        eids = [s.episode_id for s in self.slots if s.episode_id is not None]
        with self.db.read() as s:
            job = s.execute(select(Job.status, Job.claimed_by).where(Job.id == self.ctx.job_id)).first()
            self.job_running = job is not None and job[0] == "running" and job[1] == self.w.name
            self.session_status = s.scalar(select(PracticeSession.status)
                                           .where(PracticeSession.id == self.session_id)) or "running"
            if rids:
                self.robot_status = dict(s.execute(select(Robot.id, Robot.status).where(Robot.id.in_(rids))).all())
            self.overrides = ({eid: bool(v) for eid, v in s.execute(
                select(Episode.id, Episode.override_success).where(Episode.id.in_(eids),
                                                                   Episode.override_success.is_not(None))).all()}
                if eids else {})

    def check_stop(self) -> None:
        if self.w.stopping.is_set():
            raise JobStopped("worker stopping")
        if self.ctx.cancelled.is_set() or not self.job_running:
            raise JobStopped("cancelled")
        if self.session_status in ("stopped", "finished"):
            raise JobStopped("session stopped")

    def _hold(self, i: int, why: str) -> str:
        from core.learning.rollout import HOLD

        self.slots[i].status = why
        now = time.monotonic()
        if now - self._last_go > 0.1 and now - self._last_sleep > 0.05:  # nobody steps: do not spin
            time.sleep(0.05)
            self._last_sleep = time.monotonic()
        return HOLD

    # --- hooks -------------------------------------------------------------------------
    def on_step(self, i: int, rec: Any, obs: dict[str, Any]) -> None:
        st = self.slots[i]
        if st.rec is not rec:
            st = self.slots[i] = _Slot(rec=rec, uid=self.uid(self.iteration, rec.seed))
        t = len(rec.d) - 1
        d = float(rec.d[-1])
        del st.d[t:], st.counts[t:]
        st.d.append(d)
        st.counts.append((st.counts[-1] + 1 if st.counts else 1) if d <= self.threshold else 0)
        parked = self.fleet.parked[i]
        want_frame = not parked and self.frame_every > 0 and t % self.frame_every == 0
        tele = self.w.telemetry
        jpeg = None
        if want_frame or (tele is not None and tele.n_clients and not parked):
            from core.worker.telemetry import encode_jpeg

            jpeg = encode_jpeg(obs["image"], self.jpeg_quality)
        if want_frame:
            for k in [k for k in st.jpegs if k >= t]:
                del st.jpegs[k]
            st.jpegs[t] = jpeg
        if tele is not None:
            rid = self.slot_robot.get(i)
            status = "parked" if parked else st.status
            tele.publish(self.robot_key(i), {
                "robot_id": rid, "slot": i, "job_id": self.ctx.job_id, "session_id": self.session_id,
                "task_id": self.task_id, "checkpoint_id": self.checkpoint_id,
                "episode_uid": None if parked else st.uid, "episode_id": st.episode_id, "seed": rec.seed,
                "instruction": rec.instruction, "step": t, "d": d,
                "reward": (st.d[t - 1] - d) if t > 0 else None,
                "detector": {"count": st.counts[t], "patience": self.patience, "threshold": self.threshold,
                             "fired": st.counts[t] >= self.patience},
                "status": status}, jpeg)

    def interrupt(self) -> None:
        """Asked at every step of practice's other rollouts (detector check, refinement,
        evaluations): raises JobStopped when the worker, the job or the session is stopping."""
        self.poll()
        self.check_stop()

    def control(self, i: int, rec: Any) -> str | None:
        from core.learning.rollout import END_ABORTED, END_DETECTOR, END_STOPPED

        self.poll()
        self.check_stop()
        st = self.slots[i]
        if self.fleet.parked[i]:
            if self.fleet.retry_ready(i) or self.buffer_full:
                return END_ABORTED  # ends the empty placeholder episode; the next reset is real
            return self._hold(i, "parked")
        rid = self.robot_id(i)
        rstatus = self.robot_status.get(rid, "online") if rid is not None else "online"
        if rstatus == "stopped" and rec.length > 0:
            st.status = "stopped"
            return END_STOPPED
        hold = ("session_paused" if self.session_status == "paused" else
                "stopped" if rstatus == "stopped" else "paused" if rstatus == "paused" else None)
        if hold is not None:
            if self.buffer_full:  # the learner waits for this episode: end it instead of holding
                return END_STOPPED if rec.length > 0 else END_ABORTED
            return self._hold(i, hold)
        if st.episode_id is not None and self.overrides.get(st.episode_id) is True:
            return END_DETECTOR  # a supervisor says it succeeded: end it as a success
        st.status = "running"
        if not st.started:
            self._start_episode(i, rec)
        self._last_go = time.monotonic()
        return None

    def _start_episode(self, i: int, rec: Any) -> None:
        st = self.slots[i]
        with self.db.write() as s:
            ep = repo.start_episode(s, uid=st.uid, task_id=self.task_id, session_id=self.session_id,
                                    robot_id=self.slot_robot.get(i),
                                    checkpoint_id=self.checkpoint_id, job_id=self.ctx.job_id, worker=self.w.name,
                                    instruction=rec.instruction, seed=int(rec.seed), source="practice",
                                    detector_threshold=self.threshold)
            st.episode_id = ep.id
        st.started = True
        self._ep_of[id(rec)] = (rec, ep.id)

    def on_detector(self, check: dict[str, Any]) -> None:
        """The pre-practice detector check: practice uses its threshold from here on, and its
        figures become the task's calibration (the Tasks page shows how s was chosen)."""
        self.threshold = float(check["threshold_s"])
        figures = {k: check.get(k) for k in ("precision", "recall", "f1", "counts", "threshold_s",
                                             "threshold_source", "patience", "episodes", "passed")}
        figures["source"] = f"pre-practice check on the starting policy's rollouts (job {self.ctx.job_id})"
        if check.get("before"):  # the reward model was refined on labeled rollouts first
            b = check["before"]
            figures["before_refinement"] = {k: b.get(k) for k in ("precision", "recall", "threshold_s", "counts")}
            figures["source"] += ", with the reward model refined on labeled rollouts"
        with self.db.write() as s:
            repo.update_task(s, self.task_id, calibration=_jsonable(figures))
        self.ctx.message = (f"detector check: precision {check['precision']:.2f} recall {check['recall']:.2f} "
                            f"(s = {self.threshold:.2f})" + (
                                f"; before the refinement {check['before']['precision']:.2f} / "
                                f"{check['before']['recall']:.2f}" if check.get("before") else ""))

    def on_phase(self, phase: str) -> None:
        """Practice evaluates its policy on the selection seeds every few iterations; the
        fleet is busy then but sends no practice frames, so every robot's Live card is told
        "evaluating" instead of looking stalled."""
        if phase == "evaluating":
            self._message_before_eval = self.ctx.message
            self.ctx.message = "evaluating the policy on the selection seeds"
        elif self.ctx.message == "evaluating the policy on the selection seeds":
            self.ctx.message = self._message_before_eval
        tele = self.w.telemetry
        if tele is None or phase != "evaluating":
            return
        for i in range(self.fleet.size):
            tele.publish(self.robot_key(i), {
                "robot_id": self.slot_robot.get(i), "slot": i, "job_id": self.ctx.job_id,
                "session_id": self.session_id, "task_id": self.task_id, "checkpoint_id": self.checkpoint_id,
                "episode_uid": None, "episode_id": None, "step": None, "d": None,
                "detector": "evaluating", "status": "evaluating"})

    def on_eval_step(self, i: int, rec: Any, obs: dict[str, Any]) -> None:
        """A frame of an evaluation episode: streamed to Live (status "evaluating"), never
        stored; ground truth ends these episodes, so the detector is not shown."""
        tele = self.w.telemetry
        if tele is None or not tele.n_clients:
            return
        from core.worker.telemetry import encode_jpeg

        tele.publish(self.robot_key(i), {
            "robot_id": self.slot_robot.get(i), "slot": i, "job_id": self.ctx.job_id,
            "session_id": self.session_id, "task_id": self.task_id, "checkpoint_id": self.checkpoint_id,
            "episode_uid": f"eval-{rec.seed}", "episode_id": None, "seed": rec.seed,
            "instruction": rec.instruction, "step": len(rec.d) - 1, "d": float(rec.d[-1]), "reward": None,
            "detector": "evaluating", "status": "evaluating"}, encode_jpeg(obs["image"], self.jpeg_quality))

    def publish_ended(self, reason: str) -> None:
        """Each robot's last Live message when the job ends: a browser that opens Live later
        sees "offline" and why, not a stale frame that looks live."""
        tele = self.w.telemetry
        if tele is None:
            return
        for i in range(self.fleet.size):
            tele.publish(self.robot_key(i), {
                "robot_id": self.slot_robot.get(i), "slot": i, "job_id": self.ctx.job_id,
                "session_id": self.session_id, "task_id": self.task_id, "checkpoint_id": self.checkpoint_id,
                "episode_uid": None, "episode_id": None, "step": None, "d": None,
                "detector": reason, "status": "offline"})

    def on_failure(self, i: int, failure: Any) -> None:
        st = self.slots[i]
        if st.started and st.episode_id is not None:
            with self.db.write() as s:
                repo.abort_episode(s, st.episode_id, f"robot failed: {failure.message}")
            if self.w.telemetry is not None:
                self.w.telemetry.publish_event(self.robot_key(i), {"episode_uid": st.uid, "episode_id": st.episode_id,
                                                                   "end_reason": "aborted", "error": failure.message})
            st.started, st.episode_id = False, None

    def outcome_override(self, rec: Any) -> bool | None:
        """The supervisor's verdict on this episode, if any (asked at its end and again before
        the learner's update, while it is still in the buffer)."""
        entry = self._ep_of.get(id(rec))
        if entry is None or entry[0] is not rec:
            return None
        with self.db.read() as s:
            return repo.episode_override(s, entry[1])

    def on_discard(self, i: int, rec: Any) -> None:
        """An episode under way when the iteration's buffer filled was dropped by the learner
        (``finish_running_episodes`` False): its stored row ends as aborted, saying why."""
        st = self.slots[i]
        if st.rec is rec and st.episode_id is not None:
            with self.db.write() as s:
                repo.abort_episode(s, st.episode_id, "discarded: the iteration's buffer was full",
                                   length=rec.length)
        self._ep_of.pop(id(rec), None)
        st.started, st.episode_id = False, None

    def on_episode_end(self, rec: Any, returns: np.ndarray, iteration: int) -> None:
        i = next((k for k, s in enumerate(self.slots) if s.rec is rec), None)
        st = self.slots[i] if i is not None else _Slot(rec=rec)
        uid = self.uid(iteration, rec.seed)
        T = rec.length
        d = (st.d + [float(x) for x in rec.d[len(st.d):]])[: T + 1] if st.d else [float(x) for x in rec.d[: T + 1]]
        counts = st.counts[: len(d)]
        gamma = self.cfg.gamma
        rewards = [float(returns[t] - (gamma * returns[t + 1] if t + 1 < T else 0.0)) for t in range(T)]
        steps = []
        stored = sorted(st.jpegs)
        for t in range(len(d)):
            ft = max((k for k in stored if k <= t), default=None)
            steps.append({"t": t, "action": np.asarray(rec.actions[t]).tolist() if t < T else None,
                          "d": d[t], "reward": rewards[t] if t < T else None,
                          "detector_count": counts[t] if t < len(counts) else None,
                          "detector_fired": rec.detector_step == t, "frame_t": ft,
                          "proprio": np.asarray(rec.proprio[t], np.float32).tolist() if t < len(rec.proprio) else None})
        override = None
        with self.db.write() as s:
            if st.uid and st.uid != uid and st.episode_id is not None:
                repo.abort_episode(s, st.episode_id, f"superseded by {uid}")
            res = repo.finish_episode(
                s, uid=uid, task_id=self.task_id, steps=steps, frames={t: st.jpegs[t] for t in stored if t < len(d)},
                detector_success=rec.detector_step is not None, detector_step=rec.detector_step,
                gt_success=bool(rec.success) if self.fleet.knows_success else None, length=T,
                total_return=float(sum(rewards)), final_d=d[-1] if d else None,
                session_id=self.session_id, robot_id=self.slot_robot.get(i) if i is not None else None,
                checkpoint_id=self.checkpoint_id, job_id=self.ctx.job_id, worker=self.w.name,
                instruction=rec.instruction, seed=int(rec.seed), source="practice",
                detector_threshold=self.threshold,
                meta={"end_reason": rec.end_reason, "iteration": iteration, "patience": self.patience})
            override = res.episode.override_success
            eid = res.episode.id
        self.recorded += int(res.written)
        self._ep_of[id(rec)] = (rec, eid)
        self.iter_steps += T
        if self.iter_steps >= self.cfg.tuples_per_iteration:
            self.buffer_full = True
        if self.w.telemetry is not None and i is not None:
            self.w.telemetry.publish_event(self.robot_key(i), {
                "episode_uid": uid, "episode_id": eid, "end_reason": rec.end_reason, "length": T,
                "detector_success": rec.detector_step is not None, "override": override,
                "gt_success": bool(rec.success) if self.fleet.knows_success else None,
                "return": float(sum(rewards)), "iteration": iteration})
        st.started, st.episode_id = False, None

    def callback(self, row: dict[str, Any]) -> bool:
        self.iteration = int(row["iteration"]) + 1
        self.episodes_total = int(row.get("episodes_total", self.episodes_total))
        self.iter_steps, self.buffer_full = 0, False
        self._ep_of.clear()
        self.sync_checkpoints()
        cfg = self.cfg
        self.ctx.progress = min(1.0, self.episodes_total / max(1, cfg.max_episodes))
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
        self.ctx.message = (f"iteration {row['iteration']}: {self.episodes_total}/{cfg.max_episodes} episodes, "
                            f"mean return {row.get('mean_return', 0.0):.2f}{ev}")
        self.ctx.state = {"iteration": row["iteration"], "episodes": self.episodes_total,
                          "checkpoint_id": self.checkpoint_id, "run_dir": str(self.out)}
        return not self.w.stopping.is_set()

    # --- checkpoints, metrics, promotion ----------------------------------------------
    def sync_checkpoints(self) -> None:
        """Make sure every completed iteration in the run directory has its checkpoint row
        (parent = the previous one), metrics and promotion decision. Idempotent (rows are
        found by path), so a crash between an iteration's state file and its row is healed
        at the next call."""
        state = self._state()
        done = int(state.get("iteration", 0))
        rows: dict[int, dict[str, Any]] = {}
        mpath = self.out / "metrics.jsonl"
        if mpath.exists():
            for line in mpath.read_text().splitlines():
                try:
                    r = json.loads(line)
                    rows[int(r["iteration"])] = r
                except (ValueError, KeyError, TypeError):
                    continue  # a line cut short by a crash
        if 0 in rows and "eval_success" in rows[0]:
            with self.db.write() as s:
                ck = repo.get_checkpoint(s, self.start_checkpoint_id)
                # Practice evaluates its start on the first eval_episodes selection seeds; Stage 1
                # evaluated a prefix of the same seeds (often 50). A larger evaluation replaces a
                # smaller one, so the baseline of the success curve is the better-measured one.
                n = int(self.cfg.eval_episodes)
                same_seeds = (ck.metrics or {}).get("eval_seeds") == "selection"
                if ck.eval_success is None or (same_seeds and (ck.eval_episodes or 0) < n):
                    repo.set_evaluation(s, ck.id, float(rows[0]["eval_success"]), n,
                                        metrics={"eval_seeds": "selection", "evaluated_by_job": self.ctx.job_id})
                    self._maybe_promote(s, ck)
        prev = self.start_checkpoint_id
        for it in range(1, done + 1):
            path = _norm(self.out / f"iter_{it:04d}.pt")
            with self.db.read() as s:
                cid = s.scalar(select(Checkpoint.id).where(Checkpoint.path == path))
            if cid is not None:
                prev = cid
                continue
            if not Path(path).exists():
                continue
            row = rows.get(it) or _stats_from_checkpoint(path) or {"iteration": it}
            numeric = {k: float(v) for k, v in row.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}
            ev = row.get("eval_success")
            with self.db.write() as s:
                ck = repo.add_checkpoint(s, "si", path, parent_id=prev, task_id=self.task_id, iteration=it,
                                         metrics={**row, "run_dir": str(self.out), "job_id": self.ctx.job_id,
                                                  "reward_checkpoint": self.cfg.reward_checkpoint,
                                                  "start_checkpoint_id": self.start_checkpoint_id},
                                         eval_success=None if ev is None else float(ev),
                                         eval_episodes=int(self.cfg.eval_episodes) if ev is not None else None)
                repo.log_metrics(s, numeric, it, session_id=self.session_id, checkpoint_id=ck.id,
                                 task_id=self.task_id, job_id=self.ctx.job_id)
                if ev is not None:
                    self._maybe_promote(s, ck)
                prev = ck.id
        self.checkpoint_id = prev

    def _maybe_promote(self, s: Any, ck: Checkpoint) -> None:
        if not self.promote:
            return
        try:
            repo.promote(s, ck.id, require_not_worse=True, tolerance=self.promote_tolerance)
        except repo.PromotionRefused as e:
            ck.metrics = {**(ck.metrics or {}), "promotion_refused": str(e)}

    def abort_leftovers(self, reason: str) -> list[int]:
        with self.db.write() as s:
            return repo.abort_running_episodes(s, job_id=self.ctx.job_id, reason=reason)


def _stats_from_checkpoint(path: str) -> dict[str, Any] | None:
    """An iteration's statistics as stored in its checkpoint (metrics.jsonl may lack the row
    when a crash cut its append short)."""
    try:
        from core.learning.checkpoint import read_checkpoint

        return dict(read_checkpoint(path)["meta"].get("stats") or {}) or None
    except Exception:  # noqa: BLE001
        return None


def _norm(p: str | Path) -> str:
    return os.path.abspath(str(p))


# --- the worker ------------------------------------------------------------------------

class Worker:
    def __init__(self, db: Database, *, name: str | None = None, data_dir: str | Path = "data",
                 server: Any = None, telemetry: Any = None, hub: Any = None, poll_s: float = 0.15,
                 heartbeat_s: float = 2.0, stale_s: float = 120.0, idle_sleep_s: float = 1.0):
        self.db = db
        self.name = name or f"{socket.gethostname()}:0"
        self.data_dir = Path(data_dir)
        self.server, self.telemetry, self.hub = server, telemetry, hub
        self.poll_s, self.heartbeat_s, self.stale_s, self.idle_sleep_s = poll_s, heartbeat_s, stale_s, idle_sleep_s
        self.stopping = threading.Event()
        self._closed = threading.Event()
        self._ctx: JobContext | None = None
        self._robot_changes: list[tuple[str, bool]] = []
        self._lock = threading.Lock()
        self._house: threading.Thread | None = None
        if hub is not None:
            hub.on_change = self._on_robot_change

    # --- lifecycle -----------------------------------------------------------------------
    def recover(self) -> dict[str, list[int]]:
        with self.db.write() as s:
            out = repo.recover_worker(s, self.name)
        with self.db.write() as s:
            out["stale_jobs"] = repo.requeue_stale_jobs(s, older_than_s=self.stale_s)
        if any(out.values()):
            log.info("recovered: %s", out)
        return out

    def stop(self) -> None:
        self.stopping.set()

    def run(self, *, exit_when_idle: bool = False, max_jobs: int | None = None) -> int:
        """Claim and run jobs until stopped (or idle, or ``max_jobs``). Returns jobs handled."""
        self.recover()
        self._closed.clear()
        self._house = threading.Thread(target=self._housekeeping, name="dojo-heartbeat", daemon=True)
        self._house.start()
        handled, last_stale = 0, time.monotonic()
        try:
            while not self.stopping.is_set():
                if time.monotonic() - last_stale > self.stale_s / 4:
                    with self.db.write() as s:
                        repo.requeue_stale_jobs(s, older_than_s=self.stale_s)
                    last_stale = time.monotonic()
                with self.db.write() as s:
                    job = repo.claim_job(s, self.name, kinds=JOB_KINDS)
                    ctx = None if job is None else JobContext(job.id, job.kind, dict(job.params or {}),
                                                              job.session_id, job.task_id, job.attempts)
                if ctx is None:
                    if exit_when_idle:
                        break
                    self.stopping.wait(self.idle_sleep_s)
                    continue
                self.run_job(ctx)
                handled += 1
                if max_jobs is not None and handled >= max_jobs:
                    break
        finally:
            self._closed.set()
        return handled

    def run_job(self, ctx: JobContext) -> None:
        log.info("job %d (%s) attempt %d: %s", ctx.job_id, ctx.kind, ctx.attempts, ctx.params)
        self._ctx = ctx
        try:
            fn = getattr(self, f"job_{ctx.kind}")
            result = fn(ctx)
            with self.db.write() as s:
                repo.finish_job(s, ctx.job_id, self.name, result=_jsonable(result), message=ctx.message or "done")
            log.info("job %d done", ctx.job_id)
        except JobStopped as e:
            if e.reason == "worker stopping":
                self._release(ctx.job_id, "worker stopped; re-queued")
            elif e.reason == "session stopped":
                with self.db.write() as s:
                    repo.finish_job(s, ctx.job_id, self.name, message=f"session stopped by a supervisor; "
                                    f"{ctx.message}".strip("; "), result=_jsonable(ctx.state or {}))
            log.info("job %d stopped: %s", ctx.job_id, e.reason)
        except Exception as e:  # noqa: BLE001 - one bad job must not stop the worker
            log.error("job %d failed: %s", ctx.job_id, e)
            try:
                with self.db.write() as s:
                    repo.fail_job(s, ctx.job_id, self.name, describe_error(ctx.kind, e))
            except Exception:  # noqa: BLE001
                log.exception("could not record the failure of job %d", ctx.job_id)
        finally:
            self._ctx = None

    def _release(self, job_id: int, message: str) -> None:
        with self.db.write() as s:
            s.execute(update(Job).where(Job.id == job_id, Job.claimed_by == self.name, Job.status == "running")
                      .values(status="queued", claimed_by=None, message=message)
                      .execution_options(synchronize_session=False))

    def _housekeeping(self) -> None:
        while not self._closed.wait(self.heartbeat_s):
            try:
                ctx = self._ctx
                if ctx is not None:
                    with self.db.write() as s:
                        alive = repo.heartbeat(s, ctx.job_id, self.name, progress=ctx.progress,
                                               message=ctx.message or None, state=ctx.state)
                    if not alive:
                        ctx.cancelled.set()
                self._sync_robots()
            except Exception:  # noqa: BLE001 - retried at the next beat
                log.exception("heartbeat failed")

    def _on_robot_change(self, name: str, connected: bool) -> None:  # websocket loop thread
        with self._lock:
            self._robot_changes.append((name, connected))

    def _sync_robots(self) -> None:
        with self._lock:
            changes, self._robot_changes = self._robot_changes, []
        if not changes:
            return
        with self.db.write() as s:
            for name, connected in changes:
                r = self.hub.robots.get(name) if self.hub is not None else None
                if connected and r is not None and r.connected:
                    repo.register_robot(s, name, "remote", spec=r.spec.to_json(), worker=self.name)
                elif not connected:
                    row = s.scalar(select(Robot).where(Robot.name == name))
                    if row is not None and row.status == "online":
                        row.status = "offline"

    def should_stop(self, ctx: JobContext) -> bool:
        return self.stopping.is_set() or ctx.cancelled.is_set()

    def _stop_reason(self, ctx: JobContext) -> JobStopped:
        return JobStopped("worker stopping" if self.stopping.is_set() else "cancelled")

    # --- job kinds -----------------------------------------------------------------------
    def _task(self, task_id: int | None) -> Task | None:
        if task_id is None:
            return None
        with self.db.read() as s:
            return repo.get_task(s, task_id)

    def job_demos(self, ctx: JobContext) -> dict[str, Any]:
        from core.learning.demos import generate_demos

        p = check_params("demos", ctx.params)
        task = self._task(ctx.task_id)
        backend = p["backend"] or (task.backend if task else "tabletop")
        env_config = p["env_config"] if p["env_config"] is not None else (dict(task.env_config) if task else {})
        out = p["out"] or str(self.data_dir / "demos" / f"job{ctx.job_id}")

        def cb(ev: dict[str, Any]) -> bool:
            ctx.progress = ev["done"] / max(1, ev["total"])
            ctx.message = f"{ev['done']}/{ev['total']} demonstrations"
            return not self.should_stop(ctx)

        res = generate_demos(out, p["n"], backend=backend, env_config=env_config, seed0=p["seed0"],
                             workers=p["workers"], progress=False, callback=cb)
        if self.should_stop(ctx):
            raise self._stop_reason(ctx)
        ctx.message = f"{res['episodes']} demonstrations in {res['dataset']}"
        return res

    def job_sft(self, ctx: JobContext) -> dict[str, Any]:
        from core.learning.policy import PolicyConfig
        from core.learning.sft import SFTConfig, train_sft

        p = check_params("sft", ctx.params)
        data = p["data"]
        if data is None and p["demos_job"] is not None:
            with self.db.read() as s:
                dj = repo.get_job(s, p["demos_job"])
            if dj is None or dj.status != "done" or not (dj.result or {}).get("dataset"):
                raise JobParamsError(f"demos_job {p['demos_job']} has no finished dataset; wait for it or pass data")
            data = dj.result["dataset"]
        if data is None:
            raise JobParamsError("sft job: pass data (a dataset directory) or demos_job")
        pfields = {f.name for f in dataclasses.fields(PolicyConfig)}
        bad = sorted(set(p["policy"] or {}) - pfields)
        if bad:
            raise JobParamsError(f"sft job: unknown policy fields {bad}; PolicyConfig has {sorted(pfields)}")
        out = p["out"] or str(self.data_dir / "runs" / f"sft-job{ctx.job_id}")
        cfg = SFTConfig(data=data, out=out, max_episodes=p["max_episodes"], val_fraction=p["val_fraction"],
                        epochs=p["epochs"], batch_size=p["batch_size"], lr=p["lr"], seed=p["seed"],
                        eval_every=p["eval_every"], eval_episodes=p["eval_episodes"], threads=p["threads"],
                        device=p["device"], max_minutes=p["max_minutes"], policy=PolicyConfig(**(p["policy"] or {})))

        def cb(ev: dict[str, Any]) -> bool:
            ctx.progress = ev["epoch"] / cfg.epochs
            ctx.message = f"epoch {ev['epoch']}/{cfg.epochs}: val stg loss {ev.get('val_stg_loss', float('nan')):.3f}"
            numeric = {k: float(v) for k, v in ev.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}
            with self.db.write() as s:
                repo.log_metrics(s, numeric, ev["epoch"], task_id=ctx.task_id, job_id=ctx.job_id)
            return not self.should_stop(ctx)

        res = train_sft(cfg, progress=False, resume=True, callback=cb)
        if self.should_stop(ctx):
            raise self._stop_reason(ctx)
        succ = res.get("best_select_success")
        evaluated = succ is not None and succ >= 0
        path = _norm(res["best_policy"])
        with self.db.write() as s:
            ck = s.scalar(select(Checkpoint).where(Checkpoint.path == path))
            metrics = {"reward_checkpoint": _norm(res["best_stg"]), "run_dir": _norm(res["run_dir"]),
                       "job_id": ctx.job_id, "calibration": res.get("calibration"), "eval_seeds": "selection"}
            if ck is None:
                ck = repo.add_checkpoint(s, "sft", path, task_id=ctx.task_id, metrics=metrics,
                                         eval_success=float(succ) if evaluated else None,
                                         eval_episodes=cfg.eval_episodes if evaluated else None)
            if evaluated and p["promote"]:
                try:
                    repo.promote(s, ck.id, require_not_worse=True, tolerance=p["promote_tolerance"])
                except repo.PromotionRefused as e:
                    ck.metrics = {**ck.metrics, "promotion_refused": str(e)}
            cid, promoted = ck.id, ck.promoted
        ctx.message = f"checkpoint {cid}" + (" (promoted)" if promoted else "")
        return {**res, "checkpoint_id": cid, "promoted": promoted}

    def _resolve_start(self, p: dict[str, Any], task_id: int | None) -> tuple[str, int | None, dict[str, Any]]:
        """(policy path, checkpoint row id or None, that row's metrics)."""
        with self.db.read() as s:
            if p.get("checkpoint_id") is not None:
                ck = repo.get_checkpoint(s, p["checkpoint_id"])
                return ck.path, ck.id, dict(ck.metrics or {})
            path = p.get("policy_checkpoint") or p.get("checkpoint")
            if path:
                ck = s.scalar(select(Checkpoint).where(Checkpoint.path == _norm(path)))
                return _norm(path), (ck.id if ck else None), (dict(ck.metrics or {}) if ck else {})
            ck = repo.get_promoted(s, task_id)
            if ck is None:
                raise JobParamsError("no starting checkpoint: pass checkpoint_id or policy_checkpoint, or promote "
                                     "a checkpoint for this task (an sft job does when it evaluates)")
            return ck.path, ck.id, dict(ck.metrics or {})

    @staticmethod
    def _reward_for(policy_path: str, metrics: dict[str, Any], given: str | None) -> str | None:
        if given:
            return _norm(given)
        if metrics.get("reward_checkpoint"):
            return metrics["reward_checkpoint"]
        sib = Path(policy_path).with_name("best_stg.pt")
        if sib.exists():
            return _norm(sib)
        try:
            from core.learning.checkpoint import read_checkpoint

            return read_checkpoint(policy_path)["meta"].get("reward_checkpoint")
        except Exception:  # noqa: BLE001
            return None

    def job_practice(self, ctx: JobContext) -> dict[str, Any]:
        from core.learning.checkpoint import read_checkpoint
        from core.learning.practice import PracticeConfig, run_practice

        p = check_params("practice", ctx.params)
        policy_path, start_id, start_metrics = self._resolve_start(p, ctx.task_id)
        reward_path = self._reward_for(policy_path, start_metrics, p["reward_checkpoint"])
        if reward_path is None:
            raise JobParamsError("no reward checkpoint: pass reward_checkpoint (a Stage-1 best_stg.pt)")
        rpay = read_checkpoint(reward_path)
        rmeta, ppay = rpay["meta"], read_checkpoint(policy_path)
        backend = p["backend"] or rmeta.get("backend", "tabletop")
        env_config = dict(p["env_config"] if p["env_config"] is not None else rmeta.get("env_config", {}))

        # task and session
        task_id, session_id = ctx.task_id, ctx.session_id
        with self.db.write() as s:
            if session_id is not None:
                sess = repo.get_session(s, session_id)
                task_id = task_id or sess.task_id
            if task_id is None:
                family = env_config.get("family") or env_config.get("task") or "default"
                task_id = repo.get_or_create_task(s, f"{backend}:{family}", backend, env_config).id
            if session_id is None:
                session_id = repo.start_session(s, task_id, name=f"practice job {ctx.job_id}",
                                                params=ctx.params).id
            s.execute(update(Job).where(Job.id == ctx.job_id).values(session_id=session_id, task_id=task_id)
                      .execution_options(synchronize_session=False))
            task = repo.get_task(s, task_id)
            if repo.get_session(s, session_id).status in ("stopped", "finished"):
                raise JobStopped("session stopped")
            if start_id is None:
                existing = s.scalar(select(Checkpoint).where(Checkpoint.path == policy_path))
                start_id = existing.id if existing else repo.add_checkpoint(
                    s, "sft", policy_path, task_id=task_id, metrics={"reward_checkpoint": reward_path}).id
            task_threshold, task_patience = task.detector_threshold, task.detector_patience
            sess = repo.get_session(s, session_id)  # the reward model that gave this session's d (refine jobs)
            sess.params = {**(sess.params or {}), "reward_checkpoint": reward_path}
        ctx.session_id, ctx.task_id = session_id, task_id

        # detector: params > the task's setting > the reward model's calibration
        if p["threshold_s"] is not None:
            threshold, patience = p["threshold_s"], p["patience"]
        elif task_threshold is not None:
            threshold = task_threshold
            patience = p["patience"] if "patience" in ctx.params else task_patience
        else:
            patience = p["patience"]
            threshold = _calibrated_threshold(reward_path, rmeta, patience)
        # An automatic threshold on simulated robots is re-calibrated by the pre-practice check
        # on the starting policy's own rollouts (demo endings never show its failure states);
        # remote robots have no ground truth, so they keep the demonstration calibration.
        auto_threshold = p["threshold_s"] is None and task_threshold is None
        # A refined reward model reads d on its own scale: a task's s chosen for the old one
        # no longer applies, so the check re-calibrates it (an explicit threshold_s param still wins).
        auto_threshold = auto_threshold or (p["threshold_s"] is None and bool(p.get("refine_episodes")))
        if p["threshold_s"] is None and rmeta.get("stage") == "reward_refined":
            # One re-trained from people's labels (a refine job): its own held-out s, else calibrate.
            auto_threshold = rmeta.get("threshold_s") is None
            if not auto_threshold:
                threshold = float(rmeta["threshold_s"])
                patience = int(rmeta.get("patience", patience))
            elif (p["fleet"] or {}).get("kind") == "remote":  # no check on real robots: its demo calibration
                threshold = _calibrated_threshold(reward_path, rmeta, patience)
        fleet_p = dict(p["fleet"] or {})
        kind = fleet_p.pop("kind", "process")
        size = int(fleet_p.pop("size", 0) or os.cpu_count() or 1)
        out = p["out"] or str(self.data_dir / "runs" / f"practice-job{ctx.job_id}")
        skip = {"fleet", "frame_every", "jpeg_quality", "promote", "promote_tolerance", "checkpoint_id"}
        kw = {k: v for k, v in p.items() if k not in skip and v is not None}
        kw.update(policy_checkpoint=policy_path, reward_checkpoint=reward_path, out=_norm(out), backend=backend,
                  env_config=env_config, fleet_size=size, processes=kind == "process",
                  threshold_s=None if auto_threshold and kind != "remote" and kw.get("check_episodes", 1)
                  else float(threshold), patience=int(patience))
        cfg = PracticeConfig(**kw)

        inner = self._make_fleet(kind, size, fleet_p, backend, env_config, cfg, task, ppay["config"])
        fleet = SupervisedFleet(inner)
        sim_ids: dict[int, int] = {}
        if kind != "remote":
            with self.db.write() as s:
                for i in range(fleet.size):
                    sim_ids[i] = repo.register_robot(s, f"{self.name}/sim-{i}", "sim", task_id=task_id,
                                                     worker=self.name).id
        runner = PracticeRunner(self, ctx, cfg, fleet, task_id=task_id, session_id=session_id,
                                start_checkpoint_id=start_id, threshold=float(threshold), patience=int(patience),
                                frame_every=p["frame_every"], jpeg_quality=p["jpeg_quality"], promote=p["promote"],
                                promote_tolerance=p["promote_tolerance"], sim_robot_ids=sim_ids)
        fleet.on_failure = runner.on_failure
        self.practice = runner  # for tests and introspection
        ctx.message = f"practice: {fleet.size} robots ({kind}), iteration {runner.iteration}"
        reason = "job ended"
        try:
            runner.sync_checkpoints()
            summary = run_practice(cfg, progress=False, callback=runner.callback, fleet=fleet,
                                   on_episode_end=runner.on_episode_end, control=runner.control,
                                   on_step=runner.on_step, outcome_override=runner.outcome_override,
                                   on_detector=runner.on_detector, on_phase=runner.on_phase,
                                   interrupt=runner.interrupt, on_eval_step=runner.on_eval_step,
                                   on_discard=runner.on_discard)
            runner.sync_checkpoints()
            if self.should_stop(ctx):
                reason = "worker stopping" if self.stopping.is_set() else "job cancelled"
                raise self._stop_reason(ctx)
            with self.db.write() as s:
                sess = repo.get_session(s, session_id)
                if sess.status in ("running", "paused"):
                    repo.finish_session(s, session_id)
        except JobStopped as e:
            reason = {"session stopped": "session stopped by a supervisor", "cancelled": "job cancelled",
                      "worker stopping": "worker stopping"}.get(e.reason, e.reason)
            runner.sync_checkpoints()
            raise
        finally:
            try:
                runner.abort_leftovers(reason)
                runner.publish_ended(reason)
                if kind != "remote":
                    with self.db.write() as s:
                        s.execute(update(Robot).where(Robot.id.in_(list(sim_ids.values())), Robot.status == "online")
                                  .values(status="offline").execution_options(synchronize_session=False))
            finally:
                fleet.close()
        ctx.message = (f"practice done: {summary['iterations']} iterations, {summary['episodes']} episodes, "
                       f"best eval success {summary['best_success']:.3f} (iteration {summary['best_iteration']})")
        if summary.get("stop_reason"):
            ctx.message = summary["stop_reason"]
        return {**summary, "session_id": session_id, "checkpoint_id": runner.checkpoint_id,
                "episodes_recorded": runner.recorded}

    def _make_fleet(self, kind: str, size: int, fp: dict[str, Any], backend: str, env_config: dict[str, Any],
                    cfg: Any, task: Task, policy_config: dict[str, Any]):
        env_config = {**env_config, "terminate_on_success": bool(cfg.ground_truth_reward)}
        if kind == "process":
            from core.learning.fleets import ProcessFleet

            return ProcessFleet(backend, env_config, size)
        if kind == "local":
            from core.learning.fleets import LocalFleet
            from sim_backends.registry import make_env

            return LocalFleet(lambda: make_env(backend, env_config), size)
        if kind == "remote":
            from core.worker.remote import RemoteFleet

            if self.hub is None:
                raise JobParamsError("fleet kind 'remote' needs the worker's websocket server (start it without "
                                     "--no-server) so robots can connect to /robot")
            im = int(policy_config.get("image_size", 64))
            return RemoteFleet(self.hub, size, task=task.name, action_dim=int(policy_config.get("action_dim", 2)),
                               image_size=(im, im), wait_s=float(fp.get("wait_s", 120)),
                               min_robots=fp.get("min_robots"), step_timeout_s=float(fp.get("step_timeout_s", 10)),
                               max_steps=fp.get("max_steps"))
        raise JobParamsError(f"fleet kind {kind!r}: use process, local or remote")

    def job_refine(self, ctx: JobContext) -> dict[str, Any]:
        """Re-train a reward model's steps-to-go head on a session's judged episodes
        (core.worker.refine_from_labels); the result names the new reward checkpoint, which a practice session
        can then use (Tasks & fleet: "Reward model")."""
        from core.worker.refine_from_labels import refine_from_labels

        p = check_params("refine", ctx.params)
        sid = p["session_id"] if p["session_id"] is not None else ctx.session_id
        with self.db.read() as s:
            if sid is None:
                if ctx.task_id is None:
                    raise JobParamsError("refine needs session_id (or a job task with judged episodes)")
                judged = [x for x in repo.labeled_sessions(s, ctx.task_id) if x["session_id"] is not None]
                if not judged:
                    raise JobParamsError(f"task {ctx.task_id} has no practice session with judged episodes: label "
                                         "some on the Review page first")
                sid = judged[0]["session_id"]
            sess = repo.get_session(s, sid)
            task = repo.get_task(s, sess.task_id)
            reward = p["reward_checkpoint"] or (sess.params or {}).get("reward_checkpoint")
            if not reward:
                job = s.scalar(select(Job).where(Job.session_id == sid, Job.kind == "practice").order_by(Job.id))
                reward = ((job.params or {}).get("reward_checkpoint") if job is not None else None)
            if not reward:
                raise JobParamsError(f"session {sid} does not record its reward model (it ran before Dojo kept it): "
                                     "pass reward_checkpoint, the best_stg.pt it used")
            from core.worker.refine_from_labels import session_detector

            s_ran, p_ran = session_detector(s, sid)
            patience = int(p_ran or task.detector_patience or 1)
        with self.db.write() as s:
            s.execute(update(Job).where(Job.id == ctx.job_id).values(session_id=sid, task_id=sess.task_id)
                      .execution_options(synchronize_session=False))
        ctx.session_id, ctx.task_id = sid, sess.task_id
        out = p["out"] or str(self.data_dir / "runs" / f"refine-job{ctx.job_id}")
        ctx.message = f"re-training the steps-to-go head of {Path(reward).name} on session {sid}'s judged episodes"

        def interrupt() -> None:
            if self.should_stop(ctx):
                raise self._stop_reason(ctx)

        res = refine_from_labels(self.db.read, task_id=sess.task_id, session_id=sid, reward_checkpoint=_norm(reward),
                                 out=_norm(out), steps=p["steps"], lr=p["lr"], seed=p["seed"],
                                 threshold_s=s_ran, patience=patience,
                                 min_labels=p["min_labels"], fail_tail=p["fail_tail"] or None, anchor=p["anchor"],
                                 interrupt=interrupt,
                                 log=log.info)
        after = res.get("check_after")
        ctx.message = (f"steps-to-go head re-trained on {res['fit']} judged episodes of session {sid}"
                       + (f"; held-out precision {res['check_before']['precision']:.2f} -> {after['precision']:.2f}, "
                          f"recall {res['check_before']['recall']:.2f} -> {after['recall']:.2f}" if after else ""))
        r = res["refine"]
        return {k: v for k, v in res.items() if k != "refine"} | {
            "separation_before": r["before"], "separation_after": r["after"], "demo_episodes": r["demo_episodes"],
            "loss_first": r["loss_first"], "loss_last": r["loss_last"]}

    def job_eval(self, ctx: JobContext) -> dict[str, Any]:
        from core.cli import evaluate_checkpoint

        p = check_params("eval", ctx.params)
        path, cid, metrics = self._resolve_start(p, ctx.task_id)
        reward = self._reward_for(path, metrics, p["reward_checkpoint"])
        ctx.message = f"evaluating {path} on {p['episodes']} episodes"
        res = evaluate_checkpoint(path, p["episodes"], reward_checkpoint=reward, threshold=p["threshold"],
                                  patience=p["patience"], seed0=p["seed0"], n_envs=p["n_envs"], device=p["device"],
                                  progress=False)
        promoted = False
        if cid is not None:
            keep = {k: res[k] for k in ("success", "success_ci", "detector_precision", "detector_recall",
                                        "threshold_s", "mean_length", "episodes") if k in res}
            with self.db.write() as s:
                ck = repo.set_evaluation(s, cid, float(res["success"]), int(res["episodes"]),
                                         metrics={"eval": keep, "eval_seeds": "test"})
                repo.log_metrics(s, {"eval_success": float(res["success"])}, float(ck.iteration or 0),
                                 checkpoint_id=cid, task_id=ck.task_id, job_id=ctx.job_id)
                if p["promote"]:
                    try:
                        repo.promote(s, cid, require_not_worse=True, tolerance=p["promote_tolerance"])
                    except repo.PromotionRefused as e:
                        ctx.message = str(e)
                promoted = ck.promoted
        ctx.message = (f"success {res['success']:.3f} on {res['episodes']} episodes"
                       + (" (promoted)" if promoted else "") + (f"; {ctx.message}" if "refuse" in ctx.message else ""))
        return {**res, "checkpoint_id": cid, "promoted": promoted}


def _calibrated_threshold(reward_path: str, rmeta: dict[str, Any], patience: int) -> float:
    """The detector threshold run_practice would pick: the reward checkpoint's calibration if
    made with this patience, else calibrated on its held-out demonstrations."""
    if rmeta.get("threshold_s") is not None and int(rmeta.get("patience", 1)) == patience:
        return float(rmeta["threshold_s"])
    from core.learning.checkpoint import load_checkpoint
    from core.learning.dataset import held_out_episodes
    from core.learning.evaluate import calibrate_on_demos
    from core.learning.practice import PracticeRefused

    held = held_out_episodes(rmeta)
    if not held:
        raise PracticeRefused(f"{reward_path} carries no detector threshold and no held-out demonstrations to "
                              "calibrate one; pass threshold_s in the job params or set the task's detector threshold")
    reward, _ = load_checkpoint(reward_path, "cpu")
    return float(calibrate_on_demos(reward, held, patience)["threshold_s"])


def _jsonable(x: Any) -> Any:
    return json.loads(json.dumps(x, default=lambda o: o.item() if isinstance(o, np.generic) else str(o)))


# --- entry point -------------------------------------------------------------------------

def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="python -m core.worker", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--db", default=None, help="database URL or SQLite path (default: DATABASE_URL, DOJO_DB, "
                    "data/dojo.sqlite)")
    ap.add_argument("--data", default=os.environ.get("DOJO_DATA", "data"), help="data directory (runs, demos)")
    ap.add_argument("--name", default=os.environ.get("DOJO_WORKER_NAME"),
                    help="stable worker id (default HOSTNAME:0); give each worker on a host its own")
    ap.add_argument("--host", default=os.environ.get("DOJO_TELEMETRY_HOST", "127.0.0.1"),
                    help="interface for the websocket endpoint (0.0.0.0 to let remote robots in)")
    ap.add_argument("--telemetry-port", type=int, default=int(os.environ.get("DOJO_TELEMETRY_PORT", 8765)))
    ap.add_argument("--no-server", action="store_true", help="no websocket endpoint (no live view, no remote robots)")
    ap.add_argument("--token", default=os.environ.get("DOJO_TELEMETRY_TOKEN") or os.environ.get("DOJO_TOKEN"),
                    help="websocket token (default: DOJO_TELEMETRY_TOKEN or DOJO_TOKEN, else <data>/telemetry.token, "
                    "created if missing)")
    ap.add_argument("--max-frame-bytes", type=int, default=2 * 2**20, help="largest remote-robot message accepted")
    ap.add_argument("--poll", type=float, default=0.15, help="seconds between control polls of the database")
    ap.add_argument("--heartbeat", type=float, default=2.0)
    ap.add_argument("--stale", type=float, default=120.0, help="re-queue others' jobs silent for this long")
    ap.add_argument("--threads", type=int, default=int(os.environ.get("DOJO_TORCH_THREADS", 0)),
                    help="torch CPU threads (default: half the cores; simulators need the rest)")
    ap.add_argument("--exit-when-idle", action="store_true", help="exit once the queue is empty")
    ap.add_argument("--max-jobs", type=int, default=None)
    ap.add_argument("--params", action="store_true", help="print the job params schema (JSON) and exit")
    ap.add_argument("--quiet", action="store_true")
    return ap


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.params:
        print(json.dumps({k: job_params_spec(k) for k in JOB_KINDS}, indent=2, default=str))
        return 0
    logging.basicConfig(level=logging.WARNING if args.quiet else logging.INFO,
                        format="%(asctime)s %(name)s %(levelname)s %(message)s")
    import torch

    torch.set_num_threads(args.threads or max(1, (os.cpu_count() or 2) // 2))
    db = init_db(args.db)
    server = telemetry = hub = None
    if not args.no_server:
        from core.worker.remote import RemoteHub
        from core.worker.telemetry import TelemetryHub, WebsocketServer, load_or_create_token

        token = args.token or load_or_create_token(args.data)
        telemetry, hub = TelemetryHub(), RemoteHub(max_message_bytes=args.max_frame_bytes)
        server = WebsocketServer({"/telemetry": telemetry.handler, "/robot": hub.handler}, token, host=args.host,
                                 port=args.telemetry_port, max_message_bytes=args.max_frame_bytes)
        telemetry.attach(server)
        hub.attach(server)
        server.start()
        log.info("websocket endpoint: %s (telemetry), %s (robots); token: %s", server.url("/telemetry", False),
                 server.url("/robot", False), "--token/DOJO_TOKEN" if args.token else f"{args.data}/telemetry.token")
    worker = Worker(db, name=args.name, data_dir=args.data, server=server, telemetry=telemetry, hub=hub,
                    poll_s=args.poll, heartbeat_s=args.heartbeat, stale_s=args.stale)

    def on_signal(signum, _frame):
        log.warning("signal %d: finishing the current step, re-queueing the running job", signum)
        worker.stop()
        signal.signal(signum, signal.SIG_DFL)  # a second signal ends the process at once

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    try:
        n = worker.run(exit_when_idle=args.exit_when_idle, max_jobs=args.max_jobs)
    finally:
        if server is not None:
            server.stop()
        db.dispose()
    log.info("worker %s: %d job(s) handled", worker.name, n)
    return 0


if __name__ == "__main__":
    sys.exit(main())
