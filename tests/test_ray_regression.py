"""The redesign's regression fixture on the Ray backend: a representative set of cases (every
message kind: rewards riding with forwards, critic feedback, node groups, the input baseline,
pre-training, clock rates, a window with a reward delay) run with one Ray actor per agent and
reproduce the numbers the local backend recorded, bit for bit (``tests/regression_cases.py``)."""

import pytest

from tests.regression_cases import compare, load_fixture, run_case
from tests.test_regression import check_platform

pytestmark = pytest.mark.usefixtures("ray_session")

RAY_CASES = ["baseline", "ac-offpolicy-window3-delay1", "units-per-actor",
             "input-baseline-window2-delay1", "gaussian-pretrain", "update-every-per-layer",
             "categorical-k5-index-ac-offpolicy"]


@pytest.mark.parametrize("name", RAY_CASES)
def test_a_ray_run_reproduces_the_recorded_local_numbers_bit_for_bit(name, tmp_path):
    check_platform()
    got = run_case(name, tmp_path / name, ["backend.kind=ray"])
    assert compare(name, got, load_fixture()[name]) == []
