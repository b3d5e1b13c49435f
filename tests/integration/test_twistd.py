"""
The gateway as an operator runs it: the real C{twistd hoopgw} in its own
process, the real C{hoopgw} admin command, HTTP to its API listener.
"""

from __future__ import annotations

import json
import os
import pty
import select
import shlex
import signal
import subprocess
from pathlib import Path

import jwt
import treq
from twisted.internet import reactor
from twisted.internet.defer import inlineCallbacks
from twisted.trial.unittest import TestCase

from hoopgw.config import DEFAULT_CONFIG_PATH
from hoopgw.store import SQLiteStore
from tests.integration._process import HOOPGW, TWISTD, child_env, free_port, run, run_split, spawn

READY = b"hoopgw ready"

# Without --config and HOOPGW_CONFIG, this machine's own configuration would apply.
NOT_QUICKSTART = "/etc/hoopgw/hoopgw.toml exists here" if DEFAULT_CONFIG_PATH.exists() else None


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
        # Plain search shows why, as the record keeps it.
        code, output = yield self.admin("audit", "search", "--event", "policy.rejected")
        self.assertEqual(code, 0, output)
        self.assertIn(b"policy.rejected - - 'policies/broken.toml: rule[0]", output.replace(str(self.dir).encode() + b"/", b""))

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
        """
        `hoopgw token issue --init` creates the dev issuer key in the data dir
        and prints a three-part JWT signed by it on stdout, saying on stderr
        which configuration and data dir it used and that it created the key.
        """
        code, out, err = yield run_split(
            HOOPGW + ["--config", str(self.config), "token", "issue", "--sub", "alice", "--group", "dba",
                      "--ttl", "15m", "--init"],
            cwd=str(self.dir),
        )
        self.assertEqual(code, 0, err)
        token = out.strip()
        self.assertEqual(token.count(b"."), 2)
        self.assertEqual(len(out.splitlines()), 1, out)
        key = self.dir / "data" / "keys" / "dev_issuer_ed25519.pem"
        self.assertTrue(key.exists())
        self.assertIn(f"hoopgw: using {self.config} (given with --config); data dir {self.dir / 'data'}".encode(), err)
        self.assertIn(f"created the dev issuer key {key}".encode(), err)

    @inlineCallbacks
    def test_token_issue_refused_without_a_key(self):
        """
        If `hoopgw token issue` runs where no configuration names the
        gateway's data dir (no --config, no HOOPGW_CONFIG: the quickstart
        defaults in an empty directory), it refuses, naming the data dir and
        what to do, and creates nothing; the same on a data dir with no dev
        issuer key.  --init creates the key.
        """
        empty = self.dir / "elsewhere"
        empty.mkdir()
        code, out, err = yield run_split(HOOPGW + ["token", "issue", "--sub", "alice"], cwd=str(empty))
        self.assertEqual((code, out), (1, b""), err)
        self.assertIn(f"hoopgw: no data dir {empty / 'hoopgw-data'}: ".encode(), err)
        for hint in (b"--config FILE", b"HOOPGW_CONFIG", b"--init"):
            self.assertIn(hint, err)
        self.assertIn(b"using the quickstart defaults (no --config, $HOOPGW_CONFIG or /etc/hoopgw/hoopgw.toml)", err)
        self.assertNotIn(b"Traceback", err)
        self.assertEqual(list(empty.iterdir()), [])

        (self.dir / "data").mkdir()
        code, out, err = yield run_split(HOOPGW + ["--config", str(self.config), "token", "issue", "--sub", "alice"])
        self.assertEqual((code, out), (1, b""), err)
        self.assertIn(f"no dev issuer key in data dir {self.dir / 'data'} (keys/dev_issuer_ed25519.pem)".encode(), err)
        self.assertEqual(list((self.dir / "data").iterdir()), [])

        code, out, err = yield run_split(HOOPGW + ["token", "issue", "--sub", "alice", "--init"], cwd=str(empty))
        self.assertEqual(code, 0, err)
        self.assertTrue((empty / "hoopgw-data" / "keys" / "dev_issuer_ed25519.pem").exists())

    @inlineCallbacks
    def test_read_only_verbs_create_nothing(self):
        """
        If the admin verbs that only read run where there is no data dir,
        each fails saying what is missing and which configuration and data
        dir it used, and none creates a file or folder.
        """
        empty = self.dir / "elsewhere"
        empty.mkdir()
        for verb in (
            ["audit", "verify"], ["audit", "search"], ["sessions", "list"], ["sessions", "show", "s_x"],
            ["replay", "s_x"], ["evidence", "--out", str(self.dir / "evidence.json")],
            ["sessions", "export", "s_x", "--out", str(self.dir / "b.tar")],
        ):
            code, out, err = yield run_split(HOOPGW + verb, cwd=str(empty))
            self.assertEqual((code, out), (1, b""), (verb, err))
            self.assertIn(f"data dir {empty / 'hoopgw-data'}".encode(), err, verb)
            self.assertNotIn(b"Traceback", err, verb)
            self.assertEqual(list(empty.iterdir()), [], verb)
        code, out, err = yield run_split(HOOPGW + ["--quiet", "sessions", "list"], cwd=str(empty))
        self.assertEqual(code, 1)
        self.assertNotIn(b"using", err)

    @inlineCallbacks
    def test_ttl_over_the_cap_refused(self):
        """
        If `hoopgw token issue --ttl` asks for more than
        [identity] dev_token_max_ttl, it is refused naming the cap (never
        silently shortened); at the cap a token is issued.
        """
        self.config.write_text(self.config.read_text() + '\n[identity]\ndev_token_max_ttl = "1h"\n')
        code, out, err = yield run_split(
            HOOPGW + ["--config", str(self.config), "token", "issue", "--sub", "alice", "--ttl", "2h", "--init"]
        )
        self.assertEqual((code, out), (2, b""), err)
        self.assertIn(b"hoopgw: --ttl: 2h is over the dev issuer's cap of 1h ([identity] dev_token_max_ttl)", err)
        self.assertFalse((self.dir / "data").exists())
        code, out, err = yield run_split(
            HOOPGW + ["--config", str(self.config), "token", "exec-credential", "--sub", "alice", "--ttl", "61m"]
        )
        self.assertEqual((code, out), (2, b""), err)
        self.assertIn(b"cap of 1h", err)
        code, out, err = yield run_split(
            HOOPGW + ["--config", str(self.config), "token", "issue", "--sub", "alice", "--ttl", "1h", "--init"]
        )
        self.assertEqual(code, 0, err)
        claims = jwt.decode(out.strip(), options={"verify_signature": False})
        self.assertEqual(claims["exp"] - claims["iat"], 3600)

    @inlineCallbacks
    def test_config_from_the_environment(self):
        """
        If HOOPGW_CONFIG names the configuration, `twistd hoopgw` and
        `hoopgw token issue` both use it, from any directory, and say so; the
        token is accepted by the running gateway (its API, through `hoopgw
        reviews list`).  A token minted with --init on another data dir is
        refused with a hint at the cause.
        """
        elsewhere = self.dir / "elsewhere"
        elsewhere.mkdir()
        env = child_env(HOOPGW_CONFIG=str(self.config))
        proc = spawn(TWISTD + ["-n", "--pidfile=", "hoopgw"], marker=READY, cwd=str(elsewhere), env=env)
        self.procs.append(proc)
        yield proc.ready
        self.assertIn(f"hoopgw using {self.config} (named by $HOOPGW_CONFIG); data dir {self.dir / 'data'}".encode(),
                      proc.output)
        code, token, err = yield run_split(HOOPGW + ["token", "issue", "--sub", "alice"], cwd=str(elsewhere), env=env)
        self.assertEqual(code, 0, err)
        self.assertIn(f"hoopgw: using {self.config} (named by $HOOPGW_CONFIG)".encode(), err)
        api = f"http://127.0.0.1:{self.port}"
        code, out, err = yield run_split(
            HOOPGW + ["reviews", "list", "--api", api, "--token", token.strip().decode()], cwd=str(elsewhere), env=env
        )
        self.assertEqual((code, err), (0, b""), out)

        # The same gateway name, another data dir: what a copied configuration or a wrong directory gives.
        stray_config = elsewhere / "stray.toml"
        stray_config.write_text('[gateway]\nname = "itest"\ndata_dir = "stray-data"\n')
        code, stray, err = yield run_split(
            HOOPGW + ["--config", str(stray_config), "token", "issue", "--sub", "alice", "--init"], env=env
        )
        self.assertEqual(code, 0, err)
        code, out, err = yield run_split(
            HOOPGW + ["reviews", "list", "--api", api, "--token", stray.strip().decode()], cwd=str(elsewhere)
        )
        self.assertEqual(code, 1, err)
        self.assertIn(b"unknown key id: not signed by this gateway's dev issuer key", err)
        self.assertEqual(sorted(p.name for p in elsewhere.iterdir()), ["stray-data", "stray.toml"])
        proc.signal("TERM")
        code = yield proc.ended
        self.assertStoppedBySignal(code, proc)

        code, out, err = yield run_split(
            HOOPGW + ["audit", "search", "--event", "gateway.start", "--json"], cwd=str(elsewhere),
            env=child_env(HOOPGW_CONFIG=str(self.dir / "missing.toml")),
        )
        self.assertEqual(code, 1)
        self.assertIn(b"missing.toml: cannot read configuration file: No such file or directory "
                      b"(the configuration named by $HOOPGW_CONFIG)", err)

    @inlineCallbacks
    def test_says_where_on_a_terminal(self):
        """
        If stderr is a terminal, a verb that reads says there which
        configuration and data dir it used, and stdout stays the result
        (JSON lines here); --quiet says nothing.
        """
        proc = self.start("--config", str(self.config))
        yield proc.ready
        proc.signal("TERM")
        yield proc.ended
        for quiet in ([], ["--quiet"]):
            primary, secondary = pty.openpty()
            try:
                done = subprocess.run(
                    HOOPGW + ["--config", str(self.config), *quiet, "audit", "search", "--json"],
                    stdout=subprocess.PIPE, stderr=secondary, env=child_env(), cwd=str(self.dir), timeout=60,
                )
                said = b""
                while select.select([primary], [], [], 0.5)[0]:
                    said += os.read(primary, 65536)
            finally:
                os.close(primary)
                os.close(secondary)
            self.assertEqual(done.returncode, 0, said)
            self.assertEqual(json.loads(done.stdout.splitlines()[0])["event"], "policy.loaded")
            where = f"hoopgw: using {self.config} (given with --config); data dir {self.dir / 'data'}".encode()
            self.assertEqual(said.replace(b"\r\n", b"\n"), b"" if quiet else where + b"\n")

    @inlineCallbacks
    def test_output_into_a_closed_pipe(self):
        """
        If the reader of the output goes away (`| head -1`, `| grep -m1`), the
        command ends quietly: no traceback, exit status 141 (as a program
        SIGPIPE ends), the reader's lines intact.
        """
        proc = self.start("--config", str(self.config))
        yield proc.ready
        proc.signal("TERM")
        yield proc.ended
        store = SQLiteStore.open(self.dir / "data" / "store.sqlite3", reactor=reactor)
        yield store.whenReady()
        for i in range(800):  # far more than a pipe holds (64 KiB)
            yield store.session_started(
                {"id": f"s_{i:05}", "started": 1_700_000_000 + i, "subject": "alice", "issuer": "test",
                 "connection": "appdb", "kind": "postgres", "source": "127.0.0.1:5000"}
            )
        yield store.close()
        admin = " ".join(shlex.quote(a) for a in HOOPGW + ["--config", str(self.config)])
        for pipeline, first in (
            ("sessions list --limit 1000 | head -1", b"ID "),
            ("sessions list --limit 1000 --json | grep -m1 s_00799", b'{"actions": null'),
            ("audit search | true", b""),
        ):
            code, out, err = yield run_split(
                ["bash", "-c", f"{admin} {pipeline}; echo \"status ${{PIPESTATUS[0]}}\" >&2"], cwd=str(self.dir)
            )
            self.assertEqual(code, 0, err)
            self.assertTrue(out.startswith(first), (pipeline, out[:200]))
            self.assertEqual(len(out.splitlines()), 1 if first else 0, pipeline)
            self.assertEqual(err, b"status 141\n", pipeline)

    @inlineCallbacks
    def test_sessions_list_header_and_show(self):
        """
        `sessions list` prints a header line above its rows (not with
        --json); `sessions show ID` shows the session's store row, counts and
        audit records, as text and as JSON; an unknown id fails.
        """
        proc = self.start("--config", str(self.config))
        yield proc.ready
        proc.signal("TERM")
        yield proc.ended
        store = SQLiteStore.open(self.dir / "data" / "store.sqlite3", reactor=reactor)
        yield store.whenReady()
        yield store.session_started(
            {"id": "s_one", "started": 1_700_000_000, "subject": "alice", "issuer": "test", "groups": ["dba"],
             "connection": "appdb", "kind": "postgres", "source": "127.0.0.1:5000"}
        )
        yield store.session_ended("s_one", 1_700_000_060, "closed", None, bytes_in=10, bytes_out=20,
                                  counts={"actions": 3, "succeeded": 2, "blocked": 1})
        yield store.close()
        code, output = yield self.admin("sessions", "list")
        self.assertEqual(code, 0, output)
        header, row = output.decode().splitlines()
        self.assertEqual(header.split(), ["ID", "STARTED", "ENDED", "STATUS", "SUBJECT", "CONNECTION", "SOURCE", "ACTIONS"])
        self.assertTrue(row.startswith("s_one  2023-11-14T22:13:20.000000Z"), row)
        self.assertEqual(row.index("alice"), header.index("SUBJECT"))
        self.assertEqual(row.index("appdb"), header.index("CONNECTION"))
        code, output = yield self.admin("sessions", "list", "--json")
        self.assertEqual(json.loads(output)["id"], "s_one")

        code, output = yield self.admin("sessions", "show", "s_one")
        self.assertEqual(code, 0, output)
        text = output.decode()
        self.assertIn("session     s_one\n", text)
        self.assertIn("subject     alice (issuer test; groups dba)\n", text)
        self.assertIn("connection  appdb (postgres)\n", text)
        self.assertIn("status      closed\n", text)
        self.assertIn("bytes       10 in, 20 out\n", text)
        self.assertIn("actions     3 actions (2 allowed, 1 blocked, 0 failed, 0 reviewed)\n", text)
        self.assertIn("counts      actions 3, blocked 1, succeeded 2\n", text)
        self.assertIn(f"records     0 in {self.dir / 'data' / 'audit'}\n", text)
        code, output = yield self.admin("sessions", "show", "s_one", "--json")
        self.assertEqual(code, 0, output)
        shown = json.loads(output)
        self.assertEqual(shown["session"]["id"], "s_one")
        self.assertEqual(shown["counts"], {"actions": 3, "succeeded": 2, "blocked": 1})
        self.assertEqual((shown["records"], shown["recordings"]), (0, []))
        code, output = yield self.admin("sessions", "show", "s_nope")
        self.assertEqual(code, 1, output)
        self.assertIn(b"no session 's_nope' in the session store or in", output)

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


if NOT_QUICKSTART:
    for _name in ("test_token_issue_refused_without_a_key", "test_read_only_verbs_create_nothing", "test_quickstart_defaults"):
        getattr(TwistdTests, _name).skip = NOT_QUICKSTART
