"""
The evidence document (L{hoopgw.evidence.controls.build_evidence}) as an
OSCAL 1.1.2 assessment-results document (JSON).

- C{metadata}: title, C{last-modified} (the document's C{generated_at}: the
  one field that changes between two runs over the same range), version
  (the evidence format), oscal-version.
- C{import-ap}: there is no OSCAL assessment plan behind this evidence; the
  required reference points to a back-matter resource that says so.
- C{results[0]}: the range (start, end), the reviewed controls (NIST SP
  800-53 rev. 5 ids, lowercase as in NIST's OSCAL catalog: C{au-6});
  observations, one per control summary and one per finding; one finding per
  control, on its statement (C{au-6_smt}), satisfied or not
  (L{DEFICIENCIES}), relating its observations.
- Each cited audit record is a back-matter resource: an rlink to
  C{records.jsonl#seq-N} (relative to the audit directory) with the SHA-256
  of the record's line, OSCAL's own way to pin a resource by hash; an
  observation's C{relevant-evidence} points to it (C{#uuid}) and names it
  C{audit record #N}.

UUIDs are version 5, from a fixed namespace, the range and the content they
identify: the same range gives the same bytes, but for C{last-modified}.
"""

from __future__ import annotations

import json
import uuid
from typing import Any

from hoopgw.evidence.controls import DEFICIENCIES

__all__ = ["OSCAL_VERSION", "render_oscal"]

OSCAL_VERSION = "1.1.2"

# Fixed for all time: changing it changes every UUID of every report.
_NAMESPACE = uuid.UUID("0b4e3c8e-5d0a-5a43-9d43-6f1c3a0e7e14")


def _control_id(name: str) -> str:
    return name.lower()


def _citations(value: Any, into: dict[int, str]) -> dict[int, str]:
    """Every C{{"seq", "sha256"}} citation anywhere in C{value}, by seq."""
    if isinstance(value, dict):
        if isinstance(value.get("seq"), int) and isinstance(value.get("sha256"), str):
            into.setdefault(value["seq"], value["sha256"])
        for item in value.values():
            _citations(item, into)
    elif isinstance(value, list):
        for item in value:
            _citations(item, into)
    return into


def _canonical(value: Any) -> str:
    return json.dumps(value, sort_keys=True, ensure_ascii=False, separators=(",", ":"))


def render_oscal(document: dict[str, Any]) -> bytes:
    """The assessment-results document, as UTF-8 JSON bytes."""
    # Seeded by what the report is of, so two ranges never share an identifier.
    base = uuid.uuid5(_NAMESPACE, _canonical({"range": document["range"], "audit_dir": document["audit_dir"]}))

    def uid(*parts: str) -> str:
        return str(uuid.uuid5(base, "\n".join(parts)))

    trail = document.get("trail", {})
    since, until = document["range"]["since"], document["range"]["until"]
    # An empty range with no --since has no time of its own: the report's.
    start = since or trail.get("first") or document["generated_at"]
    end = until or trail.get("last")

    resources: dict[int, dict[str, Any]] = {}

    def evidence(cited: dict[int, str]) -> list[dict[str, Any]]:
        out = []
        for seq, sha256 in sorted(cited.items()):
            resource = resources.setdefault(seq, {
                "uuid": uid("record", str(seq), sha256),
                "title": f"audit record #{seq}",
                "description": f"Line {seq} of the audit trail's records.jsonl (from 0); "
                               "the hash is the SHA-256 of the line, without its newline.",
                "rlinks": [{"href": f"records.jsonl#seq-{seq}", "media-type": "application/json",
                            "hashes": [{"algorithm": "SHA-256", "value": sha256}]}],
            })
            out.append({"href": f"#{resource['uuid']}", "description": f"audit record #{seq}"})
        return out

    observations: list[dict[str, Any]] = []
    findings: list[dict[str, Any]] = []
    for name, section in document["controls"].items():
        control = _control_id(name)
        related = []
        summary = {
            "uuid": uid("summary", name, _canonical(section["summary"])),
            "title": f"{name} summary",
            "description": f"{name} ({section['title']}): what the audit trail and configuration show over the range.",
            "methods": ["EXAMINE"],
            "types": ["control-objective"],
            "collected": end or start,
            # The summary itself, verbatim, so nothing in the JSON format is lost here.
            "remarks": "```json\n" + json.dumps(section["summary"], indent=1, sort_keys=True, ensure_ascii=False) + "\n```",
        }
        if cited := evidence(_citations(section["summary"], {})):
            summary["relevant-evidence"] = cited
        observations.append(summary)
        related.append(summary["uuid"])
        for index, finding in enumerate(section["findings"]):
            facts = [f"{key}: {finding[key]}" for key in ("time", "subject", "connection", "session")
                     if finding.get(key)]
            observation = {
                "uuid": uid("finding", name, str(index), _canonical(finding)),
                "title": f"{name}: {finding.get('kind', 'finding')}",
                "description": str(finding.get("detail") or finding.get("kind") or ""),
                "methods": ["EXAMINE"],
                "types": ["finding"],
                "collected": finding.get("time") or end or start,
            }
            if facts:
                observation["remarks"] = "\n".join(facts)
            if cited := evidence(_citations(finding.get("records", []), {})):
                observation["relevant-evidence"] = cited
            observations.append(observation)
            related.append(observation["uuid"])
        count = len(section["findings"])
        deficient = name in DEFICIENCIES and count > 0
        findings.append({
            "uuid": uid("control", name),
            "title": f"{name} {section['title']}",
            "description": (f"{count} finding(s) against {name} over the range." if deficient else
                            f"{name} is met over the range" + (f"; {count} finding(s) for review." if count else ".")),
            "target": {
                "type": "statement-id",
                "target-id": f"{control}_smt",
                "status": {"state": "not-satisfied" if deficient else "satisfied"},
            },
            "related-observations": [{"observation-uuid": u} for u in related],
        })

    no_plan = uid("no assessment plan")
    result: dict[str, Any] = {
        "uuid": uid("result"),
        "title": "Evidence per NIST SP 800-53 control from the hoopgw audit trail",
        "description": f"Built read-only from the audit trail in {document['audit_dir']}"
                       + (f", connection {document['range']['connection']} only" if document["range"]["connection"] else "")
                       + f": {trail.get('records', 0)} record(s).",
        "start": start,
    }
    if end:
        result["end"] = end
    result["reviewed-controls"] = {"control-selections": [
        {"include-controls": [{"control-id": _control_id(name)} for name in document["controls"]]}]}
    result["observations"] = observations
    result["findings"] = findings
    results = {
        "uuid": uid("assessment-results"),
        "metadata": {
            "title": f"hoopgw evidence: {start} to {end or 'now'}",
            "last-modified": document["generated_at"],
            "version": document["format"],
            "oscal-version": OSCAL_VERSION,
        },
        "import-ap": {"href": f"#{no_plan}"},
        "results": [result],
        "back-matter": {"resources": [
            {"uuid": no_plan, "title": "No assessment plan",
             "description": "hoopgw evidence reports from the audit trail without an OSCAL assessment plan; "
                            "import-ap is required, so it points here."},
            *(resources[seq] for seq in sorted(resources)),
        ]},
    }
    return json.dumps({"assessment-results": results}, indent=1, ensure_ascii=False).encode() + b"\n"
