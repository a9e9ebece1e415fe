"""The gradient-variance metric (``run.record_grad_variance``) on the Ray backend: every layer
actor measures it and the driver fetches it, so a Ray run's rows are the local run's, bit for
bit (with node groups, a window and a reward delay)."""

import pytest

from async_coagents.experiment.run import RunDirectory, train
from tests.test_run import quick_config, rows_without_timing

pytestmark = pytest.mark.usefixtures("ray_session")


def test_a_ray_run_records_the_grad_variance_of_the_local_run(tmp_path):
    sets = {"run.record_grad_variance": "true", "backend.window": 3, "backend.reward_delay": 1,
            "backend.units_per_actor": 4}
    train(quick_config(**sets), tmp_path / "local", progress=False)
    train(quick_config(**sets, **{"backend.kind": "ray"}), tmp_path / "ray", progress=False)
    local = rows_without_timing(tmp_path / "local")
    assert rows_without_timing(tmp_path / "ray") == local
    *groups, readout = RunDirectory(tmp_path / "ray").metrics()[-1]["grad_variance"]
    assert len(groups) == 4 and all(v > 0 for v in groups) and readout is None  # 8, 6 units by 4
