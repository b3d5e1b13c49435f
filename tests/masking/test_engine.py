"""Masking strategies and the masker (hoopgw/masking/engine.py)."""

from __future__ import annotations

from pathlib import Path

from twisted.trial.unittest import SynchronousTestCase

from hoopgw.masking.engine import REDACTED, Masker, load_key, mask_value

KEY = b"k" * 32


class StrategyTests(SynchronousTestCase):
    def test_strategies(self) -> None:
        self.assertEqual(mask_value("redact", "4111-1111-1111-1111", KEY), REDACTED)
        self.assertEqual(mask_value("partial", "4111-1111-1111-1111", KEY), "****-****-****-1111")
        self.assertEqual(mask_value("partial", "abc", KEY), "***")
        self.assertIsNone(mask_value("null", "x", KEY))
        hashed = mask_value("hash", "ada@example.com", KEY)
        self.assertTrue(hashed.startswith("hmac:") and len(hashed) == 37)
        self.assertEqual(hashed, mask_value("hash", "ada@example.com", KEY))  # equal stays equal
        self.assertNotEqual(hashed, mask_value("hash", "ada@example.com", b"o" * 32))  # per-gateway key
        with self.assertRaises(ValueError):
            mask_value("rot13", "x", KEY)

    def test_text_masks_only_the_detected_parts(self) -> None:
        masker = Masker.build(["card", "email"], "partial", KEY)
        masked, spans = masker.text("card 4111 1111 1111 1111 for ada@example.com, order 42")
        self.assertEqual(masked, "card **** **** **** 1111 for ***@******e.com, order 42")
        self.assertEqual([s.detector for s in spans], ["card", "email"])
        # null cannot empty a part of a text: the part is redacted.
        masked, _ = Masker.build(["email"], "null", KEY).text("to ada@example.com")
        self.assertEqual(masked, f"to {REDACTED}")
        self.assertEqual(Masker.build(["email"], "redact", KEY).text("nothing here"), ("nothing here", []))

    def test_key_is_made_once_and_kept_private(self) -> None:
        folder = Path(self.mktemp())
        key = load_key(folder)
        self.assertEqual(len(key), 32)
        self.assertEqual(load_key(folder), key)
        self.assertEqual((folder / "masking.key").stat().st_mode & 0o777, 0o600)
