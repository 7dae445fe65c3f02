"""Shared pytest setup: the ``slow`` marker, per-test time limits, and a small, fixed torch thread count."""
from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

pytest_plugins = ("pytester",)  # tests/test_time_limits.py runs pytest on tests it writes

# The tests import ``core`` and ``sim_backends`` from the repository root.
ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
# torch.compile of the rollout forward costs ~30 s per fresh process; the tests that check
# the compiled path (tests/core/learning/test_compiled_inference.py) turn it back on themselves.
os.environ.setdefault("DOJO_NO_COMPILE", "1")

# A test that hangs (a browser test once sat 15 min at full CPU in a fresh-clone CI run) fails
# with its stack after this long instead of eating CI's 90 minutes; pytest.ini's ``timeout``
# (pytest-timeout) is the default suite's limit (the whole suite takes ~11 min on 2 cores).
SLOW_TEST_LIMIT_S = 3 * 3600  # a slow benchmark (``-m slow``) runs a plan for up to ~1 h on 2 cores


def pytest_configure(config):
    config.addinivalue_line(
        "markers", "slow: long benchmarks and quality runs (minutes); run with `-m slow`")


def pytest_collection_modifyitems(config, items):
    """Slow tests get SLOW_TEST_LIMIT_S unless they name their own limit (``@pytest.mark.timeout``)."""
    for item in items:
        if item.get_closest_marker("slow") and not item.get_closest_marker("timeout"):
            item.add_marker(pytest.mark.timeout(SLOW_TEST_LIMIT_S))


@pytest.fixture(autouse=True, scope="session")
def torch_threads():
    """One torch thread: on a 2-core box shared with simulators or other jobs, a second
    thread mostly waits on a busy core (ops got 5-10x slower in practice)."""
    try:
        import torch
    except ImportError:  # pragma: no cover
        yield
        return
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
