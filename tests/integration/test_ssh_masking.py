"""
Masking SSH output (issue 12) through a real sshd and OpenSSH client:
with C{mask_terminal = true} what the detectors find never reaches the
client, also split across writes or coloured by escape sequences; the
recording is masked whoever the identity; typed lines in the trail too.
"""

from __future__ import annotations

import json
from pathlib import Path

from twisted.internet.defer import inlineCallbacks

from hoopgw.recording.asciicast import read_asciicast
from tests.integration._ssh import SSHGatewayCase

CARD = "4111 1111 1111 1111"
ALLOW = """
[[rule]]
name = "everyone"
effect = "allow"
groups = ["*"]
connections = ["*"]
actions = ["*"]
"""
# Printed in pieces (two writes), with colours inside the number.
PRINT = (
    "printf 'card 4111 11'; printf '11 \\033[31m1111\\033[0m 1111 paid\\n'; "
    "printf 'mail ada@example.org\\n' >&2"
)


class TerminalMaskingTests(SSHGatewayCase):
    connection_options = "mask_terminal = true"
    policy = ALLOW + """
[[mask]]
name = "cards"
detectors = ["card", "email"]
"""

    @inlineCallbacks
    def test_exec_output_masked_at_the_client_and_in_the_recording(self) -> None:
        code, output = yield self.ssh("-tt", PRINT)
        self.assertEqual(code, 0, output)
        text = output.decode("utf-8", "replace")
        self.assertIn("[redacted]", text)
        self.assertIn("paid", text)
        self.assertNotIn("1111 1111", text.replace("\x1b[31m", "").replace("\x1b[0m", ""))
        self.assertNotIn("ada@example.org", text)
        yield self.watch.wait("session.end")
        [end] = self.records("session.end")
        cast = read_asciicast(end["end"]["recording"]).output()
        self.assertNotIn("1111 1111", cast.replace("\x1b[31m", "").replace("\x1b[0m", ""))
        self.assertIn("[redacted]", cast)

    @inlineCallbacks
    def test_plain_exec_output(self) -> None:
        code, output = yield self.ssh(f"echo 'card {CARD} paid'; echo done")
        self.assertEqual(code, 0, output)
        lines = [line for line in output.decode().splitlines() if not line.startswith("Warning:")]
        self.assertEqual(lines, ["card [redacted] paid", "done"])


class ExemptTests(SSHGatewayCase):
    """alice is in dev: exempt at the client, never in what is stored."""

    connection_options = "mask_terminal = true\nrecord_input = true"
    policy = ALLOW + """
[[mask]]
name = "cards"
detectors = ["card"]
except_groups = ["dev"]
"""

    @inlineCallbacks
    def test_client_sees_values_the_recording_and_trail_do_not(self) -> None:
        code, output = yield self.ssh("-tt", f"echo 'card {CARD}'")
        self.assertEqual(code, 0, output)
        self.assertIn(CARD, output.decode())
        yield self.watch.wait("session.end")
        [end] = self.records("session.end")
        cast = read_asciicast(end["end"]["recording"]).output()
        self.assertNotIn(CARD, cast)
        self.assertIn("[redacted]", cast)
        [(start, _)] = self.actions("ssh.exec")
        self.assertNotIn(CARD, start["action"]["input"])  # the command line in the trail
        self.assertEqual(start["action"]["masked"], {"cards": 1})


class BareSSNLinesTests(SSHGatewayCase):
    """Nine bare digits are an SSN as a whole value: also each on a line of its own, however the output is read."""

    connection_options = "mask_terminal = true"
    policy = ALLOW + """
[[mask]]
name = "ssn"
detectors = ["ssn"]
"""

    @inlineCallbacks
    def test_a_list_of_bare_ssns(self) -> None:
        # One write (a file of them, psql -At): they reached the client and the recording in clear.
        code, output = yield self.ssh("-tt", "printf 'ssns:\\n536228726\\n  219099999 \\ninvoice 123456789\\n'")
        self.assertEqual(code, 0, output)
        text = output.decode()
        self.assertNotIn("536228726", text)
        self.assertNotIn("219099999", text)
        # Only the value is masked: its line (and the next) stay as they were; other text is not a whole value.
        self.assertIn("ssns:\r\n[redacted]\r\n  [redacted] \r\ninvoice 123456789\r\n", text)
        yield self.watch.wait("session.end")
        [end] = self.records("session.end")
        cast = read_asciicast(end["end"]["recording"]).output()
        self.assertNotIn("536228726", cast)
        self.assertNotIn("219099999", cast)

    @inlineCallbacks
    def test_bare_ssns_between_separators(self) -> None:
        """A JSON line's, a CSV's and psql's table's fields are whole values too."""
        script = "printf '{\"ssn\": \"536228726\"}\\n1,219099999,Ada\\n ssn       | name\\n 536228726 | Ada\\n'"
        code, output = yield self.ssh("-tt", script)
        self.assertEqual(code, 0, output)
        text = output.decode()
        self.assertNotIn("536228726", text)
        self.assertNotIn("219099999", text)
        self.assertIn('{"ssn": "[redacted]"}\r\n1,[redacted],Ada\r\n', text)
        self.assertIn(" [redacted] | Ada", text)


class BareSSNTrailTests(SSHGatewayCase):
    """alice is exempt at the client: what she types and runs is stored masked all the same."""

    connection_options = "mask_terminal = true\nrecord_input = true"
    policy = ALLOW + """
[[mask]]
name = "ssn"
detectors = ["ssn"]
except_groups = ["dev"]
"""

    @inlineCallbacks
    def test_a_bare_ssn_in_a_command_line(self) -> None:
        code, output = yield self.ssh("-tt", "echo 536228726")
        self.assertEqual(code, 0, output)
        self.assertIn("536228726", output.decode())  # exempt
        yield self.watch.wait("session.end")
        [(start, _)] = self.actions("ssh.exec")
        self.assertEqual(start["action"]["input"], "echo [redacted]")
        self.assertNotIn("536228726", json.dumps(start))
        [end] = self.records("session.end")
        recording = Path(end["end"]["recording"]).read_text()
        self.assertNotIn("536228726", recording)
