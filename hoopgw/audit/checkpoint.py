"""
Signed checkpoints: the C2SP C{tlog-checkpoint} body carried in a C2SP
C{signed-note} with an Ed25519 signature.

A checkpoint note::

    <origin>\\n
    <tree size, decimal>\\n
    <base64 of the 32-byte root>\\n
    \\n
    \u2014 <key name> <base64(4-byte key id || 64-byte Ed25519 signature)>\\n

The signature covers the body (the first three lines, newlines included).
The key id is the first four bytes of SHA-256(key name || "\\n" || 0x01 ||
32-byte public key), and the verifier key travels as the note "vkey" text
C{<name>+<8 hex digits of key id>+<base64(0x01 || public key)>}.
"""

from __future__ import annotations

import base64
import binascii
import re
from hashlib import sha256
from pathlib import Path

from attrs import frozen
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import (
    Ed25519PrivateKey,
    Ed25519PublicKey,
)
from hoopgw.keys import load_or_create_ed25519

__all__ = [
    "Checkpoint",
    "CheckpointError",
    "Verifier",
    "checkpoint_body",
    "key_id",
    "load_or_create_signing_key",
    "parse_checkpoint_body",
    "sign_checkpoint",
    "sign_note",
    "verify_checkpoint",
    "verify_note",
    "vkey_text",
]

#: ALGORITHM byte of Ed25519 in signed-note key ids and vkeys.
ALG_ED25519 = 0x01
SIG_PREFIX = "\u2014 "

# A key name is non-empty and has no whitespace nor "+" (signed-note spec).
_KEY_NAME = re.compile(r"[^\s+]+")
_SIZE = re.compile(r"0|[1-9][0-9]{0,19}")
_B64 = re.compile(r"[A-Za-z0-9+/]*={0,2}")


class CheckpointError(ValueError):
    """A note or vkey is malformed or its signature does not verify."""


@frozen
class Checkpoint:
    origin: str
    size: int
    root: bytes


@frozen
class Verifier:
    """A parsed vkey: the key name, key id and Ed25519 public key."""

    name: str
    key_id: bytes
    public_key: Ed25519PublicKey

    @classmethod
    def from_vkey(cls, text: str) -> "Verifier":
        """
        Parse C{<name>+<hex key id>+<base64 key>}.

        @raise CheckpointError: naming what is wrong with it.
        """
        text = text.strip()
        # The base64 key may itself contain "+"; name and id cannot.
        parts = text.split("+", 2)
        if len(parts) != 3:
            raise CheckpointError(
                f"vkey: expected <name>+<key id>+<base64 key>, got {len(parts)} '+'-separated parts"
            )
        name, hex_id, b64 = parts
        if not _KEY_NAME.fullmatch(name):
            raise CheckpointError(f"vkey: key name {name!r} is empty or has whitespace")
        if not re.fullmatch(r"[0-9a-f]{8}", hex_id):
            raise CheckpointError(f"vkey: key id {hex_id!r} is not 8 lower-case hex digits")
        raw = _b64decode(b64, "vkey: key")
        if len(raw) != 33 or raw[0] != ALG_ED25519:
            raise CheckpointError(
                "vkey: key is not an Ed25519 key (expected 0x01 followed by 32 bytes)"
            )
        public_key = Ed25519PublicKey.from_public_bytes(raw[1:])
        expected = key_id(name, raw[1:])
        if expected.hex() != hex_id:
            raise CheckpointError(
                f"vkey: key id {hex_id} does not match the key and name (expected {expected.hex()})"
            )
        return cls(name, expected, public_key)


def _b64decode(text: str, what: str) -> bytes:
    if not _B64.fullmatch(text) or len(text) % 4:
        raise CheckpointError(f"{what} is not standard padded base64")
    try:
        raw = base64.b64decode(text, validate=True)
    except binascii.Error as e:
        raise CheckpointError(f"{what} is not valid base64: {e}") from None
    # Padding bits must be zero: otherwise several texts decode to the same
    # bytes and an edit to the note would go unnoticed.
    if base64.b64encode(raw).decode() != text:
        raise CheckpointError(f"{what} is not canonical base64 (non-zero padding bits)")
    return raw


def _raw_public(public_key: Ed25519PublicKey) -> bytes:
    return public_key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


def key_id(name: str, public_key: bytes) -> bytes:
    """First four bytes of SHA-256(name || "\\n" || 0x01 || key)."""
    return sha256(name.encode("utf-8") + b"\n" + bytes([ALG_ED25519]) + public_key).digest()[:4]


def check_key_name(name: str) -> str:
    if not _KEY_NAME.fullmatch(name):
        raise CheckpointError(f"key name {name!r} must be non-empty with no whitespace or '+'")
    return name


def vkey_text(name: str, public_key: Ed25519PublicKey) -> str:
    """The note verifier key for C{public_key} under C{name}."""
    check_key_name(name)
    raw = _raw_public(public_key)
    return f"{name}+{key_id(name, raw).hex()}+{base64.b64encode(bytes([ALG_ED25519]) + raw).decode()}"


def load_or_create_signing_key(path: Path) -> Ed25519PrivateKey:
    """
    Load the PEM (PKCS#8, unencrypted) Ed25519 key at C{path}, creating it
    with mode 0600 (and its folder with 0700) if it does not exist.

    Called once at start-up; this is blocking file I/O.
    """
    try:
        return load_or_create_ed25519(Path(path), what="audit signing key")
    except ValueError as e:
        raise CheckpointError(str(e)) from None


def checkpoint_body(origin: str, size: int, root: bytes) -> bytes:
    """The tlog-checkpoint body: origin, size, base64 root, each on a line."""
    if not origin or "\n" in origin:
        raise CheckpointError(f"origin {origin!r} must be a non-empty single line")
    if len(root) != 32:
        raise CheckpointError(f"root is {len(root)} bytes, expected 32")
    return f"{origin}\n{size}\n{base64.b64encode(root).decode()}\n".encode("utf-8")


def sign_checkpoint(
    private_key: Ed25519PrivateKey, key_name: str, origin: str, size: int, root: bytes
) -> bytes:
    """A complete signed note for the checkpoint (ends with a newline)."""
    return sign_note(private_key, key_name, checkpoint_body(origin, size, root))


def sign_note(private_key: Ed25519PrivateKey, key_name: str, body: bytes) -> bytes:
    """A complete signed note (signed-note format) for C{body}, which ends with a newline."""
    check_key_name(key_name)
    if not body.endswith(b"\n") or b"\n\n" in body:
        raise CheckpointError("a note's text ends with a newline and has no blank line")
    kid = key_id(key_name, _raw_public(private_key.public_key()))
    signature = base64.b64encode(kid + private_key.sign(body)).decode()
    return body + f"\n{SIG_PREFIX}{key_name} {signature}\n".encode("utf-8")


def parse_checkpoint_body(body: bytes) -> Checkpoint:
    """
    Parse a checkpoint body (exactly origin, size, root lines; hoopgw writes
    no extension lines).
    """
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError:
        raise CheckpointError("checkpoint body is not UTF-8") from None
    if not text.endswith("\n"):
        raise CheckpointError("checkpoint body does not end with a newline")
    lines = text[:-1].split("\n")
    if len(lines) != 3:
        raise CheckpointError(f"checkpoint body has {len(lines)} lines, expected 3 (origin, size, root)")
    origin, size_text, root_text = lines
    if not origin:
        raise CheckpointError("checkpoint origin line is empty")
    if not _SIZE.fullmatch(size_text):
        raise CheckpointError(f"checkpoint size {size_text!r} is not a decimal integer")
    root = _b64decode(root_text, "checkpoint root")
    if len(root) != 32:
        raise CheckpointError(f"checkpoint root is {len(root)} bytes, expected 32")
    return Checkpoint(origin, int(size_text), root)


def verify_checkpoint(note: bytes, verifier: Verifier) -> Checkpoint:
    """
    Parse a signed note and verify its signature by C{verifier}.

    Signature lines by other keys are ignored (signed-note: a verifier
    checks the signatures it knows); at least one by C{verifier} must be
    present and valid.

    @raise CheckpointError: naming what is wrong.
    """
    separator = note.rfind(b"\n\n")
    if separator < 0:
        raise CheckpointError("note has no blank line between text and signatures")
    checkpoint = parse_checkpoint_body(note[: separator + 1])
    verify_note(note, verifier)
    return checkpoint


def verify_note(note: bytes, verifier: Verifier) -> bytes:
    """
    Verify a signed note's signature by C{verifier} (as L{verify_checkpoint}
    does) and return its text.

    @raise CheckpointError: naming what is wrong.
    """
    separator = note.rfind(b"\n\n")
    if separator < 0:
        raise CheckpointError("note has no blank line between text and signatures")
    body, signatures = note[: separator + 1], note[separator + 2 :]
    if not signatures.endswith(b"\n"):
        raise CheckpointError("note does not end with a newline")
    found = False
    try:
        sig_text = signatures.decode("utf-8")
    except UnicodeDecodeError:
        raise CheckpointError("signature lines are not UTF-8") from None
    for number, line in enumerate(sig_text[:-1].split("\n"), 1):
        if not line.startswith(SIG_PREFIX):
            raise CheckpointError(f"signature line {number} does not start with an em dash and a space")
        parts = line[len(SIG_PREFIX) :].split(" ")
        if len(parts) != 2 or not _KEY_NAME.fullmatch(parts[0]):
            raise CheckpointError(f"signature line {number} is not '\u2014 <name> <base64>'")
        name, b64 = parts
        raw = _b64decode(b64, f"signature line {number}")
        if len(raw) < 5:
            raise CheckpointError(f"signature line {number} is too short")
        if name != verifier.name or raw[:4] != verifier.key_id:
            continue
        if len(raw) != 68:
            raise CheckpointError(
                f"signature line {number}: {len(raw) - 4}-byte signature, expected 64 for Ed25519"
            )
        try:
            verifier.public_key.verify(raw[4:], body)
        except InvalidSignature:
            raise CheckpointError(
                f"signature line {number}: Ed25519 signature by {name} does not verify"
            ) from None
        found = True
    if not found:
        raise CheckpointError(f"note has no signature by key {verifier.name} ({verifier.key_id.hex()})")
    return body
