"""Functions run in child processes by the storage tests (importable under spawn)."""
from __future__ import annotations

import multiprocessing as mp

# fork starts a child in milliseconds (spawn re-imports everything: seconds on a busy box).
# The children open their own engines and never touch the parent's connections.
CTX = mp.get_context("fork" if "fork" in mp.get_all_start_methods() else "spawn")


def claim_until_empty(url: str, worker: str, start_evt, out_q) -> None:
    """Claim jobs as fast as possible until the queue is empty; report the ids."""
    from storage.db import Database, make_engine
    from storage.jobs import claim_job, finish_job

    db = Database(make_engine(url))
    start_evt.wait(30)
    got, errors = [], []
    while True:
        try:
            with db.write() as s:
                job = claim_job(s, worker)
                if job is None:
                    break
                got.append(job.id)
            with db.write() as s:
                finish_job(s, job.id, worker)
        except Exception as e:  # reported to the parent, which fails the test
            errors.append(repr(e))
            break
    db.dispose()
    out_q.put((worker, got, errors))


def finish_same_episode(url: str, uid: str, task_id: int, start_evt, out_q) -> None:
    """Two processes replaying the same episode write: exactly one may write it."""
    from storage.db import Database, make_engine
    from storage.episodes import finish_episode, steps_from_arrays

    db = Database(make_engine(url))
    start_evt.wait(30)
    try:
        with db.write() as s:
            res = finish_episode(s, uid=uid, task_id=task_id, steps=steps_from_arrays(d=[3.0, 2.0, 1.0]),
                                 frames=[b"f0", b"f1", b"f2"], detector_success=True)
            out_q.put(("ok", res.written))
    except Exception as e:
        out_q.put(("error", repr(e)))
    db.dispose()


def init_db_in_child(url: str, out_q) -> None:
    from storage.db import init_db

    try:
        init_db(url).dispose()
        out_q.put("ok")
    except Exception as e:
        out_q.put(repr(e))
