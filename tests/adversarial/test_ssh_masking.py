"""
Attacks on SSH output masking (issue 12), from an outside round: values
split across packets in many ways, escape sequences and window titles,
private keys spread over many packets, long prose before a value, a slow
reader and bulk output (the gateway's own flow control must not split a
value), the recording's header, exempt identities' recordings, and the
exactness of what nothing is found in.  Each failure was a finding; the
exact-output and ordering tests were kept as guards.  Not covered (see
docs/ssh.md): line editing (backspaces) between the digits of a typed value.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import subprocess
import time

from twisted.internet.defer import inlineCallbacks
from twisted.internet.threads import deferToThread

from hoopgw.recording.asciicast import read_asciicast
from tests.integration._ssh import SSH, SSHGatewayCase
from tests.integration.test_ssh_masking import ALLOW, CARD

CARD_BARE = "4111111111111111"
MASK = """
[[mask]]
name = "all"
detectors = ["card", "email", "ssn", "phone", "jwt", "private_key", "aws_key", "iban"]
"""


def b64(obj: dict) -> str:
    return base64.urlsafe_b64encode(json.dumps(obj).encode()).rstrip(b"=").decode()


JWT = (
    b64({"alg": "HS256", "typ": "JWT"})
    + "."
    + b64({"sub": "1234567890", "name": "John Doe Example User", "iat": 1516239022,
           "scope": "read write admin delete everything", "aud": "https://api.example.internal/v1"})
    + "."
    + "SflKxwRJSMeKKF2QT4fwpMeJf36POk6yJV_adQssw5cSflKxwRJSMeKKF2QT4fwpM"
)
KEY_BODY = [
    "MIIEowIBAAKCAQEAu1SU1LfVLPHCozMxH2Mo4lgOEePzNm0tRgeLezV6ffAt0gun",
    "VTLw7onLRnrq0/IzW7yWR7QkrmBL7jTKEn5u+qKhbwKfBstIs+bMY2Zkp18gnTxK",
    "LxoS2tFczGkPLPgizskuemMghRniWaoLcyehkd3qqGElvW/VDL5AaWTg0nLVkjRo",
    "9z+40RQzuVaE8AkAFmxZzow3x+VJYKdjykkJ0iT9wCS0DRTXu269V264Vf/3jvre",
    "dZFr9PHlrH3cQ2Bv3L5NRiC2Ro2aBmIdY7dYsbaCFAAjGR1Ymq6n4Q2jKf1uuLUo",
]
PRIVATE_KEY = "-----BEGIN RSA PRIVATE KEY-----\n" + "\n".join(KEY_BODY) + "\n-----END RSA PRIVATE KEY-----\n"

# Write pieces with a tiny gap (5 ms << the 50 ms quiet time) so they travel in separate packets.
PIECES = (
    "python3 -c 'import sys,time,base64\n"
    "for p in sys.argv[1:]:\n"
    "    sys.stdout.buffer.write(base64.b64decode(p)); sys.stdout.flush(); time.sleep(0.005)\n' "
)


def pieces(*parts: bytes | str) -> str:
    return PIECES + " ".join(
        base64.b64encode(p if isinstance(p, bytes) else p.encode()).decode() for p in parts
    )


class _Base(SSHGatewayCase):
    timeout = 120

    def argv(self, *args: str, direct: bool = False) -> list[str]:
        if direct:
            user = self.ssh_argv()[-1].split("@")[0]
            import pwd

            user = pwd.getpwuid(os.getuid()).pw_name
            return [SSH, "-F", "/dev/null", "-o", "StrictHostKeyChecking=no", "-o", "UserKnownHostsFile=/dev/null",
                    "-o", "LogLevel=ERROR", "-o", "BatchMode=yes", "-i", str(self.base / "target_key"),
                    "-p", str(self.sshd_port), *args[:-1], f"{user}@127.0.0.1", args[-1]]
        argv = self.ssh_argv(*args)
        return [argv[0], "-o", "LogLevel=ERROR", *argv[1:]]

    def sh(self, *args: str, direct: bool = False, stdin: bytes = b"", typed: list | None = None, slow: bool = False):
        """Run ssh; fires with (code, stdout, stderr) kept apart."""
        argv = self.argv(*args, direct=direct)
        env = self.env()

        def go():
            if slow:
                p = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
                chunks = []
                while True:
                    c = os.read(p.stdout.fileno(), 65536)
                    if not c:
                        break
                    chunks.append(c)
                    time.sleep(0.02)
                p.wait()
                return p.returncode, b"".join(chunks), p.stderr.read()
            if typed is None:
                p = subprocess.run(argv, input=stdin, capture_output=True, env=env, timeout=100)
                return p.returncode, p.stdout, p.stderr
            p = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
            time.sleep(1.0)
            for item in typed:
                if isinstance(item, float):
                    time.sleep(item)
                else:
                    p.stdin.write(item)
                    p.stdin.flush()
            out, err = p.communicate(timeout=60)
            return p.returncode, out, err

        self._runs = getattr(self, "_runs", 0) + (0 if direct else 1)
        runs = self._runs

        def settle(result):
            return self.watch.wait("session.end", runs).addCallback(lambda _: result)

        return deferToThread(go).addCallback(settle)

    @inlineCallbacks
    def cast(self):
        yield self.watch.wait("session.end")
        end = self.records("session.end")[-1]
        rec = read_asciicast(end["end"]["recording"])
        raw = open(end["end"]["recording"], encoding="utf-8").read()
        return rec, raw


class ClientMasking(_Base):
    connection_options = "mask_terminal = true\nrecord_exec_output = true\nrecord_input = true"
    policy = ALLOW + MASK

    # --- findings-oriented ----------------------------------------------------

    @inlineCallbacks
    def test_long_prose_then_card_split(self) -> None:
        # A line of >96 letters/spaces (all "value bytes") before a card split in two writes.
        prose = "please charge the customer for the order placed yesterday afternoon at the shop "
        prose = prose * 2
        code, out, err = yield self.sh(pieces(prose + "4111 1111 11", "11 1111 1111 ok\n"))
        self.assertEqual(code, 0, err)
        self.assertNotIn(b"4111 1111 1111 1111", out)
        self.assertNotIn(b"4111 1111 11", out)
        rec, raw = yield self.cast()
        self.assertNotIn("4111 1111 11", raw)

    @inlineCallbacks
    def test_jwt_split(self) -> None:
        self.assertGreater(len(JWT), 200)
        code, out, err = yield self.sh(pieces("token: " + JWT[:150], JWT[150:] + "\n"))
        self.assertEqual(code, 0, err)
        self.assertNotIn(JWT[:40].encode(), out)
        self.assertNotIn(JWT[-40:].encode(), out)

    @inlineCallbacks
    def test_jwt_whole(self) -> None:
        code, out, err = yield self.sh(pieces("token: " + JWT + "\n"))
        self.assertNotIn(JWT[-40:].encode(), out)

    @inlineCallbacks
    def test_private_key_split(self) -> None:
        code, out, err = yield self.sh(pieces(PRIVATE_KEY[:120], PRIVATE_KEY[120:]))
        self.assertEqual(code, 0, err)
        for line in KEY_BODY:
            self.assertNotIn(line.encode(), out)
        rec, raw = yield self.cast()
        for line in KEY_BODY:
            self.assertNotIn(line, raw)

    @inlineCallbacks
    def test_private_key_cat_pty_after_output(self) -> None:
        # Ordinary cat of a file with a key after ~4 KB of other text, on a terminal.
        path = self.base / "keyfile"
        path.write_text("".join(f"line {i} of the config\n" for i in range(190)) + PRIVATE_KEY)
        code, out, err = yield self.sh("-tt", f"cat {path}")
        for line in KEY_BODY:
            self.assertNotIn(line.encode(), out)

    @inlineCallbacks
    def test_osc_title_and_hyperlink(self) -> None:
        code, out, err = yield self.sh(
            "printf '\\033]0;pay 4111111111111111\\007x\\n'; "
            "printf '\\033]8;;mailto:ada@example.org\\033\\\\mail me\\033]8;;\\033\\\\\\n'"
        )
        self.assertIn(b"mail me", out)
        self.assertNotIn(CARD_BARE.encode(), out)
        self.assertNotIn(b"ada@example.org", out)

    @inlineCallbacks
    def test_phone_split_after_paren(self) -> None:
        code, out, err = yield self.sh(pieces("call (212)", " 555-0123 now\n"))
        code2, out2, err2 = yield self.sh(pieces("call (212) 555-0123 now\n"))
        self.assertNotIn(b"555-0123", out2)  # sanity: whole is masked
        self.assertNotIn(b"555-0123", out)

    @inlineCallbacks
    def test_cast_header_command(self) -> None:
        code, out, err = yield self.sh("-tt", f"echo {CARD_BARE} >/dev/null; true")
        rec, raw = yield self.cast()
        header = json.loads(raw.splitlines()[0])
        self.assertNotIn(CARD_BARE, json.dumps(header))

    @inlineCallbacks
    def test_cast_header_command_exec(self) -> None:
        code, out, err = yield self.sh("echo ada@example.org >/dev/null; true")
        rec, raw = yield self.cast()
        self.assertNotIn("ada@example.org", raw.splitlines()[0])

    # --- correctness ----------------------------------------------------------

    @inlineCallbacks
    def test_printf_x_exact(self) -> None:
        code, out, err = yield self.sh("printf x")
        self.assertEqual((code, out), (0, b"x"))
        code, out, err = yield self.sh("printf 'abc 12'; exit 3")
        self.assertEqual((code, out), (3, b"abc 12"))
        code, out, err = yield self.sh("-tt", "printf 'abc 12'; exit 4")
        self.assertEqual((code, out), (4, b"abc 12"))
        code, out, err = yield self.sh(f"printf '{CARD}'")
        self.assertEqual((code, out), (0, b"[redacted]"))
        code, out, err = yield self.sh(f"printf 'a@b.c x {CARD}' >&2; printf 'out 12'")
        self.assertEqual((code, out, err), (0, b"out 12", b"a@b.c x [redacted]"))

    @inlineCallbacks
    def test_split_card_variants(self) -> None:
        variants = [
            ("card 41", "11 1111 1111 1111\n"),
            ("card 4111 1111 1111 111", "1\n"),
            ("\u00e9\u00e94111 1111 ", "1111 1111\u00e9\n"),
            ("x\x1b[31m4111 11", "11 1111 1111\x1b[0m\n"),
            ("x\x1b[", "31m4111 1111 1111 1111\x1b[0m\n"),
            ("4111\x1b[1C1111", "\x1b[1C1111\x1b[1C1111\n"),
            ("\x1b]0;t\x07 4111 1111", " 1111 1111\x1b]0;t\x07\n"),
            ("4111 1111 1111 1111\r\n", ""),
            ("4\b4111 1111", " 1111 1111\n"),
            ("card 4111-1111-", "1111-1111\n"),
            ("mail ada@exa", "mple.org\n"),
            ("ssn 123-45-", "6789\n"),
        ]
        bad = []
        for a, b in variants:
            code, out, err = yield self.sh(pieces(a, b) if b else pieces(a))
            visible = out.replace(b"\x1b[31m", b"").replace(b"\x1b[0m", b"").replace(b"\x1b[1C", b"")
            for leak in (b"1111 1111", b"11111111", b"1111-1111", b"ada@example", b"45-6789"):
                if leak in visible:
                    bad.append((a, b, out))
        self.assertEqual(bad, [])

    @inlineCallbacks
    def test_big_output_exact(self) -> None:
        """What no detector finds passes byte for byte: seq, 5 MB of base64, raw bytes."""
        code, out, err = yield self.sh("seq 1 200000")
        self.assertEqual(code, 0)
        self.assertEqual(out, b"".join(b"%d\n" % i for i in range(1, 200001)))
        blob = self.base / "blob"
        data = base64.encodebytes(os.urandom(5 * 1024 * 1024 // 4 * 3))
        blob.write_bytes(data)
        code, out, err = yield self.sh(f"cat {blob}")
        self.assertEqual(hashlib.sha256(out).hexdigest(), hashlib.sha256(data).hexdigest())
        raw = self.base / "raw"
        raw.write_bytes(os.urandom(200000))
        code, out, err = yield self.sh(f"cat {raw}")
        self.assertEqual(out, raw.read_bytes())

    @inlineCallbacks
    def test_big_output_pty_exact(self) -> None:
        blob = self.base / "blob"
        blob.write_bytes(base64.encodebytes(os.urandom(300000)) + b"no newline at end")
        code, out, err = yield self.sh("-tt", f"cat {blob}")
        code, dout, err = yield self.sh("-tt", f"cat {blob}", direct=True)
        self.assertEqual(hashlib.sha256(out).hexdigest(), hashlib.sha256(dout).hexdigest())

    @inlineCallbacks
    def test_stdout_stderr_split_on_pty(self) -> None:
        code, out, err = yield self.sh("-tt", "printf 'card 4111 1111 '; printf '1111 1111\\n' >&2")
        self.assertNotIn(b"1111 1111", out)

    @inlineCallbacks
    def test_stdout_stderr_order_no_pty(self) -> None:
        # Not masked anything: does the hold reorder? (informational)
        code, out, err = yield self.sh("printf 'abc'; printf 'def' >&2; printf 'ghi\\n'")
        self.assertEqual((out, err), (b"abcghi\n", b"def"))

    @inlineCallbacks
    def test_interactive_shell_typed_card(self) -> None:
        typed = [b"echo hello\n", 0.3]
        typed += [bytes([c]) for c in b"echo 4111 1111 1111 1111 > /dev/null"]
        typed += [b"\n", 0.3, b"exit\n"]
        code, out, err = yield self.sh("-tt", "bash --norc -i", typed=typed)
        rec, raw = yield self.cast()
        self.assertNotIn("1111 1111", raw)
        lines = [r["action"]["input"] for r, _ in self.actions("ssh.exec")]
        self.assertNotIn(CARD, json.dumps(lines))

    @inlineCallbacks
    def test_interactive_shell_typed_slow_and_lines(self) -> None:
        typed = [0.5]
        for c in b"echo ada@example.org 4111 1111 1111 1111\n":
            typed += [bytes([c]), 0.08]
        typed += [0.3, b"exit\n"]
        code, out, err = yield self.sh("-tt", typed=typed)
        rec, raw = yield self.cast()
        self.assertNotIn("1111 1111", raw)
        self.assertNotIn("ada@example", raw)
        lines = json.dumps([r["action"]["input"] for r, _ in self.actions("ssh.shell.line")])
        self.assertNotIn("1111 1111", lines)
        self.assertNotIn("ada@example", lines)

    @inlineCallbacks
    def test_private_key_cat_pty_scan(self) -> None:
        # Where do pty/ssh chunk boundaries fall?  Key after N bytes of output.
        leaked = []
        for n in (4000, 4050, 4090, 8150, 16300, 32700, 65500):
            path = self.base / f"keyfile{n}"
            path.write_text("x" * (n - 1) + "\n" + PRIVATE_KEY)
            code, out, err = yield self.sh("-tt", f"cat {path}")
            if any(line.encode() in out for line in KEY_BODY):
                leaked.append(n)
            code, out, err = yield self.sh(f"cat {path}")
            if any(line.encode() in out for line in KEY_BODY):
                leaked.append(("nopty", n))
        self.assertEqual(leaked, [])

    @inlineCallbacks
    def test_bigger_key_in_log(self) -> None:
        # A longer key (4096-bit-like, 3.2 KB) after some lines: plain cat, no tricks.
        body = [base64.b64encode(os.urandom(48)).decode() for _ in range(50)]
        key = "-----BEGIN RSA PRIVATE KEY-----\n" + "\n".join(body) + "\n-----END RSA PRIVATE KEY-----\n"
        path = self.base / "big.pem"
        path.write_text("".join(f"log line {i}\n" for i in range(1000)) + key)
        code, out, err = yield self.sh("-tt", f"cat {path}")
        leaked = [line for line in body if line.encode() in out]
        code, out, err = yield self.sh(f"cat {path}")
        leaked2 = [line for line in body if line.encode() in out]
        self.assertEqual((len(leaked), len(leaked2)), (0, 0))


class BackpressureLeak(_Base):
    connection_options = "mask_terminal = true"
    policy = ALLOW + MASK

    @inlineCallbacks
    def test_cards_in_big_file(self) -> None:
        # An ordinary big file with a card on every line; plain cat, client reads normally.
        path = self.base / "orders.txt"
        path.write_text("".join(f"order {i:07d} card {CARD} ok\n" for i in range(150000)))
        code, out, err = yield self.sh(f"cat {path}")
        lines = out.split(b"\n")[:-1]
        self.assertEqual(len(lines), 150000)
        bad = [line for line in lines if not line.endswith(b"card [redacted] ok")]
        self.assertEqual(bad, [])

    @inlineCallbacks
    def test_cards_in_file_slow_reader(self) -> None:
        path = self.base / "orders.txt"
        path.write_text("".join(f"order {i:07d} card {CARD} ok\n" for i in range(30000)))
        code, out, err = yield self.sh(f"cat {path}", slow=True)
        lines = out.split(b"\n")[:-1]
        bad = [line for line in lines if not line.endswith(b"card [redacted] ok")]
        self.assertEqual(bad, [])


class ClientMaskingShell(_Base):
    """A login shell without a command (ssh -tt host), typed lines."""

    connection_options = "mask_terminal = true\nrecord_input = true"
    policy = ALLOW + MASK

    def argv(self, *args: str, direct: bool = False) -> list[str]:
        argv = super().argv("-tt", "true", direct=direct)
        return argv[:-1]  # no command: a shell

    @inlineCallbacks
    def test_pasted_long_line_wraps(self) -> None:
        # Pasted at once; readline wraps at column 80 with " \r" inside the echo.
        typed = [0.8, b"echo " + b"x" * 58 + b" 4111 1111 1111 1111 >/dev/null\n", 0.5, b"exit\n"]
        code, out, err = yield self.sh(typed=typed)
        rec, raw = yield self.cast()
        self.assertNotIn(b"4111", out)
        self.assertNotIn("4111", raw)

    @inlineCallbacks
    def test_shell_lines_backspace(self) -> None:
        typed = [0.8, b"echo 4111 1111 1111 1112\x7f1 >/dev/null\n", 0.5, b"exit\n"]
        code, out, err = yield self.sh(typed=typed)
        rec, raw = yield self.cast()
        lines = json.dumps([r["action"]["input"] for r, _ in self.actions("ssh.shell.line")])
        print("CAST", raw[-600:])
        self.assertNotIn("1111 111", lines)


class NoMaskTerminal(_Base):
    """Baseline: same gateway without mask_terminal (is masking what is slow?)."""

    policy = ALLOW + MASK


class ExemptRecording(_Base):
    connection_options = "mask_terminal = true\nrecord_exec_output = true"
    policy = ALLOW + MASK.replace('name = "all"', 'name = "all"\nexcept_groups = ["dev"]')

    @inlineCallbacks
    def test_exempt_sees_and_cast_masked_long_prose(self) -> None:
        prose = "word " * 30
        code, out, err = yield self.sh(pieces(prose + "4111 1111 11", "11 1111 1111 ok\n"))
        self.assertIn(b"4111 1111 1111 1111", out)
        rec, raw = yield self.cast()
        self.assertNotIn("4111 1111 11", raw)

    @inlineCallbacks
    def test_exempt_cast_private_key(self) -> None:
        code, out, err = yield self.sh(pieces(PRIVATE_KEY[:120], PRIVATE_KEY[120:]))
        rec, raw = yield self.cast()
        for line in KEY_BODY:
            self.assertNotIn(line, raw)
