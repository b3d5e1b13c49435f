"""Value detectors (hoopgw/masking/detectors.py): valid values found, near-misses ignored."""

from __future__ import annotations

import base64
import json
import string

from hypothesis import given, settings, strategies as st
from twisted.trial.unittest import SynchronousTestCase

from hoopgw.masking.detectors import DETECTORS, Gate, PatternError, compile_pattern, find, iban_valid


def spans(text: str, name: str) -> list[str]:
    return [text[s.start:s.end] for s in find(text, DETECTORS[name])]


def luhn_complete(body: str) -> str:
    """C{body} plus the check digit that makes it pass Luhn."""
    for check in "0123456789":
        digits = body + check
        total = 0
        for i, ch in enumerate(reversed(digits)):
            d = int(ch) * (2 if i % 2 else 1)
            total += d - 9 if d > 9 else d
        if total % 10 == 0:
            return digits
    raise AssertionError("unreachable")


@st.composite
def card_numbers(draw) -> str:
    length = draw(st.integers(13, 19))
    body = draw(st.text("0123456789", min_size=length - 1, max_size=length - 1))
    return luhn_complete(draw(st.sampled_from("3456")) + body[1:])


def grouped(digits: str, separator: str) -> str:
    return separator.join(digits[i:i + 4] for i in range(0, len(digits), 4))


class CardTests(SynchronousTestCase):
    @settings(max_examples=300)
    @given(card_numbers(), st.sampled_from(["", " ", "-"]), st.text(string.ascii_letters + " :,", max_size=12))
    def test_every_valid_number_is_found(self, number: str, separator: str, around: str) -> None:
        written = grouped(number, separator)
        text = f"{around} {written} {around}"
        self.assertEqual(spans(text, "card"), [written])

    @settings(max_examples=300)
    @given(card_numbers(), st.integers(0, 18))
    def test_near_misses_are_ignored(self, number: str, position: int) -> None:
        position %= len(number)
        digit = str((int(number[position]) + 1) % 10)  # one digit changed: Luhn fails
        wrong = number[:position] + digit + number[position + 1:]
        self.assertEqual(spans(wrong, "card"), [])

    def test_not_cards(self) -> None:
        for text in ("order 2024-01-15 total 1234.56", "1-2-3-4-5-6-7-8-9-0-1-2-6", "12345678901234567890123"):
            self.assertEqual(spans(text, "card"), [], text)


class SSNTests(SynchronousTestCase):
    @given(st.integers(1, 899).filter(lambda a: a != 666), st.integers(1, 99), st.integers(1, 9999), st.sampled_from("- "))
    def test_valid_numbers(self, area: int, group: int, serial: int, sep: str) -> None:
        ssn = f"{area:03d}{sep}{group:02d}{sep}{serial:04d}"
        self.assertEqual(spans(f"ssn: {ssn}.", "ssn"), [ssn])

    def test_invalid_numbers(self) -> None:
        for ssn in ("000-12-3456", "666-12-3456", "900-12-3456", "123-00-4567", "123-45-0000", "123-45 6789"):
            self.assertEqual(spans(f"x {ssn} y", "ssn"), [], ssn)

    def test_bare_digits_only_as_a_whole_value(self) -> None:
        self.assertEqual(spans("123456789", "ssn"), ["123456789"])
        self.assertEqual(spans("invoice 123456789", "ssn"), [])

    def test_no_break_spaces_between_groups(self) -> None:
        """As a locale's number formatting or a copied web page writes them (U+00A0, U+2007, U+202F)."""
        for space in ("\u00a0", "\u2007", "\u202f"):
            card = space.join(("4111", "1111", "1111", "1111"))
            self.assertEqual(spans(f"card {card} ok", "card"), [card])
            ssn = space.join(("536", "22", "8726"))
            self.assertEqual(spans(f"ssn {ssn} ok", "ssn"), [ssn])
        self.assertEqual(spans("536-22\u00a08726", "ssn"), [])  # one kind of separator

    def test_bare_digits_on_lines_of_their_own(self) -> None:
        """Several whole values in one text (a terminal's read, a log); the white space around is not the value."""
        self.assertEqual(spans("ssns:\r\n123456789\r\n 536228726 \n", "ssn"), ["123456789", "536228726"])
        self.assertEqual(spans(" 123456789\n", "ssn"), ["123456789"])
        self.assertEqual(spans("invoice\n123456789 paid\n", "ssn"), [])

    def test_bare_digits_between_separators(self) -> None:
        """A field of its own: JSON's, a CSV's, psql's table's, a quoted constant's, a key's value."""
        for text in ('{"ssn": "123456789"}', '{"n":123456789}', "1,123456789,Ada", " 123456789 | Ada",
                     "WHERE ssn = '123456789'", "ssn: 123456789", "(123456789)", "a\t123456789\tb"):
            self.assertEqual(spans(text, "ssn"), ["123456789"], text)
        for text in ("invoice 123456789 paid", "id=123456789", "x123456789", "/users/123456789/"):
            self.assertEqual(spans(text, "ssn"), [], text)


@st.composite
def ibans(draw) -> str:
    country, length = draw(st.sampled_from([("DE", 22), ("GB", 22), ("FR", 27), ("NL", 18), ("NO", 15)]))
    bban = draw(st.text(string.digits, min_size=length - 4, max_size=length - 4))
    number = "".join(str(int(c, 36)) for c in bban + country + "00")
    check = 98 - int(number) % 97
    return f"{country}{check:02d}{bban}"


class IBANTests(SynchronousTestCase):
    @given(ibans(), st.booleans())
    def test_valid_ibans(self, iban: str, spaced: bool) -> None:
        self.assertTrue(iban_valid(iban))
        written = " ".join(iban[i:i + 4] for i in range(0, len(iban), 4)) if spaced else iban
        self.assertEqual(spans(f"pay to {written} now", "iban"), [written])

    @given(ibans())
    def test_wrong_check_digits(self, iban: str) -> None:
        check = (int(iban[2:4]) + 1) % 100
        self.assertEqual(spans(f"{iban[:2]}{check:02d}{iban[4:]}", "iban"), [])


class OtherDetectorTests(SynchronousTestCase):
    def test_email(self) -> None:
        self.assertEqual(spans("to: Ada.Lovelace+x@mail.example.org,", "email"), ["Ada.Lovelace+x@mail.example.org"])
        for text in ("a@b", "user@localhost", "x..y@example.com", "@example.com"):
            self.assertEqual(spans(text, "email"), [], text)

    def test_phone(self) -> None:
        for number in ("+1 415 555 2671", "+44 20 7946 0958", "0044 20 7946 0958", "(415) 555-2671", "415-555-2671"):
            self.assertEqual(spans(f"call {number} now", "phone"), [number], number)
        for text in ("version 1.2.3", "+1 2", "115-555-2671"):
            self.assertEqual(spans(text, "phone"), [], text)

    def test_ipv4(self) -> None:
        self.assertEqual(spans("from 10.0.0.1, to 192.168.1.255.", "ipv4"), ["10.0.0.1", "192.168.1.255"])
        self.assertEqual(spans("256.1.1.1 and 1.2.3 and 1.2.3.4.5", "ipv4"), [])

    def test_jwt(self) -> None:
        def b64(value: dict) -> str:
            return base64.urlsafe_b64encode(json.dumps(value).encode()).rstrip(b"=").decode()

        token = f"{b64({'alg': 'HS256', 'typ': 'JWT'})}.{b64({'sub': 'ada'})}.c2lnbmF0dXJl"
        self.assertEqual(spans(f"Authorization: Bearer {token}", "jwt"), [token])
        self.assertEqual(spans(f"{b64({'typ': 'JWT'})}.{b64({'sub': 'ada'})}.x", "jwt"), [])  # no alg

    def test_aws_keys(self) -> None:
        self.assertEqual(spans("id=AKIAIOSFODNN7EXAMPLE;", "aws_key"), ["AKIAIOSFODNN7EXAMPLE"])
        secret = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"
        self.assertEqual(spans(f"secret={secret}", "aws_key"), [secret])
        self.assertEqual(spans("sha1 " + "a" * 40, "aws_key"), [])  # hex digests are not secrets

    def test_private_key_also_unterminated(self) -> None:
        key = "-----BEGIN PRIVATE KEY-----\nMIIEvQ\n-----END PRIVATE KEY-----"
        self.assertEqual(spans(f"x {key} y", "private_key"), [key])
        self.assertEqual(spans("x -----BEGIN EC PRIVATE KEY-----\nMHc", "private_key"),
                         ["-----BEGIN EC PRIVATE KEY-----\nMHc"])

    @given(st.text(max_size=200))
    def test_never_raises_and_spans_do_not_overlap(self, text: str) -> None:
        found = find(text, [d for ds in DETECTORS.values() for d in ds])
        for a, b in zip(found, found[1:]):
            self.assertLessEqual(a.end, b.start)


class GateTests(SynchronousTestCase):
    """The gate never turns away a value a detector would find something in."""

    KNOWN = (
        "card 4111 1111 1111 1111", "4111-1111-1111-1111", "536-22-8726", "536228726", "a@b.cd",
        "+44 20 7946 0958", "(415) 555-2671", "GB82 WEST 1234 5698 7654 32", "10.0.0.1",
        "AKIAIOSFODNN7EXAMPLE", "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY",
        "-----BEGIN PRIVATE KEY-----", "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJhIn0.x",
    )

    def check(self, text: str) -> None:
        for name, detectors in DETECTORS.items():
            if find(text, detectors):
                self.assertTrue(Gate(detectors).passes(text.encode("utf-8", "surrogatepass")), (name, text))

    def test_values_next_to_other_text(self) -> None:
        """Found next to hyphens, other digit groups and domain-like text (an outside tester's misses)."""
        cases = {
            "visa-4111111111111111": ("card", "4111111111111111"),
            "paid 12 4111 1111 1111 1111 thanks": ("card", "4111 1111 1111 1111"),
            "Seat 12 4111-1111-1111-1111": ("card", "4111-1111-1111-1111"),
            "4111111111111111-12/29": ("card", "4111111111111111"),
            "4111-1111-1111-1111-": ("card", "4111-1111-1111-1111"),
            "ssn-536-22-8726": ("ssn", "536-22-8726"),
            "mail canary.ada@example.org-work": ("email", "canary.ada@example.org"),
        }
        for text, (name, value) in cases.items():
            self.assertEqual(spans(text, name), [value], text)
        self.assertEqual(spans("1-536-22-8726", "ssn"), [])  # inside a longer number
        self.assertEqual(spans("12 4111 1111 1111 1112", "card"), [])  # no Luhn anywhere

    def test_digits_of_other_scripts(self) -> None:
        """translate(card, '0123456789', '٠١٢٣٤٥٦٧٨٩') is still a card number."""
        arabic = str.maketrans("0123456789", "\u0660\u0661\u0662\u0663\u0664\u0665\u0666\u0667\u0668\u0669")
        self.assertEqual(len(spans("4111 1111 1111 1111".translate(arabic), "card")), 1)
        self.assertEqual(len(spans("536-22-8726".translate(arabic), "ssn")), 1)

    def test_known_values(self) -> None:
        for text in self.KNOWN:
            self.check(text)
        self.assertFalse(Gate(DETECTORS["card"] + DETECTORS["ssn"] + DETECTORS["email"]).passes(b"customer note 12345"))
        self.assertTrue(Gate(DETECTORS["card"]).passes(("\u0664" * 16).encode()))  # other scripts: searched
        self.assertTrue(Gate([compile_pattern("x[0-9]")]).passes(b"x1"))  # user patterns: always

    @settings(max_examples=300)
    @given(st.one_of(card_numbers(), st.text(string.digits + " -.@+()ABCDEFGHeyJ", max_size=40), st.text(max_size=60)))
    def test_generated(self, text: str) -> None:
        self.check(text)
        # The inlined form (Gate.simple) passes at least what the gate does.
        gate = Gate(DETECTORS["card"] + DETECTORS["ssn"] + DETECTORS["email"])
        digits, length, needles = gate.simple
        value = text.encode("utf-8", "surrogatepass")
        if gate.passes(value):
            count = sum(chr(b).isdigit() for b in value if b < 128)
            self.assertTrue(
                not value.isascii() or (count >= digits and len(value) >= length) or any(n in value for n in needles)
            )


class PatternTests(SynchronousTestCase):
    def test_accepted(self) -> None:
        detector = compile_pattern(r"EMP-\d{6}")
        self.assertEqual([m.group(0) for m in detector.pattern.finditer("id EMP-123456")], ["EMP-123456"])

    def test_refused(self) -> None:
        for pattern, why in (
            ("(a+)+", "backtrack"), ("(x|xy)+z", "backtrack"), ("a*", "empty"), ("(?:)", "empty"), ("(", "regular"),
        ):
            with self.assertRaises(PatternError) as caught:
                compile_pattern(pattern)
            self.assertIn(why, str(caught.exception), pattern)
