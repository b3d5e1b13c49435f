"""
Offline verification of an audit directory from its files and the
verifier key alone.

What is checked (docs/audit-format.md, "Verifying"):

  - every checkpoint note parses, carries a valid Ed25519 signature by the
    vkey, names this log as its origin, and sizes never decrease;
  - every record line is canonical JSON (re-encoding gives the same bytes),
    has C{"v": 1}, the log's id, C{seq} one more than the line before
    (starting at 0) and C{prev} equal to the SHA-256 of the line before;
  - the Merkle root of the first C{size} records equals every checkpoint's
    root, and there are at least as many records as the last checkpoint
    covers (nothing was cut off the end);
  - a log with records has a checkpoint (every log is checkpointed at its
    first start); records after a checkpoint whose last record closed the
    log (a clean stop's signed end) are always a failure; an unsigned tail
    holding a closing or C{log.recovered} record means its checkpoint was
    removed, always a failure; any other unsigned tail only with
    C{allow_unsigned_tail};
  - C{log.recovered} records are reported (records written but not signed
    at the time), and with C{witnesses} the log's checkpoints are compared
    with each witness's newest copy (a rollback fails, naming the sizes).

Large logs are checked in byte ranges by worker processes (the JSON parse
and re-encode dominate and are CPU bound), which also hash their leaves into
aligned Merkle subtrees; the main process stitches the ranges together (seq
and prev across boundaries, the subtrees into the tree) in order.

A line is proven canonical by C{orjson}: parse it, re-encode with sorted
keys, compare bytes.  Equal bytes mean the line is C{orjson}'s rendering of
the parsed value, which is JCS's for every value without floats or
non-BMP characters (floats are looked for; lines with a 4-byte UTF-8
sequence go to the slow path), and a line with duplicate keys cannot be
one.  Any line the fast path does not accept is decided by the original
slow path (C{json} parse, C{json}/L{canonical_json} re-encode), which also
words the error.  C{tests/audit/test_verify.py} checks with Hypothesis that
the two agree.
"""

from __future__ import annotations

import json
import os
import re
import stat
from concurrent.futures import ProcessPoolExecutor
from hashlib import sha256
from pathlib import Path
from typing import Any, Iterator, Mapping, Sequence

import orjson
from attrs import field, frozen

from hoopgw.audit import events
from hoopgw.audit.canonical import (
    MAX_SAFE_INTEGER,
    ORJSON_CANONICAL,
    CanonicalizationError,
    canonical_json,
)
from hoopgw.audit.checkpoint import Checkpoint, CheckpointError, Verifier, verify_checkpoint
from hoopgw.audit.log import (
    CHECKPOINTS_FILE,
    CLOSES_FIELD,
    GENESIS_PREV,
    RECORDS_FILE,
)
from hoopgw.audit.merkle import EMPTY_ROOT, CompactTree, aligned_subtrees, consistency_proof_from
from hoopgw.audit.witness import (
    WitnessError,
    check_http_witness,
    is_url,
    leaf_hashes_between,
    position_at,
    read_directory_copy,
)

__all__ = ["VerifyReport", "verify", "read_checkpoints"]

_CHUNK = 8 << 20
#: Below this many bytes of records, worker processes cost more than they save.
_PARALLEL_THRESHOLD = 64 << 20

# A lead byte of a 4-byte UTF-8 sequence: a non-BMP character, the only
# case where orjson's key order (code points) can differ from JCS's (UTF-16).
_NON_BMP = re.compile(rb"[\xf0-\xf4]")

# Records the verifier notes as it goes (besides those that close the log).
_MARKED_EVENTS = frozenset({events.LOG_RECOVERED, events.LOG_TAIL_SET_ASIDE})

_encode = json.JSONEncoder(
    ensure_ascii=False, separators=(",", ":"), sort_keys=True, check_circular=False
).encode
_decode = json.JSONDecoder(
    parse_constant=lambda name: _raise(f"{name} is not a JSON number"),
    # Records hold integers only; JCS would write any integral float as an
    # integer, so a fraction or exponent is never canonical here.
    parse_float=lambda text: _raise(f"number {text} is not an integer"),
    parse_int=lambda text: _safe_int(text),
).decode


def _raise(message: str) -> None:
    raise ValueError(message)


def _safe_int(text: str) -> int:
    value = int(text)
    if -MAX_SAFE_INTEGER <= value <= MAX_SAFE_INTEGER:
        return value
    raise ValueError(f"integer {text} is outside +-(2**53 - 1)")


@frozen
class VerifyReport:
    """
    @ivar ok: everything verified.
    @ivar records: record lines checked (up to the first error).
    @ivar checkpoints: checkpoint notes whose signature verified.
    @ivar last_checkpoint_size: the size of the last valid checkpoint.
    @ivar first_error: C{None}, or the file, the line/seq or checkpoint and
        what is wrong with it.
    @ivar log_id: the log's id (from its first record), if any.
    @ivar key_id: the verifier key's id (8 hex digits), to compare with a
        pinned copy: a key read from beside the log proves nothing on its own.
    @ivar unsigned: records after the last checkpoint, accepted because the
        caller allowed an unsigned tail (chained, but not signed).
    @ivar closed: the last checkpoint is the log's signed end (its last
        record closed the log at a clean stop).
    @ivar recovered: (first seq, count, seq of the log.recovered record) of
        each range of records written but not signed at the time: adopted
        by a start after a run that did not close the log.
    @ivar set_aside: seqs of log.tail.set_aside records (an operator moved
        an unsigned tail out of the log; the record says what and where).
    @ivar witnessed: what each witness check found.
    """

    ok: bool
    records: int
    checkpoints: int
    last_checkpoint_size: int
    first_error: str | None
    log_id: str | None = None
    key_id: str | None = None
    unsigned: int = 0
    closed: bool = False
    recovered: tuple[tuple[int, int, int], ...] = ()
    set_aside: tuple[int, ...] = ()
    witnessed: tuple[str, ...] = ()

    def summary(self) -> str:
        if not self.ok:
            return f"FAILED: {self.first_error}"
        lines = [
            f"OK: {self.records} records, {self.checkpoints} checkpoints, last checkpoint "
            f"covers {self.last_checkpoint_size} records (log {self.log_id}, key {self.key_id})"
            + ("; closed cleanly" if self.closed else "")
        ]
        if self.unsigned:
            lines.append(
                f"  seq {self.records - self.unsigned}..{self.records - 1} ({self.unsigned} records) "
                f"are chained but not yet signed (the gateway is running, or stopped without "
                f"closing the log: its next start adopts them)"
            )
        for first, count, at in self.recovered:
            lines.append(
                f"  seq {first}..{first + count - 1} ({count} records) were written but not signed "
                f"at the time: adopted after a run that did not close the log ({events.LOG_RECOVERED} "
                f"at seq {at})"
            )
        for at in self.set_aside:
            lines.append(f"  an unsigned tail was set aside by an operator ({events.LOG_TAIL_SET_ASIDE} at seq {at})")
        lines += [f"  {line}" for line in self.witnessed]
        return "\n".join(lines)


@frozen
class _Chunk:
    """What a worker found in one byte range of the records file."""

    count: int  # records that passed the in-range checks
    first_seq: object
    first_prev: object
    first_log: object
    last_hash: str | None  # SHA-256 hex of the last good line
    subtrees: list[tuple[int, bytes]]  # aligned_subtrees of the good lines' leaves
    error: tuple[int, str] | None  # (index in range, what) of the first bad line
    torn: bool  # the range ends without a newline
    # (seq, event, closes_log value, the record if a marked event) of the
    # records that close the log or are in _MARKED_EVENTS
    marks: list[tuple[int, object, object, dict[str, Any] | None]] = field(factory=list)


def _has_float(value: Any) -> bool:
    """C{True} if a parsed JSON container holds a float at any depth."""
    for item in value.values() if type(value) is dict else value:
        kind = type(item)
        if kind is float:
            return True
        if (kind is dict or kind is list) and _has_float(item):
            return True
    return False


def _check_record(line: bytes) -> dict[str, Any]:
    """Parse a line and check it is a canonical JSON object; raise ValueError."""
    try:
        record = orjson.loads(line)
        if (
            type(record) is dict
            # OPT_STRICT_INTEGER raises beyond +-(2**53 - 1).
            and orjson.dumps(record, option=ORJSON_CANONICAL) == line
            and (line.isascii() or _NON_BMP.search(line) is None)
            # orjson writes 1.0 where JCS writes 1; records hold no floats.
            and not _has_float(record)
        ):
            return record
    except (orjson.JSONDecodeError, orjson.JSONEncodeError):
        pass
    return _check_record_slow(line)


def _check_record_slow(line: bytes) -> dict[str, Any]:
    """
    L{_check_record} by the C{json} module and L{canonical_json}: the fast
    path's fallback and the reference it is tested against.
    """
    try:
        text = line.decode("utf-8")
    except UnicodeDecodeError as e:
        raise ValueError(f"not UTF-8 ({e.reason} at byte {e.start})") from None
    try:
        record = _decode(text)
    except (ValueError, RecursionError) as e:
        # (RecursionError: nested deeper than the parser recurses; no record is.)
        raise ValueError(f"not canonical JSON ({e})") from None
    if type(record) is not dict:
        raise ValueError("not a JSON object")
    # Re-encoding with the C encoder equals JCS for what the decoder lets
    # through (no floats, no unsafe integers) unless a key has a non-BMP
    # character: then code point order may differ from UTF-16 order, and a
    # line in code point order would match it without being canonical.
    if _NON_BMP.search(line) is None and _encode(record) == text:
        return record
    return _slow_canonical(record, line)


def _slow_canonical(record: dict[str, Any], line: bytes) -> dict[str, Any]:
    try:
        canonical = canonical_json(record)
    except CanonicalizationError as e:
        raise ValueError(str(e)) from None
    if canonical != line:
        raise ValueError("not in canonical (RFC 8785) form")
    return record


def _chain_error(record: dict[str, Any], first: bool, seq: object, prev: object, log: object) -> str | None:
    """What is wrong with a record's v, log, seq or prev within a range."""
    v = record.get("v")
    if v != 1 or type(v) is not int:
        return f'"v" is {v!r}, expected 1'
    if first:
        if type(record.get("seq")) is not int:
            return f'"seq" is {record.get("seq")!r}, expected an integer'
        return None
    if record.get("log") != log:
        return f'"log" is {record.get("log")!r}, expected {log!r}'
    if record.get("seq") != seq or type(record.get("seq")) is not int:
        return f'"seq" is {record.get("seq")!r}, expected {seq}'
    if record.get("prev") != prev:
        return (
            '"prev" does not match the SHA-256 of the line before: that line '
            "or this one was altered, or records were inserted or removed between them"
        )
    return None


def _check_range(path: str, start: int, end: int, cuts: tuple[int, ...] = ()) -> _Chunk:
    """
    Check the lines in [start, end) of the records file: each canonical,
    C{v} 1, one log id, seq contiguous and prev chained within the range;
    hash the good lines into Merkle subtrees that do not span a size in
    C{cuts} (the checkpoint sizes).
    """
    subtrees: list[tuple[int, bytes]] = []
    hashes: list[bytes] = []
    base = 0  # the index in the log of hashes[0], as the first seq claims
    count = 0
    first_seq: object = None
    first_prev: object = None
    first_log: object = None
    prev: str | None = None
    seq: Any = None
    log: object = None
    error: tuple[int, str] | None = None
    torn = False
    marks: list[tuple[int, object, object, dict[str, Any] | None]] = []
    marked = _MARKED_EVENTS
    check = _check_record
    with open(path, "rb") as f:
        f.seek(start)
        remaining = end - start
        pending = b""
        while remaining > 0 and error is None:
            chunk = f.read(min(_CHUNK, remaining))
            if not chunk:
                break
            remaining -= len(chunk)
            lines = (pending + chunk).split(b"\n")
            pending = lines.pop()
            for line in lines:
                try:
                    record = check(line)
                except ValueError as e:
                    error = (count, str(e))
                    break
                get = record.get
                if count == 0:
                    problem = _chain_error(record, True, None, None, None)
                    if problem is not None:
                        error = (count, problem)
                        break
                    first_seq, first_prev, first_log = get("seq"), get("prev"), get("log")
                    seq, log = first_seq, first_log
                    # A wrong first seq is reported by the caller before it
                    # uses the subtrees, which then may be misaligned.
                    base = seq if seq >= 0 else 0
                else:
                    # One test for the common case; _chain_error words the error.
                    got_seq, got_v = get("seq"), get("v")
                    if (
                        got_seq != seq
                        or get("prev") != prev
                        or get("log") != log
                        or got_v != 1
                        or type(got_seq) is not int
                        or type(got_v) is not int
                    ):
                        problem = _chain_error(record, False, seq, prev, log)
                        if problem is not None:
                            error = (count, problem)
                            break
                event = get("event")
                if CLOSES_FIELD in record or (type(event) is str and event in marked):
                    marks.append((seq, event, get(CLOSES_FIELD), record if event in marked else None))
                prev = sha256(line).hexdigest()
                hashes.append(sha256(b"\x00" + line).digest())
                seq += 1
                count += 1
            subtrees += aligned_subtrees(base, hashes, cuts)
            base += len(hashes)
            hashes.clear()
        if error is None and (pending or remaining > 0):
            torn = True
    return _Chunk(count, first_seq, first_prev, first_log, prev, subtrees, error, torn, marks)


def _ranges(path: Path, size: int, chunk: int) -> list[tuple[int, int]]:
    """Split [0, size) into ranges of about C{chunk} bytes that end at newlines."""
    ranges = []
    start = 0
    with open(path, "rb") as f:
        while start < size:
            end = min(start + chunk, size)
            if end < size:
                f.seek(end)
                # Extend to just past the next newline.
                while True:
                    block = f.read(1 << 16)
                    if not block:
                        end = size
                        break
                    i = block.find(b"\n")
                    if i >= 0:
                        end += i + 1
                        break
                    end += len(block)
            ranges.append((start, end))
            start = end
    return ranges


def read_checkpoints(data: bytes, verifier: Verifier, where: str) -> Iterator[tuple[int, int, Checkpoint]]:
    """
    Yield (index, byte offset, checkpoint) for each note in a checkpoints
    file, verifying each signature.

    @raise CheckpointError: naming the note (1-based) and its byte offset.
    """
    position = 0
    index = 0
    while position < len(data):
        index += 1
        body_end = data.find(b"\n\n", position)
        end = data.find(b"\n\n", body_end + 2) if body_end >= 0 else -1
        if end < 0:
            raise CheckpointError(
                f"{where}: checkpoint {index} (at byte {position}): incomplete note "
                f"(expected a body, a blank line, signatures and a blank line)"
            )
        try:
            checkpoint = verify_checkpoint(data[position : end + 1], verifier)
        except CheckpointError as e:
            raise CheckpointError(f"{where}: checkpoint {index} (at byte {position}): {e}") from None
        yield index, position, checkpoint
        position = end + 2


def verify(
    directory: Path | str,
    vkey_text: str,
    *,
    workers: int | None = None,
    allow_unsigned_tail: bool = False,
    witnesses: Sequence[str] = (),
    witness_timeout: float = 10.0,
    witness_vkeys: Mapping[str, Sequence[str]] | None = None,
) -> VerifyReport:
    """
    Verify the audit log in C{directory} against the verifier key text.

    Records after the last signed checkpoint are protected by the hash chain
    alone, which anyone able to write the file can recompute.  A cleanly
    stopped gateway ends its log with a signed end (a checkpoint whose last
    record closes the log): records after it are always a failure.  Any
    other unsigned tail fails unless C{allow_unsigned_tail} (a log copied
    from a running gateway, or one that crashed) — and then it is reported;
    a tail holding a record only a checkpoint may follow (one that closes
    the log, or C{log.recovered}) is always a failure (its checkpoint was
    removed).

    @param workers: worker processes for large logs; default: one per CPU
        when the records file is large, else none.  C{0} forces in-process.
    @param witnesses: directories and tlog-witness URLs whose newest
        checkpoint of this log the log must extend (L{hoopgw.audit.witness}):
        a witness holding a newer checkpoint than the log's last means the
        log and its checkpoints were rolled back.
    @param witness_vkeys: for each tlog-witness URL, the witness's
        cosignature keys: its answer counts only with a fresh cosignature by
        one of them (a URL without any fails: an unauthenticated 200 proves
        nothing).
    """
    directory = Path(directory)
    records_path = directory / RECORDS_FILE
    cp_path = directory / CHECKPOINTS_FILE
    try:
        verifier = Verifier.from_vkey(vkey_text)
    except CheckpointError as e:
        return VerifyReport(False, 0, 0, 0, str(e))

    # Checkpoints first: they are small, and the records are checked against them.
    try:
        cp_data = cp_path.read_bytes()
    except FileNotFoundError:
        cp_data = b""
    checkpoints: list[tuple[int, Checkpoint]] = []
    last_size = 0
    last_note = b""
    try:
        for index, position, cp in read_checkpoints(cp_data, verifier, str(cp_path)):
            if cp.size < last_size:
                raise CheckpointError(
                    f"{cp_path}: checkpoint {index} (at byte {position}): size {cp.size} is "
                    f"smaller than the previous checkpoint's {last_size}"
                )
            last_size = cp.size
            checkpoints.append((index, cp))
            last_note = cp_data[position:-1]
    except CheckpointError as e:
        return VerifyReport(False, 0, len(checkpoints), last_size, str(e))

    try:
        size = records_path.stat().st_size
    except FileNotFoundError:
        size = 0
    if size and not checkpoints:
        # Every log is checkpointed (size 0) at its first start, before any
        # record: records without a checkpoint are not a tail, they are a
        # log whose checkpoints were deleted.
        return VerifyReport(
            False,
            0,
            0,
            0,
            f"{cp_path} is {'empty' if cp_path.exists() else 'missing'} but {records_path} holds "
            f"records ({size} bytes): every log has a signed checkpoint from its first start, so "
            f"its checkpoints were deleted (or this directory was not written by hoopgw)",
            key_id=verifier.key_id.hex(),
        )
    if workers is None:
        workers = (os.cpu_count() or 1) if size >= _PARALLEL_THRESHOLD else 0
    ranges = _ranges(records_path, size, max(_CHUNK, size // (workers * 8)) if workers else 1 << 62) if size else []

    tree = CompactTree()
    pending_cps = list(checkpoints)
    next_cp = 0
    log_id: str | None = None
    prev = GENESIS_PREV
    count = 0
    closes: list[int] = []
    recovered: list[tuple[int, int, int]] = []
    set_aside: list[int] = []
    witnessed: list[str] = []

    def report(error: str | None, unsigned: int = 0) -> VerifyReport:
        done = checkpoints[: next_cp] if error else checkpoints
        return VerifyReport(
            error is None,
            count,
            len(checkpoints),
            done[-1][1].size if done else 0,
            error,
            log_id,
            verifier.key_id.hex(),
            unsigned,
            bool(error is None and last_size and last_size - 1 in closes),
            tuple(recovered),
            tuple(set_aside),
            tuple(witnessed),
        )

    def where(index: int) -> str:
        return f"{records_path}: line {index + 1} (seq {index})"

    # The signed checkpoints name the log (origin "<key name>/<log id>"),
    # so a record's log id is checked against them, not the other way round.
    prefix = f"{verifier.name}/"
    for index, cp in checkpoints:
        if not cp.origin.startswith(prefix) or len(cp.origin) == len(prefix):
            return report(f"{cp_path}: checkpoint {index}: origin {cp.origin!r}, expected {prefix}<log id>")
        if log_id is None:
            log_id = cp.origin[len(prefix) :]
        elif cp.origin != prefix + log_id:
            return report(
                f"{cp_path}: checkpoint {index}: origin {cp.origin!r}, but checkpoint 1 has "
                f"{prefix + log_id!r}"
            )

    # A directory witness's newest copy is read first: the tree must be
    # checked at its size too.
    copies: list[tuple[str, Checkpoint]] = []
    for target in witnesses:
        if is_url(target):
            continue
        if log_id is None:
            return report(f"witness {target}: {cp_path} names no log to look up (it has no checkpoint)")
        try:
            copy = read_directory_copy(target, log_id, verifier)
        except WitnessError as e:
            return report(f"witness {target}: {e}")
        if copy is None:
            return report(
                f"witness {target} holds no checkpoint of log {log_id}: it is not this log's "
                f"witness, or never received a checkpoint"
            )
        if copy.size > last_size:
            return report(
                f"witness {target} holds checkpoint size {copy.size} of this log, but {cp_path} "
                f"ends at size {last_size} (and {records_path.name} holds {_count_lines(records_path)} "
                f"records): the log and its checkpoints were rolled back to an earlier state"
            )
        copies.append((target, copy))
    roots_at: dict[int, bytes | None] = {copy.size: None for _, copy in copies}
    if 0 in roots_at:
        roots_at[0] = EMPTY_ROOT

    # Checkpoints of the empty tree are checked before any record.
    while next_cp < len(pending_cps) and pending_cps[next_cp][1].size == 0:
        index, cp = pending_cps[next_cp]
        if cp.root != tree.root():
            return report(f"{cp_path}: checkpoint {index} (size 0): root is not the empty tree's")
        next_cp += 1

    # Workers build subtrees that stop at every checkpoint size, so each
    # checkpoint's root is checked exactly when the tree reaches its size.
    cuts = tuple(sorted({cp.size for _, cp in checkpoints} | set(roots_at)))
    marks: list[tuple[int, object, object, dict[str, Any] | None]] = []
    executor = ProcessPoolExecutor(workers) if workers and len(ranges) > 1 else None
    try:
        if executor is not None:
            results: Iterator[_Chunk] = executor.map(
                _check_range, [str(records_path)] * len(ranges), *zip(*ranges), [cuts] * len(ranges)
            )
        else:
            results = (_check_range(str(records_path), s, e, cuts) for s, e in ranges)
        for chunk in results:
            if chunk.count or chunk.error:
                # The range's first line must continue the previous range.
                if chunk.count:
                    if log_id is None:
                        if not isinstance(chunk.first_log, str) or not chunk.first_log:
                            return report(f'{where(count)}: "log" is {chunk.first_log!r}, expected a log id')
                        log_id = chunk.first_log
                    if chunk.first_log != log_id:
                        return report(f'{where(count)}: "log" is {chunk.first_log!r}, expected {log_id!r}')
                    if chunk.first_seq != count:
                        return report(f'{where(count)}: "seq" is {chunk.first_seq!r}, expected {count}')
                    if chunk.first_prev != prev:
                        return report(
                            f'{where(count)}: "prev" does not match '
                            + ("the genesis value (64 zeros)" if count == 0 else "the SHA-256 of the line before")
                            + ": that line or this one was altered, or records were inserted or removed between them"
                        )
                for height, root in chunk.subtrees:
                    tree.append_subtree(height, root)
                    if tree.size in roots_at:
                        roots_at[tree.size] = tree.root()
                    while next_cp < len(pending_cps) and pending_cps[next_cp][1].size == tree.size:
                        index, cp = pending_cps[next_cp]
                        if cp.root != tree.root():
                            count = tree.size
                            return report(
                                f"{cp_path}: checkpoint {index} (size {cp.size}): root does not match "
                                f"the Merkle tree of the first {cp.size} records in {records_path.name}"
                            )
                        next_cp += 1
                marks += chunk.marks
                count += chunk.count
                if chunk.last_hash is not None:  # (the range had good lines: chunk.count)
                    prev = chunk.last_hash
                if chunk.error is not None:
                    return report(f"{where(count)}: {chunk.error[1]}")
            if chunk.torn:
                return report(
                    f"{records_path}: line {count + 1} (seq {count}) is torn: no trailing newline"
                )
    finally:
        if executor is not None:
            executor.shutdown(cancel_futures=True)

    if last_size > count:
        index, short = next((i, cp) for i, cp in checkpoints if cp.size > count)
        return report(
            f"{records_path}: {count} records, but checkpoint {index} covers {short.size}"
            + (f" (and the last, {last_size})" if short.size != last_size else "")
            + ": records were removed or cut off the end"
        )

    # The log's own records: which checkpoint ends the log, what was adopted.
    tail_marks: list[tuple[int, str]] = []
    for seq, event, closing, record in marks:
        if closing is not None:
            if closing is not True:
                return report(f'{where(seq)}: "{CLOSES_FIELD}" is {closing!r}, expected true')
            closes.append(seq)
            if seq >= last_size:
                tail_marks.append((seq, f"a record that closes the log ({event})"))
        if record is None:
            continue
        if seq >= last_size:
            if event == events.LOG_RECOVERED:
                tail_marks.append((seq, f"a {events.LOG_RECOVERED} record"))
            continue
        if event == events.LOG_TAIL_SET_ASIDE:
            problem = _set_aside_problem(directory, record)
            if problem is not None:
                return report(f"{where(seq)}: {events.LOG_TAIL_SET_ASIDE}: {problem}")
            set_aside.append(seq)
            continue
        first, number = record.get("first_seq"), record.get("count")
        if type(first) is not int or type(number) is not int or number < 0 or first + number != seq:
            return report(
                f"{where(seq)}: {events.LOG_RECOVERED} names first_seq {first!r} and count {number!r}, "
                f"expected the records just before it (first_seq + count = {seq})"
            )
        if number:
            recovered.append((first, number, seq))

    if count > last_size:
        span = f"records {last_size}..{count - 1} (seq)"
        if last_size and last_size - 1 in closes:
            index = checkpoints[-1][0]
            return report(
                f"{records_path}: {span} follow the log's signed end: checkpoint {index} (size "
                f"{last_size}) covers seq {last_size - 1}, which closed the log at a clean stop, and "
                f"nothing is written after that: these records were appended after the gateway "
                f"stopped ('hoopgw audit resolve-tail --set-aside' moves them aside)"
            )
        if tail_marks:
            seq, what = tail_marks[0]
            return report(
                f"{records_path}: {span} are not covered by a signed checkpoint, and seq {seq} is "
                f"{what}, which hoopgw always covers with a checkpoint before writing anything "
                f"more: that checkpoint was removed from {cp_path.name} (or the gateway died while "
                f"writing it; its next start refuses until 'hoopgw audit resolve-tail' decides)"
            )
        if not allow_unsigned_tail:
            return report(
                f"{records_path}: {span} are not covered by any signed checkpoint: the gateway "
                f"did not stop cleanly or is still running, or records were appended or "
                f"checkpoints removed (--allow-unsigned-tail accepts them, reported)"
            )

    # Witnesses: the log must extend each one's newest checkpoint.
    for target, copy in copies:
        if roots_at.get(copy.size) != copy.root:
            return report(
                f"witness {target} holds a checkpoint of size {copy.size} whose root differs from "
                f"the Merkle root of the first {copy.size} records: the log was rewritten"
            )
        witnessed.append(
            f"witness {target} holds checkpoint size {copy.size}, which this log extends "
            f"(last checkpoint {last_size})"
        )
    for target in witnesses:
        if not is_url(target):
            continue
        if not checkpoints:
            return report(f"witness {target}: {cp_path} has no checkpoint to compare")

        def proof_from(old: int, _last: int = last_size) -> list[bytes]:
            offset, frontier = position_at(records_path, old)
            end, _ = position_at(records_path, _last)
            return consistency_proof_from(old, frontier, leaf_hashes_between(records_path, offset, end))

        try:
            witnessed.append(
                check_http_witness(
                    target,
                    last_note,
                    last_size,
                    proof_from,
                    timeout=witness_timeout,
                    vkeys=tuple((witness_vkeys or {}).get(target, ())),
                )
            )
        except WitnessError as e:
            return report(str(e))
    return report(None, count - last_size)


_SET_ASIDE_FILE = re.compile(r"set-aside/[^/\x00]+")


def _set_aside_problem(directory: Path, record: Mapping[str, Any]) -> str | None:
    """
    What is wrong with the file a signed log.tail.set_aside names: it is
    what an auditor reads of that tail, and the record pins its SHA-256.
    """
    name, digest = record.get("file"), record.get("file_sha256")
    if not isinstance(name, str) or not isinstance(digest, str):
        return f"names no file and SHA-256 ({name!r}, {digest!r})"
    if not _SET_ASIDE_FILE.fullmatch(name):
        return f"names {name!r}, not a file in set-aside/"
    path = directory / name
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    except FileNotFoundError:
        return f"{path} is missing (the tail it set aside, SHA-256 {digest}): restore it"
    except OSError as e:
        return f"{path} cannot be read ({e.strerror}): not the file it set aside"
    with open(fd, "rb") as f:
        if not stat.S_ISREG(os.fstat(f.fileno()).st_mode):
            return f"{path} is not a regular file: not the file it set aside"
        found = sha256()
        while block := f.read(1 << 20):
            found.update(block)
    if found.hexdigest() != digest:
        return f"{path} changed since it was set aside: its SHA-256 is {found.hexdigest()}, the record's {digest}"
    return None


def _count_lines(path: Path) -> int:
    lines = 0
    try:
        with open(path, "rb") as f:
            while block := f.read(1 << 20):
                lines += block.count(b"\n")
    except FileNotFoundError:
        pass
    return lines
