"""
What an exec request's command line asks the target's shell to run, as
policy sees it (C{ssh.commands}, C{ssh.simple_command}).

The target runs the command with the login user's shell (C{$SHELL -c
COMMAND}), so the gateway reads it the way a POSIX shell would, as far as
that can be done without running it: operators (C{;}, C{&&}, C{||}, C{|},
C{&}, newlines, subshell parentheses) separate commands; redirections are
dropped; leading variable assignments, shell keywords (C{then}, C{do},
C{!}, ...) and prefix commands (C{env}, C{sudo}, C{command}, C{exec},
C{nohup}, C{time}, C{nice}, ...) are stripped; the scripts of C{sh -c},
C{bash -c}, C{su -c}, C{eval} and C{env -S} and the commands inside
C{$(...)}, backticks and C{<(...)} are read too.  Every stage is a line of
its own, so a rule written for any of them matches.

This is a guardrail, not a sandbox: a shell can build a command at run time
(C{a=rm; $a -rf /}, C{rm${IFS}-rf}, C{/???/rm}, C{python -c ...},
C{find -delete}, a script piped into C{sh}) and no reading of the line can
follow it.  Only an allow-list of commands (C{ssh.simple_command}) bounds
what runs.
"""

from __future__ import annotations

import posixpath
import re
import shlex
from typing import Iterator

from attrs import frozen

__all__ = ["ParsedCommand", "command_lines", "parse_command"]

# Operators that separate commands (C{(} and C{)}: subshells, C{case} patterns).
_SEPARATORS = frozenset({";", "&&", "||", "|", "&", "\n", "(", ")", ";;", ";&", ";;&", "|&"})
# Redirections, longest first: each is followed by its target word.
_REDIRECTS = ("&>>", "<<<", "<<-", "&>", ">>", "<<", "<&", ">&", "<>", ">|", "<", ">")
_OPERATORS = sorted(_SEPARATORS - {"\n"} | set(_REDIRECTS), key=len, reverse=True)
_ASSIGNMENT = re.compile(r"[A-Za-z_][A-Za-z0-9_]*(\[[^]]*\])?\+?=")
_KEYWORDS = frozenset({"!", "then", "do", "else", "elif", "if", "while", "until", "{", "}", "fi", "done", "esac"})
_SHELLS = frozenset({"sh", "bash", "dash", "zsh", "ksh", "mksh", "ash", "rbash"})
_MAX_DEPTH = 8


@frozen
class _Token:
    text: str  # the word with quotes removed, or the operator
    op: bool = False


@frozen
class ParsedCommand:
    """
    @ivar lines: the command lines policy sees (C{ssh.commands}), the whole
        line first.
    @ivar error: the parse error when the line is not valid shell syntax
        (the raw command is then the only line).
    @ivar simple: when the line is one plain command (no operators,
        redirections, substitutions, expansions, assignments, keywords or
        prefix commands), its words joined by one space; else C{None}.
    """

    lines: tuple[str, ...]
    error: str | None = None
    simple: str | None = None


class _Lexer:
    """A POSIX shell tokenizer: words (quotes removed), operators, substitutions."""

    def __init__(self, text: str) -> None:
        self.text = text
        self.pos = 0
        self.substitutions: list[str] = []
        self.expansions = False  # a $ or backtick outside single quotes

    def tokens(self) -> list[_Token]:
        out: list[_Token] = []
        text = self.text
        while True:
            while self.pos < len(text) and text[self.pos] in " \t\r":
                self.pos += 1
            if self.pos >= len(text):
                return out
            c = text[self.pos]
            if c == "\n":
                self.pos += 1
                out.append(_Token("\n", True))
                continue
            if c == "\\" and text.startswith("\\\n", self.pos):
                self.pos += 2
                continue
            if c in "<>" and text.startswith("(", self.pos + 1):
                # Process substitution <(cmd) / >(cmd): a word of its own.
                self.pos += 2
                self.substitutions.append(self._balanced())
                self.expansions = True
                out.append(_Token(f"{c}(...)"))
                continue
            op = next((o for o in _OPERATORS if text.startswith(o, self.pos)), None)
            if op is not None:
                self.pos += len(op)
                out.append(_Token(op, True))
                continue
            word = self._word()
            # "2>x", "{fd}>x": the number names the redirected descriptor.
            if word.isdigit() and self.pos < len(text) and text[self.pos] in "<>":
                continue
            out.append(_Token(word))

    def _word(self) -> str:
        text, parts = self.text, []
        while self.pos < len(text):
            c = text[self.pos]
            if c in " \t\r\n" or any(text.startswith(o, self.pos) for o in _OPERATORS):
                break
            self.pos += 1
            if c == "\\":
                if self.pos < len(text):
                    if text[self.pos] != "\n":
                        parts.append(text[self.pos])
                    self.pos += 1
            elif c == "'":
                end = text.find("'", self.pos)
                if end < 0:
                    raise ValueError("No closing quotation")
                parts.append(text[self.pos:end])
                self.pos = end + 1
            elif c == '"':
                parts.append(self._double())
            elif c == "$" or c == "`":
                parts.append(self._dollar(c))
            else:
                parts.append(c)
        return "".join(parts)

    def _double(self) -> str:
        text, parts = self.text, []
        while True:
            if self.pos >= len(text):
                raise ValueError("No closing quotation")
            c = text[self.pos]
            self.pos += 1
            if c == '"':
                return "".join(parts)
            if c == "\\" and self.pos < len(text) and text[self.pos] in '$`"\\\n':
                if text[self.pos] != "\n":
                    parts.append(text[self.pos])
                self.pos += 1
            elif c == "$" or c == "`":
                parts.append(self._dollar(c))
            else:
                parts.append(c)

    def _dollar(self, c: str) -> str:
        """After C{$} or a backtick: a substitution's text, kept as written."""
        text = self.text
        self.expansions = True
        if c == "`":
            parts = []
            while True:
                if self.pos >= len(text):
                    raise ValueError("No closing backquote")
                ch = text[self.pos]
                self.pos += 1
                if ch == "`":
                    break
                if ch == "\\" and self.pos < len(text) and text[self.pos] in "$`\\":
                    ch = text[self.pos]
                    self.pos += 1
                parts.append(ch)
            inner = "".join(parts)
            self.substitutions.append(inner)
            return f"`{inner}`"
        if text.startswith("(", self.pos):
            self.pos += 1
            inner = self._balanced()
            self.substitutions.append(inner)
            return f"$({inner})"
        if text.startswith("'", self.pos):
            # ANSI-C quoting: $'rm\x20-rf' is a quoted word with escapes.
            self.pos += 1
            parts = []
            while True:
                if self.pos >= len(text):
                    raise ValueError("No closing quotation")
                ch = text[self.pos]
                self.pos += 1
                if ch == "'":
                    break
                if ch == "\\" and self.pos < len(text):
                    ch += text[self.pos]
                    self.pos += 1
                parts.append(ch)
            try:
                return "".join(parts).encode("latin-1", "backslashreplace").decode("unicode_escape")
            except UnicodeDecodeError as e:
                raise ValueError(f"bad escape in $'...': {e}") from None
        if text.startswith('"', self.pos):
            self.pos += 1
            return self._double()  # $"...": a translated string
        if text.startswith("{", self.pos):
            end = text.find("}", self.pos)
            if end < 0:
                raise ValueError("No closing brace")
            inner = text[self.pos:end + 1]
            self.pos = end + 1
            if "$(" in inner or "`" in inner:
                self.substitutions.append(inner[1:-1])
            return "$" + inner
        return "$"

    def _balanced(self) -> str:
        """The text up to the parenthesis closing one just read."""
        text, start, depth = self.text, self.pos, 1
        while self.pos < len(text):
            c = text[self.pos]
            self.pos += 1
            if c == "\\":
                self.pos += 1
            elif c == "'":
                end = text.find("'", self.pos)
                if end < 0:
                    raise ValueError("No closing quotation")
                self.pos = end + 1
            elif c == '"':
                self._double()
            elif c == "(":
                depth += 1
            elif c == ")":
                depth -= 1
                if depth == 0:
                    return text[start:self.pos - 1]
        raise ValueError("No closing parenthesis")


def _commands(tokens: list[_Token]) -> Iterator[list[str]]:
    """Simple commands: words between separators, redirections dropped."""
    words: list[str] = []
    skip = False
    for token in tokens:
        if token.op and token.text in _SEPARATORS:
            if words:
                yield words
            words, skip = [], False
        elif token.op:
            skip = True  # a redirection: its target is not a word of the command
        elif skip:
            skip = False
        else:
            words.append(token.text)
    if words:
        yield words


def _options(
    words: list[str], start: int, with_arg: str = "", long_with_arg: frozenset[str] = frozenset()
) -> int:
    """The index of the first operand after options starting at C{start}."""
    i = start
    while i < len(words):
        w = words[i]
        if w == "--":
            return i + 1
        if not w.startswith("-") or w == "-":
            return i
        if w.startswith("--"):
            if "=" not in w and w[2:] in long_with_arg:
                i += 1
        else:
            for j, letter in enumerate(w[1:], 1):
                if letter in with_arg:
                    if j == len(w) - 1:
                        i += 1  # the argument is the next word
                    break
        i += 1
    return i


_SUDO_LONG = frozenset({"user", "group", "prompt", "close-from", "chdir", "role", "type",
                        "other-user", "command-timeout", "chroot", "host", "login-class"})


def _strip_prefix(program: str, words: list[str]) -> tuple[list[str], str | None] | None:
    """
    The command a prefix command runs, and a script it runs (C{env -S}),
    or C{None} when C{program} is not a prefix command.
    """
    if program in ("sudo", "doas"):
        return words[_options(words, 1, "ugpCDrtTURhc" if program == "sudo" else "uC", _SUDO_LONG):], None
    if program == "env":
        i, script = 1, None
        while i < len(words):
            w = words[i]
            if w in ("-S", "--split-string") and i + 1 < len(words):
                script = words[i + 1]
                i += 2
            elif w.startswith("--split-string="):
                script = w.split("=", 1)[1]
                i += 1
            elif w.startswith("-S") and len(w) > 2:
                script = w[2:]
                i += 1
            elif w in ("-u", "-C", "--unset", "--chdir", "-P"):
                i += 2
            elif w == "--":
                i += 1
                break
            elif w.startswith("-") or _ASSIGNMENT.match(w):
                i += 1
            else:
                break
        rest = words[i:]
        if script is not None:
            return [], " ".join([script, *(shlex.quote(w) for w in rest)])
        return rest, None
    if program in ("command", "builtin", "nohup", "setsid", "busybox"):
        return words[_options(words, 1):], None
    if program == "exec":
        return words[_options(words, 1, "a"):], None
    if program == "time":
        return words[_options(words, 1, "of", frozenset({"output", "format"})):], None
    if program == "nice":
        return words[_options(words, 1, "n", frozenset({"adjustment"})):], None
    if program == "ionice":
        return words[_options(words, 1, "cnpPu", frozenset({"class", "classdata"})):], None
    if program == "stdbuf":
        return words[_options(words, 1, "ioe", frozenset({"input", "output", "error"})):], None
    if program == "timeout":
        i = _options(words, 1, "sk", frozenset({"signal", "kill-after"}))
        return words[i + 1:], None  # after the duration
    if program == "xargs":
        return words[_options(words, 1, "adEILnPs", frozenset(
            {"arg-file", "delimiter", "eof", "max-lines", "max-args", "max-procs", "max-chars",
             "process-slot-var"})):], None
    return None


def _shell_script(program: str, words: list[str]) -> str | None:
    """The script of C{sh -c SCRIPT}, C{su -c SCRIPT}, C{eval ...}."""
    if program == "eval":
        return " ".join(words[1:])
    if program == "su":
        for i, w in enumerate(words[1:], 1):
            if w in ("-c", "--command") and i + 1 < len(words):
                return words[i + 1]
            if w.startswith("--command="):
                return w.split("=", 1)[1]
        return None
    if program not in _SHELLS:
        return None
    has_c, i = False, 1
    while i < len(words):
        w = words[i]
        if w == "--":
            i += 1
            break
        if w in ("-o", "+o", "-O", "+O"):
            i += 2
            continue
        if w.startswith("--"):
            i += 1
            continue
        if w[:1] in "-+" and len(w) > 1:
            has_c = has_c or "c" in w[1:]
            i += 1
            continue
        break
    return words[i] if has_c and i < len(words) else None


# Long options that mean a short one, per program (GNU getopt also takes
# any unambiguous prefix: --rec, --forc).
_LONG_AS_SHORT = {"rm": {"recursive": "r", "force": "f"}}


def _canonical(words: list[str]) -> list[str]:
    """
    C{words} with options first, short ones one letter each in order
    (C{rm /x -fr} reads C{rm -f -r /x}): GNU tools take options anywhere
    before C{--}, in any grouping.
    """
    program, letters, longs, operands = words[0], set(), [], []
    known = _LONG_AS_SHORT.get(program, {})
    rest = iter(words[1:])
    for w in rest:
        if w == "--":
            operands.append(w)
            operands.extend(rest)
            break
        if w.startswith("--"):
            name = w[2:].split("=", 1)[0]
            matches = [short for full, short in known.items() if name and full.startswith(name)]
            if len(matches) == 1:
                letters.add(matches[0])
            else:
                longs.append(w)
        elif w.startswith("-") and len(w) > 1:
            letters.update(w[1:])
        else:
            operands.append(w)
    return [program, *(f"-{c}" for c in sorted(letters)), *sorted(longs), *operands]


def _simple_lines(words: list[str], depth: int, lines: list[str]) -> None:
    def emit(ws: list[str]) -> None:
        if ws:
            lines.append(" ".join(ws))

    emit(words)
    while words:
        i = 0
        while i < len(words) and (_ASSIGNMENT.match(words[i]) or words[i] in _KEYWORDS):
            i += 1
        if i:
            words = words[i:]
            emit(words)
            continue
        program = posixpath.basename(words[0]) or words[0]
        if program != words[0]:
            words = [program, *words[1:]]
            emit(words)
        stripped = _strip_prefix(program, words)
        if stripped is not None:
            words, script = stripped
            if script is not None:
                _parse(script, depth + 1, lines)
            emit(words)
            continue
        script = _shell_script(program, words)
        if script is not None:
            _parse(script, depth + 1, lines)
        else:
            canonical = _canonical(words)
            if canonical != words:
                emit(canonical)
        break


def _parse(command: str, depth: int, lines: list[str]) -> bool:
    """Add C{command}'s lines; return whether it was one plain command."""
    if depth > _MAX_DEPTH:
        lines.append(command)
        return False
    lexer = _Lexer(command)
    tokens = lexer.tokens()
    commands = list(_commands(tokens))
    for words in commands:
        _simple_lines(words, depth, lines)
    for inner in lexer.substitutions:
        _parse(inner, depth + 1, lines)
    return (
        len(commands) == 1
        and not lexer.expansions
        and not any(t.op for t in tokens)
    )


def parse_command(command: str) -> ParsedCommand:
    """
    The command line as policy sees it: shell words joined by one space, so
    that C{rm  -rf   /x} and C{'rm' -rf /x} both read C{rm -rf /x}; then
    each command it runs, at every stage of stripping (see the module's
    docstring), so that a rule on C{rm -rf *} also catches
    C{ls; rm -rf /x}, C{sudo -u root /bin/rm -rf /x} and
    C{sh -c 'rm -rf /x'}.
    """
    try:
        whole = " ".join(shlex.split(command))
        lines = [whole]
        plain = _parse(command, 0, lines)
    except ValueError as e:
        return ParsedCommand((command,), str(e))
    simple = None
    if plain:
        words = next(_commands(_Lexer(command).tokens()))
        program = posixpath.basename(words[0])
        if not (_ASSIGNMENT.match(words[0]) or words[0] in _KEYWORDS or program in _SHELLS
                or _strip_prefix(program, words) is not None or _shell_script(program, words) is not None):
            simple = " ".join(words)
    return ParsedCommand(tuple(dict.fromkeys(lines)), None, simple)


def command_lines(command: str) -> tuple[tuple[str, ...], str | None]:
    """
    L{parse_command}'s lines and parse error.

    @return: the lines (the whole line first) and, when the line is not
        valid shell syntax, the parse error (the raw command is then the
        only line).
    """
    parsed = parse_command(command)
    return parsed.lines, parsed.error
