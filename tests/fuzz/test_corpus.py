"""
Every seed of every fuzz corpus (tests/fuzz/corpus/<target>/) through its
harness's C{one_input}, in plain Python (no atheris): the checks the fuzzers
make hold for the traffic shapes the corpora hold, in the ordinary suite.
"""

from __future__ import annotations

import importlib

from twisted.trial.unittest import SynchronousTestCase

from tests.fuzz._fuzzing import CORPORA, corpus_files

TARGETS = ("pg_codec", "pg_tracker", "sql", "http_wire", "sftp", "ssh_commands", "masking", "json_body")


class CorpusTests(SynchronousTestCase):
    def test_every_target_has_a_harness_and_seeds(self):
        """Each corpus folder belongs to a harness, and each harness has tens of small seeds."""
        self.assertEqual(sorted(p.name for p in CORPORA.iterdir() if p.is_dir()), sorted(TARGETS))
        for target in TARGETS:
            seeds = corpus_files(target)
            self.assertGreaterEqual(len(seeds), 10, target)
            self.assertLessEqual(max(p.stat().st_size for p in seeds), 4096, target)


def _seed_test(target: str):
    def test(self: SynchronousTestCase) -> None:
        one_input = importlib.import_module(f"tests.fuzz.fuzz_{target}").one_input
        for seed in corpus_files(target):
            try:
                one_input(seed.read_bytes())
            except BaseException as e:
                raise AssertionError(f"seed {seed.relative_to(CORPORA)} fails: {e!r}") from e

    test.__name__ = f"test_{target}_seeds"
    test.__doc__ = f"Every seed of corpus/{target}/ passes fuzz_{target}.one_input."
    return test


for _target in TARGETS:
    setattr(CorpusTests, f"test_{_target}_seeds", _seed_test(_target))
