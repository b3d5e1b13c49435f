"""
The audit tamper corpus (tests/adversarial/audit_corpus.py), run with the
audit tests: every forgery in it must be detected.
"""

from tests.adversarial.audit_corpus import AuditTamperCorpusTests

__all__ = ["AuditTamperCorpusTests"]
