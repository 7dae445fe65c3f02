"""One module per job kind; each has ``run(worker, ctx) -> result dict``."""
