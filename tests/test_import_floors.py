"""The numpy core, the data layer and the checkpoint codec never load ray (DESIGN: core and data
never import ray)."""

import subprocess
import sys

import pytest


@pytest.mark.parametrize("module", ["async_coagents.core.network", "async_coagents.core.pretraining",
                                    "async_coagents.data"])
def test_module_does_not_import_ray(module):
    code = f"import {module}, sys; assert 'ray' not in sys.modules, 'ray was imported'"
    subprocess.run([sys.executable, "-c", code], check=True)


def test_a_sweeps_worker_module_loads_neither_numpy_nor_ray_and_the_sweep_no_ray():
    """A spawned worker imports experiment/sweep_processes.py first and sets its BLAS threads
    before numpy loads; the sweep itself imports Ray only for the Ray executor."""
    code = ("import async_coagents.experiment.sweep_processes, sys; "
            "assert 'numpy' not in sys.modules and 'ray' not in sys.modules, 'numpy or ray'; "
            "import async_coagents.experiment.sweep; assert 'ray' not in sys.modules, 'ray'")
    subprocess.run([sys.executable, "-c", code], check=True)
