"""
A corpus of forgeries against the audit trail, each of which must be
detected.

The attacker can read, edit, append to, truncate and delete every file in
the gateway's audit directory, and recompute SHA-256 (so re-chain records
correctly), but cannot sign: the signing key is elsewhere or the attack is
offline.  The witness directory (another mount) is out of reach.  Some
variants go further, and say so: one replaces the signing key (and
C{audit.vkey}) in the data directory, one has read the key (re-signs with
it), some damage or forge the witness's copy (the start must fail closed,
never adopt on the strength of a copy it cannot verify), one forges
C{tail-resolution.json}.  The verifiers always use the pinned verifier
key (the original), as an auditor must.

The base log: run 1 (7 records, a clean stop), run 2 (6 records, a clean
stop); checkpoints at 0 (first start), 5, 8 (run 1's signed end), 13, 15
(run 2's signed end), each also in the directory witness.  Each L{Variant}
edits a copy and names the detectors that must catch it:

  - C{verify}: C{verify(..., allow_unsigned_tail=True)} fails (the most
    lenient verification; plain verify is stricter);
  - C{start}: the gateway's log (with its witness configured) refuses to
    start, with an L{AuditStateError};
  - C{witness}: C{verify(..., allow_unsigned_tail=True, witnesses=[the
    witness directory])} fails.

A detector missing from a variant is one that cannot catch it (for
instance a rollback of log and checkpoints together is a consistent,
earlier log: only the witness knows better); the variant says so.

C{tests/audit/test_adversarial.py} runs it with the rest of the suite.
"""

from __future__ import annotations

import base64
import json
import os
import shutil
from hashlib import sha256
from pathlib import Path
from typing import Any, Callable

from attrs import frozen
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from twisted.trial.unittest import SynchronousTestCase

from hoopgw.audit.canonical import canonical_json
from hoopgw.audit.checkpoint import sign_checkpoint, vkey_text
from hoopgw.audit.log import CHECKPOINTS_FILE, RECORDS_FILE, RESOLUTION_FILE, STATE_FILE, VKEY_FILE, AuditStateError
from hoopgw.audit.merkle import CompactTree
from hoopgw.audit.verify import verify
from hoopgw.audit.witness import DirectoryWitness, directory_copy_path
from tests.audit.helpers import KEY, ORIGIN, body, make_log

__all__ = ["VARIANTS", "AuditTamperCorpusTests", "Scenario", "Variant", "build_base"]


@frozen
class Scenario:
    """A copy of the base log: its audit directory and witness directory."""

    audit: Path
    witness: Path
    other: Path  # another log signed with the same key
    snapshot: Path  # the audit directory as run 1 left it

    @property
    def records(self) -> Path:
        return self.audit / RECORDS_FILE

    @property
    def notes(self) -> Path:
        return self.audit / CHECKPOINTS_FILE

    def lines(self) -> list[bytes]:
        return self.records.read_bytes().splitlines()

    def write_lines(self, lines: list[bytes]) -> None:
        self.records.write_bytes(b"".join(line + b"\n" for line in lines))

    def note_list(self) -> list[bytes]:
        """The checkpoint notes, each with its trailing blank line."""
        data = self.notes.read_bytes()
        notes, position = [], 0
        while position < len(data):
            end = data.find(b"\n\n", data.find(b"\n\n", position) + 2) + 2
            notes.append(data[position:end])
            position = end
        return notes


def _run(directory: Path, witness: Path, count: int, start: int = 0) -> str:
    log, clock, _ = make_log(directory, checkpoint_every=5, witnesses=[DirectoryWitness(witness)])
    log.startService()
    for i in range(start, start + count):
        log.append("action.start", body(i))
        clock.advance(0.001)
    d = log.stopService()
    clock.advance(1)
    assert d.called
    return log.vkey


def build_base(root: Path) -> tuple[Scenario, str]:
    """The base log (see the module docstring) and its vkey."""
    audit, witness, other, snapshot = (root / n for n in ("audit", "witness", "other", "snapshot"))
    witness.mkdir(parents=True)
    vkey = _run(audit, witness, 7)
    shutil.copytree(audit, snapshot)
    _run(audit, witness, 6, start=7)
    _run(other, root / "other-witness", 4)
    return Scenario(audit, witness, other, snapshot), vkey


def _copy(base: Scenario, root: Path) -> Scenario:
    for name in ("audit", "witness", "other", "snapshot"):
        shutil.copytree(getattr(base, name), root / name)
    return Scenario(root / "audit", root / "witness", root / "other", root / "snapshot")


# -- forging helpers: SHA-256 only, no key -----------------------------------


def rechain(lines: list[bytes], start: int = 1) -> list[bytes]:
    """Recompute C{prev} from line C{start} on, so the chain is correct again."""
    out = list(lines[:start])
    for line in lines[start:]:
        record = json.loads(line)
        record["seq"] = len(out)
        record["prev"] = sha256(out[-1]).hexdigest() if out else "0" * 64
        out.append(canonical_json(record))
    return out


def forged(lines: list[bytes], count: int, **fields: object) -> list[bytes]:
    """C{lines} and C{count} new, correctly chained records."""
    out = list(lines)
    for _ in range(count):
        last = json.loads(out[-1])
        record = {
            "v": 1,
            "log": last["log"],
            "seq": last["seq"] + 1,
            "prev": sha256(out[-1]).hexdigest(),
            "time": last["time"],
            "event": "action.start",
            "identity": {"sub": "mallory"},
            "action": {"kind": "sql.query", "input": "DROP TABLE accounts"},
            **fields,
        }
        out.append(canonical_json(record))
    return out


def _edit(line: bytes) -> bytes:
    record = json.loads(line)
    record["action"] = {"kind": "sql.query", "input": "SELECT 'nothing to see'"}
    return canonical_json(record)


# -- the variants ---------------------------------------------------------------


@frozen
class Variant:
    """
    @ivar detectors: the detectors that must catch it.
    @ivar misses: detectors that cannot (a documented limit, checked so the
        corpus stays true); any other may or may not, incidentally.
    """

    name: str
    what: str
    mutate: Callable[[Scenario], None]
    detectors: frozenset[str]
    misses: frozenset[str] = frozenset()
    #: the key the gateway loads from its data directory (C{None}: the
    #: original); the verifiers always use the pinned original vkey.
    gateway_key: Any = None


def _flip(index: int, offset: int = 40) -> Callable[[Scenario], None]:
    def mutate(s: Scenario) -> None:
        lines = s.lines()
        data = bytearray(lines[index])
        data[offset] ^= 0x01
        lines[index] = bytes(data)
        s.write_lines(lines)

    return mutate


def _drop_record(s: Scenario) -> None:
    lines = s.lines()
    del lines[4]
    s.write_lines(lines)


def _reorder(s: Scenario) -> None:
    lines = s.lines()
    lines[2], lines[3] = lines[3], lines[2]
    s.write_lines(lines)


def _rechain_edit(s: Scenario) -> None:
    lines = s.lines()
    lines[2] = _edit(lines[2])
    s.write_lines(rechain(lines, 2))


def _truncate_mid_line(s: Scenario) -> None:
    data = s.records.read_bytes()
    s.records.write_bytes(data[: len(data) - 30])


def _truncate_records(s: Scenario) -> None:
    s.write_lines(s.lines()[:-2])


def _delete_checkpoints(s: Scenario) -> None:
    s.notes.unlink()


def _empty_checkpoints(s: Scenario) -> None:
    s.notes.write_bytes(b"")


def _truncate_checkpoints_mid_note(s: Scenario) -> None:
    data = s.notes.read_bytes()
    s.notes.write_bytes(data[: len(data) - 40])


def _keep_notes(count: int) -> Callable[[Scenario], None]:
    def mutate(s: Scenario) -> None:
        s.notes.write_bytes(b"".join(s.note_list()[:count]))

    return mutate


def _rechain_all_delete_checkpoints(s: Scenario) -> None:
    # Issue 11's attack: rewrite history, re-chain it, drop the signatures.
    lines = s.lines()
    lines[2] = _edit(lines[2])
    s.write_lines(rechain(lines, 2))
    s.notes.unlink()
    (s.audit / STATE_FILE).unlink()


def _other_logs_checkpoints(s: Scenario) -> None:
    shutil.copy(s.other / CHECKPOINTS_FILE, s.notes)


def _swap_last_notes(s: Scenario) -> None:
    notes = s.note_list()
    notes[-1], notes[-2] = notes[-2], notes[-1]
    s.notes.write_bytes(b"".join(notes))


def _replay_old_checkpoint(s: Scenario) -> None:
    notes = s.note_list()
    s.notes.write_bytes(b"".join(notes) + notes[1])


def _append_after_end(s: Scenario) -> None:
    # Issue 10's attack: two correctly chained records after a clean stop.
    s.write_lines(forged(s.lines(), 2))


def _append_after_end_no_state(s: Scenario) -> None:
    s.write_lines(forged(s.lines(), 2))
    (s.audit / STATE_FILE).unlink()


def _fake_crash(s: Scenario) -> None:
    # Turn the clean stop into a "crash": drop the closing record and the
    # end checkpoint, then append forged records as if written before it.
    lines = s.lines()[:-1]
    s.write_lines(forged(lines, 2))
    s.notes.write_bytes(b"".join(s.note_list()[:-1]))
    (s.audit / STATE_FILE).unlink()


def _rollback(s: Scenario) -> None:
    # Log, checkpoints and state restored together to run 1's end.
    for name in (RECORDS_FILE, CHECKPOINTS_FILE, STATE_FILE):
        shutil.copy(s.snapshot / name, s.audit / name)


def _rollback_and_append(s: Scenario) -> None:
    _rollback(s)
    s.write_lines(forged(s.lines(), 3))


def _rollback_rewrite_tail(s: Scenario) -> None:
    # Back to run 1's checkpoint 5 (not an end), its later records re-forged.
    notes = s.note_list()
    s.notes.write_bytes(b"".join(notes[:2]))
    lines = s.lines()[:5]
    s.write_lines(forged(lines, 3))
    (s.audit / STATE_FILE).unlink()


#: The key an attacker puts in place of the gateway's (K1).
SWAPPED_KEY = Ed25519PrivateKey.from_private_bytes(bytes(range(1, 33)))


def _log_id(s: Scenario) -> str:
    return json.loads(s.lines()[0])["log"]


def _rewrite_and_resign(s: Scenario, key: Ed25519PrivateKey) -> None:
    """
    History rewritten (record 3 edited, four records added, a closing
    record), re-chained, and every checkpoint re-signed with C{key}: notes
    at 0 and at the new end; the state removed.
    """
    lines = s.lines()
    lines[3] = _edit(lines[3])
    lines = forged(lines, 4)
    last = json.loads(lines[-1])
    last.update({"event": "log.closed", "closes_log": True})
    lines[-1] = canonical_json(last)
    lines = rechain(lines)
    s.write_lines(lines)
    origin = f"{ORIGIN}/{_log_id(s)}"
    tree = CompactTree()
    notes = [sign_checkpoint(key, ORIGIN, origin, 0, tree.root())]
    for line in lines:
        tree.append(sha256(b"\x00" + line).digest())
    notes.append(sign_checkpoint(key, ORIGIN, origin, len(lines), tree.root()))
    s.notes.write_bytes(b"\n".join(notes) + b"\n")
    (s.audit / STATE_FILE).unlink()


def _key_swap_rewrite(s: Scenario) -> None:
    # K1: the signing key and audit.vkey replaced by the attacker's, the
    # history rewritten and re-signed: the files agree with each other.
    _rewrite_and_resign(s, SWAPPED_KEY)
    (s.audit / VKEY_FILE).write_text(vkey_text(ORIGIN, SWAPPED_KEY.public_key()) + "\n")


def _stolen_key_rewrite(s: Scenario) -> None:
    # The attacker read the key: the same rewrite, signed with the real key.
    _rewrite_and_resign(s, KEY)


def _witness_copy(s: Scenario) -> Path:
    return directory_copy_path(s.witness, _log_id(s))


def _witness_copy_unsigned(s: Scenario) -> None:
    # A2: an unsigned copy claiming a huge size (was: "rolled back" forever).
    copy = _witness_copy(s)
    root = base64.b64encode(b"x" * 32).decode()
    copy.write_bytes(f"{ORIGIN}/{_log_id(s)}\n99999\n{root}\n\n".encode())


def _fake_crash_witness_damaged(s: Scenario) -> None:
    # A2: the fake crash, and the witness's copy damaged (was: a warning,
    # then the forged records adopted and signed).
    _fake_crash(s)
    _witness_copy(s).write_bytes(b"x")


def _witness_copy_fifo(s: Scenario) -> None:
    # A3: a FIFO where the copy was (was: the start hung for ever).
    copy = _witness_copy(s)
    copy.unlink()
    os.mkfifo(copy)


def _witness_copy_symlink(s: Scenario) -> None:
    # A3: a symbolic link where the copy was.
    copy = _witness_copy(s)
    copy.unlink()
    os.symlink(s.records, copy)


def _forged_resolution(s: Scenario) -> None:
    # R1: an invented operator decision naming a file that does not exist.
    entry = {
        "action": "set-aside",
        "checkpoint": 15,
        "first_seq": 15,
        "count": 40,
        "closed_before": True,
        "operator": "alice",
        "reason": "records after the log's signed end (hoopgw audit resolve-tail --set-aside)",
        "sha256": "00" * 32,
        "file_sha256": "00" * 32,
        "bytes": 4000,
        "torn_bytes": 0,
        "file": "set-aside/records-15-54-20240101T000000Z.jsonl",
    }
    (s.audit / RESOLUTION_FILE).write_text(json.dumps({"v": 1, "entries": [entry]}))


def _replay_old_checkpoint_no_state(s: Scenario) -> None:
    # R4: an old note appended again and the state removed (resolve-tail
    # used to take the replayed note as the last and cut signed records).
    _replay_old_checkpoint(s)
    (s.audit / STATE_FILE).unlink()


ALL = frozenset({"verify", "start", "witness"})

VARIANTS: tuple[Variant, ...] = (
    # The start reads only from the checkpoint before the last: older
    # damage is the verifier's to find.
    Variant("edit_byte", "one bit flipped in record 3", _flip(3), frozenset({"verify", "witness"}), frozenset({"start"})),
    Variant("edit_byte_last_interval", "one bit flipped in the closing record", _flip(-1), ALL),
    Variant("drop_record", "record 4 removed", _drop_record, frozenset({"verify", "witness"})),
    Variant("reorder", "records 2 and 3 swapped", _reorder, frozenset({"verify", "witness"})),
    Variant("rechain", "record 2 edited, every later prev recomputed", _rechain_edit, ALL),
    Variant("truncate_mid_line", "the records file cut inside its last line", _truncate_mid_line, ALL),
    Variant("truncate_records", "the last two records cut off", _truncate_records, ALL),
    Variant("delete_checkpoints", "checkpoints.notes deleted", _delete_checkpoints, ALL),
    Variant("empty_checkpoints", "checkpoints.notes emptied", _empty_checkpoints, ALL),
    Variant("truncate_checkpoints", "checkpoints.notes cut inside its last note", _truncate_checkpoints_mid_note, ALL),
    Variant("drop_end_checkpoint", "the last note (run 2's signed end) removed", _keep_notes(4), ALL),
    Variant("drop_run2_checkpoints", "run 2's notes removed (back to run 1's end)", _keep_notes(3), ALL),
    Variant("keep_first_checkpoint", "every note but the first (size 0) removed", _keep_notes(1), ALL),
    Variant(
        "rechain_all_delete_checkpoints",
        "history rewritten and re-chained, checkpoints and state deleted",
        _rechain_all_delete_checkpoints,
        ALL,
    ),
    Variant("swap_checkpoints_other_log", "checkpoints.notes of another log, same key", _other_logs_checkpoints, ALL),
    Variant("swap_notes", "the last two notes swapped", _swap_last_notes, ALL),
    Variant("replay_old_checkpoint", "an old note appended again", _replay_old_checkpoint, ALL),
    Variant("append_after_clean_end", "two chained records after the clean stop", _append_after_end, ALL),
    Variant(
        "append_after_clean_end_no_state",
        "the same, and state.json deleted",
        _append_after_end_no_state,
        ALL,
    ),
    Variant(
        "fake_crash",
        "closing record and end note removed, forged records appended: looks like a crash",
        _fake_crash,
        # Indistinguishable from a crash in the files alone: the witness
        # (also read at start) holds the end checkpoint.
        frozenset({"start", "witness"}),
        frozenset({"verify"}),
    ),
    Variant(
        "rollback",
        "log, checkpoints and state restored to run 1's end",
        _rollback,
        # A consistent earlier log: only the witness knows better.
        frozenset({"start", "witness"}),
        frozenset({"verify"}),
    ),
    Variant("rollback_and_append", "the same, then records appended", _rollback_and_append, ALL),
    Variant(
        "rollback_rewrite_tail",
        "checkpoints cut back to size 5, records after it re-forged",
        _rollback_rewrite_tail,
        # Looks like run 1 crashed after checkpoint 5: an unsigned tail that
        # --allow-unsigned-tail accepts (reported); the witness knows better.
        frozenset({"start", "witness"}),
        frozenset({"verify"}),
    ),
    Variant(
        "replay_old_checkpoint_no_state",
        "an old note appended again, state.json deleted",
        _replay_old_checkpoint_no_state,
        ALL,
    ),
    Variant(
        "key_swap_rewrite",
        "signing key and audit.vkey replaced, history rewritten and re-signed; the gateway loads the new key",
        _key_swap_rewrite,
        # The pinned vkey catches it offline; the start, by the witness's
        # copy, which does not verify with the new key.
        ALL,
        gateway_key=SWAPPED_KEY,
    ),
    Variant(
        "stolen_key_rewrite",
        "history rewritten and re-signed with the real key (read from the data directory)",
        _stolen_key_rewrite,
        # Correctly signed: only the witness's copy (size 15) knows the
        # first 15 records had another root.
        frozenset({"start", "witness"}),
        frozenset({"verify"}),
    ),
    Variant(
        "witness_copy_unsigned",
        "the witness's copy replaced by an unsigned note of size 99999",
        _witness_copy_unsigned,
        frozenset({"start", "witness"}),
        frozenset({"verify"}),
    ),
    Variant(
        "fake_crash_witness_damaged",
        "the fake crash, and the witness's copy damaged",
        _fake_crash_witness_damaged,
        frozenset({"start", "witness"}),
        frozenset({"verify"}),
    ),
    Variant(
        "witness_copy_fifo",
        "a FIFO in place of the witness's copy",
        _witness_copy_fifo,
        frozenset({"start", "witness"}),
        frozenset({"verify"}),
    ),
    Variant(
        "witness_copy_symlink",
        "a symbolic link (to records.jsonl) in place of the witness's copy",
        _witness_copy_symlink,
        frozenset({"start", "witness"}),
        frozenset({"verify"}),
    ),
    Variant(
        "forged_resolution",
        "tail-resolution.json forged: a set-aside decision naming no real file",
        _forged_resolution,
        # Not evidence: the log itself verifies; the start must not sign it.
        frozenset({"start"}),
        frozenset({"verify", "witness"}),
    ),
)


class AuditTamperCorpusTests(SynchronousTestCase):
    """Every variant is caught by each detector it names."""

    def setUp(self) -> None:
        # Built once per test (three short logs on a fake clock: cheap).
        root = Path(self.mktemp())
        root.mkdir(parents=True)
        self.base, self.vkey = build_base(root / "base")

    def scenario(self) -> Scenario:
        root = Path(self.mktemp())
        root.mkdir(parents=True)
        return _copy(self.base, root)

    def detections(self, s: Scenario, gateway_key: Any = None) -> dict[str, str | None]:
        """What each detector says: an error, or C{None} if it accepted the log."""
        found: dict[str, str | None] = {}
        report = verify(s.audit, self.vkey, allow_unsigned_tail=True)
        found["verify"] = report.first_error
        report = verify(s.audit, self.vkey, allow_unsigned_tail=True, witnesses=[str(s.witness)])
        found["witness"] = report.first_error
        log, clock, _ = make_log(
            s.audit,
            checkpoint_every=5,
            witnesses=[DirectoryWitness(s.witness)],
            signing_key=gateway_key or KEY,
        )
        try:
            log.startService()
        except AuditStateError as e:
            found["start"] = str(e)
        else:
            found["start"] = None
            d = log.stopService()
            clock.advance(1)
            self.successResultOf(d)
        return found

    def test_base_accepted(self) -> None:
        """
        The untouched base log passes every detector (no false alarm), and
        is closed cleanly, with both runs' checkpoints in the witness.
        """
        s = self.scenario()
        report = verify(s.audit, self.vkey, witnesses=[str(s.witness)])
        self.assertTrue(report.ok, report.first_error)
        self.assertTrue(report.closed)
        self.assertEqual((report.records, report.last_checkpoint_size), (15, 15))
        self.assertEqual(self.detections(s), {"verify": None, "witness": None, "start": None})

    def test_corpus(self) -> None:
        """
        Each variant is detected by every detector it names, with a
        message naming a file; what a variant does not claim is checked too,
        so the corpus says exactly what each defence covers.
        """
        for variant in VARIANTS:
            s = self.scenario()
            variant.mutate(s)
            found = self.detections(s, variant.gateway_key)
            for detector in ("verify", "witness", "start"):
                error = found[detector]
                if detector in variant.detectors:
                    self.assertIsNotNone(error, f"{variant.name} ({variant.what}) not detected by {detector}")
                    assert error is not None
                    self.assertRegex(
                        error, r"records\.jsonl|checkpoints\.notes|state\.json|witness|tail-resolution\.json", variant.name
                    )
                elif detector in variant.misses:
                    self.assertIsNone(error, f"{variant.name}: {detector} now detects it: update the corpus")

    def test_messages(self) -> None:
        """
        The issue's attacks get messages that say what happened and what to
        do, naming the file and the seq range.
        """
        cases = {
            "append_after_clean_end": ("start", ["seq 15..16", "signed end", "resolve-tail --set-aside"]),
            "delete_checkpoints": ("verify", ["checkpoints.notes is missing", "first start"]),
            "rollback": ("witness", ["checkpoint size 15", "ends at size 8", "rolled back"]),
            "fake_crash": ("start", ["checkpoint size 15", "size 13", "rolled back"]),
            "drop_end_checkpoint": ("verify", ["seq 14 is", "closes the log", "removed"]),
            "replay_old_checkpoint_no_state": ("start", ["checkpoint 6", "size 5 is smaller", "replayed"]),
            "key_swap_rewrite": ("start", ["does not verify with the log's key", "replaced", "pinned"]),
            "stolen_key_rewrite": ("start", ["holds checkpoint size 15", "differs", "rewritten"]),
            "witness_copy_unsigned": ("start", [".checkpoint", "does not verify", "move", "aside"]),
            "fake_crash_witness_damaged": ("start", [".checkpoint", "does not verify", "refusing to start"]),
            "witness_copy_fifo": ("start", ["not a regular file", "refusing to start"]),
            "witness_copy_symlink": ("start", ["symbolic link", "refusing to start"]),
            "forged_resolution": ("start", ["tail-resolution.json", "cannot be opened", "not written by resolve-tail"]),
        }
        by_name = {v.name: v for v in VARIANTS}
        for name, (detector, parts) in cases.items():
            s = self.scenario()
            by_name[name].mutate(s)
            error = self.detections(s, by_name[name].gateway_key)[detector]
            assert error is not None, name
            for part in parts:
                self.assertIn(part, error, name)
        # A copy that cannot be verified is never reported as a rollback.
        s = self.scenario()
        by_name["witness_copy_unsigned"].mutate(s)
        self.assertNotIn("rolled back", self.detections(s)["start"] or "")

    def test_nothing_adopted_or_written(self) -> None:
        """
        A start refused because of the witness's copy or a forged decision
        writes nothing: the records, the checkpoints and the copy are as
        the attacker left them (nothing forged is adopted or signed).
        """
        names = (
            "key_swap_rewrite",
            "stolen_key_rewrite",
            "witness_copy_unsigned",
            "fake_crash_witness_damaged",
            "witness_copy_symlink",
            "forged_resolution",
        )
        by_name = {v.name: v for v in VARIANTS}
        for name in names:
            s = self.scenario()
            by_name[name].mutate(s)
            before = [p.read_bytes() for p in (s.records, s.notes)]
            copy = _witness_copy(s)
            held = os.readlink(copy) if copy.is_symlink() else copy.read_bytes()
            log, _, _ = make_log(s.audit, witnesses=[DirectoryWitness(s.witness)], signing_key=by_name[name].gateway_key or KEY)
            self.assertRaises(AuditStateError, log.startService)
            self.assertEqual([p.read_bytes() for p in (s.records, s.notes)], before, name)
            self.assertEqual(os.readlink(copy) if copy.is_symlink() else copy.read_bytes(), held, name)
