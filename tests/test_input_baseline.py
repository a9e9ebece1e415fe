"""The input-state baseline (§3.4) is an agent like the others: its in-flight inputs are part of its
saved state, so a run stopped with batches in flight resumes bit for bit (that run is
``tests/test_run.py::test_resume_after_an_interruption_is_bit_exact[input-baseline-2-1]``)."""

import numpy as np

from async_coagents.backends.local import LocalBackend
from async_coagents.core.network import NetworkSpec, build_network


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
