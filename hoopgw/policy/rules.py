"""
Policy rules and their evaluation: pure values and functions, no I/O.

A L{PolicySet} is the loaded policy.  L{evaluate} decides one action against
it: deny beats review beats allow, and no matching allow means no access.

Evaluation runs for every SQL statement, so a L{PolicySet} compiles its
rules once: each pattern list becomes one regular expression (or a set
lookup when it has no wildcard), and the rules that can apply to a
(connection, action kind) pair are remembered, so a call only tests the
few rules that could match, and allocates nothing when a rule decides.
"""

from __future__ import annotations

import fnmatch
import re
import string
from collections.abc import Callable, Iterable, Iterator, Mapping, MutableMapping, Sequence
from enum import Enum
from typing import Any

from attrs import evolve, field, frozen

from hoopgw.masking import detectors as _detectors, engine as _engine
from hoopgw.errors import quote as _quote
from hoopgw.model import Action, Decision, Effect, Identity

__all__ = [
    "CONDITIONS",
    "UNPINNED",
    "restrictive_patterns",
    "Unpinned",
    "glob_witness",
    "DETECTORS",
    "GrantRule",
    "MASK_STRATEGIES",
    "Condition",
    "ConditionKind",
    "ConditionSpec",
    "MaskRule",
    "PolicyFile",
    "PolicySet",
    "ReviewRequirement",
    "Rule",
    "compile_globs",
    "evaluate",
    "register_condition",
]


class ConditionKind(str, Enum):
    """
    The type of a condition's value in a policy file.

    @cvar globs: an array of glob patterns; the condition matches when any
        of the action's values for it matches any pattern.
    @cvar boolean: C{true} or C{false}; the condition matches when the
        action's value is that boolean.
    """

    globs = "globs"
    boolean = "bool"


@frozen
class ConditionSpec:
    """
    A condition that rules may use.

    @ivar case: C{"lower"} or C{"upper"} when the values the front ends
        produce are always in that case (SQL statement kinds, Kubernetes
        verbs, HTTP methods), so that a pattern in another case, which could
        never match, is refused when the policy is loaded.
    """

    name: str
    kind: ConditionKind
    case: str | None = None
    description: str = ""


class _Vocabulary(MutableMapping[str, ConditionSpec]):
    """
    L{CONDITIONS}: the conditions of the installed front ends
    (L{hoopgw.frontends.installed}: each declares the ones its actions
    carry) and those added with L{register_condition}.  Read when a policy
    is loaded, never when one decides.
    """

    def __init__(self) -> None:
        self._added: dict[str, ConditionSpec] = {}
        self._installed: object = None
        self._table: dict[str, ConditionSpec] = {}

    def _current(self) -> dict[str, ConditionSpec]:
        from hoopgw.frontends import installed

        front_ends = installed()
        if front_ends is not self._installed:
            self._table = {**front_ends.conditions, **self._added}
            self._installed = front_ends
        return self._table

    def __getitem__(self, name: str) -> ConditionSpec:
        return self._current()[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._current())

    def __len__(self) -> int:
        return len(self._current())

    def __setitem__(self, name: str, spec: ConditionSpec) -> None:
        self._added[name] = spec
        self._installed = None

    def __delitem__(self, name: str) -> None:
        del self._added[name]
        self._installed = None

    def hint(self) -> str:
        """For a message about an unknown condition: which plugins could not be loaded, if any."""
        from hoopgw.frontends import installed

        return installed().hint()


CONDITIONS = _Vocabulary()
"""
Every condition a rule may use, by name: those of the installed front ends
(L{hoopgw.interfaces.IFrontEnd.conditions}), and any added with
L{register_condition} before policies are loaded.
"""

_CONDITION_NAME = re.compile(r"[a-z][a-z0-9_]*(?:\.[a-z][a-z0-9_]*)+\Z")


def register_condition(
    name: str,
    kind: ConditionKind | str,
    *,
    case: str | None = None,
    description: str = "",
    conditions: MutableMapping[str, ConditionSpec] | None = None,
) -> ConditionSpec:
    """
    Let rules use one more condition, e.g. C{register_condition("mysql.statements",
    "globs")} for a MySQL front end that puts C{"mysql.statements"} in its
    actions' attributes.  A front end installed as a plugin declares its
    conditions instead (L{hoopgw.interfaces.IFrontEnd.conditions}), and
    they are checked with this.

    Registering the same condition twice is harmless; registering a name
    again with another kind is a programming error.

    @param name: dotted, lower-case, with a protocol prefix (C{"proto.what"}).
    @param conditions: the table to add to (L{CONDITIONS} by default).
    @raise ValueError: for a malformed name, an unknown kind or case, or a
        conflicting registration.
    """
    table = CONDITIONS if conditions is None else conditions
    if not _CONDITION_NAME.match(name) or name.startswith("review."):
        raise ValueError(
            f'condition names are dotted lower-case words such as "proto.things", got {name!r}'
        )
    if case not in (None, "lower", "upper"):
        raise ValueError(f'case must be None, "lower" or "upper", got {case!r}')
    spec = ConditionSpec(name, ConditionKind(kind), case, description)
    existing = table.get(name)
    if existing is not None:
        if (existing.kind, existing.case) != (spec.kind, spec.case):
            raise ValueError(f"condition {name!r} is already registered as {existing!r}")
        return existing
    table[name] = spec
    return spec


# -- globs ------------------------------------------------------------------

_WILDCARDS = frozenset("*?[")


def compile_globs(patterns: Iterable[str]) -> Callable[[str], object] | None:
    """
    Compile glob patterns (C{fnmatch} syntax, case-sensitive) into one
    predicate over strings that is true when any pattern matches the whole
    string.

    @return: C{None} when a pattern is C{"*"} (everything matches, so
        callers skip the test altogether), else a callable returning a
        truthy value on a match.
    """
    patterns = tuple(patterns)
    if "*" in patterns:
        return None
    if not any(_WILDCARDS.intersection(p) for p in patterns):
        return frozenset(patterns).__contains__
    return re.compile("|".join(fnmatch.translate(p) for p in patterns)).match


# -- values -----------------------------------------------------------------


@frozen
class Condition:
    """
    One condition of a rule: C{value} is a tuple of glob patterns or a
    boolean, according to the condition's L{ConditionKind}.
    """

    name: str
    value: tuple[str, ...] | bool


# Typed converters (attrs and mypy need one per element type).
def _strs(value: Iterable[str]) -> tuple[str, ...]:
    return tuple(value)


def _conditions(value: Iterable[Condition]) -> tuple[Condition, ...]:
    return tuple(value)


def _requirements(value: Iterable[ReviewRequirement]) -> tuple[ReviewRequirement, ...]:
    return tuple(value)


@frozen
class ReviewRequirement:
    """
    Who must approve an action before it runs, and for how long the request
    waits.

    @ivar approvers: C{"group:NAME"} or C{"user:SUBJECT"} entries; an
        identity may approve when it matches any of them.
    @ivar min_approvals: how many distinct approving identities are needed.
    @ivar timeout_seconds: how long the request waits before it expires.
    @ivar rules: names of the review rules this requirement comes from.
    @ivar all_of: when several review rules matched one action, their
        requirements, each of which must be satisfied on its own (see
        L{combine}); empty for a single rule's requirement.
    @ivar webhooks: URLs a request for this approval is POSTed to (the
        rules' C{review.webhook}; L{hoopgw.reviews.webhook}).
    """

    approvers: tuple[str, ...] = field(converter=_strs)
    min_approvals: int = 1
    timeout_seconds: int = 600
    rules: tuple[str, ...] = field(default=(), converter=_strs)
    all_of: tuple[ReviewRequirement, ...] = field(default=(), converter=_requirements)
    webhooks: tuple[str, ...] = field(default=(), converter=_strs)

    def __attrs_post_init__(self) -> None:
        if not self.approvers:
            raise ValueError("a review requirement needs at least one approver")
        for approver in self.approvers:
            kind, _, name = approver.partition(":")
            if kind not in ("group", "user") or not name:
                raise ValueError(f'approvers are "group:NAME" or "user:NAME", got {approver!r}')
        if self.min_approvals < 1:
            raise ValueError(f"min_approvals must be at least 1, got {self.min_approvals}")
        if self.timeout_seconds < 1:
            raise ValueError(f"timeout_seconds must be positive, got {self.timeout_seconds}")

    @classmethod
    def combine(cls, requirements: Sequence[ReviewRequirement]) -> ReviewRequirement:
        """
        The requirement of an action that several review rules matched.

        Every rule's requirement must be met on its own (one approval counts
        toward each rule whose approvers it matches), so matching one more
        review rule never makes an action easier to approve.  The combined
        value's own fields summarise the parts for display and notification:
        C{approvers} is their union, C{min_approvals} their largest,
        C{timeout_seconds} their shortest; C{webhooks} is their union, so
        every matched rule's webhook is notified.
        """
        parts: list[ReviewRequirement] = []
        for requirement in requirements:
            parts.extend(requirement.all_of or (requirement,))
        if len(parts) == 1:
            return parts[0]
        approvers = tuple(dict.fromkeys(a for part in parts for a in part.approvers))
        return cls(
            approvers=approvers,
            min_approvals=max(part.min_approvals for part in parts),
            timeout_seconds=min(part.timeout_seconds for part in parts),
            rules=tuple(dict.fromkeys(name for part in parts for name in part.rules)),
            all_of=tuple(parts),
            webhooks=tuple(dict.fromkeys(url for part in parts for url in part.webhooks)),
        )

    def may_approve(self, identity: Identity) -> bool:
        """
        Whether C{identity} is one of the approvers (of any part).  Whether
        a requester may approve their own request is the review service's
        call, not this value's.
        """
        return _approver_matches(self.approvers, identity)

    def satisfied_by(self, approvals: Iterable[Identity]) -> bool:
        """
        Whether these approving identities meet the requirement: for each
        part, at least C{min_approvals} distinct people (by subject, whatever
        the issuer: C{user:} entries name subjects) that match the part's
        approvers.
        """
        unique = {i.subject: i for i in approvals}.values()
        for part in self.all_of or (self,):
            count = sum(1 for i in unique if _approver_matches(part.approvers, i))
            if count < part.min_approvals:
                return False
        return True


def _approver_matches(approvers: tuple[str, ...], identity: Identity) -> bool:
    for approver in approvers:
        kind, _, name = approver.partition(":")
        if kind == "user" and identity.subject == name:
            return True
        if kind == "group" and name in identity.groups:
            return True
    return False


ANY = ("*",)


@frozen
class Rule:
    """
    One C{[[rule]]} of a policy file.

    @ivar groups: identity groups, any of which admits an identity; C{"*"}
        admits any authenticated identity.
    @ivar users: glob patterns on the identity's subject.
    @ivar connections: glob patterns on the connection's name.
    @ivar actions: glob patterns on the action's kind.
    @ivar conditions: all must match (see L{ConditionKind}).
    @ivar review: set exactly when C{effect} is C{review}.
    @ivar grant: C{True}: the rule matches only while the identity holds an
        active access grant for the connection (L{hoopgw.grants});
        C{False}: only while it holds none; C{None}: either way.
    @ivar source: the policy file the rule comes from, C{index} its
        position among the file's rules (from 0); both only for messages.
    """

    name: str
    effect: Effect = field(converter=Effect)
    groups: tuple[str, ...] = field(default=ANY, converter=_strs)
    users: tuple[str, ...] = field(default=ANY, converter=_strs)
    connections: tuple[str, ...] = field(default=ANY, converter=_strs)
    actions: tuple[str, ...] = field(default=ANY, converter=_strs)
    conditions: tuple[Condition, ...] = field(default=(), converter=_conditions)
    message: str = ""
    review: ReviewRequirement | None = None
    grant: bool | None = None
    source: str | None = field(default=None, eq=False)
    index: int | None = field(default=None, eq=False)

    def __attrs_post_init__(self) -> None:
        if (self.effect is Effect.review) != (self.review is not None):
            raise ValueError(
                f"rule {self.name!r}: a review requirement is needed by, and only by, "
                "a review rule"
            )

    def where(self) -> str:
        """Where the rule was defined, for messages."""
        if self.index is None:
            label = f"rule {_quote(self.name)}"
        else:
            label = f"rule[{self.index}] ({_quote(self.name)})"
        return f"{self.source} {label}" if self.source else label


@frozen
class GrantRule:
    """
    One C{[[grant]]} of a policy file: who may ask for time-bound access to
    which connections, for how long at most, and who approves it.

    @ivar groups: identity groups that may ask (C{"*"}: anyone).
    @ivar users: glob patterns on the subjects that may ask.
    @ivar connections: glob patterns on the connections it is about.
    @ivar max_duration_seconds: the longest grant that may be asked for.
    @ivar review: who approves a request (as a review rule's).
    """

    name: str
    review: ReviewRequirement
    max_duration_seconds: int = 3600
    groups: tuple[str, ...] = field(default=ANY, converter=_strs)
    users: tuple[str, ...] = field(default=ANY, converter=_strs)
    connections: tuple[str, ...] = field(default=ANY, converter=_strs)
    source: str | None = field(default=None, eq=False)
    index: int | None = field(default=None, eq=False)

    def __attrs_post_init__(self) -> None:
        if self.max_duration_seconds < 1:
            raise ValueError(f"max_duration_seconds must be positive, got {self.max_duration_seconds}")

    def covers(self, identity: Identity, connection_name: str) -> bool:
        """Whether C{identity} may ask this rule for access to that connection."""
        if "*" not in self.groups and set(self.groups).isdisjoint(identity.groups):
            return False
        if "*" not in self.users and not any(fnmatch.fnmatchcase(identity.subject, p) for p in self.users):
            return False
        return any(fnmatch.fnmatchcase(connection_name, p) for p in self.connections)


DETECTORS = frozenset(_detectors.DETECTORS)
MASK_STRATEGIES = _engine.STRATEGIES


@frozen
class MaskRule:
    """
    One C{[[mask]]} of a policy file: which values of a connection's
    responses are masked, and how.

    @ivar columns: C{schema.table.column} glob patterns on a result column's
        origin.
    @ivar detectors: names from L{DETECTORS}, matched on values.
    @ivar patterns: the policy's own value patterns (regular expressions,
        checked by L{hoopgw.masking.detectors.compile_pattern} at load).
    @ivar json_paths: paths (L{hoopgw.masking.jsonpath}) of the values masked
        in JSON bodies: from each object of C{kinds}, or from the body's root.
    @ivar kinds: Kubernetes kinds whose objects C{json_paths} start from
        (a Secret's C{data} and C{stringData} without C{json_paths}).
    @ivar strategy: one of L{MASK_STRATEGIES}.
    @ivar groups: identity groups the mask applies to (C{"*"}: everyone).
    @ivar users: glob patterns on the subjects it applies to.
    @ivar except_groups: identities in any of these groups see the values
        (what is stored in the trail is masked for them too).
    """

    name: str
    connections: tuple[str, ...] = field(default=ANY, converter=_strs)
    columns: tuple[str, ...] = field(default=(), converter=_strs)
    detectors: tuple[str, ...] = field(default=(), converter=_strs)
    patterns: tuple[str, ...] = field(default=(), converter=_strs)
    json_paths: tuple[str, ...] = field(default=(), converter=_strs)
    kinds: tuple[str, ...] = field(default=(), converter=_strs)
    strategy: str = "redact"
    groups: tuple[str, ...] = field(default=ANY, converter=_strs)
    users: tuple[str, ...] = field(default=ANY, converter=_strs)
    except_groups: tuple[str, ...] = field(default=(), converter=_strs)
    source: str | None = field(default=None, eq=False)
    index: int | None = field(default=None, eq=False)

    def covers(self, connection_name: str) -> bool:
        """Whether this mask is about that connection (the trail is masked for everyone it covers)."""
        return any(fnmatch.fnmatchcase(connection_name, p) for p in self.connections)

    def applies_to(self, connection_name: str, identity: Identity) -> bool:
        """Whether this mask covers C{identity}'s responses from that connection."""
        if not set(self.except_groups).isdisjoint(identity.groups):
            return False
        if "*" not in self.groups and set(self.groups).isdisjoint(identity.groups):
            return False
        if "*" not in self.users and not any(fnmatch.fnmatchcase(identity.subject, p) for p in self.users):
            return False
        return self.covers(connection_name)


@frozen
class PolicyFile:
    """A loaded policy file: what a C{policy.loaded} audit record says about it."""

    path: str
    sha256: str
    rules: int
    masks: int = 0
    grants: int = 0

    def to_record(self) -> dict[str, Any]:
        record = {"path": self.path, "sha256": self.sha256, "rules": self.rules, "masks": self.masks}
        if self.grants:
            record["grants"] = self.grants
        return record


def _rules(value: Iterable[Rule]) -> tuple[Rule, ...]:
    return tuple(value)


def _masks(value: Iterable[MaskRule]) -> tuple[MaskRule, ...]:
    return tuple(value)


def _files(value: Iterable[PolicyFile]) -> tuple[PolicyFile, ...]:
    return tuple(value)


def _grants(value: Iterable[GrantRule]) -> tuple[GrantRule, ...]:
    return tuple(value)


# Whether an identity holds an active grant for a connection (L{hoopgw.grants.GrantService.holds}).
HoldsGrant = Callable[[Identity, str], bool]


@frozen
class PolicySet:
    """
    A loaded policy: every rule, mask and grant rule of the policy folder in
    load order (files sorted by name, then as written), and the files they
    came from.
    """

    rules: tuple[Rule, ...] = field(default=(), converter=_rules)
    masks: tuple[MaskRule, ...] = field(default=(), converter=_masks)
    files: tuple[PolicyFile, ...] = field(default=(), converter=_files)
    grants: tuple[GrantRule, ...] = field(default=(), converter=_grants)
    _evaluator: _Evaluator = field(init=False, eq=False, repr=False)

    def __attrs_post_init__(self) -> None:
        object.__setattr__(self, "_evaluator", _Evaluator(self.rules))

    def rule(self, name: str) -> Rule | None:
        for rule in self.rules:
            if rule.name == name:
                return rule
        return None

    def masks_for(self, connection_name: str, identity: Identity) -> tuple[MaskRule, ...]:
        """The mask rules that apply to C{identity}'s responses from a connection."""
        return tuple(m for m in self.masks if m.applies_to(connection_name, identity))

    def grant_rule(self, identity: Identity, connection_name: str) -> GrantRule | None:
        """The first C{[[grant]]} under which C{identity} may ask for access to that connection."""
        for grant in self.grants:
            if grant.covers(identity, connection_name):
                return grant
        return None

    def evaluate(
        self, identity: Identity, connection_name: str, action: Action, holds_grant: HoldsGrant | None = None
    ) -> Decision:
        """See L{evaluate}."""
        return self._evaluator.evaluate(identity, connection_name, action, holds_grant)


def evaluate(
    policy: PolicySet,
    identity: Identity,
    connection_name: str,
    action: Action,
    holds_grant: HoldsGrant | None = None,
) -> Decision:
    """
    Decide C{action} by C{identity} on the connection named C{connection_name}.

    A rule matches when the identity is in one of its groups (C{"*"}: any),
    its subject matches C{users}, the connection name matches
    C{connections}, the action kind matches C{actions}, and every condition
    matches the action's attributes.  A condition whose attribute the action
    does not carry does not match, so C{sql.*} conditions never catch an SSH
    action.

    Then: the first matching deny rule (in load order) decides; else, with
    no matching allow rule, the action is denied with C{rule=None}; else the
    matching review rules, if any, decide together (see
    L{ReviewRequirement.combine}), the first of them named in the decision;
    else the first matching allow rule decides.  So a review rule gates
    what an allow rule grants, and never grants anything by itself.

    A rule with C{grant} set matches only if C{holds_grant(identity,
    connection_name)} says so (asked only when such a rule could apply;
    without C{holds_grant}, no identity holds a grant).
    """
    return policy._evaluator.evaluate(identity, connection_name, action, holds_grant)


# -- compiled form ------------------------------------------------------------

_MISSING = object()
_COLLECTIONS = (tuple, list, frozenset, set)


def _anything(value: str) -> bool:
    return True


class _CompiledRule:
    __slots__ = (
        "actions",
        "checks",
        "connections",
        "decision",
        "grant",
        "groups",
        "requires",
        "restrictive",
        "rule",
        "users",
    )

    def __init__(self, rule: Rule) -> None:
        self.rule = rule
        self.restrictive = rule.effect is not Effect.allow  # (an UNPINNED value matches it)
        self.groups = None if "*" in rule.groups else frozenset(rule.groups)
        self.users = compile_globs(rule.users)
        self.connections = compile_globs(rule.connections)
        self.actions = compile_globs(rule.actions)
        self.requires = frozenset(c.name for c in rule.conditions)
        self.grant = rule.grant
        # (attribute, matcher, expected): a glob condition has a matcher, a
        # boolean one the expected value; tested inline by applies().
        checks: list[tuple[str, Callable[[str], object] | None, bool | None]] = []
        for condition in rule.conditions:
            if isinstance(condition.value, bool):
                checks.append((condition.name, None, condition.value))
            else:
                # "*" still requires the attribute to be present.
                match = compile_globs(condition.value) or _anything
                checks.append((condition.name, match, None))
        self.checks = tuple(checks)
        message = rule.message
        if not message and rule.effect is Effect.deny:
            message = f"denied by policy rule {_quote(rule.name)}"
        elif not message and rule.effect is Effect.review:
            message = f"review required by policy rule {_quote(rule.name)}"
        review = rule.review
        if review is not None and not review.rules:
            review = evolve(review, rules=(rule.name,))
        # Deciding rules hand out this one value: no allocation per call.
        self.decision = Decision(rule.effect, rule.name, message, review)

    def applies(self, identity: Identity, attributes: Mapping[str, Any], granted: bool) -> bool:
        if self.grant is not None and self.grant is not granted:
            return False
        groups = self.groups
        if groups is not None and groups.isdisjoint(identity.groups):
            return False
        users = self.users
        if users is not None and not users(identity.subject):
            return False
        for name, match, expected in self.checks:
            value = attributes.get(name, _MISSING)
            if match is None:
                # Identity, not equality: 1 or "true" is not a boolean fact.
                if value is not expected:
                    return False
            elif isinstance(value, str):
                if not match(value):
                    return False
            elif isinstance(value, _COLLECTIONS):
                for item in value:
                    # Front ends promise strings; anything else does not match.
                    if isinstance(item, str) and match(item):
                        if item.__class__ is not Unpinned or self.restrictive or match is _anything:
                            break
                    elif item.__class__ is Unpinned and self.restrictive:
                        break
                else:
                    return False
            else:
                return False
        return True


@frozen
class _Candidates:
    """
    The rules that can match actions of one kind, on one connection, with
    one set of attribute names; and the start of the no-match message.
    """

    denies: tuple[_CompiledRule, ...]
    reviews: tuple[_CompiledRule, ...]
    allows: tuple[_CompiledRule, ...]
    no_match: str
    uses_grant: bool = False  # a candidate asks whether the identity holds a grant


# Connection names, action kinds and attribute names come from small sets in
# practice, but clients choose some of them (a database name, a k8s verb),
# so the memo is bounded.
_CACHE_LIMIT = 4096


# Decisions kept per compiled policy (then forgotten all at once): clients
# choose the statements, so the memo is bounded.
_DECISIONS_KEPT = 4096
# A boolean fact's place in a decision's key: True == 1 and hash alike, but
# a boolean condition matches only the boolean (applies() tests identity).
_TRUE, _FALSE = object(), object()


def _decision_key(attributes: Mapping[str, Any]) -> tuple[Any, ...] | None:
    """
    The attribute values as a decision memo's key, if each is a string, a
    boolean, or a tuple or frozenset of strings (what front ends give);
    else C{None}: decided each time, never by a key that could equate
    values a condition tells apart (C{1} and C{True}).
    """
    key: list[Any] = []
    for value in attributes.values():
        kind = type(value)
        if kind is str:
            key.append(value)
        elif kind is bool:
            key.append(_TRUE if value else _FALSE)
        elif kind is tuple or kind is frozenset:
            for item in value:
                if type(item) is not str:
                    return None
            key.append(value)
        else:
            return None
    return tuple(key)


class _Evaluator:
    """
    The compiled form of a policy.

    Rules are pre-selected per (connection name, action kind, attribute
    names): a rule is a candidate only if its connection and action patterns
    match and the action carries every attribute its conditions test (one
    that lacks one cannot match).  So an SQL statement is only tested
    against the rules that could catch it, not against the SSH guardrails.
    """

    __slots__ = ("_cache", "_combined", "_decisions", "_rules", "_size")

    def __init__(self, rules: Sequence[Rule]) -> None:
        self._rules = tuple(_CompiledRule(rule) for rule in rules)
        self._cache: dict[str, dict[str, dict[tuple[str, ...], _Candidates]]] = {}
        self._size = 0
        self._combined: dict[tuple[_CompiledRule, ...], Decision] = {}
        # The decisions already made, by everything a decision reads (see
        # _decision_key): a statement a client repeats is one lookup.  Kept
        # by this compiled policy, so a reload (a new one) starts afresh.
        self._decisions: dict[tuple[Any, ...], Decision] = {}

    def _candidates(self, connection_name: str, kind: str, names: tuple[str, ...]) -> _Candidates:
        present = frozenset(names)
        by_effect: dict[Effect, list[_CompiledRule]] = {e: [] for e in Effect}
        for compiled in self._rules:
            if compiled.connections is not None and not compiled.connections(connection_name):
                continue
            if compiled.actions is not None and not compiled.actions(kind):
                continue
            if not compiled.requires <= present:
                continue
            by_effect[compiled.rule.effect].append(compiled)
        candidates = _Candidates(
            tuple(by_effect[Effect.deny]),
            tuple(by_effect[Effect.review]),
            tuple(by_effect[Effect.allow]),
            f"no rule allows {_quote(kind)} on {_quote(connection_name)} for ",
            any(c.grant is not None for effect in by_effect.values() for c in effect),
        )
        if self._size >= _CACHE_LIMIT:
            self._cache.clear()
            self._combined.clear()
            self._size = 0
        self._cache.setdefault(connection_name, {}).setdefault(kind, {})[names] = candidates
        self._size += 1
        return candidates

    def evaluate(
        self, identity: Identity, connection_name: str, action: Action, holds_grant: HoldsGrant | None
    ) -> Decision:
        kind = action.kind
        attributes = action.attributes
        names = tuple(attributes)
        candidates = None
        by_kind = self._cache.get(connection_name)
        if by_kind is not None:
            by_names = by_kind.get(kind)
            if by_names is not None:
                candidates = by_names.get(names)
        if candidates is None:
            candidates = self._candidates(connection_name, kind, names)
        granted = False
        if candidates.uses_grant and holds_grant is not None:
            granted = holds_grant(identity, connection_name) is True
        values = _decision_key(attributes)
        if values is None:
            return self._decide(candidates, identity, attributes, granted)
        key = (connection_name, kind, names, values, identity.subject, identity.groups, granted)
        decision = self._decisions.get(key)
        if decision is None:
            decision = self._decide(candidates, identity, attributes, granted)
            if len(self._decisions) >= _DECISIONS_KEPT:
                self._decisions.clear()
            self._decisions[key] = decision
        return decision

    def _decide(
        self, candidates: _Candidates, identity: Identity, attributes: Mapping[str, Any], granted: bool
    ) -> Decision:
        for compiled in candidates.denies:
            if compiled.applies(identity, attributes, granted):
                return compiled.decision
        for compiled in candidates.allows:
            if compiled.applies(identity, attributes, granted):
                allowed = compiled
                break
        else:
            return Decision(Effect.deny, None, candidates.no_match + str(identity.subject))
        # A review rule gates what an allow rule grants; it never grants.
        first = None
        several = None
        for compiled in candidates.reviews:
            if compiled.applies(identity, attributes, granted):
                if first is None:
                    first = compiled
                elif several is None:
                    several = [first, compiled]
                else:
                    several.append(compiled)
        if several is not None:
            return self._combined_review(tuple(several))
        if first is not None:
            return first.decision
        return allowed.decision

    def _combined_review(self, matched: tuple[_CompiledRule, ...]) -> Decision:
        decision = self._combined.get(matched)
        if decision is None:
            messages = dict.fromkeys(c.decision.message for c in matched)
            decision = Decision(
                Effect.review,
                matched[0].rule.name,
                "; ".join(messages),
                ReviewRequirement.combine([c.decision.review for c in matched]),
            )
            self._combined[matched] = decision
        return decision


class Unpinned(str):
    """
    The type of L{UNPINNED}: a value a front end cannot pin down.  Put in
    an attribute's tuple (a Kubernetes list's C{k8s.names}: every object it
    returns), it matches every pattern of a deny or review rule, and of an
    allow rule only C{"*"}: fail closed.  It reads as C{"*"} in the trail,
    and an action carrying it is decided afresh each time (never memoised).
    """

    __slots__ = ()


UNPINNED = Unpinned("*")


def restrictive_patterns(
    rules: Iterable[Rule], identity: Identity, connection: str, kind: str, condition: str
) -> tuple[tuple[str, ...], ...]:
    """
    The C{condition} patterns of each deny and review rule (of a
    L{PolicySet}) that can apply to C{identity}'s C{kind} actions on
    C{connection}: one tuple per rule.  A front end that cannot read all
    an action touches adds, for each, a value one of them matches
    (L{glob_witness}).  A rule's grant condition is not known here; such a
    rule counts as one that can apply.
    """
    found = []
    for rule in rules:
        if rule.effect is Effect.allow:
            continue
        if "*" not in rule.groups and set(rule.groups).isdisjoint(identity.groups):
            continue
        if not any(fnmatch.fnmatchcase(identity.subject, p) for p in rule.users):
            continue
        if not any(fnmatch.fnmatchcase(connection, p) for p in rule.connections):
            continue
        if not any(fnmatch.fnmatchcase(kind, p) for p in rule.actions):
            continue
        for c in rule.conditions:
            if c.name == condition and not isinstance(c.value, bool):
                found.append(tuple(c.value))
    return tuple(found)


_WITNESS_MEMBERS = string.ascii_letters + string.digits + string.punctuation + " \t"


def glob_witness(pattern: str) -> str | None:
    """
    A string the glob C{pattern} matches: the pattern itself, each C{[...]}
    set replaced by one of its members (C{*} and C{?} match themselves);
    C{None} when a set has no member found.  A front end that cannot read
    what an action touches adds such a value for each deny or review rule's
    pattern, so that the rule matches: fail closed.
    """
    out, i, n = [], 0, len(pattern)
    while i < n:
        c = pattern[i]
        i += 1
        if c != "[":
            out.append(c)
            continue
        j = i
        if j < n and pattern[j] == "!":
            j += 1
        if j < n and pattern[j] == "]":
            j += 1
        while j < n and pattern[j] != "]":
            j += 1
        if j >= n:
            out.append(c)  # no closing bracket: a literal "["
            continue
        members = pattern[i - 1:j + 1]
        member = next((m for m in _WITNESS_MEMBERS if fnmatch.fnmatchcase(m, members)), None)
        if member is None:
            member = next((chr(m) for m in range(0x80, 0x3000) if fnmatch.fnmatchcase(chr(m), members)), None)
        if member is None:
            return None
        out.append(member)
        i = j + 1
    text = "".join(out)
    return text if fnmatch.fnmatchcase(text, pattern) else None
