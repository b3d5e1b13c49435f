"""
Fuzz the reader of exec command lines (hoopgw.protocols.ssh.commands).

Input: the bytes of an exec request's command, decoded as the SSH front
end decodes them (UTF-8, undecodable bytes replaced).

Checked: L{parse_command} never raises -- a line it cannot read is a
L{ParsedCommand} with C{error} (not valid shell syntax) or C{unreadable}
set, its documented failure mode -- and its result is well formed (the
whole line first; an error is also unreadable, with the raw line as the
only line); L{policy_lines} with the shipped policy's patterns never
raises either; and it fails closed: with C{rm -rf /victim;} in front of
the line, either the line is unreadable or a line matches C{rm -rf *}.
"""

from __future__ import annotations

import fnmatch
import sys
from pathlib import Path

if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from tests.fuzz._fuzzing import check, fuzz, instrumented

with instrumented(__name__):
    from hoopgw.protocols.ssh.commands import ParsedCommand, command_lines, parse_command, policy_lines

# The ssh.commands patterns of policies/default.toml, and a few with sets.
PATTERNS = (
    "rm -rf *", "rm -fr *", "sudo rm -rf *", "sudo rm -fr *",
    "rm *-f -r", "rm *-f -r *", "rm *-f -* -r", "rm *-f -* -r *",
    "rm *-R -f", "rm *-R -f *", "rm *-R -* -f", "rm *-R -* -f *",
    "shutdown*", "reboot*", "halt*", "poweroff*",
    "systemctl *poweroff*", "systemctl *reboot*", "systemctl *halt*", "systemctl *kexec*",
    "mkfs*", "dd * of=/dev/[sh]d*", "[!a-z]*",
)
VICTIM = "rm -rf /victim; "


def _well_formed(command: str, parsed: ParsedCommand) -> None:
    check(isinstance(parsed, ParsedCommand), "parse_command() did not return a ParsedCommand")
    check(parsed.lines and all(isinstance(line, str) for line in parsed.lines), "no lines, or lines not text")
    if parsed.error is not None:
        check(parsed.unreadable is not None, "a line with a syntax error is not unreadable")
        check(parsed.lines == (command,), "a line with a syntax error has other lines than itself")
    check(all(isinstance(word, str) for final in parsed.finals for word in final), "finals are not words")
    check(parsed.simple is None or parsed.unreadable is None, "a simple command that is unreadable")


def one_input(data: bytes) -> None:
    command = data.decode("utf-8", "replace")
    parsed = parse_command(command)
    _well_formed(command, parsed)
    lines = policy_lines(parsed, PATTERNS)
    check(lines is None or set(parsed.lines) <= set(lines), "policy_lines() dropped a line")
    check(command_lines(command) == (parsed.lines, parsed.error), "command_lines() differs from parse_command()")

    guarded = parse_command(VICTIM + command)
    _well_formed(VICTIM + command, guarded)
    lines = policy_lines(guarded, ("rm -rf *",))
    check(
        lines is None or guarded.unreadable is not None or any(fnmatch.fnmatchcase(line, "rm -rf *") for line in lines[1:]),
        f"{VICTIM!r} in front of the line is not seen: {guarded!r}",
    )


if __name__ == "__main__":
    fuzz(one_input)
