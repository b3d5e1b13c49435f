"""
Replies masked by detector: a session's C{[[mask]]}s that find values
(C{detectors}, C{patterns}) applied to the strings of RESP values, with
hoopgw's masking engine (L{hoopgw.masking.service.SessionMasks}), which
knows nothing of Redis.  Pure: values in, values out.

What is masked, in a reply and in out-of-band data alike:

  - every string: bulk strings (any bytes: read as UTF-8, other bytes kept
    as they are), simple strings, errors (redis-server quotes arguments in
    them: C{unknown command 'x', with args beginning with: ...}), verbatim
    strings' text, map keys and values, set members, attributes;
  - numbers (integers, doubles, big numbers) read as text: one a detector
    finds (a card number kept as an integer, then C{INCRBY k 0}) becomes a
    bulk string of its masked text -- a type the client did not expect,
    rather than the value;
  - the found part of a string, masked as the mask's C{strategy} says
    inside a text (C{null} redacts: a part cannot be null).

What masking may cost is bounded, as it runs on the reactor thread (every
session of the gateway waits while a reply is scanned): a string longer
than C{max_value} is withheld rather than scanned, and a reply has a budget
(C{max_reply}): the bytes of the strings handed to the detectors, each
counting at least L{VALUE_COST}.  Once a string would go past it, it and
every later string of the reply that would have to be scanned are withheld
(L{BUDGET_WITHHELD}), never passed unscanned; strings no detector could
match (the masks' gate) pass as before.  The reply keeps its shape (an
array of as many items, a map of as many pairs), and the walk holds no more
than the reply itself (one marker object shared by every withheld value).

Masks naming C{columns} or C{json_paths} have nothing to name in Redis and
are not applied here.  Values are masked whole: the reply parser yields a
value only once all of it has arrived, so a value cut across reads is
never seen in pieces (nothing to hold back, unlike a terminal's stream).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from hoopgw_redis.resp import Attributed, BigNumber, Double, Error, Map, Push, Set, SimpleString, Verbatim

if TYPE_CHECKING:
    from hoopgw.frontend import SessionMasks

__all__ = [
    "BUDGET_WITHHELD", "DEFAULT_MAX_REPLY", "DEFAULT_MAX_VALUE", "VALUE_COST", "WITHHELD", "ReplyMasker", "withheld",
]

#: The longest string masked (bytes); see L{ReplyMasker}.
DEFAULT_MAX_VALUE = 1 << 20
#: The bytes masked in one reply, at most (its budget); see L{ReplyMasker}.
DEFAULT_MAX_REPLY = 4 << 20
#: What one string scanned costs of the budget at least (bytes): each scan
#: has a cost of its own, whatever the string's length, so a reply of
#: millions of short strings runs out of budget too.
VALUE_COST = 16
#: The name a withheld value is counted under in C{action.end}'s C{masked}.
WITHHELD = "hoopgw:withheld"
#: What the client reads in place of a value past the reply's budget (one
#: object, shared: a reply withheld in full holds no copy per value).
BUDGET_WITHHELD = b"[withheld by hoopgw]"

# A value as the client may see it, and the values masked in it per mask name (None: none).
Masked = tuple[Any, Mapping[str, int] | None]


def withheld(size: int) -> bytes:
    """What the client reads in place of a value too long to mask."""
    return b"[withheld by hoopgw: a %d-byte value is too long to mask]" % size

Counts = dict[tuple[str, str], int]


class ReplyMasker:
    """
    C{masker(value, keep=0)}: C{(shown, masked)}, the value as the client
    may see it (the same object when nothing is found) and the values
    masked per mask name (C{None}: none), counted in the metrics once.
    C{keep} leading items of an array or push are passed as they are (a
    pub/sub message's kind and the channel the client subscribed to).
    C{masker.each(values)}: the same for the values of one reply (an
    C{EXEC}'s results), one C{(shown, masked)} each, under one budget.

    Masking runs on the reactor thread, at seconds a megabyte for the
    worst text (digit groups), so what a reply may cost is bounded (see
    the module's docstring).  A string longer than C{max_value} that a
    detector could match is not scanned: it is replaced by L{withheld}'s
    marker.  Past the reply's budget (C{max_reply} bytes scanned, each
    string counting at least L{VALUE_COST}), every string that would be
    scanned is replaced by L{BUDGET_WITHHELD}.  Both are counted under
    L{WITHHELD}.

    @param masks: the session's masks now (they follow policy reloads).
    """

    def __init__(
        self,
        masks: Callable[[], SessionMasks | None],
        *,
        max_value: int = DEFAULT_MAX_VALUE,
        max_reply: int = DEFAULT_MAX_REPLY,
    ) -> None:
        self._masks = masks
        self.max_value = max_value
        self.max_reply = max_reply

    def __call__(self, value: Any, keep: int = 0) -> Masked:
        masks = self._masks()
        if masks is None or not masks.finders:
            return value, None
        return self._one(_Walk(masks, self.max_value, self.max_reply), masks, value, keep)

    def each(self, values: Sequence[Any]) -> list[Masked]:
        """The values of one reply, masked under one budget: C{(shown, masked)} each."""
        masks = self._masks()
        if masks is None or not masks.finders:
            return [(value, None) for value in values]
        walk = _Walk(masks, self.max_value, self.max_reply)
        return [self._one(walk, masks, value, 0) for value in values]

    @staticmethod
    def _one(walk: _Walk, masks: SessionMasks, value: Any, keep: int) -> Masked:
        counts: Counts = {}
        walk.counts = counts
        walk.withheld = 0
        if keep and type(value) in (tuple, Push):
            items = value.items if type(value) is Push else value
            rest = walk.items(items[keep:])
            shown = value
            if rest is not None:
                joined = (*items[:keep], *rest)
                shown = Push(joined) if type(value) is Push else joined
        else:
            shown = walk.value(value)
        totals = masks.settle(counts) if counts else None
        if walk.withheld:
            totals = dict(totals or {})
            totals[WITHHELD] = totals.get(WITHHELD, 0) + walk.withheld
        return shown, totals


class _Walk:
    """
    One reply's walk: C{value()} returns the same object when nothing in it
    is found.  C{budget}: what may still be scanned (bytes); C{counts} and
    C{withheld}: what the value walked now had masked and withheld.
    """

    __slots__ = ("masks", "counts", "passes", "shortest", "max_value", "withheld", "budget")

    def __init__(self, masks: SessionMasks, max_value: int = DEFAULT_MAX_VALUE,
                 max_reply: int = DEFAULT_MAX_REPLY) -> None:
        self.masks = masks
        self.counts: Counts = {}
        self.max_value = max_value
        self.budget = max_reply
        self.withheld = 0
        self.passes = masks.gate.passes
        self.shortest = masks.gate.shortest

    def bytes(self, data: bytes) -> bytes:
        # The gate: a value no detector could match is neither decoded nor searched.
        size = len(data)
        if size < self.shortest or not self.passes(data):
            return data
        budget = self.budget
        if budget < 0:  # spent: every later value that would be scanned is withheld
            self.withheld += 1
            return BUDGET_WITHHELD
        if size > self.max_value:
            self.withheld += 1
            return withheld(size)
        cost = size if size > VALUE_COST else VALUE_COST
        if cost > budget:
            self.budget = -1
            self.withheld += 1
            return BUDGET_WITHHELD
        self.budget = budget - cost
        text = data.decode("utf-8", "surrogateescape")
        masked = self.masks.client_text(text, self.counts)
        return data if masked is text else masked.encode("utf-8", "surrogateescape")

    def number(self, value: Any, text: str) -> Any:
        data = text.encode("ascii")
        masked = self.bytes(data)
        return value if masked is data else masked

    def items(self, items: tuple[Any, ...]) -> tuple[Any, ...] | None:
        """The items masked, or C{None} if none changed."""
        out = None
        for index, item in enumerate(items):
            shown = self.value(item)
            if shown is not item:
                if out is None:
                    out = list(items[:index])
                out.append(shown)
            elif out is not None:
                out.append(item)
        return None if out is None else tuple(out)

    def pairs(self, pairs: tuple[tuple[Any, Any], ...]) -> tuple[tuple[Any, Any], ...] | None:
        flat = self.items(tuple(x for pair in pairs for x in pair))
        return None if flat is None else tuple(zip(flat[::2], flat[1::2]))

    def value(self, value: Any) -> Any:
        kind = type(value)
        if kind is bytes:
            return self.bytes(value)
        if kind is tuple:
            items = self.items(value)
            return value if items is None else items
        if kind is int:  # (bool is its own type: not a number here)
            return self.number(value, str(value))
        if kind is SimpleString:
            data = self.bytes(value.value)
            return value if data is value.value else SimpleString(data)
        if kind is Error:
            data = self.bytes(value.message)
            return value if data is value.message else Error(data, value.bulk)
        if kind is Verbatim:
            data = self.bytes(value.text)
            return value if data is value.text else Verbatim(value.format, data)
        if kind is Double:
            return self.number(value, value.text.decode("ascii") if value.text else repr(value.value))
        if kind is BigNumber:
            return self.number(value, str(value.value))
        if kind is Map:
            pairs = self.pairs(value.pairs)
            return value if pairs is None else Map(pairs)
        if kind is Set or kind is Push:
            items = self.items(value.items)
            return value if items is None else kind(items)
        if kind is Attributed:
            attributes = self.pairs(value.attributes)
            inner = self.value(value.value)
            if attributes is None and inner is value.value:
                return value
            return Attributed(value.attributes if attributes is None else attributes, inner)
        return value  # bool, the nulls
