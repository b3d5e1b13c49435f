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
import tarfile
from pathlib import Path
from typing import Any, Iterator

from attrs import define, field

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
    """Every record's leaf hash, and the session's (index, line)."""
    hashes: list[bytes] = []
    lines: list[tuple[int, bytes]] = []
    marker = f'"session":"{session}"'.encode()
    with open(records_path, "rb") as f:
        for index, line in enumerate(f):
            line = line.rstrip(b"\n")
            hashes.append(leaf_hash(line))
            if marker in line and json.loads(line).get("session") == session:
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
    for _, line in lines:
        record = json.loads(line)
        if record.get("event") != "session.end":
            continue
        end = record.get("end", {})
        paths = [end["recording"]] if end.get("recording") else []
        paths += [other["path"] for other in end.get("recordings", ()) if other.get("path")]
        for text in paths:
            path = Path(text)
            if not path.is_file():
                path = data_dir / "recordings" / path.name
            if not path.is_file():
                raise BundleError(f"recording {text} of the session is missing")
            yield path.name, path


@define
class BundleReport:
    """What L{verify_bundle} found: C{problems} empty means the bundle is intact."""

    session: str = ""
    key: str = ""
    records: int = 0
    recordings: int = 0
    checkpoint: int = 0
    newest: int = 0
    problems: list[str] = field(factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems


def _read_members(path: Path, report: BundleReport) -> dict[str, bytes]:
    members: dict[str, bytes] = {}
    total = 0
    try:
        with tarfile.open(path, "r:") as tar:
            for info in tar:
                name = info.name
                if not info.isfile() or name.startswith("/") or ".." in name.split("/") or name in members:
                    report.problems.append(f"{name}: not a plain file of a bundle (or named twice)")
                    continue
                total += info.size
                if total > MAX_BUNDLE_BYTES:
                    report.problems.append(f"{path}: larger than {MAX_BUNDLE_BYTES} bytes")
                    break
                extracted = tar.extractfile(info)
                members[name] = extracted.read() if extracted is not None else b""
    except (tarfile.TarError, OSError) as e:
        report.problems.append(f"{path}: not a readable tar file ({e})")
    return members


def verify_bundle(path: Path | str, vkey: str | None = None) -> BundleReport:
    """
    Check a bundle offline (module docstring).  With C{vkey}, the bundle
    must be signed by that key, not just by the one it carries.
    """
    report = BundleReport()
    members = _read_members(Path(path), report)
    if report.problems and not members:
        return report
    problems = report.problems
    for name in _FILES:
        if name not in members:
            problems.append(f"{name}: missing")
    if any(name not in members for name in ("manifest.json", "manifest.note", "audit.vkey")):
        return report
    try:
        verifier = Verifier.from_vkey(members["audit.vkey"].decode("utf-8", "replace"))
    except CheckpointError as e:
        problems.append(f"audit.vkey: {e}")
        return report
    if vkey is not None:
        try:
            pinned = Verifier.from_vkey(vkey)
        except CheckpointError as e:
            problems.append(f"--vkey: {e}")
            return report
        if (pinned.name, pinned.key_id, pinned.public_key.public_bytes_raw()) != (
            verifier.name, verifier.key_id, verifier.public_key.public_bytes_raw()
        ):
            problems.append(f"audit.vkey: the bundle is signed by {verifier.name}+{verifier.key_id.hex()}, not by the key given")
            return report
    report.key = f"{verifier.name}+{verifier.key_id.hex()}"
    manifest_bytes = members["manifest.json"]
    try:
        body = verify_note(members["manifest.note"], verifier).decode("utf-8")
    except (CheckpointError, UnicodeDecodeError) as e:
        problems.append(f"manifest.note: {e}")
        return report
    try:
        manifest = json.loads(manifest_bytes)
        session = manifest["session"]
        expected_body = _manifest_note_body(session, _sha256(manifest_bytes)).decode()
    except (ValueError, KeyError, TypeError) as e:
        problems.append(f"manifest.json: not a bundle manifest ({e})")
        return report
    if body != expected_body:
        problems.append("manifest.json: changed since it was signed (its SHA-256 is not the one manifest.note signs)")
        return report
    report.session = session
    listed = manifest.get("files", {})
    for name, data in members.items():
        if name in ("manifest.json", "manifest.note"):
            continue
        entry = listed.get(name)
        if entry is None:
            problems.append(f"{name}: not in the manifest")
        elif entry.get("sha256") != _sha256(data) or entry.get("size") != len(data):
            problems.append(f"{name}: changed (its SHA-256 is not the manifest's)")
    for name in listed:
        if name not in members:
            problems.append(f"{name}: missing (the manifest lists it)")
    checkpoints: dict[str, Checkpoint] = {}
    for name in ("checkpoint.note", "newest.note"):
        if name in members:
            try:
                checkpoints[name] = verify_checkpoint(members[name], verifier)
            except CheckpointError as e:
                problems.append(f"{name}: {e}")
    covering, newest = checkpoints.get("checkpoint.note"), checkpoints.get("newest.note")
    for name, checkpoint, key in (("checkpoint.note", covering, "checkpoint"), ("newest.note", newest, "newest")):
        if checkpoint is not None and (checkpoint.size, _b64(checkpoint.root)) != (
            manifest.get(key, {}).get("size"), manifest.get(key, {}).get("root")
        ):
            problems.append(f"{name}: not the checkpoint the manifest names")
    if covering is not None:
        report.checkpoint = covering.size
    if newest is not None:
        report.newest = newest.size
    _check_records(members, manifest, covering, newest, report)
    return report


def _check_records(
    members: dict[str, bytes], manifest: dict[str, Any], covering: Checkpoint | None, newest: Checkpoint | None,
    report: BundleReport,
) -> None:
    problems = report.problems
    if "records.jsonl" not in members or "proofs.json" not in members or covering is None:
        return
    try:
        proofs = json.loads(members["proofs.json"])
        by_seq = {entry["seq"]: [base64.b64decode(p) for p in entry["proof"]] for entry in proofs["records"]}
        consistency = proofs["consistency"]
    except (ValueError, KeyError, TypeError) as e:
        problems.append(f"proofs.json: not a bundle's proofs ({e})")
        return
    lines = members["records.jsonl"].split(b"\n")
    if lines and lines[-1] == b"":
        lines.pop()
    seqs: list[int] = []
    ends: list[dict[str, Any]] = []
    for number, line in enumerate(lines, 1):
        try:
            record = json.loads(line)
            seq = record["seq"]
        except (ValueError, KeyError, TypeError):
            problems.append(f"records.jsonl: line {number} is not an audit record")
            continue
        seqs.append(seq)
        if record.get("session") != report.session:
            problems.append(f"records.jsonl: record #{seq} is not of session {report.session}")
        if record.get("event") == "session.end":
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
    expected = manifest.get("records", [])
    missing = sorted(set(expected) - set(seqs))
    if missing:
        problems.append(f"records.jsonl: record(s) {', '.join(f'#{s}' for s in missing)} of the session are missing")
    extra = sorted(set(seqs) - set(expected))
    if extra:
        problems.append(f"records.jsonl: record(s) {', '.join(f'#{s}' for s in extra)} are not the manifest's")
    if seqs != sorted(seqs):
        problems.append("records.jsonl: records are out of log order")
    if newest is not None:
        try:
            proof = [base64.b64decode(p) for p in consistency["proof"]]
            if (consistency["from"], consistency["to"]) != (covering.size, newest.size):
                raise ProofError("it is not between the two checkpoints")
            if newest.size != covering.size:
                verify_consistency(covering.size, newest.size, covering.root, newest.root, proof)
            elif newest.root != covering.root:
                raise ProofError("two checkpoints of one size with different roots")
        except (ProofError, KeyError, TypeError, ValueError) as e:
            problems.append(f"proofs.json: the consistency proof from {covering.size} to {newest.size} fails ({e})")
    # Recordings are bound to the signed records too: session.end holds their SHA-256.
    signed = set()
    for end in ends:
        info = end.get("end", {})
        if info.get("recording") and info.get("recording_sha256"):
            signed.add((Path(info["recording"]).name, info["recording_sha256"]))
        for other in info.get("recordings", ()):
            if other.get("path") and other.get("sha256"):
                signed.add((Path(other["path"]).name, other["sha256"]))
    for name, data in members.items():
        if name.startswith("recordings/"):
            report.recordings += 1
            if (name[len("recordings/"):], _sha256(data)) not in signed:
                problems.append(f"{name}: not the recording the session's signed session.end names")
    for name, _ in signed:
        if f"recordings/{name}" not in members:
            problems.append(f"recordings/{name}: missing (the session's session.end names it)")
