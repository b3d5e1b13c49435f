"""
The masks in force for one session, from the policy's C{[[mask]]} tables:
what the client may see, and what the audit trail may store.  No protocol
knowledge: a front end asks which mask a column's origin falls under
(L{SessionMasks.column}) and has texts and values masked; the session
masks what it records (L{SessionMasks.trail_text}).

Two sets per session:

  - C{client}: the masks that apply to the identity on the connection
    (C{connections}, C{groups}, C{users}, minus C{except_groups});
  - C{trail}: every mask of the connection that finds values (detectors or
    patterns), whoever the identity: C{except_groups} changes what the
    client sees, never what is stored.

Masks follow policy reloads: a session's masks are rebuilt the first time
they are asked for under a new policy.
"""

from __future__ import annotations

import base64
import binascii
import fnmatch
import json
import re
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import Any

from attrs import define, field, frozen

from hoopgw.interfaces import IMetrics
from hoopgw.masking.detectors import Gate, compile_pattern, find
from hoopgw.masking.engine import REDACTED, Masker
from hoopgw.masking.jsonbody import KIND_PATHS, JsonRules
from hoopgw.masking.jsonpath import JsonPath, compile_json_path
from hoopgw.model import Connection, Identity

__all__ = ["ActiveMask", "MaskingService", "SessionMasks", "element_spans", "element_value"]


@frozen
class ActiveMask:
    """
    One C{[[mask]]} ready to apply: C{origin} matches C{schema.table.column}
    names (or is C{None}); C{paths} are JSON paths from a body's root,
    C{kinds} JSON paths from the objects of each kind.
    """

    name: str
    masker: Masker
    origin: Callable[[str], object] | None
    paths: tuple[JsonPath, ...] = ()
    kinds: Mapping[str, tuple[JsonPath, ...]] = field(factory=dict)

    @property
    def finds_values(self) -> bool:
        return bool(self.masker.detectors)

    @property
    def kind_paths(self) -> tuple[JsonPath, ...]:
        """The paths of all its kinds (an object whose kind is not known yet)."""
        return tuple(dict.fromkeys(p for paths in self.kinds.values() for p in paths))


def _json_paths(rule: Any) -> tuple[tuple[JsonPath, ...], dict[str, tuple[JsonPath, ...]]]:
    """A mask's paths from the root, and per kind (L{hoopgw.masking.jsonbody})."""
    paths = tuple(compile_json_path(p) for p in rule.json_paths)
    if not rule.kinds:
        return paths, {}
    kinds = {kind: paths or tuple(compile_json_path(p) for p in KIND_PATHS[kind]) for kind in rule.kinds}
    return (), kinds


def _origin_matcher(columns: Iterable[str]) -> Callable[[str], object] | None:
    columns = tuple(columns)
    if not columns:
        return None
    return re.compile("|".join(fnmatch.translate(c) for c in columns)).match


# The elements of a record's, an array's or a JSON value's text (a quoted one
# with its quotes): each may be a whole value to a detector (nine bare digits
# are an SSN only as one), also spelt with escapes (JSON's \u0036).
_ELEMENT = re.compile(r'"(?:[^"\\]|\\.|"")*"|[^\s{}()\[\],:"][^{}()\[\],:"]*', re.DOTALL)
_UNESCAPE = re.compile(r'\\(.)|""', re.DOTALL)


def element_value(token: str) -> str:
    """An element's value (L{element_spans}): a quoted one unquoted, its escapes undone."""
    if not token.startswith('"'):
        return token
    if "\\" in token:
        try:
            value = json.loads(token)  # JSON's escapes (\u0036)
        except ValueError:
            pass
        else:
            if isinstance(value, str):
                # A lone surrogate escape (\ud800) has no UTF-8 form, and the
                # detectors' gate encodes: read as U+FFFD (the same length).
                return value.encode("utf-16", "surrogatepass").decode("utf-16", "replace")
    return _UNESCAPE.sub(lambda m: m.group(1) or '"', token[1:-1])


def element_spans(text: str, shortest: int = 0) -> Iterator[tuple[int, int, str]]:
    """
    The elements of C{text} (L{_ELEMENT}), in order, as C{(start, end,
    token)} (its value: L{element_value}); none spelt shorter than
    C{shortest}.
    """
    for m in _ELEMENT.finditer(text):
        start, end = m.span()
        if end - start >= shortest:
            yield start, end, m.group()


# What separates the words of what a user sends (a command line, a statement,
# typed input): each a whole value to the detectors of whole values.  Not a
# URL's "/", "?", "=", "&": a request's resourceVersion must stay readable.
_WORDS = str.maketrans({c: "\n" for c in " \t\r\f\v\"'()[]{},:;|<>`$"})

def _word_spans(masks: Iterable[ActiveMask], text: str) -> Iterator[tuple[int, int, ActiveMask, str]]:
    """Where the detectors of whole values of C{masks} find one as a word of C{text} (L{_WORDS} apart)."""
    words: str | None = None
    for mask in masks:
        whole = [d for d in mask.masker.detectors if d.whole and (d.run is None or d.run.search(text))]
        if whole:
            words = text.translate(_WORDS) if words is None else words
            for span in find(words, whole):
                yield span.start, span.end, mask, span.detector


# Values masked, by (mask name, what found them: a detector, a pattern or "column").
Counts = dict[tuple[str, str], int]
# Spans (start, end) of a text whose value is spelt otherwise, with the value.
Literals = Callable[[str], Iterable[tuple[int, int, str]]]


@define(eq=False)
class SessionMasks:
    """The masks of one session (module docstring)."""

    client: tuple[ActiveMask, ...]
    trail: tuple[ActiveMask, ...]
    metrics: IMetrics | None = None
    # The paths of every mask of the connection (for the trail: a request body).
    trail_json: JsonRules | None = None
    by_origin: tuple[ActiveMask, ...] = field(init=False)  # client masks naming columns
    finders: tuple[ActiveMask, ...] = field(init=False)  # client masks finding values
    gate: Gate = field(init=False)  # whether a client finder could match a value at all
    client_json: JsonRules | None = field(init=False)  # client masks naming JSON paths

    def __attrs_post_init__(self) -> None:
        self.by_origin = tuple(m for m in self.client if m.origin is not None)
        self.finders = tuple(m for m in self.client if m.finds_values)
        self.gate = Gate(d for m in self.finders for d in m.masker.detectors)
        with_paths = tuple(m for m in self.client if m.paths or m.kinds)
        self.client_json = JsonRules(with_paths) if with_paths else None

    @property
    def masks_results(self) -> bool:
        """Whether anything the client receives may have to be masked."""
        return bool(self.client)

    @property
    def masks_bodies(self) -> bool:
        """Whether a body the client receives may have to be masked (JSON paths or detectors)."""
        return bool(self.finders) or self.client_json is not None

    def column(self, names: Iterable[str]) -> ActiveMask | None:
        """The first client mask (in policy order) naming any of a column's origins (C{schema.table.column})."""
        names = tuple(names)
        for mask in self.by_origin:
            origin = mask.origin
            for name in names:
                if origin is not None and origin(name):  # (by_origin: masks with an origin)
                    return mask
        return None

    def value(self, mask: ActiveMask, value: str, counts: Counts) -> str | None:
        """A whole value masked by C{mask} (a column masked by its origin)."""
        key = (mask.name, "column")
        counts[key] = counts.get(key, 0) + 1
        return mask.masker.value(value)

    def client_text(self, text: str, counts: Counts) -> str:
        """C{text} with what the client's masks find masked (the same object if nothing is)."""
        return self._text(self.finders, text, counts)

    def trail_text(self, text: str, counts: Counts, literals: Literals | None = None) -> str:
        """
        C{text} as the trail may store it.  C{literals} (a front end's:
        SQL constants) gives spans of C{text} with their value (ordered by
        start; one inside a span already hidden is passed over), each
        searched as a whole value: a span spelt as its value is stored
        masked in place, one whose value is spelt otherwise (escapes,
        continuations) as C{[redacted]}.  Each word of the text is a whole
        value too (L{_whole_words}).
        """
        if literals is not None and self.trail:
            hidden: list[tuple[int, int, str]] = []
            for start, end, value in literals(text):
                if hidden and start < hidden[-1][1]:
                    continue  # inside (or across) a span already hidden
                masked = self._text(self.trail, value, counts)
                if masked is not value:
                    hidden.append((start, end, masked if text[start:end] == value else REDACTED))
            for start, end, masked in reversed(hidden):
                text = text[:start] + masked + text[end:]
        return self._whole_words(self._text(self.trail, text, counts), counts)

    def _whole_words(self, text: str, counts: Counts) -> str:
        """
        C{text} (what a user sent: a command line, a request, typed input)
        with the values the trail's detectors of whole values find as a
        word of their own masked (C{grep 536228726 file}).
        """
        found = list(_word_spans(self.trail, text))
        if not found:
            return text
        found.sort(key=lambda f: (f[0], -f[1]))
        out, at = [], 0
        for start, end, mask, detector in found:
            if start < at:
                continue
            key = (mask.name, detector)
            counts[key] = counts.get(key, 0) + 1
            out.append(text[at:start])
            out.append(mask.masker.text_value(text[start:end]))
            at = end
        out.append(text[at:])
        return "".join(out)

    @staticmethod
    def _text(masks: tuple[ActiveMask, ...], text: str, counts: Counts) -> str:
        for mask in masks:
            text, spans = mask.masker.text(text)
            for span in spans:
                key = (mask.name, span.detector)
                counts[key] = counts.get(key, 0) + 1
        return text

    def replacements(
        self, text: str, counts: Counts, *, trail: bool = False, typed: bool = False
    ) -> list[tuple[int, int, str]]:
        """
        Where the client's (or, with C{trail}, the trail's) masks find
        values in C{text}, and what each becomes: C{(start, end,
        replacement)}, ordered, not overlapping (L{hoopgw.masking.stream}).
        C{typed}: what a user types, whose words are whole values too.
        """
        found: list[tuple[int, int, str, str]] = []
        masks = self.trail if trail else self.finders
        for mask in masks:
            for span in find(text, mask.masker.detectors):
                found.append((span.start, span.end, mask.name, span.detector))
        if typed:
            found.extend((start, end, mask.name, detector) for start, end, mask, detector in _word_spans(masks, text))
        if not found:
            return []
        found.sort(key=lambda f: (f[0], -f[1]))
        out: list[tuple[int, int, str]] = []
        end = -1
        for start, stop, name, detector in found:
            if start < end:
                continue
            mask = next(m for m in (self.trail if trail else self.finders) if m.name == name)
            key = (name, detector)
            counts[key] = counts.get(key, 0) + 1
            out.append((start, stop, mask.masker.text_value(text[start:stop])))
            end = stop
        return out

    def finds_keys(self, *, trail: bool = False) -> bool:
        """Whether the client's (or the trail's) masks look for private keys (whose blocks span lines)."""
        return any(d.name == "private_key" for m in (self.trail if trail else self.finders) for d in m.masker.detectors)

    def trail_value(self, value: Any, counts: Counts) -> Any:
        """
        A JSON-like value (an action's details) with every string as the
        trail may store it; a binary value (C{{"base64": ...}}, a Bind
        parameter) in which something is found, as text or as an integer,
        becomes C{"[redacted]"}.
        """
        if isinstance(value, str):
            return self.trail_text(value, counts)
        if isinstance(value, dict):
            if len(value) == 1 and isinstance(value.get("base64"), str):
                return self._trail_binary(value, counts)
            return {k: self.trail_value(v, counts) for k, v in value.items()}
        if isinstance(value, (list, tuple)):
            return [self.trail_value(v, counts) for v in value]
        return value

    def _trail_binary(self, value: dict[str, str], counts: Counts) -> Any:
        try:
            raw = base64.b64decode(value["base64"], validate=True)
        except (binascii.Error, ValueError):
            return value
        readings = [raw.decode("utf-8", "replace")]
        if len(raw) in (2, 4, 8):
            readings.append(str(int.from_bytes(raw, "big", signed=True)))
        for text in readings:
            if self.trail_text(text, counts) is not text:
                return REDACTED
        return value

    def settle(self, counts: Counts) -> dict[str, int]:
        """
        Count C{counts} in the metrics, once; the numbers per mask (for a
        record: how many values each mask masked, never which).
        """
        metrics = self.metrics
        totals: dict[str, int] = {}
        for (mask, detector), count in counts.items():
            totals[mask] = totals.get(mask, 0) + count
            if metrics is not None:
                metrics.values_masked(mask, detector, count)
        return totals


@define(eq=False)
class MaskingService:
    """
    Builds each session's L{SessionMasks} from the policy in effect.

    @ivar policy: has C{policy_set} (a L{hoopgw.policy.rules.PolicySet}),
        replaced on reload.
    @ivar key: the gateway's hash key (L{hoopgw.masking.engine.load_key}).
    """

    policy: Any
    key: bytes
    metrics: IMetrics | None = None
    _policy_set: Any = field(default=None, init=False)
    _compiled: dict[str, ActiveMask] = field(factory=dict, init=False)  # by mask name, for that policy

    @property
    def version(self) -> object:
        """Changes when the policy is reloaded (a session's masks are rebuilt then)."""
        return self.policy.policy_set

    def _active(self, rule: Any) -> ActiveMask:
        active = self._compiled.get(rule.name)
        if active is None:
            patterns = tuple(compile_pattern(p) for p in rule.patterns)
            masker = Masker.build(rule.detectors, rule.strategy, self.key, patterns)
            paths, kinds = _json_paths(rule)
            active = self._compiled[rule.name] = ActiveMask(
                rule.name, masker, _origin_matcher(rule.columns), paths, kinds
            )
        return active

    def for_session(self, identity: Identity, connection: Connection) -> SessionMasks | None:
        """The masks of a session of C{identity} on C{connection} (C{None}: nothing to mask)."""
        policy_set = self.policy.policy_set
        if policy_set is not self._policy_set:
            self._policy_set, self._compiled = policy_set, {}
        client = tuple(self._active(m) for m in policy_set.masks if m.applies_to(connection.name, identity))
        trail = tuple(
            self._active(m)
            for m in policy_set.masks
            if m.covers(connection.name) and (m.detectors or m.patterns)
        )
        trail_json = tuple(
            self._active(m) for m in policy_set.masks if m.covers(connection.name) and (m.json_paths or m.kinds)
        )
        if not (client or trail or trail_json):
            return None
        return SessionMasks(client, trail, self.metrics, JsonRules(trail_json) if trail_json else None)
