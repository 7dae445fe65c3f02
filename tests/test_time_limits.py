"""The per-test time limit (pytest-timeout, pytest.ini's ``timeout``; tests/conftest.py): a hung
test fails, naming the timeout and where it hung, and the run goes on to the next test."""
from __future__ import annotations

import pytest


def test_a_hung_test_fails_with_its_stack_and_the_next_test_still_runs(pytester):
    pytester.makepyfile(test_hang="""
        import time

        def test_hangs():
            time.sleep(60)

        def test_after():
            assert True
    """)
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider", "-o", "timeout=2")
    result.assert_outcomes(failed=1, passed=1)
    result.stdout.fnmatch_lines(["*time.sleep(60)*", "*Timeout (>2.0s)*"])
    assert result.duration < 30


def test_slow_tests_get_the_longer_limit_and_the_default_suite_the_ini_one(request):
    from tests.conftest import SLOW_TEST_LIMIT_S, pytest_collection_modifyitems

    assert float(request.config.getini("timeout")) == 600 < SLOW_TEST_LIMIT_S
    slow = pytest.Function.from_parent(request.node.parent, name=request.node.name)
    slow.add_marker(pytest.mark.slow)
    pytest_collection_modifyitems(request.config, [slow])
    assert slow.get_closest_marker("timeout").args == (SLOW_TEST_LIMIT_S,)
