"""The paper's training step for one whole network, written in one place as the paper's agent files
write it, from ``paper_method.md`` alone: §3.0 (one step), §3.1-§3.9 (the return signal of every
rule), §2 (units, subsets, staged freezing), §3.3 (the Gaussian output coagent), §6.1 (optimizers)
and the §10 reference order:

    sample every layer bottom-up -> reward -> critics updated top-down (each target from the
    already-updated critic above and the pre-update policy) -> every actor and read-out gradient
    with the pre-update policies -> one optimizer step each -> baselines learn (after the step).

It shares nothing with the package but how a layer draws from its own random stream
(``seeding.generator(seed, "sampling", j)`` for agent ``j``, bottom to top, the output last):
the ``draw_*`` functions below are that convention and nothing else.

Agents are numbered bottom-up: the stochastic hidden layers ``0 .. L-1`` (each with the
deterministic layers below it, in a partition, §2.6), then the output ``L`` (a supervised read-out,
§1.2, or a Gaussian coagent, §3.3). Extensions the paper does not define are the
package's documented choices (``docs/differences.md``): layer 0 has no critic (its ``Q_0`` is
never read, §3.6), a critic sees ``[s_i ; phi(a_i)]``, and under a critic rule a Gaussian output
coagent is one more agent of the critic chain, credited by ``r`` and crediting the top hidden
layer.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass

import numpy as np

from async_coagents.core import seeding
from tests.reference.maths import (
    OPTIMIZERS,
    activation,
    categorical_policy,
    categorical_score,
    categorical_state,
    gaussian_score,
    linear_mse_grads,
    mlp,
    mlp_grads,
    readout_grad,
    relu_net,
    relu_net_mse_grads,
    reward,
)

CRITIC_RULES = ("ac", "ac-offpolicy", "ac-mc", "ac-reinforce", "ac-offpolicy-reinforce")
OFF_POLICY = ("ac-offpolicy", "ac-offpolicy-reinforce")
BASELINE_RULES = ("reinforce", "baseline", "input-baseline", "layer-baseline")


@dataclass(frozen=True)
class Case:
    """One network, its rule and its run: what both implementations are given."""

    name: str
    rule: str = "reinforce"
    hidden: tuple[int, ...] = (7, 6, 5)
    units: str = "bernoulli"  # or "categorical" (n_actions, normalisation), "gaussian"
    n_actions: int = 2
    normalisation: str = "unit"
    sigma: float = 0.5
    activation: str = "identity"  # Gaussian units only
    partition: str | None = None  # §2.6: "d" or "s" per hidden layer (Gaussian units)
    output: str = "readout"  # or "gaussian": the output is a Gaussian coagent (§3.3)
    task: str = "classification"
    n_inputs: int = 8
    n_outputs: int = 4
    optimizer: str = "rmsprop"
    lr: float = 2.0 ** -8
    critic_layers: int = 1
    critic_units: int = 16
    reinforce_updates: int = 0
    subset: int | None = None
    subset_every: int = 1
    freeze_at: tuple[int | None, ...] | None = None
    dtype: str = "float64"
    batch: int = 16
    steps: int = 30
    seed: int = 11


@dataclass
class Init:
    """The initial weights, read once from the built network: ``policy[j] = [[W, c], ...]``, the
    affine maps of every agent bottom-up (the output last), and ``critics[j]`` of every critic."""

    policy: list[list[np.ndarray]]
    critics: dict[int, list[list[np.ndarray]]]


def agent_sizes(case: Case) -> list[list[int]]:
    """Each agent's policy network, ``[inputs, ..., outputs]``, bottom-up. Without a partition
    every hidden layer is one stochastic agent with ``U K`` logits (K = 2 Bernoulli, K actions,
    1 mean per Gaussian unit). A partition (§2.6) groups a maximal run of ``d`` layers with the
    ``s`` layer above them into one agent, and the output map joins the last group, with any
    trailing ``d`` layers."""
    k = {"bernoulli": 2, "categorical": case.n_actions, "gaussian": 1}[case.units]
    groups, sizes = [], [case.n_inputs]
    for width, letter in zip(case.hidden, case.partition or "s" * len(case.hidden), strict=True):
        if letter == "d":
            sizes.append(width)
        else:
            groups.append([*sizes, width * k])
            sizes = [width]
    return [*groups, [*sizes, case.n_outputs]]


# ---- the one shared convention: how a layer draws from its sampling stream --------------------
def draw_categorical(rng: np.random.Generator, p: np.ndarray) -> np.ndarray:
    """One uniform ``u`` per unit in the network's dtype, then the inverse CDF:
    ``a = #{k < K-1 : pi(0) + ... + pi(k) <= u}`` (for Bernoulli units ``a = 1[u >= pi(0)]``)."""
    u = rng.random(p.shape[:2], dtype=p.dtype)
    return (np.cumsum(p[:, :, :-1], axis=2) <= u[:, :, None]).sum(axis=2)


def draw_gaussian(rng: np.random.Generator, mu: np.ndarray, sigma: float) -> np.ndarray:
    """``a = mu + sigma * eps`` with one standard normal per unit in the network's dtype."""
    return mu + sigma * rng.standard_normal(mu.shape, dtype=mu.dtype)


def draw_subset(rng: np.random.Generator, n_units: int, k: int) -> np.ndarray:
    """§2.3's ``S_i``: ``k`` units without replacement, drawn after the layer's action draws of
    the batch that starts a new subset."""
    mask = np.zeros(n_units, dtype=bool)
    mask[rng.choice(n_units, size=k, replace=False)] = True
    return mask


@dataclass
class Step:
    """What one agent did on the current batch."""

    s: np.ndarray  # its input, the state s_j (B, d)
    cache: list  # what back-propagation through its policy network needs
    dist: np.ndarray  # pi (B, U, K), or the mean mu (B, U) of Gaussian units
    a: np.ndarray  # action indices (B, U), or the sampled pre-activation (B, U)
    h: np.ndarray  # the state passed on, phi(a) (B, U)
    greedy_h: np.ndarray  # phi(greedy action) (B, U)
    gaussian: bool
    frozen: bool = False
    mask: np.ndarray | None = None  # the units that sample and learn (§2.3)


class Monolith:
    """The whole network and its learning, one training step at a time."""

    def __init__(self, case: Case, init: Init) -> None:
        self.case = case
        self.dtype = np.dtype(case.dtype)
        self.sizes = agent_sizes(case)
        self.L = len(self.sizes) - 1
        self.policy = [[[w.copy(), c.copy()] for w, c in net] for net in init.policy]
        self.critics = {j: [[w.copy(), c.copy()] for w, c in net]
                        for j, net in init.critics.items()}
        self.rngs = [seeding.generator(case.seed, "sampling", j) for j in range(self.L + 1)]
        make = OPTIMIZERS[case.optimizer]
        self.opt = make(case.lr)  # every policy and the read-out (§3.0 step 4)
        self.critic_opt = make(2 * case.lr)  # §3.6: critic lr = 2 alpha
        self.baseline_opt = make(case.lr)  # §3.4, §3.5: linear baselines, lr alpha
        # §3.2, kept by every agent from the broadcast rewards (a frozen layer keeps its copy as
        # it was: it learns nothing, §2.4, and never reads it again)
        self.ema: dict[int, float | None] = dict.fromkeys(self.coagents)
        self.v_input = np.zeros(case.n_inputs + 1, self.dtype)  # §3.4, zero-initialised
        self.v_layer = {j: np.zeros(self.sizes[j][0] + 1, self.dtype)  # §3.5, zero-initialised
                        for j in self.coagents}
        self.masks: dict[int, np.ndarray] = {}
        self.t = 0  # batches trained
        self._check_architecture()

    def _check_architecture(self) -> None:
        """The weights read from the package have the shapes the paper gives them: the affine maps
        of :func:`agent_sizes` (§2, §2.6), and for critic rules a critic on ``[s_j ; h_j]`` for
        every coagent above layer 0, with ``critic_layers`` ReLU layers of ``critic_units`` (§3.6)."""
        case = self.case
        k = {"bernoulli": 2, "categorical": case.n_actions, "gaussian": 1}[case.units]
        for net, sizes in zip(self.policy, self.sizes, strict=True):
            assert [(w.shape, c.shape) for w, c in net] == [
                ((n_in, n_out), (n_out,)) for n_in, n_out in itertools.pairwise(sizes)]
        if case.rule not in CRITIC_RULES:
            assert not self.critics
            return
        assert sorted(self.critics) == list(self.coagents)[1:]
        for j, net in self.critics.items():
            n_units = self.sizes[j][-1] // (k if j < self.L else 1)
            sizes = [self.sizes[j][0] + n_units, *[case.critic_units] * case.critic_layers, 1]
            assert [w.shape for w, _ in net] == list(itertools.pairwise(sizes)), j

    @property
    def coagents(self) -> range:
        """The agents that learn by a score function: the hidden layers, and the output when it
        is a Gaussian coagent."""
        return range(self.L + (self.case.output == "gaussian"))

    # ---- §3.0 step 1: sample every layer bottom-up --------------------------------------------
    def _act(self, j: int, s: np.ndarray) -> Step:
        case = self.case
        z, cache = mlp(self.policy[j], s, case.activation)  # a partition group back-propagates
        at = case.freeze_at[j] if case.freeze_at is not None and j < self.L else None
        frozen = at is not None and self.t >= at  # §2.4: greedy from then on, no update
        if case.units == "gaussian" or j == self.L:  # §2.5; the output coagent has phi = identity
            phi = case.activation if j < self.L else "identity"
            assert not frozen and case.subset is None, "not defined for Gaussian units"
            a = draw_gaussian(self.rngs[j], z, case.sigma)
            return Step(s, cache, z, a, activation(a, phi), activation(z, phi), gaussian=True)
        k = 2 if case.units == "bernoulli" else case.n_actions
        norm = "unit" if case.units == "bernoulli" else case.normalisation  # §2.1: h = a
        p = categorical_policy(z, k)
        greedy = p.argmax(axis=2)
        mask = None
        if frozen:
            a = greedy
        else:
            a = draw_categorical(self.rngs[j], p)
            if case.subset is not None:  # §2.3: only S_i samples, the other units act greedily
                if self.t % case.subset_every == 0:
                    self.masks[j] = draw_subset(self.rngs[j], p.shape[1], case.subset)
                mask = self.masks[j]
                a = np.where(mask, a, greedy)
        return Step(s, cache, p, a, categorical_state(a, k, norm, self.dtype),
                    categorical_state(greedy, k, norm, self.dtype), gaussian=False,
                    frozen=frozen, mask=mask)

    # ---- the return signal G_j of every coagent ------------------------------------------------
    def _baseline_returns(self, steps: list[Step], x: np.ndarray, r: np.ndarray) -> dict:
        """§3.1 G = r; §3.2 G = r - b (nothing subtracted on the first batch); §3.4 G = r - V(x);
        §3.5 G_j = r - V_j(s_j) (each with the baseline before its update)."""
        rule = self.case.rule
        if rule == "reinforce":
            return {j: r for j in self.coagents}
        if rule == "baseline":
            return {j: r if self.ema[j] is None else (r - self.ema[j]).astype(self.dtype)
                    for j in self.coagents}
        if rule == "input-baseline":
            v = self.v_input
            return {j: r - (x @ v[:-1] + v[-1]) for j in self.coagents}
        assert rule == "layer-baseline", rule
        return {j: r - (steps[j].s @ self.v_layer[j][:-1] + self.v_layer[j][-1])
                for j in self.coagents}

    def _critic_returns(self, steps: list[Step], r: np.ndarray) -> dict:
        """§3.6-§3.9, top-down: the top coagent's target is r; critic Q_j takes one step on
        (1/B) sum (Q_j(s_j, h_j) - y_j)^2 (toward r itself for ac-mc), then credits the layer
        below with y_{j-1} = Q_j(s_j, h_j) (on-policy) or Q_j(s_j, greedy_j(s_j)) (off-policy),
        the updated critic at the pre-update policy. The actor signal is G_j = y_j (r during the
        REINFORCE phase of ac-reinforce and ac-offpolicy-reinforce)."""
        rule = self.case.rule
        top = self.coagents[-1]
        y = {top: r}
        for j in range(top, 0, -1):
            s, q = steps[j].s, self.critics[j]
            target = r if rule == "ac-mc" else y[j]
            grads = relu_net_mse_grads(q, np.concatenate([s, steps[j].h], axis=1), target)
            for k, (layer, layer_grads) in enumerate(zip(q, grads, strict=True)):
                for name, theta, g in zip("Wc", layer, layer_grads, strict=True):
                    self.critic_opt.step((j, k, name), theta, g)
            h_next = steps[j].greedy_h if rule in OFF_POLICY else steps[j].h
            y[j - 1] = relu_net(q, np.concatenate([s, h_next], axis=1))
        if self.t < self.case.reinforce_updates:
            return {j: r for j in self.coagents}
        return {j: y[j] for j in self.coagents}

    # ---- one training step -----------------------------------------------------------------
    def step(self, x: np.ndarray, labels: np.ndarray) -> float:
        """Train on one batch; returns the batch-mean loss ``-mean(r)``."""
        case, L, B = self.case, self.L, len(x)
        x = x.astype(self.dtype)
        steps, s = [], x
        for j in self.coagents:
            steps.append(self._act(j, s))
            s = steps[-1].h
        if case.output == "gaussian":
            prediction = s
        else:
            prediction, out_cache = mlp(self.policy[L], s, case.activation)
        r = reward(prediction, labels, case.task)
        if case.rule in CRITIC_RULES:
            G = self._critic_returns(steps, r)
        else:
            G = self._baseline_returns(steps, x, r)
        # every gradient with the pre-update policies (§3.0 step 3): dJ/dz = -(G_b / B) dlog pi/dz
        grads = []
        for j in self.coagents:
            st = steps[j]
            if st.frozen:
                continue  # §2.4: a greedy layer is excluded from the loss
            if st.gaussian:
                score = gaussian_score(st.dist, st.a, case.sigma)
            else:
                score = categorical_score(st.dist, st.a)
                if st.mask is not None:  # §3.10: only the units of S_i contribute
                    score.reshape(B, len(st.mask), -1)[:, ~st.mask] = 0
            dz = -(G[j] / B)[:, None] * score
            grads.append((j, mlp_grads(self.policy[j], st.cache, dz, case.activation)))
        if case.output == "readout":  # §1.2: the supervised read-out
            d_o = readout_grad(prediction, labels, case.task)
            grads.append((L, mlp_grads(self.policy[L], out_cache, d_o, case.activation)))
        for j, net_grads in grads:  # one step each (§3.0 step 4)
            for k, ((w, c), (g_w, g_c)) in enumerate(zip(self.policy[j], net_grads, strict=True)):
                self.opt.step((j, k, "W"), w, g_w)
                self.opt.step((j, k, "c"), c, g_c)
        # after the step: the baselines (§3.2, §3.4, §3.5)
        if case.rule == "baseline":  # b = mean(r_1) after the first step, then the EMA
            for j in self.coagents:
                if not steps[j].frozen:
                    b = r.mean() if self.ema[j] is None else self.ema[j]
                    self.ema[j] = 0.99 * b + 0.01 * r.mean()
        elif case.rule == "input-baseline":
            self.baseline_opt.step("V(x)", self.v_input, linear_mse_grads(self.v_input, x, r))
        elif case.rule == "layer-baseline":
            for j in self.coagents:
                if not steps[j].frozen:
                    v = self.v_layer[j]
                    self.baseline_opt.step(("V", j), v, linear_mse_grads(v, steps[j].s, r))
        self.t += 1
        return -float(r.mean())

    # ---- what is compared --------------------------------------------------------------------
    def arrays(self) -> dict[str, np.ndarray]:
        """Every learnt quantity, named as :func:`tests.reference.package.final_arrays` names it."""
        out = {}
        for j, net in enumerate(self.policy):
            for k, (w, c) in enumerate(net):
                out[f"W{j}.{k}"], out[f"c{j}.{k}"] = w, c
        for j, net in self.critics.items():
            for k, (w, c) in enumerate(net):
                out[f"Q{j}.W{k}"], out[f"Q{j}.c{k}"] = w, c
        if self.case.rule == "baseline":
            out.update({f"ema{j}": np.array(b) for j, b in self.ema.items() if b is not None})
        elif self.case.rule == "input-baseline":
            out["V(x)"] = self.v_input
        elif self.case.rule == "layer-baseline":
            out.update({f"V{j}": v for j, v in self.v_layer.items()})
        return out
