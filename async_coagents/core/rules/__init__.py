"""The learning rules, one small class each, and the registry that names them.

Every rule cites its section of `paper_method.md` and states its estimator in its docstring. The
three rules whose code the paper never released (§3.9) are our reconstructions and are marked so;
results obtained with them are not results of the paper's code.

Adding a rule is one class and one registry entry::

    from async_coagents.core.rules import Rule, register

    @register
    class MyRule(Rule):
        name = "my-rule"
        def signal(self, step):
            return step.reward  # G = r

and :func:`async_coagents.testing.check_rule` checks it (``check_rule("my-rule")``).
"""

from __future__ import annotations

from async_coagents.core.rules.base import Rule, RuleSettings, Step
from async_coagents.core.rules.critic import (
    ActorCritic,
    ActorCriticAfterReinforce,
    AdvantageOffPolicyActorCritic,
    MonteCarloActorCritic,
    OffPolicyActorCritic,
    OffPolicyActorCriticAfterReinforce,
)
from async_coagents.core.rules.hnca import Hnca, HncaPlain
from async_coagents.core.rules.reinforce import (
    GlobalBaseline,
    InputStateBaseline,
    LayerStateBaseline,
    Reinforce,
)
from async_coagents.core.rules.weight_max import WeightMax
from async_coagents.errors import ConfigError

__all__ = [
    "RULES", "ActorCritic", "ActorCriticAfterReinforce", "AdvantageOffPolicyActorCritic",
    "GlobalBaseline", "Hnca", "HncaPlain",
    "InputStateBaseline", "LayerStateBaseline", "MonteCarloActorCritic", "OffPolicyActorCritic",
    "OffPolicyActorCriticAfterReinforce", "Reinforce", "Rule", "RuleSettings", "Step", "WeightMax",
    "get_rule", "register",
]

#: name -> rule class.
RULES: dict[str, type[Rule]] = {}


def register(rule: type[Rule]) -> type[Rule]:
    """Add ``rule`` to :data:`RULES` under ``rule.name`` (usable as a class decorator)."""
    if not (isinstance(rule, type) and issubclass(rule, Rule)) or not rule.name:
        raise ConfigError(f"a learning rule must be a Rule subclass with a name, got {rule!r}")
    if RULES.get(rule.name, rule) is not rule:
        raise ConfigError(f"a learning rule named {rule.name!r} is already registered")
    RULES[rule.name] = rule
    return rule


for _rule in (Reinforce, GlobalBaseline, InputStateBaseline, LayerStateBaseline, ActorCritic,
              OffPolicyActorCritic, MonteCarloActorCritic, ActorCriticAfterReinforce,
              OffPolicyActorCriticAfterReinforce, AdvantageOffPolicyActorCritic, Hnca, HncaPlain,
              WeightMax):
    register(_rule)


def get_rule(name: str) -> type[Rule]:
    """The rule class called ``name``; an unknown name is a :class:`ConfigError` listing the known
    ones."""
    try:
        return RULES[name]
    except KeyError:
        raise ConfigError(f"unknown learning rule {name!r}; known rules: {sorted(RULES)}") from None
