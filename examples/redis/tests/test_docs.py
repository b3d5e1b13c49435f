"""
The README says what the code does: every TOML block in it, and the
guardrails in policies/redis.toml, load with the plugin installed (as
hoopgw's own docs are checked by its tests/test_docs.py).
"""

from __future__ import annotations

import re
from pathlib import Path

from twisted.trial.unittest import SynchronousTestCase

from hoopgw.config import loads
from hoopgw.policy.loader import parse_policy_file

HERE = Path(__file__).resolve().parents[1]
_BLOCK = re.compile(r"```toml\n(.*?)```", re.S)
_POLICY = re.compile(r"^\[\[(rule|mask|grant)\]\]", re.M)


class DocsTests(SynchronousTestCase):
    def test_readme_blocks_load(self):
        text = (HERE / "README.md").read_text()
        blocks = [(text[: m.start()].count("\n") + 1, m.group(1)) for m in _BLOCK.finditer(text)]
        self.assertGreaterEqual(len(blocks), 3)
        base = Path(self.mktemp())
        base.mkdir()
        for line, block in blocks:
            with self.subTest(f"README.md:{line}"):
                if _POLICY.search(block):
                    parse_policy_file(block.encode(), file=f"README.md:{line}")
                else:
                    config = loads(block, source=None, base_dir=base, check_secrets=False)
                    self.assertEqual({c.kind for c in config.connections}, {"redis"})

    def test_guardrails_load(self):
        path = HERE / "policies" / "redis.toml"
        parsed = parse_policy_file(path.read_bytes(), file=str(path))
        self.assertEqual([r.effect.value for r in parsed.rules], ["deny"] * 5)
