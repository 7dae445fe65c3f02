"""What a failed job's row says: the error, the fix, the traceback."""
from __future__ import annotations

import traceback

from core.method.jobs import JobParamsError
from storage import repo


def _fix(kind: str, e: BaseException) -> str:
    from core.learning.checkpoint import CheckpointError, ResumeConflict
    from core.learning.evaluate import EvaluationRefused
    from core.learning.practice.config import PracticeRefused
    from core.worker.params import job_params_spec
    from core.worker.refine_from_labels import RefineFromLabelsError

    if isinstance(e, JobParamsError):
        return f"correct the job's params and enqueue it again (accepted: {sorted(job_params_spec(kind))})"
    if isinstance(e, RefineFromLabelsError):
        return "see above: label more episodes of that session on the Review page, then re-queue"
    if isinstance(e, PracticeRefused):
        return "see above: improve the Stage-1 reward model or relax the detector settings, then re-queue"
    if isinstance(e, EvaluationRefused):
        return "see above: give the eval job a threshold, or evaluate a checkpoint trained by Dojo's sft job"
    if isinstance(e, ResumeConflict):
        return ("the job's run directory holds a run started with other settings (listed above): enqueue the "
                "job with those settings, or as a new job (a new run directory)")
    if isinstance(e, (FileNotFoundError, CheckpointError)):
        return ("a file named in the params is missing or unreadable: check the path, or run the job that "
                "makes it first (demos -> sft -> practice/eval)")
    if isinstance(e, repo.NotFound):
        return "the params name a row (task, checkpoint, session, job) that does not exist: pick an existing one"
    if isinstance(e, MemoryError):
        return "out of memory: use a smaller fleet, batch or model"
    if isinstance(e, SystemExit):
        return "the job asked to exit the process; the worker refused and went on: read the message above"
    return "read the traceback below; fix the params or the data and re-queue the job"


def describe_error(kind: str, e: BaseException) -> str:
    """The text stored in jobs.error: what went wrong, what to do, the traceback."""
    try:
        fix = _fix(kind, e)
    except Exception:  # noqa: BLE001 - the failure must be recorded even if a module cannot load
        fix = "read the traceback below; fix the params or the data and re-queue the job"
    tb = "".join(traceback.format_exception(type(e), e, e.__traceback__, limit=12))
    return f"{type(e).__name__}: {e}\nFix: {fix}\n\n{tb}"
