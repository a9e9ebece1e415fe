"""The input-state baseline (§3.4) is an agent like the others: its in-flight inputs are part of its
saved state, so a run stopped with batches in flight resumes bit for bit."""

import numpy as np

from async_coagents.backends.local import LocalBackend
from async_coagents.core.network import NetworkSpec, build_network
from async_coagents.experiment.run import resume, train
from tests.test_run import final_params, quick_config, rows_without_timing, stopped_run


def test_input_baseline_run_stopped_with_batches_in_flight_resumes_bit_exactly(tmp_path):
    config = quick_config(**{"network.rule": "input-baseline", "backend.window": 2,
                             "backend.reward_delay": 1})
    train(config, tmp_path / "whole", progress=False)
    stopped = stopped_run(config, tmp_path / "split", stop_after=57)
    assert stopped["status"] == "interrupted" and stopped["accounting"]["in_flight"] == 1
    resumed = resume(tmp_path / "split", progress=False)
    assert resumed["status"] == "completed" and resumed["updates"] == 120
    whole, whole_state = final_params(tmp_path / "whole")
    split, split_state = final_params(tmp_path / "split")
    for a, b in zip(whole, split, strict=True):
        np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(whole_state["backend"]["network"]["input_baseline"]["params"],
                                  split_state["backend"]["network"]["input_baseline"]["params"])
    assert rows_without_timing(tmp_path / "whole") == rows_without_timing(tmp_path / "split")


def test_the_input_baseline_saves_the_inputs_of_batches_in_flight():
    spec = NetworkSpec(n_inputs=4, n_outputs=2, hidden=(5,), rule="input-baseline")
    rng = np.random.default_rng(0)
    data = [(sid, rng.normal(size=(3, 4)).astype(np.float32), rng.integers(0, 2, 3))
            for sid in range(8)]
    a = LocalBackend(build_network(spec, 1), window=3, reward_delay=2)
    for batch in data[:4]:
        a.submit(*batch)
    state = a.state_dict()
    assert len(state["network"]["input_baseline"]["pending"]) == 2  # two batches in flight
    b = LocalBackend(build_network(spec, 9), window=3, reward_delay=2)
    b.load_state_dict(state)
    for backend in (a, b):
        for batch in data[4:]:
            backend.submit(*batch)
        backend.finish()
    for x, y in zip(a.network.state_dict()["layers"], b.network.state_dict()["layers"],
                    strict=True):
        np.testing.assert_array_equal(x["params"], y["params"])
