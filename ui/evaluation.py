"""Evaluate and compare a task's checkpoints (the Training page): the task's ``eval`` jobs and
what each recorded, one row per evaluated checkpoint (Stage 1, practice iterations, imported
ones) with its 95 % interval, and the paired gain of two checkpoints run on the same seeds.

Where the figures come from:

* ``checkpoints.eval_success`` / ``eval_episodes``: every evaluation (Stage 1's selection
  seeds, practice's, an ``eval`` job's test seeds); ``metrics["eval_seeds"]`` says which seeds.
* ``metrics["eval"]`` (the ``eval`` job, core/worker/jobs/evaluate.py ``KEPT``): success, its
  Wilson interval, the detector's precision and recall against ground truth, s, mean length.
  The steps-to-go error (``stg_mae_steps``, on the reward model's held-out demonstrations) is
  not kept there; it is in the job's ``result``, read from the jobs table. Stage 1 keeps its
  own in ``metrics["calibration"]``.
* Per-seed outcomes, which a paired comparison needs: the ``eval`` job keeps them in
  ``metrics["eval"]["outcomes"]`` (ground truth per seed from ``metrics["eval"]["seed0"]`` on);
  also read: finished episodes with ``source == "eval"`` and a seed, and the paired gain
  practice stores against its start (``metrics["eval_gain*"]``).

Plain Python out, so the page only renders and each function is tested on its own.
"""
from __future__ import annotations

from typing import Any, Iterable, Optional

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from core.method.stats import paired_gain, wilson_interval
from storage.models import Checkpoint, Episode, Job

SEED_NAMES = {"test": "test", "selection": "selection"}


def eval_jobs(s: Session, task_id: int, *, limit: int = 20) -> list[dict[str, Any]]:
    """The task's ``eval`` jobs, newest first: id, status, progress, message (or the error's
    first line), the checkpoint and seeds asked for, who queued it, and for a finished one its
    figures (success, interval, detector precision/recall, steps-to-go error)."""
    q = select(Job).where(Job.task_id == task_id, Job.kind == "eval").order_by(Job.id.desc()).limit(limit)
    out = []
    for j in s.scalars(q):
        p, r = j.params or {}, j.result or {}
        ci = r.get("success_ci") or (None, None)
        out.append({"job": j.id, "checkpoint_id": r.get("checkpoint_id", p.get("checkpoint_id")),
                    "seeds": p.get("episodes"), "status": j.status, "progress": float(j.progress or 0.0),
                    "message": (j.error or "").split("\n")[0] if j.status == "failed" else (j.message or ""),
                    "success": r.get("success"), "lo": ci[0], "hi": ci[1],
                    "detector_precision": r.get("detector_precision"), "detector_recall": r.get("detector_recall"),
                    "stg_mae_steps": r.get("stg_mae_steps"), "created_by": j.created_by, "created": j.created_at})
    return out


def _origin(ck: Any, bests: set[int]) -> str:
    m = ck.metrics or {}
    if ck.stage == "si":
        return f"practice it {ck.iteration}" + (", best of its run" if ck.id in bests else "")
    return f"Stage 1 (job {m['job_id']})" if m.get("job_id") is not None else "imported"


def _practice_bests(checkpoints: list[Any]) -> set[int]:
    """Per practice run (its job), the practice checkpoint with the highest evaluated success."""
    best: dict[Any, Any] = {}
    for ck in checkpoints:
        if ck.stage != "si" or ck.eval_success is None:
            continue
        run = (ck.metrics or {}).get("job_id")
        if run not in best or ck.eval_success > best[run].eval_success:
            best[run] = ck
    return {ck.id for ck in best.values()}


def evaluated_rows(checkpoints: Iterable[Any], jobs: Iterable[dict[str, Any]] = ()) -> list[dict[str, Any]]:
    """One row per evaluated checkpoint, oldest first: where it came from, on which seeds, its
    success with the 95 % Wilson interval, and what else its evaluation measured. ``jobs``:
    ``eval_jobs`` rows (the newest finished one per checkpoint gives the steps-to-go error)."""
    checkpoints = sorted(checkpoints, key=lambda c: c.id)
    bests = _practice_bests(checkpoints)
    by_job: dict[int, dict[str, Any]] = {}
    for j in sorted(jobs, key=lambda j: j["job"]):
        if j["status"] == "done" and j["checkpoint_id"] is not None:
            by_job[int(j["checkpoint_id"])] = j
    out = []
    for ck in checkpoints:
        if ck.eval_success is None:
            continue
        m = ck.metrics or {}
        ev = m.get("eval") if isinstance(m.get("eval"), dict) else {}
        if ev.get("success") is None or abs(float(ev["success"]) - ck.eval_success) > 1e-9:
            ev = {}  # a later evaluation (practice's) replaced the eval job's figures
        n = ck.eval_episodes or ev.get("episodes")
        ci = ev.get("success_ci")
        if ci:
            lo, hi = float(ci[0]), float(ci[1])
        elif n:
            lo, hi = wilson_interval(round(ck.eval_success * n), int(n))
        else:
            lo = hi = None
        job = by_job.get(ck.id, {})
        cal = m.get("calibration") if isinstance(m.get("calibration"), dict) else {}
        stg = job.get("stg_mae_steps", cal.get("stg_mae_steps"))
        out.append({"checkpoint_id": ck.id, "checkpoint": f"#{ck.id}", "origin": _origin(ck, bests),
                    "seeds": SEED_NAMES.get(m.get("eval_seeds"), m.get("eval_seeds") or "-"),
                    "episodes": n, "success": float(ck.eval_success), "lo": lo, "hi": hi,
                    "detector_precision": ev.get("detector_precision"), "detector_recall": ev.get("detector_recall"),
                    "threshold_s": ev.get("threshold_s"),
                    "stg_mae_steps": None if stg is None else float(stg), "eval_job": job.get("job"),
                    "gain_vs_start": m.get("eval_gain"), "gain_lo": m.get("eval_gain_lo"),
                    "gain_hi": m.get("eval_gain_hi"), "start_checkpoint_id": m.get("start_checkpoint_id"),
                    "promoted": bool(ck.promoted)})
    return out


def describe_evaluation(row: Optional[dict[str, Any]]) -> str:
    """One line for a checkpoint's evaluation (no user text in it: numbers and fixed words)."""
    if row is None:
        return "Not evaluated yet: evaluate it below."
    pct = (lambda v: f"{100 * v:.0f} %")
    text = f"Evaluated success **{pct(row['success'])}**"
    if row["lo"] is not None:
        text += f" (95 % interval {pct(row['lo'])} to {pct(row['hi'])})"
    text += f" on {row['episodes'] or '?'} {row['seeds']} seeds" if row["seeds"] != "-" else \
        f" on {row['episodes'] or '?'} episodes"
    if row["detector_precision"] is not None or row["detector_recall"] is not None:
        f2 = (lambda v: "-" if v is None else f"{v:.2f}")
        text += f"; detector precision {f2(row['detector_precision'])}, recall {f2(row['detector_recall'])}"
        if row["threshold_s"] is not None:
            text += f" at s = {row['threshold_s']:g}"
    if row["stg_mae_steps"] is not None:
        text += f"; steps-to-go error {row['stg_mae_steps']:.1f} steps on held-out demonstrations"
    if row["eval_job"] is not None:
        text += f" (eval job {row['eval_job']})"
    return text + "."


def eval_outcomes(s: Session, task_id: int) -> dict[int, dict[int, bool]]:
    """Per-seed outcomes: {checkpoint id: {seed: success}}, from the task's evaluation episodes
    (``source == "eval"``, finished, with a seed; success = ground truth where known, else a
    person's label, else the override, else the detector) and from the ``eval`` job's outcomes
    kept on each checkpoint (ground truth per test seed)."""
    ok = func.coalesce(Episode.gt_success, Episode.label_success, Episode.override_success, Episode.detector_success)
    q = (select(Episode.checkpoint_id, Episode.seed, ok)
         .where(Episode.task_id == task_id, Episode.source == "eval", Episode.status == "finished",
                Episode.seed.is_not(None), Episode.checkpoint_id.is_not(None))
         .order_by(Episode.id))
    out: dict[int, dict[int, bool]] = {}
    for cid, seed, success in s.execute(q):
        if success is not None:
            out.setdefault(int(cid), {})[int(seed)] = bool(success)  # a seed run again: the newest
    for cid, metrics in s.execute(select(Checkpoint.id, Checkpoint.metrics).where(Checkpoint.task_id == task_id)):
        ev = (metrics or {}).get("eval") if isinstance(metrics, dict) else None
        if isinstance(ev, dict) and isinstance(ev.get("outcomes"), list) and isinstance(ev.get("seed0"), int):
            seeds = out.setdefault(int(cid), {})  # the eval job's outcomes: seed0, seed0 + 1, ...
            for i, o in enumerate(ev["outcomes"]):
                seeds.setdefault(ev["seed0"] + i, bool(o))
    return out


def _verdict(lo: float, hi: float) -> str:
    return "rise beyond noise" if lo > 0 else "drop beyond noise" if hi < 0 else "within noise"


def compare(a: int, b: int, outcomes: dict[int, dict[int, bool]], rows: list[dict[str, Any]]
            ) -> Optional[dict[str, Any]]:
    """The paired gain of checkpoint ``b`` over ``a`` (b minus a, in rate), seed by seed:
    from their evaluation episodes on the seeds both ran, else from the paired gain practice
    stored when one is the other's start. None when neither exists (then only the two
    success intervals can be compared, which is weaker)."""
    sa, sb = outcomes.get(a, {}), outcomes.get(b, {})
    common = sorted(set(sa) & set(sb))
    if common:
        g = paired_gain([sa[k] for k in common], [sb[k] for k in common])
        lo, hi = g["ci"]
        return {"a": a, "b": b, "n": g["n"], "gain": g["gain"], "lo": lo, "hi": hi, "p": g["p"],
                "gained": g["gained"], "lost": g["lost"], "source": "evaluation episodes",
                "verdict": _verdict(lo, hi)}
    by_id = {r["checkpoint_id"]: r for r in rows}
    for first, second, sign in ((a, b, 1.0), (b, a, -1.0)):
        r = by_id.get(second)
        if (r is not None and r["gain_vs_start"] is not None and r["gain_lo"] is not None
                and r["start_checkpoint_id"] == first):
            gain, lo, hi = float(r["gain_vs_start"]), float(r["gain_lo"]), float(r["gain_hi"])
            if sign < 0:
                gain, lo, hi = -gain, -hi, -lo
            return {"a": a, "b": b, "n": None, "gain": gain, "lo": lo, "hi": hi, "p": None, "gained": None,
                    "lost": None, "source": "practice's evaluation against its start", "verdict": _verdict(lo, hi)}
    return None


def table(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """``evaluated_rows`` as the page's table (column names a person reads)."""
    return [{"checkpoint": r["checkpoint"], "origin": r["origin"], "seeds": r["seeds"], "episodes": r["episodes"],
             "success": r["success"], "95 % low": r["lo"], "95 % high": r["hi"],
             "detector precision": r["detector_precision"], "detector recall": r["detector_recall"],
             "s": r["threshold_s"], "steps-to-go error": r["stg_mae_steps"],
             "paired gain vs start": r["gain_vs_start"], "promoted": r["promoted"]} for r in rows]


def job_table(jobs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """``eval_jobs`` as the page's table."""
    return [{"job": j["job"], "checkpoint": None if j["checkpoint_id"] is None else f"#{j['checkpoint_id']}",
             "seeds": j["seeds"], "status": j["status"], "progress": j["progress"], "success": j["success"],
             "message": j["message"], "queued by": j["created_by"], "queued": j["created"]} for j in jobs]
