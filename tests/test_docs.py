"""
The documentation describes the code as it is: every TOML block in the
README, docs/ and policies/README.md is a configuration the loader accepts
or a policy it loads.
"""

from __future__ import annotations

import re
from pathlib import Path

from twisted.trial.unittest import SynchronousTestCase

from hoopgw.config import loads
from hoopgw.policy.loader import parse_policy_file

REPO = Path(__file__).resolve().parents[1]
_BLOCK = re.compile(r"```toml\n(.*?)```", re.S)
_POLICY = re.compile(r"^\[\[(rule|mask|grant)\]\]", re.M)


def toml_blocks():
    for path in [REPO / "README.md", *sorted((REPO / "docs").glob("*.md")), REPO / "policies" / "README.md"]:
        text = path.read_text()
        for match in _BLOCK.finditer(text):
            yield f"{path.relative_to(REPO)}:{text[: match.start()].count(chr(10)) + 1}", match.group(1)


class TomlBlocksTests(SynchronousTestCase):
    def test_every_block_loads(self) -> None:
        from tests.test_frontends import install_echo

        # docs/front-ends.md configures its example front end: installed as it says.
        install_echo(self)
        base = Path(self.mktemp())
        base.mkdir()
        blocks = list(toml_blocks())
        self.assertGreater(len(blocks), 10)
        for where, block in blocks:
            with self.subTest(where):
                if _POLICY.search(block):
                    parse_policy_file(block.encode(), file=where)
                else:
                    # Secrets (files, variables) are the operator's: checked at start, not here.
                    loads(block, source=None, base_dir=base, check_secrets=False)


_LINK = re.compile(r"\]\(([^)\s]+)\)")


class LinksTests(SynchronousTestCase):
    def test_relative_links_stay_in_the_repository_and_resolve(self) -> None:
        """A relative link names a file of the repository that exists (users have nothing beside it)."""
        for path in [REPO / "README.md", *sorted((REPO / "docs").glob("*.md")), REPO / "policies" / "README.md"]:
            for target in _LINK.findall(path.read_text()):
                if re.match(r"[a-z]+:", target) or target.startswith("#"):
                    continue
                resolved = (path.parent / target.split("#", 1)[0]).resolve()
                with self.subTest(f"{path.relative_to(REPO)} -> {target}"):
                    self.assertTrue(resolved.is_relative_to(REPO), resolved)
                    self.assertTrue(resolved.exists(), resolved)
