"""The ``sft`` job: Stage 1; its best policy becomes an ``sft`` checkpoint row, promoted if
evaluated and not worse than the promoted one."""
from __future__ import annotations

import dataclasses
from typing import Any

from sqlalchemy import select

from core.method.jobs import JobParamsError
from core.worker.checkpoints import norm_path, promote_if_not_worse
from core.worker.job import JobContext
from core.worker.params import check_params
from storage import repo
from storage.models import Checkpoint


def _dataset(w: Any, p: dict[str, Any]) -> str:
    if p["data"] is None and p["demos_job"] is not None:
        with w.db.read() as s:
            dj = repo.get_job(s, p["demos_job"])
        if dj is None or dj.status != "done" or not (dj.result or {}).get("dataset"):
            raise JobParamsError(f"demos_job {p['demos_job']} has no finished dataset; wait for it or pass data")
        return dj.result["dataset"]
    if p["data"] is None:
        raise JobParamsError("sft job: pass data (a dataset directory) or demos_job")
    return p["data"]


def _config(w: Any, ctx: JobContext, p: dict[str, Any]):
    from core.learning.policy import PolicyConfig
    from core.learning.sft import SFTConfig

    pfields = {f.name for f in dataclasses.fields(PolicyConfig)}
    bad = sorted(set(p["policy"] or {}) - pfields)
    if bad:
        raise JobParamsError(f"sft job: unknown policy fields {bad}; PolicyConfig has {sorted(pfields)}")
    fields = {f.name for f in dataclasses.fields(SFTConfig)} - {"data", "out", "policy"}
    return SFTConfig(data=_dataset(w, p), out=p["out"] or str(w.data_dir / "runs" / f"sft-job{ctx.job_id}"),
                     policy=PolicyConfig(**(p["policy"] or {})), **{k: p[k] for k in fields})


def run(w: Any, ctx: JobContext) -> dict[str, Any]:
    from core.learning.sft import train_sft

    p = check_params("sft", ctx.params)
    cfg = _config(w, ctx, p)

    def cb(ev: dict[str, Any]) -> bool:
        ctx.progress = ev["epoch"] / cfg.epochs
        ctx.message = f"epoch {ev['epoch']}/{cfg.epochs}: val stg loss {ev.get('val_stg_loss', float('nan')):.3f}"
        numeric = {k: float(v) for k, v in ev.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}
        with w.db.write() as s:
            repo.log_metrics(s, numeric, ev["epoch"], task_id=ctx.task_id, job_id=ctx.job_id)
        return not w.should_stop(ctx)

    res = train_sft(cfg, progress=False, resume=True, callback=cb)
    if w.should_stop(ctx):
        raise w.stop_reason(ctx)
    succ = res.get("best_select_success")
    evaluated = succ is not None and succ >= 0
    path = norm_path(res["best_policy"])
    with w.db.write() as s:
        ck = s.scalar(select(Checkpoint).where(Checkpoint.path == path))
        metrics = {"reward_checkpoint": norm_path(res["best_stg"]), "run_dir": norm_path(res["run_dir"]),
                   "job_id": ctx.job_id, "calibration": res.get("calibration"), "eval_seeds": "selection"}
        if ck is None:
            ck = repo.add_checkpoint(s, "sft", path, task_id=ctx.task_id, metrics=metrics,
                                     eval_success=float(succ) if evaluated else None,
                                     eval_episodes=cfg.eval_episodes if evaluated else None)
        if evaluated and p["promote"]:
            promote_if_not_worse(s, ck, p["promote_tolerance"])
        cid, promoted = ck.id, ck.promoted
    ctx.message = f"checkpoint {cid}" + (" (promoted)" if promoted else "")
    return {**res, "checkpoint_id": cid, "promoted": promoted}
