"""
The gateway as an operator runs it: the real C{twistd hoopgw} in its own
process, the real C{hoopgw} admin command, HTTP to its API listener.
"""

from __future__ import annotations

import json
import os
import signal
from pathlib import Path

import treq
from twisted.internet import reactor
from twisted.internet.defer import inlineCallbacks
from twisted.trial.unittest import TestCase

from hoopgw.store import SQLiteStore
from tests.integration._process import HOOPGW, TWISTD, free_port, run, spawn

READY = b"hoopgw ready"


def write_config(directory: Path, api_port: int, **extra: str) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    config = directory / "hoopgw.toml"
    config.write_text(
        f"""
[gateway]
name = "itest"
data_dir = "data"

[listen]
api = "tcp:{api_port}:interface=127.0.0.1"
postgres = false
ssh = false
http = false

[audit]
checkpoint_every = 5
"""
        + "".join(extra.values())
    )
    return config


class TwistdTests(TestCase):
    timeout = 60

    def setUp(self) -> None:
        self.dir = Path(self.mktemp()).resolve()
        self.port = free_port()
        self.config = write_config(self.dir, self.port)
        self.procs = []

    def tearDown(self):
        for proc in self.procs:
            proc.signal("KILL")
        return None

    def start(self, *args: str, cwd: Path | None = None):
        proc = spawn(
            TWISTD + ["-n", "--pidfile=", "hoopgw", *args],
            marker=READY,
            cwd=str(cwd or self.dir),
        )
        self.procs.append(proc)
        return proc

    def assertStoppedBySignal(self, code, proc) -> None:
        """
        twistd shuts down on SIGTERM and then re-raises the signal, so a clean
        stop ends "killed by SIGTERM" and its log says the server shut down.
        """
        self.assertIn(code, (0, -signal.SIGTERM), proc.output.decode(errors="replace"))
        self.assertIn(b"Server Shut Down.", proc.output)
        self.assertNotIn(b"Traceback", proc.output)

    def admin(self, *args: str):
        return run(HOOPGW + ["--config", str(self.config), *args], cwd=str(self.dir))

    @inlineCallbacks
    def test_help_lists_options(self):
        """`twistd hoopgw --help` lists the --config option."""
        code, output = yield run(TWISTD + ["hoopgw", "--help"], cwd=str(self.dir))
        self.assertEqual(code, 0, output)
        self.assertIn(b"--config", output)

    @inlineCallbacks
    def test_start_serve_stop_verify(self):
        """
        If the gateway is started with a config file, it serves /healthz and
        /metrics, stops cleanly on SIGTERM, and leaves an audit trail that
        `hoopgw audit verify` accepts, with start/stop and policy records.
        """
        proc = self.start("--config", str(self.config))
        yield proc.ready
        response = yield treq.get(f"http://127.0.0.1:{self.port}/healthz", persistent=False)
        body = yield response.json()
        self.assertEqual(response.code, 200)
        self.assertEqual(body["status"], "ok")
        response = yield treq.get(f"http://127.0.0.1:{self.port}/metrics", persistent=False)
        metrics = yield response.text()
        self.assertIn("hoopgw_audit_records_total", metrics)

        proc.signal("TERM")
        code = yield proc.ended
        self.assertStoppedBySignal(code, proc)

        code, output = yield self.admin("audit", "verify")
        self.assertEqual(code, 0, output)
        self.assertTrue(output.startswith(b"OK: "), output)

        code, output = yield self.admin("audit", "search", "--json")
        self.assertEqual(code, 0, output)
        records = [json.loads(line) for line in output.splitlines()]
        events = [r["event"] for r in records]
        self.assertEqual(events[0], "policy.loaded")
        self.assertIn("gateway.start", events)
        self.assertEqual(events[-1], "gateway.stop")
        start = records[events.index("gateway.start")]
        self.assertEqual(len(start["config_sha256"]), 64)
        self.assertEqual(start["listeners"], {"api": f"tcp:{self.port}:interface=127.0.0.1"})

    @inlineCallbacks
    def test_sighup_reloads_policy(self):
        """
        If the policy folder changes and the gateway gets SIGHUP, the new files
        are loaded and recorded (policy.loaded, reason "reload"); a broken file
        is refused with a policy.rejected record and the old policy stays.
        """
        policies = self.dir / "policies"
        policies.mkdir()
        (policies / "base.toml").write_text('[[rule]]\nname = "all"\neffect = "allow"\n')
        self.config.write_text(self.config.read_text().replace('[gateway]\n', '[gateway]\npolicies = "policies"\n'))
        proc = self.start("--config", str(self.config))
        yield proc.ready
        (policies / "more.toml").write_text('[[rule]]\nname = "no-drops"\neffect = "deny"\nsql.statements = ["drop"]\n')
        reloaded = proc.wait_for(b"policy reloaded: 2 rules from 2 files")
        proc.signal("HUP")
        yield reloaded
        (policies / "broken.toml").write_text('[[rule]]\nname = "x"\neffect = "maybe"\n')
        refused = proc.wait_for(b"policy reload refused")
        proc.signal("HUP")
        yield refused
        proc.signal("TERM")
        code = yield proc.ended
        self.assertStoppedBySignal(code, proc)

        code, output = yield self.admin("audit", "search", "--event", "policy.*", "--json")
        records = [json.loads(line) for line in output.splitlines()]
        self.assertEqual(
            [(r["event"], r.get("reason"), Path(r["path"]).name if "path" in r else None) for r in records],
            [
                ("policy.loaded", "start", "base.toml"),
                ("policy.loaded", "reload", "base.toml"),
                ("policy.loaded", "reload", "more.toml"),
                ("policy.rejected", None, None),
            ],
        )
        self.assertIn('broken.toml: rule[0] ("x").effect', records[-1]["error"])

    @inlineCallbacks
    def test_restart_continues_chain(self):
        """If the gateway is started twice on one data dir, the audit log continues and still verifies."""
        for _ in range(2):
            proc = self.start("--config", str(self.config))
            yield proc.ready
            proc.signal("TERM")
            code = yield proc.ended
            self.assertStoppedBySignal(code, proc)
        code, output = yield self.admin("audit", "verify")
        self.assertEqual(code, 0, output)
        code, output = yield self.admin("audit", "search", "--event", "gateway.start", "--json")
        self.assertEqual(len(output.splitlines()), 2, output)

    @inlineCallbacks
    def test_sessions_left_open_marked_interrupted(self):
        """
        If the previous process ended without ending a session (killed, or
        the machine stopped), the next start marks it interrupted in the
        session index and writes one sessions.interrupted record naming it.
        """
        proc = self.start("--config", str(self.config))
        yield proc.ready
        proc.signal("TERM")
        yield proc.ended
        # What a SIGKILLed gateway leaves behind: a session stored as active.
        store = SQLiteStore.open(self.dir / "data" / "store.sqlite3", reactor=reactor)
        yield store.whenReady()
        yield store.session_started(
            {"id": "s_left_open", "started": 1_700_000_000, "subject": "alice", "issuer": "test",
             "connection": "appdb", "kind": "postgres"}
        )
        yield store.close()

        proc = self.start("--config", str(self.config))
        yield proc.ready
        yield proc.wait_for(b"marked interrupted")
        proc.signal("TERM")
        code = yield proc.ended
        self.assertStoppedBySignal(code, proc)
        code, output = yield self.admin("sessions", "list")
        self.assertEqual(code, 0, output)
        self.assertIn(b"interrupted", output)
        code, output = yield self.admin("audit", "search", "--event", "sessions.interrupted", "--json")
        [record] = [json.loads(line) for line in output.splitlines()]
        self.assertEqual((record["count"], record["sessions"]), (1, ["s_left_open"]))
        code, output = yield self.admin("audit", "verify")
        self.assertEqual(code, 0, output)

    @inlineCallbacks
    def test_verify_refuses_unsigned_tail_and_lost_key(self):
        """
        If the checkpoints file is deleted, `hoopgw audit verify` fails (the
        records are no longer covered by a signature), with
        --allow-unsigned-tail too: a log with records always has a signed
        checkpoint from its first start, so a missing file is tampering,
        never an unsigned tail.  If the
        signing key is deleted, the gateway refuses to start rather than sign
        on with a new key that would orphan the existing log.
        """
        proc = self.start("--config", str(self.config))
        yield proc.ready
        proc.signal("TERM")
        yield proc.ended
        audit = self.dir / "data" / "audit"
        (audit / "checkpoints.notes").unlink()
        code, output = yield self.admin("audit", "verify")
        self.assertEqual(code, 1, output)
        self.assertIn(b"checkpoints were deleted", output)
        code, output = yield self.admin("audit", "verify", "--allow-unsigned-tail")
        self.assertEqual(code, 1, output)
        self.assertIn(b"checkpoints were deleted", output)

        (self.dir / "data" / "keys" / "audit_ed25519.pem").unlink()
        code, output = yield run(
            TWISTD + ["-n", "--pidfile=", "hoopgw", "--config", str(self.config)], cwd=str(self.dir)
        )
        self.assertNotEqual(code, 0, output)
        self.assertIn(b"audit signing key", output)
        self.assertIn(b"is missing but", output)
        self.assertNotIn(b"Traceback", output)
        self.assertFalse((self.dir / "data" / "keys" / "audit_ed25519.pem").exists())

    @inlineCallbacks
    def test_dev_token_issue(self):
        """`hoopgw token issue` prints a three-part JWT signed by the dev issuer in the data dir."""
        code, output = yield self.admin("token", "issue", "--sub", "alice", "--group", "dba", "--ttl", "15m")
        self.assertEqual(code, 0, output)
        token = output.strip()
        self.assertEqual(token.count(b"."), 2)
        self.assertTrue((self.dir / "data" / "keys" / "dev_issuer_ed25519.pem").exists())

    @inlineCallbacks
    def test_port_in_use_refuses_to_start(self):
        """
        If a configured port cannot be bound, the gateway exits non-zero with
        a message naming the listener, and writes no gateway.start record.
        """
        import socket

        holder = socket.socket()
        holder.bind(("127.0.0.1", self.port))
        holder.listen(1)
        self.addCleanup(holder.close)
        code, output = yield run(
            TWISTD + ["-n", "--pidfile=", "hoopgw", "--config", str(self.config)], cwd=str(self.dir)
        )
        self.assertNotEqual(code, 0, output)
        self.assertIn(f"hoopgw: cannot listen for api on tcp:{self.port}:interface=127.0.0.1".encode(), output)
        self.assertNotIn(b"Traceback", output)
        code, output = yield self.admin("audit", "search", "--event", "gateway.start")
        self.assertEqual(output, b"")

    @inlineCallbacks
    def test_bad_config_precise_error(self):
        """If the config file has an unknown key, twistd exits non-zero with one message naming file and key."""
        self.config.write_text('[gateway]\ndtaa_dir = "x"\n')
        code, output = yield run(
            TWISTD + ["-n", "--pidfile=", "hoopgw", "--config", str(self.config)], cwd=str(self.dir)
        )
        self.assertNotEqual(code, 0)
        self.assertIn(b"hoopgw.toml: gateway.dtaa_dir: unknown key", output)
        self.assertNotIn(b"Traceback", output)

    @inlineCallbacks
    def test_quickstart_defaults(self):
        """
        If no --config is given, the gateway starts on its embedded defaults:
        data under ./hoopgw-data with a self-signed certificate, a dev issuer
        key and an audit log, and only loopback listeners.
        """
        cwd = self.dir / "quick"
        cwd.mkdir()
        proc = self.start(cwd=cwd)
        yield proc.ready
        response = yield treq.get("http://127.0.0.1:18009/healthz", persistent=False)
        self.assertEqual(response.code, 200)
        yield response.content()
        proc.signal("TERM")
        code = yield proc.ended
        self.assertStoppedBySignal(code, proc)
        data = cwd / "hoopgw-data"
        self.assertTrue((data / "tls" / "gateway.crt").exists())
        self.assertEqual(os.stat(data / "tls" / "gateway.key").st_mode & 0o777, 0o600)
        self.assertTrue((data / "audit" / "audit.vkey").exists())
        self.assertNotIn(b"0.0.0.0", proc.output)
