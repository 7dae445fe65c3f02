"""The ``eval`` job: evaluate a checkpoint on the test seeds, store its success and
optionally promote it."""
from __future__ import annotations

from typing import Any

from core.method.seeds import EVAL_SEED0
from core.worker.checkpoints import promote_if_not_worse, resolve_start, reward_for, task_environment
from core.worker.job import JobContext
from core.worker.params import check_params
from storage import repo

KEPT = ("success", "success_ci", "detector_precision", "detector_recall", "threshold_s", "mean_length", "episodes")


def run(w: Any, ctx: JobContext) -> dict[str, Any]:
    from core.learning.evaluate import evaluate_checkpoint

    p = check_params("eval", ctx.params)
    path, cid, metrics = resolve_start(w.db, p, ctx.task_id)
    reward = reward_for(path, metrics, p["reward_checkpoint"])
    from core.learning.checkpoint import read_checkpoint

    backend, env_config = task_environment(w.db, ctx.task_id, read_checkpoint(path)["meta"])
    ctx.message = f"evaluating {path} on {p['episodes']} episodes" + (f" of {backend}" if backend else "")
    outcomes: list[int] = []  # per seed, in seed order: two checkpoints on the same seeds pair up
    seed0 = EVAL_SEED0 if p["seed0"] is None else int(p["seed0"])
    res = evaluate_checkpoint(path, p["episodes"], reward_checkpoint=reward, threshold=p["threshold"],
                              patience=p["patience"], seed0=seed0, n_envs=p["n_envs"], device=p["device"],
                              progress=False, outcomes=outcomes, backend=backend, env_config=env_config)
    promoted, refused, already = False, None, False
    if cid is not None:
        with w.db.write() as s:
            ck = repo.set_evaluation(s, cid, float(res["success"]), int(res["episodes"]),
                                     metrics={"eval": {**{k: res[k] for k in KEPT if k in res}, "seed0": seed0,
                                                       "outcomes": [int(bool(o)) for o in outcomes]},
                                              "eval_seeds": "test"})
            repo.log_metrics(s, {"eval_success": float(res["success"])}, float(ck.iteration or 0),
                             checkpoint_id=cid, task_id=ck.task_id, job_id=ctx.job_id)
            already = ck.promoted
            if p["promote"]:
                refused = promote_if_not_worse(s, ck, p["promote_tolerance"])
            promoted = ck.promoted
    state = " (promoted)" if promoted and not already else " (the promoted checkpoint)" if promoted else ""
    ctx.message = (f"success {res['success']:.3f} on {res['episodes']} episodes" + state
                   + (f"; {refused}" if refused else ""))
    env = {"environment": {"backend": backend, "env_config": env_config}} if backend else {}  # one task of several
    return {**res, **env, "checkpoint_id": cid, "promoted": promoted}
