"""
Tests for L{hoopgw.audit.checkpoint}.
"""

from __future__ import annotations

import base64
import os
import stat
from hashlib import sha256
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from hypothesis import given, settings, strategies as st
from twisted.trial.unittest import SynchronousTestCase

from hoopgw.audit.checkpoint import (
    CheckpointError,
    Verifier,
    key_id,
    load_or_create_signing_key,
    sign_checkpoint,
    verify_checkpoint,
    vkey_text,
)

KEY = Ed25519PrivateKey.from_private_bytes(bytes(range(32)))
NAME = "hoopgw/test"
ROOT = sha256(b"root").digest()

origins = st.text(st.characters(blacklist_categories=("Cs",), blacklist_characters="\n"), min_size=1, max_size=30)


class FormatTests(SynchronousTestCase):
    def test_note_layout(self) -> None:
        """
        A signed checkpoint is the origin, size and base64 root lines, a
        blank line, and one signature line: an em dash, the key name and
        base64 of the 4-byte key id followed by the 64-byte signature.
        """
        note = sign_checkpoint(KEY, NAME, "origin/x", 12, ROOT)
        body, sig = note.split(b"\n\n")
        self.assertEqual(body, b"origin/x\n12\n" + base64.b64encode(ROOT))
        self.assertTrue(sig.startswith("\u2014 hoopgw/test ".encode()))
        self.assertTrue(sig.endswith(b"\n"))
        raw = base64.b64decode(sig.split(b" ")[2])
        public = KEY.public_key().public_bytes_raw()
        self.assertEqual(raw[:4], sha256(NAME.encode() + b"\n\x01" + public).digest()[:4])
        self.assertEqual(len(raw), 68)
        KEY.public_key().verify(raw[4:], body + b"\n")

    def test_vkey(self) -> None:
        """
        The vkey is name+hex key id+base64(0x01 || public key), and parses
        back to the same key id.
        """
        text = vkey_text(NAME, KEY.public_key())
        name, hex_id, b64 = text.split("+", 2)
        self.assertEqual(name, NAME)
        self.assertEqual(hex_id, key_id(NAME, KEY.public_key().public_bytes_raw()).hex())
        self.assertEqual(base64.b64decode(b64), b"\x01" + KEY.public_key().public_bytes_raw())
        self.assertEqual(Verifier.from_vkey(text).key_id.hex(), hex_id)

    def test_bad_vkeys(self) -> None:
        """
        If a vkey has the wrong shape, a wrong key id, or not an Ed25519 key,
        parsing fails saying which.
        """
        good = vkey_text(NAME, KEY.public_key())
        name, hex_id, b64 = good.split("+", 2)
        cases = {
            "nothing": "parts",
            f"{name}+00000000+{b64}": "does not match",
            f"{name}+{hex_id}+AAAA": "not an Ed25519",
            f"a b+{hex_id}+{b64}": "whitespace",
            f"{name}+{hex_id}+{b64[:-2]}": "base64",
        }
        for text, expected in cases.items():
            e = self.assertRaises(CheckpointError, Verifier.from_vkey, text)
            self.assertIn(expected, str(e), text)


class RoundTripTests(SynchronousTestCase):
    verifier = Verifier.from_vkey(vkey_text(NAME, KEY.public_key()))

    @settings(max_examples=50, deadline=None)
    @given(origins, st.integers(0, 2**63), st.binary(min_size=32, max_size=32))
    def test_round_trip(self, origin: str, size: int, root: bytes) -> None:
        """
        Any origin line, size and root sign and verify back to the same
        checkpoint.
        """
        cp = verify_checkpoint(sign_checkpoint(KEY, NAME, origin, size, root), self.verifier)
        self.assertEqual((cp.origin, cp.size, cp.root), (origin, size, root))

    @settings(max_examples=30, deadline=None)
    @given(st.integers(0, 1000), st.data())
    def test_any_flip_rejected(self, size: int, data: st.DataObject) -> None:
        """
        Changing any one byte of a signed note (to any other value) makes it
        fail to verify.
        """
        note = sign_checkpoint(KEY, NAME, "origin", size, ROOT)
        i = data.draw(st.integers(0, len(note) - 1))
        value = data.draw(st.integers(0, 255).filter(lambda v: v != note[i]))
        self.assertRaises(CheckpointError, verify_checkpoint, note[:i] + bytes([value]) + note[i + 1 :], self.verifier)

    def test_every_flip_rejected(self) -> None:
        """
        Flipping the low bit of each byte of a note, one at a time, is
        always rejected.
        """
        note = sign_checkpoint(KEY, NAME, "origin", 7, ROOT)
        for i in range(len(note)):
            bad = note[:i] + bytes([note[i] ^ 1]) + note[i + 1 :]
            self.assertRaises(CheckpointError, verify_checkpoint, bad, self.verifier)

    def test_other_key(self) -> None:
        """
        If a note is signed by another key, it is rejected as having no
        signature by the vkey's key.
        """
        other = Ed25519PrivateKey.generate()
        e = self.assertRaises(CheckpointError, verify_checkpoint, sign_checkpoint(other, NAME, "o", 1, ROOT), self.verifier)
        self.assertIn("no signature by key hoopgw/test", str(e))

    def test_extra_unknown_signature(self) -> None:
        """
        A cosignature line by an unknown key is ignored (signed-note rule) as
        long as the vkey's own signature verifies.
        """
        note = sign_checkpoint(KEY, NAME, "o", 1, ROOT)
        other = sign_checkpoint(Ed25519PrivateKey.generate(), "witness", "o", 1, ROOT).split(b"\n\n")[1]
        self.assertEqual(verify_checkpoint(note + other, self.verifier).size, 1)


class KeyFileTests(SynchronousTestCase):
    def test_create_then_load(self) -> None:
        """
        If the key file does not exist it is created as PKCS#8 PEM with mode
        0600 in a 0700 folder; loading it again gives the same key.
        """
        path = Path(self.mktemp()) / "keys" / "audit_ed25519.pem"
        key = load_or_create_signing_key(path)
        self.assertEqual(stat.S_IMODE(os.stat(path).st_mode), 0o600)
        self.assertEqual(stat.S_IMODE(os.stat(path.parent).st_mode), 0o700)
        self.assertTrue(path.read_bytes().startswith(b"-----BEGIN PRIVATE KEY-----"))
        again = load_or_create_signing_key(path)
        self.assertEqual(again.public_key().public_bytes_raw(), key.public_key().public_bytes_raw())

    def test_not_a_key(self) -> None:
        """
        If the key file holds something else, loading fails naming the file.
        """
        path = Path(self.mktemp())
        path.write_bytes(b"junk")
        e = self.assertRaises(CheckpointError, load_or_create_signing_key, path)
        self.assertIn(str(path), str(e))
