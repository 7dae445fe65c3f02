"""One rule between the policy's [-1, 1] actions and a robot's (or a dataset's) units."""
import numpy as np
import pytest

from core.method.action_units import bounds_to_unit, check_bounds, unit_to_bounds


def test_the_ends_and_the_middle_map_onto_the_bounds():
    low, high = [-0.05, 0.0, 10.0], [0.05, 2.0, 30.0]
    np.testing.assert_allclose(unit_to_bounds([-1, -1, -1], low, high), low)
    np.testing.assert_allclose(unit_to_bounds([1, 1, 1], low, high), high)
    np.testing.assert_allclose(unit_to_bounds([0, 0, 0], low, high), [0.0, 1.0, 20.0])


def test_round_trip_and_clipping():
    rng = np.random.default_rng(0)
    low, high = np.array([-3.0, 0.5]), np.array([7.0, 0.75])
    a = rng.uniform(low, high, size=(50, 2))
    np.testing.assert_allclose(unit_to_bounds(bounds_to_unit(a, low, high), low, high), a, rtol=1e-5, atol=1e-6)
    assert bounds_to_unit([100.0, -100.0], low, high).tolist() == [1.0, -1.0]
    np.testing.assert_allclose(unit_to_bounds([5.0, -5.0], low, high), [7.0, 0.5])  # a policy cannot leave them


def test_a_dimension_that_never_varies_is_zero_in_policy_units_and_its_value_for_the_robot():
    assert bounds_to_unit([2.0, 1.0], [2.0, 0.0], [2.0, 4.0]).tolist() == [0.0, -0.5]
    assert unit_to_bounds([0.7, 0.0], [2.0, 0.0], [2.0, 4.0]).tolist() == [2.0, 2.0]


@pytest.mark.parametrize("low, high, says", [([0.0], [1.0, 1.0], "need 2 values"),
                                             ([0.0, 2.0], [1.0, 1.0], "low <= high"),
                                             ([0.0, float("nan")], [1.0, 1.0], "finite")])
def test_bad_bounds_are_refused_with_the_problem(low, high, says):
    with pytest.raises(ValueError, match=says):
        check_bounds(low, high, 2, "test")
