"""
Masking JSON documents by where a value is (a mask's C{json_paths}, and
its C{kinds}) and by what it is (the detectors), as a body streams past:
L{JsonStreamMasker} passes every byte it does not mask through unchanged,
holds back no more than the token it is in the middle of, and reads any
number of documents one after the other (a watch stream's events).
L{JsonRules.mask_document} does the same to a parsed document (what the
audit trail stores of a request body).

Paths are followed from the document's root -- or, for a mask that names
C{kinds}, from each API object of those kinds, wherever it appears:

  - the document itself (C{GET .../secrets/x});
  - each element of its C{items} (a C{SecretList}: its items carry no
    C{kind}, the list's own names it);
  - the C{object} of a watch event, and of each of a Table's C{rows}.

An object's C{kind} is read from its own C{kind} member; the API server
writes it first.  A value that comes before its object's C{kind} (a custom
resource whose members are sorted, with a member before C{kind}) is masked
as though the object were of every kind a mask names: more is masked, not
less.

In an object a kind mask applies to, the copy C{kubectl apply} keeps in the
C{kubectl.kubernetes.io/last-applied-configuration} annotation is parsed
and masked the same way (replaced whole if it does not parse).  A masked
string becomes its mask's strategy's text; where the API defines a string
as base64 (a Secret's C{data}, a ConfigMap's C{binaryData}) that text,
base64-encoded, so typed clients still decode the object.  Other masked
values (numbers, booleans) become C{null}.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, Protocol

from hoopgw.masking.engine import REDACTED as REDACTED_TEXT
from hoopgw.masking.jsonpath import ANY_INDEX, JsonPath, StepKey, step

if TYPE_CHECKING:
    from hoopgw.masking.service import Counts, SessionMasks

__all__ = ["BASE64_FIELDS", "JsonBodyError", "JsonRules", "JsonStreamMasker", "KIND_PATHS", "LAST_APPLIED"]

LAST_APPLIED = "kubectl.kubernetes.io/last-applied-configuration"
# Members whose values the Kubernetes API defines as base64.
BASE64_FIELDS = {"Secret": "data", "ConfigMap": "binaryData"}
# What a mask naming these kinds without json_paths masks.
KIND_PATHS = {"Secret": ("data.*", "stringData.*"), "ConfigMap": ("data.*", "binaryData.*")}
# A string longer than this is not waited for: the body is refused.
MAX_TOKEN = 16 * 1024 * 1024

(_NONE, _DOC, _ITEMS, _ITEM, _OBJECT, _ROWS, _ROW, _META, _ANNOTATIONS, _LAST_APPLIED, _OWNERS, _OWNER,
 _EXEMPT) = range(13)
_ROOTS = (_DOC, _ITEM, _OBJECT)  # where an object is an API object
_INDEX_TOKEN = re.compile(r"[+-]?[0-9]+\Z", re.ASCII)
_PARTIAL = frozenset({"PartialObjectMetadata"})  # also the items of a PartialObjectMetadataList
# Metadata the API server writes, which clients send back (a watch's
# resourceVersion): not searched by the detectors (a 9-digit resourceVersion
# is an SSN to them).  Paths still apply.
_SYSTEM_METADATA = frozenset({
    "resourceVersion", "uid", "generation", "creationTimestamp", "deletionTimestamp", "continue",
    "remainingItemCount", "deletionGracePeriodSeconds",
})
# Deeper than this is not followed: the body is refused (no API object is).
MAX_DEPTH = 512


class JsonBodyError(ValueError):
    """The body is not JSON the masker can follow (what was expected, where)."""


class ValueMasker(Protocol):
    """What a path mask's C{masker} does (L{hoopgw.masking.engine.Masker}'s shape)."""

    @property
    def strategy(self) -> str: ...

    def value(self, value: str, /) -> str | None: ...

    def text_value(self, value: str, /) -> str: ...


class PathMask(Protocol):
    """
    What L{JsonRules} reads of a mask (L{hoopgw.masking.service.ActiveMask}'s
    shape; a front end may add masks of its own).
    """

    @property
    def name(self) -> str: ...

    @property
    def masker(self) -> ValueMasker: ...

    @property
    def paths(self) -> tuple[JsonPath, ...]: ...

    @property
    def kinds(self) -> Mapping[str, tuple[JsonPath, ...]]: ...

    @property
    def kind_paths(self) -> tuple[JsonPath, ...]: ...


# A path on its way: (the index of its mask, the path, how far it has come).
_State = tuple[int, JsonPath, int]


class _Pos:
    """
    Where a value is: the paths still on their way (C{(mask, path, at)}),
    the mask that covers the value whole, if any, and what the value is
    to the API (its role; an API object's kind).
    """

    __slots__ = ("b64", "covered", "kind", "kinded", "origin", "role", "root", "states")

    def __init__(
        self, states: tuple[_State, ...] = (), covered: PathMask | None = None, b64: bool = False, role: int = _NONE,
        kind: str | None = None, root: bool = False, kinded: bool = False, origin: "_Pos | None" = None,
    ) -> None:
        self.states = states
        self.covered = covered
        self.b64 = b64
        self.role = role
        self.kind = kind
        self.root = root
        self.kinded = kinded  # (metadata, annotations) the object's last-applied copy may hold masked values
        self.origin = origin  # (metadata, annotations, the copy) the object they belong to


_NOTHING = _Pos()


class JsonRules:
    """
    The paths of some masks (L{hoopgw.masking.service.ActiveMask}: C{.paths}
    from the root, C{.kinds} from objects of a kind, C{.masker}, C{.name}),
    in policy order: where a value is under two, the first masks it.
    """

    def __init__(self, masks: Sequence[PathMask]) -> None:
        self.masks = tuple(masks)
        self._rooted = tuple((i, path, 0) for i, m in enumerate(self.masks) for path in m.paths)
        self._any_kinds = any(m.kinds for m in self.masks)

    def document(self) -> _Pos:
        return _Pos(self._rooted, role=_DOC)

    def root(self, pos: _Pos, kind: str | None) -> _Pos:
        """C{pos} (a place where API objects are) holding an object of C{kind} (C{None}: not known yet)."""
        if kind in _PARTIAL:
            kind = None  # any kind's metadata (a Table's rows): its annotations may hold any kind's copy
        if not self._any_kinds:
            return pos if pos.root else _Pos(pos.states, pos.covered, pos.b64, pos.role, kind, True)
        states = list(pos.states)
        kinded = False
        for index, mask in enumerate(self.masks):
            if mask.kinds:
                paths = mask.kinds.get(kind, ()) if kind is not None else mask.kind_paths
                states.extend((index, path, 0) for path in paths)
                kinded = kinded or bool(paths)
        return _Pos(tuple(states), pos.covered, pos.b64, pos.role, kind, True, kinded)

    def child(self, pos: _Pos, key: StepKey) -> _Pos:
        """Where the member C{key} (or the element at that index) of the value at C{pos} is."""
        if pos is _NOTHING:
            return _NOTHING
        if pos.covered is not None:
            return pos
        covered: int | None = None
        states: list[_State] = []
        for entry in pos.states:
            index, path, at = entry
            for reached in step(path, at, key):
                if reached == len(path):
                    if covered is None or index < covered:
                        covered = index
                else:
                    states.append((index, path, reached))
        b64 = pos.b64
        role, kinded = _NONE, False
        kind: str | None = None
        origin: _Pos | None = None
        if pos.root:
            if key == "items":
                role = _ITEMS
                if pos.kind is not None and pos.kind.endswith("List"):
                    kind = pos.kind[:-4] or None
            elif key == "object":
                role = _OBJECT
            elif key == "rows":
                role = _ROWS
            elif key == "metadata":
                # The object's last-applied copy is masked as the object is (its paths, from here).
                role, kind, kinded, origin = _META, pos.kind, bool(pos.states), pos
            elif pos.kind is not None and BASE64_FIELDS.get(pos.kind) == key:
                b64 = True
        elif pos.role == _ITEMS or (pos.role == _DOC and type(key) is int):
            role, kind = _ITEM, pos.kind  # (an array of objects at the root: as a list's items)
        elif pos.role == _ROWS:
            role = _ROW
        elif pos.role == _ROW and key == "object":
            role = _OBJECT
        elif pos.role == _META:
            if key in _SYSTEM_METADATA:
                role = _EXEMPT
            elif key == "annotations" and pos.kinded:
                role, kind, kinded, origin = _ANNOTATIONS, pos.kind, True, pos.origin
            elif key == "ownerReferences":
                role = _OWNERS
        elif pos.role == _ANNOTATIONS and key == LAST_APPLIED:
            role, kind, origin = _LAST_APPLIED, pos.kind, pos.origin
        elif pos.role == _OWNERS:
            role = _OWNER
        elif pos.role == _OWNER and key == "uid":
            role = _EXEMPT
        if covered is not None:
            return _Pos((), self.masks[covered], b64)
        if not states and role == _NONE and not b64:
            return _NOTHING
        # (Paths with several ".." reach one place in several ways: once is enough.)
        return _Pos(tuple(dict.fromkeys(states)), None, b64, role, kind, False, kinded, origin)

    def reaches(self, pointer: Sequence[str]) -> PathMask | None:
        """
        The first mask by which the value at this JSON pointer (its
        unescaped reference tokens) of an object of any kind holds
        something masked -- a masked value, a value with masked values
        under it, or a last-applied copy -- or C{None}.  (A JSON patch that
        copies, moves or tests it reads what the masks hide.)  A token
        that may be read as an index (C{3}, C{+0}, C{-1}) stands for every
        index.
        """
        positions = [self.root(self.document(), None)]
        for token in pointer:
            following = []
            keys: tuple[StepKey, ...] = (token, ANY_INDEX) if _INDEX_TOKEN.match(token) else (token,)
            for pos in positions:
                for key in keys:
                    child = self.child(pos, key)
                    if child.covered is not None:
                        return child.covered
                    if child is not _NOTHING and child not in following:
                        following.append(child)
            if not following:
                return None
            positions = following[:64]  # (distinct enough: each step's states are de-duplicated)
        for p in positions:
            if p.states:
                return self.masks[p.states[0][0]]
            if (p.kinded and p.role in (_META, _ANNOTATIONS)) or p.role == _LAST_APPLIED:
                origin = p.origin
                if origin is not None and origin.states:
                    return self.masks[origin.states[0][0]]
        return None

    # -- what a value becomes ------------------------------------------------------

    def masked_string(self, pos: _Pos, text: str, counts: Counts) -> str | None:
        """A string at a covered position, masked (C{None}: null)."""
        mask = pos.covered
        assert mask is not None
        key = (mask.name, "path")
        counts[key] = counts.get(key, 0) + 1
        if not pos.b64:
            return mask.masker.value(text)
        # The API's base64: the value it stands for is masked (partial keeps
        # its last characters, hash matches the same value elsewhere), and
        # written back in base64.
        try:
            raw = base64.b64decode(text, validate=True)
        except (ValueError, binascii.Error):
            raw = None
        if raw is not None:
            try:
                text = raw.decode("utf-8")
                binary = not text.replace("\n", "").replace("\t", "").replace("\r", "").isprintable()
            except UnicodeDecodeError:
                text, binary = raw.decode("latin-1"), True
            if binary and mask.masker.strategy == "partial":
                # Partial keeps what is not a letter or digit: of binary bytes, most of them.
                return base64.b64encode(REDACTED_TEXT.encode()).decode("ascii")
        value = mask.masker.value(text)
        if value is None:
            return None
        return base64.b64encode(value.encode("utf-8", "surrogateescape")).decode("ascii")

    def count_other(self, pos: _Pos, counts: Counts) -> None:
        assert pos.covered is not None
        key = (pos.covered.name, "path")
        counts[key] = counts.get(key, 0) + 1

    def last_applied(self, pos: _Pos, text: str, counts: Counts) -> str:
        """
        The last-applied annotation of an object kind masks apply to, masked
        as that object is (whatever kind the copy claims to be).
        """
        try:
            document = json.loads(text)
            if isinstance(document, dict):
                origin = pos.origin
                assert origin is not None
                copy = _Pos(origin.states, None, False, _NONE, origin.kind, True, origin.kinded)
                masked = self._tree(document, copy, counts)
                return json.dumps(masked, separators=(",", ":"), ensure_ascii=False)
        except (ValueError, RecursionError):
            pass
        # Not something the gateway can follow: nothing of it is kept.
        mask = self.masks[pos.origin.states[0][0]] if pos.origin is not None and pos.origin.states else self.masks[0]
        key = (mask.name, "path")
        counts[key] = counts.get(key, 0) + 1
        return mask.masker.text_value(text)

    # -- a parsed document -----------------------------------------------------------

    def mask_document(self, document: Any, counts: Counts, *, as_streamed: bool = False) -> Any:
        """
        C{document} (parsed JSON) with what these masks name masked; a new
        value, C{document} untouched.  An object's kind is its C{kind}
        member wherever it is (kubectl sorts members: C{data} comes first),
        or, C{as_streamed}, from that member on, as L{JsonStreamMasker}
        reads it.  L{JsonBodyError} if it is nested deeper than
        L{MAX_DEPTH}.
        """
        try:
            return self._tree(document, self.document(), counts, as_streamed)
        except RecursionError:
            raise JsonBodyError(f"nested deeper than the gateway follows ({MAX_DEPTH})") from None

    def _tree(self, value: Any, pos: _Pos, counts: Counts, as_streamed: bool = False) -> Any:
        if isinstance(value, dict):
            if not (pos.role in _ROOTS and pos.covered is None):
                return {k: self._tree(v, self.child(pos, k), counts, as_streamed) for k, v in value.items()}
            kind = value.get("kind")
            if not as_streamed:
                pos = self.root(pos, kind if isinstance(kind, str) else pos.kind)
                return {k: self._tree(v, self.child(pos, k), counts) for k, v in value.items()}
            # The kind counts from where it is.
            base, pos = pos, self.root(pos, pos.kind)
            out: dict[str, Any] = {}
            for k, v in value.items():
                out[k] = self._tree(v, self.child(pos, k), counts, as_streamed)
                if k == "kind" and isinstance(v, str):
                    pos = self.root(base, v)
            return out
        if isinstance(value, list):
            return [self._tree(v, self.child(pos, i), counts, as_streamed) for i, v in enumerate(value)]
        if pos.covered is not None:
            if isinstance(value, str):
                return self.masked_string(pos, value, counts)
            if value is not None:
                self.count_other(pos, counts)
            return None
        if pos.role == _LAST_APPLIED and isinstance(value, str):
            return self.last_applied(pos, value, counts)
        return value


# -- streaming ---------------------------------------------------------------------

_NEXT = re.compile(rb"[ \t\r\n]*([^ \t\r\n])")
# A string's characters (complete escapes), up to its closing quote.
_STRING_BODY = re.compile(rb'[^"\\]*(?:\\.[^"\\]*)*', re.S)
_SCALAR = re.compile(rb"-?(?:0|[1-9][0-9]*)(?:\.[0-9]+)?(?:[eE][+-]?[0-9]+)?|true|false|null")
_SCALAR_RUN = re.compile(rb"[-+.0-9A-Za-z]+")
_BOM = b"\xef\xbb\xbf"
_STRUCTURE = re.compile(rb'[^"\[\]{}]*')
_QUOTE, _OPEN_OBJECT, _OPEN_ARRAY, _CLOSE_OBJECT, _CLOSE_ARRAY, _COMMA, _COLON = b'"{[}],:'
# What may come next.
_VALUE, _KEY, _COLON_NEXT, _AFTER, _VALUE_OR_CLOSE, _KEY_OR_CLOSE = range(6)


class _Frame:
    __slots__ = ("base", "index", "is_object", "key", "pos")

    def __init__(self, is_object: bool, pos: _Pos, base: _Pos) -> None:
        self.is_object = is_object
        self.pos = pos
        self.base = base  # the position before it was known to hold an API object
        self.key: str | None = None
        self.index = 0


def _nothing_passes(value: bytes) -> bool:
    return False


def _decode(raw: bytes) -> str:
    if b"\\" not in raw:
        return raw.decode("utf-8", "surrogateescape")
    try:
        text: str = json.loads('"' + raw.decode("utf-8", "surrogateescape") + '"')
        return text
    except ValueError:
        raise JsonBodyError("a string with an invalid escape") from None


def _encode(text: str) -> bytes:
    # ASCII escapes: a lone surrogate (from an escape, or undecodable bytes) is written as one.
    return json.dumps(text).encode("ascii")


class JsonStreamMasker:
    """
    One JSON body (or a stream of documents) masked as it passes:
    C{feed(chunk) -> bytes} and C{finish() -> bytes}; L{JsonBodyError}
    when the body is not JSON (nothing more may pass then).

    @param rules: the masks' paths (L{JsonRules}), or C{None}.
    @param masks: the session's masks (L{hoopgw.masking.service.SessionMasks})
        whose detectors search every string, member name and number, or
        C{None}.
    @param counts: values masked, per (mask, what found them), added to.
    """

    def __init__(self, rules: JsonRules | None, masks: SessionMasks | None, counts: Counts) -> None:
        self.rules = rules if rules is not None else JsonRules(())
        self.masks = masks if masks is not None and masks.finders else None
        # Called only where self.masks is not None.
        self.passes: Callable[[bytes], bool] = self.masks.gate.passes if self.masks is not None else _nothing_passes
        self.counts = counts
        self._fresh = True  # nothing fed yet (a byte order mark may come first)
        self._held = b""  # the beginning of a number or literal
        self._string: tuple[list[bytes], int, bool] | None = None  # a string begun: its parts, size, escape pending
        self._skip: bytearray | None = None  # the brackets open in a value passed over
        self._skip_string = 0  # in it: 1 inside a string, 2 just after a backslash there
        self._stack: list[_Frame] = []
        self._expect = _VALUE

    def feed(self, data: bytes) -> bytes:
        if self._fresh and data:
            self._fresh = False
            if data.startswith(_BOM):
                return _BOM + self.feed(data[3:])
        if self._string is not None:
            data = self._string_continues(data)
            if not data:
                return b""
        elif self._held:
            data = self._held + data
        out, self._held = self._scan(data, final=False)
        return out

    def finish(self) -> bytes:
        """The end of the body: what was held, and a check that the last document is whole."""
        if self._string is not None or self._skip is not None:
            raise JsonBodyError("the body ends inside a string" if self._string is not None or self._skip_string
                                else "the body ends inside a JSON document")
        held, self._held = self._held, b""
        out, rest = self._scan(held, final=True) if held else (b"", b"")
        if rest.strip() or self._stack or self._expect != _VALUE:
            raise JsonBodyError("the body ends inside a JSON document")
        return out

    def _string_continues(self, data: bytes) -> bytes:
        """
        More of a string that began in an earlier chunk: kept until its end
        comes (each byte looked at once), then the string and the rest.
        """
        assert self._string is not None  # feed calls it only with a string begun
        parts, size, escaped = self._string
        body = _STRING_BODY.match(data, 1 if escaped and data else 0)
        stop = body.end() if body is not None else len(data)
        if stop < len(data) and data[stop] == _QUOTE:
            self._string = None
            return b"".join(parts) + data
        size += len(data)
        if size > MAX_TOKEN:
            raise JsonBodyError(f"a string longer than {MAX_TOKEN} bytes")
        parts.append(data)
        self._string = (parts, size, stop < len(data))  # a backslash at the end: the next byte is escaped
        return b""

    def _position(self) -> _Pos:
        """Where the value about to start is."""
        stack = self._stack
        if not stack:
            return self.rules.document()
        frame = stack[-1]
        if frame.is_object:
            # A key is None only under _NOTHING (not read), which child() returns at once.
            return self.rules.child(frame.pos, frame.key)  # type: ignore[arg-type]
        index = frame.index
        frame.index = index + 1
        return self.rules.child(frame.pos, index)

    def _scan(self, buf: bytes, final: bool) -> tuple[bytes, bytes]:
        out: list[bytes] = []
        copied = 0
        at = 0
        held_from = -1
        end = len(buf)
        stack = self._stack
        rules = self.rules
        if self._skip is not None:
            at = self._skip_run(buf, 0, end)
        while True:
            match = _NEXT.match(buf, at)
            if match is None:
                at = end  # only whitespace is left: it goes on now (a watch event's newline)
                break
            start = match.start(1)
            c = buf[start]
            expect = self._expect
            if c == _QUOTE:
                body = _STRING_BODY.match(buf, start + 1)
                stop = body.end()  # type: ignore[union-attr]  # (the pattern matches the empty string)
                if stop == end or buf[stop] != _QUOTE:
                    if final:
                        raise JsonBodyError("the body ends inside a string")
                    if end - start > MAX_TOKEN:
                        raise JsonBodyError(f"a string longer than {MAX_TOKEN} bytes")
                    self._string = ([buf[start:]], end - start, stop < end)
                    held_from = start
                    break
                stop += 1
                raw = buf[start + 1 : stop - 1]
                if expect == _KEY or expect == _KEY_OR_CLOSE:
                    frame = stack[-1]
                    replaced = None
                    if frame.pos is not _NOTHING or self.masks is not None:
                        key = _decode(raw)
                        frame.key = key
                        if self.masks is not None and self.passes(key.encode("utf-8", "surrogatepass")):
                            masked = self.masks.client_text(key, self.counts)
                            if masked is not key:
                                replaced = _encode(masked)
                    else:
                        frame.key = None
                    self._expect = _COLON_NEXT
                elif expect == _VALUE or expect == _VALUE_OR_CLOSE:
                    replaced = self._string_value(raw)
                    self._after()
                else:
                    raise JsonBodyError(f"a string where {_EXPECTED[expect]} was expected")
                if replaced is not None:
                    out.append(buf[copied:start])
                    out.append(replaced)
                    copied = stop
                at = stop
            elif c == _OPEN_OBJECT or c == _OPEN_ARRAY:
                if expect != _VALUE and expect != _VALUE_OR_CLOSE:
                    raise JsonBodyError(f"{chr(c)!r} where {_EXPECTED[expect]} was expected")
                pos = self._position()
                is_object = c == _OPEN_OBJECT
                if pos is _NOTHING and self.masks is None:
                    # Nothing in it can be masked: passed over at C speed, its brackets only matched.
                    self._skip = bytearray((c,))
                    at = self._skip_run(buf, start + 1, end)
                    continue
                base = pos
                if is_object and pos.role in _ROOTS and pos.covered is None:
                    pos = rules.root(pos, pos.kind)
                if len(stack) >= MAX_DEPTH:
                    raise JsonBodyError(f"nested deeper than the gateway follows ({MAX_DEPTH})")
                stack.append(_Frame(is_object, pos, base))
                self._expect = _KEY_OR_CLOSE if is_object else _VALUE_OR_CLOSE
                at = start + 1
            elif c == _CLOSE_OBJECT or c == _CLOSE_ARRAY:
                if not stack or stack[-1].is_object != (c == _CLOSE_OBJECT):
                    raise JsonBodyError(f"an unmatched {chr(c)!r}")
                if expect not in (_AFTER, _KEY_OR_CLOSE, _VALUE_OR_CLOSE):
                    raise JsonBodyError(f"{chr(c)!r} where {_EXPECTED[expect]} was expected")
                stack.pop()
                self._after()
                at = start + 1
            elif c == _COMMA:
                if expect != _AFTER or not stack:
                    raise JsonBodyError(f"',' where {_EXPECTED[expect]} was expected")
                self._expect = _KEY if stack[-1].is_object else _VALUE
                at = start + 1
            elif c == _COLON:
                if expect != _COLON_NEXT:
                    raise JsonBodyError(f"':' where {_EXPECTED[expect]} was expected")
                self._expect = _VALUE
                at = start + 1
            else:
                if expect != _VALUE and expect != _VALUE_OR_CLOSE:
                    raise JsonBodyError(f"a value where {_EXPECTED[expect]} was expected")
                # A number or literal ends where its characters do: one that
                # reaches the end of what came may go on in the next chunk.
                run = _SCALAR_RUN.match(buf, start)
                stop = run.end() if run is not None else start
                if stop == end and not final:
                    if end - start > 512:
                        raise JsonBodyError("a number or literal longer than 512 bytes")
                    at = start
                    break
                scalar = _SCALAR.fullmatch(buf, start, stop)
                if scalar is None:
                    # (The body's bytes are not quoted: this message reaches the trail.)
                    raise JsonBodyError("not JSON: a value that is neither a number nor true, false or null")
                stop = scalar.end()
                replaced = self._scalar(buf[start:stop])
                self._after()
                if replaced is not None:
                    out.append(buf[copied:start])
                    out.append(replaced)
                    copied = stop
                at = stop
        # Whitespace at the end is passed on; a token begun is held (a
        # string in self._string, a number or literal returned).
        if held_from < 0:
            held_from = at
            rest = buf[at:]
        else:
            rest = b""
        if not out:
            return buf[:held_from], rest
        out.append(buf[copied:held_from])
        return b"".join(out), rest

    def _skip_run(self, buf: bytes, at: int, end: int) -> int:
        """
        Pass over a value nothing in which can be masked, from C{at}: where
        it ends (its value ended), or C{end} with the state kept for the
        next chunk.
        """
        opened = self._skip
        assert opened is not None
        state = self._skip_string
        while at < end:
            if state:
                if state == 2:  # the character after a backslash
                    at += 1
                    state = 1
                    continue
                at = _STRING_BODY.match(buf, at).end()  # type: ignore[union-attr]  # (matches the empty string)
                if at == end:
                    break
                if buf[at] == _QUOTE:
                    at += 1
                    state = 0
                    continue
                at, state = end, 2  # a backslash, the last byte
                break
            at = _STRUCTURE.match(buf, at).end()  # type: ignore[union-attr]  # (matches the empty string)
            if at == end:
                break
            c = buf[at]
            at += 1
            if c == _QUOTE:
                state = 1
            elif c == _OPEN_OBJECT or c == _OPEN_ARRAY:
                opened.append(c)
                if len(opened) + len(self._stack) > MAX_DEPTH:
                    raise JsonBodyError(f"nested deeper than the gateway follows ({MAX_DEPTH})")
            elif (opened.pop() == _OPEN_OBJECT) != (c == _CLOSE_OBJECT):
                raise JsonBodyError(f"an unmatched {chr(c)!r}")
            elif not opened:
                self._skip = None
                self._skip_string = 0
                self._after()
                return at
        self._skip_string = state
        return at

    def _after(self) -> None:
        """A value ended."""
        stack = self._stack
        if stack:
            self._expect = _AFTER
        else:
            self._expect = _VALUE  # the next document of a stream

    def _string_value(self, raw: bytes) -> bytes | None:
        pos = self._position()
        stack = self._stack
        if stack and pos.covered is None:
            frame = stack[-1]
            if frame.is_object and frame.key == "kind" and frame.pos.root:
                # The object's kind: the paths of the masks that name it, from here on.
                frame.pos = self.rules.root(frame.base, _decode(raw))
        if pos is _NOTHING:
            if self.masks is None:
                return None
        elif pos.covered is not None:
            masked = self.rules.masked_string(pos, _decode(raw), self.counts)
            return b"null" if masked is None else _encode(masked)
        else:
            if pos.role == _LAST_APPLIED:
                text = self.rules.last_applied(pos, _decode(raw), self.counts)
                if self.masks is not None:
                    text = self.masks.client_text(text, self.counts)
                return _encode(text)
            if self.masks is None or pos.role == _EXEMPT:
                return None
        if b"\\" in raw:
            text = _decode(raw)
            if not self.passes(text.encode("utf-8", "surrogatepass")):
                return None
        elif not self.passes(raw):
            return None
        else:
            text = raw.decode("utf-8", "surrogateescape")
        masked = self.masks.client_text(text, self.counts)
        return None if masked is text else _encode(masked)

    def _scalar(self, raw: bytes) -> bytes | None:
        pos = self._position()
        if pos.covered is not None:
            if raw == b"null":
                return None
            self.rules.count_other(pos, self.counts)
            return b"null"
        if self.masks is None or raw[0] in b"tfn" or pos.role == _EXEMPT:
            return None
        text = raw.decode("ascii")
        if b"e" in raw or b"E" in raw or b"." in raw:
            # 4.111111111111111e15 is a client's 4111111111111111.
            number = float(text)
            if number.is_integer() and abs(number) < 1e20:
                whole = str(int(number))
                if self.passes(whole.encode()) and self.masks.client_text(whole, self.counts) is not whole:
                    return b"null"
        if not self.passes(raw):
            return None
        return None if self.masks.client_text(text, self.counts) is text else b"null"


_EXPECTED = {
    _VALUE: "a value",
    _KEY: "a member name",
    _COLON_NEXT: "':'",
    _AFTER: "',' or the end of an object or array",
    _VALUE_OR_CLOSE: "a value or ']'",
    _KEY_OR_CLOSE: "a member name or '}'",
}
