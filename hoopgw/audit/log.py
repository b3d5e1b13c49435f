"""
The hash-chained, Merkle-checkpointed audit log (see docs/audit-format.md).

Write path: a record is encoded once (RFC 8785), handed to the kernel with
one C{write(2)} on an C{O_APPEND} descriptor before L{AuditLog.append}
returns, and made durable by C{fdatasync} in a thread by group commit.
Anything the log cannot write makes it fail closed: L{AuditLog.failed} says
why and every later append raises L{AuditUnavailable}.
"""

from __future__ import annotations

import json
import os
import secrets
import time
from collections import deque
from hashlib import sha256
from pathlib import Path
from typing import Any, Callable, Mapping

from twisted.application.service import Service
from twisted.internet.defer import Deferred, DeferredLock, fail, succeed
from twisted.internet.task import LoopingCall
from twisted.internet.threads import deferToThreadPool
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import implementer

from hoopgw.audit.canonical import CanonicalizationError, canonical_json, canonical_record
from hoopgw.audit.checkpoint import (
    check_key_name,
    load_or_create_signing_key,
    sign_checkpoint,
    vkey_text,
)
from hoopgw.audit.merkle import CompactTree
from hoopgw.config import AuditSettings
from hoopgw.errors import AuditUnavailable, ConfigError
from hoopgw.interfaces import IAuditLog

__all__ = [
    "AuditLog",
    "AuditStateError",
    "CHECKPOINTS_FILE",
    "GENESIS_PREV",
    "RECORDS_FILE",
    "RESERVED_FIELDS",
    "STATE_FILE",
    "VKEY_FILE",
]

RECORDS_FILE = "records.jsonl"
CHECKPOINTS_FILE = "checkpoints.notes"
STATE_FILE = "state.json"
VKEY_FILE = "audit.vkey"
SIGNING_KEY_FILE = Path("keys") / "audit_ed25519.pem"

#: C{prev} of the record with C{seq} 0.
GENESIS_PREV = "0" * 64
RESERVED_FIELDS = frozenset({"v", "log", "seq", "prev", "time", "event"})
SYNC_MODES = ("batched", "strict")

_READ_CHUNK = 1 << 20


class AuditStateError(AuditUnavailable):
    """
    The files in the audit directory are not a log this process can
    continue (a torn or invalid record, a state file that does not match
    the records): start-up is refused rather than editing evidence.
    """


def _thread_runner(reactor: Any) -> Callable[[Callable[[], object]], Deferred]:
    def run(f: Callable[[], object]) -> Deferred:
        return deferToThreadPool(reactor, reactor.getThreadPool(), f)

    return run


def _write_all(fd: int, data: bytes) -> None:
    written = os.write(fd, data)
    if written != len(data):
        # A short write (a signal, a nearly full disk): the rest goes in
        # further writes; with O_APPEND each lands at the end.
        view = memoryview(data)[written:]
        while view:
            view = view[os.write(fd, view) :]


@implementer(IAuditLog)
class AuditLog(Service):
    """
    An append-only audit log in one directory.

    A plain class rather than attrs: L{Service} keeps its state in class
    attributes (C{running}, C{parent}) that attrs would shadow.

    @ivar log_id: the log's identifier, C{None} until started.
    @ivar failed: C{None}, or why the log cannot be written.
    """

    _log = Logger()

    def __init__(
        self,
        directory: Path | str,
        *,
        signing_key: Any,
        origin: str,
        reactor: Any,
        sync: str = "batched",
        sync_window_ms: int = 10,
        checkpoint_every: int = 1000,
        checkpoint_interval_seconds: float = 60,
        metrics: Any = None,
        sync_runner: Callable[[Callable[[], object]], Deferred] | None = None,
    ) -> None:
        """
        @param signing_key: the Ed25519 private key checkpoints are signed with.
        @param origin: the signing key's name (no whitespace, no C{+});
            checkpoint origins are C{<origin>/<log id>}.
        @param reactor: provides C{seconds}, C{callLater} and (unless
            C{sync_runner} is given) a thread pool for fdatasync.
        @param sync_runner: runs a blocking callable off the reactor thread and
            returns a Deferred of its result; defaults to the reactor's
            thread pool.  Tests pass a synchronous one.
        """
        if sync not in SYNC_MODES:
            raise ValueError(f"audit sync mode {sync!r}: expected one of {', '.join(SYNC_MODES)}")
        if sync_window_ms < 0:
            raise ValueError(f"audit sync_window_ms {sync_window_ms}: expected >= 0")
        if checkpoint_every < 1:
            raise ValueError(f"audit checkpoint_every {checkpoint_every}: expected >= 1")
        self.directory = Path(directory)
        self._signing_key = signing_key
        self.origin = check_key_name(origin)
        self._reactor = reactor
        self.sync = sync
        self._strict = sync == "strict"
        self._window = sync_window_ms / 1000.0
        self._checkpoint_every = checkpoint_every
        self._checkpoint_interval = checkpoint_interval_seconds
        self._metrics = metrics
        self._run = sync_runner if sync_runner is not None else _thread_runner(reactor)

        self.log_id: str | None = None
        self.failed: str | None = None
        self._records_path = self.directory / RECORDS_FILE
        self._checkpoints_path = self.directory / CHECKPOINTS_FILE
        self._state_path = self.directory / STATE_FILE
        self._fd: int | None = None
        self._cp_fd: int | None = None
        self._seq = 0  # next seq == records in the log == tree size
        self._prev = GENESIS_PREV
        self._offset = 0
        self._tree = CompactTree()
        self._ts_second = -1
        self._ts_prefix = ""

        self._synced = 0  # records [0, _synced) are known durable
        self._sync_call: Any = None
        self._sync_in_flight = False
        self._last_sync_start = float("-inf")
        # (records needed durable, Deferred) in non-decreasing order.
        self._waiters: deque[tuple[int, Deferred]] = deque()
        self._idle_waiters: list[Deferred] = []

        self._checkpoint_lock = DeferredLock()
        self._checkpoint_requested = 0  # size of the last checkpoint asked for
        self._checkpoint_loop: LoopingCall | None = None

    # -- construction from the configuration --------------------------------

    @classmethod
    def from_settings(
        cls,
        settings: AuditSettings,
        *,
        data_dir: Path | str,
        gateway_name: str,
        reactor: Any = None,
        metrics: Any = None,
    ) -> "AuditLog":
        """
        The gateway's audit log: records under C{data_dir/audit}, signed with
        C{data_dir/keys/audit_ed25519.pem} (created on first start), whose
        verifier key is exported to C{data_dir/audit/audit.vkey}.

        Blocking file I/O: call at start-up.
        """
        if reactor is None:
            from twisted.internet import reactor  # type: ignore[no-redef]
        origin = f"hoopgw/{gateway_name}"
        try:
            check_key_name(origin)
        except ValueError:
            raise ConfigError(
                None,
                "gateway.name",
                f"a name without whitespace or '+' (it names the audit signing key), got {gateway_name!r}",
            ) from None
        data_dir = Path(data_dir)
        key_path = data_dir / SIGNING_KEY_FILE
        directory = data_dir / "audit"
        vkey_path = directory / VKEY_FILE
        existing = [
            p
            for p in (directory / RECORDS_FILE, directory / CHECKPOINTS_FILE)
            if p.exists() and p.stat().st_size
        ]
        if existing and not key_path.exists():
            # A new key would make the existing log unverifiable for ever.
            raise AuditStateError(
                f"audit signing key {key_path} is missing but {existing[0]} holds a log signed "
                f"with it: restore the key from backup, or move {directory} aside to start a new log"
            )
        try:
            key = load_or_create_signing_key(key_path)
        except ValueError as e:
            raise AuditStateError(str(e)) from None
        directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        vkey = vkey_text(origin, key.public_key()) + "\n"
        if not vkey_path.exists():
            vkey_path.write_text(vkey)
        elif vkey_path.read_text() != vkey:
            # Never overwrite what auditors may have pinned; the operator decides.
            raise AuditStateError(
                f"{vkey_path} does not match the signing key {key_path} (or gateway.name "
                f"changed): the key was replaced or the name changed; restore them, or move "
                f"{directory} aside to start a new log"
            )
        return cls(
            directory,
            signing_key=key,
            origin=origin,
            reactor=reactor,
            sync=settings.sync,
            sync_window_ms=settings.sync_window_ms,
            checkpoint_every=settings.checkpoint_every,
            checkpoint_interval_seconds=settings.checkpoint_interval_seconds,
            metrics=metrics,
        )

    @property
    def vkey(self) -> str:
        """The verifier key text auditors need (no secret)."""
        return vkey_text(self.origin, self._signing_key.public_key())

    @property
    def checkpoint_origin(self) -> str:
        return f"{self.origin}/{self.log_id}"

    @property
    def size(self) -> int:
        """Records written so far (the next record's seq)."""
        return self._seq

    # -- service ------------------------------------------------------------

    def startService(self) -> None:
        """
        Open (or create) the log and resume it.

        @raise AuditStateError: if the directory's files cannot be continued;
            the message names the file, the record and what is wrong.
        """
        self._open()
        Service.startService(self)
        if self._checkpoint_interval and self._checkpoint_interval > 0:
            self._checkpoint_loop = LoopingCall(self._periodic_checkpoint)
            self._checkpoint_loop.clock = self._reactor
            self._checkpoint_loop.start(self._checkpoint_interval, now=False).addErrback(
                self._background_failure, "periodic checkpoint loop"
            )

    def stopService(self) -> Deferred:
        """
        Stop taking records, write a final checkpoint if there are records
        since the last one, wait for pending syncs, and close the files.
        """
        Service.stopService(self)
        if self._checkpoint_loop is not None and self._checkpoint_loop.running:
            self._checkpoint_loop.stop()
        self._checkpoint_loop = None
        if self._fd is None:
            return succeed(None)
        if self.failed is None and self._seq > self._checkpoint_requested:
            d = self.checkpoint()
        else:
            d = self._checkpoint_lock.run(lambda: None)
        d.addErrback(self._background_failure, "final checkpoint")
        d.addCallback(lambda _: self._when_idle())
        d.addCallback(lambda _: self._close())
        return d

    def _close(self) -> None:
        if self._sync_call is not None and self._sync_call.active():
            self._sync_call.cancel()
        self._sync_call = None
        for fd in (self._fd, self._cp_fd):
            if fd is not None:
                try:
                    os.close(fd)
                except OSError:
                    pass
        self._fd = self._cp_fd = None
        # Strict appenders whose sync never came (a failed log) must hear so.
        self._fail_waiters(AuditUnavailable(self._unavailable_message()))

    # -- start-up -----------------------------------------------------------

    def _open(self) -> None:
        directory = self.directory
        directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        state = self._read_state()
        if state is None:
            if self._records_path.exists() and self._records_path.stat().st_size > 0:
                self._log.warn(
                    "audit: {state} is missing; resuming from a full scan of {records}",
                    state=str(self._state_path),
                    records=str(self._records_path),
                )
                log_id = None
            else:
                log_id = secrets.token_hex(16)
                self._write_state(self._state_dict(log_id, 0, 0, GENESIS_PREV, CompactTree()))
            size, offset, prev, tree = 0, 0, GENESIS_PREV, CompactTree()
        else:
            log_id, size, offset, prev, tree = state

        fd = os.open(
            self._records_path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o600
        )
        try:
            end = os.fstat(fd).st_size
            if offset > end:
                raise AuditStateError(
                    f"{self._records_path}: {end} bytes, but {self._state_path} says the first "
                    f"{size} records end at byte {offset}: records were removed; refusing to start"
                )
            log_id, size, offset, prev = self._scan(log_id, size, offset, prev, tree, end)
            self._check_checkpoints_tail()
            cp_fd = os.open(
                self._checkpoints_path,
                os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC,
                0o600,
            )
        except BaseException:
            os.close(fd)
            raise
        self._fd, self._cp_fd = fd, cp_fd
        self.log_id = log_id
        self._seq, self._offset, self._prev, self._tree = size, offset, prev, tree
        self._synced = size
        self._checkpoint_requested = state[1] if state is not None else 0

    def _read_state(self) -> tuple[str, int, int, str, CompactTree] | None:
        path = self._state_path
        try:
            data = path.read_bytes()
        except FileNotFoundError:
            return None

        def bad(what: str) -> AuditStateError:
            return AuditStateError(f"{path}: {what}; refusing to start")

        try:
            state = json.loads(data)
        except ValueError as e:
            raise bad(f"not JSON ({e})") from None
        if not isinstance(state, dict) or state.get("v") != 1:
            raise bad('expected an object with "v": 1')
        log_id, size, offset, prev = (state.get(k) for k in ("log", "size", "offset", "prev"))
        if not isinstance(log_id, str) or not log_id:
            raise bad('"log" is not a non-empty string')
        if type(size) is not int or size < 0 or type(offset) is not int or offset < 0:
            raise bad('"size" and "offset" must be non-negative integers')
        if not isinstance(prev, str) or len(prev) != 64:
            raise bad('"prev" is not 64 hex digits')
        try:
            tree = CompactTree.from_list(size, state.get("frontier", []))
        except (TypeError, ValueError) as e:
            raise bad(f'"frontier": {e}') from None
        if tree.root().hex() != state.get("root"):
            raise bad('"root" does not match "frontier"')
        return log_id, size, offset, prev, tree

    def _scan(
        self,
        log_id: str | None,
        seq: int,
        offset: int,
        prev: str,
        tree: CompactTree,
        end: int,
    ) -> tuple[str, int, int, str]:
        """
        Check and absorb the records after the state file's offset (those
        written since the last checkpoint), so the log resumes at the right
        seq, prev and tree without rehashing what the state already covers.
        """
        path = self._records_path
        if offset == end:
            if log_id is None:
                log_id = secrets.token_hex(16)
            return log_id, seq, offset, prev
        with open(path, "rb") as f:
            f.seek(offset)
            pending = b""
            position = offset
            remaining = end - offset
            while remaining > 0:
                chunk = f.read(min(_READ_CHUNK, remaining))
                if not chunk:
                    break
                remaining -= len(chunk)
                lines = (pending + chunk).split(b"\n")
                pending = lines.pop()
                for line in lines:
                    where = f"{path}: record at byte {position} (expected seq {seq})"
                    record = _check_line(line, where)
                    if log_id is None:
                        log_id = record.get("log")
                        if not isinstance(log_id, str) or not log_id:
                            raise AuditStateError(f"{where}: \"log\" is not a non-empty string")
                    problem = _chain_problem(record, log_id, seq, prev)
                    if problem:
                        raise AuditStateError(f"{where}: {problem}; refusing to start")
                    prev = sha256(line).hexdigest()
                    tree.append(sha256(b"\x00" + line).digest())
                    seq += 1
                    position += len(line) + 1
            if pending or remaining:
                raise AuditStateError(
                    f"{path}: the last {end - position} bytes (from byte {position}, where seq "
                    f"{seq} would start) are a torn record with no trailing newline; refusing "
                    f"to start. The record was never acknowledged; an operator may move the "
                    f"tail aside after 'hoopgw audit verify'"
                )
        assert log_id is not None
        return log_id, seq, position, prev

    def _check_checkpoints_tail(self) -> None:
        path = self._checkpoints_path
        try:
            with open(path, "rb") as f:
                f.seek(0, os.SEEK_END)
                length = f.tell()
                if length == 0:
                    return
                f.seek(max(0, length - 2))
                tail = f.read()
        except FileNotFoundError:
            return
        if not tail.endswith(b"\n\n"):
            raise AuditStateError(
                f"{path}: does not end with a complete note (a blank line after the "
                f"signatures): a checkpoint write was torn; refusing to start"
            )

    # -- the write path -----------------------------------------------------

    def append(self, event: str, body: Mapping[str, Any]) -> Deferred:
        """
        See L{IAuditLog.append}.

        @raise AuditUnavailable: the log cannot be written (it says why).
        @raise ValueError: C{body} is not a valid record body (a reserved key,
            a value canonical JSON cannot hold); the log is unaffected.
        """
        if self.failed is not None or self._fd is None:
            raise AuditUnavailable(self._unavailable_message())
        started = time.perf_counter()
        if not isinstance(event, str) or not event:
            raise ValueError(f"audit event {event!r}: expected a non-empty string")
        clash = RESERVED_FIELDS.intersection(body)
        if clash:
            raise ValueError(
                f"audit record body for {event!r} has key(s) {', '.join(sorted(clash))}, "
                f"which the log sets itself ({', '.join(sorted(RESERVED_FIELDS))})"
            )
        seq = self._seq
        header = {
            "v": 1,
            "log": self.log_id,
            "seq": seq,
            "prev": self._prev,
            "time": self._timestamp(),
            "event": event,
        }
        try:
            data = canonical_record(header, body)
        except CanonicalizationError as e:
            raise ValueError(f"audit record body for {event!r}: {e}") from None
        try:
            _write_all(self._fd, data + b"\n")
        except OSError as e:
            self._fail(f"write to {self._records_path} failed: {e.strerror or e} (errno {e.errno})")
            raise AuditUnavailable(self._unavailable_message()) from None
        self._prev = sha256(data).hexdigest()
        self._tree.append(sha256(b"\x00" + data).digest())
        self._seq = seq + 1
        self._offset += len(data) + 1
        if self._sync_call is None and not self._sync_in_flight:
            self._schedule_sync()
        if self._seq - self._checkpoint_requested >= self._checkpoint_every:
            self.checkpoint().addErrback(self._background_failure, "checkpoint by count")
        if self._metrics is not None:
            self._metrics.audit_written(time.perf_counter() - started)
        if self._strict:
            d: Deferred = Deferred()
            self._waiters.append((seq + 1, d))
            return d
        return succeed(seq)

    def _timestamp(self) -> str:
        total = round(self._reactor.seconds() * 1_000_000)
        second, micro = divmod(total, 1_000_000)
        if second != self._ts_second:
            self._ts_second = second
            self._ts_prefix = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(second))
        return f"{self._ts_prefix}.{micro:06d}Z"

    # -- group commit ---------------------------------------------------------

    def _schedule_sync(self) -> None:
        if self._sync_call is not None or self._sync_in_flight:
            return
        # At most one fdatasync per window: everything written meanwhile
        # rides on the next one (group commit).
        delay = max(0.0, self._last_sync_start + self._window - self._reactor.seconds())
        self._sync_call = self._reactor.callLater(delay, self._start_sync)

    def _start_sync(self) -> None:
        self._sync_call = None
        fd = self._fd
        if self.failed is not None or fd is None or self._seq <= self._synced:
            return
        target = self._seq
        self._sync_in_flight = True
        self._last_sync_start = self._reactor.seconds()
        d = self._run(lambda: os.fdatasync(fd))
        d.addCallbacks(self._sync_done, self._sync_failed, callbackArgs=(target,))

    def _sync_done(self, _: object, target: int) -> None:
        self._sync_in_flight = False
        self._synced = max(self._synced, target)
        waiters = self._waiters
        while waiters and waiters[0][0] <= self._synced:
            needed, d = waiters.popleft()
            d.callback(needed - 1)
        self._notify_idle()
        if self._seq > self._synced and self.failed is None:
            self._schedule_sync()

    def _sync_failed(self, failure: Failure) -> None:
        self._sync_in_flight = False
        error = failure.value
        if isinstance(error, OSError):
            reason = f"fdatasync of {self._records_path} failed: {error.strerror or error} (errno {error.errno})"
        else:
            reason = f"fdatasync of {self._records_path} failed: {failure.getErrorMessage()}"
        self._fail(reason)
        self._notify_idle()

    def _when_synced(self, size: int) -> Deferred:
        """A Deferred that fires once records [0, size) are durable."""
        if size <= self._synced:
            return succeed(None)
        if self.failed is not None:
            return fail(AuditUnavailable(self._unavailable_message()))
        d: Deferred = Deferred()
        self._waiters.append((size, d))
        self._schedule_sync()
        return d

    def _when_idle(self) -> Deferred:
        if not self._sync_in_flight:
            return succeed(None)
        d: Deferred = Deferred()
        self._idle_waiters.append(d)
        return d

    def _notify_idle(self) -> None:
        waiters, self._idle_waiters = self._idle_waiters, []
        for d in waiters:
            d.callback(None)

    # -- checkpoints ----------------------------------------------------------

    def checkpoint(self) -> Deferred:
        """
        Sign and write a checkpoint of the log as it is now, once the
        records it covers are durable.  See L{IAuditLog.checkpoint}.
        """
        if self.failed is not None or self._fd is None:
            return fail(AuditUnavailable(self._unavailable_message()))
        size = self._seq
        root = self._tree.root()
        state = self._state_dict(self.log_id, size, self._offset, self._prev, self._tree, root)
        self._checkpoint_requested = max(self._checkpoint_requested, size)
        note = sign_checkpoint(self._signing_key, self.origin, self.checkpoint_origin, size, root)
        return self._checkpoint_lock.run(self._write_checkpoint, size, note, state)

    def _write_checkpoint(self, size: int, note: bytes, state: dict) -> Deferred:
        cp_fd = self._cp_fd

        def write_files() -> None:
            assert cp_fd is not None
            _write_all(cp_fd, note + b"\n")
            os.fdatasync(cp_fd)
            self._write_state(state)

        def written(_: object) -> int:
            if self._metrics is not None:
                self._metrics.checkpoint_written(self._reactor.seconds())
            return size

        def failed(failure: Failure) -> Failure:
            if not failure.check(AuditUnavailable):
                self._fail(
                    f"writing checkpoint {size} to {self._checkpoints_path} failed: "
                    f"{failure.getErrorMessage()}"
                )
                return Failure(AuditUnavailable(self._unavailable_message()))
            return failure

        d = self._when_synced(size)
        # A checkpoint must never claim records a crash could still lose.
        d.addCallback(lambda _: self._check_writable())
        d.addCallback(lambda _: self._run(write_files))
        d.addCallbacks(written, failed)
        return d

    def _check_writable(self) -> None:
        if self.failed is not None or self._cp_fd is None:
            raise AuditUnavailable(self._unavailable_message())

    def _periodic_checkpoint(self) -> None:
        if self.failed is None and self._seq > self._checkpoint_requested:
            self.checkpoint().addErrback(self._background_failure, "periodic checkpoint")

    def _state_dict(
        self,
        log_id: str | None,
        size: int,
        offset: int,
        prev: str,
        tree: CompactTree,
        root: bytes | None = None,
    ) -> dict:
        return {
            "v": 1,
            "log": log_id,
            "size": size,
            "offset": offset,
            "prev": prev,
            "frontier": tree.to_list(),
            "root": (root if root is not None else tree.root()).hex(),
        }

    def _write_state(self, state: dict) -> None:
        # Atomic replace: a crash leaves the old state or the new, never half.
        tmp = self._state_path.with_name(STATE_FILE + ".tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
        try:
            _write_all(fd, json.dumps(state, sort_keys=True).encode() + b"\n")
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, self._state_path)
        dir_fd = os.open(self.directory, os.O_RDONLY | os.O_CLOEXEC)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)

    # -- failing closed -------------------------------------------------------

    def _unavailable_message(self) -> str:
        if self.failed is not None:
            return (
                f"audit log {self.directory} cannot be written ({self.failed}); "
                f"refusing traffic until it is repaired and the gateway restarted"
            )
        if self.running:
            return f"audit log {self.directory} is not open"
        return f"audit log {self.directory} is not running"

    def _fail(self, reason: str) -> None:
        if self.failed is not None:
            return
        self.failed = reason
        self._log.critical(
            "audit log {directory} failed, refusing all traffic: {reason}",
            directory=str(self.directory),
            reason=reason,
        )
        if self._metrics is not None:
            self._metrics.audit_failed()
        if self._sync_call is not None and self._sync_call.active():
            self._sync_call.cancel()
        self._sync_call = None
        self._fail_waiters(AuditUnavailable(self._unavailable_message()))

    def _fail_waiters(self, error: Exception) -> None:
        waiters, self._waiters = self._waiters, deque()
        for _, d in waiters:
            d.errback(Failure(error))

    def _background_failure(self, failure: Failure, what: str) -> None:
        # The reason is already in self.failed (and logged once, critically);
        # anything else is a bug worth its own line.
        if failure.check(AuditUnavailable):
            return None
        self._log.failure("audit: {what} failed", failure, what=what)
        return None


def _check_line(line: bytes, where: str) -> dict:
    """Parse one record line and check it is canonical JSON of an object."""
    try:
        record = json.loads(line.decode("utf-8"), parse_constant=_reject_constant)
    except (UnicodeDecodeError, ValueError) as e:
        raise AuditStateError(f"{where}: not a JSON record ({e}); refusing to start") from None
    if not isinstance(record, dict):
        raise AuditStateError(f"{where}: not a JSON object; refusing to start")
    try:
        canonical = canonical_json(record)
    except CanonicalizationError as e:
        raise AuditStateError(f"{where}: {e}; refusing to start") from None
    if canonical != line:
        raise AuditStateError(f"{where}: not in canonical (RFC 8785) form; refusing to start")
    return record


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def _chain_problem(record: dict, log_id: str, seq: int, prev: str) -> str | None:
    if record.get("v") != 1:
        return f'"v" is {record.get("v")!r}, expected 1'
    if record.get("log") != log_id:
        return f'"log" is {record.get("log")!r}, expected {log_id!r}'
    if record.get("seq") != seq or type(record.get("seq")) is not int:
        return f'"seq" is {record.get("seq")!r}, expected {seq}'
    if record.get("prev") != prev:
        return f'"prev" is {record.get("prev")!r}, expected {prev} (SHA-256 of the previous record)'
    return None
