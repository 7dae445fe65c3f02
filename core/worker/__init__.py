"""The worker: claims jobs from the database and runs them (``python -m core.worker``)."""
from core.worker import runner as _runner

globals().update({k: v for k, v in vars(_runner).items() if not k.startswith("__")})  # interim, split follows
