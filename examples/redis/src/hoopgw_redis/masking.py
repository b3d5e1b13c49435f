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

Masks naming C{columns} or C{json_paths} have nothing to name in Redis and
are not applied here.  Values are masked whole: the reply parser yields a
value only once all of it has arrived, so a value cut across reads is
never seen in pieces (nothing to hold back, unlike a terminal's stream).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

from hoopgw_redis.resp import Attributed, BigNumber, Double, Error, Map, Push, Set, SimpleString, Verbatim

if TYPE_CHECKING:
    from hoopgw.frontend import SessionMasks

__all__ = ["DEFAULT_MAX_VALUE", "WITHHELD", "ReplyMasker", "withheld"]

#: The longest string masked (bytes); see L{ReplyMasker}.
DEFAULT_MAX_VALUE = 1 << 20
#: The name a withheld value is counted under in C{action.end}'s C{masked}.
WITHHELD = "hoopgw:withheld"


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

    A string longer than C{max_value} that a detector could match is not
    scanned: it is replaced by L{withheld}'s marker and counted under
    L{WITHHELD}.  Masking runs on the reactor thread, at seconds a
    megabyte for the worst text (digit groups): scanning such a value
    would stall every session of the gateway.

    @param masks: the session's masks now (they follow policy reloads).
    """

    def __init__(self, masks: Callable[[], SessionMasks | None], *, max_value: int = DEFAULT_MAX_VALUE) -> None:
        self._masks = masks
        self.max_value = max_value

    def __call__(self, value: Any, keep: int = 0) -> tuple[Any, Mapping[str, int] | None]:
        masks = self._masks()
        if masks is None or not masks.finders:
            return value, None
        counts: Counts = {}
        walk = _Walk(masks, counts, self.max_value)
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
    """One value's walk: C{value()} returns the same object when nothing in it is found."""

    __slots__ = ("masks", "counts", "passes", "shortest", "max_value", "withheld")

    def __init__(self, masks: SessionMasks, counts: Counts, max_value: int = DEFAULT_MAX_VALUE) -> None:
        self.masks = masks
        self.counts = counts
        self.max_value = max_value
        self.withheld = 0
        self.passes = masks.gate.passes
        self.shortest = masks.gate.shortest

    def bytes(self, data: bytes) -> bytes:
        # The gate: a value no detector could match is neither decoded nor searched.
        if len(data) < self.shortest or not self.passes(data):
            return data
        if len(data) > self.max_value:
            self.withheld += 1
            return withheld(len(data))
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
