"""
Session bundles: one session's evidence in a tar file that anyone can
verify offline, on another machine, with no configuration and no data dir.

A bundle holds (every name fixed, in this order):

- C{manifest.json}: the format, the session, each other file's SHA-256 and
  size, the sequence numbers of the session's records, the checkpoint that
  covers them and the newest checkpoint (size and root);
- C{manifest.note}: a signed note (the audit log's key, as checkpoints)
  over the manifest's SHA-256, so that the manifest -- and through it every
  file, and the list of records -- cannot be changed without the key;
- C{records.jsonl}: the session's audit records, the exact lines of the
  trail, in log order;
- C{proofs.json}: an RFC 6962 inclusion proof of each record in the
  covering checkpoint's tree, and a consistency proof from it to the
  newest checkpoint;
- C{checkpoint.note}, C{newest.note}: those two signed checkpoints;
- C{audit.vkey}: the verifier key (compare its key id with the one the
  gateway's operator publishes, or pass it to C{verify-bundle --vkey});
- C{recordings/NAME.cast}: the session's terminal recordings, whose
  SHA-256 is also in its signed C{session.end} record.

L{verify_bundle} checks every byte of that, and names what is wrong.
"""

from __future__ import annotations

import base64
import hashlib
import io
import json
import re
import tarfile
from pathlib import Path
from typing import Any, Iterator, TypeGuard

from attrs import define, field

from hoopgw.audit import events
from hoopgw.audit.checkpoint import (
    Checkpoint,
    CheckpointError,
    Verifier,
    sign_note,
    verify_checkpoint,
    verify_note,
)
from hoopgw.audit.log import CHECKPOINTS_FILE, RECORDS_FILE, SIGNING_KEY_FILE, VKEY_FILE
from hoopgw.audit.merkle import Levels, ProofError, consistency_proof, leaf_hash, verify_consistency, verify_inclusion
from hoopgw.audit.verify import read_checkpoints
from hoopgw.keys import load_or_create_ed25519

__all__ = ["BundleError", "BundleReport", "export_bundle", "verify_bundle"]

FORMAT = "hoopgw-session-bundle/1"
_NOTE_TITLE = "hoopgw session bundle"
_FILES = ("manifest.json", "manifest.note", "records.jsonl", "proofs.json", "checkpoint.note", "newest.note", "audit.vkey")
# A bundle is read whole into memory to be checked: far above any session's, far below the machine's.
MAX_BUNDLE_BYTES = 4 << 30


class BundleError(Exception):
    """A bundle cannot be made (the message says why and what to do)."""


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _manifest_note_body(session: str, digest: str) -> bytes:
    # Four lines: never a checkpoint body (three), whatever the log's origin.
    return f"{_NOTE_TITLE}\n{FORMAT}\n{session}\nsha256 {digest}\n".encode()


def _scan(records_path: Path, session: str) -> tuple[list[bytes], list[tuple[int, bytes]]]:
    """Every whole record's leaf hash, and the session's (index, line); a torn last line (being written) is left out."""
    hashes: list[bytes] = []
    lines: list[tuple[int, bytes]] = []
    marker = f'"session":"{session}"'.encode()
    with open(records_path, "rb") as f:
        for index, raw in enumerate(f):
            if not raw.endswith(b"\n"):
                break
            line = raw[:-1]
            hashes.append(leaf_hash(line))
            if marker in line:
                try:
                    record = json.loads(line)
                except (ValueError, RecursionError):
                    raise BundleError(f"{records_path}: record #{index} is not JSON: run hoopgw audit verify") from None
                if isinstance(record, dict) and record.get("session") == session:
                    lines.append((index, line))
    return hashes, lines


def export_bundle(data_dir: Path | str, session: str, out: Path | str) -> dict[str, Any]:
    """
    Write the bundle of C{session} (module docstring) from a data dir
    (read-only, while the gateway runs too) to C{out}; return its manifest.

    @raise BundleError: no record of the session, or no signed checkpoint
        covers its last record yet (the message says so), or the data dir's
        keys are missing.
    """
    data_dir = Path(data_dir)
    audit = data_dir / "audit"
    key_path = data_dir / SIGNING_KEY_FILE
    for needed in (audit / VKEY_FILE, audit / CHECKPOINTS_FILE, audit / RECORDS_FILE, key_path):
        if not needed.is_file():
            raise BundleError(f"{needed}: missing (a bundle is made from a gateway's data dir, with its audit key)")
    vkey = (audit / VKEY_FILE).read_text()
    try:
        verifier = Verifier.from_vkey(vkey)
        private_key = load_or_create_ed25519(key_path, what="audit signing key")
        raw_notes = (audit / CHECKPOINTS_FILE).read_bytes()
        notes = [(start, checkpoint) for _, start, checkpoint in read_checkpoints(raw_notes, verifier, str(audit / CHECKPOINTS_FILE))]
    except (CheckpointError, ValueError) as e:
        raise BundleError(str(e)) from None
    if not notes:
        raise BundleError(f"{audit / CHECKPOINTS_FILE}: no signed checkpoint yet")
    if private_key.public_key().public_bytes_raw() != verifier.public_key.public_bytes_raw():
        raise BundleError(f"{key_path} is not the key of {audit / VKEY_FILE}")
    hashes, lines = _scan(audit / RECORDS_FILE, session)
    if not lines:
        raise BundleError(f"no record of session {session!r} in {audit}")
    last = lines[-1][0]
    covering = next(((start, c) for start, c in notes if c.size > last and c.size <= len(hashes)), None)
    if covering is None:
        raise BundleError(
            f"session {session}'s records (up to #{last}) are not yet covered by a signed checkpoint; "
            "the gateway signs one as it goes: export again in a moment"
        )
    newest_start, newest = notes[-1]
    levels = Levels(hashes[: covering[1].size])
    if levels.root() != covering[1].root:
        raise BundleError(f"{audit}: the records do not match checkpoint {covering[1].size}: run hoopgw audit verify")
    # A trail shorter than its newest checkpoint, or different from it, is tampering: never signed into a bundle.
    if newest.size > len(hashes) or (newest.size > covering[1].size and Levels(hashes[: newest.size]).root() != newest.root):
        raise BundleError(f"{audit}: the records do not match the newest checkpoint ({newest.size}): run hoopgw audit verify")

    def note_at(start: int) -> bytes:
        end = raw_notes.index(b"\n\n", raw_notes.index(b"\n\n", start) + 2)
        return raw_notes[start : end + 1]

    proofs = {
        "checkpoint": {"size": covering[1].size, "root": _b64(covering[1].root)},
        "records": [
            {"seq": index, "proof": [_b64(p) for p in levels.inclusion_proof(index)]} for index, _ in lines
        ],
        "consistency": {
            "from": covering[1].size,
            "to": newest.size,
            "proof": [_b64(p) for p in consistency_proof(covering[1].size, hashes[: newest.size])]
            if newest.size > covering[1].size else [],
        },
    }
    files: dict[str, bytes] = {
        "records.jsonl": b"".join(line + b"\n" for _, line in lines),
        "proofs.json": json.dumps(proofs, indent=1, sort_keys=True).encode() + b"\n",
        "checkpoint.note": note_at(covering[0]),
        "newest.note": note_at(newest_start),
        "audit.vkey": vkey.encode() if vkey.endswith("\n") else vkey.encode() + b"\n",
    }
    for name, path in _recordings(lines, data_dir):
        files[f"recordings/{name}"] = path.read_bytes()
    manifest = {
        "format": FORMAT,
        "session": session,
        "key": f"{verifier.name}+{verifier.key_id.hex()}",
        "records": [index for index, _ in lines],
        "checkpoint": {"size": covering[1].size, "root": _b64(covering[1].root)},
        "newest": {"size": newest.size, "root": _b64(newest.root)},
        "files": {name: {"sha256": _sha256(data), "size": len(data)} for name, data in sorted(files.items())},
    }
    manifest_bytes = json.dumps(manifest, indent=1, sort_keys=True).encode() + b"\n"
    files["manifest.json"] = manifest_bytes
    files["manifest.note"] = sign_note(private_key, verifier.name, _manifest_note_body(session, _sha256(manifest_bytes)))
    order = [*_FILES, *sorted(n for n in files if n.startswith("recordings/"))]
    with tarfile.open(out, "w", format=tarfile.PAX_FORMAT) as tar:
        for name in order:
            data = files[name]
            info = tarfile.TarInfo(name)
            info.size = len(data)
            info.mode = 0o644
            info.mtime = 0  # the same session gives the same bytes
            tar.addfile(info, io.BytesIO(data))
    return manifest


def _recordings(lines: list[tuple[int, bytes]], data_dir: Path) -> Iterator[tuple[str, Path]]:
    """
    The recordings the session's C{session.end} names with their SHA-256,
    read from this data dir's recordings folder only (the bundle leaves the
    machine: nothing else is read into it), each checked against that hash.
    """
    folder = data_dir / "recordings"
    for _, line in lines:
        record = json.loads(line)
        if record.get("event") != events.SESSION_END:
            continue
        for name, digest in signed_recordings(record):
            path = folder / name
            if not path.is_file():
                raise BundleError(f"recording {path} of the session is missing")
            if _sha256(path.read_bytes()) != digest:
                raise BundleError(f"recording {path} is not the one the session's session.end names (its SHA-256 differs)")
            yield name, path


def signed_recordings(record: Any) -> list[tuple[str, str]]:
    """(file name, SHA-256) of each recording a C{session.end} record names with its hash; malformed entries are not."""
    end = record.get("end") if isinstance(record, dict) else None
    if not isinstance(end, dict):
        return []
    named = [(end.get("recording"), end.get("recording_sha256"))]
    others = end.get("recordings")
    if isinstance(others, list):
        named += [(o.get("path"), o.get("sha256")) for o in others if isinstance(o, dict)]
    return [
        (Path(path).name, digest) for path, digest in named
        if isinstance(path, str) and isinstance(digest, str) and Path(path).name.endswith(".cast")
    ]


@define
class BundleReport:
    """
    What L{verify_bundle} found: C{problems} empty means the bundle is
    intact; C{notes} say what it is (a session not ended) without being
    wrong.
    """

    session: str = ""
    key: str = ""
    fingerprint: str = ""  # SHA-256 of the verifier key: what to compare with the operator's
    records: int = 0
    recordings: int = 0
    checkpoint: int = 0
    newest: int = 0
    problems: list[str] = field(factory=list)
    notes: list[str] = field(factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems


_RECORDING = re.compile(r"recordings/[A-Za-z0-9_.-]{1,200}\.cast")


def _read_members(path: Path, report: BundleReport) -> dict[str, bytes]:
    """The members a bundle may hold, read with limits; anything else is a problem, and is not read."""
    members: dict[str, bytes] = {}
    total = 0
    try:
        with tarfile.open(path, "r:") as tar:
            for info in tar:
                name = info.name
                if name not in _FILES and not _RECORDING.fullmatch(name):
                    report.problems.append(f"{name!r}: not a member a bundle has")
                    continue
                if not info.isreg() or info.issparse() or name in members:
                    report.problems.append(f"{name}: not a plain file (or named twice)")
                    continue
                total += info.size
                if total > MAX_BUNDLE_BYTES:
                    report.problems.append(f"{path}: larger than {MAX_BUNDLE_BYTES} bytes")
                    break
                extracted = tar.extractfile(info)
                members[name] = extracted.read(info.size + 1) if extracted is not None else b""
    except (tarfile.TarError, OSError, ValueError) as e:
        report.problems.append(f"{path}: not a readable tar file ({e})")
    return members


def verify_bundle(path: Path | str, vkey: str | None = None) -> BundleReport:
    """
    Check a bundle offline (module docstring).  With C{vkey}, the bundle
    must be signed by that key, not just by the one it carries.  Never
    raises on what the bundle holds: every problem is in the report.
    """
    report = BundleReport()
    try:
        _verify(Path(path), vkey, report)
    except Exception as e:  # noqa: BLE001 -- hostile input must give a verdict, not a traceback
        report.problems.append(f"malformed bundle ({type(e).__name__}: {e})")
    return report


def _verify(path: Path, vkey: str | None, report: BundleReport) -> None:
    members = _read_members(path, report)
    problems = report.problems
    for name in _FILES:
        if name not in members:
            problems.append(f"{name}: missing")
    if any(name not in members for name in ("manifest.json", "manifest.note", "audit.vkey")):
        return
    try:
        verifier = Verifier.from_vkey(members["audit.vkey"].decode("utf-8", "replace"))
    except CheckpointError as e:
        problems.append(f"audit.vkey: {e}")
        return
    raw_key = verifier.public_key.public_bytes_raw()
    if vkey is not None:
        try:
            pinned = Verifier.from_vkey(vkey)
        except CheckpointError as e:
            problems.append(f"--vkey: {e}")
            return
        if (pinned.name, pinned.key_id, pinned.public_key.public_bytes_raw()) != (verifier.name, verifier.key_id, raw_key):
            problems.append(f"audit.vkey: the bundle is signed by {verifier.name}+{verifier.key_id.hex()}, not by the key given")
            return
    report.key = f"{verifier.name}+{verifier.key_id.hex()}"
    report.fingerprint = _sha256(members["audit.vkey"].strip())
    manifest_bytes = members["manifest.json"]
    note = members["manifest.note"]
    try:
        body = verify_note(note, verifier)
    except CheckpointError as e:
        problems.append(f"manifest.note: {e}")
        return
    if note.count(b"\n\n") != 1 or note[len(body) + 1 :].count(b"\n") != 1:
        # One signature, by the bundle's key: a note that can take more lines is bytes that can change.
        problems.append("manifest.note: expected exactly one signature line")
        return
    if body != _manifest_note_body(_note_session(body), _sha256(manifest_bytes)):
        problems.append("manifest.json: changed since it was signed (its SHA-256 is not the one manifest.note signs)")
        return
    manifest = json.loads(manifest_bytes)  # signed: the exporter's own bytes
    listed = manifest.get("files") if isinstance(manifest, dict) else None
    if not isinstance(manifest, dict) or not isinstance(manifest.get("session"), str) or not isinstance(listed, dict) \
            or not all(isinstance(e, dict) for e in listed.values()):
        problems.append("manifest.json: not a bundle manifest")
        return
    report.session = manifest["session"]
    intact: dict[str, bytes] = {}
    for name, data in members.items():
        if name in ("manifest.json", "manifest.note"):
            continue
        entry = listed.get(name)
        if entry is None:
            problems.append(f"{name}: not in the manifest")
        elif entry.get("sha256") != _sha256(data) or entry.get("size") != len(data):
            problems.append(f"{name}: changed (its SHA-256 is not the manifest's)")
        else:
            intact[name] = data
    for name in listed:
        if name not in members:
            problems.append(f"{name}: missing (the manifest lists it)")
    # What follows reads only members the signed manifest vouches for.
    checkpoints: dict[str, Checkpoint] = {}
    for name in ("checkpoint.note", "newest.note"):
        if name in intact:
            try:
                checkpoints[name] = verify_checkpoint(intact[name], verifier)
            except CheckpointError as e:
                problems.append(f"{name}: {e}")
    covering, newest = checkpoints.get("checkpoint.note"), checkpoints.get("newest.note")
    for name, checkpoint, key in (("checkpoint.note", covering, "checkpoint"), ("newest.note", newest, "newest")):
        named = manifest.get(key)
        if checkpoint is not None and (not isinstance(named, dict) or (checkpoint.size, _b64(checkpoint.root)) != (
            named.get("size"), named.get("root")
        )):
            problems.append(f"{name}: not the checkpoint the manifest names")
    if covering is not None:
        report.checkpoint = covering.size
    if newest is not None:
        report.newest = newest.size
    # A changed records.jsonl is still read (hostile or not), to name the records it lacks.
    readable = dict(intact)
    if "records.jsonl" in members:
        readable["records.jsonl"] = members["records.jsonl"]
    _check_records(readable, manifest, covering, newest, report)


def _note_session(body: bytes) -> str:
    lines = body.decode("utf-8", "replace").split("\n")
    return lines[2] if len(lines) > 2 else ""


def _int(value: object) -> TypeGuard[int]:
    return isinstance(value, int) and not isinstance(value, bool)


def _check_records(
    members: dict[str, bytes], manifest: dict[str, Any], covering: Checkpoint | None, newest: Checkpoint | None,
    report: BundleReport,
) -> None:
    problems = report.problems
    if "records.jsonl" not in members or "proofs.json" not in members or covering is None:
        return
    proofs = json.loads(members["proofs.json"])
    by_seq: dict[int, list[bytes]] = {}
    for entry in proofs.get("records", []) if isinstance(proofs, dict) else []:
        if isinstance(entry, dict) and _int(entry.get("seq")) and isinstance(entry.get("proof"), list):
            by_seq[entry["seq"]] = [base64.b64decode(p, validate=True) for p in entry["proof"] if isinstance(p, str)]
    consistency = proofs.get("consistency") if isinstance(proofs, dict) else None
    lines = members["records.jsonl"].split(b"\n")
    if lines and lines[-1] == b"":
        lines.pop()
    seqs: list[int] = []
    ends: list[dict[str, Any]] = []
    for number, line in enumerate(lines, 1):
        try:
            record = json.loads(line)
        except (ValueError, RecursionError):
            record = None
        seq = record.get("seq") if isinstance(record, dict) else None
        if not _int(seq):
            problems.append(f"records.jsonl: line {number} is not an audit record")
            continue
        seqs.append(seq)
        if record.get("session") != report.session:
            problems.append(f"records.jsonl: record #{seq} is not of session {report.session}")
        if record.get("event") == events.SESSION_END:
            ends.append(record)
        proof = by_seq.get(seq)
        if proof is None:
            problems.append(f"proofs.json: no inclusion proof of record #{seq}")
            continue
        try:
            verify_inclusion(seq, covering.size, leaf_hash(line), proof, covering.root)
        except ProofError as e:
            problems.append(f"records.jsonl: record #{seq} is not the one the signed checkpoint {covering.size} holds ({e})")
    report.records = len(seqs)
    expected = [s for s in manifest.get("records", []) if _int(s)] if isinstance(manifest.get("records"), list) else []
    missing = sorted(set(expected) - set(seqs))
    if missing:
        problems.append(f"records.jsonl: record(s) {', '.join(f'#{s}' for s in missing)} of the session are missing")
    extra = sorted(set(seqs) - set(expected))
    if extra:
        problems.append(f"records.jsonl: record(s) {', '.join(f'#{s}' for s in extra)} are not the manifest's")
    if len(set(seqs)) != len(seqs):
        problems.append("records.jsonl: a record appears twice")
    if seqs != sorted(seqs):
        problems.append("records.jsonl: records are out of log order")
    if not ends:
        report.notes.append("the session had not ended when it was exported (no session.end)")
    if newest is not None:
        try:
            if not isinstance(consistency, dict):
                raise ProofError("it is missing")
            proof = [base64.b64decode(p, validate=True) for p in consistency.get("proof", [])]
            if (consistency.get("from"), consistency.get("to")) != (covering.size, newest.size):
                raise ProofError("it is not between the two checkpoints")
            if newest.size != covering.size:
                verify_consistency(covering.size, newest.size, covering.root, newest.root, proof)
            elif newest.root != covering.root:
                raise ProofError("two checkpoints of one size with different roots")
        except (ProofError, TypeError, ValueError) as e:
            problems.append(f"proofs.json: the consistency proof from {covering.size} to {newest.size} fails ({e})")
    # Recordings are bound to the signed records too: session.end holds their SHA-256.
    signed = {pair for end in ends for pair in signed_recordings(end)}
    for name, data in members.items():
        if name.startswith("recordings/"):
            report.recordings += 1
            if (name[len("recordings/"):], _sha256(data)) not in signed:
                problems.append(f"{name}: not the recording the session's signed session.end names")
    for name, _ in signed:
        if f"recordings/{name}" not in members:
            problems.append(f"recordings/{name}: missing (the session's session.end names it)")
