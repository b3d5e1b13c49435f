"""
Policy files: TOML in, a validated L{PolicySet} out.

L{load_policy_dir} is the only function here that touches the file system;
L{parse_policy_file} and L{build_policy_set} work on bytes, so the whole of
validation is testable without files.  Every error is a
L{hoopgw.errors.ConfigError} naming the file, the key (with the rule's index
from 0 and name) and what was expected.
"""

from __future__ import annotations

import difflib
import hashlib
import re
import tomllib
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, NamedTuple

from attrs import evolve

from hoopgw.config import parse_duration, url_problem
from hoopgw.errors import ConfigError, quote_choices
from hoopgw.errors import describe_type as _type_name
from hoopgw.errors import quote as _quote
from hoopgw.masking.detectors import PatternError, compile_pattern
from hoopgw.masking.jsonbody import KIND_PATHS
from hoopgw.masking.jsonpath import JsonPathError, compile_json_path
from hoopgw.model import Effect
from hoopgw.policy.rules import (
    ANY,
    CONDITIONS,
    DETECTORS,
    MASK_STRATEGIES,
    Condition,
    ConditionKind,
    ConditionSpec,
    GrantRule,
    MaskRule,
    PolicyFile,
    PolicySet,
    ReviewRequirement,
    Rule,
)

# PolicySet is re-exported: it is what this module produces.
__all__ = [
    "ParsedPolicyFile", "PolicySet", "build_policy_set", "load_policy_dir", "parse_policy_file", "policy_files",
]

RULE_KEYS = ("actions", "connections", "effect", "grant", "groups", "message", "name", "review", "users")
GRANT_KEYS = ("connections", "groups", "max_duration", "name", "review", "users")
REVIEW_KEYS = ("approvers", "min_approvals", "timeout", "webhook")
MASK_KEYS = (
    "columns", "connections", "detectors", "except_groups", "groups", "json_paths", "kinds", "name", "patterns",
    "strategy", "users",
)
_KIND = re.compile(r"[A-Z][A-Za-z0-9]*\Z")
TOP_LEVEL_KEYS = ("grant", "mask", "rule")

DEFAULT_REVIEW_TIMEOUT = 600

_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.:@/-]{0,99}\Z")
_WILDCARDS = frozenset("*?[")

def _one_of(names: Sequence[str]) -> str:
    return "one of " + quote_choices(names)


def _did_you_mean(key: str, names: Sequence[str]) -> str:
    close = difflib.get_close_matches(key, names, n=1)
    return f"; did you mean {_quote(close[0])}?" if close else ""


class _Context:
    """Where in which file we are, for error messages."""

    def __init__(self, file: str, conditions: Mapping[str, ConditionSpec]) -> None:
        self.file = file
        self.conditions = conditions

    def error(self, key: str, expected: str) -> ConfigError:
        return ConfigError(self.file, key, expected)

    def string(self, value: object, key: str) -> str:
        if not isinstance(value, str):
            raise self.error(key, f"expected a string, got {_type_name(value)}")
        return value

    def strings(self, value: object, key: str, *, case: str | None = None) -> tuple[str, ...]:
        if isinstance(value, str):
            raise self.error(
                key, f"expected an array of strings, got a string; write [{_quote(value)}]"
            )
        if not isinstance(value, list):
            raise self.error(key, f"expected an array of strings, got {_type_name(value)}")
        if not value:
            raise self.error(
                key, "expected a non-empty array of strings (an empty one would never match)"
            )
        items = []
        for i, item in enumerate(value):
            text = self.string(item, f"{key}[{i}]")
            if case == "lower" and text != text.lower():
                raise self.error(f"{key}[{i}]", f"expected lower-case values, got {_quote(text)}")
            if case == "upper" and text != text.upper():
                raise self.error(f"{key}[{i}]", f"expected upper-case values, got {_quote(text)}")
            items.append(text)
        return tuple(items)

    def name(self, table: Mapping[str, Any], where: str) -> str:
        if "name" not in table:
            raise self.error(f"{where}.name", "required; expected a string naming it")
        name = self.string(table["name"], f"{where}.name")
        if not _NAME.match(name):
            raise self.error(
                f"{where}.name",
                'expected letters, digits and "_.:@/-", starting with a letter or digit, '
                f"at most 100 characters, got {_quote(name)}",
            )
        return name

    def known_keys(self, table: Mapping[str, Any], where: str, keys: Sequence[str]) -> None:
        for key in table:
            if key not in keys:
                raise self.error(f"{where}.{key}", f"unknown key; expected {_one_of(keys)}{_did_you_mean(key, keys)}")

    def duration(self, table: Mapping[str, Any], name: str, key: str, default: int) -> int:
        """A duration of at least a second (C{table[name]}, or C{default}); C{key} names it in errors."""
        if name not in table:
            return default
        try:
            seconds = parse_duration(table[name])
        except ValueError as e:
            raise self.error(key, str(e)) from None
        if seconds < 1:
            raise self.error(key, f"expected a duration of at least one second, got {_quote(table[name])}")
        return seconds

    def groups(self, value: object, key: str) -> tuple[str, ...]:
        groups = self.strings(value, key)
        for i, group in enumerate(groups):
            if group != "*" and _WILDCARDS.intersection(group):
                raise self.error(
                    f"{key}[{i}]",
                    'expected a group name or "*" (group names are matched exactly, '
                    f"not as patterns), got {_quote(group)}",
                )
        return groups


def _table_array(ctx: _Context, document: Mapping[str, Any], key: str) -> list[Any]:
    value = document.get(key, [])
    if not isinstance(value, list):
        raise ctx.error(key, f"expected an array of tables ([[{key}]]), got {_type_name(value)}")
    for i, item in enumerate(value):
        if not isinstance(item, dict):
            raise ctx.error(
                f"{key}[{i}]", f"expected a table ([[{key}]]), got {_type_name(item)}"
            )
    return value


def _parse_conditions(
    ctx: _Context, where: str, items: list[tuple[str, Any]]
) -> tuple[Condition, ...]:
    """
    Turn condition entries into L{Condition}s.  TOML's dotted keys
    (C{sql.statements = [...]}) arrive as nested tables; walk them down to
    a registered condition name.
    """
    conditions = []
    pending = list(items)
    while pending:
        path, value = pending.pop(0)
        spec = ctx.conditions.get(path)
        if spec is None:
            if isinstance(value, dict) and value:
                pending[0:0] = [(f"{path}.{k}", v) for k, v in value.items()]
                continue
            known = sorted(ctx.conditions)
            # A condition of a front end whose plugin failed to load: say which.
            hint = CONDITIONS.hint() if ctx.conditions is CONDITIONS else ""
            raise ctx.error(
                f"{where}.{path}",
                f"unknown condition; expected {_one_of(known)}{_did_you_mean(path, known)}{hint}",
            )
        key = f"{where}.{path}"
        if spec.kind is ConditionKind.boolean:
            if not isinstance(value, bool):
                raise ctx.error(key, f"expected true or false, got {_type_name(value)}")
            conditions.append(Condition(path, value))
        else:
            conditions.append(Condition(path, ctx.strings(value, key, case=spec.case)))
    return tuple(conditions)


def _parse_review(
    ctx: _Context, where: str, value: object, effect: Effect | None
) -> ReviewRequirement | None:
    """A rule's C{review} table (C{effect} is the rule's), or a C{[[grant]]}'s (C{effect} is C{None})."""
    key = f"{where}.review"
    if effect is not None and effect is not Effect.review:
        if value is None:
            return None
        first = next(iter(value), None) if isinstance(value, dict) else None
        raise ctx.error(
            f"{key}.{first}" if first else key,
            "only a review rule may have review settings; "
            f"this rule's effect is {_quote(effect.value)}",
        )
    if value is None:
        value = {}
    if not isinstance(value, dict):
        raise ctx.error(
            key, f"expected a table (review.approvers = [...]), got {_type_name(value)}"
        )
    for name in value:
        if name not in REVIEW_KEYS:
            raise ctx.error(
                f"{key}.{name}",
                f"unknown key; expected {_one_of(REVIEW_KEYS)}{_did_you_mean(name, REVIEW_KEYS)}",
            )
    if "approvers" not in value:
        raise ctx.error(
            f"{key}.approvers",
            f'required for a {"review rule" if effect is not None else "grant"}; '
            'expected an array such as ["group:dba", "user:alice"]',
        )
    approvers = ctx.strings(value["approvers"], f"{key}.approvers")
    for i, approver in enumerate(approvers):
        kind, _, name = approver.partition(":")
        if kind not in ("group", "user") or not name:
            raise ctx.error(
                f"{key}.approvers[{i}]",
                f'expected "group:NAME" or "user:SUBJECT", got {_quote(approver)}',
            )
    min_approvals = value.get("min_approvals", 1)
    if isinstance(min_approvals, bool) or not isinstance(min_approvals, int):
        raise ctx.error(
            f"{key}.min_approvals",
            f"expected an integer of at least 1, got {_type_name(min_approvals)}",
        )
    if min_approvals < 1:
        raise ctx.error(
            f"{key}.min_approvals", f"expected an integer of at least 1, got {min_approvals}"
        )
    users = {a for a in approvers if a.startswith("user:")}
    if len(users) == len(approvers) and min_approvals > len(users):
        raise ctx.error(
            f"{key}.min_approvals",
            f"expected at most {len(users)} (the number of users listed as approvers), "
            f"got {min_approvals}",
        )
    timeout = ctx.duration(value, "timeout", f"{key}.timeout", DEFAULT_REVIEW_TIMEOUT)
    webhooks: tuple[str, ...] = ()
    if "webhook" in value:
        url = ctx.string(value["webhook"], f"{key}.webhook")
        problem = url_problem(url, ("https", "http"))
        if problem is not None:
            raise ctx.error(f"{key}.webhook", problem)
        webhooks = (url,)
    return ReviewRequirement(approvers, min_approvals, timeout, webhooks=webhooks)


def _parse_rule(ctx: _Context, index: int, table: Mapping[str, Any]) -> Rule:
    where = f"rule[{index}]"
    name = ctx.name(table, where)
    where = f"{where} ({_quote(name)})"

    condition_items: list[tuple[str, Any]] = []
    for key, value in table.items():
        if key in RULE_KEYS:
            continue
        if isinstance(value, dict) or "." in key:
            condition_items.append((key, value))
            continue
        raise ctx.error(
            f"{where}.{key}",
            f"unknown key; expected {_one_of(RULE_KEYS)} or a condition "
            f'such as "sql.statements"{_did_you_mean(key, RULE_KEYS)}',
        )

    if "effect" not in table:
        raise ctx.error(f"{where}.effect", f"required; expected {_one_of([e.value for e in Effect])}")
    effect_text = ctx.string(table["effect"], f"{where}.effect")
    try:
        effect = Effect(effect_text)
    except ValueError:
        raise ctx.error(
            f"{where}.effect",
            f"expected {_one_of([e.value for e in Effect])}, got {_quote(effect_text)}",
        ) from None

    def patterns(key: str) -> tuple[str, ...]:
        return ctx.strings(table[key], f"{where}.{key}") if key in table else ANY

    groups = ctx.groups(table["groups"], f"{where}.groups") if "groups" in table else ANY
    message = ctx.string(table["message"], f"{where}.message") if "message" in table else ""
    conditions = _parse_conditions(ctx, where, condition_items)
    review = _parse_review(ctx, where, table.get("review"), effect)
    grant = table.get("grant")
    if grant is not None and not isinstance(grant, bool):
        raise ctx.error(
            f"{where}.grant",
            "expected true (only while the identity holds an access grant for the connection) "
            f"or false (only while it holds none), got {_type_name(grant)}",
        )
    return Rule(
        name=name,
        effect=effect,
        groups=groups,
        users=patterns("users"),
        connections=patterns("connections"),
        actions=patterns("actions"),
        conditions=conditions,
        message=message,
        review=review,
        grant=grant,
        source=ctx.file,
        index=index,
    )


DEFAULT_GRANT_DURATION = 3600


def _parse_grant(ctx: _Context, index: int, table: Mapping[str, Any]) -> GrantRule:
    where = f"grant[{index}]"
    name = ctx.name(table, where)
    where = f"{where} ({_quote(name)})"
    ctx.known_keys(table, where, GRANT_KEYS)
    if "connections" not in table:
        raise ctx.error(f"{where}.connections", 'required; expected an array of connection names or globs such as ["prod-*"]')
    if "review" not in table:
        raise ctx.error(f"{where}.review.approvers", 'required for a grant; expected an array such as ["group:dba", "user:alice"]')
    review = _parse_review(ctx, where, table["review"], None)
    assert review is not None
    max_duration = ctx.duration(table, "max_duration", f"{where}.max_duration", DEFAULT_GRANT_DURATION)
    return GrantRule(
        name=name,
        review=evolve(review, rules=(name,)),
        max_duration_seconds=max_duration,
        groups=ctx.groups(table["groups"], f"{where}.groups") if "groups" in table else ANY,
        users=ctx.strings(table["users"], f"{where}.users") if "users" in table else ANY,
        connections=ctx.strings(table["connections"], f"{where}.connections"),
        source=ctx.file,
        index=index,
    )


def _parse_mask(ctx: _Context, index: int, table: Mapping[str, Any]) -> MaskRule:
    where = f"mask[{index}]"
    name = ctx.name(table, where)
    where = f"{where} ({_quote(name)})"
    ctx.known_keys(table, where, MASK_KEYS)
    connections = (
        ctx.strings(table["connections"], f"{where}.connections") if "connections" in table else ANY
    )
    columns: tuple[str, ...] = ()
    if "columns" in table:
        columns = ctx.strings(table["columns"], f"{where}.columns")
        for i, column in enumerate(columns):
            parts = column.split(".")
            if len(parts) != 3 or not all(parts):
                raise ctx.error(
                    f"{where}.columns[{i}]",
                    f'expected a "schema.table.column" pattern, got {_quote(column)}',
                )
    detectors: tuple[str, ...] = ()
    if "detectors" in table:
        detectors = ctx.strings(table["detectors"], f"{where}.detectors")
        for i, detector in enumerate(detectors):
            if detector not in DETECTORS:
                raise ctx.error(
                    f"{where}.detectors[{i}]",
                    f"expected {_one_of(sorted(DETECTORS))}, got {_quote(detector)}",
                )
    patterns: tuple[str, ...] = ()
    if "patterns" in table:
        patterns = ctx.strings(table["patterns"], f"{where}.patterns")
        for i, pattern in enumerate(patterns):
            try:
                compile_pattern(pattern)
            except PatternError as e:
                raise ctx.error(f"{where}.patterns[{i}]", f"expected a regular expression that is safe to run on every value: {e}") from None
    json_paths: tuple[str, ...] = ()
    if "json_paths" in table:
        json_paths = ctx.strings(table["json_paths"], f"{where}.json_paths")
        for i, path in enumerate(json_paths):
            try:
                compile_json_path(path)
            except JsonPathError as e:
                raise ctx.error(
                    f"{where}.json_paths[{i}]",
                    f"expected a JSON path such as \"data.*\" or \"$.spec.containers[*].env[*].value\": {e}",
                ) from None
    kinds: tuple[str, ...] = ()
    if "kinds" in table:
        kinds = ctx.strings(table["kinds"], f"{where}.kinds")
        for i, kind in enumerate(kinds):
            if not _KIND.match(kind):
                raise ctx.error(f"{where}.kinds[{i}]", f'expected a Kubernetes kind such as "Secret", got {_quote(kind)}')
            if not json_paths and kind not in KIND_PATHS:
                raise ctx.error(
                    f"{where}.kinds[{i}]",
                    f"expected json_paths too: which values of a {kind} to mask is known only for "
                    + " and ".join(f'"{k}"' for k in sorted(KIND_PATHS)),
                )
    if not (columns or detectors or patterns or json_paths or kinds):
        raise ctx.error(
            where, "expected columns, detectors, patterns, json_paths, kinds or several: a mask must say what it masks"
        )
    strategy = "redact"
    if "strategy" in table:
        strategy = ctx.string(table["strategy"], f"{where}.strategy")
        if strategy not in MASK_STRATEGIES:
            raise ctx.error(
                f"{where}.strategy",
                f"expected {_one_of(MASK_STRATEGIES)}, got {_quote(strategy)}",
            )
    except_groups: tuple[str, ...] = ()
    if "except_groups" in table:
        except_groups = ctx.groups(table["except_groups"], f"{where}.except_groups")
        if "*" in except_groups:
            raise ctx.error(
                f"{where}.except_groups",
                'expected group names; "*" would exempt everyone (remove the mask instead)',
            )
    groups = ctx.groups(table["groups"], f"{where}.groups") if "groups" in table else ANY
    users = ctx.strings(table["users"], f"{where}.users") if "users" in table else ANY
    return MaskRule(
        name=name,
        connections=connections,
        columns=columns,
        detectors=detectors,
        patterns=patterns,
        json_paths=json_paths,
        kinds=kinds,
        strategy=strategy,
        groups=groups,
        users=users,
        except_groups=except_groups,
        source=ctx.file,
        index=index,
    )


class ParsedPolicyFile(NamedTuple):
    rules: tuple[Rule, ...]
    masks: tuple[MaskRule, ...]
    grants: tuple[GrantRule, ...] = ()


def parse_policy_file(
    data: bytes,
    *,
    file: str,
    conditions: Mapping[str, ConditionSpec] | None = None,
) -> ParsedPolicyFile:
    """
    Validate one policy file's bytes.

    @param file: the path to name in messages and in the rules' C{source}.
    @param conditions: the condition vocabulary (L{CONDITIONS} by default).
    @raise ConfigError: if anything in it is invalid.
    """
    ctx = _Context(file, CONDITIONS if conditions is None else conditions)
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as e:
        raise ctx.error("", f"expected UTF-8 text, got an invalid byte at offset {e.start}") from None
    try:
        document = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise ctx.error("", f"expected valid TOML: {e}") from None
    for key in document:
        if key not in TOP_LEVEL_KEYS:
            raise ctx.error(
                key,
                'unknown key; expected "rule" ([[rule]] tables), "mask" ([[mask]] tables) '
                'or "grant" ([[grant]] tables)' + _did_you_mean(key, TOP_LEVEL_KEYS),
            )
    rules = tuple(_parse_rule(ctx, i, t) for i, t in enumerate(_table_array(ctx, document, "rule")))
    masks = tuple(_parse_mask(ctx, i, t) for i, t in enumerate(_table_array(ctx, document, "mask")))
    grants = tuple(_parse_grant(ctx, i, t) for i, t in enumerate(_table_array(ctx, document, "grant")))
    return ParsedPolicyFile(rules, masks, grants)


def build_policy_set(
    files: Sequence[tuple[str, bytes]],
    *,
    conditions: Mapping[str, ConditionSpec] | None = None,
) -> PolicySet:
    """
    Validate policy files, given as (path, bytes) in load order, into one
    L{PolicySet}.  Rule names, mask names and grant names must be unique
    across files.

    @raise ConfigError: if any file is invalid or a name is defined twice.
    """
    rules: list[Rule] = []
    masks: list[MaskRule] = []
    grants: list[GrantRule] = []
    loaded: list[PolicyFile] = []
    seen: dict[str, dict[str, Any]] = {"rule": {}, "mask": {}, "grant": {}}
    for path, data in files:
        file_rules, file_masks, file_grants = parse_policy_file(data, file=path, conditions=conditions)
        for kind, items in (("rule", file_rules), ("mask", file_masks), ("grant", file_grants)):
            for item in items:
                first = seen[kind].setdefault(item.name, item)
                if first is not item:
                    raise ConfigError(
                        path,
                        f"{kind}[{item.index}] ({_quote(item.name)}).name",
                        f"duplicate {kind} name; expected a name not used elsewhere, "
                        f"already used by {first.source}: {kind}[{first.index}]",
                    )
        rules.extend(file_rules)
        masks.extend(file_masks)
        grants.extend(file_grants)
        loaded.append(
            PolicyFile(path, hashlib.sha256(data).hexdigest(), len(file_rules), len(file_masks), len(file_grants))
        )
    return PolicySet(rules, masks, loaded, grants)


def policy_files(path: str | Path) -> list[Path]:
    """
    The policy files of a folder, in load order: every C{*.toml} file
    directly in it, sorted by name; subfolders and hidden files (editor
    back-ups such as C{.#db.toml}) are not loaded.

    @raise ConfigError: if the folder is missing or holds no policy file.
    """
    folder = Path(path)
    if not folder.exists():
        raise ConfigError(folder, "", "policy folder not found; expected a folder of *.toml files")
    if not folder.is_dir():
        raise ConfigError(folder, "", "expected a folder of *.toml policy files, found a file")
    found = sorted(
        (p for p in folder.iterdir() if p.suffix == ".toml" and not p.name.startswith(".")),
        key=lambda p: p.name,
    )
    found = [p for p in found if p.is_file()]
    if not found:
        raise ConfigError(
            folder,
            "",
            "no *.toml policy files; expected at least one (with no rule, nothing is allowed)",
        )
    return found


def load_policy_dir(
    path: str | Path,
    *,
    conditions: Mapping[str, ConditionSpec] | None = None,
) -> PolicySet:
    """
    Read and validate every policy file of a folder (see L{policy_files}).

    This reads files: call it at start-up or on reload, not per request.

    @raise ConfigError: naming the file, key and what was expected.
    """
    contents = []
    for file in policy_files(path):
        try:
            data = file.read_bytes()
        except OSError as e:
            raise ConfigError(file, "", f"cannot be read: {e.strerror}") from None
        contents.append((str(file), data))
    return build_policy_set(contents, conditions=conditions)
