"""The ``demos`` job: scripted-expert demonstrations into a dataset directory."""
from __future__ import annotations

from typing import Any

from core.worker.job import JobContext
from core.worker.params import check_params


def run(w: Any, ctx: JobContext) -> dict[str, Any]:
    from core.learning.demos import generate_demos

    p = check_params("demos", ctx.params)
    task = w.task(ctx.task_id)
    backend = p["backend"] or (task.backend if task else "tabletop")
    env_config = p["env_config"] if p["env_config"] is not None else (dict(task.env_config) if task else {})
    out = p["out"] or str(w.data_dir / "demos" / f"job{ctx.job_id}")

    def cb(ev: dict[str, Any]) -> bool:
        ctx.progress = ev["done"] / max(1, ev["total"])
        ctx.message = f"{ev['done']}/{ev['total']} demonstrations"
        return not w.should_stop(ctx)

    res = generate_demos(out, p["n"], backend=backend, env_config=env_config, seed0=p["seed0"],
                         workers=p["workers"], progress=False, callback=cb)
    if w.should_stop(ctx):
        raise w.stop_reason(ctx)
    ctx.message = f"{res['episodes']} demonstrations in {res['dataset']}"
    return res
