"""
Witnesses: copies of every signed checkpoint kept out of the audit
directory's reach, so that rolling the log *and* its checkpoints back to an
earlier state (which both verify on their own) is caught, and so is a log
rewritten and re-signed with a replaced (or read) signing key.

Two kinds, configured with C{[audit] witness} (docs/audit-format.md,
"Witnesses"):

  - L{DirectoryWitness}: a directory, ideally on another mount or host.
    Each checkpoint note replaces C{<dir>/<log id>.checkpoint} atomically
    (a new uniquely named file created with C{O_EXCL | O_NOFOLLOW}, fsync,
    rename, fsync of the folder).  The copy already there is evidence: it
    is read safely (L{read_note_file}: no FIFO, symbolic link or large
    file), must verify with the log's key, and the new checkpoint must
    extend it (larger, and the records give its root); anything else is
    refused, reported critically, and the copy kept.
  - L{HTTPWitness}: a C2SP tlog-witness (c2sp.org/tlog-witness).  Each
    checkpoint is POSTed to C{<url>/add-checkpoint} with a consistency
    proof from the size the witness last acknowledged, built from that
    size's Merkle frontier and the records written since (read back in a
    thread, never on the reactor).  Answers are read up to
    L{MAX_NOTE_BYTES}; with the witness's key configured, a 200 counts only
    with its cosignature.

Neither is on the records' path: a record is written and acknowledged
whatever the witnesses do.  Their blocking work runs in daemon threads of
their own (L{daemon_runner}), never the reactor's pool, so a witness stuck
in a system call (a hung mount) cannot keep the process from exiting.
Deliveries run one at a time per witness; while one is in flight only the
newest later checkpoint waits (it proves everything before it).  A failure
is logged and counted (L{Witness.failures}, L{Witness.last_error}); the
next checkpoint tries again, with a proof from the size the witness last
acknowledged, so a witness that was down catches up when it comes back.
A witness that holds a *newer* or *different* checkpoint (a rollback or a
fork), or a copy that does not verify, is logged critically and counted in
L{Witness.conflicts}.

The module also has the offline checks C{hoopgw audit verify --witness}
runs (L{read_directory_copy}, L{check_http_witness}); those are blocking
and never need the reactor.
"""

from __future__ import annotations

import base64
import binascii
import os
import re
import stat
import struct
import tempfile
import threading
import time
import urllib.error
import urllib.request
from http.client import HTTPMessage
from hashlib import sha256
from pathlib import Path
from typing import IO, Any, Callable, Generator, Protocol as TypingProtocol, Sequence, TypeVar

from attrs import frozen
from twisted.internet.defer import Deferred, inlineCallbacks, maybeDeferred, succeed
from twisted.internet.protocol import Protocol
from twisted.logger import Logger
from twisted.python.failure import Failure

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from hoopgw.audit.checkpoint import Checkpoint, CheckpointError, Verifier, verify_checkpoint
from hoopgw.audit.merkle import CompactTree, consistency_proof_from
from hoopgw.interfaces import IMetrics

__all__ = [
    "BlockingRunner",
    "COSIGNATURE_MAX_AGE",
    "CosignatureVerifier",
    "DirectoryWitness",
    "HTTPWitness",
    "MAX_NOTE_BYTES",
    "WitnessCopyError",
    "WitnessCheckpoint",
    "WitnessConflict",
    "WitnessError",
    "call_with_timeout",
    "check_http_witness",
    "daemon_runner",
    "directory_copy_path",
    "is_url",
    "leaf_hashes_between",
    "position_at",
    "read_directory_copy",
    "read_note_file",
    "request_body",
    "verify_cosignature",
]

SIZE_CONTENT_TYPE = "text/x.tlog.size"
#: The most consistency proof lines tlog-witness allows.
MAX_PROOF_LINES = 63
_READ_CHUNK = 1 << 20
#: A checkpoint note is a few hundred bytes; a witness's copy or answer
#: beyond this is refused unread (never buffered).
MAX_NOTE_BYTES = 64 << 10
#: C{audit verify --witness URL} wants a cosignature at most this old (or
#: this far in the future) by the verifier's clock: an older one could be
#: replayed from when the witness held less.
COSIGNATURE_MAX_AGE = 600
#: ALGORITHM byte of a C2SP tlog-cosignature/v1 (Ed25519) witness key.
ALG_COSIGNATURE_V1 = 0x04
_URL = re.compile(r"https?://[^\s/?#]+(/[^\s?#]*)?")


def is_url(target: str) -> bool:
    """C{True} for an http(s) witness URL, C{False} for a directory."""
    return target.startswith(("http://", "https://"))


def directory_copy_path(directory: Path | str, log_id: str) -> Path:
    """Where a directory witness keeps the newest checkpoint of a log."""
    return Path(directory) / f"{log_id}.checkpoint"


class WitnessError(Exception):
    """A witness could not be reached or refused a checkpoint."""


class WitnessConflict(WitnessError):
    """
    A witness holds a checkpoint of this log that the log does not extend:
    a newer one (the log was rolled back) or a different one of the same
    size (a fork).
    """


class WitnessCopyError(WitnessError):
    """
    A directory witness's copy exists but cannot be used as evidence: not a
    regular file (a FIFO, a symbolic link, a device), too large, not a
    checkpoint note, or not signed by the log's key for this log.
    """


class WitnessTimeout(WitnessError):
    """A witness operation did not finish in time (a hung mount)."""


# -- blocking helpers that never hold the process up -------------------------


def read_note_file(path: Path | str) -> bytes | None:
    """
    The bytes of a small regular file (a checkpoint note), C{None} if it
    does not exist.

    Opened with C{O_NOFOLLOW | O_NONBLOCK}: a symbolic link is refused, and
    a FIFO neither blocks the open nor the read (it is refused by
    C{fstat}); at most L{MAX_NOTE_BYTES} are read.

    @raise WitnessCopyError: not a regular file (a symbolic link, a FIFO, a
        device), or too large: not a copy this code wrote.
    @raise WitnessError: it cannot be read (permissions, I/O error).
    """
    path = Path(path)
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC | getattr(os, "O_NOCTTY", 0))
    except FileNotFoundError:
        return None
    except OSError as e:
        if os.path.islink(path):
            raise WitnessCopyError(f"{path} is a symbolic link, not a checkpoint copy (refused)") from None
        raise WitnessError(f"cannot read {path}: {e.strerror or e} (errno {e.errno})") from None
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise WitnessCopyError(
                f"{path} is not a regular file (mode {stat.filemode(info.st_mode)}), not a checkpoint copy (refused)"
            )
        if info.st_size > MAX_NOTE_BYTES:
            raise WitnessCopyError(
                f"{path} is {info.st_size} bytes, more than a checkpoint note can be ({MAX_NOTE_BYTES})"
            )
        chunks: list[bytes] = []
        total = 0
        while True:
            chunk = os.read(fd, MAX_NOTE_BYTES + 1 - total)
            if not chunk:
                break
            chunks.append(chunk)
            total += len(chunk)
            if total > MAX_NOTE_BYTES:
                raise WitnessCopyError(f"{path} is more than {MAX_NOTE_BYTES} bytes, more than a checkpoint note can be")
        return b"".join(chunks)
    except OSError as e:
        raise WitnessError(f"cannot read {path}: {e.strerror or e} (errno {e.errno})") from None
    finally:
        os.close(fd)


_T = TypeVar("_T")


class BlockingRunner(TypingProtocol):
    """
    Runs a blocking callable off the reactor thread: a Deferred of its
    result (or failure), delivered on the reactor thread.  Tests pass a
    synchronous one (C{maybeDeferred}).
    """

    def __call__(self, f: Callable[[], _T], /) -> Deferred[_T]: ...


def _run_here(f: Callable[[], _T]) -> Deferred[_T]:
    return maybeDeferred(f)


def daemon_runner(reactor: Any) -> BlockingRunner:
    """
    Run a blocking callable in a new daemon thread, its result delivered on
    the reactor thread.  Not the reactor's thread pool: a witness stuck in
    a system call (a hung NFS mount) must never hold up the process's exit,
    which joins the pool's threads.
    """

    def run(f: Callable[[], _T]) -> Deferred[_T]:
        d: Deferred[_T] = Deferred()

        def work() -> None:
            try:
                result = f()
            except BaseException:
                failure = Failure()
                reactor.callFromThread(d.errback, failure)
            else:
                reactor.callFromThread(d.callback, result)

        threading.Thread(target=work, name="hoopgw-audit-witness", daemon=True).start()
        return d

    return run


def call_with_timeout(f: Callable[[], _T], timeout: float, what: str) -> _T:
    """
    C{f()} in a daemon thread, waiting at most C{timeout} seconds (start-up
    only, before the reactor runs).

    @raise WitnessTimeout: it did not return in time (the thread is left
        behind; it never holds up the process's exit).
    """
    results: list[_T] = []
    errors: list[BaseException] = []

    def work() -> None:
        try:
            results.append(f())
        except BaseException as e:  # handed to the caller
            errors.append(e)

    thread = threading.Thread(target=work, name="hoopgw-audit-witness-start", daemon=True)
    thread.start()
    thread.join(timeout)
    if thread.is_alive():
        raise WitnessTimeout(f"{what} did not finish within {timeout:g}s (witness_timeout)")
    if errors:
        raise errors[0]
    return results[0]


# -- witness cosignatures (C2SP tlog-cosignature, cosignature/v1) -------------


@frozen
class CosignatureVerifier:
    """A witness's public key: C{<name>+<hex key id>+<base64(0x04 || key)>}."""

    name: str
    key_id: bytes
    public_key: Ed25519PublicKey
    text: str

    @classmethod
    def from_vkey(cls, text: str) -> "CosignatureVerifier":
        """@raise CheckpointError: naming what is wrong with it."""
        text = text.strip()
        parts = text.split("+", 2)
        if len(parts) != 3:
            raise CheckpointError(
                f"witness vkey {text!r}: expected <name>+<key id>+<base64 key>, got "
                f"{len(parts)} '+'-separated parts"
            )
        name, hex_id, b64 = parts
        if not name or re.search(r"\s", name):
            raise CheckpointError(f"witness vkey: key name {name!r} is empty or has whitespace")
        if not re.fullmatch(r"[0-9a-f]{8}", hex_id):
            raise CheckpointError(f"witness vkey: key id {hex_id!r} is not 8 lower-case hex digits")
        try:
            raw = base64.b64decode(b64, validate=True)
        except (binascii.Error, ValueError):
            raise CheckpointError("witness vkey: key is not base64") from None
        if len(raw) != 33 or raw[0] != ALG_COSIGNATURE_V1:
            raise CheckpointError(
                "witness vkey: not a cosignature/v1 key (expected 0x04 followed by a 32-byte Ed25519 key)"
            )
        expected = sha256(name.encode() + b"\n" + raw[:1] + raw[1:]).digest()[:4]
        if expected.hex() != hex_id:
            raise CheckpointError(
                f"witness vkey: key id {hex_id} does not match the key and name (expected {expected.hex()})"
            )
        return cls(name, expected, Ed25519PublicKey.from_public_bytes(raw[1:]), text)


def verify_cosignature(
    answer: bytes,
    body: bytes,
    keys: Sequence[CosignatureVerifier],
    *,
    now: float | None = None,
    max_age: float | None = None,
) -> tuple[CosignatureVerifier, int]:
    """
    Find, in a tlog-witness answer (signature lines), a valid cosignature of
    the checkpoint C{body} by one of C{keys}.

    @param max_age: if given, its timestamp must be within this many
        seconds of C{now} (either way).
    @return: (the key, the cosignature's timestamp).
    @raise WitnessError: none verifies; the message says why.
    """
    try:
        text = answer.decode("utf-8")
    except UnicodeDecodeError:
        raise WitnessError("the answer is not UTF-8 signature lines") from None
    problems: list[str] = []
    for line in text.splitlines():
        if not line.startswith("\u2014 "):
            continue
        parts = line[2:].split(" ")
        if len(parts) != 2:
            continue
        name, b64 = parts
        try:
            raw = base64.b64decode(b64, validate=True)
        except (binascii.Error, ValueError):
            continue
        for key in keys:
            if name != key.name or raw[:4] != key.key_id:
                continue
            if len(raw) != 4 + 8 + 64:
                problems.append(f"the cosignature by {name} is {len(raw)} bytes, expected 76")
                continue
            (timestamp,) = struct.unpack(">Q", raw[4:12])
            message = b"cosignature/v1\ntime " + str(timestamp).encode() + b"\n" + body
            try:
                key.public_key.verify(raw[12:], message)
            except InvalidSignature:
                problems.append(f"the cosignature by {name} does not verify for this checkpoint")
                continue
            if max_age is not None:
                current = time.time() if now is None else now
                if abs(current - timestamp) > max_age:
                    problems.append(
                        f"the cosignature by {name} is dated {timestamp} (Unix time), more than "
                        f"{max_age:g}s from this clock's {int(current)}: an old answer may have been replayed"
                    )
                    continue
            return key, timestamp
    if problems:
        raise WitnessError("; ".join(problems))
    names = ", ".join(f"{k.name} ({k.key_id.hex()})" for k in keys)
    raise WitnessError(f"the answer holds no cosignature by {names}")


@frozen
class WitnessCheckpoint:
    """
    A signed checkpoint as the log hands it to its witnesses.

    @ivar offset: the byte offset in the records file where record C{size}
        starts (the records file's length when it was signed).
    @ivar frontier: the Merkle frontier of the first C{size} records
        (L{CompactTree.frontier}), from which a later consistency proof
        starts.
    """

    log_id: str
    origin: str
    size: int
    root: bytes
    note: bytes
    offset: int
    frontier: tuple[bytes, ...]


# -- reading the records back (blocking: threads and the CLI) ----------------


def leaf_hashes_between(records: Path | str, start: int, end: int) -> list[bytes]:
    """The Merkle leaf hashes of the record lines in bytes [start, end)."""
    hashes: list[bytes] = []
    with open(records, "rb") as f:
        f.seek(start)
        remaining = end - start
        pending = b""
        while remaining > 0:
            chunk = f.read(min(_READ_CHUNK, remaining))
            if not chunk:
                break
            remaining -= len(chunk)
            lines = (pending + chunk).split(b"\n")
            pending = lines.pop()
            hashes.extend(sha256(b"\x00" + line).digest() for line in lines)
    if pending or remaining:
        raise WitnessError(f"{records}: bytes {start}..{end} do not end with a complete record")
    return hashes


def position_at(records: Path | str, size: int) -> tuple[int, tuple[bytes, ...]]:
    """
    (byte offset where record C{size} starts, Merkle frontier of the first
    C{size} records), by reading the records file from its start.
    """
    tree = CompactTree()
    offset = 0
    with open(records, "rb") as f:
        pending = b""
        while tree.size < size:
            chunk = f.read(_READ_CHUNK)
            if not chunk:
                break
            lines = (pending + chunk).split(b"\n")
            pending = lines.pop()
            for line in lines:
                if tree.size == size:
                    break
                tree.append(sha256(b"\x00" + line).digest())
                offset += len(line) + 1
    if tree.size < size:
        raise WitnessError(f"{records} holds {tree.size} records, fewer than {size}")
    return offset, tree.frontier


def request_body(old_size: int, proof: Sequence[bytes], note: bytes) -> bytes:
    """A tlog-witness add-checkpoint request body."""
    if len(proof) > MAX_PROOF_LINES:
        raise WitnessError(f"a consistency proof of {len(proof)} hashes is longer than tlog-witness allows")
    lines = [f"old {old_size}\n".encode()]
    lines += [base64.b64encode(h) + b"\n" for h in proof]
    return b"".join(lines) + b"\n" + note


def _parse_size(content: bytes) -> int | None:
    text = content.decode("ascii", "replace")
    if re.fullmatch(r"(0|[1-9][0-9]{0,19})\n?", text):
        return int(text)
    return None


def _rollback_message(target: str, seen: int, size: int) -> str:
    return (
        f"witness {target} has seen checkpoint size {seen} of this log, newer than this "
        f"log's checkpoint size {size}: the log and its checkpoints were rolled back "
        f"(restored from an older copy, or records and checkpoints cut off together)"
    )


# -- the witnesses the gateway sends checkpoints to ------------------------


class Witness:
    """
    What the log needs of a witness: L{submit} each checkpoint (never
    blocks, never fails the log), L{flush} at stop.  Subclasses implement
    L{_deliver}.

    @ivar sent: checkpoints the witness acknowledged.
    @ivar failures: deliveries that failed (conflicts included).
    @ivar conflicts: deliveries refused because the witness holds a newer
        or different checkpoint of this log.
    @ivar last_error: the last failure's message, C{None} after a success.
    @ivar acknowledged: the size of the last checkpoint it acknowledged.
    """

    _log = Logger()
    kind = "witness"

    def __init__(self, target: str, *, metrics: IMetrics | None = None) -> None:
        self.target = target
        self.sent = 0
        self.failures = 0
        self.conflicts = 0
        self.last_error: str | None = None
        self.acknowledged: int | None = None
        self._metrics = metrics
        self._busy = False
        self._pending: WitnessCheckpoint | None = None
        self._idle: list[Deferred[None]] = []
        self._records: Path | None = None
        self._verifier: Verifier | None = None

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.target}>"

    @property
    def busy(self) -> bool:
        """A delivery is in flight."""
        return self._busy

    def bind(self, records: Path | str, verifier: Verifier) -> None:
        """
        The log this witness serves (L{hoopgw.audit.log.AuditLog} calls it):
        its records file, read back for consistency checks, and its
        verifier key, which a witness's copy must be signed with.
        """
        self._records = Path(records)
        self._verifier = verifier

    def assume(self, checkpoint: WitnessCheckpoint) -> None:
        """
        What the witness most likely holds already (the log's last
        checkpoint at start-up): the next delivery proves consistency from
        it.  A witness that holds something else says so and is answered.
        """

    def submit(self, checkpoint: WitnessCheckpoint) -> None:
        """Send C{checkpoint} (after the one in flight, if any)."""
        if self._busy:
            if self._pending is None or checkpoint.size >= self._pending.size:
                self._pending = checkpoint
            return
        self._start(checkpoint)

    def flush(self) -> Deferred[None]:
        """A Deferred that fires once nothing is in flight or waiting."""
        if not self._busy:
            return succeed(None)
        d: Deferred[None] = Deferred()
        self._idle.append(d)
        return d

    def close(self) -> Deferred[None]:
        return succeed(None)

    def _start(self, checkpoint: WitnessCheckpoint) -> None:
        self._busy = True
        d = maybeDeferred(self._deliver, checkpoint)
        d.addCallbacks(self._delivered, self._failed, callbackArgs=(checkpoint,), errbackArgs=(checkpoint,))
        d.addBoth(self._next)

    def _next(self, _: object) -> None:
        self._busy = False
        checkpoint, self._pending = self._pending, None
        if checkpoint is not None:
            self._start(checkpoint)
            return
        idle, self._idle = self._idle, []
        for d in idle:
            d.callback(None)

    def _delivered(self, _: object, checkpoint: WitnessCheckpoint) -> None:
        self.sent += 1
        self.acknowledged = checkpoint.size
        if self.last_error is not None:
            self._log.info(
                "audit witness {target} acknowledged checkpoint {size} again",
                target=self.target,
                size=checkpoint.size,
            )
        self.last_error = None

    def _failed(self, failure: Failure, checkpoint: WitnessCheckpoint) -> None:
        self.failures += 1
        message = failure.getErrorMessage() or repr(failure.value)
        self.last_error = message
        hook = getattr(self._metrics, "witness_failed", None)
        conflict = failure.check(WitnessConflict, WitnessCopyError) is not None
        if conflict:
            self.conflicts += 1
            self._log.critical(
                "audit witness {target} refused checkpoint {size}: {error}",
                target=self.target,
                size=checkpoint.size,
                error=message,
            )
        else:
            self._log.warn(
                "audit witness {target} did not take checkpoint {size} ({error}); "
                "records are unaffected, the next checkpoint tries again",
                target=self.target,
                size=checkpoint.size,
                error=message,
            )
        if hook is not None:
            hook(self.target, conflict)

    def _deliver(self, checkpoint: WitnessCheckpoint) -> Deferred[None] | None:
        raise NotImplementedError


class DirectoryWitness(Witness):
    """
    Keeps the newest checkpoint note of each log in a directory:
    C{<dir>/<log id>.checkpoint}, replaced atomically and fsynced.

    The copy already there is evidence, never overwritten blindly: it must
    be a regular file holding a note signed by the log's key for this log
    (else the key was replaced, or the copy forged or damaged), and the new
    checkpoint must extend it: a larger size, and the log's records, read
    back, give the copy's root at its size (else the log was rewritten).
    Anything else is refused, logged critically, and the copy kept for the
    operator to look at.
    """

    kind = "directory"

    def __init__(
        self,
        directory: Path | str,
        *,
        run: BlockingRunner | None = None,
        metrics: IMetrics | None = None,
    ) -> None:
        super().__init__(str(directory), metrics=metrics)
        self.directory = Path(directory)
        self._run: BlockingRunner = run if run is not None else _run_here
        #: (size, root) of the copy known to be consistent with the log:
        #: checked at start-up, or written by this process.
        self._known: tuple[int, bytes] | None = None

    def path(self, log_id: str) -> Path:
        return directory_copy_path(self.directory, log_id)

    def trust(self, size: int, root: bytes) -> None:
        """The log checked the copy of (C{size}, C{root}) against its records."""
        self._known = (size, root)

    def copy(self, log_id: str) -> Checkpoint | None:
        """
        The checkpoint held for C{log_id}, its signature and origin verified
        with the log's key (L{bind}); C{None} if there is none.  Blocking.

        @raise WitnessCopyError: there is a copy, but it is not a regular
            file, malformed, or not signed by the log's key.
        @raise WitnessError: it cannot be read.
        """
        if self._verifier is None:
            raise WitnessError(f"{self!r} is not attached to a log (no verifier key)")
        return read_directory_copy(self.directory, log_id, self._verifier, missing_dir_ok=True)

    def newest(self, log_id: str) -> tuple[int, bytes] | None:
        """(size, root) of the verified copy (L{copy}); C{None} if none."""
        held = self.copy(log_id)
        return None if held is None else (held.size, held.root)

    def _deliver(self, checkpoint: WitnessCheckpoint) -> Deferred[None]:
        return self._run(lambda: self._store(checkpoint))

    def _store(self, checkpoint: WitnessCheckpoint) -> None:
        try:
            self.directory.mkdir(mode=0o700, exist_ok=True)
        except OSError as e:
            raise WitnessError(f"cannot create {self.directory}: {e.strerror or e}") from None
        path = self.path(checkpoint.log_id)
        try:
            held = self.copy(checkpoint.log_id)
        except WitnessCopyError as e:
            raise WitnessCopyError(
                f"{e}; not replacing it: the log's signing key was replaced, or the copy was "
                f"forged or damaged. Check the log with a pinned verifier key ('hoopgw audit verify "
                f"--vkey PINNED --witness {self.directory}'), then move {path} aside"
            ) from None
        if held is not None:
            if held.size > checkpoint.size:
                raise WitnessConflict(_rollback_message(str(path), held.size, checkpoint.size))
            if held.size == checkpoint.size:
                if held.root != checkpoint.root:
                    raise WitnessConflict(
                        f"{path} holds a different checkpoint of the same size {held.size}: the log "
                        f"was rewritten (a fork)"
                    )
                self._known = (held.size, held.root)
                return
            if self._known != (held.size, held.root):
                self._check_extends(path, held, checkpoint)
        self._write(path, checkpoint)
        self._known = (checkpoint.size, checkpoint.root)

    def _check_extends(self, path: Path, held: Checkpoint, checkpoint: WitnessCheckpoint) -> None:
        """
        The records give C{held}'s root at its size and C{checkpoint}'s at
        its own: the new checkpoint is a consistent extension of the copy.
        (Only for a copy this process neither checked nor wrote: it reads
        the records from the start.)
        """
        records = self._records
        if records is None:
            raise WitnessError(f"{self!r} is not attached to a log (no records file)")
        try:
            offset, frontier = position_at(records, held.size)
        except (OSError, WitnessError) as e:
            raise WitnessError(f"cannot check {path} against {records}: {e}") from None
        tree = CompactTree(held.size, list(frontier))
        if tree.root() != held.root:
            raise WitnessConflict(
                f"{path} holds checkpoint size {held.size}, but the log's first {held.size} records "
                f"have another Merkle root: the log was rewritten (signed with the same key)"
            )
        for leaf in leaf_hashes_between(records, offset, checkpoint.offset):
            tree.append(leaf)
        if tree.size != checkpoint.size or tree.root() != checkpoint.root:
            raise WitnessConflict(
                f"checkpoint size {checkpoint.size} does not extend the copy in {path} (size "
                f"{held.size}): the records between them do not give its root"
            )

    def _write(self, path: Path, checkpoint: WitnessCheckpoint) -> None:
        # A new, uniquely named file (O_CREAT | O_EXCL | O_NOFOLLOW, mode
        # 0600): nothing already in the folder (a symbolic link planted
        # where a temporary file would go) is ever opened for writing.
        tmp: str | None = None
        try:
            fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=self.directory)
            try:
                data = checkpoint.note
                while data:
                    data = data[os.write(fd, data) :]
                os.fsync(fd)
            finally:
                os.close(fd)
            os.replace(tmp, path)
            tmp = None
            dir_fd = os.open(self.directory, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
            try:
                os.fsync(dir_fd)
            finally:
                os.close(dir_fd)
        except OSError as e:
            raise WitnessError(f"writing {path} failed: {e.strerror or e} (errno {e.errno})") from None
        finally:
            if tmp is not None:
                try:
                    os.unlink(tmp)
                except OSError:
                    pass


class HTTPWitness(Witness):
    """
    A C2SP tlog-witness: C{POST <url>/add-checkpoint} with C{old <size>},
    the consistency proof from that size, a blank line and the note.

    The witness must be configured with the log's verifier key and its
    origin (C{hoopgw/<gateway name>/<log id>}).  With the witness's own
    keys (C{vkeys}: C{[audit] witness} entries' C{vkey}), a 200 counts
    only if it carries a cosignature of the checkpoint by one of them (a
    proxy, a redirect or a man in the middle cannot forge one); without,
    any 200 is believed.  Cosignatures are not kept.  Answers are read up
    to L{MAX_NOTE_BYTES}; a longer one is cut off and refused.
    """

    kind = "http"

    def __init__(
        self,
        url: str,
        *,
        records: Path | str,
        reactor: Any = None,
        run: BlockingRunner | None = None,
        timeout: float = 10.0,
        metrics: IMetrics | None = None,
        client: Any = None,
        vkeys: Sequence[str] = (),
    ) -> None:
        super().__init__(url, metrics=metrics)
        self.keys = tuple(CosignatureVerifier.from_vkey(k) for k in vkeys)
        if reactor is None:
            from twisted.internet import reactor
        self.url = url.rstrip("/") + "/add-checkpoint"
        self._records = Path(records)
        self._reactor = reactor
        if run is None:
            run = daemon_runner(reactor)
        self._run = run
        self.timeout = timeout
        self._pool: Any = None
        if client is None:
            from treq.client import HTTPClient
            from twisted.web.client import Agent, HTTPConnectionPool

            # Keep-alive, as tlog-witness recommends.
            self._pool = HTTPConnectionPool(reactor, persistent=True)
            client = HTTPClient(Agent(reactor, pool=self._pool))
        self._client = client
        #: The checkpoint the witness is believed to hold (its size, offset, frontier).
        self._held: WitnessCheckpoint | None = None

    def assume(self, checkpoint: WitnessCheckpoint) -> None:
        self._held = checkpoint

    def close(self) -> Deferred[None]:
        if self._pool is not None:
            # Twisted's HTTPConnectionPool is unannotated: its Deferred fires with None.
            closed: Deferred[None] = self._pool.closeCachedConnections()
            return closed
        return succeed(None)

    def _proof(self, held: WitnessCheckpoint | None, checkpoint: WitnessCheckpoint) -> Deferred[list[bytes]]:
        if held is None or held.size == 0 or held.size >= checkpoint.size:
            return succeed([])
        records = self._records
        assert records is not None  # set by __init__

        def build() -> list[bytes]:
            hashes = leaf_hashes_between(records, held.offset, checkpoint.offset)
            if len(hashes) != checkpoint.size - held.size:
                raise WitnessError(
                    f"{records}: {len(hashes)} records between sizes {held.size} and "
                    f"{checkpoint.size}, expected {checkpoint.size - held.size}"
                )
            return consistency_proof_from(held.size, held.frontier, hashes)

        return self._run(build)

    def _held_at(self, size: int, checkpoint: WitnessCheckpoint) -> Deferred[WitnessCheckpoint | None]:
        """The log's position at C{size} (a witness said it holds that size)."""
        if size == 0:
            return succeed(None)
        held = self._held
        if held is not None and held.size == size:
            return succeed(held)
        records = self._records
        assert records is not None  # set by __init__

        def find() -> WitnessCheckpoint:
            offset, frontier = position_at(records, size)
            tree = CompactTree(size, list(frontier))
            return WitnessCheckpoint(checkpoint.log_id, checkpoint.origin, size, tree.root(), b"", offset, frontier)

        return self._run(find)

    def _content(self, response: Any) -> Deferred[bytes]:
        """The answer's body, at most L{MAX_NOTE_BYTES} (else the connection is dropped)."""
        import treq

        chunks: list[bytes] = []
        received = [0]

        def collect(data: bytes) -> None:
            received[0] += len(data)
            if received[0] > MAX_NOTE_BYTES:
                raise WitnessError(
                    f"POST {self.url}: HTTP {response.code}: the answer is longer than "
                    f"{MAX_NOTE_BYTES} bytes (refused, connection dropped)"
                )
            chunks.append(data)

        length = response.length
        if isinstance(length, int) and length > MAX_NOTE_BYTES:
            response.deliverBody(_Discard())
            from twisted.internet.defer import fail as _fail

            return _fail(
                WitnessError(
                    f"POST {self.url}: HTTP {response.code}: the answer is {length} bytes, more "
                    f"than {MAX_NOTE_BYTES} (refused unread)"
                )
            )
        return treq.collect(response, collect).addCallback(lambda _: b"".join(chunks))

    @inlineCallbacks
    def _deliver(self, checkpoint: WitnessCheckpoint) -> Generator[Deferred[Any], Any, None]:
        held = self._held
        if held is not None and held.size > checkpoint.size:
            held = None  # ask; a witness ahead of the log answers with its size
        for attempt in range(2):
            proof = yield self._proof(held, checkpoint)
            old = held.size if held is not None and held.size <= checkpoint.size else 0
            body = request_body(old, proof, checkpoint.note)
            try:
                response = yield self._client.post(
                    self.url,
                    data=body,
                    timeout=self.timeout,
                    reactor=self._reactor,
                    allow_redirects=False,
                    headers={"Content-Type": ["text/plain; charset=utf-8"]},
                )
                d = self._content(response)
                d.addTimeout(self.timeout, self._reactor)
                content = yield d
            except WitnessError:
                raise
            except Exception as e:
                raise WitnessError(f"POST {self.url}: {type(e).__name__}: {e}") from None
            code = response.code
            if code == 200:
                if self.keys:
                    try:
                        verify_cosignature(content, _note_body(checkpoint.note), self.keys)
                    except WitnessError as e:
                        raise WitnessError(
                            f"POST {self.url}: 200, but {e}: not the configured witness's answer "
                            f"(a proxy or a man in the middle?); not counted"
                        ) from None
                self._held = checkpoint
                return
            if code == 409:
                size = _parse_size(content)
                if size is None:
                    raise WitnessError(f"POST {self.url}: 409 without a tree size in its body")
                if size > checkpoint.size:
                    raise WitnessConflict(_rollback_message(self.url, size, checkpoint.size))
                if size == checkpoint.size or size == old:
                    raise WitnessConflict(
                        f"witness {self.url} holds a different checkpoint of size {size} "
                        f"than this log: the log was rewritten (a fork)"
                    )
                if attempt == 0:
                    held = yield self._held_at(size, checkpoint)
                    continue
            if code == 422:
                raise WitnessConflict(
                    f"witness {self.url} holds a checkpoint of size {old} this log does not "
                    f"extend (the consistency proof from it does not verify): the log was rewritten"
                )
            if code == 403:
                # Logged critically: it is also what a replaced signing key looks like.
                raise WitnessConflict(
                    f"POST {self.url}: 403: the witness does not accept this checkpoint's signature: "
                    f"the gateway's signing key is not the one the witness was configured with (the "
                    f"key was replaced?), or the witness was configured with the wrong verifier key"
                )
            if code == 404:
                raise WitnessError(
                    f"POST {self.url}: 404: the witness does not know this log's origin "
                    f"{checkpoint.origin!r}; configure it with the verifier key (audit.vkey) and origin"
                )
            raise WitnessError(
                f"POST {self.url}: HTTP {code}: {content[:200].decode('utf-8', 'replace')!r}"
            )


class _Discard(Protocol):
    """Drops a response body it will not read (the connection is closed)."""

    def connectionMade(self) -> None:
        if self.transport is not None:
            self.transport.loseConnection()


def _note_body(note: bytes) -> bytes:
    """A signed note's text (the checkpoint body), up to and including its last newline."""
    return note[: note.find(b"\n\n") + 1]


def _parse_note_body(data: bytes) -> Checkpoint:
    from hoopgw.audit.checkpoint import parse_checkpoint_body

    separator = data.find(b"\n\n")
    if separator < 0:
        raise CheckpointError("not a signed note (no blank line after the checkpoint body)")
    return parse_checkpoint_body(data[: separator + 1])


# -- offline checks (hoopgw audit verify --witness) -------------------------


def read_directory_copy(
    directory: Path | str, log_id: str, verifier: Verifier, *, missing_dir_ok: bool = False
) -> Checkpoint | None:
    """
    The checkpoint a directory witness holds for C{log_id}, its signature
    verified; C{None} if it holds none.  Blocking (L{read_note_file}: never
    on a FIFO, a symbolic link or a large file).

    @raise WitnessCopyError: not a regular file, too large, malformed, not
        signed by the key, or of another log.
    @raise WitnessError: it cannot be read, or the directory does not exist
        (unless C{missing_dir_ok}).
    """
    path = directory_copy_path(directory, log_id)
    data = read_note_file(path)
    if data is None:
        if not missing_dir_ok and not Path(directory).is_dir():
            raise WitnessError(f"witness directory {directory} does not exist")
        return None
    try:
        checkpoint = verify_checkpoint(data, verifier)
    except CheckpointError as e:
        raise WitnessCopyError(
            f"{path}: {e} (the copy does not verify with the log's key {verifier.name} "
            f"{verifier.key_id.hex()})"
        ) from None
    expected = f"{verifier.name}/{log_id}"
    if checkpoint.origin != expected:
        raise WitnessCopyError(f"{path}: origin {checkpoint.origin!r}, expected {expected!r}")
    return checkpoint


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    """A redirect is an answer from somewhere else: never followed."""

    def redirect_request(
        self,
        req: urllib.request.Request,
        fp: IO[bytes],
        code: int,
        msg: str,
        headers: HTTPMessage,
        newurl: str,
    ) -> urllib.request.Request | None:
        return None


_OPENER = urllib.request.build_opener(_NoRedirect)


def _post(url: str, body: bytes, timeout: float) -> tuple[int, bytes]:
    request = urllib.request.Request(url, data=body, method="POST")
    request.add_header("Content-Type", "text/plain; charset=utf-8")
    try:
        with _OPENER.open(request, timeout=timeout) as response:
            return response.status, _read_limited(response, url)
    except urllib.error.HTTPError as e:
        if 300 <= e.code < 400:
            raise WitnessError(
                f"POST {url}: HTTP {e.code} redirect to {e.headers.get('Location')!r}: not followed "
                f"(a witness answers itself; configure its real URL)"
            ) from None
        return e.code, _read_limited(e, url)
    except (OSError, ValueError) as e:
        raise WitnessError(f"POST {url}: {getattr(e, 'reason', None) or e}") from None


def _read_limited(response: IO[bytes], url: str) -> bytes:
    data = response.read(MAX_NOTE_BYTES + 1)
    if len(data) > MAX_NOTE_BYTES:
        raise WitnessError(f"POST {url}: the answer is longer than {MAX_NOTE_BYTES} bytes (refused)")
    return data


def check_http_witness(
    url: str,
    note: bytes,
    size: int,
    proof_from: Callable[[int], list[bytes]],
    *,
    timeout: float = 10.0,
    vkeys: Sequence[str] = (),
    now: float | None = None,
) -> str:
    """
    Check a tlog-witness's newest checkpoint of a log against the log's
    last checkpoint (C{note}, of C{size} records), for C{audit verify}.

    tlog-witness has no read API, so this asks with C{add-checkpoint}: the
    log's own last checkpoint with C{old <size>}.  A witness holding exactly
    it answers 200; one holding another size answers 409 with that size.
    A larger size means the log was rolled back.  A smaller one is asked
    again with the consistency proof from it (C{proof_from(size)}), which
    the witness verifies: that brings it up to the log's last checkpoint,
    a checkpoint the log's key signed and the witness would have got anyway.

    A 200 is believed only with a cosignature of the checkpoint by one of
    the witness's keys (C{vkeys}), dated within L{COSIGNATURE_MAX_AGE} of
    this clock: anyone on the path (a proxy, plain http, a redirect) can
    answer 200.  Without C{vkeys}, a 200 is refused as proving nothing.
    Redirects are not followed.

    @return: what was found, for the report.
    @raise WitnessConflict: the witness holds a newer or different checkpoint.
    @raise WitnessError: it could not be asked, refused, or its answer
        could not be authenticated.
    """
    try:
        keys = [CosignatureVerifier.from_vkey(k) for k in vkeys]
    except CheckpointError as e:
        raise WitnessError(f"witness {url}: {e}") from None
    body = _note_body(note)
    endpoint = url.rstrip("/") + "/add-checkpoint"

    def authenticated(content: bytes, found: str) -> str:
        if not keys:
            raise WitnessError(
                f"witness {url} answered 200 ({found}), but no witness key was given to check its "
                f"cosignature (--witness-vkey, or vkey in [audit] witness): an unauthenticated "
                f"answer proves nothing (a proxy, a redirect target or a man in the middle can "
                f"answer 200), so the log is not shown to extend what the witness holds"
            )
        try:
            key, timestamp = verify_cosignature(content, body, keys, now=now, max_age=COSIGNATURE_MAX_AGE)
        except WitnessError as e:
            raise WitnessError(f"witness {url} answered 200 ({found}), but {e}") from None
        when = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(timestamp))
        return f"{found}; cosigned by {key.name} ({key.key_id.hex()}) at {when}"

    code, content = _post(endpoint, request_body(size, [], note), timeout)
    if code == 200:
        return authenticated(content, f"witness {url} holds this log's last checkpoint (size {size})")
    if code in (403, 404):
        raise WitnessError(f"witness {url} does not know this log's key or origin (HTTP {code})")
    if code != 409:
        raise WitnessError(f"POST {endpoint}: HTTP {code}: {content[:200].decode('utf-8', 'replace')!r}")
    seen = _parse_size(content)
    if seen is None:
        raise WitnessError(f"POST {endpoint}: 409 without a tree size in its body")
    if seen > size:
        raise WitnessConflict(_rollback_message(url, seen, size))
    if seen == size:
        raise WitnessConflict(
            f"witness {url} holds a different checkpoint of size {size} than this log's: "
            f"the log was rewritten (a fork)"
        )
    if seen == 0:
        raise WitnessError(
            f"witness {url} holds no checkpoint of this log: it is not this log's witness, "
            f"or never received a checkpoint"
        )
    code, content = _post(endpoint, request_body(seen, proof_from(seen), note), timeout)
    if code == 200:
        return authenticated(
            content,
            f"witness {url} held checkpoint size {seen}, which this log extends (consistency "
            f"proof {seen} -> {size} accepted; the witness now holds size {size})",
        )
    if code == 422:
        raise WitnessConflict(
            f"witness {url} holds checkpoint size {seen}, which this log does not extend "
            f"(the consistency proof from it does not verify): the log was rewritten"
        )
    raise WitnessError(f"POST {endpoint}: HTTP {code}: {content[:200].decode('utf-8', 'replace')!r}")
