"""
The policy benchmark's own policy and scenarios are right, so its numbers
measure real decisions.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path
from types import ModuleType

from twisted.trial.unittest import SynchronousTestCase

from hoopgw.policy import evaluate

BENCH = Path(__file__).resolve().parents[2] / "bench" / "policy.py"


def load_bench() -> ModuleType:
    # bench/ is a folder of scripts, not a package.
    spec = importlib.util.spec_from_file_location("_hoopgw_bench_policy", BENCH)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


class BenchPolicyTests(SynchronousTestCase):
    def test_scenarios(self) -> None:
        """
        The benchmark policy has 20 rules and decides each scenario as the
        benchmark expects.
        """
        bench = load_bench()
        policy = bench.bench_policy()
        self.assertEqual(len(policy.rules), 20)
        for name, identity, connection, action, effect, rule in bench.SCENARIOS:
            decision = evaluate(policy, identity, connection, action)
            self.assertEqual((name, decision.effect.value, decision.rule), (name, effect, rule))

    def test_mainRows(self) -> None:
        """
        C{main} returns one row per scenario plus the mixed workload, each
        with a positive rate.
        """
        bench = load_bench()
        rows = bench.main(seconds=0.003)
        self.assertEqual(len(rows), len(bench.SCENARIOS) + 1)
        self.assertTrue(all(row["evaluations_per_s"] > 0 for row in rows))
