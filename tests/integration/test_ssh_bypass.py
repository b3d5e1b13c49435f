"""
Issue 11, items 7 to 9 (the SSH part of "Close the bypasses"), against a
real OpenSSH sshd: each attack's effect is checked on the target's files,
not only in the gateway's records.

  7. command lines the gateway used to misread (comments, here-strings,
     wrappers, expansions) never run past a C{ssh.commands} deny rule;
  8. an SFTP server started as a command, whatever it is called, gets the
     per-operation SFTP filter (or is refused);
  9. a symlink whose relative target leads into a protected folder from
     the link's own directory is refused.
"""

from __future__ import annotations

import os
import shutil
import struct

from twisted.internet import reactor
from twisted.internet.defer import inlineCallbacks

from hoopgw.protocols.ssh.sftp import Close, FileAttributes, Fsetstat, Init, Open, OpenFlags, Read, encode
from tests.integration._process import run, spawn
from tests.integration._ssh import SFTP, SFTP_SERVER, SSHGatewayCase, require

ALLOW_ALL = """
[[rule]]
name = "everything"
effect = "allow"
"""

# The variants run for real: each removed the victim through the gateway
# before the fix (tests/adversarial/ssh_commands.py has many more, read
# by the front end without running them).
RUN_FOR_REAL = [
    "sh -c 'rm -rf {X}' #'",
    "/bin/rm -fr {X} #'",
    "rm -fr {X}",
    "rm -r -f {X}",
    "rm --recursive --force {X}",
    "rm {X} -rf",
    "ls #'\nrm -rf {X}",
    "echo $(case a in a) rm -rf {X};; esac)",
    "bash --rcfile /dev/null -c 'rm -rf {X}'",
    "bash -c 'rm \"$@\"' _ -rf {X}",
    "bash <<< 'rm -rf {X}'",
    "cat <<EOF | sh\nrm -rf {X}\nEOF",
    "{ bash; } <<< 'rm -rf {X}'",
    "bash < <(echo rm -rf {X})",
    "source <(echo rm -rf {X})",
    "nohup nice -n5 timeout 9 env -i /bin/rm -fr {X}",
    "chroot / rm -rf {X}",
    "flock {LOCK} rm -rf {X}",
    "flock {LOCK} -c 'rm -rf {X}'",
    "su root -c 'rm -rf {X}'",
    "runuser -u root -- rm -rf {X}",
    "setpriv --reuid=0 rm -rf {X}",
    "prlimit --nofile=100 rm -rf {X}",
    "taskset -c 0 rm -rf {X}",
    "coproc rm -rf {X}",
    "function f { rm -rf {X}; }; f",
    "echo {X} | xargs rm -rf",
    "find {X} -maxdepth 0 -exec /bin/rm -fr '{}' +",
    "{rm,-rf,{X}}",
    "a=rm; $a -rf {X}",
    "rm${IFS}-rf${IFS}{X}",
    "/bin/r? -rf {X}",
    "o=-rf; rm $o {X}",
    "eval \"$(echo rm -rf {X})\"",
    "echo 'rm -rf {X}' | sh",
    "x='a[$(rm -rf {X})]'; echo $((x))",
    "trap 'rm -rf {X}' EXIT",
    "rm -rf {X}\necho \"oops",
    # Found in review: "#" and "<<" that bash does not read as a comment or a
    # here-document, abbreviated and attached options, aliases and hash -p,
    # arithmetic evaluating a variable's value, quoted option letters.
    "[[ x =~ (#) ]]; rm -rf {X}",
    "shopt -s extglob\nls @(#); rm -rf {X}",
    "((x<<E))\nrm -rf {X}\nE",
    "echo $[1<<E]\nrm -rf {X}\nE]",
    "nice --adj 5 rm -rf {X}",
    "env --uns HOME rm -rf {X}",
    "timeout --kill 1 5 rm -rf {X}",
    "flock --time 5 {LOCK} rm -rf {X}",
    "script -q --comm 'rm -rf {X}' /dev/null",
    "shopt -s expand_aliases\nalias r=''\nr rm -rf {X}",
    "hash -p /bin/rm ls; ls -rf {X}",
    "x=$'a[\\x24(rm -rf {X})]'; echo $((x))",
    "x=\"a[\\`rm -rf {X}\\`]\"; [[ x -eq 1 ]]",
    "g=f; rm -r\"$g\" {X}",
    # Found in an attack round: a program that starts a shell when given no
    # command (su, chroot, unshare, script, ...) reads its script from the
    # standard input the line feeds it, and so does a shell in >(...).
    "su root <<< 'rm -rf {X}'",
    "chroot / <<< 'rm -rf {X}'",
    "unshare <<< 'rm -rf {X}'",
    "echo 'rm -rf {X}' | script -q /dev/null",
    "echo 'rm -rf {X}' > >(bash)",
    "exec > >(sh); echo rm -rf {X}",
    "newgrp root <<< 'rm -rf {X}'",
    "bash --rcfile <(echo 'rm -rf {X}') -i < /dev/null",
    "bash --init-file <(echo 'rm -rf {X}') -ic true",
]


class CommandBypassTests(SSHGatewayCase):
    """Item 7, with the issue's rule alone: C{ssh.commands = ["rm -rf *"]}."""

    timeout = 240
    policy = ALLOW_ALL + """
[[rule]]
name = "no-rm-rf"
effect = "deny"
ssh.commands = ["rm -rf *"]
"""

    @inlineCallbacks
    def test_removal_spellings_never_run(self):
        """
        Every spelling is refused with the rule's name and exit status 1,
        and the victim folder is still there on the target afterwards; a
        plain C{ls} and C{cat} of it still work.
        """
        victim = self.base / "victim"
        lock = self.base / "lock"
        ran = []
        for template in RUN_FOR_REAL:
            victim.mkdir(exist_ok=True)
            (victim / "file").write_text("keep me")
            command = template.replace("{X}", str(victim)).replace("{LOCK}", str(lock))
            code, output = yield self.ssh(command)
            if not (victim / "file").exists() or code != 1 or b"no-rm-rf" not in output:
                ran.append((command, code, output[-200:], (victim / "file").exists()))
        self.assertEqual(ran, [])
        code, output = yield self.ssh(f"ls -la {victim}")
        self.assertEqual(code, 0, output)
        self.assertIn(b"file", output)
        code, output = yield self.ssh(f"cat {victim}/file")
        self.assertEqual((code, output.splitlines()[-1]), (0, b"keep me"), output)


def _sftp_requests(path: str) -> bytes:
    """What an SFTP client sends to read C{path} (OpenSSH's first handle is 4 zero bytes)."""
    return (encode(Init()) + encode(Open(1, path, OpenFlags.READ))
            + encode(Read(2, struct.pack(">I", 0), 0, 4096)))


class SFTPSpokenOnExecTests(SSHGatewayCase):
    """
    Item 8: a protected folder no SFTP operation may touch, and SFTP
    servers started as commands under other names.
    """

    def policy_text(self):
        return ALLOW_ALL + f"""
[[rule]]
name = "protected"
effect = "deny"
actions = ["ssh.sftp.*"]
ssh.sftp.paths = ["{self.base}/protected/*", "{self.base}/protected"]
"""

    def setUp(self):
        d = super().setUp()

        def files(_):
            (self.base / "protected").mkdir()
            (self.base / "protected" / "secret").write_text("TOPSECRET")
            (self.base / "public").mkdir()
            (self.base / "public" / "file").write_text("public data")
            (self.base / "bin").mkdir()
            self.renamed = self.base / "bin" / "not-an-sftp-server"
            shutil.copy(SFTP_SERVER, self.renamed)

        return d.addCallback(files)

    def sftp_via(self, server: str, *commands: str):
        """sftp -s SERVER: a path makes the client exec it as a command, not ask for the subsystem."""
        batch = self.base / f"batch-{len(list(self.base.glob('batch-*')))}"
        batch.write_text("".join(f"{c}\n" for c in commands))
        require(SFTP)
        return run([SFTP, *self.client_options(), "-s", server, "-b", str(batch), "web1@127.0.0.1"],
                   env=self.env())

    @inlineCallbacks
    def test_exec_speaking_sftp_filtered(self):
        """
        C{sftp -s '/usr/lib/openssh/sftp-serve?'} and a renamed copy of
        sftp-server: the public file is read, the protected one is refused
        per operation (nothing of it reaches the client's disk), and the
        records are those of the sftp subsystem.
        """
        for server in ["/usr/lib/openssh/sftp-serve?", str(self.renamed)]:
            got, stolen = self.base / "got", self.base / "stolen"
            code, output = yield self.sftp_via(
                server, f"get {self.base}/public/file {got}", f"-get {self.base}/protected/secret {stolen}")
            self.assertEqual(got.read_text(), "public data", output)
            self.assertFalse(stolen.exists(), (server, output))
            got.unlink()
        yield self.watch.wait("session.end", 2)
        opens = [(s, e) for s, e in self.actions("ssh.sftp.open")]
        self.assertEqual([e["outcome"]["status"] for _, e in opens], ["succeeded", "succeeded"])
        ends = {r["action"]["id"]: r for r in self.records("action.end")}
        blocked = [r for r in self.records("action.start") if r["action"]["kind"].startswith("ssh.sftp.")
                   and ends[r["action"]["id"]]["outcome"]["status"] == "blocked"]
        self.assertEqual({r["decision"]["rule"] for r in blocked}, {"protected"})
        self.assertEqual({r["session"] for r in blocked}, {r["session"] for r in self.records("session.end")})
        detected = [s["action"]["details"] for s, _ in self.actions("ssh.subsystem")]
        self.assertEqual([(d["detected"], d["command"]) for d in detected],
                         [("exec", "/usr/lib/openssh/sftp-serve?"), ("exec", str(self.renamed))])

    @inlineCallbacks
    def test_sftp_after_other_bytes_cut_off(self):
        """
        A wrapper that reads other bytes first and then starts an SFTP
        server: the gateway does not filter it, but the target's SFTP
        answer never reaches the client (the protected file's content is
        not in what it receives) and the channel is closed.
        """
        command = f"read -r line; exec {self.renamed}"  # bash reads a pipe byte by byte
        proc = spawn(self.ssh_argv(command), marker=None, env=self.env())
        proc.transport.write(b"hello\n" + _sftp_requests(f"{self.base}/protected/secret"))
        # As an SFTP client, stdin stays open (sftp-server exits at its EOF
        # without answering); if the gateway let it run, end it later.
        later = reactor.callLater(10, proc.transport.closeStdin)
        code = yield proc.ended
        if later.active():
            later.cancel()
        self.assertNotEqual(code, 0)
        self.assertNotIn(b"TOPSECRET", proc.output)
        self.assertIn(b"did not start as SFTP", proc.output)
        yield self.watch.wait("session.end")
        [(start, end)] = self.actions("ssh.subsystem")
        self.assertEqual(end["outcome"]["status"], "blocked")


class SFTPRefusedTests(SSHGatewayCase):
    """Item 8, refused: a policy without SFTP refuses it spoken on an exec channel too."""

    policy = ALLOW_ALL + """
[[rule]]
name = "no-sftp"
effect = "deny"
actions = ["ssh.subsystem"]
"""

    @inlineCallbacks
    def test_exec_speaking_sftp_refused(self):
        (self.base / "file").write_text("data")
        got = self.base / "got"
        batch = self.base / "batch"
        batch.write_text(f"get {self.base}/file {got}\n")
        require(SFTP)
        code, output = yield run([SFTP, *self.client_options(), "-s", "/usr/lib/openssh/sftp-serve?", "-b",
                                  str(batch), "web1@127.0.0.1"], env=self.env())
        self.assertNotEqual(code, 0, output)
        self.assertFalse(got.exists())
        yield self.watch.wait("session.end")
        [(start, end)] = self.actions("ssh.subsystem")
        self.assertEqual((start["decision"]["rule"], end["outcome"]["status"]), ("no-sftp", "blocked"))
        self.assertEqual(self.actions("ssh.sftp.open"), [])


class SymlinkTargetTests(SSHGatewayCase):
    """Item 9: a protected folder under the SFTP starting directory."""

    sftp_start = "home"

    def policy_text(self):
        secret = self.base / "home" / "secret"
        return ALLOW_ALL + f"""
[[rule]]
name = "protected"
effect = "deny"
actions = ["ssh.sftp.*"]
ssh.sftp.paths = ["{secret}/*", "{secret}"]
"""

    @inlineCallbacks
    def test_symlink_into_protected_refused(self):
        """
        C{symlink ../../secret/key pub/a/l} (OpenSSH's sftp sends the target
        as typed): from the link's folder it is the protected key, so it is
        refused; the link is not created on the target and the key is never
        read through it.
        """
        home = self.base / "home"
        (home / "secret").mkdir(parents=True)
        (home / "secret" / "key").write_text("TOPSECRET")
        (home / "pub" / "a").mkdir(parents=True)
        stolen = self.base / "stolen"
        code, output = yield self.sftp("-symlink ../../secret/key pub/a/l", f"-get pub/a/l {stolen}")
        self.assertFalse(os.path.lexists(home / "pub" / "a" / "l"), output)
        self.assertFalse(stolen.exists(), output)
        yield self.watch.wait("session.end")
        [(start, end)] = self.actions("ssh.sftp.symlink")
        self.assertEqual(start["action"]["attributes"]["ssh.sftp.paths"],
                         [str(home / "pub/a/l"), "../../secret/key", str(home / "secret/key")])
        self.assertEqual((start["decision"]["rule"], end["outcome"]["status"]), ("protected", "blocked"))

    @inlineCallbacks
    def test_symlink_elsewhere_allowed(self):
        """A relative link that stays out of the protected folder is made, and works."""
        home = self.base / "home"
        (home / "pub" / "a").mkdir(parents=True)
        (home / "pub" / "data").write_text("public")
        got = self.base / "got"
        code, output = yield self.sftp("symlink ../data pub/a/l", f"get pub/a/l {got}")
        self.assertEqual(code, 0, output)
        self.assertEqual(os.readlink(home / "pub" / "a" / "l"), "../data")
        self.assertEqual(got.read_text(), "public")


class HandleRequestTests(SSHGatewayCase):
    """
    A read-only folder (SFTP writes denied, reads allowed): a request on a
    file handle whose file the gateway does not know -- the OPEN's reply
    still on its way, or the handle being closed (sftp-server hands the
    number out again) -- could be on any file, so it is refused.
    """

    def policy_text(self):
        return ALLOW_ALL + f"""
[[rule]]
name = "read-only"
effect = "deny"
ssh.sftp.write = true
ssh.sftp.paths = ["{self.base}/ro/*", "{self.base}/ro"]
"""

    def setUp(self):
        d = super().setUp()

        def files(_):
            (self.base / "ro").mkdir()
            self.victim = self.base / "ro" / "file"
            self.victim.write_text("keep me")
            self.victim.chmod(0o600)
            (self.base / "rw").write_text("mine")

        return d.addCallback(files)

    @inlineCallbacks
    def sftp_raw(self, *bursts):
        """Send each burst of packets at once on the sftp subsystem, a second apart; fires when the client ends."""
        proc = spawn(self.ssh_argv("-s", "sftp"), marker=None, env=self.env())
        proc.transport.write(encode(Init()))
        for i, burst in enumerate(bursts):
            reactor.callLater(1 + i, proc.transport.write, b"".join(encode(p) for p in burst))
        reactor.callLater(2 + len(bursts), proc.transport.closeStdin)
        yield proc.ended

    @inlineCallbacks
    def test_fsetstat_on_a_handle_not_yet_answered(self):
        """
        OPEN of the read-only file for reading and, at once, FSETSTAT on
        OpenSSH's first handle (4 zero bytes, what that OPEN returns) making
        it world-writable: the file keeps its mode.
        """
        yield self.sftp_raw([Open(1, str(self.victim), OpenFlags.READ),
                             Fsetstat(2, struct.pack(">I", 0), FileAttributes(permissions=0o100666))])
        self.assertEqual(self.victim.stat().st_mode & 0o777, 0o600)

    @inlineCallbacks
    def test_fsetstat_on_a_handle_being_closed(self):
        """
        A writable file's handle, known to the gateway, is closed and,
        before the replies, the read-only file opened (sftp-server hands
        out the same handle again) and FSETSTAT sent on the handle: the
        file keeps its mode.
        """
        handle = struct.pack(">I", 0)
        yield self.sftp_raw(
            [Open(1, str(self.base / "rw"), OpenFlags.READ)],
            [Close(2, handle), Open(3, str(self.victim), OpenFlags.READ),
             Fsetstat(4, handle, FileAttributes(permissions=0o100666))],
        )
        self.assertEqual(self.victim.stat().st_mode & 0o777, 0o600)


class LegacySCPTests(SSHGatewayCase):
    """
    Legacy scp (C{-O}) writes into a read-only folder's parent: the names of
    what it creates travel in its stream, not on the command line.
    """

    def policy_text(self):
        return ALLOW_ALL + f"""
[[rule]]
name = "read-only"
effect = "deny"
ssh.sftp.write = true
ssh.sftp.paths = ["{self.base}/ro/*", "{self.base}/ro"]
"""

    @inlineCallbacks
    def test_recursive_upload_into_a_read_only_folder(self):
        """
        C{scp -O -r ro HOST:BASE} (the remote end runs C{scp -r -t BASE})
        would create C{BASE/ro/new}: refused, nothing is written; a plain
        legacy upload next to the folder still works.
        """
        (self.base / "ro").mkdir()
        local = self.base / "local" / "ro"
        local.mkdir(parents=True)
        (local / "new").write_text("planted")
        code, output = yield self.scp("-O", "-r", str(local), f"web1@127.0.0.1:{self.base}")
        self.assertFalse((self.base / "ro" / "new").exists(), output)
        self.assertNotEqual(code, 0, output)
        code, output = yield self.scp("-O", str(local / "new"), f"web1@127.0.0.1:{self.base}/plain")
        self.assertEqual(code, 0, output)
        self.assertEqual((self.base / "plain").read_text(), "planted")


class LegacySCPDownloadTests(SSHGatewayCase):
    """A folder no one may read (the rule without C{actions}, so that legacy scp is judged by it too)."""

    def policy_text(self):
        return ALLOW_ALL + f"""
[[rule]]
name = "protected"
effect = "deny"
ssh.sftp.paths = ["{self.base}/top/protected/*", "{self.base}/top/protected"]
"""

    @inlineCallbacks
    def test_recursive_download_of_a_protected_folders_parent(self):
        """
        C{scp -O -r HOST:BASE/top local} (C{scp -r -f BASE/top}) would copy
        the protected file: refused, nothing is copied.
        """
        (self.base / "top" / "protected").mkdir(parents=True)
        (self.base / "top" / "protected" / "secret").write_text("TOPSECRET")
        got = self.base / "got"
        code, output = yield self.scp("-O", "-r", f"web1@127.0.0.1:{self.base}/top", str(got))
        self.assertFalse((got / "protected" / "secret").exists(), output)
        self.assertNotEqual(code, 0, output)

    @inlineCallbacks
    def test_recursive_copies_no_rule_reaches(self):
        """Where no path rule may match below the folder, recursive legacy scp works both ways."""
        (self.base / "open" / "sub").mkdir(parents=True)
        (self.base / "open" / "sub" / "f").write_text("plain")
        got = self.base / "got"
        code, output = yield self.scp("-O", "-r", f"web1@127.0.0.1:{self.base}/open", str(got))
        self.assertEqual(code, 0, output)
        self.assertEqual((got / "sub" / "f").read_text(), "plain")
        code, output = yield self.scp("-O", "-r", str(got), f"web1@127.0.0.1:{self.base}/back")
        self.assertEqual(code, 0, output)
        self.assertEqual((self.base / "back" / "sub" / "f").read_text(), "plain")


class RenameAncestorTests(SSHGatewayCase):
    """A read-only folder two levels down: renaming a folder above it moves it out from under its rule."""

    def policy_text(self):
        return ALLOW_ALL + f"""
[[rule]]
name = "read-only"
effect = "deny"
ssh.sftp.write = true
ssh.sftp.paths = ["{self.base}/top/ro/*", "{self.base}/top/ro"]
"""

    @inlineCallbacks
    def test_rename_of_a_folder_above_a_read_only_one(self):
        """
        C{rename top moved; put new moved/ro/file; rename moved top} would
        overwrite the read-only file: the renames are refused, and it keeps
        its content; a rename beside the folder still works.
        """
        (self.base / "top" / "ro").mkdir(parents=True)
        victim = self.base / "top" / "ro" / "file"
        victim.write_text("keep me")
        (self.base / "new").write_text("planted")
        (self.base / "top" / "other").write_text("x")
        code, output = yield self.sftp(
            f"-rename {self.base}/top {self.base}/moved", f"-put {self.base}/new {self.base}/moved/ro/file",
            f"-rename {self.base}/moved {self.base}/top",
            f"rename {self.base}/top/other {self.base}/top/renamed")
        self.assertEqual(victim.read_text(), "keep me", output)
        self.assertFalse((self.base / "moved").exists(), output)
        self.assertTrue((self.base / "top" / "renamed").exists(), output)

    @inlineCallbacks
    def test_symlink_to_a_folder_above_a_read_only_one(self):
        """
        C{symlink top link; put new link/ro/file} would overwrite the
        read-only file through the new link: the link is refused.
        """
        (self.base / "top" / "ro").mkdir(parents=True)
        victim = self.base / "top" / "ro" / "file"
        victim.write_text("keep me")
        (self.base / "new").write_text("planted")
        code, output = yield self.sftp(
            f"-symlink {self.base}/top {self.base}/link", f"-put {self.base}/new {self.base}/link/ro/file")
        self.assertEqual(victim.read_text(), "keep me", output)
        self.assertFalse(os.path.lexists(self.base / "link"), output)
