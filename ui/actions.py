"""Multi-step actions behind the pages' buttons, each in the caller's transaction (so it all
happens or nothing does) and each enforcing the actor's role through storage."""
from __future__ import annotations

import re

from typing import Any, Optional

from sqlalchemy.orm import Session

from core.method.jobs import EVAL_PARAMS, REFINE_PARAMS, json_object
from storage import repo
from storage.models import PracticeSession


REFINE_OPTIONS: tuple[tuple[str, str, Any, str], ...] = (
    ("steps", "Gradient steps", REFINE_PARAMS["steps"]["default"],
     "more steps fit the labels closer (and cost time: ~0.3 s each on 2 cores)"),
    ("fail_tail", "Frames of a failure to train (from its end; 0 = every frame)", REFINE_PARAMS["fail_tail"]["default"],
     "every frame made d a noisier progress reward on the demo (docs/experiments: bench.relabel)"),
    ("anchor", "Anchor weight on a failure's earlier frames (0 = off)", REFINE_PARAMS["anchor"]["default"],
     "keeps d where it was on the frames not trained, so the progress reward stays intact"),
)
"""The refine job's options the Training page offers (name, label, default, hint); the
defaults are the job's own (``core.method.jobs.REFINE_PARAMS``)."""


EVAL_MAX_SEEDS = 1000
EVAL_DEFAULT_SEEDS = int(EVAL_PARAMS["episodes"]["default"])


def queue_evaluation(s: Session, task_id: int, checkpoint_id: int, seeds: int, *, actor) -> Any:
    """An ``eval`` job (core/worker/jobs/evaluate.py) of one of the task's checkpoints on the first
    ``seeds`` test seeds (``EVAL_SEED0`` on: the same for every checkpoint, never selected on).
    Its result lands on the checkpoint (``set_evaluation``); it promotes nothing."""
    from core.method.seeds import EVAL_SEED0

    ck = repo.get_checkpoint(s, int(checkpoint_id))
    if ck.task_id != task_id:
        raise ValueError(f"checkpoint {ck.id} is not one of this task's")
    if not 1 <= int(seeds) <= EVAL_MAX_SEEDS:
        raise ValueError(f"seeds must be 1 to {EVAL_MAX_SEEDS}, got {seeds}")
    params = {"checkpoint_id": ck.id, "episodes": int(seeds), "seed0": EVAL_SEED0, "promote": False}
    return repo.enqueue_job(s, "eval", params, task_id=task_id, actor=actor)


class NoCheckpoint(ValueError):
    """Practice needs a starting policy; the message says how to get one."""


def practice_params(s: Session, task_id: int, fleet_size: int) -> dict[str, Any]:
    """Practice job params (core.worker.params, derived from PracticeConfig): start from the task's
    promoted checkpoint (its recorded Stage-1 reward model stays frozen), on a fleet of
    ``fleet_size`` simulator processes, or of connected robots for a remote-robot task."""
    promoted = repo.get_promoted(s, task_id)
    task = repo.get_task(s, task_id)
    if promoted is None and task.backend == "remote":
        # Real robots: no simulator to evaluate Stage 1 in, so nothing gets promoted by an
        # evaluation; practice starts from the task's newest Stage-1 checkpoint instead.
        promoted = next(iter(repo.list_checkpoints(s, task_id=task_id, stage="sft", limit=1)), None)
    if promoted is None:
        raise NoCheckpoint("this task has no promoted checkpoint to practise from yet: wait for Stage-1 training "
                           "to finish (Jobs below), or promote a checkpoint on the Training page")
    # A remote-robot task practises on the robots that connect to the worker's /robot endpoint.
    kind = "remote" if task.backend == "remote" else "process"
    return {"checkpoint_id": promoted.id, "fleet": {"kind": kind, "size": int(fleet_size)}}


FLEET_CHOICES = {"process": "this machine: one simulator process per robot",
                 "ray": "a Ray cluster: the robots as Ray actors on its nodes (docs/cluster.md)"}
_RAY_ADDRESS = re.compile(r"auto|local|(ray://)?[A-Za-z0-9][A-Za-z0-9.\-]{0,252}:\d{1,5}")


def fleet_choice(kind: str, address: str = "") -> dict[str, Any]:
    """The practice job's extra params for where its simulated robots run (FLEET_CHOICES)."""
    if kind not in FLEET_CHOICES:
        raise ValueError(f"fleet: choose one of {sorted(FLEET_CHOICES)}, got {kind!r}")
    if kind == "process":
        return {}
    address = (address or "").strip()
    if address and not _RAY_ADDRESS.fullmatch(address):
        raise ValueError(f"Ray address {address[:80]!r}: give HOST:PORT of the cluster's head (e.g. 10.0.0.5:6379), "
                         "'auto' on a node of the cluster, or leave it empty for Ray on the worker's machine")
    return {"fleet": {"kind": "ray", **({"address": address} if address else {})}}


def start_practice(s: Session, task_id: int, *, fleet_size: int, actor, name: Optional[str] = None,
                   extra: Optional[dict[str, Any]] = None) -> PracticeSession:
    """A practice session and the job that runs it (both audited, supervisor or above).
    ``extra``: more practice job params (``python -m core.worker --params``, e.g. check_episodes)."""
    repo.require_role(actor, "start_session")
    params = practice_params(s, task_id, fleet_size)
    for k, v in (extra or {}).items():
        params[k] = {**params[k], **v} if k == "fleet" and isinstance(v, dict) else v
    ps = repo.start_session(s, task_id, name=name, params={"fleet_size": int(fleet_size)}, actor=actor)
    repo.enqueue_job(s, "practice", params, task_id=task_id, session_id=ps.id, actor=actor)
    return ps


def stop_practice(s: Session, session_id: int, *, actor) -> PracticeSession:
    """Stop the session; its practice job sees the stop at the next step and ends."""
    return repo.stop_session(s, session_id, actor=actor)


def override_running(s: Session, robot_id: int, success: bool, *, actor) -> Optional[int]:
    """Override the detector on the robot's running episode; returns its id (None: idle)."""
    from ui.queries import running_episodes

    ep = running_episodes(s, [robot_id]).get(robot_id)
    if ep is None:
        # Just finished: the newest finished episode of that robot is what the person saw.
        eps = repo.list_episodes(s, limit=1, robot_id=robot_id, status="finished")
        if not eps:
            return None
        ep = eps[0]
    repo.override_episode(s, ep.id, success, actor=actor, note="from the Live page")
    return ep.id


def parse_extra(text: str) -> dict[str, Any]:
    """The Tasks page's "extra params" box: a JSON object, or empty."""
    return json_object(text, "extra params", '{"check_episodes": 0}') or {}
