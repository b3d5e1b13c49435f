"""
Session bundles (issue 14): `hoopgw sessions export` over sessions the real
psql and ssh made through the gateway, and `hoopgw audit verify-bundle` run
with no configuration and no data dir: an intact bundle verifies; one byte
changed in any member, any member removed, or a record taken out of the
middle is detected and named.
"""

from __future__ import annotations

import io
import json
import os
import tarfile
from pathlib import Path

from twisted.internet.defer import inlineCallbacks

from tests.integration._process import HOOPGW, child_env, run
from tests.integration._ssh import SSHGatewayCase
from tests.integration.test_postgres_clients import _GatewayCase, wait_until
from tests.integration.test_replay import DENY_DELETES, admin_config


def members(bundle: Path) -> dict[str, bytes]:
    with tarfile.open(bundle) as tar:
        return {m.name: tar.extractfile(m).read() for m in tar}


def rewrite(bundle: Path, out: Path, files: dict[str, bytes]) -> Path:
    with tarfile.open(out, "w") as tar:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return out


class _Bundles:
    """Running the CLI as an auditor would, on another machine: no configuration, no data dir."""

    def verify(self, bundle: Path, *args: str):
        elsewhere = Path(self.mktemp()).resolve()
        elsewhere.mkdir()
        env = child_env(HOME=str(elsewhere))
        env.pop("HOOPGW_CONFIG", None)
        return run([*HOOPGW, "audit", "verify-bundle", str(bundle), *args], cwd=str(elsewhere), env=env)

    @inlineCallbacks
    def assertTamperingNamed(self, bundle: Path):
        """Every member changed by one byte, and every member removed, fails verification naming it."""
        files = members(bundle)
        for name, data in files.items():
            changed = dict(files)
            middle = len(data) // 2
            changed[name] = data[:middle] + bytes([data[middle] ^ 0x01]) + data[middle + 1:]
            code, output = yield self.verify(rewrite(bundle, Path(self.mktemp()).resolve(), changed))
            self.assertEqual(code, 1, (name, output))
            self.assertIn(name.encode(), output.split(b"FAILED")[0], (name, output))
            removed = {n: d for n, d in files.items() if n != name}
            code, output = yield self.verify(rewrite(bundle, Path(self.mktemp()).resolve(), removed))
            self.assertEqual(code, 1, (name, output))
            self.assertIn(name.encode(), output, (name, output))


class PostgresBundleTests(_Bundles, _GatewayCase):
    def setUp(self) -> None:
        self.start(extra_policy=DENY_DELETES, api=True)

    @inlineCallbacks
    def test_export_verify_and_tamper(self):
        code, _ = yield self.psql(
            "-c", "SELECT count(*) FROM items", "-c", "DELETE FROM items WHERE id = 1", "-c", "SELECT 1",
        )
        [end] = yield wait_until(lambda: self.records("session.end"), "session.end")
        session = end["session"]
        admin = admin_config(self.base, self.base / "data")
        bundle = self.base / "bundle.tar"

        def export(*extra: str):
            return run([*HOOPGW, "--config", admin, "sessions", "export", session, "--out", str(bundle), *extra],
                       env=child_env())

        code, output = yield export()
        self.assertEqual(code, 1, output)
        self.assertIn(b"not yet covered by a signed checkpoint", output)
        api = f"http://127.0.0.1:{self.gateway.listeners['api'].port.getHost().port}"
        code, output = yield export("--checkpoint", "--api", api, "--token", self.token)
        self.assertEqual(code, 0, output)

        code, output = yield self.verify(bundle)
        self.assertEqual(code, 0, output)
        self.assertIn(f"OK: session {session}".encode(), output)
        vkey = self.base / "data" / "audit" / "audit.vkey"
        code, output = yield self.verify(bundle, "--vkey", str(vkey))
        self.assertEqual(code, 0, output)
        other = self.base / "other.vkey"
        other.write_text("someone+00000000+AQ" + "A" * 42 + "=\n")
        code, output = yield self.verify(bundle, "--vkey", str(other))
        self.assertEqual(code, 1, output)

        files = members(bundle)
        records = [json.loads(line) for line in files["records.jsonl"].splitlines()]
        self.assertEqual(records[0]["event"], "session.start")
        self.assertIn("session.end", [r["event"] for r in records])
        self.assertIn("no deletes here", files["records.jsonl"].decode())
        # A record taken out of the middle: named by its sequence number.
        lines = files["records.jsonl"].splitlines(keepends=True)
        middle = json.loads(lines[len(lines) // 2])["seq"]
        cut = dict(files, **{"records.jsonl": b"".join(lines[: len(lines) // 2] + lines[len(lines) // 2 + 1:])})
        code, output = yield self.verify(rewrite(bundle, self.base / "cut.tar", cut))
        self.assertEqual(code, 1, output)
        self.assertIn(f"#{middle}".encode(), output)
        yield self.assertTamperingNamed(bundle)
        # Hostile bundles get a verdict, never a traceback, and nothing they hold reaches the terminal raw.
        fake_ok = f"\r\x1b[2K{bundle}: OK: session {session}\n\x1b[8m"
        for hostile in (
            dict(files, **{fake_ok: b"x"}),
            dict(files, **{"records.jsonl": files["records.jsonl"] + b'{"seq":"x"}\n[[[[\n' + b"[" * 100000 + b"\n"}),
            dict(files, **{"proofs.json": b'{"records": [{"seq": [1], "proof": 5}], "consistency": []}'}),
            dict(files, **{"manifest.note": files["manifest.note"] + b"\u2014 other AAAA\n".decode("unicode_escape").encode()}),
        ):
            code, output = yield self.verify(rewrite(bundle, Path(self.mktemp()).resolve(), hostile))
            self.assertEqual(code, 1, output)
            self.assertNotIn(b"Traceback", output)
            self.assertNotIn(b"\x1b", output)
            self.assertIn(b"FAILED", output)
        # Reproducible: the same session gives the same bytes.
        again = self.base / "again.tar"
        code, output = yield run([*HOOPGW, "--config", admin, "sessions", "export", session, "--out", str(again)],
                                 env=child_env())
        self.assertEqual(code, 0, output)
        self.assertEqual(again.read_bytes(), bundle.read_bytes())


class TerminalBundleTests(_Bundles, SSHGatewayCase):
    @inlineCallbacks
    def test_recording_in_the_bundle(self):
        code, output = yield self.ssh("-tt", "echo recorded-line")
        self.assertEqual(code, 0, output)
        yield self.watch.wait("session.end")
        [end] = self.records("session.end")
        yield self.gateway.audit.checkpoint()
        bundle = self.base / "bundle.tar"
        admin = admin_config(self.base, self.base / "data")
        code, output = yield run(
            [*HOOPGW, "--config", admin, "sessions", "export", end["session"], "--out", str(bundle)], env=child_env()
        )
        self.assertEqual(code, 0, output)
        self.assertIn(b"1 recording(s)", output)
        name = f"recordings/{os.path.basename(end['end']['recording'])}"
        self.assertIn(b"recorded-line", members(bundle)[name])
        code, output = yield self.verify(bundle)
        self.assertEqual(code, 0, output)
        yield self.assertTamperingNamed(bundle)
