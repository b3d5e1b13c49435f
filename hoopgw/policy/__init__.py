"""
Policy: which identity may do what, where.

Rules and their evaluation are pure (L{hoopgw.policy.rules}); files are
read and validated by L{hoopgw.policy.loader}; L{PolicyService} puts the
loaded policy behind L{hoopgw.interfaces.IPolicy}.  The format is documented
in C{policies/README.md}.
"""

from hoopgw.policy.loader import (
    build_policy_set,
    load_policy_dir,
    parse_policy_file,
    policy_files,
)
from hoopgw.policy.rules import (
    CONDITIONS,
    DETECTORS,
    MASK_STRATEGIES,
    Condition,
    ConditionKind,
    ConditionSpec,
    GrantRule,
    MaskRule,
    PolicyFile,
    PolicySet,
    ReviewRequirement,
    Rule,
    compile_globs,
    evaluate,
    register_condition,
)
from hoopgw.policy.service import PolicyObserver, PolicyService

__all__ = [
    "CONDITIONS",
    "DETECTORS",
    "MASK_STRATEGIES",
    "Condition",
    "ConditionKind",
    "ConditionSpec",
    "GrantRule",
    "MaskRule",
    "PolicyFile",
    "PolicyObserver",
    "PolicyService",
    "PolicySet",
    "ReviewRequirement",
    "Rule",
    "build_policy_set",
    "compile_globs",
    "evaluate",
    "load_policy_dir",
    "parse_policy_file",
    "policy_files",
    "register_condition",
]
