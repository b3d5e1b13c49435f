"""
The Redis front end's policy conditions (declared by its plugin, as a
front end brings its own) and how a command is matched against them: pure
functions.

    redis.commands   globs, upper-case: "FLUSHALL", "CONFIG|SET", "CONFIG" (every CONFIG subcommand)
    redis.keys       globs over the command's keys: "session:*"

    [[rule]]
    name = "no-flushall"
    effect = "deny"
    redis.commands = ["FLUSHALL", "FLUSHDB", "CONFIG", "DEBUG", "KEYS"]

    [[rule]]
    name = "no-session-writes"
    effect = "deny"
    actions = ["redis.set", "redis.del", "redis.hset"]   # kinds: redis.<command>
    redis.keys = ["session:*"]

Names are matched whatever case the client typed (the target's name for
the command is used, upper-case), and patterns must be upper-case: the
policy loader refuses C{"flushall"} (a pattern that could never match)
rather than letting a deny rule silently miss.

Matching (L{matches}, the semantics): a rule's glob condition matches when
any of the command's values matches any pattern (the engine's rule for every
glob condition), and -- fail closed -- a command whose keys or commands
cannot all be read (L{hoopgw_redis.actions.Described.keys_unknown},
C{commands_unknown}) matches every I{deny} and I{review} rule on that
condition, never an I{allow} rule by that alone.

hoopgw's engine (L{hoopgw.policy.rules}) matches a condition by its
L{ConditionSpec} alone (a name, globs or bool, a case): it has no hook
through which a front end's matcher could see the rule's effect.  So the
front end gets the same result the way the SSH front end does for lines it
cannot read: L{fail_closed} adds to the incomplete fact, for each deny and
review rule in force that can apply and is not matched yet, a value one of
its patterns matches (the pattern itself, a C{[...]} set replaced by a
member).  With a policy that does not show its rules, such a command is
refused (L{fail_closed} returns C{None}).  Should the engine let a
condition see the effect, L{matches} is the matcher to give it and the
witnesses go away.

The front end's plugin (L{hoopgw_redis.plugin}) declares L{CONDITIONS}, so
policies may use them wherever the plugin is installed.
"""

from __future__ import annotations

import fnmatch
import re
from collections.abc import Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from hoopgw.frontend import ConditionKind, ConditionSpec, Effect, Identity, glob_witness, restrictive_patterns

if TYPE_CHECKING:
    # Only a type here: finding the plugin (twistd, the admin command) imports this module.
    from hoopgw_redis.actions import Described

__all__ = ["COMMANDS", "CONDITIONS", "KEYS", "fail_closed", "matches", "restrictive_patterns"]

COMMANDS = "redis.commands"
KEYS = "redis.keys"

CONDITIONS = (
    ConditionSpec(
        COMMANDS, ConditionKind.globs, "upper",
        "Redis commands as the target names them, upper-case; a subcommand also as CONFIG|SET. "
        "A script (EVAL, FCALL) matches every deny and review rule on it",
    ),
    ConditionSpec(
        KEYS, ConditionKind.globs, None,
        "the keys a Redis command names (from the target's key specs). A command whose keys "
        "cannot all be read (a script, FLUSHALL, SORT ... BY) matches every deny and review rule on it",
    ),
)


def _compile(patterns: Iterable[str]) -> Any:
    return re.compile("|".join(fnmatch.translate(p) for p in patterns)).match


def _unknown(described: Described, condition: str) -> str:
    return described.keys_unknown if condition == KEYS else described.commands_unknown


def matches(condition: str, patterns: Sequence[str], described: Described, effect: Effect) -> bool:
    """
    Whether a rule of C{effect} with C{condition = patterns} matches the
    command: the semantics L{fail_closed} makes today's engine follow.
    """
    if _unknown(described, condition) and effect in (Effect.deny, Effect.review):
        return True
    values = described.attributes.get(condition)
    if not values:
        return False
    match = _compile(patterns)
    return any(match(value) for value in values)


def fail_closed(
    described: Described, rules: Iterable[Any] | None, identity: Identity, connection: str
) -> Mapping[str, Any] | None:
    """
    The attributes of C{described} for today's engine: an incomplete fact
    gets a value matched by each deny and review rule on it that can apply
    (see the module's docstring).  C{None} when that cannot be done: the
    policy does not show its rules (C{rules} is C{None}) or a pattern has
    no string it matches; the command must then be refused.
    """
    attributes = dict(described.attributes)
    for condition in (KEYS, COMMANDS):
        if not _unknown(described, condition):
            continue
        if rules is None:
            return None
        rules = tuple(rules)
        values = list(attributes.get(condition, ()))
        for patterns in restrictive_patterns(rules, identity, connection, described.kind, condition):
            match = _compile(patterns)
            if any(match(v) for v in values):
                continue
            found = next((w for w in map(glob_witness, patterns) if w is not None), None)
            if found is None:
                return None
            values.append(found)
        attributes[condition] = tuple(dict.fromkeys(values))
    return attributes
