"""
The SSH adversarial corpus (C{tests/adversarial/ssh_commands.py}), collected
here so that C{trial tests} runs it (trial only loads C{test_*} modules).
"""

from tests.adversarial.ssh_commands import DefaultPolicyCorpusTests, RmRfRuleCorpusTests

__all__ = ["DefaultPolicyCorpusTests", "RmRfRuleCorpusTests"]
