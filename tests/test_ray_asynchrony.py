"""Issue 13, part 1, on Ray: every deterministic new setting — firing schedules (periodic and
random: the firing stream is the agent's own), per-layer reward delays and the staleness
correction — ends bit for bit like the local backend (node groups on their own firing streams
too), and a run's metrics rows too."""

import pytest

from async_coagents.testing import check_local_equals_ray, rule_factory
from tests.test_asynchrony import ALL_ON
from tests.test_run import quick_config, rows_without_timing

pytestmark = pytest.mark.usefixtures("ray_session")


@pytest.mark.parametrize("rule, family, spec, delays", [
    ("baseline", "bernoulli", {"fire": ("p:0.4", "every:3:2", "always", "always"),
                               "importance_cap": 1.2}, [3, 2, 1, 0]),
    ("ac", "categorical-output", {"fire": ("p:0.5", "every:2", "always"),
                                  "importance_cap": 1.5}, [3, 2, 1]),
    ("baseline", "bernoulli", {"fire": "p:0.5", "units_per_agent": 3}, [2, 1, 1, 0]),
])
def test_firing_delays_and_correction_on_ray_equal_local(rule, family, spec, delays):
    assert check_local_equals_ray(rule_factory(rule, family, **spec), window=4,
                                  reward_delay=delays)


def test_a_ray_run_with_every_new_setting_writes_the_local_runs_metrics(tmp_path):
    from async_coagents.experiment.run import train

    config = quick_config(**ALL_ON)
    train(config, tmp_path / "local", progress=False)
    ray_config = {**config, "backend": {**config["backend"], "kind": "ray"}}
    train(ray_config, tmp_path / "ray", progress=False)
    assert rows_without_timing(tmp_path / "local") == rows_without_timing(tmp_path / "ray")
