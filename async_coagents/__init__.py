"""async_coagents: coagent networks — neural networks trained as teams of reinforcement-learning
agents — run in process or as asynchronous Ray actors.

Layers of the package (dependencies point down only): ``cli`` -> ``experiment`` -> ``backends``
-> ``protocol`` -> ``core``, ``data``. ``core`` and ``data`` are pure numpy and never import ray.
"""

__version__ = "0.1.0"
