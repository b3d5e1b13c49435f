"""
An SSH exec command or SFTP operation held for review (issue 13), through a
real sshd: the client is told on stderr and waits; approved, the command
runs; denied, it gets the reviewer's reason (exec: exit status 1; sftp: a
permission-denied reply); a client that leaves cancels.
"""

from __future__ import annotations

import os
import re
import subprocess

from twisted.internet.defer import inlineCallbacks

from hoopgw.model import Identity
from hoopgw.reviews import AlreadyDecided
from tests.integration._process import spawn
from tests.integration._ssh import SFTP, SSHGatewayCase, require
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

[[rule]]
name = "review-sftp-removes"
effect = "review"
actions = ["ssh.sftp.remove"]
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


class SFTPReviewTests(SSHGatewayCase):
    policy = POLICY

    def held(self, *commands: str):
        """sftp -b running C{commands}; fires with (process, review id) once the client is told."""
        require(SFTP)
        batch = self.base / "batch"
        batch.write_text("".join(f"{c}\n" for c in commands))
        argv = [SFTP, *self.client_options(), "-b", str(batch), "web1@127.0.0.1"]
        proc = spawn(argv, marker=b"waits for review", env=self.env())
        return proc.ready.addCallback(lambda _: (proc, re.search(rb"waits for review (\w+)", proc.output).group(1).decode()))

    def setUp(self):
        def victim(_):
            self.victim = self.base / "victim"
            self.victim.write_text("keep me\n")

        return super().setUp().addCallback(victim)

    @inlineCallbacks
    def test_approved_runs(self):
        proc, review = yield self.held(f"rm {self.victim}")
        self.assertTrue(self.victim.exists())
        yield self.gateway.reviews.approve(review, BOB, "ok")
        code = yield proc.ended
        self.assertEqual(code, 0, proc.output)
        self.assertFalse(self.victim.exists())
        [(start, end)] = self.actions("ssh.sftp.remove")
        self.assertEqual((start["decision"]["review"], end["outcome"]["status"]), (review, "succeeded"))

    @inlineCallbacks
    def test_denied_with_the_reason_and_the_session_goes_on(self):
        listing = self.base / "listed"
        listing.mkdir()
        (listing / "marker-file").write_text("")
        proc, review = yield self.held(f"-rm {self.victim}", f"ls {listing}")
        yield self.gateway.reviews.deny(review, BOB, "keep the victim")
        yield proc.ended
        self.assertIn(b"keep the victim", proc.output)
        self.assertIn(b"marker-file", proc.output)  # the next operation, same channel
        self.assertTrue(self.victim.exists())
        [(_, end)] = self.actions("ssh.sftp.remove")
        self.assertEqual(end["outcome"]["status"], "blocked")

    @inlineCallbacks
    def test_client_leaving_cancels(self):
        proc, review = yield self.held(f"rm {self.victim}")
        # sftp's ssh child is the client's end of the connection: both go, as on a lost laptop.
        subprocess.run(["pkill", "-KILL", "-P", str(proc.transport.pid)], check=False)
        proc.signal("KILL")
        yield proc.ended
        yield wait_until(lambda: not self.gateway.reviews._live, "the review to be cancelled")
        error = yield self.assertFailure(self.gateway.reviews.approve(review, BOB), AlreadyDecided)
        self.assertIn("cancelled", str(error))
        self.assertTrue(self.victim.exists())
