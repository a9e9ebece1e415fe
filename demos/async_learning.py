"""Asynchronous learning demo: one coagent network, trained in process and as Ray actors, with
batches in flight, late rewards and layers running at their own clock rates.

    python demos/async_learning.py [--out DIR] [--updates N] [--no-ray]

The same as ``coagents demo``; the demo itself is ``async_coagents/experiment/demo.py`` (so that it
is there after ``pip install`` too).
"""

import sys

from async_coagents.cli import main

if __name__ == "__main__":
    sys.exit(main(["demo", *sys.argv[1:]]))
