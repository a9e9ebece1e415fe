"""The Ray backend: every layer agent — or every node group of a split layer — is a Ray actor
wrapping the same core object as in process; the coordinator's schedule runs in the driver and
sends its messages as actor calls. No maths lives here.

Determinism: one submitter (the driver) and single-threaded FIFO actors mean every agent handles
the same messages in the same order as the local backend, so both end bit for bit equal
(`reference/ray_notes.md` §3). Rewards and feedback are sent by value and not waited for; at most
``max_outstanding`` such calls are pending before the driver waits for the oldest (backpressure,
and errors surface). Activations are chained as object references from actor to actor.

Exactly-once recovery (ray_notes §4). Every message the driver sends an actor (a forward with the
rewards that ride with it, a reward, feedback, rewards delivered alone, the staleness read-out)
carries that actor's next sequence number; the actor applies a message only when it is the next
one it expects, and refuses any other (:class:`~async_coagents.errors.MessageOrderError`) without
touching its agent. Actors checkpoint their agent, with the number of the last message applied,
every ``checkpoint_every`` applied updates and at every checkpoint of the run, atomically, in
``checkpoint_dir`` (shared storage on a cluster). The driver keeps every message since each
actor's last checkpoint (:mod:`~async_coagents.backends.replay_log`; it learns where that is by a
small probe every ``probe_every`` messages). When a call fails because an actor died, or because
an input it needed failed, the driver waits for the actors to be back, asks each the last message
it applied and sends every later one again, in the original order, to every actor that is behind
— restarted or not — so each agent reaches exactly the state it had. Replies of messages sent
again are compared with the first ones where the driver still has them (a difference is a
:class:`~async_coagents.errors.NonDeterminismError`). Ray's own task retries are off
(``max_task_retries=0``): Ray re-runs calls in flight on a restarted actor in no guaranteed order
(ray_notes §4 measured scrambled retries); with the driver as the only one who sends again, there
is one order. Only what cannot be sent again (an actor whose checkpoint is gone, after the driver
let go of the messages before it) is lost: the summary says which agent and why. One log line per
restart says what happened; Ray's own lines about dead workers and retried tasks go to the debug
log (:func:`quiet_fault_lines`).

Activations a recovery may need again: a small one (under Ray's 100 KiB inline limit, the usual
case) is returned inline to its owner, the driver, and survives the death of the actor and node
that produced it for as long as the driver holds its reference; a large one lives in the object
store of the producer's node and dies with that node, so the driver copies it when the producer's
checkpoint lets go of the message that made it, and a replay that still finds one lost asks the
producer, which holds it with the batch in flight.
"""

from __future__ import annotations

import contextlib
import logging
import os
import time
import uuid
from collections import deque
from collections.abc import Callable
from typing import Any, TypeVar

import numpy as np
import ray
from ray.exceptions import GetTimeoutError, ObjectLostError, RayActorError, RayTaskError
from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

from async_coagents.backends import ray_env
from async_coagents.backends.base import CoordinatedBackend, Transport, schedule_of
from async_coagents.backends.replay_log import Message, ReplayLog, nbytes_of
from async_coagents.checkpoint import load_checkpoint, save_checkpoint
from async_coagents.coordinator import Completed, Reward
from async_coagents.core.groups import concatenate_activity
from async_coagents.core.metrics import LayerActivity
from async_coagents.core.network import Network
from async_coagents.errors import (
    CheckpointError,
    CoagentsError,
    ConfigError,
    MessageOrderError,
    NonDeterminismError,
    RecoveryError,
)

log = logging.getLogger(__name__)
T = TypeVar("T")

#: Seconds the driver waits for dead actors to be back (and caught up) before it gives up.
RECOVERY_TIMEOUT_S = 120.0
#: Replies (other than activations) an actor keeps, in its checkpoint too: a reply can be lost
#: on its way when the actor dies just after the message it answers, which its checkpoint covers.
REPLY_CACHE = 8
#: Recoveries one call may need before the driver gives up on it (each recovery waits for every
#: actor and sends again all they missed: this is a bound against a loop, not a retry policy).
MAX_ATTEMPTS = 20


@ray.remote
class LayerActor:
    """One agent of the protocol in its own process: a core layer (or node group) object.

    ``agent`` is the agent the actor starts from (see :func:`_starting_agent`).

    With ``checkpoint_path`` the actor saves its agent there (atomically, msgpack) with ``seq``,
    the number of the last message it applied, every ``checkpoint_every`` applied updates and on
    request; when Ray restarts it within the same ``session`` it continues from that file, at that
    message, instead of from the agent it started from.
    """

    def __init__(self, agent, checkpoint_path: str | None = None, session: str = "",
                 checkpoint_every: int = 0) -> None:
        self.agent = agent
        self.path = checkpoint_path
        self.session = session
        self.checkpoint_every = checkpoint_every
        self.incarnation = 0
        self.seq = 0  # the last message applied
        self.saved = 0  # the message of the last checkpoint written
        self.instance = uuid.uuid4().hex  # this process's life (a restart is a new one)
        # the replies of the last messages that answer with something other than an activation
        # (an activation is the agent's while its batch is in flight: pending_output)
        self.replies: deque = deque(maxlen=REPLY_CACHE)
        self.start = "fresh"  # fresh | restored | why its checkpoint could not be used
        if self.path and os.path.exists(self.path):
            try:
                state = load_checkpoint(self.path, kind="agent")
            except CheckpointError as exc:
                self.start = f"its checkpoint could not be read ({exc})"
            else:
                if state["session"] == session:  # a restart of this run's actor
                    self.agent.load_state_dict(state["agent"])
                    self.incarnation = int(state["incarnation"]) + 1
                    self.seq = self.saved = int(state["seq"])
                    self.replies.extend((int(seq), reply) for seq, reply in state["replies"])
                    self.start = "restored"
        elif self.path and session:
            self.start = "its checkpoint file was missing"
        self._saved_at = self._applied()
        if self.path:
            self.checkpoint()

    def _applied(self) -> int:
        return self.agent.stats.applied if self.agent is not None else 0

    def checkpoint(self) -> int:
        """Save the agent now, with the number of the last message applied; returns it."""
        save_checkpoint(self.path, {"session": self.session, "incarnation": self.incarnation,
                                    "seq": self.seq, "replies": [list(r) for r in self.replies],
                                    "agent": self.agent.state_dict()}, kind="agent")
        self._saved_at = self._applied()
        self.saved = self.seq
        return self.saved

    # ---- messages: each the next one expected, or refused --------------------------------------
    def _apply(self, seq: int, handle: Callable[[], T], *, keep_reply: bool = False) -> T:
        if seq != self.seq + 1:
            raise MessageOrderError(f"{self._name()}: message {seq} refused, the next one it "
                                    f"expects is {self.seq + 1}")
        try:
            out = handle()
        finally:
            self.seq = seq
        if keep_reply:
            self.replies.append((seq, out))
        if self.path and self.checkpoint_every and (
                self._applied() - self._saved_at >= self.checkpoint_every):
            self.checkpoint()
        return out

    def _deliver(self, rewards: list[Reward]) -> None:
        for s, r, labels in rewards:
            self.agent.reward(s, r, labels)

    def step(self, seq: int, sid: int, rewards: list[Reward], *inputs: np.ndarray) -> np.ndarray:
        """Rewards that rode with this call first, then the forward of batch ``sid``."""
        def handle():
            self._deliver(rewards)
            return self.agent.forward(sid, _join(inputs))
        return self._apply(seq, handle)

    def reward(self, seq: int, sid: int, r: np.ndarray, labels: np.ndarray | None):
        return self._apply(seq, lambda: self.agent.reward(sid, r, labels), keep_reply=True)

    def feedback(self, seq: int, sid: int, message):
        return self._apply(seq, lambda: self.agent.feedback(sid, message), keep_reply=True)

    def deliver(self, seq: int, rewards: list[Reward]) -> None:
        return self._apply(seq, lambda: self._deliver(rewards))

    def interval(self, seq: int) -> tuple[float | None, int | None]:
        """Mean and max staleness since the last call (a message: it starts a new interval)."""
        return self._apply(seq, self.agent.take_staleness, keep_reply=True)

    # ---- reads and writes at a known point of the sequence -------------------------------------
    def _at(self, expect: int) -> None:
        if expect != self.seq:
            raise MessageOrderError(f"{self._name()} has applied the messages up to {self.seq}, "
                                    f"the driver sent {expect}")

    @ray.method(num_returns=2)
    def measure(self, expect: int, *inputs: np.ndarray):
        self._at(expect)
        h, activity = self.agent.measure(_join(inputs))
        return h, activity.as_tuple()

    def act(self, expect: int, *inputs: np.ndarray) -> np.ndarray:
        self._at(expect)
        return self.agent.act(_join(inputs))

    def state_dict(self, expect: int) -> dict:
        self._at(expect)
        return self.agent.state_dict()

    def load_state_dict(self, expect: int, state: dict) -> int:
        """Replace the agent's state; saved at once (a restart must not undo it)."""
        self._at(expect)
        self.agent.load_state_dict(state)
        return self.checkpoint() if self.path else self.seq

    def stats(self, expect: int) -> dict:
        self._at(expect)
        return self.agent.report()

    def checkpoint_at(self, expect: int) -> int:
        """Save the agent now, when it has applied message ``expect``."""
        self._at(expect)
        return self.checkpoint()

    def pending_output(self, sid: int) -> np.ndarray | None:
        """What the forward of batch ``sid`` returned, while the agent holds that batch."""
        return self.agent.sent_output(sid)

    def reply_of(self, seq: int) -> tuple[bool, Any]:
        """The reply of message ``seq`` if it is among the last ones kept: (found, reply)."""
        for kept, reply in self.replies:
            if kept == seq:
                return True, reply
        return False, None

    # ---- what the driver asks to recover -------------------------------------------------------
    def saved_seq(self) -> int:
        """The message of the last checkpoint written (the driver lets go of the ones before)."""
        return self.saved

    def status(self) -> dict:
        return {"seq": self.seq, "saved": self.saved, "instance": self.instance,
                "incarnation": self.incarnation, "start": self.start}

    def resync(self, seq: int) -> None:
        """Continue at message ``seq + 1``: the ones before it can no longer be sent again."""
        self.seq = seq

    def info(self) -> dict:
        """Where and in which incarnation this agent runs."""
        context = ray.get_runtime_context()
        return {"name": self._name(), "pid": os.getpid(), "node_id": context.get_node_id(),
                "ip": ray.util.get_node_ip_address(), "incarnation": self.incarnation}

    def _name(self) -> str:
        return self.agent.name if self.agent is not None else "actor"

    def take_grad_variance(self) -> float | None:
        return self.agent.take_grad_variance()

    def take_asynchrony(self) -> dict:
        return self.agent.take_asynchrony()

    def take_non_finite(self) -> set[int]:
        return self.agent.take_non_finite()

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
    return inputs[0] if len(inputs) == 1 else np.concatenate(inputs, axis=-1)


def _rows(x: np.ndarray) -> int:
    """Examples in a batch, over every replica (``(B, n)`` or ``(R, B, n)``)."""
    return int(np.prod(np.shape(x)[:-1]))


def get(refs):
    """``ray.get`` that re-raises the project's own errors as themselves (not wrapped)."""
    try:
        return ray.get(refs)
    except RayTaskError as exc:
        cause = getattr(exc, "cause", None)
        if isinstance(cause, CoagentsError):
            raise cause from None
        raise


def recoverable(exc: BaseException) -> bool:
    """Whether a failed call is one recovery repairs: an actor died or was unreachable, an input
    object was lost with its node, or a message was refused as out of order (an earlier one
    failed)."""
    kinds = (RayActorError, ObjectLostError, MessageOrderError)
    return isinstance(exc, kinds) or isinstance(getattr(exc, "cause", None), kinds)


def _resolve(source: Any) -> Any:
    """What an input is sent as: a value as it is, a message as its reply."""
    return source.reply() if isinstance(source, Message) else source


def _same(a: Any, b: Any) -> bool:
    """Bit-for-bit equality of two replies (arrays, tuples of numbers, None)."""
    if isinstance(a, np.ndarray) or isinstance(b, np.ndarray):
        return (isinstance(a, np.ndarray) and isinstance(b, np.ndarray) and a.dtype == b.dtype
                and a.shape == b.shape and a.tobytes() == b.tobytes())
    if isinstance(a, (tuple, list)) and isinstance(b, (tuple, list)):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b, strict=True))
    return a == b


_MISSING = object()


def _waiting(handle) -> list:
    """The references of a forward's replies the driver has no copy of."""
    if isinstance(handle, np.ndarray):
        return []
    return [message.out for message in handle if message.value is None]


class Forward(list):
    """The coordinator's handle of one forward: its messages, one per actor of the layer (their
    replies are the layer's output, side by side)."""


class RayTransport(Transport):
    """Messages as actor calls, each with its actor's sequence number; a forward's handle is a
    :class:`Forward`.

    With ``recovery`` (every actor checkpoints itself in ``agent_dir`` and Ray restarts it) the
    transport keeps the replay log and recovers from failed calls (see the module docstring);
    ``probe_every`` messages to an actor it asks which message the actor last saved.
    """

    def __init__(self, network: Network, *, max_outstanding: int = 64,
                 actor_options: Callable[[int], dict] | None = None, agent_dir: str | None = None,
                 session: str = "", checkpoint_every: int = 0, recovery: bool = False,
                 probe_every: int = 0) -> None:
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
        self.flat = [actor for group in self.actors for actor in group]
        self.index = []  # flat actor indices of each layer
        for group in self.actors:
            first = sum(map(len, self.index))
            self.index.append(list(range(first, first + len(group))))
        agents = network.agents
        self.names = [agent.name for agent in agents]
        # bytes per example of a forward's reply, and of a reward's or feedback's reply
        self.row_bytes = [_reply_row_bytes(agent) for agent in agents]
        self.message_row_bytes = [int(np.prod(getattr(agent, "feedback_shape", ()) or (1,)))
                                  * np.dtype(agent.dtype).itemsize for agent in agents]
        self.max_outstanding = max_outstanding
        self.outstanding: deque[Message] = deque()
        self.saves = agent_dir is not None  # every actor checkpoints itself
        self.recovery = recovery
        self.log = ReplayLog(len(self.flat), keep=recovery)
        self.probe_every = probe_every if recovery else 0
        self.probes: list = [None] * len(self.flat)
        self.recovery_timeout_s = RECOVERY_TIMEOUT_S
        n = len(self.flat)
        self.restarts, self.replayed, self.lost = [0] * n, [0] * n, [0] * n
        self.why: list[list[str]] = [[] for _ in range(n)]
        self.recovery_s = 0.0
        self.instances = [status["instance"] for status in
                          get([actor.status.remote() for actor in self.flat])]

    @property
    def flat_actors(self) -> list:
        return self.flat

    # ---- sending -------------------------------------------------------------------------------
    def _send(self, actor: int, kind: str, args: tuple, sources: list, *, rows: int,
              inputs: list | None = None, nbytes: int | None = None) -> Message:
        """Record a message to ``actor`` with its next sequence number and send it."""
        if nbytes is None:
            nbytes = nbytes_of(args) + self._source_bytes(sources)
        message = self.log.record(actor, kind, args, sources, nbytes=nbytes, rows=rows)
        self._submit(message, inputs)
        return message

    def _submit(self, message: Message, inputs: list | None = None) -> None:
        if inputs is None:
            inputs = [_resolve(s) for s in message.sources]
        method = getattr(self.flat[message.actor], message.kind)
        message.out = method.remote(message.seq, *message.args, *inputs)

    def _source_bytes(self, sources: list) -> int:
        total = 0
        for source in sources:
            if isinstance(source, Message):
                per_row = self.row_bytes if source.kind == "step" else self.message_row_bytes
                total += source.rows * per_row[source.actor]
            else:
                total += nbytes_of(source)
        return total

    def _track(self, messages: list[Message]) -> None:
        self.outstanding.extend(messages)
        if len(self.outstanding) > self.max_outstanding:
            oldest = [self.outstanding.popleft() for _ in range(len(self.outstanding) // 2)]
            self._replies(oldest)

    def _replies(self, messages: list[Message]) -> list:
        """The replies of ``messages``. After a failure: recover, then ask again; a message that
        was applied but whose reply was lost with its actor is answered from where it is kept
        (:meth:`_rescue`)."""
        attempts = 0

        def attempt() -> list:
            nonlocal attempts
            attempts += 1
            if attempts > 1:  # a recovery ran: some replies may have died with their actor
                for message in messages:
                    if message.value is None and _try_get(message.out) is _MISSING:
                        self._rescue(message)
            refs = [m.out for m in messages if m.value is None]
            got = iter(get(refs) if refs else [])
            return [m.value if m.value is not None else next(got) for m in messages]

        return self.guarded(attempt)

    def drain(self) -> None:
        """Wait for every fire-and-forget call (and raise its error, if any)."""
        messages, self.outstanding = list(self.outstanding), deque()
        self._replies(messages)

    def _send_forward(self, layer: int, sid: int, x, rewards: list[Reward]) -> Forward:
        sources = list(x) if isinstance(x, Forward) else [x]
        rows = sources[0].rows if isinstance(sources[0], Message) else _rows(x)
        inputs = [_resolve(s) for s in sources]
        shared = len(self.index[layer]) > 1 and not isinstance(x, Forward)
        if shared:
            inputs = [ray.put(x)]  # one copy in the object store for every node group
        handle = Forward()
        for n, actor in enumerate(self.index[layer]):
            nbytes = nbytes_of(rewards) + (0 if shared and n else self._source_bytes(sources))
            handle.append(self._send(actor, "step", (sid, rewards), sources, rows=rows,
                                     inputs=inputs, nbytes=nbytes))
        self._probe(self.index[layer])
        return handle

    def _send_reward(self, layer: int, sid: int, r: np.ndarray, labels):
        messages = [self._send(actor, "reward", (sid, r, labels), [], rows=r.size)
                    for actor in self.index[layer]]
        self._track(messages)
        self._probe(self.index[layer])
        return messages[0] if self.sends_feedback[layer] else None

    def _send_feedback(self, layer: int, sid: int, message):
        (actor,) = self.index[layer]
        rows = message.rows if isinstance(message, Message) else 0
        sent = self._send(actor, "feedback", (sid,), [message], rows=rows)
        self._track([sent])
        self._probe([actor])
        return sent

    def _send_rewards(self, layer: int, rewards: list[Reward]) -> None:
        self._track([self._send(actor, "deliver", (rewards,), [], rows=0)
                     for actor in self.index[layer]])
        self._probe(self.index[layer])

    def take_staleness(self) -> list[tuple[float | None, int | None]]:
        """Every actor's staleness interval, ended (a message: a replay starts it again too)."""
        messages = [self._send(actor, "interval", (), [], rows=0)
                    for actor in range(len(self.flat))]
        return [tuple(s) for s in self._replies(messages)]

    # ---- reads and writes at the current point of every actor's sequence ------------------------
    def at_current(self, method: str, *args) -> list:
        """``method(sent, *args)`` on every actor, ``sent`` the last message the driver sent it
        (an actor that is behind refuses, and the driver recovers and asks again)."""
        return self.guarded(lambda: get([getattr(actor, method).remote(self.log.sent(i), *args)
                                         for i, actor in enumerate(self.flat)]))

    def load_states(self, states: list[dict]) -> None:
        """Every actor's agent replaced by ``states`` (each saves at once)."""
        saved = self.guarded(lambda: get([
            actor.load_state_dict.remote(self.log.sent(i), state)
            for i, (actor, state) in enumerate(zip(self.flat, states, strict=True))]))
        for actor, seq in enumerate(saved):
            self._trim(actor, seq)

    def checkpoint_all(self) -> None:
        """Every actor saves its agent; the replay log lets go of everything before."""
        self.drain()
        for actor, seq in enumerate(self.at_current("checkpoint_at")):
            self._trim(actor, seq)

    def fetch(self, handle) -> np.ndarray:
        if isinstance(handle, np.ndarray):
            return handle
        return _join(tuple(self._replies(handle)))

    def ready(self, handle) -> bool:
        """Whether every reply of a forward has arrived (or failed: fetching it then recovers)."""
        refs = _waiting(handle)
        if not refs:
            return True
        done, _ = ray.wait(refs, num_returns=len(refs), timeout=0, fetch_local=False)
        return len(done) == len(refs)

    def wait(self, handles: list, timeout: float) -> None:
        refs = [ref for handle in handles for ref in _waiting(handle)]
        if refs:
            ray.wait(refs, num_returns=1, timeout=timeout, fetch_local=False)
        else:
            time.sleep(timeout)

    def evaluate(self, x: np.ndarray) -> tuple[np.ndarray, list[LayerActivity]]:
        def attempt():
            inputs = [ray.put(x)]
            activities = []
            for layer, group in enumerate(self.actors[:-1]):
                pairs = [actor.measure.remote(self.log.sent(i), *inputs)
                         for i, actor in zip(self.index[layer], group, strict=True)]
                inputs = [h for h, _ in pairs]
                activities.append([ref for _, ref in pairs])
            prediction = [actor.act.remote(self.log.sent(i), *inputs)
                          for i, actor in zip(self.index[-1], self.actors[-1], strict=True)]
            out = get(prediction)
            layer_activity = [concatenate_activity([LayerActivity(*p) for p in get(parts)])
                              for parts in activities]
            return _join(tuple(out)), layer_activity
        return self.guarded(attempt)

    def infos(self) -> list[dict]:
        return self.guarded(lambda: get([actor.info.remote() for actor in self.flat]))

    # ---- the replay log's bound ----------------------------------------------------------------
    def _probe(self, actors: list[int]) -> None:
        """Every ``probe_every`` messages to an actor: read the answer of the previous probe
        (the message of its last checkpoint; it has long been answered) and let go of the
        messages before it, then probe again."""
        if not self.probe_every:
            return
        for actor in actors:
            if self.log.sent(actor) % self.probe_every:
                continue
            pending, self.probes[actor] = self.probes[actor], None
            if pending is not None:
                try:
                    saved = get(pending)
                except Exception as exc:  # only the failures recovery repairs
                    if not (self.recovery and recoverable(exc)):
                        raise
                    self.recover(exc)
                else:
                    self._trim(actor, saved)
            self.probes[actor] = self.flat[actor].saved_seq.remote()

    def _trim(self, actor: int, saved: int) -> None:
        """The actor's checkpoint covers message ``saved``: let go of the messages up to it. The
        large activations they produced are copied first: they live in the object store of the
        producer's node, and a consumer that is behind may need one again."""
        large = [m for m in self.log.trim(actor, saved)
                 if m.kind == "step" and m.value is None and self._large(m)]
        if not large:
            return
        try:
            values = ray.get([m.out for m in large])
        except Exception:  # a node is gone: copy what is left; recovery asks the agents
            values = [_try_get(m.out) for m in large]
        for message, value in zip(large, values, strict=True):
            if value is not _MISSING:
                message.value = value

    def _large(self, message: Message) -> bool:
        return message.rows * self.row_bytes[message.actor] >= 0.9 * RAY_INLINE_BYTES

    # ---- recovery ------------------------------------------------------------------------------
    def guarded(self, attempt: Callable[[], T]) -> T:
        """``attempt()``; after a failure recovery repairs, recover and attempt again."""
        for _ in range(MAX_ATTEMPTS):
            try:
                return attempt()
            except Exception as exc:  # only the failures recovery repairs
                if not (self.recovery and recoverable(exc)):
                    self._skip_unapplied(exc)
                    raise
                self.recover(exc)
                last = exc
        raise RecoveryError(f"a call still failed after {MAX_ATTEMPTS} recoveries: {last}")

    def _skip_unapplied(self, error: BaseException) -> None:
        """An agent refused a message (a project error: a malformed message, a diverged
        network): the messages that could not run because of it are dropped with it, as they
        were before sequence numbers, and every actor continues after the last message sent."""
        if not isinstance(error, CoagentsError) or isinstance(error, MessageOrderError):
            return
        with contextlib.suppress(Exception):  # the error raised is the one to report
            statuses = get([actor.status.remote() for actor in self.flat])
            behind = [i for i, status in enumerate(statuses) if status["seq"] < self.log.sent(i)]
            get([self.flat[i].resync.remote(self.log.sent(i)) for i in behind])

    def _statuses(self, deadline: float, cause: BaseException | None = None) -> list[dict]:
        """Every actor's status, waiting (until ``deadline``) for those that are restarting."""
        statuses: list[dict | None] = [None] * len(self.flat)
        last: BaseException | None = cause
        while True:
            missing = [i for i, s in enumerate(statuses) if s is None]
            refs = {i: self.flat[i].status.remote() for i in missing}
            for i, ref in refs.items():
                try:
                    statuses[i] = ray.get(ref, timeout=max(0.1, deadline - time.monotonic()))
                except (RayActorError, GetTimeoutError) as exc:
                    last = exc
            if all(s is not None for s in statuses):
                return statuses
            if time.monotonic() > deadline:
                names = ", ".join(self.names[i] for i, s in enumerate(statuses) if s is None)
                raise RecoveryError(
                    f"the actor of {names} did not come back within "
                    f"{self.recovery_timeout_s:.0f} s (backend.max_restarts may be spent, or no "
                    f"node can place it); last error: {last}") from cause
            time.sleep(0.05)

    def recover(self, cause: BaseException) -> None:
        """Bring every actor back to the last message the driver sent it: wait for the dead ones
        to restart, ask each the last message it applied, and send every later one again, in the
        original order; then log one line per restarted actor."""
        started = time.monotonic()
        deadline = started + self.recovery_timeout_s
        self.probes = [None] * len(self.flat)  # their answers may be failures
        replayed = [0] * len(self.flat)
        restarted: set[int] = set()
        lost: dict[int, int] = {}
        while True:
            statuses = self._statuses(deadline, cause)
            for actor, status in enumerate(statuses):
                if status["instance"] != self.instances[actor]:
                    self.instances[actor] = status["instance"]
                    self.restarts[actor] += 1
                    restarted.add(actor)
            behind = {actor: status["seq"] for actor, status in enumerate(statuses)
                      if status["seq"] < self.log.sent(actor)}
            if not behind:
                break
            for actor, seq in behind.items():
                if not self.log.logs[actor].covers(seq):
                    behind[actor] = self._give_up(actor, seq, statuses[actor])
                    lost[actor] = lost.get(actor, 0) + behind[actor] - seq
            messages = self.log.to_replay(behind)
            try:
                self._replay(messages, tainted=set(lost))
            except Exception as exc:  # only the failures recovery repairs
                if not recoverable(exc) or time.monotonic() > deadline:
                    raise
                cause = exc
            for message in messages:
                replayed[message.actor] += 1
        self.outstanding.clear()  # every call sent so far is applied (once)
        seconds = time.monotonic() - started
        self.recovery_s += seconds
        for actor, count in enumerate(replayed):
            self.replayed[actor] += count
        self._report(restarted, replayed, lost, seconds)

    def _give_up(self, actor: int, applied: int, status: dict) -> int:
        """The actor is behind the oldest message kept: the ones between cannot be sent again.
        It continues at the oldest kept message; returns the message it is now at."""
        at = self.log.logs[actor].saved
        start = status["start"]
        if start == "restored":
            reason = (f"its checkpoint (message {applied}) is older than the oldest message the "
                      f"driver kept ({at + 1})")
        else:
            reason = (f"{'it had no checkpoint of this run' if start == 'fresh' else start}, so "
                      "it started again from the run's starting state")
        self.why[actor].append(f"{reason}: messages {applied + 1}..{at} could not be sent again")
        self.lost[actor] += at - applied
        get(self.flat[actor].resync.remote(at))
        return at

    def _replay(self, messages: list[Message], tainted: set[int]) -> None:
        """Send ``messages`` again (they are in the original order) and wait for them; compare
        each reply with the first one where the driver still has it. Replies of actors that lost
        messages (``tainted``), and of messages fed by them, are new and not compared."""
        replaying = {id(m) for m in messages}
        for message in messages:  # inputs whose reply was lost (with a node, or on its way)
            for source in message.sources:
                if (isinstance(source, Message) and id(source) not in replaying
                        and source.value is None and _try_get(source.out) is _MISSING):
                    self._rescue(source)
        before = []
        changed: set[int] = set()
        for message in messages:
            before.append((message.out, message.value))
            message.value = None
            if message.actor in tainted or any(id(s) in changed for s in message.sources):
                changed.add(id(message))
            self._submit(message)
        replies = get([m.out for m in messages])
        for message, (out, value), reply in zip(messages, before, replies, strict=True):
            if value is not None:
                message.value = reply
            if id(message) in changed:
                continue
            first = value if value is not None else _try_get(out)
            if first is not _MISSING and not _same(first, reply):
                raise NonDeterminismError(
                    f"{self.names[message.actor]}: {message!r} sent again after a restart "
                    "answered differently than the first time: the agent is not a deterministic "
                    "function of its messages (its RNG state must be in its checkpoint)")

    def _rescue(self, message: Message) -> None:
        """The reply of a message its actor applied, lost (with its node, or on its way when the
        actor died): an activation from the agent, which holds it while the batch is in flight;
        any other reply from the last ones the actor keeps."""
        actor = self.flat[message.actor]
        if message.kind == "step":
            value = get(actor.pending_output.remote(message.args[0]))
            found = value is not None
        else:
            found, value = get(actor.reply_of.remote(message.seq))
        if not found:
            raise RecoveryError(f"the reply of {message!r} to {self.names[message.actor]} was "
                                "lost, and the agent no longer holds it")
        message.value = value

    def _report(self, restarted: set[int], replayed: list[int], lost: dict[int, int],
                seconds: float) -> None:
        """One log line per restarted actor (or one for actors sent messages again without a
        restart)."""
        others = [f"{count} to {self.names[a]}" for a, count in enumerate(replayed)
                  if count and a not in restarted]
        also = f" (and {', '.join(others)}, whose calls had failed with it)" if others else ""
        for actor in sorted(restarted):
            if actor in lost:
                log.warning("%s restarted (incarnation %d), but %s (the updates they carried are "
                            "lost); %d later messages sent again in %.2f s%s", self.names[actor],
                            self.restarts[actor], self.why[actor][-1], replayed[actor], seconds,
                            also)
            else:
                log.warning("%s restarted (incarnation %d): %d messages sent again, caught up in "
                            "%.2f s%s", self.names[actor], self.restarts[actor], replayed[actor],
                            seconds, also)
            also = ""
        if not restarted and others:
            log.warning("calls failed without a restart: %s messages sent again in %.2f s",
                        ", ".join(others), seconds)

    def recovery_report(self) -> dict:
        """What recovery did in this run, per agent and in all."""
        agents = [{"name": name, "restarts": self.restarts[i], "replayed": self.replayed[i],
                   "lost_messages": self.lost[i], "why": self.why[i]}
                  for i, name in enumerate(self.names)]
        return {"restarts": sum(self.restarts), "replayed": sum(self.replayed),
                "lost_messages": sum(self.lost), "seconds": round(self.recovery_s, 3),
                "agents": agents}

    def close(self) -> None:
        for actor in self.flat:
            ray.kill(actor)
        self.actors, self.flat, self.starts = [], [], []


def _reply_row_bytes(agent) -> int:
    """Bytes per example of what the agent's forward returns (its greedy output has that size)."""
    out = agent.act(np.zeros((1, agent.n_in), dtype=agent.dtype))
    return int(out.nbytes)


def _try_get(ref) -> Any:
    """The value of ``ref``, or ``_MISSING`` if it holds an error or is lost."""
    try:
        return ray.get(ref, timeout=30)
    except Exception:  # any failure: the driver does not have it
        return _MISSING


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


#: Lines Ray's driver prints (as "(raylet) ...") when a worker dies or a task fails: the
#: recovery's own log line says what happened instead.
FAULT_LINES = ("A worker died or was killed", "will be retried", "has been marked dead",
               "Actor died", "actor died", "The actor is dead")


def quiet_fault_lines() -> None:
    """Send Ray's error lines about dead workers and retried tasks to this module's debug log
    instead of the terminal (any other line Ray prints is unchanged).

    Ray's driver prints every error the cluster publishes for its job from a background thread
    (``listen_error_messages`` in ``ray/_private/worker.py``, Ray 2.60), whatever
    ``log_to_driver`` says; it prints them through the module function ``print_to_stdstream``,
    which is wrapped here (once per process)."""
    from ray._private import worker

    original = getattr(worker, "print_to_stdstream", None)
    if original is None or getattr(original, "quiet_fault_lines", False):
        return

    def print_to_stdstream(data, ignore_prefix: bool = False):
        lines = data.get("lines", [])
        if data.get("pid") == "raylet" and lines:
            noise = [line for line in lines if any(part in line for part in FAULT_LINES)]
            for line in noise:
                log.debug("ray: %s", line)
            lines = [line for line in lines if line not in noise]
            if not lines:
                return None
            data = {**data, "lines": lines}
        return original(data, ignore_prefix)

    print_to_stdstream.quiet_fault_lines = True
    worker.print_to_stdstream = print_to_stdstream


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


def probe_every(checkpoint_every: int, window: int) -> int:
    """Messages to an actor between two probes of its last checkpoint: as many as between two
    of its checkpoints (an actor applies about one update per message it is sent), so the replay
    log stays within a few checkpoint intervals and the probe, one call, costs little; at least
    twice the window, so the previous probe has been answered when it is read. 0 (no probes)
    when actors checkpoint only with the run."""
    return max(checkpoint_every, 2 * window, 8) if checkpoint_every else 0


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

    def __init__(self, network: Network, backend: dict, *, agent_dir: str | None = None,
                 schedule_path: str | None = None) -> None:
        resources = backend.get("node_resources", [])
        if backend.get("placement") == "resources" and len(resources) != len(network.layers):
            raise ConfigError(f"backend.node_resources needs one resource name per layer "
                              f"({len(network.layers)}), got {resources!r}")
        self.started_ray = connect(backend.get("address", ""))
        quiet_fault_lines()
        try:
            self._start(network, backend, agent_dir, schedule_path)
        except BaseException:
            if self.started_ray:  # nothing of this run is left running
                disconnect()
            raise

    def _start(self, network: Network, backend: dict, agent_dir: str | None,
               schedule_path: str | None) -> None:
        """Check that the cluster can place every layer actor, then create them all."""
        placement = backend.get("placement", "default")
        resources = backend.get("node_resources", [])
        # restarting is only useful when the actor has a checkpoint to continue from
        restarts = backend.get("max_restarts", 0) if agent_dir else 0
        nodes = sorted(n["NodeID"] for n in ray.nodes() if n["Alive"])

        def options(layer: int) -> dict:
            # no task retries: the driver sends again what a dead actor missed, in order
            opts: dict = {"max_restarts": restarts, "max_task_retries": 0}
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
        checkpoint_every = backend.get("checkpoint_every", 0)
        transport = RayTransport(
            network, max_outstanding=backend.get("max_outstanding", 64), actor_options=options,
            agent_dir=agent_dir, session=uuid.uuid4().hex, checkpoint_every=checkpoint_every,
            recovery=bool(agent_dir and restarts), probe_every=probe_every(
                checkpoint_every, backend["window"]))
        super().__init__(network, transport, window=backend["window"],
                         reward_delay=backend["reward_delay"], schedule=schedule_of(backend),
                         schedule_path=schedule_path)

    def finish(self) -> list[Completed]:
        done = super().finish()
        self.transport.drain()
        return done

    def describe(self) -> dict:
        """Where every agent runs (node and address), what recovery did, and the replay log's
        size (messages and bytes kept now, and their peaks)."""
        return {"backend": "ray",
                "placement": [{k: info[k] for k in ("name", "node_id", "ip", "incarnation")}
                              for info in self.transport.infos()],
                "recovery": self.transport.recovery_report(),
                "replay_log": {**self.transport.log.stats(),
                               "probe_every": self.transport.probe_every},
                **self._schedule()}

    def _reports(self) -> list[dict]:
        return self.transport.at_current("stats")

    def _staleness(self) -> list[tuple[float | None, int | None]]:
        return self.transport.take_staleness()

    def _grad_variance(self) -> list[float | None]:
        return get([actor.take_grad_variance.remote() for actor in self.transport.flat_actors])

    def _asynchrony(self) -> list[dict]:
        return get([actor.take_asynchrony.remote() for actor in self.transport.flat_actors])

    def _non_finite(self) -> set[int]:
        remote = get([actor.take_non_finite.remote() for actor in self.transport.flat_actors])
        baseline = self.network.input_baseline  # it lives in the driver on every backend
        return set().union(*remote, baseline.take_non_finite() if baseline is not None else set())

    def _pull(self) -> None:
        self.transport.drain()
        states = self.transport.at_current("state_dict")
        for agent, state in zip(self.network.agents, states, strict=True):
            agent.load_state_dict(state)

    def _push(self) -> None:
        self.transport.drain()
        self.transport.load_states([agent.state_dict() for agent in self.network.agents])

    def _checkpoint_agents(self) -> None:
        if self.transport.saves:
            self.transport.checkpoint_all()  # every actor saves; the replay log lets go

    def close(self) -> None:
        try:
            self.transport.close()
        finally:
            if self.started_ray:
                disconnect()
