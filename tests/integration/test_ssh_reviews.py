"""
An SSH exec command held for review (issue 13), through a real sshd: the
client is told on stderr and waits; approved, the command runs; denied, it
gets the reviewer's reason and exit status 1; a client that leaves cancels.
"""

from __future__ import annotations

import os
import re

from twisted.internet.defer import inlineCallbacks

from hoopgw.model import Identity
from hoopgw.reviews import AlreadyDecided
from tests.integration._process import spawn
from tests.integration._ssh import SSHGatewayCase
from tests.integration.test_postgres_clients import wait_until

POLICY = """
[[rule]]
name = "everyone"
effect = "allow"
groups = ["*"]
connections = ["*"]
actions = ["*"]

[[rule]]
name = "review-touch"
effect = "review"
ssh.commands = ["touch *"]
review.approvers = ["group:ops"]
review.timeout = "60s"
"""
BOB = Identity("test", "bob", ("ops",))


class ExecReviewTests(SSHGatewayCase):
    policy = POLICY

    def held(self, command: str):
        proc = spawn(self.ssh_argv("-n", command), marker=b"waits for review", env=self.env())
        return proc.ready.addCallback(lambda _: (proc, re.search(rb"waits for review (\w+)", proc.output).group(1).decode()))

    @inlineCallbacks
    def test_approved_runs(self):
        target = self.base / "approved"
        proc, review = yield self.held(f"touch {target}")
        self.assertFalse(target.exists())
        yield self.gateway.reviews.approve(review, BOB, "ok")
        code = yield proc.ended
        self.assertEqual(code, 0, proc.output)
        self.assertTrue(target.exists())

    @inlineCallbacks
    def test_denied_exit_status_and_reason(self):
        target = self.base / "denied"
        proc, review = yield self.held(f"touch {target}")
        yield self.gateway.reviews.deny(review, BOB, "use the deploy pipeline")
        code = yield proc.ended
        self.assertEqual(code, 1)
        self.assertIn(b"use the deploy pipeline", proc.output)
        self.assertFalse(target.exists())

    @inlineCallbacks
    def test_client_leaving_cancels(self):
        target = self.base / "left"
        proc, review = yield self.held(f"touch {target}")
        proc.signal("KILL")
        yield proc.ended
        yield wait_until(lambda: not self.gateway.reviews._live, "the review to be cancelled")
        error = yield self.assertFailure(self.gateway.reviews.approve(review, BOB), AlreadyDecided)
        self.assertIn("cancelled", str(error))
        self.assertFalse(os.path.exists(target))
