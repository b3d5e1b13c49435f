"""
The hash-chained, Merkle-checkpointed audit log (see docs/audit-format.md).

Write path: a record is encoded once (RFC 8785), handed to the kernel with
one C{write(2)} on an C{O_APPEND} descriptor before L{AuditLog.append}
returns, and made durable by C{fdatasync} in a thread by group commit.
Anything the log cannot write makes it fail closed: L{AuditLog.failed} says
why and every later append raises L{AuditUnavailable}.
"""

from __future__ import annotations

import fcntl
import json
import os
import re
import secrets
import stat
import time
from collections import deque
from functools import partial
from hashlib import sha256
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence, TypeVar

from attrs import define, field, frozen
from twisted.application.service import Service
from twisted.internet.defer import Deferred, DeferredLock, fail, gatherResults, succeed
from twisted.internet.task import LoopingCall
from twisted.internet.threads import deferToThreadPool
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import implementer

from hoopgw.audit import events
from hoopgw.audit.canonical import CanonicalizationError, canonical_json, canonical_record
from hoopgw.audit.checkpoint import (
    Checkpoint,
    CheckpointError,
    Verifier,
    check_key_name,
    load_or_create_signing_key,
    sign_checkpoint,
    verify_checkpoint,
    vkey_text,
)
from hoopgw.audit.merkle import CompactTree
from hoopgw.audit.witness import (
    BlockingRunner,
    DirectoryWitness,
    HTTPWitness,
    Witness,
    WitnessCheckpoint,
    WitnessCopyError,
    WitnessError,
    WitnessTimeout,
    call_with_timeout,
    daemon_runner,
    is_url,
)
from hoopgw.config import AuditSettings
from hoopgw.errors import AuditUnavailable, ConfigError
from hoopgw.interfaces import IAuditLog, IMetrics

__all__ = [
    "AuditLog",
    "AuditStateError",
    "CHECKPOINTS_FILE",
    "CLOSES_FIELD",
    "GENESIS_PREV",
    "RECORDS_FILE",
    "RESERVED_FIELDS",
    "RESOLUTION_FILE",
    "SET_ASIDE_DIR",
    "STATE_FILE",
    "VKEY_FILE",
    "lock_records",
]

RECORDS_FILE = "records.jsonl"
CHECKPOINTS_FILE = "checkpoints.notes"
STATE_FILE = "state.json"
VKEY_FILE = "audit.vkey"
SIGNING_KEY_FILE = Path("keys") / "audit_ed25519.pem"

#: Operator decisions about an unsigned tail (hoopgw audit resolve-tail),
#: recorded and removed by the next start.
RESOLUTION_FILE = "tail-resolution.json"
#: Where resolve-tail --set-aside moves records.
SET_ASIDE_DIR = "set-aside"

#: C{prev} of the record with C{seq} 0.
GENESIS_PREV = "0" * 64
#: Set (to C{true}) by the log on the record that closes it at a clean stop;
#: the final checkpoint covers it, which makes it a signed end.
CLOSES_FIELD = "closes_log"
RESERVED_FIELDS = frozenset({"v", "log", "seq", "prev", "time", "event", CLOSES_FIELD})
SYNC_MODES = ("batched", "strict")

_READ_CHUNK = 1 << 20
#: The last note of the checkpoints file is looked for in this many bytes.
_LAST_NOTE_WINDOW = 1 << 16
_SIZE_LINE = re.compile(rb"0|[1-9][0-9]{0,19}")

_T = TypeVar("_T")


class AuditStateError(AuditUnavailable):
    """
    The files in the audit directory are not a log this process can
    continue (a torn or invalid record, a state file that does not match
    the records, records after the log's signed end, checkpoints missing):
    start-up is refused rather than editing or adopting evidence.
    """


def _thread_runner(reactor: Any) -> BlockingRunner:
    def run(f: Callable[[], _T]) -> Deferred[_T]:
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


def lock_records(fd: int, path: Path) -> None:
    """
    Take the advisory lock that says a process owns the log in this
    directory (the gateway while it runs, C{hoopgw audit resolve-tail}).

    @raise AuditStateError: another process holds it.
    """
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        raise AuditStateError(
            f"{path} is locked by another process (a gateway running on this data "
            f"directory, or 'hoopgw audit resolve-tail'); refusing to open it twice"
        ) from None


@define
class _Position:
    """Where the log is after its first C{size} records."""

    size: int
    offset: int
    prev: str
    tree: CompactTree

    @classmethod
    def start(cls) -> "_Position":
        return cls(0, 0, GENESIS_PREV, CompactTree())

    def copy(self) -> "_Position":
        return _Position(self.size, self.offset, self.prev, self.tree.copy())

    def to_dict(self) -> dict[str, Any]:
        return {
            "size": self.size,
            "offset": self.offset,
            "prev": self.prev,
            "frontier": self.tree.to_list(),
            "root": self.tree.root().hex(),
        }


@frozen
class _State:
    log_id: str
    checkpoint: int
    resume: _Position


@define
class _Scan:
    end: _Position
    at_checkpoint: _Position | None = None
    #: the record just before the checkpoint's size closed the log
    closed: bool = False
    #: (seq, what) of records after the checkpoint that only a checkpoint may follow
    marks: list[tuple[int, str]] = field(factory=list)
    #: the Merkle root at each size asked for (a witness's copy's size)
    roots: dict[int, bytes] = field(factory=dict)


@frozen
class _Plan:
    """What L{AuditLog._open} found, and what the start writes."""

    log_id: str
    end: _Position
    at_checkpoint: _Position | None  # None: a new log (no checkpoint yet)
    resume: _Position
    checkpoint_size: int
    checkpoint_root: bytes | None
    recovered: int | None  # records adopted after a run that did not close the log
    adopted: dict[str, Any] | None
    set_aside: tuple[dict[str, Any], ...]
    resolution: bool


def _check_body(event: object, body: Mapping[str, Any]) -> None:
    """A record's event and body as a caller may give them (L{ValueError} says why not)."""
    if not isinstance(event, str) or not event:
        raise ValueError(f"audit event {event!r}: expected a non-empty string")
    clash = RESERVED_FIELDS.intersection(body)
    if clash:
        raise ValueError(
            f"audit record body for {event!r} has key(s) {', '.join(sorted(clash))}, "
            f"which the log sets itself ({', '.join(sorted(RESERVED_FIELDS))})"
        )


@implementer(IAuditLog)
class AuditLog(Service):
    """
    An append-only audit log in one directory.

    A plain class rather than attrs: L{Service} keeps its state in class
    attributes (C{running}, C{parent}) that attrs would shadow.

    @ivar log_id: the log's identifier, C{None} until started.
    @ivar failed: C{None}, or why the log cannot be written.
    @ivar witnesses: where each checkpoint is also sent.
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
        metrics: IMetrics | None = None,
        sync_runner: BlockingRunner | None = None,
        witnesses: Sequence[Witness] = (),
        witness_timeout_seconds: float = 10,
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
        @param witnesses: each signed checkpoint is handed to these once it
            is written (L{hoopgw.audit.witness}); they never hold records up.
        @param witness_timeout_seconds: how long a stop waits for the
            witnesses to take the final checkpoint.
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
        self.witnesses: tuple[Witness, ...] = tuple(witnesses)
        self._witness_timeout = witness_timeout_seconds
        verifier = Verifier.from_vkey(self.vkey)
        for witness in self.witnesses:
            witness.bind(self.directory / RECORDS_FILE, verifier)

        self.log_id: str | None = None
        self.failed: str | None = None
        self._records_path = self.directory / RECORDS_FILE
        self._checkpoints_path = self.directory / CHECKPOINTS_FILE
        self._state_path = self.directory / STATE_FILE
        self._resolution_path = self.directory / RESOLUTION_FILE
        self._fd: int | None = None
        # The descriptor append() writes to: None once the log failed, is
        # closing (its closing record is written) or closed.  One test on
        # the append path covers all three.
        self._append_fd: int | None = None
        self._closing = False
        self._closing_record: tuple[str, dict[str, Any]] | None = None
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
        self._waiters: deque[tuple[int, Deferred[int]]] = deque()
        self._idle_waiters: list[Deferred[None]] = []

        self._checkpoint_lock = DeferredLock()
        self._checkpoint_requested = 0  # size of the last checkpoint asked for
        self._checkpoint_loop: LoopingCall | None = None
        # The position of the last checkpoint asked for, and a position
        # strictly before it (the one before, or the start) that the state
        # file names for the next start to resume from: rescanning from
        # there proves the checkpoint's last record, and so whether it
        # closed the log.
        self._cp_position: _Position | None = None
        self._resume = _Position.start()

    # -- construction from the configuration --------------------------------

    @classmethod
    def from_settings(
        cls,
        settings: AuditSettings,
        *,
        data_dir: Path | str,
        gateway_name: str,
        reactor: Any = None,
        metrics: IMetrics | None = None,
    ) -> "AuditLog":
        """
        The gateway's audit log: records under C{data_dir/audit}, signed with
        C{data_dir/keys/audit_ed25519.pem} (created on first start), whose
        verifier key is exported to C{data_dir/audit/audit.vkey}, and the
        configured witnesses.

        Blocking file I/O: call at start-up.
        """
        if reactor is None:
            from twisted.internet import reactor
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
        # Witness I/O runs in daemon threads of its own, never the reactor's
        # pool: a hung witness mount must not keep the process from exiting.
        run = daemon_runner(reactor)
        witnesses: list[Witness] = []
        timeout = getattr(settings, "witness_timeout_seconds", 10)
        vkeys = dict(getattr(settings, "witness_vkeys", ()))
        for target in getattr(settings, "witnesses", ()):
            if is_url(target):
                witnesses.append(
                    HTTPWitness(
                        target,
                        records=directory / RECORDS_FILE,
                        reactor=reactor,
                        run=run,
                        timeout=timeout,
                        metrics=metrics,
                        vkeys=(vkeys[target],) if target in vkeys else (),
                    )
                )
                continue
            witness_dir = Path(target)
            try:
                same_device = call_with_timeout(
                    lambda: witness_dir.stat().st_dev == directory.stat().st_dev,
                    timeout,
                    f"stat of witness directory {witness_dir}",
                )
            except (OSError, WitnessError):
                same_device = False
            if same_device:
                cls._log.warn(
                    "audit witness directory {witness} is on the same filesystem as the audit "
                    "log {directory}: it catches a rollback of the audit files, not of the disk",
                    witness=str(witness_dir),
                    directory=str(directory),
                )
            witnesses.append(DirectoryWitness(witness_dir, run=run, metrics=metrics))
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
            witnesses=witnesses,
            witness_timeout_seconds=timeout,
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

    def close_with(self, event: str, body: Mapping[str, Any]) -> None:
        """
        Make C{event} with C{body} the record that closes the log when it
        stops (instead of C{log.closed}): it is written last, marked
        C{"closes_log": true}, and the final checkpoint covers it, which
        makes it the log's signed end.

        @raise ValueError: C{body} is not a valid record body.
        """
        _check_body(event, body)
        self._closing_record = (event, dict(body))

    def stopService(self) -> Deferred[None]:
        """
        Stop taking records, write the closing record and the final
        checkpoint that covers it (the log's signed end), give it to the
        witnesses (waiting at most C{witness_timeout_seconds}), wait for
        pending syncs, and close the files.
        """
        Service.stopService(self)
        if self._checkpoint_loop is not None and self._checkpoint_loop.running:
            self._checkpoint_loop.stop()
        self._checkpoint_loop = None
        if self._fd is None:
            return succeed(None)
        if self.failed is None and not self._closing:
            self._write_closing_record()
        if self.failed is None and self._seq > self._checkpoint_requested:
            d = self.checkpoint().addCallback(lambda _: None)  # its size is not needed
        else:
            d = self._checkpoint_lock.run(lambda: None)
        d.addErrback(self._background_failure, "final checkpoint")
        return (
            d.addCallback(lambda _: self._flush_witnesses())
            .addCallback(lambda _: self._when_idle())
            .addCallback(lambda _: self._close())
        )

    def _write_closing_record(self) -> None:
        event, body = self._closing_record or (
            events.LOG_CLOSED,
            events.log_closed("the audit log was stopped"),
        )
        try:
            self._write_own(event, body, closes=True)
        except ValueError as e:
            # A closing body the log cannot hold must not leave it unclosed.
            self._log.error("audit: closing record {event} refused ({error}); writing {closed}",
                            event=event, error=str(e), closed=events.LOG_CLOSED)
            self._write_own(events.LOG_CLOSED, events.log_closed(f"the audit log was stopped ({event} refused: {e})"), closes=True)
        except AuditUnavailable:
            return  # failed: the reason is logged
        self._closing = True
        self._append_fd = None

    def _flush_witnesses(self) -> Deferred[None]:
        if not self.witnesses:
            return succeed(None)
        done: Deferred[None] = Deferred()

        def finish(_: object) -> None:
            if timer.active():
                timer.cancel()
            if not done.called:
                done.callback(None)

        def late() -> None:
            slow = [w.target for w in self.witnesses if w.busy]
            self._log.warn(
                "audit: witness(es) {witnesses} did not take the final checkpoint within "
                "{timeout}s; stopping anyway (they get it from the next run's first checkpoint)",
                witnesses=", ".join(slow),
                timeout=self._witness_timeout,
            )
            if not done.called:
                done.callback(None)

        # Flushing and closing together are bounded: nothing a witness does
        # (a hung mount, a server that never answers) holds the stop up.
        timer = self._reactor.callLater(self._witness_timeout, late)
        flushed = gatherResults([w.flush() for w in self.witnesses], consumeErrors=True)
        flushed.addBoth(lambda _: gatherResults([w.close() for w in self.witnesses], consumeErrors=True))
        flushed.addBoth(finish)
        return done

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
        self._fd = self._cp_fd = self._append_fd = None
        # Strict appenders whose sync never came (a failed log) must hear so.
        self._fail_waiters(AuditUnavailable(self._unavailable_message()))

    # -- start-up -----------------------------------------------------------

    def _open(self) -> None:
        directory = self.directory
        directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        fd = os.open(
            self._records_path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o600
        )
        cp_fd = None
        try:
            lock_records(fd, self._records_path)
            end = os.fstat(fd).st_size
            self._check_checkpoints_tail()
            plan = self._plan(end)
            cp_fd = os.open(
                self._checkpoints_path,
                os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC,
                0o600,
            )
            self._fd, self._cp_fd = fd, cp_fd
            self.log_id = plan.log_id
            position = plan.end
            self._seq, self._offset, self._prev, self._tree = (
                position.size,
                position.offset,
                position.prev,
                position.tree,
            )
            self._synced = position.size
            self._checkpoint_requested = plan.checkpoint_size
            self._cp_position = plan.at_checkpoint
            self._resume = plan.resume
            self._start_writes(plan)
        except BaseException:
            self._fd = self._cp_fd = self._append_fd = None
            for descriptor in (fd, cp_fd):
                if descriptor is not None:
                    os.close(descriptor)
            raise
        self._append_fd = fd

    def _plan(self, end: int) -> _Plan:
        """
        Decide, from the signed checkpoints, the records and the directory
        witnesses' copies (the state file only says where to start reading),
        whether the log can be continued and what the start must record.
        """
        records, cp_path = self._records_path, self._checkpoints_path
        last = self._read_last_checkpoint()
        state = self._read_state()
        entries = self._read_resolution()

        if last is None:
            if end > 0:
                missing = "missing" if not cp_path.exists() else "empty"
                raise AuditStateError(
                    f"{cp_path} is {missing} but {records} holds records ({end} bytes): every "
                    f"log has a signed checkpoint from its first start, so its checkpoints were "
                    f"deleted; refusing to start. Restore {cp_path} from a backup or a witness's "
                    f"copy, or move {self.directory} aside to start a new log"
                )
            if entries:
                raise AuditStateError(
                    f"{self._resolution_path} holds decisions about an unsigned tail, but there is "
                    f"no log here ({cp_path} and {records} are empty or missing): it was not written "
                    f"by 'hoopgw audit resolve-tail' for this log; refusing to start. Move it aside"
                )
            # A new log (a directory whose files were removed gets a new
            # one too: never the id of a log its witnesses know).
            log_id = secrets.token_hex(16)
            first = _Position.start()
            return _Plan(log_id, first, None, first, 0, None, None, None, (), False)

        cp_offset, checkpoint = last
        log_id = checkpoint.origin[len(self.origin) + 1 :]
        size = checkpoint.size
        where_cp = f"the last checkpoint in {cp_path} (at byte {cp_offset}, size {size})"
        self._check_notes(checkpoint.origin, cp_offset)
        copies = self._witness_copies(log_id, size, checkpoint.root)
        # The log's root must be computed at each copy's size (below the
        # last checkpoint's: a witness that missed the latest).
        sizes = frozenset(copy.size for _, _, copy in copies if copy.size < size)
        start: _Position | None = None
        if state is not None and state.log_id == log_id:
            if state.checkpoint > size:
                raise AuditStateError(
                    f"{self._state_path} was written after a checkpoint of size {state.checkpoint}, "
                    f"but {where_cp} is older: checkpoints were removed from the end of {cp_path}; "
                    f"refusing to start. Restore {cp_path} from a backup or a witness's copy "
                    f"('hoopgw audit verify --witness' compares them)"
                )
            if state.resume.size < size or state.resume.size == size == 0:
                start = state.resume
        elif state is not None:
            self._log.warn(
                "audit: {state} belongs to log {other}, not {log_id}; rescanning {records}",
                state=str(self._state_path),
                other=state.log_id,
                log_id=log_id,
                records=str(records),
            )
        if start is None:
            if state is None and end > 0:
                self._log.warn(
                    "audit: {state} is missing or stale; resuming from a full scan of {records}",
                    state=str(self._state_path),
                    records=str(records),
                )
            start = _Position.start()
        if sizes and min(sizes) < start.size:
            # A witness holds an older checkpoint than the resume point.
            start = _Position.start()
        if start.offset > end:
            raise AuditStateError(
                f"{records}: {end} bytes, but {self._state_path} says the first "
                f"{start.size} records end at byte {start.offset}: records were removed; refusing to start"
            )
        scan = self._scan(log_id, start, end, size, sizes)
        if scan.at_checkpoint is None:
            raise AuditStateError(
                f"{records}: {scan.end.size} records, but {where_cp} covers {size}: records were "
                f"removed or cut off the end; refusing to start"
            )
        if scan.at_checkpoint.tree.root() != checkpoint.root and start.size > 0:
            self._log.warn(
                "audit: {state} does not lead to the last checkpoint's root; rescanning {records}",
                state=str(self._state_path),
                records=str(records),
            )
            start = _Position.start()
            scan = self._scan(log_id, start, end, size, sizes)
        assert scan.at_checkpoint is not None
        if scan.at_checkpoint.tree.root() != checkpoint.root:
            raise AuditStateError(
                f"{records}: the first {size} records do not match {where_cp} (Merkle root): "
                f"records before seq {size} were altered; refusing to start. 'hoopgw audit verify' "
                f"names the first bad record"
            )
        for witness, path, copy in copies:
            root = checkpoint.root if copy.size == size else scan.roots.get(copy.size)
            if root != copy.root:
                raise AuditStateError(
                    f"witness {path} holds checkpoint size {copy.size} of this log (signed with its "
                    f"key), but the Merkle root of the first {copy.size} records in {records} differs: "
                    f"the log was rewritten (and re-signed: whoever did it could read the signing key "
                    f"{self.directory.parent / SIGNING_KEY_FILE}); refusing to start. Restore the log "
                    f"from a copy that 'hoopgw audit verify --witness' accepts"
                )
            witness.trust(copy.size, copy.root)
        closed = size > 0 and scan.closed
        tail = scan.end.size - size
        span = f"seq {size}..{scan.end.size - 1}, from byte {scan.at_checkpoint.offset}"

        set_aside, adopted = self._check_resolution(entries, log_id, size, scan, closed, where_cp)
        if adopted is not None:
            digest = self._tail_digest(scan.at_checkpoint.offset, scan.end.offset)
            if closed or adopted.get("count") != tail or adopted.get("sha256") != digest:
                raise AuditStateError(
                    f"{self._resolution_path}: its 'adopt' decision (seq {adopted.get('first_seq')}, "
                    f"{adopted.get('count')} records, sha256 {adopted.get('sha256')}) does not match "
                    f"the {tail} record(s) now after {where_cp} ({span}, sha256 {digest}): the tail "
                    f"changed after it was resolved; refusing to start. Run 'hoopgw audit "
                    f"resolve-tail' again"
                )
        if tail and closed:
            raise AuditStateError(
                f"{records}: {tail} record(s) ({span}) follow the log's signed end: {where_cp} "
                f"covers seq {size - 1}, which closed the log at a clean stop, and nothing is "
                f"written after that. These records were not written by hoopgw; refusing to "
                f"start rather than sign them. Inspect them ('hoopgw audit verify' names them), "
                f"then move them aside with 'hoopgw audit resolve-tail --set-aside' (kept in "
                f"{self.directory / SET_ASIDE_DIR}; the next start records what was found)"
            )
        if tail and scan.marks and adopted is None:
            seq, what = scan.marks[0]
            raise AuditStateError(
                f"{records}: the {tail} record(s) after {where_cp} ({span}) include seq {seq}, "
                f"{what}, which hoopgw always covers with a checkpoint before writing anything "
                f"more: the checkpoint that covered it was removed, or the gateway died while "
                f"writing it; refusing to start. Restore {cp_path} from a backup or a witness's "
                f"copy; or, having checked the records, keep them with 'hoopgw audit resolve-tail "
                f"--adopt' (recorded as written but not signed at the time) or move them aside "
                f"with 'hoopgw audit resolve-tail --set-aside'"
            )
        recovered = tail if not closed and (size > 0 or tail) else None
        resume = start if start.size < size else _Position.start()
        return _Plan(
            log_id,
            scan.end,
            scan.at_checkpoint,
            resume,
            size,
            checkpoint.root,
            recovered,
            adopted,
            set_aside,
            bool(entries),
        )

    def _check_resolution(
        self, entries: list[dict[str, Any]], log_id: str, size: int, scan: _Scan, closed: bool, where_cp: str
    ) -> tuple[tuple[dict[str, Any], ...], dict[str, Any] | None]:
        """
        Check each decision in C{tail-resolution.json} against what can be
        verified (the file is not authenticated: anyone able to write the
        audit directory could have written it) and return the bodies to
        record, holding only checked facts: (C{log.tail.set_aside} bodies,
        the last C{adopt} decision).

        @raise AuditStateError: a decision names a checkpoint other than the
            last, or a set-aside file that is missing or differs from what
            it says.
        """
        path = self._resolution_path
        set_aside: list[dict[str, Any]] = []
        adopted: dict[str, Any] | None = None
        assert scan.at_checkpoint is not None
        for number, entry in enumerate(entries, 1):
            action = entry.get("action")
            what = f"{path}: decision {number} ({action})"
            for key in ("checkpoint", "first_seq"):
                if entry.get(key) != size or type(entry.get(key)) is not int:
                    raise AuditStateError(
                        f"{what} is about checkpoint size {entry.get(key)!r}, but {where_cp} is size "
                        f"{size}: it was not written by 'hoopgw audit resolve-tail' for this log as it "
                        f"is (or is left from an earlier resolution); refusing to start. If you did not "
                        f"just run resolve-tail, someone else wrote it: inspect it, then move it aside "
                        f"(and run 'hoopgw audit resolve-tail' again if the start asks for it)"
                    )
            facts: dict[str, Any] = {"checkpoint": size, "first_seq": size}
            torn = entry.get("torn_bytes", 0)
            file_name = entry.get("file")
            if file_name is not None or action == "set-aside" or torn:
                found = self._check_set_aside_file(what, entry, log_id, size, scan.at_checkpoint.prev)
                facts.update(found)
            if action == "set-aside":
                if found["file_sha256"] != entry.get("sha256") or found["bytes"] != entry.get("bytes"):
                    raise AuditStateError(
                        f"{what}: {found['file']} holds {found['bytes']} bytes with sha256 "
                        f"{found['file_sha256']}, but the decision says {entry.get('bytes')!r} bytes, "
                        f"sha256 {entry.get('sha256')!r}: the file or the decision was changed; "
                        f"refusing to start"
                    )
                if found["count"] != entry.get("count"):
                    raise AuditStateError(
                        f"{what}: {found['file']} holds {found['count']} whole record line(s), but the "
                        f"decision says {entry.get('count')!r}: refusing to start"
                    )
                facts["sha256"] = found["file_sha256"]
                facts["closed_before"] = closed
                facts["reason"] = (
                    "records after the log's signed end (appended after a clean stop: not written by hoopgw)"
                    if closed
                    else "records after the last signed checkpoint"
                ) + (
                    f", moved to {found['file']} by 'hoopgw audit resolve-tail --set-aside' (as "
                    f"{RESOLUTION_FILE} says; the start checked the file's size, SHA-256 and lines)"
                )
                set_aside.append(facts)
            else:
                count, digest = entry.get("count"), entry.get("sha256")
                if type(count) is not int or count < 0 or not isinstance(digest, str):
                    raise AuditStateError(f"{what}: \"count\" or \"sha256\" missing or invalid; refusing to start")
                if found_torn := facts.get("bytes"):
                    if facts.get("count") or found_torn != torn:
                        raise AuditStateError(
                            f"{what}: {facts['file']} should hold the {torn!r} torn byte(s) moved aside, "
                            f"but holds {found_torn} byte(s) ({facts.get('count')} whole line(s)): "
                            f"refusing to start"
                        )
                    facts = {
                        "checkpoint": size,
                        "first_seq": size,
                        "file": facts["file"],
                        "file_sha256": facts["file_sha256"],
                        "torn_bytes": found_torn,
                    }
                else:
                    facts["torn_bytes"] = 0
                facts.update(
                    {
                        "decision": "adopt",
                        "count": count,
                        "sha256": digest,
                        "reason": (
                            f"adopted by 'hoopgw audit resolve-tail --adopt' (as {RESOLUTION_FILE} says; "
                            f"the start checked the records' count and SHA-256)"
                        ),
                    }
                )
                adopted = facts
        return tuple(set_aside), adopted

    def _check_set_aside_file(self, what: str, entry: dict[str, Any], log_id: str, size: int, prev: str) -> dict[str, Any]:
        """
        The facts about the file a decision names under C{set-aside/}: its
        size, SHA-256, whole lines, torn bytes, and whether its first line
        continues the log at C{size}.

        @raise AuditStateError: not a plain file name under C{set-aside/},
            missing, not a regular file, or its SHA-256 is not the one named.
        """
        name = entry.get("file")
        folder = self.directory / SET_ASIDE_DIR
        if (
            not isinstance(name, str)
            or not name.startswith(SET_ASIDE_DIR + "/")
            or "/" in name[len(SET_ASIDE_DIR) + 1 :]
            or name[len(SET_ASIDE_DIR) + 1 :] in ("", ".", "..")
        ):
            raise AuditStateError(
                f"{what}: names file {name!r}, expected {SET_ASIDE_DIR}/<name> (resolve-tail writes "
                f"the bytes it moves there); refusing to start"
            )
        path = folder / name[len(SET_ASIDE_DIR) + 1 :]
        try:
            fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
        except OSError as e:
            raise AuditStateError(
                f"{what}: names {path}, which cannot be opened ({e.strerror or e}): the decision does "
                f"not match what is on disk (resolve-tail writes that file first), so it was not "
                f"written by resolve-tail or the file was removed; refusing to start. Move "
                f"{self._resolution_path} aside, and run 'hoopgw audit resolve-tail' again if needed"
            ) from None
        digest = sha256()
        length = lines = 0
        first = b""
        tail = 0
        try:
            if not stat.S_ISREG(os.fstat(fd).st_mode):
                raise AuditStateError(f"{what}: {path} is not a regular file; refusing to start")
            while chunk := os.read(fd, _READ_CHUNK):
                digest.update(chunk)
                if lines == 0 and len(first) < _READ_CHUNK:
                    first += chunk[: _READ_CHUNK - len(first)]
                length += len(chunk)
                newlines = chunk.count(b"\n")
                lines += newlines
                tail = len(chunk) - chunk.rfind(b"\n") - 1 if newlines else tail + len(chunk)
        finally:
            os.close(fd)
        file_sha256 = digest.hexdigest()
        if entry.get("file_sha256") != file_sha256:
            raise AuditStateError(
                f"{what}: {path} has sha256 {file_sha256}, but the decision says "
                f"{entry.get('file_sha256')!r}: the file or the decision was changed after "
                f"resolve-tail wrote them; refusing to start"
            )
        if entry.get("torn_bytes", 0) != tail:
            raise AuditStateError(
                f"{what}: {path} ends with {tail} torn byte(s) (after its last newline), but the "
                f"decision says {entry.get('torn_bytes')!r}; refusing to start"
            )
        facts: dict[str, Any] = {
            "file": name,
            "file_sha256": file_sha256,
            "bytes": length,
            "count": lines,
            "torn_bytes": tail,
        }
        if lines:
            line = first.split(b"\n", 1)[0]
            chained = False
            try:
                record = json.loads(line)
            except (ValueError, RecursionError):
                record = None
            if isinstance(record, dict):
                chained = _chain_problem(record, log_id, size, prev) is None
            # Whether the first record set aside continued the log's chain
            # (seq, log id, prev) where it was cut.
            facts["chained"] = chained
        return facts

    def _tail_digest(self, start: int, end: int) -> str:
        digest = sha256()
        with open(self._records_path, "rb") as f:
            f.seek(start)
            remaining = end - start
            while remaining > 0:
                chunk = f.read(min(_READ_CHUNK, remaining))
                if not chunk:
                    break
                digest.update(chunk)
                remaining -= len(chunk)
        return digest.hexdigest()

    def _start_writes(self, plan: _Plan) -> None:
        """
        What a start records, synchronously, before anything else can be
        written: the first checkpoint of a new log (size 0), a
        C{log.recovered} record after a run that did not close the log, a
        C{log.tail.set_aside} record per tail an operator set aside, and a
        checkpoint covering them.  So an unsigned tail never holds a
        C{log.recovered} record followed by more records.
        """
        try:
            if plan.at_checkpoint is None:
                self._checkpoint_now()
            else:
                for witness in self.witnesses:
                    witness.assume(self._witness_checkpoint(plan.at_checkpoint, plan.checkpoint_root or b"", b""))
            wrote = False
            if plan.recovered is not None:
                self._write_own(events.LOG_RECOVERED, self._recovered_body(plan))
                wrote = True
            for entry in plan.set_aside:
                self._write_own(events.LOG_TAIL_SET_ASIDE, events.log_tail_set_aside(entry))
                wrote = True
            if wrote:
                assert self._fd is not None  # (_write_own refuses a closed log)
                os.fdatasync(self._fd)
                self._synced = self._seq
                self._checkpoint_now()
            if plan.resolution:
                os.unlink(self._resolution_path)
                self._fsync_directory()
        except OSError as e:
            raise AuditStateError(
                f"writing the start-up records of {self.directory} failed: {e.strerror or e} "
                f"(errno {e.errno}); refusing to start"
            ) from None
        except AuditUnavailable as e:
            raise AuditStateError(str(e)) from None

    def _recovered_body(self, plan: _Plan) -> dict[str, Any]:
        count = plan.recovered or 0
        first = plan.checkpoint_size
        body = events.log_recovered(count, first, plan.adopted)
        self._log.warn(
            "audit: the previous run did not close the log; {count} record(s) after the last "
            "checkpoint (size {size}) adopted and recorded as {event}",
            count=count,
            size=first,
            event=events.LOG_RECOVERED,
        )
        return body

    def _read_last_checkpoint(self) -> tuple[int, Checkpoint] | None:
        """
        (byte offset, checkpoint) of the last note in the checkpoints file,
        its signature verified with this log's key; C{None} if there is none.
        """
        path = self._checkpoints_path
        try:
            length = path.stat().st_size
        except FileNotFoundError:
            return None
        if length == 0:
            return None
        start = max(0, length - _LAST_NOTE_WINDOW)
        with open(path, "rb") as f:
            f.seek(start)
            data = f.read(length - start)
        body_end = data.rfind(b"\n\n", 0, len(data) - 2)
        note_start = data.rfind(b"\n\n", 0, body_end) if body_end >= 0 else -1
        if note_start >= 0:
            note_start += 2
        elif start == 0 and body_end >= 0:
            note_start = 0
        else:
            raise AuditStateError(
                f"{path}: the last note (ending at byte {length}) is not a checkpoint "
                f"(a text, a blank line, signatures); refusing to start"
            )
        try:
            checkpoint = verify_checkpoint(data[note_start:-1], Verifier.from_vkey(self.vkey))
        except CheckpointError as e:
            raise AuditStateError(
                f"{path}: the last checkpoint (at byte {start + note_start}): {e}; refusing to start"
            ) from None
        prefix = f"{self.origin}/"
        if not checkpoint.origin.startswith(prefix) or len(checkpoint.origin) == len(prefix):
            raise AuditStateError(
                f"{path}: the last checkpoint (at byte {start + note_start}) has origin "
                f"{checkpoint.origin!r}, expected {prefix}<log id>; refusing to start"
            )
        return start + note_start, checkpoint

    def _read_state(self) -> _State | None:
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
        if isinstance(state, dict) and state.get("v") == 1:
            self._log.info(
                "audit: {path} was written by an older hoopgw; rescanning the records",
                path=str(path),
            )
            return None
        if not isinstance(state, dict) or state.get("v") != 2:
            raise bad('expected an object with "v": 2')
        log_id, checkpoint, resume = (state.get(k) for k in ("log", "checkpoint", "resume"))
        if not isinstance(log_id, str) or not log_id:
            raise bad('"log" is not a non-empty string')
        if type(checkpoint) is not int or checkpoint < 0:
            raise bad('"checkpoint" must be a non-negative integer')
        if not isinstance(resume, dict):
            raise bad('"resume" is not an object')
        size, offset, prev = (resume.get(k) for k in ("size", "offset", "prev"))
        if type(size) is not int or size < 0 or type(offset) is not int or offset < 0:
            raise bad('"resume": "size" and "offset" must be non-negative integers')
        if not isinstance(prev, str) or len(prev) != 64:
            raise bad('"resume": "prev" is not 64 hex digits')
        try:
            tree = CompactTree.from_list(size, resume.get("frontier", []))
        except (TypeError, ValueError) as e:
            raise bad(f'"resume": "frontier": {e}') from None
        if tree.root().hex() != resume.get("root"):
            raise bad('"resume": "root" does not match "frontier"')
        return _State(log_id, checkpoint, _Position(size, offset, prev, tree))

    def _read_resolution(self) -> list[dict[str, Any]]:
        path = self._resolution_path
        try:
            data = json.loads(path.read_bytes())
        except FileNotFoundError:
            return []
        except ValueError as e:
            raise AuditStateError(f"{path}: not JSON ({e}); refusing to start") from None
        entries = data.get("entries") if isinstance(data, dict) else None
        if (
            not isinstance(entries, list)
            or not all(isinstance(e, dict) and e.get("action") in ("adopt", "set-aside") for e in entries)
        ):
            raise AuditStateError(
                f'{path}: expected {{"v": 1, "entries": [...]}} with "action" "adopt" or '
                f'"set-aside" in each entry (written by hoopgw audit resolve-tail); refusing to start'
            )
        for entry in entries:
            try:
                canonical_json(entry)
            except CanonicalizationError as e:
                raise AuditStateError(f"{path}: an entry cannot be recorded ({e}); refusing to start") from None
            if RESERVED_FIELDS.intersection(entry):
                raise AuditStateError(f"{path}: an entry uses a key the log sets itself; refusing to start")
        return entries

    def _scan(
        self, log_id: str, start: _Position, end: int, checkpoint: int, sizes: frozenset[int] = frozenset()
    ) -> _Scan:
        """
        Check and absorb the records from C{start} to the end of the file:
        each a valid continuation; note the position at the checkpoint's
        size, whether the record just before it closed the log, the records
        after it that only a checkpoint may follow, and the Merkle root at
        each of C{sizes} (not before C{start}).
        """
        path = self._records_path
        seq, prev, tree, position = start.size, start.prev, start.tree.copy(), start.offset
        result = _Scan(_Position(seq, position, prev, tree))
        if seq == checkpoint:
            result.at_checkpoint = _Position(seq, position, prev, tree.copy())
        if seq in sizes:
            result.roots[seq] = tree.root()
        if position == end:
            return result
        with open(path, "rb") as f:
            f.seek(position)
            pending = b""
            remaining = end - position
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
                    problem = _chain_problem(record, log_id, seq, prev)
                    if problem:
                        raise AuditStateError(f"{where}: {problem}; refusing to start")
                    closes = record.get(CLOSES_FIELD)
                    if closes is not None and closes is not True:
                        raise AuditStateError(f'{where}: "{CLOSES_FIELD}" is {closes!r}, expected true; refusing to start')
                    if seq == checkpoint - 1:
                        result.closed = closes is True
                    elif seq >= checkpoint:
                        if closes is True:
                            result.marks.append((seq, f"a record that closes the log ({record.get('event')})"))
                        elif record.get("event") == events.LOG_RECOVERED:
                            result.marks.append((seq, f"a {events.LOG_RECOVERED} record"))
                    prev = sha256(line).hexdigest()
                    tree.append(sha256(b"\x00" + line).digest())
                    seq += 1
                    position += len(line) + 1
                    if seq == checkpoint:
                        result.at_checkpoint = _Position(seq, position, prev, tree.copy())
                    if sizes and seq in sizes:
                        result.roots[seq] = tree.root()
            if pending or remaining:
                raise AuditStateError(
                    f"{path}: the last {end - position} bytes (from byte {position}, where seq "
                    f"{seq} would start) are a torn record with no trailing newline; refusing "
                    f"to start. The record was never acknowledged; 'hoopgw audit resolve-tail "
                    f"--adopt' moves the torn bytes aside (and keeps the whole records before them)"
                )
        result.end = _Position(seq, position, prev, tree)
        return result

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
                f"signatures): a checkpoint write was torn, or the file was cut; refusing to "
                f"start. Restore it from a backup or a witness's copy"
            )

    def _witness_copies(
        self, log_id: str, size: int, root: bytes
    ) -> list[tuple[DirectoryWitness, Path, Checkpoint]]:
        """
        Each directory witness's copy of this log, read (in a thread, at
        most C{witness_timeout} seconds: a hung mount fails the start rather
        than hanging it) and verified with this log's key.

        @raise AuditStateError: a copy cannot be read in time, is not a
            regular file, or does not verify (the signing key was replaced,
            or the copy forged or damaged); or it holds a newer checkpoint
            than the log's last (a rollback), or another of the same size.
        """
        copies: list[tuple[DirectoryWitness, Path, Checkpoint]] = []
        for witness in self.witnesses:
            if not isinstance(witness, DirectoryWitness):
                continue
            path = witness.path(log_id)
            try:
                copy = call_with_timeout(partial(witness.copy, log_id), self._witness_timeout, f"reading {path}")
            except WitnessTimeout as e:
                raise AuditStateError(
                    f"witness {witness.directory}: {e}: its mount is hung or very slow; refusing to "
                    f"start (the copy must be checked before the log is continued). Repair the mount, "
                    f"or remove {witness.directory} from [audit] witness"
                ) from None
            except WitnessCopyError as e:
                raise AuditStateError(
                    f"witness copy {e}; refusing to start. Either the audit signing key "
                    f"({self.directory.parent / SIGNING_KEY_FILE}) and {self.directory / VKEY_FILE} "
                    f"were replaced (the log may have been rewritten and re-signed: restore the "
                    f"original key and check the log with 'hoopgw audit verify --vkey <the verifier "
                    f"key you pinned> --witness {witness.directory}'), or the copy was forged or "
                    f"damaged: once 'hoopgw audit verify --vkey <pinned key>' accepts the log, move "
                    f"{path} aside (the next checkpoint writes a new copy)"
                ) from None
            except (OSError, WitnessError) as e:
                raise AuditStateError(
                    f"witness {witness.directory}: {e}; refusing to start (the copy must be checked "
                    f"before the log is continued). Make it readable by the gateway (permissions, the "
                    f"mount), or remove {witness.directory} from [audit] witness"
                ) from None
            if copy is None:
                continue
            if copy.size > size:
                raise AuditStateError(
                    f"witness {path} holds checkpoint size {copy.size} of this log, but the last "
                    f"checkpoint in {self._checkpoints_path} is size {size}: the log and its "
                    f"checkpoints were rolled back to an earlier state; refusing to start. Restore "
                    f"the newest copy of {self.directory}; to continue from this older state "
                    f"deliberately, move {path} aside first"
                )
            if copy.size == size and copy.root != root:
                raise AuditStateError(
                    f"witness {path} holds a different checkpoint of size {size} than "
                    f"{self._checkpoints_path}: the log was rewritten; refusing to start"
                )
            copies.append((witness, path, copy))
        return copies

    def _check_notes(self, origin: str, last_offset: int) -> None:
        """
        Read every note of the checkpoints file (sizes only: a few bytes
        each): sizes never decrease and every note names this log, so an
        old note appended again (a replay) is refused here, not trusted as
        the last; and the first note's signature verifies with this key, as
        the last's did (a key swapped under a log whose notes were not all
        re-signed).

        @raise AuditStateError: naming the note and its byte offset.
        """
        path = self._checkpoints_path
        expected = origin.encode()
        verifier = Verifier.from_vkey(self.vkey)
        previous = 0
        index = 0
        position = 0  # where the note being parsed starts
        pending = b""
        with open(path, "rb") as f:
            while True:
                chunk = f.read(_READ_CHUNK)
                data = pending + chunk
                cursor = 0
                while True:
                    body_end = data.find(b"\n\n", cursor)
                    end = data.find(b"\n\n", body_end + 2) if body_end >= 0 else -1
                    if end < 0:
                        break
                    index += 1
                    where = f"{path}: checkpoint {index} (at byte {position})"
                    lines = data[cursor:body_end].split(b"\n")
                    if len(lines) != 3 or lines[0] != expected or not _SIZE_LINE.fullmatch(lines[1]):
                        raise AuditStateError(
                            f"{where}: not a checkpoint of this log (origin {expected.decode()!r}); "
                            f"refusing to start. 'hoopgw audit verify' names what is wrong; restore "
                            f"{path} from a backup or a witness's copy"
                        )
                    size = int(lines[1])
                    if size < previous:
                        raise AuditStateError(
                            f"{where}: size {size} is smaller than the previous checkpoint's "
                            f"{previous}: an older note was appended again (replayed), or the notes "
                            f"were reordered; refusing to start (nor may 'hoopgw audit resolve-tail' "
                            f"cut records by it). Restore {path} from a backup or a witness's copy"
                        )
                    if index == 1 and position != last_offset:
                        try:
                            verify_checkpoint(data[cursor : end + 1], verifier)
                        except CheckpointError as e:
                            raise AuditStateError(
                                f"{where}: {e}: the first checkpoint is not signed by the key the "
                                f"last one is (key {verifier.key_id.hex()}): the signing key was "
                                f"replaced; refusing to start. Restore the original key"
                            ) from None
                    previous = size
                    position += end + 2 - cursor
                    cursor = end + 2
                pending = data[cursor:]
                if not chunk:
                    break
        if pending:
            # _check_checkpoints_tail refused a torn end; anything else left
            # is not a note.
            raise AuditStateError(
                f"{path}: bytes from {position} on are not a complete note; refusing to start"
            )

    # -- the write path -----------------------------------------------------

    def append(self, event: str, body: Mapping[str, Any]) -> Deferred[int]:
        """
        See L{IAuditLog.append}.

        @raise AuditUnavailable: the log cannot be written (it says why).
        @raise ValueError: C{body} is not a valid record body (a reserved key,
            a value canonical JSON cannot hold); the log is unaffected.
        """
        fd = self._append_fd
        if fd is None:
            raise AuditUnavailable(self._unavailable_message())
        started = time.perf_counter()
        _check_body(event, body)
        seq = self._write(fd, event, body)
        if self._seq - self._checkpoint_requested >= self._checkpoint_every:
            self.checkpoint().addErrback(self._background_failure, "checkpoint by count")
        if self._metrics is not None:
            self._metrics.audit_written(time.perf_counter() - started)
        if self._strict:
            d: Deferred[int] = Deferred()
            self._waiters.append((seq + 1, d))
            return d
        return succeed(seq)

    def _write_own(self, event: str, body: Mapping[str, Any], *, closes: bool = False) -> int:
        """
        Write one of the log's own records (start-up, closing): like
        L{append}, without the caller's Deferred or a checkpoint by count.
        """
        fd = self._fd
        if self.failed is not None or fd is None:
            raise AuditUnavailable(self._unavailable_message())
        clash = RESERVED_FIELDS.intersection(body)
        if clash:
            raise ValueError(f"audit record body for {event!r} has reserved key(s) {', '.join(sorted(clash))}")
        return self._write(fd, event, body, closes=closes)

    def _write(self, fd: int, event: str, body: Mapping[str, Any], *, closes: bool = False) -> int:
        """Chain, encode and write one record (its body already checked); return its seq."""
        seq = self._seq
        header: dict[str, Any] = {
            "v": 1,
            "log": self.log_id,
            "seq": seq,
            "prev": self._prev,
            "time": self._timestamp(),
            "event": event,
        }
        if closes:
            header[CLOSES_FIELD] = True
        try:
            data = canonical_record(header, body)
        except CanonicalizationError as e:
            raise ValueError(f"audit record body for {event!r}: {e}") from None
        try:
            _write_all(fd, data + b"\n")
        except OSError as e:
            self._fail(f"write to {self._records_path} failed: {e.strerror or e} (errno {e.errno})")
            raise AuditUnavailable(self._unavailable_message()) from None
        self._prev = sha256(data).hexdigest()
        self._tree.append(sha256(b"\x00" + data).digest())
        self._seq = seq + 1
        self._offset += len(data) + 1
        if self._sync_call is None and not self._sync_in_flight:
            self._schedule_sync()
        return seq

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

    def _when_synced(self, size: int) -> Deferred[None]:
        """A Deferred that fires (with None) once records [0, size) are durable."""
        if size <= self._synced:
            return succeed(None)
        if self.failed is not None:
            return fail(AuditUnavailable(self._unavailable_message()))
        d: Deferred[int] = Deferred()
        self._waiters.append((size, d))
        self._schedule_sync()
        return d.addCallback(lambda _: None)

    def _when_idle(self) -> Deferred[None]:
        if not self._sync_in_flight:
            return succeed(None)
        d: Deferred[None] = Deferred()
        self._idle_waiters.append(d)
        return d

    def _notify_idle(self) -> None:
        waiters, self._idle_waiters = self._idle_waiters, []
        for d in waiters:
            d.callback(None)

    # -- checkpoints ----------------------------------------------------------

    def checkpoint(self) -> Deferred[int]:
        """
        Sign and write a checkpoint of the log as it is now, once the
        records it covers are durable, then hand it to the witnesses.  See
        L{IAuditLog.checkpoint}.
        """
        if self.failed is not None or self._fd is None:
            return fail(AuditUnavailable(self._unavailable_message()))
        size = self._seq
        root = self._tree.root()
        state, position = self._checkpoint_state(size, root)
        self._checkpoint_requested = max(self._checkpoint_requested, size)
        note = sign_checkpoint(self._signing_key, self.origin, self.checkpoint_origin, size, root)
        witnessed = self._witness_checkpoint(position, root, note)
        return self._checkpoint_lock.run(self._write_checkpoint, size, note, state, witnessed)

    def _checkpoint_state(self, size: int, root: bytes) -> tuple[dict[str, Any], _Position]:
        """
        The state file to write with a checkpoint of C{size}: it names this
        checkpoint and a position strictly before it to resume from.
        """
        position = _Position(size, self._offset, self._prev, self._tree.copy())
        if self._cp_position is None or size > self._cp_position.size:
            if self._cp_position is not None:
                self._resume = self._cp_position
            self._cp_position = position
        state = {"v": 2, "log": self.log_id, "checkpoint": size, "resume": self._resume.to_dict()}
        return state, position

    def _witness_checkpoint(self, position: _Position, root: bytes, note: bytes) -> WitnessCheckpoint:
        return WitnessCheckpoint(
            self.log_id or "",
            self.checkpoint_origin,
            position.size,
            root,
            note,
            position.offset,
            position.tree.frontier,
        )

    def _checkpoint_now(self) -> None:
        """
        Sign and write a checkpoint synchronously (start-up only: nothing
        else is written meanwhile).  The records must already be durable.
        """
        size = self._seq
        root = self._tree.root()
        state, position = self._checkpoint_state(size, root)
        note = sign_checkpoint(self._signing_key, self.origin, self.checkpoint_origin, size, root)
        assert self._cp_fd is not None
        _write_all(self._cp_fd, note + b"\n")
        os.fdatasync(self._cp_fd)
        self._write_state(state)
        self._checkpoint_requested = size
        if self._metrics is not None:
            self._metrics.checkpoint_written(self._reactor.seconds())
        witnessed = self._witness_checkpoint(position, root, note)
        for witness in self.witnesses:
            witness.submit(witnessed)

    def _write_checkpoint(
        self, size: int, note: bytes, state: dict[str, Any], witnessed: WitnessCheckpoint
    ) -> Deferred[int]:
        cp_fd = self._cp_fd

        def write_files() -> None:
            assert cp_fd is not None
            _write_all(cp_fd, note + b"\n")
            os.fdatasync(cp_fd)
            self._write_state(state)

        def written(_: object) -> int:
            if self._metrics is not None:
                self._metrics.checkpoint_written(self._reactor.seconds())
            # Only once it is durable here: a witness never holds a
            # checkpoint the log could lose.
            for witness in self.witnesses:
                witness.submit(witnessed)
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
        return d.addCallback(lambda _: self._run(write_files)).addCallbacks(written, failed)

    def _check_writable(self) -> None:
        if self.failed is not None or self._cp_fd is None:
            raise AuditUnavailable(self._unavailable_message())

    def _periodic_checkpoint(self) -> None:
        if self.failed is None and self._seq > self._checkpoint_requested:
            self.checkpoint().addErrback(self._background_failure, "periodic checkpoint")

    def _write_state(self, state: dict[str, Any]) -> None:
        # Atomic replace: a crash leaves the old state or the new, never half.
        tmp = self._state_path.with_name(STATE_FILE + ".tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
        try:
            _write_all(fd, json.dumps(state, sort_keys=True).encode() + b"\n")
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, self._state_path)
        self._fsync_directory()

    def _fsync_directory(self) -> None:
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
        if self._closing:
            return f"audit log {self.directory} is closed (the gateway is stopping)"
        if self.running:
            return f"audit log {self.directory} is not open"
        return f"audit log {self.directory} is not running"

    def _fail(self, reason: str) -> None:
        if self.failed is not None:
            return
        self.failed = reason
        self._append_fd = None
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


def _check_line(line: bytes, where: str) -> dict[str, Any]:
    """Parse one record line and check it is canonical JSON of an object."""
    try:
        record = json.loads(line.decode("utf-8"), parse_constant=_reject_constant)
    except (UnicodeDecodeError, ValueError, RecursionError) as e:  # (nested too deep: no record is)
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


def _chain_problem(record: dict[str, Any], log_id: str, seq: int, prev: str) -> str | None:
    if record.get("v") != 1:
        return f'"v" is {record.get("v")!r}, expected 1'
    if record.get("log") != log_id:
        return f'"log" is {record.get("log")!r}, expected {log_id!r}'
    if record.get("seq") != seq or type(record.get("seq")) is not int:
        return f'"seq" is {record.get("seq")!r}, expected {seq}'
    if record.get("prev") != prev:
        return f'"prev" is {record.get("prev")!r}, expected {prev} (SHA-256 of the previous record)'
    return None
