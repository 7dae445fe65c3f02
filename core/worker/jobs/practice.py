"""The ``practice`` job: Stage 2 on a fleet for a practice session. Practice's events are
recorded by ``PracticeRecorder``: every episode at its end in one transaction under the uid
``job<J>-it<IIII>-seed<S>`` (an iteration replayed after a crash writes nothing twice), every
iteration's checkpoint as an ``si`` row whose parent is the one it was trained from,
promoted only if not worse than the promoted one."""
from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

from sqlalchemy import select, update

from core.method.jobs import JobParamsError
from core.worker.checkpoints import norm_path, resolve_start, reward_for, task_environment
from core.worker.job import JobContext, JobStopped
from core.worker.params import check_params
from core.worker.practice_recorder import PracticeRecorder
from core.learning.fleet_kinds import SIM_FLEET_KINDS, make_sim_fleet
from core.learning.ray_fleet import RayClusterError
from core.worker.supervised_fleet import SupervisedFleet
from storage import repo
from storage.models import Checkpoint, Job, Robot, Task, utcnow

STOP_REASONS = {"session stopped": "session stopped by a supervisor", "cancelled": "job cancelled",
                "worker stopping": "worker stopping"}


@dataclass
class _Start:
    policy_path: str
    reward_path: str
    reward_meta: dict[str, Any]
    policy_config: dict[str, Any]
    backend: str
    env_config: dict[str, Any]
    task: Task | None = None
    task_id: int | None = None
    session_id: int | None = None
    start_id: int | None = None


def _models(w: Any, ctx: JobContext, p: dict[str, Any]) -> tuple[_Start, dict[str, Any]]:
    from core.learning.checkpoint import read_checkpoint

    policy_path, start_id, start_metrics = resolve_start(w.db, p, ctx.task_id)
    reward_path = reward_for(policy_path, start_metrics, p["reward_checkpoint"])
    if reward_path is None:
        raise JobParamsError("no reward checkpoint: pass reward_checkpoint (a Stage-1 best_stg.pt)")
    reward_meta = read_checkpoint(reward_path)["meta"]
    own_backend, own_config = task_environment(w.db, ctx.task_id, reward_meta)  # one task of a multi-task model
    backend = p["backend"] or own_backend or reward_meta.get("backend", "tabletop")
    env_config = dict(p["env_config"] if p["env_config"] is not None else
                      own_config if own_config is not None else reward_meta.get("env_config", {}))
    st = _Start(policy_path, reward_path, reward_meta, read_checkpoint(policy_path)["config"], backend, env_config)
    return st, {"start_id": start_id}


def _task_and_session(w: Any, ctx: JobContext, st: _Start, start_id: int | None) -> None:
    """The job's task and practice session (made if the job names none), and its start's row."""
    task_id, session_id = ctx.task_id, ctx.session_id
    with w.db.write() as s:
        if session_id is not None:
            task_id = task_id or repo.get_session(s, session_id).task_id
        if task_id is None:
            family = st.env_config.get("family") or st.env_config.get("task") or "default"
            task_id = repo.get_or_create_task(s, f"{st.backend}:{family}", st.backend, st.env_config).id
        if session_id is None:
            session_id = repo.start_session(s, task_id, name=f"practice job {ctx.job_id}", params=ctx.params).id
        s.execute(update(Job).where(Job.id == ctx.job_id).values(session_id=session_id, task_id=task_id)
                  .execution_options(synchronize_session=False))
        st.task = repo.get_task(s, task_id)
        if repo.get_session(s, session_id).status in ("stopped", "finished"):
            raise JobStopped("session stopped")
        if start_id is None:
            existing = s.scalar(select(Checkpoint).where(Checkpoint.path == st.policy_path))
            start_id = existing.id if existing else repo.add_checkpoint(
                s, "sft", st.policy_path, task_id=task_id, metrics={"reward_checkpoint": st.reward_path}).id
        sess = repo.get_session(s, session_id)  # the reward model that gave this session's d (refine jobs)
        sess.params = {**(sess.params or {}), "reward_checkpoint": st.reward_path}
    st.task_id, st.session_id, st.start_id = task_id, session_id, start_id
    ctx.session_id, ctx.task_id = session_id, task_id


def detector_settings(p: dict[str, Any], given: dict[str, Any], task: Task, reward_meta: dict[str, Any],
                      reward_path: str, fleet_kind: str) -> tuple[float | None, int]:
    """The practice config's (threshold_s, patience): the job's params > the task's setting >
    the reward model's own. None lets practice calibrate s (on demonstrations, then on its
    pre-practice check's rollouts); simulated robots only, since real ones have no ground truth
    to check against. ``given``: the params as enqueued (to tell a default from a choice)."""
    from core.learning.practice.checks import demo_threshold

    if p["threshold_s"] is not None:
        return float(p["threshold_s"]), int(p["patience"])
    threshold, patience = task.detector_threshold, p["patience"]
    if threshold is not None and "patience" not in given:
        patience = task.detector_patience
    # A refined reward model (refine_episodes) reads d on its own scale: a task's s chosen for
    # the old one no longer applies, so the check re-calibrates it.
    auto = threshold is None or bool(p.get("refine_episodes"))
    refined_from_labels = reward_meta.get("stage") == "reward_refined"
    if refined_from_labels:  # re-trained from people's labels (a refine job): its own held-out s
        auto = reward_meta.get("threshold_s") is None
        if not auto:
            threshold, patience = float(reward_meta["threshold_s"]), int(reward_meta.get("patience", patience))
    if auto and fleet_kind != "remote" and p.get("check_episodes", 1):
        return None, int(patience)
    if threshold is None or (refined_from_labels and auto and fleet_kind == "remote"):  # the demos' s
        threshold = demo_threshold(reward_path, reward_meta, int(patience))
    return float(threshold), int(patience)


def run(w: Any, ctx: JobContext) -> dict[str, Any]:
    from core.learning.practice import PracticeConfig

    p = check_params("practice", ctx.params)
    st, extra = _models(w, ctx, p)
    _task_and_session(w, ctx, st, extra["start_id"])
    fleet_p = dict(p["fleet"] or {})
    kind = fleet_p.pop("kind", "process")
    size = int(fleet_p.pop("size", 0) or os.cpu_count() or 1)
    threshold, patience = detector_settings(p, ctx.params, st.task, st.reward_meta, st.reward_path, kind)
    out = p["out"] or str(w.data_dir / "runs" / f"practice-job{ctx.job_id}")
    skip = {"fleet", "frame_every", "jpeg_quality", "promote", "promote_tolerance", "checkpoint_id"}
    kw = {k: v for k, v in p.items() if k not in skip and v is not None}
    kw.update(policy_checkpoint=st.policy_path, reward_checkpoint=st.reward_path, out=norm_path(out),
              backend=st.backend, env_config=st.env_config, fleet_size=size, fleet_kind=kind, ray_address=fleet_p.get("address"),
              threshold_s=threshold, patience=patience)
    cfg = PracticeConfig(**kw)
    fleet = SupervisedFleet(_make_fleet(w, kind, size, fleet_p, st, cfg))
    sim_ids = _register_sim_robots(w, fleet, st.task_id) if kind != "remote" else {}
    if sim_ids:
        fleet.on_status = lambda i, online: _robot_status(w, fleet, sim_ids[i], i, online)
    recorder = PracticeRecorder(w, ctx, cfg, fleet, task_id=st.task_id, session_id=st.session_id,
                                start_checkpoint_id=st.start_id, frame_every=p["frame_every"],
                                jpeg_quality=p["jpeg_quality"], promote=p["promote"],
                                promote_tolerance=p["promote_tolerance"], sim_robot_ids=sim_ids)
    fleet.on_failure = recorder.on_failure
    w.practice = recorder  # for tests and introspection
    ctx.message = f"practice: {fleet.size} robots ({kind})"
    summary = _practise(w, ctx, cfg, fleet, recorder, sim_ids if kind != "remote" else None)
    ctx.message = summary.get("stop_reason") or (
        f"practice done: {summary['iterations']} iterations, {summary['episodes']} episodes, "
        f"best eval success {summary['best_success']:.3f} (iteration {summary['best_iteration']})")
    return {**summary, "session_id": st.session_id, "checkpoint_id": recorder.checkpoint_id,
            "episodes_recorded": recorder.recorded}


def _practise(w: Any, ctx: JobContext, cfg: Any, fleet: SupervisedFleet, recorder: PracticeRecorder,
              sim_ids: dict[int, int] | None) -> dict[str, Any]:
    """Run practice with the recorder; whatever happens, episodes left running are aborted,
    the robots told they are offline and the fleet closed."""
    from core.learning.practice import run_practice

    reason = "job ended"
    try:
        summary = run_practice(cfg, progress=False, fleet=fleet, observer=recorder)
        if w.should_stop(ctx):
            reason = "worker stopping" if w.stopping.is_set() else "job cancelled"
            raise w.stop_reason(ctx)
        with w.db.write() as s:
            if repo.get_session(s, recorder.session_id).status in ("running", "paused"):
                repo.finish_session(s, recorder.session_id)
        return summary
    except JobStopped as e:
        reason = STOP_REASONS.get(e.reason, e.reason)
        raise
    finally:
        try:
            recorder.abort_leftovers(reason)
            recorder.publish_ended(reason)
            if sim_ids:
                with w.db.write() as s:
                    s.execute(update(Robot).where(Robot.id.in_(list(sim_ids.values())), Robot.status == "online")
                              .values(status="offline").execution_options(synchronize_session=False))
        finally:
            fleet.close()


def _placement(fleet: SupervisedFleet, i: int) -> dict[str, Any] | None:
    """Where robot ``i``'s simulator runs, for the fleet table: its Ray node (a Ray fleet)."""
    node = getattr(fleet.inner, "node", None)
    return {"node": node(i)} if node is not None else None


def _register_sim_robots(w: Any, fleet: SupervisedFleet, task_id: int) -> dict[int, int]:
    with w.db.write() as s:
        return {i: repo.register_robot(s, f"{w.name}/sim-{i}", "sim", task_id=task_id, worker=w.name,
                                       spec=_placement(fleet, i)).id
                for i in range(fleet.size)}


def _robot_status(w: Any, fleet: SupervisedFleet, robot_id: int, i: int, online: bool) -> None:
    """A simulated robot parked (its process or Ray actor is gone) shows offline; back, online,
    with its node (Ray may have restarted its actor on another one)."""
    with w.db.write() as s:
        row = s.get(Robot, robot_id)
        if row is None or row.status not in ("online", "offline"):  # a supervisor's stop or pause stands
            return
        row.status = "online" if online else "offline"
        if online and _placement(fleet, i) is not None:
            row.spec = {**(row.spec or {}), **_placement(fleet, i)}
        row.last_seen = utcnow()


def _make_fleet(w: Any, kind: str, size: int, fp: dict[str, Any], st: _Start, cfg: Any):
    env_config = {**st.env_config, "terminate_on_success": bool(cfg.ground_truth_reward)}
    if kind in SIM_FLEET_KINDS:
        try:
            return make_sim_fleet(kind, st.backend, env_config, size, ray_address=fp.pop("address", None))
        except RayClusterError as e:
            raise JobParamsError(str(e)) from None
    if kind == "remote":
        from core.worker.remote import RemoteFleet

        if w.hub is None:
            raise JobParamsError("fleet kind 'remote' needs the worker's websocket server (start it without "
                                 "--no-server) so robots can connect to /robot")
        im = int(st.policy_config.get("image_size", 64))
        remote_task = st.task is not None and st.task.backend == "remote"  # made by `core.cli tasks add`
        return RemoteFleet(w.hub, size, task=st.task.name, action_dim=int(st.policy_config.get("action_dim", 2)),
                           image_size=(im, im), wait_s=float(fp.get("wait_s", 120)),
                           min_robots=fp.get("min_robots"), step_timeout_s=float(fp.get("step_timeout_s", 10)),
                           max_steps=fp.get("max_steps"),
                           task_spec=dict(st.task.env_config) if remote_task else None)
    raise JobParamsError(f"fleet kind {kind!r}: use process, local, ray or remote")
