"""The learning rules of a coagent layer, by name: which return signal its actor uses, which
baseline it subtracts, and whether it keeps a critic and how that critic credits the layer below.

Every rule cites its section of `paper_method.md`. The three rules whose code the paper never
released (§3.9) are our reconstructions and are marked so; results obtained with them are not
results of the paper's code.
"""

from __future__ import annotations

from dataclasses import dataclass

from async_coagents.errors import ConfigError


@dataclass(frozen=True)
class Rule:
    """What a learning rule is made of.

    ``baseline``: ``none``, ``ema`` (§3.2), ``layer-state`` (§3.5) or ``input-state`` (§3.4).
    ``critic``: ``None``, ``on-policy`` (the feedback to the layer below is ``Q(s, a)``, §3.6) or
    ``off-policy`` (``Q(s, greedy(s))``, §3.7). ``critic_target``: ``bootstrap`` (the signal from the
    layer above) or ``return`` (the broadcast reward). ``reinforce_phase``: the actor uses the reward
    for the first ``reinforce_updates`` batches, then the critic signal.
    """

    name: str
    section: str
    summary: str
    baseline: str = "none"
    critic: str | None = None
    critic_target: str = "bootstrap"
    reinforce_phase: bool = False
    reconstruction: bool = False


RULES: dict[str, Rule] = {
    rule.name: rule
    for rule in [
        Rule("reinforce", "§3.1", "REINFORCE with the broadcast reward, G = r"),
        Rule("baseline", "§3.2", "REINFORCE minus the global EMA baseline, G = r - b",
             baseline="ema"),
        Rule("input-baseline", "§3.4",
             "REINFORCE minus a linear V(x) on the network input, broadcast as the advantage",
             baseline="input-state"),
        Rule("layer-baseline", "§3.5", "REINFORCE minus a linear V_i(s_i) on each layer's input",
             baseline="layer-state"),
        Rule("ac", "§3.6",
             "per-layer critics, on-policy: layer i is credited Q_{i+1}(a_i, a_{i+1})",
             critic="on-policy"),
        Rule("ac-offpolicy", "§3.7",
             "per-layer critics, off-policy: layer i is credited Q_{i+1}(a_i, greedy_{i+1}(a_i))",
             critic="off-policy"),
        Rule("ac-mc", "§3.9",
             "RECONSTRUCTION: critics regressed to the Monte-Carlo return r, layer i credited "
             "Q_{i+1}(a_i, a_{i+1})",
             critic="on-policy", critic_target="return", reconstruction=True),
        Rule("ac-reinforce", "§3.9",
             "RECONSTRUCTION: REINFORCE for the first reinforce_updates batches while on-policy "
             "critics learn, then the ac signal",
             critic="on-policy", reinforce_phase=True, reconstruction=True),
        Rule("ac-offpolicy-reinforce", "§3.9",
             "RECONSTRUCTION: REINFORCE for the first reinforce_updates batches while off-policy "
             "critics learn, then the ac-offpolicy signal",
             critic="off-policy", reinforce_phase=True, reconstruction=True),
    ]
}


def get_rule(name: str) -> Rule:
    """The rule called ``name``; an unknown name is a :class:`ConfigError` listing the known ones."""
    try:
        return RULES[name]
    except KeyError:
        raise ConfigError(f"unknown learning rule {name!r}; known rules: {sorted(RULES)}") from None
