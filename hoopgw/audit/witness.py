"""
Witnesses: copies of every signed checkpoint kept out of the audit
directory's reach, so that rolling the log *and* its checkpoints back to an
earlier state (which both verify on their own) is caught.

Two kinds, configured with C{[audit] witness} (docs/audit-format.md,
"Witnesses"):

  - L{DirectoryWitness}: a directory, ideally on another mount or host.
    Each checkpoint note replaces C{<dir>/<log id>.checkpoint} atomically
    (temporary file, fsync, rename, fsync of the folder); a checkpoint
    older than, or different from, the one already there is refused and
    reported as a rollback.
  - L{HTTPWitness}: a C2SP tlog-witness (c2sp.org/tlog-witness).  Each
    checkpoint is POSTed to C{<url>/add-checkpoint} with a consistency
    proof from the size the witness last acknowledged, built from that
    size's Merkle frontier and the records written since (read back in a
    thread, never on the reactor).

Neither is on the records' path: a record is written and acknowledged
whatever the witnesses do.  Deliveries run one at a time per witness; while
one is in flight only the newest later checkpoint waits (it proves
everything before it).  A failure is logged and counted (L{Witness.failures},
L{Witness.last_error}); the next checkpoint tries again, with a proof from
the size the witness last acknowledged, so a witness that was down catches
up when it comes back.  A witness that holds a *newer* or *different*
checkpoint (a rollback or a fork) is logged critically and counted in
L{Witness.conflicts}.

The module also has the offline checks C{hoopgw audit verify --witness}
runs (L{read_directory_copy}, L{check_http_witness}); those are blocking
and never need the reactor.
"""

from __future__ import annotations

import base64
import os
import re
import urllib.error
import urllib.request
from hashlib import sha256
from pathlib import Path
from typing import Any, Callable, Sequence

from attrs import frozen
from twisted.internet.defer import Deferred, inlineCallbacks, maybeDeferred, succeed
from twisted.logger import Logger
from twisted.python.failure import Failure

from hoopgw.audit.checkpoint import Checkpoint, CheckpointError, Verifier, verify_checkpoint
from hoopgw.audit.merkle import CompactTree, consistency_proof_from

__all__ = [
    "DirectoryWitness",
    "HTTPWitness",
    "WitnessCheckpoint",
    "WitnessConflict",
    "WitnessError",
    "check_http_witness",
    "directory_copy_path",
    "is_url",
    "leaf_hashes_between",
    "position_at",
    "read_directory_copy",
    "request_body",
]

SIZE_CONTENT_TYPE = "text/x.tlog.size"
#: The most consistency proof lines tlog-witness allows.
MAX_PROOF_LINES = 63
_READ_CHUNK = 1 << 20
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

    def __init__(self, target: str, *, metrics: Any = None) -> None:
        self.target = target
        self.sent = 0
        self.failures = 0
        self.conflicts = 0
        self.last_error: str | None = None
        self.acknowledged: int | None = None
        self._metrics = metrics
        self._busy = False
        self._pending: WitnessCheckpoint | None = None
        self._idle: list[Deferred] = []

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.target}>"

    @property
    def busy(self) -> bool:
        """A delivery is in flight."""
        return self._busy

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

    def flush(self) -> Deferred:
        """A Deferred that fires once nothing is in flight or waiting."""
        if not self._busy:
            return succeed(None)
        d: Deferred = Deferred()
        self._idle.append(d)
        return d

    def close(self) -> Deferred:
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
        if failure.check(WitnessConflict):
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
            hook(self.target, failure.check(WitnessConflict) is not None)

    def _deliver(self, checkpoint: WitnessCheckpoint) -> Deferred | None:
        raise NotImplementedError


class DirectoryWitness(Witness):
    """
    Keeps the newest checkpoint note of each log in a directory:
    C{<dir>/<log id>.checkpoint}, replaced atomically and fsynced.
    """

    kind = "directory"

    def __init__(
        self,
        directory: Path | str,
        *,
        run: Callable[[Callable[[], object]], Deferred] | None = None,
        metrics: Any = None,
    ) -> None:
        super().__init__(str(directory), metrics=metrics)
        self.directory = Path(directory)
        self._run = run if run is not None else (lambda f: maybeDeferred(f))

    def path(self, log_id: str) -> Path:
        return directory_copy_path(self.directory, log_id)

    def newest(self, log_id: str) -> tuple[int, bytes] | None:
        """
        (size, root) of the checkpoint held for C{log_id}, unverified (the
        verifier checks the signature); C{None} if there is none.

        @raise WitnessError: the copy is unreadable or malformed.
        """
        path = self.path(log_id)
        try:
            data = path.read_bytes()
        except FileNotFoundError:
            return None
        except OSError as e:
            raise WitnessError(f"cannot read {path}: {e.strerror or e}") from None
        try:
            checkpoint = _parse_note_body(data)
        except CheckpointError as e:
            raise WitnessError(f"{path}: {e}") from None
        return checkpoint.size, checkpoint.root

    def _deliver(self, checkpoint: WitnessCheckpoint) -> Deferred:
        return self._run(lambda: self._store(checkpoint))

    def _store(self, checkpoint: WitnessCheckpoint) -> None:
        try:
            self.directory.mkdir(mode=0o700, exist_ok=True)
        except OSError as e:
            raise WitnessError(f"cannot create {self.directory}: {e.strerror or e}") from None
        held = self.newest(checkpoint.log_id)
        path = self.path(checkpoint.log_id)
        if held is not None:
            size, root = held
            if size > checkpoint.size:
                raise WitnessConflict(_rollback_message(str(path), size, checkpoint.size))
            if size == checkpoint.size and root != checkpoint.root:
                raise WitnessConflict(
                    f"{path} holds a different checkpoint of the same size {size}: the log "
                    f"was rewritten (a fork)"
                )
            if size == checkpoint.size:
                return
        tmp = path.with_name(path.name + ".tmp")
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
            try:
                data = checkpoint.note
                while data:
                    data = data[os.write(fd, data) :]
                os.fsync(fd)
            finally:
                os.close(fd)
            os.replace(tmp, path)
            dir_fd = os.open(self.directory, os.O_RDONLY | os.O_CLOEXEC)
            try:
                os.fsync(dir_fd)
            finally:
                os.close(dir_fd)
        except OSError as e:
            raise WitnessError(f"writing {path} failed: {e.strerror or e} (errno {e.errno})") from None


class HTTPWitness(Witness):
    """
    A C2SP tlog-witness: C{POST <url>/add-checkpoint} with C{old <size>},
    the consistency proof from that size, a blank line and the note.

    The witness must be configured with the log's verifier key and its
    origin (C{hoopgw/<gateway name>/<log id>}).  Cosignatures it returns
    are not kept: what matters here is that it holds the newest checkpoint.
    """

    kind = "http"

    def __init__(
        self,
        url: str,
        *,
        records: Path | str,
        reactor: Any = None,
        run: Callable[[Callable[[], object]], Deferred] | None = None,
        timeout: float = 10.0,
        metrics: Any = None,
        client: Any = None,
    ) -> None:
        super().__init__(url, metrics=metrics)
        if reactor is None:
            from twisted.internet import reactor  # type: ignore[no-redef]
        self.url = url.rstrip("/") + "/add-checkpoint"
        self._records = Path(records)
        self._reactor = reactor
        if run is None:
            from twisted.internet.threads import deferToThreadPool

            run = lambda f: deferToThreadPool(reactor, reactor.getThreadPool(), f)  # noqa: E731
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

    def close(self) -> Deferred:
        if self._pool is not None:
            return self._pool.closeCachedConnections()
        return succeed(None)

    def _proof(self, held: WitnessCheckpoint | None, checkpoint: WitnessCheckpoint) -> Deferred:
        if held is None or held.size == 0 or held.size >= checkpoint.size:
            return succeed([])
        records = self._records

        def build() -> list[bytes]:
            hashes = leaf_hashes_between(records, held.offset, checkpoint.offset)
            if len(hashes) != checkpoint.size - held.size:
                raise WitnessError(
                    f"{records}: {len(hashes)} records between sizes {held.size} and "
                    f"{checkpoint.size}, expected {checkpoint.size - held.size}"
                )
            return consistency_proof_from(held.size, held.frontier, hashes)

        return self._run(build)

    def _held_at(self, size: int, checkpoint: WitnessCheckpoint) -> Deferred:
        """The log's position at C{size} (a witness said it holds that size)."""
        if size == 0:
            return succeed(None)
        held = self._held
        if held is not None and held.size == size:
            return succeed(held)
        records = self._records

        def find() -> WitnessCheckpoint:
            offset, frontier = position_at(records, size)
            tree = CompactTree(size, list(frontier))
            return WitnessCheckpoint(checkpoint.log_id, checkpoint.origin, size, tree.root(), b"", offset, frontier)

        return self._run(find)

    @inlineCallbacks
    def _deliver(self, checkpoint: WitnessCheckpoint):
        import treq

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
                d = treq.content(response)
                d.addTimeout(self.timeout, self._reactor)
                content = yield d
            except WitnessError:
                raise
            except Exception as e:
                raise WitnessError(f"POST {self.url}: {type(e).__name__}: {e}") from None
            code = response.code
            if code == 200:
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
            if code in (403, 404):
                raise WitnessError(
                    f"POST {self.url}: {code}: the witness does not know this log's key or origin "
                    f"{checkpoint.origin!r}; configure it with the verifier key (audit.vkey) and origin"
                )
            raise WitnessError(
                f"POST {self.url}: HTTP {code}: {content[:200].decode('utf-8', 'replace')!r}"
            )


def _parse_note_body(data: bytes) -> Checkpoint:
    from hoopgw.audit.checkpoint import parse_checkpoint_body

    separator = data.find(b"\n\n")
    if separator < 0:
        raise CheckpointError("not a signed note (no blank line after the checkpoint body)")
    return parse_checkpoint_body(data[: separator + 1])


# -- offline checks (hoopgw audit verify --witness) -------------------------


def read_directory_copy(directory: Path | str, log_id: str, verifier: Verifier) -> Checkpoint | None:
    """
    The checkpoint a directory witness holds for C{log_id}, its signature
    verified; C{None} if it holds none.

    @raise WitnessError: unreadable, malformed or not signed by the key.
    """
    path = directory_copy_path(directory, log_id)
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        if not Path(directory).is_dir():
            raise WitnessError(f"witness directory {directory} does not exist") from None
        return None
    except OSError as e:
        raise WitnessError(f"cannot read {path}: {e.strerror or e}") from None
    try:
        checkpoint = verify_checkpoint(data, verifier)
    except CheckpointError as e:
        raise WitnessError(f"{path}: {e}") from None
    expected = f"{verifier.name}/{log_id}"
    if checkpoint.origin != expected:
        raise WitnessError(f"{path}: origin {checkpoint.origin!r}, expected {expected!r}")
    return checkpoint


def _post(url: str, body: bytes, timeout: float) -> tuple[int, bytes]:
    request = urllib.request.Request(url, data=body, method="POST")
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return response.status, response.read(1 << 16)
    except urllib.error.HTTPError as e:
        return e.code, e.read(1 << 16)
    except (OSError, ValueError) as e:
        raise WitnessError(f"POST {url}: {getattr(e, 'reason', None) or e}") from None


def check_http_witness(
    url: str,
    note: bytes,
    size: int,
    proof_from: Callable[[int], list[bytes]],
    *,
    timeout: float = 10.0,
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

    @return: what was found, for the report.
    @raise WitnessConflict: the witness holds a newer or different checkpoint.
    @raise WitnessError: it could not be asked, or refused.
    """
    endpoint = url.rstrip("/") + "/add-checkpoint"
    code, content = _post(endpoint, request_body(size, [], note), timeout)
    if code == 200:
        return f"witness {url} holds this log's last checkpoint (size {size})"
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
        return (
            f"witness {url} held checkpoint size {seen}, which this log extends (consistency "
            f"proof {seen} -> {size} accepted; the witness now holds size {size})"
        )
    if code == 422:
        raise WitnessConflict(
            f"witness {url} holds checkpoint size {seen}, which this log does not extend "
            f"(the consistency proof from it does not verify): the log was rewritten"
        )
    raise WitnessError(f"POST {endpoint}: HTTP {code}: {content[:200].decode('utf-8', 'replace')!r}")
