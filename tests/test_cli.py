"""
The admin command's pieces that need no process: a plain search line and
main's handling of a reader that went away.  (The command as run is tested
in tests/integration/test_twistd.py.)
"""

from __future__ import annotations

import io
import sys

from twisted.trial.unittest import SynchronousTestCase

from hoopgw.cli import _summary, main


class SummaryTests(SynchronousTestCase):
    def test_why(self) -> None:
        """
        A plain search line ends with why, wherever the record keeps it: a
        policy.rejected's error, an auth.failed's reason, a review's or
        grant's decision reason.
        """
        base = {"time": "2026-01-01T00:00:00.000000Z", "seq": 7}
        cases = [
            ({"event": "policy.rejected", "error": "p.toml: rule[0].effect: bad"}, "policy.rejected - - 'p.toml: rule[0].effect: bad'"),
            ({"event": "auth.failed", "reason": "token expired"}, "auth.failed - - 'token expired'"),
            ({"event": "review.denied", "review": {"decision": {"reason": "not now"}}}, "review.denied - - 'not now'"),
            ({"event": "grant.revoked", "grant": {"decision": {"reason": "done"}}}, "grant.revoked - - 'done'"),
            ({"event": "session.start", "review": "r_1"}, "session.start - -"),
        ]
        for record, expected in cases:
            self.assertEqual(_summary({**base, **record}), f"2026-01-01T00:00:00.000000Z #7 {expected}")


class _ClosedPipe(io.StringIO):
    def write(self, text: str) -> int:
        raise BrokenPipeError(32, "Broken pipe")

    def flush(self) -> None:
        raise BrokenPipeError(32, "Broken pipe")


class BrokenPipeTests(SynchronousTestCase):
    def test_quiet_exit(self) -> None:
        """If stdout's reader is gone, main returns 141 and raises nothing."""
        self.patch(sys, "stdout", _ClosedPipe())
        self.assertEqual(main(["audit", "verify-bundle", "/nonexistent/bundle.tar"]), 141)
