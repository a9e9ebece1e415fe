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
