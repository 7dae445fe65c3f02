"""A job's log tail (core/worker/job.py): what the Tasks page shows under each step."""
from __future__ import annotations


def test_the_log_tail_keeps_the_newest_lines_each_cut_to_a_readable_length():
    import logging

    from core.worker.job import LOG_LINE_CHARS, LOG_TAIL_LINES, JobContext, JobLogHandler

    ctx = JobContext(1, "eval", {}, None, None)
    for i in range(LOG_TAIL_LINES + 5):
        ctx.message = f"step {i}"
    ctx.message = f"step {LOG_TAIL_LINES + 4}"  # the same message again is not a new line
    lines = ctx.log_text().splitlines()
    assert len(lines) == LOG_TAIL_LINES and lines[-1].endswith(f"step {LOG_TAIL_LINES + 4}")
    assert lines[0].endswith("step 5")
    h = JobLogHandler(ctx)
    for name, level, msg in (("dojo.practice", logging.INFO, "x" * 1000), ("dojo.websocket", logging.WARNING, "w"),
                             ("urllib3", logging.WARNING, "u"), ("dojo.worker", logging.WARNING, "careful\nnow")):
        h.emit(logging.LogRecord(name, level, __file__, 1, msg, None, None))
    new = ctx.log_text().splitlines()[-2:]
    assert len(new[0]) == len("00:00:00 ") + LOG_LINE_CHARS and new[0].endswith("…")
    assert new[1].endswith("warning: careful now")  # one line each; other loggers' records stay out
