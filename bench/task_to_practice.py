"""From a new task to its first practice episode: how long each step takes on this machine.

    python -m bench.task_to_practice [--tasks tabletop,metaworld] [--quick] [--root DIR]

For each task kind, over a fresh data directory and SQLite database, with one worker
(``python -m core.worker``) running in the background for the whole run, the steps a
supervisor takes on the Tasks page, timed from the click to the step's end:

1. ``tasks add``: the subprocess the New task form runs (``ui.new_task.run_cli``, the
   catalog entry's defaults as the form fills them: tabletop Block2Location, Meta-World
   drawer-close-v3), the backend built and checked before the task is saved;
2. ``demos``: the Prepare form's demonstrations job (``ui.prepare.enqueue_demos``);
3. ``sft``: the Prepare form's Stage-1 job on it (``ui.prepare.enqueue_sft``), which
   evaluates and promotes its checkpoint;
4. ``practice``: ``ui.actions.start_practice`` as the admin, the form's fleet size (the
   task's), until the first finished practice episode (the pre-practice check and the
   start's evaluation come first, as on the page); the session is stopped then.

Sizes: the Prepare forms' defaults (``ui.prepare.DEFAULT_DEMOS``, ``DEFAULT_EPOCHS``,
``DEFAULT_SFT_MINUTES``, the "Model width" default of pages/tasks.py) and no extra practice
params. ``--quick``: 6 demonstrations, 1 epoch, a 1-minute cap, the narrowest model, and
practice without the pre-practice check and with a 2-episode start evaluation (the e2e
test's sizes: minutes, not the hour the defaults can take on 2 cores).

A table (step, seconds, of which the job itself ran) per task; the last line printed is
``RESULT {json}``. Run directories: ``data/bench/task_to_practice/<stamp>`` (worker log
in ``worker.log``).
"""
from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from bench.common import print_result, wait_until

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_ROOT = ROOT / "data" / "bench" / "task_to_practice"
ADMIN = "admin"
# The Tasks page's catalog entries (core/cli_tasks.py keys) for each kind.
ENTRIES = {"tabletop": "tabletop:block2location", "metaworld": "metaworld:drawer-close-v3"}
# pages/tasks.py, the Stage-1 form: st.selectbox("Model width", (64, 128, 256), index=1).
MODEL_WIDTHS = (64, 128, 256)
DEFAULT_MODEL_WIDTH = MODEL_WIDTHS[1]
QUICK = {"demos": 6, "epochs": 1, "minutes": 1.0, "d_model": MODEL_WIDTHS[0],
         "practice_extra": {"check_episodes": 0, "eval_episodes": 2, "eval_every": 1000}}


def sizes(quick: bool) -> dict[str, Any]:
    from ui import prepare

    if quick:
        return dict(QUICK)
    return {"demos": prepare.DEFAULT_DEMOS, "epochs": prepare.DEFAULT_EPOCHS, "minutes": prepare.DEFAULT_SFT_MINUTES,
            "d_model": DEFAULT_MODEL_WIDTH, "practice_extra": {}}


def form_fields(entry: dict[str, Any], catalog: dict[str, Any], name: str) -> dict[str, Any]:
    """The New task form's values for ``entry`` left at their defaults (ui/new_task.py)."""
    kind, cfg = entry["kind"], entry["env_config"]
    f: dict[str, Any] = {"name": name, "description": "bench.task_to_practice",
                         "max_steps": int(entry.get("max_steps") or (80 if kind == "tabletop" else 100)),
                         "image_size": int(cfg.get("image_size", 64))}
    if kind == "tabletop":
        opts = catalog["tabletop"]
        f.update(family=cfg.get("family", "block2block"), objects=cfg.get("objects", []),
                 blocks=cfg.get("blocks", opts["default_blocks"]))
    return f


def _job(db, job_id: int) -> dict[str, Any]:
    from storage.models import Job

    with db.read() as s:
        j = s.get(Job, job_id)
        return {"id": j.id, "status": j.status, "error": j.error, "result": j.result or {}, "message": j.message,
                "ran_s": (j.finished_at - j.started_at).total_seconds() if j.started_at and j.finished_at else None}


def wait_job(db, job_id: int, timeout: float, log: Path) -> dict[str, Any]:
    job = wait_until(lambda: (j := _job(db, job_id))["status"] in ("done", "failed", "cancelled") and j,
                     timeout, f"job {job_id} (worker log: {log})", every=1.0)
    if job["status"] != "done":
        raise RuntimeError(f"job {job_id} {job['status']}: {(job['error'] or '')[-1500:]}")
    return job


def run_task(kind: str, db, admin, catalog: dict[str, Any], sz: dict[str, Any], timeout: float,
             log: Path, out: dict[str, Any]) -> dict[str, Any]:
    """Steps of one task into ``out`` (kept when a step fails): steps [{step, seconds, job_s}],
    and what each produced."""
    from storage import repo
    from storage.models import Episode, Job
    from ui import actions, new_task, prepare

    entry = next(e for e in catalog["entries"] if e["key"] == ENTRIES[kind])
    name = f"bench {kind} {entry['key'].split(':')[1]}"
    out.update(task=name, entry=entry["key"])

    class _Steps(list):  # each step printed as it ends (a long run shows its progress)
        def append(self, st: dict[str, Any]) -> None:
            super().append(st)
            job = "" if st["job_s"] is None else f" (job ran {st['job_s']:.1f} s)"
            print(f"[{kind}] {st['step']}: {st['seconds']:.1f} s{job}", flush=True)
    steps = out["steps"] = _Steps()

    t0 = time.perf_counter()
    created = new_task.run_cli(new_task.add_args(entry, form_fields(entry, catalog, name), ADMIN))
    steps.append({"step": "tasks add", "seconds": time.perf_counter() - t0, "job_s": None})
    out["check"] = created.get("check")
    with db.read() as s:
        task = repo.get_task(s, name)
        task_id, fleet = task.id, int(task.fleet_size or 1)
    out["task_id"] = task_id

    t0 = time.perf_counter()
    with db.write() as s:
        jid = prepare.enqueue_demos(s, task_id, sz["demos"], 1, actor=admin).id
    demos = wait_job(db, jid, timeout, log)
    steps.append({"step": f"demos (n={sz['demos']})", "seconds": time.perf_counter() - t0, "job_s": demos["ran_s"]})

    t0 = time.perf_counter()
    with db.write() as s:
        jid = prepare.enqueue_sft(s, task_id, demos["id"], epochs=sz["epochs"], max_minutes=sz["minutes"],
                                  policy={"d_model": sz["d_model"]}, actor=admin).id
    sft = wait_job(db, jid, timeout, log)
    steps.append({"step": f"sft ({sz['epochs']} ep, cap {sz['minutes']:g} min, d_model {sz['d_model']})",
                  "seconds": time.perf_counter() - t0, "job_s": sft["ran_s"]})
    out["sft"] = {k: sft["result"].get(k) for k in ("checkpoint_id", "promoted", "best_select_success")}

    t0 = time.perf_counter()
    with db.write() as s:
        ps = actions.start_practice(s, task_id, fleet_size=fleet, actor=admin, extra=dict(sz["practice_extra"]))
        sid = ps.id
    with db.read() as s:
        pjob = s.query(Job.id).filter(Job.session_id == sid, Job.kind == "practice").scalar()

    def first_episode():
        j = _job(db, pjob)
        if j["status"] in ("failed", "cancelled", "done"):
            raise RuntimeError(f"practice job {pjob} {j['status']} before a practice episode: "
                               f"{(j['error'] or j['message'] or '')[-1500:]}")
        with db.read() as s:
            ep = s.query(Episode).filter(Episode.session_id == sid, Episode.source == "practice",
                                         Episode.status == "finished").order_by(Episode.id).first()
            return ep and {"id": ep.id, "length": ep.length, "detector_success": ep.detector_success,
                           "gt_success": ep.gt_success}
    try:
        ep = wait_until(first_episode, timeout, f"the first practice episode of session {sid} (worker log: {log})",
                        every=1.0)
        steps.append({"step": f"practice to 1st episode (fleet {fleet})", "seconds": time.perf_counter() - t0,
                      "job_s": None})
        out["first_episode"] = ep
    finally:
        with db.write() as s:
            if repo.get_session(s, sid).status in ("running", "paused"):
                actions.stop_practice(s, sid, actor=admin)
        try:  # the worker is free again before the next task's steps are timed
            wait_until(lambda: _job(db, pjob)["status"] in ("done", "failed", "cancelled"), 180,
                       f"practice job {pjob} to stop")
        except TimeoutError as e:
            print(f"warning: {e}", flush=True)
    return out


def table(result: dict[str, Any]) -> str:
    lines = [f"task: {result['task']} ({result['entry']})", f"  {'step':<52} {'seconds':>9} {'job ran':>9}"]
    for st in result["steps"]:
        job = "" if st["job_s"] is None else f"{st['job_s']:.1f}"
        lines.append(f"  {st['step']:<52} {st['seconds']:>9.1f} {job:>9}")
    total = sum(st["seconds"] for st in result["steps"])
    lines.append(f"  {'total' + ('' if result.get('error') is None else ' (stopped: ' + result['error'][:60] + ')'):<52}"
                 f" {total:>9.1f}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 epilog=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--tasks", default="tabletop,metaworld", help="comma-separated: tabletop, metaworld")
    ap.add_argument("--quick", action="store_true", help="tiny sizes (the e2e test's) instead of the forms' defaults")
    ap.add_argument("--root", default=None, help=f"run directory (default {DEFAULT_ROOT}/<stamp>)")
    ap.add_argument("--step-timeout", type=float, default=3 * 3600, help="seconds one step may take")
    args = ap.parse_args(argv)
    kinds = [k.strip() for k in args.tasks.split(",") if k.strip()]
    bad = sorted(set(kinds) - set(ENTRIES))
    if bad:
        ap.error(f"unknown task kinds {bad}; choose from {', '.join(ENTRIES)}")

    root = Path(args.root or DEFAULT_ROOT / time.strftime("%Y%m%d-%H%M%S")).resolve()
    data = root / "data"
    data.mkdir(parents=True, exist_ok=True)
    db_path = data / "dojo.sqlite"
    # The page's subprocesses and the worker inherit these: one fresh database and data dir.
    os.environ.update(DOJO_DB=str(db_path), DOJO_DATA=str(data))
    os.environ.pop("DATABASE_URL", None)
    os.environ.setdefault("MUJOCO_GL", "egl")
    os.environ.setdefault("PYOPENGL_PLATFORM", os.environ["MUJOCO_GL"])

    from storage import init_db
    from storage.auth import get_user
    from ui import bootstrap, new_task

    db = init_db(str(db_path))
    with db.write() as s:
        bootstrap.ensure_admin(s, "bench-admin-password", username=ADMIN)
    with db.read() as s:
        admin = get_user(s, ADMIN)
        s.expunge(admin)
    sz = sizes(args.quick)
    print(f"bench.task_to_practice: tasks {kinds}, {'quick' if args.quick else 'default'} sizes "
          f"{ {k: v for k, v in sz.items()} }, run dir {root}", flush=True)

    log_path = root / "worker.log"
    log = open(log_path, "w")
    worker = subprocess.Popen([sys.executable, "-m", "core.worker", "--db", str(db_path), "--data", str(data),
                               "--no-server"], cwd=ROOT, env=dict(os.environ), stdout=log, stderr=subprocess.STDOUT)
    results: list[dict[str, Any]] = []
    t_all = time.perf_counter()
    try:
        t0 = time.perf_counter()
        catalog = new_task.run_cli(["catalog", "--json"], timeout=new_task.CATALOG_TIMEOUT_S)
        catalog_s = time.perf_counter() - t0
        print(f"catalog (once per app process): {catalog_s:.1f} s", flush=True)
        for kind in kinds:
            t0 = time.perf_counter()
            res: dict[str, Any] = {"task": kind, "entry": ENTRIES[kind], "steps": [], "error": None}
            try:
                run_task(kind, db, admin, catalog, sz, args.step_timeout, log_path, res)
            except Exception as e:  # noqa: BLE001 - one task's failure is reported, the next still runs
                res["error"] = f"{type(e).__name__}: {e}"
                print(f"{kind}: {res['error']}", flush=True)
            res["kind"], res["wall_s"] = kind, time.perf_counter() - t0
            results.append(res)
            print(table(res), flush=True)
    finally:
        if worker.poll() is None:
            worker.send_signal(signal.SIGINT)
            try:
                worker.wait(60)
            except subprocess.TimeoutExpired:
                worker.kill()
        log.close()
        db.dispose()
    print("\n" + "\n\n".join(table(r) for r in results), flush=True)
    print_result({"bench": "task_to_practice", "quick": args.quick, "sizes": sz, "catalog_s": round(catalog_s, 1),
                  "total_s": round(time.perf_counter() - t_all, 1), "run_dir": str(root), "cpus": os.cpu_count(),
                  "tasks": {r["kind"]: {"steps": {st["step"]: round(st["seconds"], 1) for st in r["steps"]},
                                        "job_s": {st["step"]: round(st["job_s"], 1) for st in r["steps"]
                                                  if st["job_s"] is not None},
                                        "sft": r.get("sft"), "first_episode": r.get("first_episode"),
                                        "error": r["error"]} for r in results}})


if __name__ == "__main__":
    main()
