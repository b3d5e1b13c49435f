"""
Value detectors: where in a text a sensitive value is, found by a pattern
and then validated (a card number's Luhn digit, an IBAN's mod-97, an SSN's
area/group/serial rules, a JWT's header), so that ordinary numbers and
words are left alone.  Pure functions, no I/O.

Each detector has a cheap pre-filter (a digit, an C{@}, a prefix, a
length) checked before its regular expression runs, so a value no detector
can match costs one scan for a digit and a few C{str} checks, not a pass of
each detector.

Names (the C{detectors} of a C{[[mask]]}): C{card ssn email phone iban
ipv4 jwt aws_key private_key}.  User patterns (C{patterns}) are checked by
L{compile_pattern} when the policy is loaded.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
from collections.abc import Callable, Iterable, Sequence
from typing import Any

from attrs import Factory, field, frozen

__all__ = ["DETECTORS", "Detector", "Gate", "PatternError", "Span", "compile_pattern", "find", "separated"]

# Most detectors need a digit: one scan per text tells them all.
_DIGIT = re.compile(r"\d")


@frozen
class Span:
    """A sensitive value at C{text[start:end]}, found by C{detector}."""

    start: int
    end: int
    detector: str


@frozen
class Detector:
    """
    C{pattern} finds candidates, C{valid} checks each; C{needs_digit} and
    C{prefilter} (cheap C{str} checks, or C{None}) skip texts it cannot match.
    """

    name: str
    needs_digit: bool
    prefilter: Callable[[str], bool] | None
    pattern: re.Pattern[str]
    valid: Callable[[re.Match[str]], bool]
    # Instead of C{valid}: the valid values inside a match, as (start, end)
    # in the text (a card number inside a longer run of digit groups).
    spans: Callable[[re.Match[str]], Iterable[tuple[int, int]]] | None = None
    # What any match needs, for L{Gate}: ASCII digits, length, one of these texts.
    digits: int = 0
    length: int = 0
    needles: tuple[str, ...] = ()
    # It finds a value only as a whole one: a line of its own, or between
    # separators (L{find} reads the text as L{separated} for it).
    whole: bool = False
    # What a text must hold for it to find anything, searched before the text
    # is read as separated (which costs a copy): C{\d{9}} for a bare SSN.
    run: re.Pattern[str] | None = None
    # Its pattern's group "value" is the value (the match is more: white space).
    value_group: bool = field(init=False, default=Factory(lambda self: "value" in self.pattern.groupindex, takes_self=True))

    @property
    def gated(self) -> bool:
        return bool(self.digits or self.length or self.needles)


_ASCII_DIGITS = b"0123456789"


class Gate:
    """
    Whether any of some detectors could match a value, from its bytes, in a
    few C-level operations: a value of ASCII text too short, with too few
    digits and none of the texts a detector needs is not decoded or
    searched at all.  Other values (any non-ASCII byte: digits of other
    scripts) always pass, as do all values when a user pattern is among the
    detectors.
    """

    def __init__(self, detectors: Iterable[Detector]) -> None:
        detectors = tuple(detectors)
        self.always = not detectors or not all(d.gated for d in detectors)
        needs = {(d.digits, d.length, tuple(n.encode() for n in d.needles)) for d in detectors}
        plain = {(digits, length) for digits, length, needles in needs if not needles}
        # A need another one's implies adds nothing: (9, 11) passes (9, 9).
        self._plain = tuple(sorted(
            n for n in plain if not any(o != n and o[0] <= n[0] and o[1] <= n[1] for o in plain)
        ))
        self._needled = tuple(sorted(n for n in needs if n[2]))
        self._shortest = min((n[1] for n in needs), default=0)
        #: Values (in bytes) shorter than this cannot pass.
        self.shortest = 0 if self.always else self._shortest
        #: The same test as (digits, length, needles) when it has that shape
        #: -- an ASCII value passes with that many digits and that length,
        #: or with one of the needles -- for callers that inline it; or None.
        self.simple: tuple[int, int, tuple[bytes, ...]] | None = None
        if not self.always and len(self._plain) <= 1 and all(n[0] == 0 for n in self._needled):
            digits, length = self._plain[0] if self._plain else (1 << 30, 0)
            self.simple = (digits, length, tuple(x for n in self._needled for x in n[2]))

        self.passes = self._passes()

    def _passes(self) -> Callable[[bytes], bool]:
        """C{passes(value)}: a closure over locals (this runs for every value of a masked result)."""
        if self.always:
            return lambda value: True
        shortest, plain, needled = self._shortest, self._plain, self._needled
        delete = _ASCII_DIGITS

        def passes(value: bytes) -> bool:
            length = len(value)
            if length < shortest:
                return False
            if not value.isascii():
                return True
            digits = length - len(value.translate(None, delete))
            for min_digits, min_length in plain:
                if digits >= min_digits and length >= min_length:
                    return True
            for min_digits, min_length, needles in needled:
                if digits >= min_digits and length >= min_length:
                    for needle in needles:
                        if needle in value:
                            return True
            return False

        return passes


# -- validators ------------------------------------------------------------------


def _luhn(digits: str) -> bool:
    total = 0
    for i, ch in enumerate(reversed(digits)):
        d = int(ch)  # also the digits of other scripts, which \d matches
        if i % 2:
            d *= 2
            if d > 9:
                d -= 9
        total += d
    return total % 10 == 0


_GROUPS = re.compile(r"\d+")
# What may separate a number's digit groups: dropped before its check digit is read.
_GROUP_SEPARATORS = str.maketrans("", "", " -\u00a0\u2007\u202f")


def _card_spans(match: re.Match[str]) -> list[tuple[int, int]]:
    """
    The card numbers in a run of digit groups: the longest window of whole
    groups (13-19 digits, one kind of separator, groups of at least three
    digits but the last) that passes Luhn, from the left, so that a number
    next to others (C{Seat 12 4111-1111-1111-1111}, C{4111...-12/29}) is
    still found.
    """
    text, base = match.group(0), match.start()
    groups = [(m.start(), m.end()) for m in _GROUPS.finditer(text)]
    found: list[tuple[int, int]] = []
    i = 0
    while i < len(groups):
        best = None
        digits = 0
        separator = None
        for j in range(i, len(groups)):
            if j > i:
                between = text[groups[j - 1][1]:groups[j][0]]
                if separator is None:
                    separator = between
                elif between != separator:
                    break
                if groups[j - 1][1] - groups[j - 1][0] < 3:
                    break  # a short group inside a number: not a card's grouping
            digits += groups[j][1] - groups[j][0]
            if digits > 19:
                break
            if digits >= 13:
                start, end = groups[i][0], groups[j][1]
                if _luhn(text[start:end].translate(_GROUP_SEPARATORS)):
                    best = (j, start, end)
        if best is None:
            i += 1
            continue
        j, start, end = best
        found.append((base + start, base + end))
        i = j + 1
    return found


def _ssn(match: re.Match[str]) -> bool:
    area, group, serial = int(match.group("area")), int(match.group("group")), int(match.group("serial"))
    return area not in (0, 666) and area < 900 and group != 0 and serial != 0


def _email(match: re.Match[str]) -> bool:
    local, _, domain = match.group(0).rpartition("@")
    if local.startswith(".") or local.endswith(".") or ".." in local:
        return False
    tld = domain.rsplit(".", 1)[-1]
    return len(tld) >= 2 and tld.isalpha()


def _phone(match: re.Match[str]) -> bool:
    digits = sum(c.isdigit() for c in match.group(0))
    return 8 <= digits <= 15


# IBAN lengths by country (ISO 13616 registry).
_IBAN_LENGTHS = {
    "AD": 24, "AE": 23, "AL": 28, "AT": 20, "AZ": 28, "BA": 20, "BE": 16, "BG": 22, "BH": 22, "BR": 29,
    "BY": 28, "CH": 21, "CR": 22, "CY": 28, "CZ": 24, "DE": 22, "DK": 18, "DO": 28, "EE": 20, "EG": 29,
    "ES": 24, "FI": 18, "FO": 18, "FR": 27, "GB": 22, "GE": 22, "GI": 23, "GL": 18, "GR": 27, "GT": 28,
    "HR": 21, "HU": 28, "IE": 22, "IL": 23, "IQ": 23, "IS": 26, "IT": 27, "JO": 30, "KW": 30, "KZ": 20,
    "LB": 28, "LC": 32, "LI": 21, "LT": 20, "LU": 20, "LV": 21, "MC": 27, "MD": 24, "ME": 22, "MK": 19,
    "MR": 27, "MT": 31, "MU": 30, "NL": 18, "NO": 15, "PK": 24, "PL": 28, "PS": 29, "PT": 25, "QA": 29,
    "RO": 24, "RS": 22, "SA": 24, "SC": 31, "SE": 24, "SI": 19, "SK": 24, "SM": 27, "ST": 25, "SV": 28,
    "TL": 23, "TN": 24, "TR": 26, "UA": 29, "VA": 22, "VG": 24, "XK": 20,
}


def iban_valid(iban: str) -> bool:
    """Whether C{iban} (spaces allowed) has its country's length and a mod-97 of 1."""
    compact = iban.replace(" ", "")
    if _IBAN_LENGTHS.get(compact[:2]) != len(compact):
        return False
    rearranged = compact[4:] + compact[:4]
    number = "".join(str(int(c, 36)) for c in rearranged)
    return int(number) % 97 == 1


def _iban(match: re.Match[str]) -> bool:
    return iban_valid(match.group(0))


def _b64_json_object(part: str) -> dict[str, Any] | None:
    try:
        raw = base64.urlsafe_b64decode(part + "=" * (-len(part) % 4))
        value = json.loads(raw)
    except (binascii.Error, ValueError, UnicodeDecodeError):
        return None
    return value if isinstance(value, dict) else None


def _jwt(match: re.Match[str]) -> bool:
    header = _b64_json_object(match.group("header"))
    return header is not None and "alg" in header and _b64_json_object(match.group("payload")) is not None


def _aws_secret(match: re.Match[str]) -> bool:
    text = match.group(0)
    if text.startswith(("AKIA", "ASIA")) and text[:20].isupper():
        return True  # a key id run into its secret
    return any(c.isupper() for c in text) and any(c.islower() for c in text) and any(c.isdigit() for c in text)


def _always(match: re.Match[str]) -> bool:
    return True


# -- the detectors ---------------------------------------------------------------

_AWS_ID_PREFIXES = ("AKIA", "ASIA", "ABIA", "ACCA", "AGPA", "AIDA", "AIPA", "ANPA", "ANVA", "AROA", "APKA", "ASCA")

DETECTORS: dict[str, tuple[Detector, ...]] = {
    "card": (
        Detector(
            "card", True, lambda text: len(text) >= 13,
            re.compile(r"(?<!\d)\d(?:[ \u00a0\u2007\u202f-]?\d){12,}"), _always, spans=_card_spans, digits=13, length=13,
        ),
    ),
    "ssn": (
        # Written with dashes or spaces (also the no-break spaces a locale's
        # formatting or a web page puts there) anywhere; nine bare digits only as a
        # whole value (a column of them), a line of their own (several such
        # values in one read of a terminal's output, a log) or a field between
        # separators (a JSON text's "536228726", a CSV's, psql's table's),
        # not inside other text.  The white space around them is not part of the value.
        Detector(
            "ssn", True, lambda text: len(text) >= 11,
            re.compile(
                r"(?<!\d)(?<!\d[- \u00a0\u2007\u202f])(?P<area>\d{3})(?P<sep>[- \u00a0\u2007\u202f])(?P<group>\d{2})"
                r"(?P=sep)(?P<serial>\d{4})(?!\d)(?![- \u00a0\u2007\u202f]\d)"
            ),
            _ssn, digits=9, length=11,
        ),
        Detector(
            "ssn", True, lambda text: len(text.strip()) == 9 or "\n" in text,
            re.compile(r"(?m)^[^\S\n]*(?P<value>(?P<area>\d{3})(?P<group>\d{2})(?P<serial>\d{4}))[^\S\n]*$"),
            _ssn, digits=9, length=9, whole=True, run=re.compile(r"\d{9}"),
        ),
    ),
    "email": (
        Detector(
            "email", False, lambda text: "@" in text,
            re.compile(
                r"[A-Za-z0-9.!#$%&'*+/=?^_`{|}~-]{1,64}@"
                # Labels, then a letters-only top-level domain: what follows it
                # (example.org-work) is not part of the address.
                r"(?:[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?\.)+[A-Za-z]{2,63}"
            ),
            _email, length=5, needles=("@",),
        ),
    ),
    "phone": (
        # E.164 (+ or 00, country code, groups), and North American numbers
        # written with separators.
        Detector(
            "phone", True, lambda text: len(text) >= 9,
            re.compile(r"(?<![\w+])(?:\+|00)[1-9]\d{0,2}(?:[ .-]?\(?\d{1,4}\)?){2,5}(?!\d)"),
            _phone, digits=8, length=9,
        ),
        Detector(
            "phone", True, lambda text: len(text) >= 9,
            re.compile(r"(?<![\d-])(?:\(\s?[2-9]\d{2}\s?\)\s?|[2-9]\d{2}[ .-])[2-9]\d{2}[ .-]\d{4}(?![\d-])"),
            _always, digits=10, length=9,
        ),
    ),
    "iban": (
        Detector(
            "iban", True, lambda text: len(text) >= 15,
            re.compile(r"(?<![A-Za-z0-9])[A-Z]{2}\d{2}(?: ?[A-Z0-9]){11,30}(?![A-Za-z0-9])"),
            _iban, digits=2, length=15,
        ),
    ),
    "ipv4": (
        Detector(
            "ipv4", True, lambda text: len(text) >= 7 and "." in text,
            re.compile(
                r"(?<![\d.])(?:(?:25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)\.){3}(?:25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)(?!\.?\d)"
            ),
            _always, digits=4, length=7, needles=(".",),
        ),
    ),
    "jwt": (
        Detector(
            "jwt", False, lambda text: "eyJ" in text,
            re.compile(r"(?P<header>eyJ[A-Za-z0-9_-]+)\.(?P<payload>eyJ[A-Za-z0-9_-]*)\.[A-Za-z0-9_-]*"),
            _jwt, needles=("eyJ",),
        ),
    ),
    "aws_key": (
        Detector(
            "aws_key", False, lambda text: len(text) >= 20 and any(p in text for p in _AWS_ID_PREFIXES),
            re.compile(r"(?<![A-Z0-9])(?:" + "|".join(_AWS_ID_PREFIXES) + r")[A-Z2-7]{16}(?![A-Z0-9])"),
            _always, length=20, needles=_AWS_ID_PREFIXES,
        ),
        Detector(
            "aws_key", True, lambda text: len(text) >= 40,
            re.compile(r"(?<![A-Za-z0-9/+])[A-Za-z0-9/+]{40}(?![A-Za-z0-9/+=])"),
            _aws_secret, digits=1, length=40,
        ),
    ),
    "private_key": (
        # To the END line, or to the end of the text (a key split across
        # messages is masked from its BEGIN on).
        Detector(
            "private_key", False, lambda text: "PRIVATE KEY" in text,
            re.compile(
                r"-----BEGIN (?:[A-Z0-9]+ )*PRIVATE KEY-----(?:.*?-----END (?:[A-Z0-9]+ )*PRIVATE KEY-----|.*\Z)",
                re.DOTALL,
            ),
            _always, needles=("PRIVATE KEY",),
        ),
    ),
}


# What separates whole values in a text that is not one (a JSON log line's
# "536228726", a CSV's or psql's table's field): each becomes a line break,
# so that a detector of whole values finds them (same length: the spans hold).
_SEPARATORS = str.maketrans({c: "\n" for c in "\"'()[]{},:;|\t"})


def separated(text: str) -> str:
    """C{text} with the separators of whole values (quotes, brackets, commas, colons, bars, tabs) as line breaks."""
    return text.translate(_SEPARATORS)


def find(text: str, detectors: Iterable[Detector]) -> list[Span]:
    """
    The sensitive values in C{text}, left to right, not overlapping (where
    two detectors' matches overlap, the one starting first, then the
    longer, wins).
    """
    spans: list[Span] = []
    digit: bool | None = None
    for detector in detectors:
        if detector.needs_digit:
            if digit is None:
                digit = _DIGIT.search(text) is not None
            if not digit:
                continue
        if detector.run is not None and detector.run.search(text) is None:
            continue
        # A detector of whole values reads them also between separators (same length: spans hold).
        subject = separated(text) if detector.whole else text
        if detector.prefilter is not None and not detector.prefilter(subject):
            continue
        inside = detector.spans
        value = detector.value_group
        for match in detector.pattern.finditer(subject):
            if inside is not None:
                spans.extend(Span(start, end, detector.name) for start, end in inside(match))
            elif detector.valid(match):
                start, end = match.span("value") if value else match.span()
                spans.append(Span(start, end, detector.name))
    if len(spans) < 2:
        return spans
    spans.sort(key=lambda s: (s.start, -s.end))
    kept = [spans[0]]
    for span in spans[1:]:
        if span.start >= kept[-1].end:
            kept.append(span)
    return kept


# -- user patterns -----------------------------------------------------------------


class PatternError(ValueError):
    """A user pattern the gateway refuses (why in the message)."""


def compile_pattern(pattern: str) -> Detector:
    """
    A user pattern as a detector.  Refused (L{PatternError}): a pattern
    that does not compile, that can match the empty string (it would mask
    between every character), or that can backtrack catastrophically (a
    repeat inside an unbounded repeat, or alternatives inside one, as in
    C{(a+)+} or C{(a|ab)*}).
    """
    try:
        compiled = re.compile(pattern)
        parsed = re._parser.parse(pattern)  # type: ignore[attr-defined]
    except re.error as e:
        raise PatternError(f"not a regular expression: {e}") from None
    if parsed.getwidth()[0] == 0:
        raise PatternError("it can match the empty string")
    problem = _backtracking(parsed.data, inside_unbounded=False)
    if problem is not None:
        raise PatternError(f"it can backtrack catastrophically ({problem})")
    return Detector(f"pattern:{pattern}", False, None, compiled, _always)


def _backtracking(items: Sequence[tuple[Any, Any]], inside_unbounded: bool) -> str | None:
    constants = re._constants  # type: ignore[attr-defined]
    repeats = (constants.MAX_REPEAT, constants.MIN_REPEAT, getattr(constants, "POSSESSIVE_REPEAT", None))
    for op, av in items:
        if op in repeats and op is not None:
            low, high, sub = av
            if inside_unbounded and high > 1:
                return "a repeat inside a repeat"
            unbounded = high == constants.MAXREPEAT or high > 100
            problem = _backtracking(sub.data, inside_unbounded or unbounded)
            if problem is not None:
                return problem
        elif op is constants.BRANCH:
            if inside_unbounded:
                return "alternatives inside a repeat"
            for branch in av[1]:
                problem = _backtracking(branch.data, inside_unbounded)
                if problem is not None:
                    return problem
        elif op is constants.SUBPATTERN:
            problem = _backtracking(av[-1].data, inside_unbounded)
            if problem is not None:
                return problem
        elif op in (constants.ASSERT, constants.ASSERT_NOT):
            problem = _backtracking(av[1].data, inside_unbounded)
            if problem is not None:
                return problem
    return None
