"""An independent second implementation of the paper's training step, written from
``paper_method.md`` alone (§1-§4, §6.1, §10), against which the package's agents are checked in
``tests/test_reference_order.py``.

``maths`` holds the formulas (unit families, score functions, torch's optimizers, the critics'
ReLU networks), ``monolith`` the whole training step of one network in one place, as the paper's
agent files write it, and ``package`` the only code that knows how the package is built, driven
and read.
"""
