"""The redesign's regression fixture (issue 10): every rule, unit family, learner and backend
setting reproduces, bit for bit, the numbers recorded before the code moved
(``tests/regression_cases.py`` says what is recorded and how to record again)."""

import os

import pytest

from tests.conftest import require_dataset
from tests.platform import platform
from tests.regression_cases import CASES, DATA_CASES, FIXTURE, compare, load_fixture, run_case

RECORD = os.environ.get("COAGENTS_RECORD_REGRESSION") == "1"
PLATFORM = FIXTURE.with_name("regression_platform.json")


@pytest.fixture(scope="module")
def recorded():
    if RECORD:
        return {}
    if not FIXTURE.exists():
        pytest.fail(f"{FIXTURE} is missing: record it (see tests/regression_cases.py)")
    check_platform()
    return load_fixture()


def check_platform() -> None:
    """The fixture's numbers are those of one floating-point platform: this session must run
    it (else every case would differ for a reason that is not the code's)."""
    import json

    want = json.loads(PLATFORM.read_text(encoding="utf-8"))
    got = platform()
    if got != want:
        pytest.fail(f"the regression fixture was recorded on {want}, this session runs {got}: "
                    "the pins of tests/conftest.py (numpy's version in pyproject's dev extra, "
                    "NPY_DISABLE_CPU_FEATURES, OPENBLAS_CORETYPE) should make them equal")


@pytest.fixture(scope="module", autouse=True)
def _write_when_recording(recorded):
    yield
    if RECORD:
        import json

        FIXTURE.parent.mkdir(exist_ok=True)
        FIXTURE.write_text(json.dumps(dict(sorted(recorded.items())), indent=1) + "\n",
                           encoding="utf-8")
        PLATFORM.write_text(json.dumps(platform(), indent=1) + "\n", encoding="utf-8")


@pytest.mark.parametrize("name", [*CASES, *DATA_CASES])
def test_a_short_run_reproduces_its_recorded_numbers_bit_for_bit(name, recorded, tmp_path):
    if name in DATA_CASES:
        require_dataset("fashion-mnist")
    got = run_case(name, tmp_path / name)
    assert got["status"] == "completed"
    if RECORD:
        recorded[name] = got
        return
    assert name in recorded, f"case {name} has no recorded numbers: record it"
    assert compare(name, got, recorded[name]) == []


def test_every_case_is_recorded_and_every_record_is_a_case(recorded):
    if RECORD:
        pytest.skip("recording")
    assert sorted(recorded) == sorted([*CASES, *DATA_CASES])
