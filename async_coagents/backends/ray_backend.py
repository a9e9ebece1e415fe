"""The Ray backend: every layer agent — or every node group of a split layer — is a Ray actor
wrapping the same core object as in process; the coordinator's schedule runs in the driver and
sends its messages as actor calls. No maths lives here.

Determinism: one submitter (the driver) and single-threaded FIFO actors mean every agent handles
the same messages in the same order as the local backend, so both end bit for bit equal
(`reference/ray_notes.md` §3). Rewards and feedback are sent by value and not waited for; at most
``max_outstanding`` such calls are pending before the driver waits for the oldest (backpressure,
and errors surface). Activations are chained as object references from actor to actor.

Fault tolerance (ray_notes §4): actors restart automatically (``max_restarts``; calls in flight
are retried) and a restarted actor continues from its own last checkpoint, written atomically
every ``checkpoint_every`` applied updates and at every checkpoint of the run, in
``checkpoint_dir`` (shared storage on a cluster). Agents are idempotent (a retried message never
applies an update twice). The driver keeps the reward and feedback messages sent since the run's
last checkpoint and replays them to a restarted actor, which re-applies the updates it lost for
batches it still holds; batches it no longer holds are recorded as lost. Every agent ends with
every batch applied, dropped or lost.
"""

from __future__ import annotations

import logging
import os
import time
import uuid
from collections import deque
from collections.abc import Callable

import numpy as np
import ray
from ray.exceptions import RayTaskError
from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

from async_coagents.backends import ray_env
from async_coagents.backends.base import CoordinatedBackend, Transport
from async_coagents.checkpoint import load_checkpoint, save_checkpoint
from async_coagents.coordinator import Completed, Reward
from async_coagents.core.groups import concatenate_activity
from async_coagents.core.metrics import LayerActivity
from async_coagents.core.network import Network
from async_coagents.errors import CoagentsError, ConfigError

log = logging.getLogger(__name__)


@ray.remote
class LayerActor:
    """One agent of the protocol in its own process: a core layer (or node group) object.

    ``agent`` is the agent the actor starts from (see :func:`_starting_agent`).

    With ``checkpoint_path`` the actor saves its agent there (atomically, msgpack) every
    ``checkpoint_every`` applied updates and on request; when Ray restarts it within the same
    ``session`` it continues from that file instead of from the agent it started from.
    """

    def __init__(self, agent, checkpoint_path: str | None = None, session: str = "",
                 checkpoint_every: int = 0) -> None:
        self.agent = agent
        self.path = checkpoint_path
        self.session = session
        self.checkpoint_every = checkpoint_every
        self.incarnation = 0
        if self.path and os.path.exists(self.path):
            state = load_checkpoint(self.path, kind="agent")
            if state["session"] == session:  # a restart of this run's actor
                self.agent.load_state_dict(state["agent"])
                self.incarnation = int(state["incarnation"]) + 1
        self._saved_at = self._applied()
        if self.path:
            self.checkpoint()

    def _applied(self) -> int:
        return self.agent.stats.applied if self.agent is not None else 0

    def checkpoint(self) -> None:
        """Save the agent now."""
        save_checkpoint(self.path, {"session": self.session, "incarnation": self.incarnation,
                                    "agent": self.agent.state_dict()}, kind="agent")
        self._saved_at = self._applied()

    def _after_update(self) -> None:
        if self.path and self.checkpoint_every and (
                self._applied() - self._saved_at >= self.checkpoint_every):
            self.checkpoint()

    def step(self, sid: int, rewards: list[Reward], *inputs: np.ndarray) -> np.ndarray:
        """Rewards that rode with this call first, then the forward of batch ``sid``."""
        for s, r, labels in rewards:
            self.agent.reward(s, r, labels)
        self._after_update()
        return self.agent.forward(sid, _join(inputs))

    def reward(self, sid: int, r: np.ndarray, labels: np.ndarray | None):
        out = self.agent.reward(sid, r, labels)
        self._after_update()
        return out

    def feedback(self, sid: int, message):
        out = self.agent.feedback(sid, message)
        self._after_update()
        return out

    def deliver(self, rewards: list[Reward]) -> None:
        for s, r, labels in rewards:
            self.agent.reward(s, r, labels)
        self._after_update()

    def replay(self, messages: list[tuple]) -> None:
        """Messages sent since the run's last checkpoint, again: the agent re-applies what it lost
        and skips what it already applied or dropped. The updates it re-applied are counted in
        its accounting as ``replayed`` (the agent itself does not know it is being replayed)."""
        applied = self.agent.stats.applied
        try:
            for kind, sid, a, b in messages:
                if kind == "reward":
                    self.agent.reward(sid, a, b)
                else:
                    self.agent.feedback(sid, a)
        finally:
            self.agent.stats.replayed += self.agent.stats.applied - applied
        self._after_update()

    def info(self) -> dict:
        """Where and in which incarnation this agent runs."""
        context = ray.get_runtime_context()
        return {"name": self.agent.name, "pid": os.getpid(), "node_id": context.get_node_id(),
                "ip": ray.util.get_node_ip_address(), "incarnation": self.incarnation}


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
        return self.agent.report()

    def take_interval(self) -> tuple[float | None, int | None]:
        return self.agent.take_staleness()

    def take_grad_variance(self) -> float | None:
        return self.agent.take_grad_variance()

    def pid(self) -> int:
        return os.getpid()

    def ping(self) -> None:
        return None


#: Ray carries a task argument smaller than this inside the task itself; a larger one goes to the
#: object store (Ray's ``max_direct_call_object_size``, 100 KiB by default).
RAY_INLINE_BYTES = 100 * 1024


def _starting_agent(agent, held: list):
    """What to pass an actor as the agent it starts from. A small agent travels inline, in the
    actor's creation task, which Ray keeps for restarts. A large one would be a creation argument
    in the object store, which Ray does not keep for restarts (ray-project/ray#53727; Ray logs an
    error line about it): it is put there by the driver, which holds the reference in ``held``
    for the whole run, so a restart always finds it."""
    if len(ray.cloudpickle.dumps(agent)) < 0.9 * RAY_INLINE_BYTES:
        return agent
    held.append(ray.put(agent))
    return held[-1]


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


class RayTransport(Transport):
    """Messages as actor calls. A handle is the list of output references of a layer's actors.

    With ``agent_dir`` every actor checkpoints itself there and the transport logs the reward and
    feedback messages since the last :meth:`checkpoint_all`, to replay them to a restarted actor.
    """

    def __init__(self, network: Network, *, max_outstanding: int = 64,
                 actor_options: Callable[[int], dict] | None = None, agent_dir: str | None = None,
                 session: str = "", checkpoint_every: int = 0) -> None:
        super().__init__(network)
        self.actors = []
        self.starts = []  # large starting agents, held while their actors may restart
        for index, layer in enumerate(network.layers):
            options = actor_options(index) if actor_options else {}
            actors = []
            for agent in getattr(layer, "groups", [layer]):
                actors.append(LayerActor.options(**options).remote(
                    _starting_agent(agent, self.starts),
                    os.path.join(agent_dir, f"{agent.name}.ckpt") if agent_dir else None,
                    session, checkpoint_every))
            self.actors.append(actors)
        self.max_outstanding = max_outstanding
        self.outstanding: deque = deque()
        self.logging = agent_dir is not None
        self.log: list[tuple] = []  # (layer, kind, sid, a, b) since the last checkpoint_all
        self.incarnations = [0] * len(self.flat_actors)
        self.replays = 0

    def _record(self, layer: int, kind: str, sid: int, a, b=None) -> None:
        if self.logging:
            self.log.append((layer, kind, sid, a, b))

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

    def _send_forward(self, layer: int, sid: int, x, rewards: list[Reward]) -> list:
        for s, r, labels in rewards:
            self._record(layer, "reward", s, r, labels)
        inputs = x if isinstance(x, list) else [x]
        if len(self.actors[layer]) > 1 and not isinstance(x, list):
            inputs = [ray.put(x)]  # one copy in the object store for every node group
        return [actor.step.remote(sid, rewards, *inputs) for actor in self.actors[layer]]

    def _send_reward(self, layer: int, sid: int, r: np.ndarray, labels):
        self._record(layer, "reward", sid, r, labels)
        refs = [actor.reward.remote(sid, r, labels) for actor in self.actors[layer]]
        self._track(refs)
        return refs[0] if self.sends_feedback[layer] else None

    def _send_feedback(self, layer: int, sid: int, message):
        (actor,) = self.actors[layer]
        self._record(layer, "feedback", sid, message)
        ref = actor.feedback.remote(sid, message)
        self._track([ref])
        return ref

    def _send_rewards(self, layer: int, rewards: list[Reward]) -> None:
        for s, r, labels in rewards:
            self._record(layer, "reward", s, r, labels)
        self._track([actor.deliver.remote(rewards) for actor in self.actors[layer]])

    # ---- fault tolerance ----------------------------------------------------------------------
    def infos(self) -> list[dict]:
        return get([actor.info.remote() for actor in self.flat_actors])

    def replay_restarted(self) -> list[dict]:
        """Replay the logged messages to every actor that restarted since it was last seen."""
        infos = self.infos()
        layer_of = [i for i, group in enumerate(self.actors) for _ in group]
        for index, (info, actor) in enumerate(zip(infos, self.flat_actors, strict=True)):
            if info["incarnation"] != self.incarnations[index]:
                self.incarnations[index] = info["incarnation"]
                messages = [(kind, sid, get(a) if isinstance(a, ray.ObjectRef) else a, b)
                            for layer, kind, sid, a, b in self.log if layer == layer_of[index]]
                get(actor.replay.remote(messages))
                self.replays += 1
        return infos

    def checkpoint_all(self) -> None:
        """Every actor saves its agent; the replay log starts afresh."""
        self.drain()
        self.replay_restarted()
        get([actor.checkpoint.remote() for actor in self.flat_actors])
        self.log = []

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
        self.actors, self.starts = [], []


def connect(address: str = "") -> bool:
    """Make sure Ray is running: reuse an initialised Ray, join ``address``, or start a private
    local instance. Returns True when this call started (and so must stop) Ray.

    Without an address the instance is private (``address="local"``): Ray's own default would join
    the cluster named by ``RAY_ADDRESS`` or by the ``ray_current_cluster`` file of the last
    ``ray start`` (retrying it for minutes when that head is gone). ``RAY_ADDRESS`` is used only
    with ``auto``, as Ray does; set without an address, it is ignored, and the log says so."""
    if ray.is_initialized():
        return False
    ray_env.prepare(address)  # normally done before ray was imported, see run.make_backend
    if address:
        ray.init(address=address, logging_level="WARNING", log_to_driver=False)
    else:
        if os.environ.get("RAY_ADDRESS"):
            log.warning("RAY_ADDRESS=%s is set, but without --address a run starts its own Ray "
                        "instance; to join that cluster pass --address auto (or its address)",
                        os.environ["RAY_ADDRESS"])
        ray.init(address="local", include_dashboard=False, logging_level="WARNING",
                 log_to_driver=False)
    return True


def placement_needs(options: dict) -> dict[str, float]:
    """What one node must have for Ray to place an actor created with ``options`` (ray/actor.py):
    an actor that declares no resources needs 1 CPU to be placed, although it holds none while it
    runs; one that declares resources needs them, and 1 CPU unless it says ``num_cpus``."""
    declared = dict(options.get("resources", {}))
    if "num_cpus" in options:
        declared["CPU"] = options["num_cpus"]
    if not declared:
        return {"CPU": 1.0}
    declared.setdefault("CPU", 1.0)
    return {name: float(amount) for name, amount in declared.items() if amount}


def _node_offer(node: dict) -> str:
    """A node's address and the resources an actor could ask for (CPU always shown)."""
    shown = {"CPU": node["Resources"].get("CPU", 0.0)}
    shown.update({k: v for k, v in node["Resources"].items()
                  if k not in ("CPU", "memory", "object_store_memory") and not k.startswith("node:")})
    return f"{node['NodeManagerAddress']} {shown}"


def check_placeable(needs: list[tuple[str, dict[str, float]]], nodes: list[dict],
                    where: str) -> None:
    """Fail, naming the actor and the resources needed and offered, when no alive node of the
    cluster could ever place one of the layer actors (``needs``: name, resources): Ray would wait
    for such an actor for ever, and the run would hang without a word."""
    alive = [n for n in nodes if n["Alive"]]
    for name, need in needs:
        if any(all(n["Resources"].get(k, 0.0) >= v for k, v in need.items()) for n in alive):
            continue
        hint = ("a head started with --num-cpus 0 needs a worker with CPUs "
                "(cluster/start-worker.sh --num-cpus N)" if set(need) == {"CPU"} else
                "start a worker that offers it (cluster/start-worker.sh --resources "
                "'{\"NAME\": 1}'), or fix backend.node_resources")
        raise ConfigError(
            f"Ray ({where}) cannot place the actor of {name}: it needs {need} on "
            f"one node, and no node has that ({'; '.join(map(_node_offer, alive)) or 'no node'}); "
            f"{hint}")


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


class RayBackend(CoordinatedBackend):
    """One network as Ray actors, driven by a :class:`~async_coagents.coordinator.Coordinator` in
    this process (and the input-state baseline's agent, if any, beside it).

    The driver keeps the network object as a mirror for checkpoints: its state is refreshed from
    the actors (and pushed to them) only in :meth:`state_dict`, :meth:`load_state_dict` and the
    §5.4 switch, so a checkpoint of a Ray run is the same as one of a local run.
    """

    name = "ray"

    def __init__(self, network: Network, backend: dict, *, agent_dir: str | None = None) -> None:
        resources = backend.get("node_resources", [])
        if backend.get("placement") == "resources" and len(resources) != len(network.layers):
            raise ConfigError(f"backend.node_resources needs one resource name per layer "
                              f"({len(network.layers)}), got {resources!r}")
        self.started_ray = connect(backend.get("address", ""))
        try:
            self._start(network, backend, agent_dir)
        except BaseException:
            if self.started_ray:  # nothing of this run is left running
                disconnect()
            raise

    def _start(self, network: Network, backend: dict, agent_dir: str | None) -> None:
        """Check that the cluster can place every layer actor, then create them all."""
        placement = backend.get("placement", "default")
        resources = backend.get("node_resources", [])
        # restarting is only useful when the actor has a checkpoint to continue from
        restarts = backend.get("max_restarts", 0) if agent_dir else 0
        nodes = sorted(n["NodeID"] for n in ray.nodes() if n["Alive"])

        def options(layer: int) -> dict:
            opts: dict = {"max_restarts": restarts, "max_task_retries": -1 if restarts else 0}
            if placement == "spread":
                opts["scheduling_strategy"] = "SPREAD"
            elif placement == "nodes":  # layer i on node i mod n, elsewhere if that node dies
                opts["scheduling_strategy"] = NodeAffinitySchedulingStrategy(
                    nodes[layer % len(nodes)], soft=True)
            elif placement == "resources":  # an actor with resources must say num_cpus (§0.4)
                opts.update(num_cpus=0, resources={resources[layer]: 0.001})
            return opts

        address = backend.get("address", "")
        where = (f"the cluster at {address}" if address else
                 "the run's private instance" if self.started_ray else
                 "the instance this process had joined")
        check_placeable([(layer.name, placement_needs(options(index)))
                         for index, layer in enumerate(network.layers)], ray.nodes(), where)
        if agent_dir:
            os.makedirs(agent_dir, exist_ok=True)
        transport = RayTransport(
            network, max_outstanding=backend.get("max_outstanding", 64), actor_options=options,
            agent_dir=agent_dir, session=uuid.uuid4().hex,
            checkpoint_every=backend.get("checkpoint_every", 0))
        super().__init__(network, transport, window=backend["window"],
                         reward_delay=backend["reward_delay"])

    def _recover(self) -> None:
        if self.transport.logging:
            self.transport.replay_restarted()

    def finish(self) -> list[Completed]:
        done = super().finish()
        self.transport.drain()
        self._recover()
        return done

    def evaluate(self, x: np.ndarray, labels: np.ndarray, **kwargs) -> dict:
        self._settle()
        self._recover()
        return super().evaluate(x, labels, **kwargs)

    def describe(self) -> dict:
        """Where every agent runs (node and address) and how often actors were recovered."""
        return {"backend": "ray",
                "placement": [{k: info[k] for k in ("name", "node_id", "ip", "incarnation")}
                              for info in self.transport.infos()],
                "replays": self.transport.replays}

    def _reports(self) -> list[dict]:
        return get([actor.stats.remote() for actor in self.transport.flat_actors])

    def _staleness(self) -> list[tuple[float | None, int | None]]:
        return [tuple(s) for s in get([actor.take_interval.remote()
                                       for actor in self.transport.flat_actors])]

    def _grad_variance(self) -> list[float | None]:
        return get([actor.take_grad_variance.remote() for actor in self.transport.flat_actors])

    def _pull(self) -> None:
        self.transport.drain()
        states = get([actor.state_dict.remote() for actor in self.transport.flat_actors])
        for agent, state in zip(self.network.agents, states, strict=True):
            agent.load_state_dict(state)

    def _push(self) -> None:
        get([actor.load_state_dict.remote(agent.state_dict())
             for agent, actor in zip(self.network.agents, self.transport.flat_actors,
                                     strict=True)])

    def _checkpoint_agents(self) -> None:
        if self.transport.logging:
            self.transport.checkpoint_all()  # every actor saves; the replay log starts afresh

    def close(self) -> None:
        try:
            self.transport.close()
        finally:
            if self.started_ray:
                disconnect()
