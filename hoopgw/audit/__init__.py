"""
The audit trail: canonical JSON records in a hash chain, an RFC 6962 Merkle
tree over them, Ed25519-signed checkpoints, an offline verifier and search.
See docs/audit-format.md.
"""

from hoopgw.audit.canonical import CanonicalizationError, canonical_json
from hoopgw.audit.log import AuditLog, AuditStateError
from hoopgw.audit.verify import VerifyReport

# verify() and search() are imported from their modules
# (hoopgw.audit.verify.verify, hoopgw.audit.search.search): re-exporting them
# here would shadow the submodules of the same names.

__all__ = [
    "AuditLog",
    "AuditStateError",
    "CanonicalizationError",
    "VerifyReport",
    "canonical_json",
]
