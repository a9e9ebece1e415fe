"""The Ray backend: every layer agent — or every node group of a split layer — is a Ray actor
wrapping the same core object as in process; the coordinator's schedule runs in the driver and
sends its messages as actor calls. No maths lives here.

Determinism: one submitter (the driver) and single-threaded FIFO actors mean every agent handles
the same messages in the same order as the local backend, so both end bit for bit equal
(`reference/ray_notes.md` §3). Rewards and feedback are sent by value and not waited for; at most
``max_outstanding`` such calls are pending before the driver waits for the oldest (backpressure,
and errors surface). Activations are chained as object references from actor to actor.
"""

from __future__ import annotations

import os
import time
from collections import deque

import numpy as np
import ray
from ray.exceptions import RayTaskError

from async_coagents.backends import ray_env
from async_coagents.core.groups import concatenate_activity
from async_coagents.core.metrics import LayerActivity
from async_coagents.core.network import Network
from async_coagents.core.trainer import copy_pretrained, switch_to_sgd
from async_coagents.errors import CoagentsError
from async_coagents.protocol import Completed, Coordinator, Reward


@ray.remote
class LayerActor:
    """One agent of the protocol in its own process: a core layer (or node group) object."""

    def __init__(self, agent) -> None:
        self.agent = agent

    def step(self, sid: int, rewards: list[Reward], *inputs: np.ndarray) -> np.ndarray:
        """Rewards that rode with this call first, then the forward of batch ``sid``."""
        for s, r, y in rewards:
            self.agent.reward(s, r, y)
        return self.agent.forward(sid, _join(inputs))

    def reward(self, sid: int, r: np.ndarray, y: np.ndarray):
        return self.agent.reward(sid, r, y)

    def feedback(self, sid: int, y):
        return self.agent.feedback(sid, y)

    def deliver(self, rewards: list[Reward]) -> None:
        for s, r, y in rewards:
            self.agent.reward(s, r, y)

    @ray.method(num_returns=2)
    def measure(self, *inputs: np.ndarray):
        h, activity = self.agent.measure(_join(inputs))
        return h, activity.as_tuple()

    def act(self, *inputs: np.ndarray) -> np.ndarray:
        return self.agent.act(_join(inputs))

    def state_dict(self) -> dict:
        return self.agent.state_dict()

    def load_state_dict(self, state: dict) -> None:
        self.agent.load_state_dict(state)

    def stats(self) -> dict:
        return {"name": self.agent.name, **self.agent.stats.as_dict()}

    def take_interval(self) -> tuple[float, int]:
        return self.agent.stats.take_interval()

    def pid(self) -> int:
        return os.getpid()

    def ping(self) -> None:
        return None


def _join(inputs: tuple[np.ndarray, ...]) -> np.ndarray:
    """The layer input: one array, or the outputs of the previous layer's node groups side by side."""
    return inputs[0] if len(inputs) == 1 else np.concatenate(inputs, axis=1)


def get(refs):
    """``ray.get`` that re-raises the project's own errors as themselves (not wrapped)."""
    try:
        return ray.get(refs)
    except RayTaskError as exc:
        cause = getattr(exc, "cause", None)
        if isinstance(cause, CoagentsError):
            raise cause from None
        raise


class RayTransport:
    """Messages as actor calls. A handle is the list of output references of a layer's actors."""

    def __init__(self, network: Network, *, max_outstanding: int = 64,
                 actor_options: dict | None = None) -> None:
        options = actor_options or {}
        self.actors = [[LayerActor.options(**options).remote(agent)
                        for agent in getattr(layer, "groups", [layer])]
                       for layer in network.layers]
        self.listens_to_feedback = [layer.listens_to_feedback for layer in network.layers]
        self.sends_feedback = [layer.sends_feedback for layer in network.layers]
        self.max_outstanding = max_outstanding
        self.outstanding: deque = deque()

    @property
    def flat_actors(self) -> list:
        return [actor for group in self.actors for actor in group]

    def _track(self, refs) -> None:
        self.outstanding.extend(refs)
        if len(self.outstanding) > self.max_outstanding:
            oldest = [self.outstanding.popleft() for _ in range(len(self.outstanding) // 2)]
            get(oldest)

    def drain(self) -> None:
        """Wait for every fire-and-forget call (and raise its error, if any)."""
        refs, self.outstanding = list(self.outstanding), deque()
        get(refs)

    def forward(self, layer: int, sid: int, x, rewards: list[Reward]) -> list:
        inputs = x if isinstance(x, list) else [x]
        if len(self.actors[layer]) > 1 and not isinstance(x, list):
            inputs = [ray.put(x)]  # one copy in the object store for every node group
        return [actor.step.remote(sid, rewards, *inputs) for actor in self.actors[layer]]

    def reward(self, layer: int, sid: int, r: np.ndarray, y: np.ndarray):
        refs = [actor.reward.remote(sid, r, y) for actor in self.actors[layer]]
        self._track(refs)
        return refs[0] if self.sends_feedback[layer] else None

    def feedback(self, layer: int, sid: int, y):
        (actor,) = self.actors[layer]
        ref = actor.feedback.remote(sid, y)
        self._track([ref])
        return ref

    def deliver(self, layer: int, rewards: list[Reward]) -> None:
        self._track([actor.deliver.remote(rewards) for actor in self.actors[layer]])

    def fetch(self, handle) -> np.ndarray:
        if isinstance(handle, np.ndarray):
            return handle
        return _join(tuple(get(handle)))

    def evaluate(self, x: np.ndarray) -> tuple[np.ndarray, list[LayerActivity]]:
        inputs = [ray.put(x)]
        activities = []
        for group in self.actors[:-1]:
            pairs = [actor.measure.remote(*inputs) for actor in group]
            inputs = [h for h, _ in pairs]
            activities.append([ref for _, ref in pairs])
        prediction = [actor.act.remote(*inputs) for actor in self.actors[-1]]
        out = get(prediction)
        layer_activity = [concatenate_activity([LayerActivity(*p) for p in get(parts)])
                          for parts in activities]
        return _join(tuple(out)), layer_activity

    def close(self) -> None:
        for actor in self.flat_actors:
            ray.kill(actor)
        self.actors = []


def connect(address: str = "") -> bool:
    """Make sure Ray is running: reuse an initialised Ray, join ``address``, or start a local
    instance. Returns True when this call started (and so must stop) Ray."""
    if ray.is_initialized():
        return False
    ray_env.prepare(address)  # normally done before ray was imported, see run.make_backend
    if address:
        ray.init(address=address, logging_level="WARNING", log_to_driver=False)
    else:
        ray.init(include_dashboard=False, logging_level="WARNING", log_to_driver=False)
    return True


def disconnect() -> None:
    """Stop the Ray instance :func:`connect` started."""
    ray.shutdown()


def call_round_trips(n: int) -> float:
    """Seconds for ``n`` sequential empty actor calls with their replies (the cost of a message)."""
    actor = LayerActor.remote(None)
    try:
        ray.get(actor.ping.remote())
        start = time.perf_counter()
        for _ in range(n):
            ray.get(actor.ping.remote())
        return time.perf_counter() - start
    finally:
        ray.kill(actor)


class RayBackend:
    """One network as Ray actors, driven by a :class:`Coordinator` in this process.

    The driver keeps the network object as a mirror for checkpoints: its state is refreshed from
    the actors (and pushed to them) only in :meth:`state_dict` and :meth:`load_state_dict`, so a
    checkpoint of a Ray run is the same as one of a local run.
    """

    name = "ray"

    def __init__(self, network: Network, backend: dict) -> None:
        self.started_ray = connect(backend.get("address", ""))
        self.network = network
        self.transport = RayTransport(network, max_outstanding=backend.get("max_outstanding", 64))
        self.coordinator = Coordinator(self.transport, network.objective,
                                       input_baseline=network.input_baseline,
                                       window=backend["window"],
                                       reward_delay=backend["reward_delay"])

    def submit(self, sid: int, x: np.ndarray, y: np.ndarray) -> list[Completed]:
        return self.coordinator.submit(sid, x, y)

    def finish(self) -> list[Completed]:
        done = self.coordinator.finish()
        self.transport.drain()
        return done

    def evaluate(self, x: np.ndarray, y: np.ndarray, **kwargs) -> dict:
        return self.coordinator.evaluate(x, y, **kwargs)

    def layer_stats(self) -> list[dict]:
        self.coordinator.flush()
        return get([actor.stats.remote() for actor in self.transport.flat_actors])

    def take_staleness(self) -> list[tuple[float, int]]:
        self.coordinator.flush()
        return [tuple(s) for s in get([actor.take_interval.remote()
                                       for actor in self.transport.flat_actors])]

    def load_pretrained(self, twin: Network, lr_divisor: float = 128.0) -> None:
        """The §5.4 switch on the actors' weights: copy the twin, then SGD with lr / 128."""
        self._pull()
        copy_pretrained(self.network, twin)
        switch_to_sgd(self.network, lr_divisor)
        self._push()

    def _pull(self) -> None:
        self.transport.drain()
        states = get([actor.state_dict.remote() for actor in self.transport.flat_actors])
        for agent, state in zip(self.network.agents, states, strict=True):
            agent.load_state_dict(state)

    def _push(self) -> None:
        get([actor.load_state_dict.remote(agent.state_dict())
             for agent, actor in zip(self.network.agents, self.transport.flat_actors,
                                     strict=True)])

    def state_dict(self) -> dict:
        coordinator = self.coordinator.state_dict()  # flushes held rewards to the actors first
        self._pull()
        return {"network": self.network.state_dict(), "coordinator": coordinator}

    def load_state_dict(self, state: dict) -> None:
        self.network.load_state_dict(state["network"])
        self._push()
        self.coordinator.load_state_dict(state["coordinator"])

    def close(self) -> None:
        try:
            self.transport.close()
        finally:
            if self.started_ray:
                disconnect()

