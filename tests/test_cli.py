"""
The admin command's pieces that need no process: a plain search line and
main's handling of a reader that went away.  (The command as run is tested
in tests/integration/test_twistd.py.)
"""

from __future__ import annotations

import http.server
import io
import sys
import threading
from typing import Any

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


class _Seen(http.server.BaseHTTPRequestHandler):
    seen: list[Any] = []

    def _any(self) -> None:
        _Seen.seen.append((self.command, self.path, self.headers.get("Authorization")))
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.end_headers()
        self.wfile.write(b'{"reviews": [], "grants": [], "id": "x", "state": "approved"}')

    do_GET = do_POST = _any

    def log_message(self, *args: Any) -> None:
        pass


class APITokenTests(SynchronousTestCase):
    def test_token_never_sent_in_clear_off_this_machine(self) -> None:
        """
        The verbs that call the API with the caller's token (reviews,
        access, export --checkpoint) send it over https, plain http only to
        the loopback literals, as hoopgw login and ssh-key do: an approver's
        token read on the wire approves as them.  (127.0.0.2 stands for any
        other host: it is not a literal the rule lets through.)
        """
        server = http.server.HTTPServer(("127.0.0.2", 0), _Seen)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        self.addCleanup(server.server_close)
        self.addCleanup(server.shutdown)
        _Seen.seen = []
        api = f"http://127.0.0.2:{server.server_port}"
        err = io.StringIO()
        self.patch(sys, "stderr", err)
        self.patch(sys, "stdout", io.StringIO())
        for argv in (
            ["reviews", "approve", "abcdefgh", "--reason", "ok"],
            ["reviews", "list"],
            ["access", "request", "--connection", "prod-db", "--duration", "1h", "--reason", "INC-1"],
            ["access", "revoke", "abcdefgh"],
        ):
            self.assertNotEqual(main([*argv, "--api", api, "--token", "SECRET"]), 0, argv)
        self.assertEqual(_Seen.seen, [])
        self.assertIn("over https", err.getvalue())
