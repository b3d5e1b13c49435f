"""
The front end as users run it: C{twistd -n hoopgw --config FILE}, a real
process that finds the plugin as installed (or on PYTHONPATH, beside
src/twisted/plugins), a C{[[connections]] kind = "redis"} entry pointing at
a redis-server the test starts, a policy folder with C{redis.commands}
rules, tokens from the real C{hoopgw token issue}, the real C{redis-cli}
over TLS (the gateway's own certificate), and the trail read and verified
with the real C{hoopgw audit} commands.
"""

from __future__ import annotations

import hashlib
import json
import re
import sys
from pathlib import Path

from twisted.internet.defer import inlineCallbacks
from twisted.internet.threads import deferToThread
from twisted.trial.unittest import TestCase

from tests._gateway import REDIS_CLI, require_cli
from tests._process import HOOPGW, TWISTD, child_env, run, spawn
from tests._redis import start_redis

READY = b"hoopgw ready"
LISTENING = re.compile(rb"hoopgw redis listening on 127\.0\.0\.1:(\d+)")

CONFIG = """
[gateway]
data_dir = "data"
policies = "policies"

[listen]
# Only the listener under test, on a free port (tests run side by side).
postgres = false
ssh = false
http = false
api = false
redis = "tcp:0:interface=127.0.0.1"

[[connections]]
name = "cache"
kind = "redis"
address = "127.0.0.1:{port}"
tls = "disable"
"""

POLICY = """
[[rule]]
name = "dev-may-use-cache"
effect = "allow"
groups = ["dev"]
connections = ["cache"]
actions = ["session.open", "redis.*"]

[[rule]]
name = "redis-no-wipe"
effect = "deny"
redis.commands = ["FLUSHALL", "FLUSHDB"]
message = "wiping a database is not allowed through the gateway"

[[rule]]
name = "no-session-keys"
effect = "deny"
redis.keys = ["session:*"]

[[mask]]
name = "cards"
connections = ["cache"]
detectors = ["card"]
"""
CARD = "4111 1111 1111 1111"


def write_gateway(directory: Path, redis_port: int, policy: str = POLICY) -> Path:
    directory.mkdir(parents=True)
    (directory / "policies").mkdir()
    (directory / "policies" / "redis.toml").write_text(policy)
    config = directory / "hoopgw.toml"
    config.write_text(CONFIG.format(port=redis_port))
    return config


class TwistdTests(TestCase):
    timeout = 120

    def twistd(self, config: Path, argv: list[str] = TWISTD):
        proc = spawn([*argv, "-n", "--pidfile=", "hoopgw", "--config", str(config)], cwd=str(config.parent))
        self.addCleanup(lambda: proc.signal("KILL"))
        return proc

    def hoopgw(self, config: Path, *args: str):
        return run([*HOOPGW, "--config", str(config), *args], cwd=str(config.parent))

    @inlineCallbacks
    def test_redis_cli_through_twistd(self):
        """
        SET and GET pass; FLUSHALL and a write to session:* are refused
        naming their rules, and nothing reaches the server; a card number
        read comes back masked; the trail has every command, never the card
        number, and verifies after the gateway stops.
        """
        require_cli()
        server = start_redis(self)
        with server.connect() as direct:
            direct.call(b"SET", b"payment", f"paid with {CARD}".encode())
        config = write_gateway(Path(self.mktemp()).resolve(), server.port)
        proc = self.twistd(config)
        yield proc.wait_for(READY)
        self.assertNotIn(b"Traceback", proc.output)
        port = int(LISTENING.search(proc.output).group(1))
        code, token, output = yield self.hoopgw(config, "token", "issue", "--sub", "alice", "--group", "dev")
        self.assertEqual(code, 0, output)
        token = token.decode().strip().splitlines()[-1]
        cacert = config.parent / "data" / "tls" / "gateway.crt"

        def cli(*args: str) -> str:
            import subprocess

            result = subprocess.run(
                [REDIS_CLI, "-h", "127.0.0.1", "-p", str(port), "--tls", "--cacert", str(cacert),
                 "--user", "cache", "--pass", token, "--no-auth-warning", *args],
                capture_output=True, text=True, timeout=30,
            )
            return result.stdout.strip() + result.stderr.strip()

        self.assertEqual((yield deferToThread(cli, "SET", "greeting", "hello")), "OK")
        self.assertEqual((yield deferToThread(cli, "GET", "greeting")), "hello")
        flushed = yield deferToThread(cli, "FLUSHALL")
        self.assertIn("NOPERM hoopgw: rule 'redis-no-wipe': wiping a database is not allowed", flushed)
        self.assertEqual((yield deferToThread(cli, "GET", "payment")), "paid with [redacted]")
        written = yield deferToThread(cli, "SET", "session:1", "x")
        self.assertIn("NOPERM hoopgw: rule 'no-session-keys' denies this command", written)
        with server.connect() as direct:
            self.assertEqual(direct.call(b"GET", b"greeting"), b"hello")  # FLUSHALL never ran
            self.assertEqual(direct.call(b"EXISTS", b"session:1"), 0)

        proc.signal("TERM")
        # twistd ends by the signal it was sent (Twisted re-raises it once stopped).
        self.assertIn((yield proc.ended), (0, -15), proc.output.decode(errors="replace"))
        code, out, output = yield self.hoopgw(config, "audit", "search", "--json", "--connection", "cache")
        self.assertEqual(code, 0, output)
        records = [json.loads(line) for line in out.decode().splitlines() if line.startswith("{")]
        starts = [(r["action"]["input"], r["decision"]["effect"], r["decision"]["rule"])
                  for r in records if r["event"] == "action.start"]
        self.assertEqual(starts, [
            ("SET greeting hello", "allow", "dev-may-use-cache"),
            ("GET greeting", "allow", "dev-may-use-cache"),
            ("FLUSHALL", "deny", "redis-no-wipe"),
            ("GET payment", "allow", "dev-may-use-cache"),
            ("SET session:1 x", "deny", "no-session-keys"),
        ])
        ends = [(r["outcome"]["status"], r["outcome"].get("masked")) for r in records if r["event"] == "action.end"]
        self.assertEqual(ends, [("succeeded", None), ("succeeded", None), ("blocked", None),
                                ("succeeded", {"cards": 1}), ("blocked", None)])
        self.assertEqual(len([r for r in records if r["event"] == "session.start"]), 5)
        self.assertTrue(all(r["identity"]["sub"] == "alice" and r["kind"] == "redis" for r in records))
        code, out, output = yield self.hoopgw(config, "audit", "verify")
        self.assertEqual(code, 0, output)
        self.assertIn(b"closed cleanly", output)
        for path in (config.parent / "data" / "audit").iterdir():
            self.assertNotIn(CARD.encode(), path.read_bytes(), path)
        # Each session's transcript, named in its session.end, played by hoopgw's own replay.
        (read,) = [r for r in records if r["event"] == "action.start" and r["action"]["input"] == "GET payment"]
        (end,) = [r for r in records if r["event"] == "session.end" and r["session"] == read["session"]]
        recording = Path(end["end"]["recording"])
        self.assertEqual(end["end"]["recording_sha256"], hashlib.sha256(recording.read_bytes()).hexdigest())
        code, out, output = yield self.hoopgw(config, "replay", "--play", "--max-idle", "0", read["session"])
        self.assertEqual(code, 0, output)
        played = out.decode().splitlines()
        self.assertEqual(played[1:], ["[login] < simple string, 5 bytes", "[1] > GET payment",
                                      "[1] < bulk string, 27 bytes, masked: cards=1"])
        self.assertTrue(played[0].startswith("hoopgw: alice on cache (127.0.0.1:"), played)
        for path in (config.parent / "data" / "recordings").iterdir():
            self.assertNotIn(CARD.encode(), path.read_bytes(), path)
            self.assertNotIn(token.encode(), path.read_bytes(), path)

    @inlineCallbacks
    def test_plugin_missing(self):
        """
        With the plugin not loadable, the start stops with one line naming
        what is installed and the plugin file that failed: for a [listen]
        redis entry, a [[connections]] entry of kind redis, and a policy
        rule on redis.keys.
        """
        # The package cannot be imported, so its plugin module fails: for
        # hoopgw, the kind is missing, as with the package uninstalled.
        broken = [sys.executable, "-c",
                  "import sys; sys.modules['hoopgw_redis'] = None; from twisted.scripts.twistd import run; run()"]
        plugin = "hoopgw_redis.py: ModuleNotFoundError: No module named 'hoopgw_redis.plugin'"
        config = write_gateway(Path(self.mktemp()).resolve(), 6379)  # never reached: the gateway does not start
        listen, connection = config.read_text().split("[[connections]]")
        cases = [
            (listen + "[[connections]]" + connection,
             'listen.redis: unknown key; expected one of "api", "http", "postgres", "ssh"; '
             "these plugins could not be loaded: "),
            (listen.replace('redis = "tcp:0:interface=127.0.0.1"', "") + "[[connections]]" + connection,
             'hoopgw.toml: connections[0].kind: expected one of "http", "postgres", "ssh", got "redis"; '
             "these plugins could not be loaded: "),
            (listen.replace('redis = "tcp:0:interface=127.0.0.1"', ""),
             'redis.toml: rule[0] ("no-session-keys").redis.keys: unknown condition; expected one of "http.methods"'),
        ]
        for text, expected in cases:
            config.write_text(text)
            if "[[connections]]" not in text:  # a policy alone: its one rule on redis.keys
                rules = POLICY.split("[[rule]]")
                (config.parent / "policies" / "redis.toml").write_text("[[rule]]" + rules[-1])
            proc = self.twistd(config, broken)
            code = yield proc.ended
            output = proc.output.decode(errors="replace")
            self.assertNotEqual(code, 0, output)
            self.assertIn(expected, output)
            self.assertIn(plugin, output[output.index(expected):])
