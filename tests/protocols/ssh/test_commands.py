"""
The exec command reader (L{hoopgw.protocols.ssh.commands}): what bash reads
differently from a plain tokenizer (C{#} and C{<<} that are not comments or
here-documents), wrappers' options as getopt_long reads them, what makes a
line unreadable (aliases, C{hash -p}, C{PATH}, arithmetic on variables), and
the bounds on its work.  The adversarial corpus
(C{tests/adversarial/ssh_commands.py}) runs the same spellings through the
front end.
"""

from __future__ import annotations

import time
from typing import Any

from twisted.conch.ssh.common import NS
from twisted.internet.defer import Deferred
from twisted.trial.unittest import SynchronousTestCase

from hoopgw.model import Source
from hoopgw.protocols.ssh import commands
from hoopgw.protocols.ssh.channels import SessionChannel, TargetChannel
from hoopgw.protocols.ssh.commands import MAX_COMMAND_LENGTH, parse_command, policy_lines
from hoopgw.testing import MemoryAuditLog, StaticPolicy, memory_session_service
from tests.protocols.ssh.test_channels import ALICE, WEB1, FakeConnection, Host

X = "/srv/victim"
RM_RF = ("rm -rf *", "rm -fr *", "rm *-f -r", "rm *-f -r *", "rm *-R -f", "rm *-R -f *")


def denied(command: str) -> bool:
    """Whether the shipped no-rm-rf patterns match the line as the front end hands it to policy."""
    import fnmatch

    lines = policy_lines(parse_command(command), [RM_RF])
    return lines is None or any(fnmatch.fnmatchcase(line, p) for line in lines for p in RM_RF)


def read(command: str) -> tuple[str, ...]:
    parsed = parse_command(command)
    return parsed.lines


class CommentTests(SynchronousTestCase):
    """Class 1: a C{#} starts a comment only where bash takes it for one."""

    def test_regexAndExtglob(self) -> None:
        """In a [[ =~ ]] group and an extended glob, "#" (and blanks, "]]") are part of the word."""
        for command in ["[[ x =~ (#) ]]; rm -rf X", "shopt -s extglob\nls @(#); rm -rf X",
                        "[[ x =~ ( ]] #) ]]; rm -rf X", "[[ x == @(#) ]]; rm -rf X", "ls !(#); rm -rf X"]:
            self.assertIn("rm -rf X", read(command), command)

    def test_stillComments(self) -> None:
        """Where bash drops a comment, so does the reader; "#" inside a word or ${x#y} is no comment."""
        self.assertEqual(read("echo hi # rm -rf X"), ("echo hi",))
        self.assertEqual(read("[[ x == y ]] # rm -rf X")[-1], "[[ x == y ]]")
        self.assertIn("rm -rf X", read("echo ${x#y}; rm -rf X"))
        self.assertIn("rm -rf X", read("echo $#; rm -rf X"))
        self.assertIn("rm -rf X", read("(( x = 16#ff )); rm -rf X"))


class ArithmeticHereDocumentTests(SynchronousTestCase):
    """Class 2: "<<" in arithmetic is a shift, not a here-document."""

    def test_shiftsAreNotHereDocuments(self) -> None:
        for command in ["((x<<E))\nrm -rf X\nE", "echo $[1<<E]\nrm -rf X\nE]",
                        "for ((i=0;i<<E;i++)); do :; done\nrm -rf X\nE", "time ((x<<E))\nrm -rf X\nE",
                        "[[ x =~ (<<E) ]]\nrm -rf X\nE", "echo $( ((x<<E))\nrm -rf X\nE\n)"]:
            self.assertIn("rm -rf X", read(command), command)

    def test_nestedSubshellsRefused(self) -> None:
        """A "((" bash would read as nested subshells is refused: "( (" is the way to write them."""
        self.assertIsNotNone(parse_command("((rm -rf X) )").error)
        self.assertIsNotNone(parse_command("echo $((rm -rf X) )").error)
        self.assertIn("rm -rf X", read("( (rm -rf X) )"))

    def test_quotedTextInArithmetic(self) -> None:
        """Bash expands $(...) inside single quotes in arithmetic: unreadable."""
        self.assertIsNotNone(parse_command("echo $((1<<'E'\n$(rm -rf X)\nE))").unreadable)
        self.assertIn("rm -rf X", read("echo $((1<<'E'\n$(rm -rf X)\nE))"))


class ContextTests(SynchronousTestCase):
    """
    Found by running random lines through bash 5.2 and the reader: line
    continuations, array subscripts and array assignments, which bash
    reads by context.
    """

    def test_lineContinuations(self) -> None:
        """
        Bash removes a backslash-newline before it reads the line (outside
        single quotes, quoted here-documents and comments): where that
        changes the reading, the line is refused; elsewhere it is read.
        """
        for command in ["echo << Ea\\\n]\n: $(rm -rf X)\nEa]", "cat <<\\\n< x\nrm -rf X", "true &\\\n& rm -rf X",
                        "$\\\n'\\x72m' -rf X", "x=y; echo ${\\\n!x}", "cat <<\\\nE\n$(rm -rf X)\nE"]:
            self.assertTrue(denied(command), command)
        self.assertTrue(denied("ls # c \\\nrm -rf X"))  # bash does not continue a comment: refused
        for command in ["ls \\\n-l", "ls -l \\\n| grep x", 'echo "a \\\nb"', "r\\\nm -f x"]:
            self.assertIsNone(parse_command(command).unreadable, command)

    def test_subscripts(self) -> None:
        """NAME[...] is one word to its "]" where an assignment may start: one with blanks or operators is refused."""
        for command in ["x[a=(#}=1 `rm -rf X`]\nx=", "x[ <<E]=1\nrm -rf X\nE", "echo x[a; rm -rf X; ]"]:
            self.assertTrue(denied(command), command)
        self.assertIsNone(parse_command("a[1]=5; echo ${a[1]}").unreadable)
        self.assertIsNone(parse_command("ls /tmp/a[0-9] x[abc").unreadable)

    def test_arrayAssignments(self) -> None:
        """
        A syntax error in NAME=(...) makes bash drop the rest of the line and
        go on with the next: anything but words in it is refused.
        """
        for command in ["a=(a=( =~ \nrm -rf X\n)),exec ", "a=(@(\nrm -rf X\n))", "a=(x (\nrm -rf X\n)",
                        "a=( x>y\nrm -rf X\n)"]:
            self.assertIsNotNone(parse_command(command).error, command)
        parsed = parse_command("a=(\n# (\nrm -rf X\n)")  # words, not commands, as bash reads them
        self.assertEqual((parsed.lines, parsed.unreadable), (("a=(rm -rf X)",), None))

    def test_expandedTwice(self) -> None:
        """
        Bash expands the target of ">&" again when it is not a descriptor, and
        declare re-reads a value expanding to "(...)" as an array assignment.
        """
        for command in ["true >&\"\\$(rm -rf X)\"", "x=y; true >& \"$x\"", "true 1>&$'`x`'",
                        "declare -a \"a=($v)\"", "a=(); declare a=$v"]:
            self.assertIsNotNone(parse_command(command).unreadable, command)
        for command in ["ls >& /dev/null", "ls 2>&1", "ls >&-", "declare -a a=($(ls))", "declare x=a$HOME"]:
            self.assertIsNone(parse_command(command).unreadable, command)

    def test_inheritedInput(self) -> None:
        """A shell in a script run by a command whose input the line feeds reads that input."""
        for command in ["bash -c bash <<E\nrm -rf X\nE", "echo x | sh -c 'eval sh'", "bash -c <<\\\nsudo bash -c x\nrm"]:
            self.assertIn("standard input", parse_command(command).unreadable, command)
        self.assertIsNone(parse_command("bash -c bash").unreadable)

    def test_bash53CommandSubstitution(self) -> None:
        """${ cmd; } runs cmd in bash 5.3: refused."""
        self.assertIsNotNone(parse_command("echo ${ rm -rf X; }").error)
        self.assertIsNotNone(parse_command("echo ${| rm -rf X; }").error)


class OptionTests(SynchronousTestCase):
    """Classes 3 and 4: wrappers' options read as getopt_long reads them."""

    def test_abbreviations(self) -> None:
        """An unambiguous prefix of a long option is that option, with its argument."""
        for command in ["nice --adj 5 rm -rf X", "env --uns HOME rm -rf X", "env --ch / rm -rf X",
                        "timeout --sig KILL 5 rm -rf X", "timeout --kill 1 5 rm -rf X", "stdbuf --out L rm -rf X",
                        "unshare --setu 0 rm -rf X", "setpriv --reu 0 rm -rf X", "flock --time 5 /tmp/l rm -rf X",
                        "time --outp /tmp/o rm -rf X", "sudo --use root rm -rf X", "pkexec --u root rm -rf X",
                        "systemd-run --uni x rm -rf X", "nice --a=5 rm -rf X", "timeout --s=KILL 5 rm -rf X"]:
            parsed = parse_command(command)
            self.assertIn("rm -rf X", parsed.lines, command)
            self.assertIsNone(parsed.unreadable, command)
        self.assertIn("rm -rf X", read("su --comm 'rm -rf X'"))
        self.assertIn("rm -rf X", read("script -q --comm 'rm -rf X' /dev/null"))
        parsed = parse_command("echo X | xargs --max-a 1 rm -rf")
        self.assertIn("rm -rf", parsed.lines)
        self.assertEqual(parsed.unknown, ("rm",))

    def test_ambiguousOrUnknown(self) -> None:
        """An ambiguous abbreviation, an unknown option or an argument to a flag: unreadable."""
        for command in ["env --ig rm -rf X", "setpriv --in 0 rm -rf X", "nice -q rm -rf X", "timeout -x 5 rm -rf X",
                        "env --null=1 rm -rf X", "nice -$o rm -rf X", "timeout --$o 5 rm -rf X"]:
            self.assertIsNotNone(parse_command(command).unreadable, command)

    def test_argumentKinds(self) -> None:
        """Required arguments (attached or next), optional ones (attached only), flags."""
        self.assertIn("rm -rf X", read("nsenter -m/proc/1/ns/mnt rm -rf X"))
        self.assertIn("rm -rf X", read("nsenter -t1 -m rm -rf X"))
        self.assertIn("rm -rf X", read("prlimit -n10 rm -rf X"))
        self.assertIn("rm -rf X", read("unshare -R/ rm -rf X"))
        self.assertIn("rm -rf X", read("nice -5 rm -rf X"))
        self.assertIn("rm -rf X", read("nice --5 rm -rf X"))
        # --nofile takes its value only with "=": "10" is the program, as prlimit reads it.
        self.assertEqual(parse_command("prlimit --nofile 10 rm -rf X").finals, (("10", "rm", "-rf", "X"),))
        # -m's optional argument is the rest of the cluster: "1" is the program.
        self.assertEqual(parse_command("nsenter -mt 1 rm -rf X").finals, (("1", "rm", "-rf", "X"),))

    def test_suShellArguments(self) -> None:
        """su USER ARGS... hands ARGS to the user's shell."""
        self.assertIn("rm -rf X", read("su root -- -c 'rm -rf X'"))

    def test_expandedOptionLetters(self) -> None:
        """A word starting with "-" and holding an expansion gives the program unknown options."""
        self.assertEqual(parse_command('rm -r"$g" X').unknown, ("rm",))
        self.assertEqual(parse_command('rm -"${o[@]}"').unknown, ("rm",))
        self.assertEqual(parse_command('rm "-r${g}" X').unknown, ("rm",))
        self.assertEqual(parse_command("rm -rf $$").unknown, ())


class ChangedMeaningTests(SynchronousTestCase):
    """Class 5: what makes a later command not what it reads."""

    def test_unreadable(self) -> None:
        for command in ["shopt -s expand_aliases\nalias r=''\nr rm -rf X", "alias r=nice", "hash -p /bin/rm ls",
                        "BASH_CMDS[ls]=/bin/rm; ls -rf X", "BASH_ALIASES[r]=rm", "enable -f x.so rm",
                        "PATH=/tmp/p:$PATH zz -rf X", "export PATH=/tmp/p", "env PATH=/tmp/p zz",
                        "BASH_ENV=<(echo rm -rf X) bash -c :", "read PS4 <<< x", "for PATH in /x; do :; done",
                        "PS4=$'\\x24(x)'; set -x", "env 'BASH_FUNC_ls%%=() { x; }' bash -c ls",
                        "command_not_found_handle() { :; }", "declare -n r=PATH", "fc -s rm",
                        "x=y; echo ${x@P}", "compgen -W '$(x)' y", "y=x; echo ${!y}", "${PATH:=/tmp/p}"]:
            self.assertIsNotNone(parse_command(command).unreadable, command)

    def test_codeRunBuiltins(self) -> None:
        """jobs -x runs its command; mapfile -C and compgen -C their callback (with arguments added)."""
        self.assertIn("rm -rf X", read("jobs -x rm -rf X"))
        parsed = parse_command("printf 'a\\n' | mapfile -C 'rm -rf X' -c 1")
        self.assertIn("rm -rf X", parsed.lines)
        self.assertEqual(parsed.unknown, ("rm",))
        self.assertIn("rm -rf X", read("compgen -C 'rm -rf X' x"))

    def test_ordinary(self) -> None:
        for command in ["alias", "alias ll", "hash -r", "export LANG=C; ls", "echo $PATH", "unset x",
                        "readonly x=1", "local y"]:
            self.assertIsNone(parse_command(command).unreadable, command)


class ArithmeticTests(SynchronousTestCase):
    """Class 6: bash evaluates what a variable holds when arithmetic reads it."""

    def test_injection(self) -> None:
        for command in ['x="a[\\$(rm -rf X)]"; echo $((x))', "x='a[$''(rm -rf X)]'; echo $((x))",
                        "x=$'a[\\x24(rm -rf X)]'; echo $((x))", 'x="a[\\`rm -rf X\\`]"; [[ x -eq 1 ]]',
                        "echo $((LC_X))", "let y=x", "echo ${a[x]}", "echo ${a:x}", "a[x]=1", "(( x ))",
                        "echo $[x]", "[[ $x -lt 1 ]]", "read x; echo $((x))", "x=1; read x; echo $((x))",
                        "x=1; printf -v x y; echo $((x))", "echo $(( $(printf x) ))", "echo $(($1))",
                        "echo $(($_))", "REPLY=1; read; echo $((REPLY))", "declare -i y", "test -v 'a[$(x)]'",
                        "wait -p 'a[$(x)]'", "x=1; : ${x:=y}; echo $((x))", "x=1; eval x=y; echo $((x))",
                        "x=1; coproc x { :; }; echo $((x))", 'x=$(echo 1); echo $((x))', "a=([x]=1)",
                        "OPTIND=$x", "read OPTIND", "printf -v RANDOM %s x", ": ${OPTIND:=x}", "SRANDOM=a[x]"]:
            self.assertIsNotNone(parse_command(command).unreadable, command)

    def test_numbers(self) -> None:
        """Variables the line sets to plain numbers (or in arithmetic) only: read."""
        for command in ["echo $((1+2))", "x=5; echo $((x*2))", "for ((i=0;i<3;i++)); do echo $i; done",
                        "i=0; while [ $i -lt 3 ]; do i=$((i+1)); done", "[[ $# -gt 0 ]]", "echo $((RANDOM % 6))",
                        "a[0]=1; echo $((a[0]+1))", "echo ${HOME:0:5}", "echo $(( 16#ff + 0x10 ))", "let i=i+1",
                        "arr=(a b c); echo ${arr[1]}"]:
            self.assertIsNone(parse_command(command).unreadable, command)


class BoundsTests(SynchronousTestCase):
    """Class 7: the reader's work is bounded; the front end refuses long lines unread."""

    SHAPES = {
        "${ nesting": lambda n: "${" * (n // 8) + "x" * (n - n // 4) + "}" * (n // 8),
        "$( nesting": lambda n: "$(" * (n // 4) + ")" * (n // 4),
        "quotes": lambda n: '"$(' * (n // 6) + ')"' * (n // 6),
        "commands": lambda n: "a;" * (n // 2),
        "distinct commands": lambda n: "".join(f"a{i};" for i in range(n // 8)),
        "pipes": lambda n: "a|" * (n // 2),
        "words": lambda n: "echo" + " x" * (n // 2),
        "arithmetic": lambda n: "x=1; echo $((" + "x+" * (n // 2 - 12) + "1))",
        "arithmetic names": lambda n: "echo $((" + "+".join(f"a{i}" for i in range(n // 8)) + "))",
        "extglob": lambda n: "@(" * (n // 4) + ")" * (n // 4),
        "heredoc lines": lambda n: "cat <<E\n" + "$x\n" * (n // 3) + "E\n",
        "backticks": lambda n: "echo `" + "x" * (n - 8) + "`",
        "nested scripts": lambda n: "sh -c '" + "eval " * 6 + "x;" * (n // 2 - 40) + "'",
        "rm options": lambda n: "rm" + " -f -" * (n // 5),
        "latent": lambda n: "echo" + " '$(x)'" * (n // 7),
        "braces": lambda n: "{a,b}" * (n // 5),
        "prefixes": lambda n: "nice " * (n // 5) + "rm -rf x",
    }

    def worst(self, size: int) -> tuple[float, str]:
        worst = (0.0, "")
        for name, shape in self.SHAPES.items():
            text = shape(size)
            # This thread's CPU time: a loaded machine stretches wall time
            # (CI saw 9x), not the work done.
            start = time.thread_time()
            policy_lines(parse_command(text), [RM_RF])
            worst = max(worst, (time.thread_time() - start, name))
        return worst

    def test_atTheCap(self) -> None:
        """Every shape at the length the front end reads: well under a second (about 60 ms here)."""
        seconds, name = self.worst(MAX_COMMAND_LENGTH)
        self.assertLess(seconds, 0.5, name)

    def test_oneMebibyte(self) -> None:
        """
        A 1 MiB line: the reader does not read it at all; and read anyway
        (the cap lifted), it still takes well under a second (the brief's
        C{"${" * 1200 ...} took 73 s before).
        """
        line = "${" * 1200 + "x" * ((1 << 20) - 3600) + "}" * 1200
        start = time.thread_time()
        parsed = parse_command(line)
        self.assertLess(time.thread_time() - start, 0.05)
        self.assertIn("longer than", parsed.unreadable)
        self.assertTrue(denied(line))
        self.patch(commands, "MAX_COMMAND_LENGTH", 1 << 21)
        self.assertIsNotNone(parse_command(line).unreadable)
        seconds, name = self.worst(1 << 20)
        self.assertLess(seconds, 1.0, name)

    def test_manyTokensUnreadable(self) -> None:
        """More words, operators and expansions than the reader reads: unreadable, and refused."""
        parsed = parse_command("a;" * 10000 + "rm -rf X")
        self.assertIn("more than", parsed.unreadable)
        self.assertTrue(denied("a;" * 10000))


class LengthCapTests(SynchronousTestCase):
    """The front end refuses an exec line longer than MAX_COMMAND_LENGTH bytes before reading it."""

    def setUp(self) -> None:
        self.audit = MemoryAuditLog()
        self.policy = StaticPolicy()
        sessions = memory_session_service(connections=(WEB1,), audit=self.audit, policy=self.policy)
        session = self.successResultOf(sessions.open(ALICE, "web1", kind="ssh", source=Source("ssh", "127.0.0.1:4000")))
        self.target_conn = FakeConnection()
        target = TargetChannel(b"session", conn=self.target_conn, remoteWindow=1 << 20, remoteMaxPacket=1 << 15)
        self.channel = SessionChannel(Host(session=session, target=self.target_conn), target, conn=FakeConnection(),
                                      remoteWindow=1 << 20, remoteMaxPacket=1 << 15)
        self.channel.want_reply = True

    def request(self, command: bytes) -> Any:
        result = self.channel.requestReceived(b"exec", NS(command))
        return self.successResultOf(result) if isinstance(result, Deferred) and result.called else result

    def test_longLineRefused(self) -> None:
        """Even with a policy allowing everything: refused, never sent, audited as blocked with its start."""
        command = b"echo " + b"x" * MAX_COMMAND_LENGTH
        self.assertFalse(self.request(command))
        self.assertEqual(self.target_conn.sent, [])
        [start] = [r for r in self.audit.of("action.start") if r["action"]["kind"] == "ssh.exec"]
        self.assertTrue(start["action"]["input"].startswith("echo xxx"))
        self.assertLess(len(start["action"]["input"]), 2048)
        [end] = self.audit.of("action.end")
        self.assertEqual(end["outcome"]["status"], "blocked")
        self.assertIn("longer than", end["outcome"]["error"])

    def test_lineAtTheCapRead(self) -> None:
        command = b"echo " + b"x" * (MAX_COMMAND_LENGTH - 5)
        self.request(command)
        self.assertEqual(self.target_conn.sent[0], ("request", b"exec", NS(command)))
