"""
What an exec request's command line asks the target's shell to run, as
policy sees it (C{ssh.commands}, C{ssh.simple_command}).

The target runs the command with the login user's shell (C{$SHELL -c
COMMAND}), so the gateway reads it the way a POSIX shell (bash) would, as
far as that can be done without running it: comments are dropped;
operators (C{;}, C{&&}, C{||}, C{|}, C{&}, newlines, subshell parentheses)
separate commands; redirections are dropped; leading assignments, shell
keywords (C{then}, C{do}, C{!}, C{function f}, C{coproc}, ...) and prefix
commands (C{env}, C{sudo}, C{nice}, C{timeout}, C{xargs}, C{flock},
C{chroot}, ...) are stripped; the scripts of C{sh -c}, C{su -c}, C{eval},
C{trap}, C{alias}, C{env -S}, C{find -exec}, here-strings and here-documents
fed to a shell, and the commands inside C{$(...)}, backticks and C{<(...)}
are read too.  Every stage is a line of its own, so a rule written for any
of them matches.  docs/ssh.md lists exactly what is read.

Fail closed.  What the reader cannot follow is not guessed at:

  - the line is I{unreadable} (L{ParsedCommand.unreadable}) when it is not
    valid shell syntax, or when which program runs is only known at run
    time (C{$a -rf /}, C{/bin/r? -rf /}, C{{rm,-rf,/}}, a script built
    from an expansion, a shell reading its script from a pipe): policy then
    sees it match every C{ssh.commands} deny (and review) rule;
  - a program's arguments are I{unknown} (L{ParsedCommand.unknown}) when a
    word may expand to an option or to several words (C{rm $o /x},
    C{rm "$o" /x}, C{rm *}, C{rm -{r,f} /x}, the arguments C{xargs} adds):
    the line then matches every such rule whose pattern names that
    program.

Both are made to match by L{policy_lines}, which the front end calls with
the patterns of the rules in force.  It also spells each command with a
deny pattern's options when it has them all (C{rm -v -R --force /x} is
read as C{rm -rf -v /x} for a pattern C{rm -rf *}).

This is still a guardrail, not a sandbox: a program the gateway does not
read can run anything (C{python3 -c ...}, C{find -delete}, a script file).
Only an allow-list of commands (C{ssh.simple_command}) bounds what runs.
"""

from __future__ import annotations

import fnmatch
import posixpath
import re
import shlex
import string
from typing import Any, Iterable, Iterator, Sequence

from attrs import frozen

from hoopgw.model import Effect

__all__ = ["ParsedCommand", "command_lines", "command_patterns", "parse_command", "policy_lines"]

# Operators that separate commands (C{(} and C{)}: subshells, C{case} patterns).
_SEPARATORS = frozenset({";", "&&", "||", "|", "&", "\n", "(", ")", ";;", ";&", ";;&", "|&"})
# Redirections, longest first: each is followed by its target word.
_REDIRECTS = ("&>>", "<<<", "<<-", "&>", ">>", "<<", "<&", ">&", "<>", ">|", "<", ">")
_OPERATORS = sorted(_SEPARATORS - {"\n"} | set(_REDIRECTS), key=len, reverse=True)
_OPERATOR_START = frozenset(op[0] for op in _OPERATORS)
# What ends a word: bash's metacharacters (a carriage return is not one).
_WORD_END = frozenset(" \t\n") | _OPERATOR_START
# A run of characters that mean only themselves in a word, read at once.
_PLAIN = re.compile(r"[^ \t\n'\"\\$`*?\[\]{},.;&|()<>]+")
# Before a word: where "#" starts a comment and "case" is a keyword.
_WORD_BOUNDARY = frozenset(" \t\n;&|()<>")
_ASSIGNMENT = re.compile(r"[A-Za-z_][A-Za-z0-9_]*(\[[^]]*\])?\+?=")
_FD_VARIABLE = re.compile(r"\{[A-Za-z_][A-Za-z0-9_]*\}\Z")
_PARAMETER_START = frozenset(string.ascii_letters + string.digits + "_@*#?$!-")
_KEYWORDS = frozenset({"!", "then", "do", "else", "elif", "if", "while", "until", "{", "}", "fi", "done", "esac"})
# After "coproc NAME": a compound command (so NAME is the coprocess's name).
_COMPOUND = frozenset({"{", "(", "while", "until", "for", "if", "case", "select", "[["})
_SHELLS = frozenset({"sh", "bash", "dash", "zsh", "ksh", "ksh93", "mksh", "lksh", "oksh", "pdksh", "ash",
                     "rbash", "yash", "posh", "fish", "csh", "tcsh"})
_FIND_EXEC = frozenset({"-exec", "-execdir", "-ok", "-okdir"})
_MAX_DEPTH = 8


class _Word:
    """
    A shell word: its text with quotes removed (expansions kept as
    written), and what is only known once the shell expands it.

    @ivar expanded: a part of it is an expansion ($, backticks, a glob, a
        brace expansion): its value is decided at run time.
    @ivar lead: its first character comes from an expansion (it may start
        with "-", i.e. be an option).
    @ivar split: it may become several words (an unquoted expansion, a
        brace expansion, C{"$@"}).
    """

    __slots__ = ("text", "expanded", "lead", "split")

    def __init__(self, text: str, expanded: bool = False, lead: bool = False, split: bool = False) -> None:
        self.text = text
        self.expanded = expanded
        self.lead = lead
        self.split = split

    @property
    def opaque(self) -> bool:
        """The shell may turn it into other words, or into an option."""
        return self.lead or self.split


class _Token:
    __slots__ = ("op", "word", "here", "gap")

    def __init__(self, op: str | None = None, word: _Word | None = None) -> None:
        self.op = op
        self.word = word
        self.here: _Word | None = None  # a here-document's body, on its "<<" token
        self.gap = True  # blanks (or a newline) before it


class _Command:
    """A simple command: its words, and where its standard input comes from."""

    __slots__ = ("words", "here", "piped", "source")

    def __init__(
        self, words: list[_Word], here: _Word | None = None, piped: bool = False, source: _Word | None = None
    ) -> None:
        self.words = words
        self.here = here  # a here-string or here-document
        self.piped = piped  # the output of the command before "|"
        self.source = source  # "< FILE"


_ANSI_C = {"a": "\a", "b": "\b", "e": "\x1b", "E": "\x1b", "f": "\f", "n": "\n", "r": "\r", "t": "\t",
           "v": "\v", "\\": "\\", "'": "'", '"': '"', "?": "?"}


def _ansi_c(raw: str) -> str:
    """Bash's C{$'...'}: escapes decoded; a NUL ends the string, as in bash."""
    out, i, n = [], 0, len(raw)
    while i < n:
        c = raw[i]
        i += 1
        if c != "\\" or i >= n:
            out.append(c)
            continue
        e = raw[i]
        i += 1
        if e in _ANSI_C:
            out.append(_ANSI_C[e])
            continue
        if e in "01234567":
            j = i
            while j < n and j < i + 2 and raw[j] in "01234567":
                j += 1
            value = int(raw[i - 1:j], 8) & 0xFF
            i = j
        elif e in "xuU":
            width = {"x": 2, "u": 4, "U": 8}[e]
            j = i
            while j < n and j < i + width and raw[j] in string.hexdigits:
                j += 1
            if j == i:
                out.append("\\" + e)
                continue
            value = int(raw[i:j], 16)
            i = j
        elif e == "c" and i < n:
            value = ord(raw[i]) & 0x1F
            i += 1
        else:
            out.append("\\" + e)
            continue
        if value == 0:
            break
        out.append(chr(min(value, 0x10FFFF)))
    return "".join(out)


class _Lexer:
    """
    A POSIX (bash) shell tokenizer: words with quotes removed and what in
    them is expanded at run time, operators, comments, here-documents, and
    the text of every command substitution.
    """

    def __init__(self, text: str) -> None:
        self.text = text
        self.pos = 0
        self.substitutions: list[str] = []
        self.expansions = False  # a $ or backtick expansion anywhere
        self.stdin = False  # a pipe, an input redirection or a here-document anywhere
        # "$(" or a backtick in quoted text: bash still runs it where it
        # evaluates the text as arithmetic (x='a[$(cmd)]'; echo $((x))).
        self.latent: list[str] = []
        self._heredocs: list[tuple[_Token, str, bool, bool]] = []
        # The word being read: literal characters so far, and its flags.
        self._produced = 0
        self._expanded = self._lead = self._split = False

    # -- tokens -----------------------------------------------------------------

    def tokens(self) -> list[_Token]:
        out: list[_Token] = []
        text, n = self.text, len(self.text)
        gap = True  # blanks, a newline or the start before the next token
        while True:
            start = self.pos
            while self.pos < n and text[self.pos] in " \t":
                self.pos += 1
            gap = gap or self.pos > start
            if self.pos >= n:
                self._read_heredocs()
                return out
            c = text[self.pos]
            if c == "#":  # a comment, to the end of the line
                end = text.find("\n", self.pos)
                self.pos = n if end < 0 else end
                continue
            if c == "\n":
                self.pos += 1
                out.append(_Token("\n"))
                self._read_heredocs()
                gap = True
                continue
            if c == "\\" and text.startswith("\\\n", self.pos):
                self.pos += 2
                continue
            if c in "<>" and text.startswith("(", self.pos + 1):
                # Process substitution <(cmd) / >(cmd): a word (a /dev/fd path) of its own.
                self.pos += 2
                self.substitutions.append(self._balanced())
                self.expansions = True
                self.stdin = self.stdin or c == "<"
                token = _Token(word=_Word(f"{c}(...)", expanded=True))
            elif c in _OPERATOR_START and (op := next((o for o in _OPERATORS if text.startswith(o, self.pos)), None)):
                self.pos += len(op)
                token = _Token(op)
                if op[0] == "<" or op in ("|", "|&"):
                    self.stdin = True
                if op in ("<<", "<<-"):
                    token.gap, gap = gap, False
                    out.append(token)
                    while self.pos < n and text[self.pos] in " \t":
                        self.pos += 1
                        gap = True
                    start = self.pos
                    delimiter = self._word()
                    quoted = any(q in text[start:self.pos] for q in "'\"\\")
                    self._heredocs.append((token, delimiter.text, quoted, op == "<<-"))
                    token = _Token(word=delimiter)
            else:
                word = self._word()
                # "2>x", "{fd}>x": the word names the redirected descriptor.
                if self.pos < n and text[self.pos] in "<>" and not word.expanded and (
                    word.text.isdigit() or _FD_VARIABLE.match(word.text)
                ):
                    continue
                token = _Token(word=word)
            token.gap, gap = gap, False
            out.append(token)

    def whole(self, tokens: list[_Token]) -> str:
        """The line's words (quotes removed) and operators, as spaced in the line; newlines as spaces."""
        parts: list[str] = []
        for token in tokens:
            if token.op == "\n":
                continue
            if parts and token.gap:
                parts.append(" ")
            parts.append(token.op if token.op is not None else token.word.text)  # type: ignore[union-attr]
        return "".join(parts)

    def _read_heredocs(self) -> None:
        """After a newline: the bodies of the here-documents started on the line."""
        text, n = self.text, len(self.text)
        pending, self._heredocs = self._heredocs, []
        for token, delimiter, quoted, strip_tabs in pending:
            lines: list[str] = []
            while self.pos < n:
                end = text.find("\n", self.pos)
                line = text[self.pos:n if end < 0 else end]
                self.pos = n if end < 0 else end + 1
                # Unquoted, a backslash-newline joins lines before the
                # delimiter is looked for (reading on is the safe side).
                while not quoted and line.endswith("\\") and self.pos < n:
                    end = text.find("\n", self.pos)
                    line = line[:-1] + text[self.pos:n if end < 0 else end]
                    self.pos = n if end < 0 else end + 1
                if strip_tabs:
                    line = line.lstrip("\t")
                if line == delimiter:
                    break
                lines.append(line)
            body = "".join(f"{line}\n" for line in lines)
            expanded = False
            if not quoted:
                expanded = self._scan(body, quotes=False)
            token.here = _Word(body, expanded=expanded, lead=expanded, split=expanded)

    def _scan(self, text: str, *, quotes: bool) -> bool:
        """
        Note the command substitutions in C{text} (a here-document's body,
        a C{${...}}'s inside); return whether it has any expansion.
        """
        sub = _Lexer(text)
        n = len(text)
        while sub.pos < n:
            c = text[sub.pos]
            sub.pos += 1
            if c == "\\":
                sub.pos += 1
            elif c == "'" and quotes:
                end = text.find("'", sub.pos)
                sub.pos = n if end < 0 else end + 1
            elif c in "$`":
                sub._dollar(c, True)
        self.substitutions.extend(sub.substitutions)
        self.expansions = self.expansions or sub.expansions
        return sub.expansions

    # -- words --------------------------------------------------------------------

    def _literal(self, s: str) -> str:
        self._produced += len(s)
        return s

    def _expansion(self, quoted: bool, split: bool = False) -> None:
        self._expanded = True
        if self._produced == 0:
            self._lead = True
        if not quoted or split:
            self._split = True
        self._produced += 1  # something, of unknown length

    def _word(self) -> _Word:
        text, n = self.text, len(self.text)
        parts: list[str] = []
        self._produced = 0
        self._expanded = self._lead = self._split = False
        braces: list[list[Any]] = []  # [where "{" was produced, has "," or ".."]
        bracket: int | None = None  # where an unquoted "[" was produced
        while self.pos < n:
            plain = _PLAIN.match(text, self.pos)
            if plain is not None:
                parts.append(self._literal(plain.group()))
                self.pos = plain.end()
                continue
            c = text[self.pos]
            if c in _WORD_END and (c in " \t\n" or any(text.startswith(o, self.pos) for o in _OPERATORS)):
                break
            self.pos += 1
            if c == "\\":
                if self.pos < n:
                    if text[self.pos] != "\n":
                        parts.append(self._literal(text[self.pos]))
                    self.pos += 1
            elif c == "'":
                end = text.find("'", self.pos)
                if end < 0:
                    raise ValueError("No closing quotation")
                quoted = text[self.pos:end]
                if "$(" in quoted or "`" in quoted:
                    self.latent.append(quoted)
                parts.append(self._literal(quoted))
                self.pos = end + 1
            elif c == '"':
                parts.append(self._double())
            elif c == "$" or c == "`":
                parts.append(self._dollar(c, False))
            else:
                # Globs and brace expansion: decided by the files, or many words.
                if c in "*?":
                    self._glob(self._produced)
                elif c == "[":
                    bracket = self._produced if bracket is None else bracket
                elif c == "]" and bracket is not None:
                    self._glob(bracket)
                    bracket = None
                elif c == "{":
                    braces.append([self._produced, False])
                elif braces and (c == "," or (c == "." and text.startswith(".", self.pos))):
                    braces[-1][1] = True
                elif c == "}" and braces:
                    start, listed = braces.pop()
                    if listed:
                        self._expanded = self._split = True
                        self._lead = self._lead or start == 0
                parts.append(self._literal(c))
        return _Word("".join(parts), self._expanded, self._lead, self._split)

    def _glob(self, where: int) -> None:
        self._expanded = True
        if where == 0:
            self._lead = True

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
                    parts.append(self._literal(text[self.pos]))
                self.pos += 1
            elif c == "$" or c == "`":
                parts.append(self._dollar(c, True))
            else:
                parts.append(self._literal(c))

    def _dollar(self, c: str, quoted: bool) -> str:
        """After C{$} or a backtick: an expansion's text, kept as written."""
        text, n = self.text, len(self.text)
        if c == "`":
            parts = []
            while True:
                if self.pos >= n:
                    raise ValueError("No closing backquote")
                ch = text[self.pos]
                self.pos += 1
                if ch == "`":
                    break
                if ch == "\\" and self.pos < n and text[self.pos] in "$`\\":
                    ch = text[self.pos]
                    self.pos += 1
                parts.append(ch)
            inner = "".join(parts)
            self.substitutions.append(inner)
            self.expansions = True
            self._expansion(quoted)
            return f"`{inner}`"
        nxt = text[self.pos] if self.pos < n else ""
        if nxt == "(":
            self.pos += 1
            inner = self._balanced()  # $(...) and $((...)) alike
            self.substitutions.append(inner)
            self.expansions = True
            self._expansion(quoted)
            return f"$({inner})"
        if nxt == "'" and not quoted:
            # ANSI-C quoting: $'rm\x20-rf' is a quoted word, not an expansion.
            start = self.pos = self.pos + 1
            while True:
                if self.pos >= n:
                    raise ValueError("No closing quotation")
                ch = text[self.pos]
                self.pos += 1
                if ch == "'":
                    break
                if ch == "\\":
                    self.pos += 1
            return self._literal(_ansi_c(text[start:self.pos - 1]))
        if nxt == '"' and not quoted:
            self.pos += 1
            return self._double()  # $"...": a translated string
        if nxt == "{":
            self.pos += 1
            inner = self._braced()
            self._scan(inner, quotes=True)
            self.expansions = True
            self._expansion(quoted, split=inner.startswith("@") or inner.startswith("!"))
            return "${" + inner + "}"
        if nxt and nxt in _PARAMETER_START:
            self.expansions = True
            self._expansion(quoted, split=nxt in "@*")
            return "$"
        return self._literal("$")  # a "$" before anything else is itself

    def _balanced(self) -> str:
        """The text up to the parenthesis closing one just read."""
        text, start, n = self.text, self.pos, len(self.text)
        stack: list[str] = []  # "(" and "case": a case pattern's ")" closes nothing
        while self.pos < n:
            c = text[self.pos]
            at_word = self.pos == start or text[self.pos - 1] in _WORD_BOUNDARY
            self.pos += 1
            if c == "\\":
                self.pos += 1
            elif c == "'":
                end = text.find("'", self.pos)
                if end < 0:
                    raise ValueError("No closing quotation")
                self.pos = end + 1
            elif c == '"':
                self._skip_double()
            elif c == "`":
                self._skip_backticks()
            elif c == "$" and text.startswith("(", self.pos):
                self.pos += 1
                self._balanced()
            elif c == "$" and text.startswith("{", self.pos):
                self.pos += 1
                self._braced()
            elif c == "#" and at_word:
                end = text.find("\n", self.pos)
                self.pos = n if end < 0 else end
            elif at_word and self._keyword("case"):
                stack.append("case")
            elif at_word and self._keyword("esac"):
                if stack and stack[-1] == "case":
                    stack.pop()
            elif c == "(":
                stack.append("(")
            elif c == ")":
                if stack and stack[-1] == "(":
                    stack.pop()
                elif not stack:
                    return text[start:self.pos - 1]
        raise ValueError("No closing parenthesis")

    def _keyword(self, word: str) -> bool:
        """At C{self.pos - 1}: C{word} as a word of its own (consumed if so)."""
        text, start = self.text, self.pos - 1
        end = start + len(word)
        if text.startswith(word, start) and (end >= len(text) or text[end] in _WORD_BOUNDARY):
            self.pos = end
            return True
        return False

    def _braced(self) -> str:
        """The text up to the brace closing a C{${} just read."""
        text, start, n, depth = self.text, self.pos, len(self.text), 1
        while self.pos < n:
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
                self._skip_double()
            elif c == "`":
                self._skip_backticks()
            elif c == "$" and text.startswith("(", self.pos):
                self.pos += 1
                self._balanced()
            elif c == "$" and text.startswith("{", self.pos):
                self.pos += 1
                depth += 1
            elif c == "}":
                depth -= 1
                if depth == 0:
                    return text[start:self.pos - 1]
        raise ValueError("No closing brace")

    def _skip_double(self) -> None:
        text, n = self.text, len(self.text)
        while self.pos < n:
            c = text[self.pos]
            self.pos += 1
            if c == "\\":
                self.pos += 1
            elif c == '"':
                return
            elif c == "`":
                self._skip_backticks()
            elif c == "$" and text.startswith("(", self.pos):
                self.pos += 1
                self._balanced()
            elif c == "$" and text.startswith("{", self.pos):
                self.pos += 1
                self._braced()
        raise ValueError("No closing quotation")

    def _skip_backticks(self) -> None:
        text, n = self.text, len(self.text)
        while self.pos < n:
            c = text[self.pos]
            self.pos += 1
            if c == "\\":
                self.pos += 1
            elif c == "`":
                return
        raise ValueError("No closing backquote")


def _commands(tokens: list[_Token]) -> Iterator[_Command]:
    """Simple commands: words between separators, redirections dropped."""
    words: list[_Word] = []
    here: _Word | None = None
    source: _Word | None = None
    piped = False
    redirect: str | None = None  # the redirection whose target comes next
    for token in tokens:
        op = token.op
        if op is not None:
            if op in _SEPARATORS:
                if words:
                    yield _Command(words, here, piped, source)
                elif op == "(":
                    continue  # "x | (sh)": the subshell's first command reads the pipe
                words, here, source, redirect = [], None, None, None
                piped = op in ("|", "|&")
            else:
                redirect = op
                if op in ("<<", "<<-"):
                    here = token.here
            continue
        assert token.word is not None
        if redirect is not None:
            if redirect == "<<<":
                here = token.word
            elif redirect == "<":
                source = token.word
            redirect = None
            continue
        words.append(token.word)
    if words:
        yield _Command(words, here, piped, source)


# -- options ----------------------------------------------------------------------


class _Opaque(Exception):
    """A word a program reads as an option (or its argument) is only known at run time."""


def _getopt(
    words: list[_Word],
    start: int,
    with_arg: str = "",
    long_with_arg: Iterable[str] = (),
    *,
    attached: str = "",
    permute: bool = False,
) -> tuple[list[tuple[str, _Word | None]], list[_Word], int]:
    """
    GNU getopt over C{words[start:]}.

    @param with_arg: short options taking an argument (attached or the next word).
    @param attached: short options whose argument is optional (attached only).
    @param permute: options may follow operands (else the first operand ends them).
    @return: the options (name, argument), the operands (when permuting),
        and the index after the last option read.
    @raise _Opaque: a word read as an option is one the shell expands into
        an unknown one, or an option's argument may become several words.
    """
    long_with_arg = frozenset(long_with_arg)
    opts: list[tuple[str, _Word | None]] = []
    operands: list[_Word] = []
    i = start
    while i < len(words):
        word = words[i]
        w = word.text
        if word.opaque:
            raise _Opaque(w)  # an option, or the operand that ends them: unknown either way
        if w == "--":
            i += 1
            if permute:
                operands.extend(words[i:])
                i = len(words)
            break
        if w.startswith("--"):
            name, eq, value = w[2:].partition("=")
            if eq:
                opts.append((name, _Word(value, word.expanded)))
            elif name in long_with_arg and i + 1 < len(words):
                if words[i + 1].split:
                    raise _Opaque(words[i + 1].text)
                opts.append((name, words[i + 1]))
                i += 1
            else:
                opts.append((name, None))
            i += 1
            continue
        if w.startswith("-") and len(w) > 1:
            for j, letter in enumerate(w[1:], 1):
                if letter in with_arg or letter in attached:
                    if j < len(w) - 1:
                        opts.append((letter, _Word(w[j + 1:], word.expanded)))
                    elif letter in with_arg and i + 1 < len(words):
                        if words[i + 1].split:
                            raise _Opaque(words[i + 1].text)
                        opts.append((letter, words[i + 1]))
                        i += 1
                    else:
                        opts.append((letter, None))
                    break
                opts.append((letter, None))
            i += 1
            continue
        if not permute:
            break
        operands.append(word)
        i += 1
    return opts, operands, i


# Prefix commands: options taking an argument, long ones taking one, and how
# many operands come before the command they run (timeout's duration,
# chroot's root, taskset's mask, chrt's priority).  GNU and util-linux
# tools stop reading options at the first operand.
_SUDO_LONG = ("user", "group", "prompt", "close-from", "chdir", "role", "type", "other-user",
              "command-timeout", "chroot", "host", "login-class")
_PREFIXES: dict[str, tuple[str, tuple[str, ...], int]] = {
    "sudo": ("ugpCDrtTURhc", _SUDO_LONG, 0),
    "doas": ("uC", (), 0),
    "command": ("", (), 0),
    "builtin": ("", (), 0),
    "exec": ("a", (), 0),
    "nohup": ("", (), 0),
    "setsid": ("", (), 0),
    "time": ("of", ("output", "format"), 0),
    "nice": ("n", ("adjustment",), 0),
    "ionice": ("cnpPu", ("class", "classdata", "pid", "pgid", "uid"), 0),
    "stdbuf": ("ioe", ("input", "output", "error"), 0),
    "timeout": ("sk", ("signal", "kill-after"), 1),
    "chrt": ("TPD", ("sched-runtime", "sched-period", "sched-deadline"), 1),
    "taskset": ("", (), 1),
    "chroot": ("", ("userspec", "groups"), 1),
    "pkexec": ("", ("user",), 0),
    "unshare": ("SGRwl", ("setuid", "setgid", "root", "wd", "propagation", "setgroups", "map-user",
                          "map-group", "map-users", "map-groups", "monotonic", "boottime", "load-interp"), 0),
    "nsenter": ("tSG", ("target", "setuid", "setgid"), 0),
    "busybox": ("", (), 0),
    "toybox": ("", (), 0),
    "setpriv": ("", ("ambient-caps", "bounding-set", "groups", "inh-caps", "pdeathsig", "regid", "reuid", "rgid",
                     "ruid", "securebits", "selinux-label", "apparmor-profile", "egid", "euid", "landlock-access",
                     "landlock-rule"), 0),
    "prlimit": ("po", ("pid", "output"), 0),
    "systemd-run": ("upEHM", ("unit", "property", "description", "slice", "uid", "gid", "nice", "setenv",
                              "working-directory", "host", "machine", "service-type", "timer-property",
                              "path-property", "socket-property", "on-active", "on-boot", "on-startup",
                              "on-unit-active", "on-unit-inactive", "on-calendar"), 0),
}
# Short options whose argument is optional, so only ever attached.
_ATTACHED = {"prlimit": "cdefilmnqrstuvxy"}
# Commands whose script argument is read (besides shells): see _Reader._scripted.
_SCRIPTED = frozenset({"env", "xargs", "flock", "su", "runuser", "sg", "watch", "script", "eval", "trap", "alias",
                       "source", ".", "at", "batch", "ssh"})
# What names a shell's standard input as its script file.
_STDIN_PATHS = frozenset({"/dev/stdin", "/dev/fd/0", "/proc/self/fd/0"})
_SSH_WITH_ARG = "BbcDEeFIiJLlmOoPpQRSWw"


# Long options that mean a short one, per program (GNU getopt also takes
# any unambiguous prefix: --rec, --forc).
_LONG_AS_SHORT = {"rm": {"recursive": "r", "force": "f"}}
# Short options that mean the same as another, for L{policy_lines}.
_SAME_LETTER = {"rm": {"R": "r"}}


def _options(program: str, words: Sequence[str]) -> tuple[set[str], list[str], list[str]]:
    """C{words}' short option letters, other long options, and operands (from C{--} on)."""
    letters: set[str] = set()
    longs: list[str] = []
    operands: list[str] = []
    known = _LONG_AS_SHORT.get(program, {})
    rest = iter(words)
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
    return letters, longs, operands


def _canonical(words: list[str]) -> list[str]:
    """
    C{words} with options first, short ones one letter each in order
    (C{rm /x -fr} reads C{rm -f -r /x}): GNU tools take options anywhere
    before C{--}, in any grouping.
    """
    letters, longs, operands = _options(words[0], words[1:])
    return [words[0], *(f"-{c}" for c in sorted(letters)), *sorted(longs), *operands]


# -- reading --------------------------------------------------------------------


class _Reader:
    """Collects what a command line runs, stage by stage (see the module docstring)."""

    def __init__(self) -> None:
        self.lines: list[str] = []
        self.unreadable: list[str] = []
        self.unknown: list[str] = []
        self.finals: list[tuple[str, ...]] = []
        self.find_exec = False
        self.stdin_fed = False  # the script being read has a pipe or an input redirection

    def commands(self, commands: list[_Command], lexer: _Lexer, depth: int) -> None:
        """Read a script's commands, then its substitutions and latent ones."""
        fed, self.stdin_fed = self.stdin_fed, lexer.stdin
        for command in commands:
            self.command(command, depth)
        self.stdin_fed = fed
        for inner in lexer.substitutions:
            self.script(inner, depth + 1, "a command substitution")
        for text in lexer.latent:
            # Over-read, best effort: lines only, never a reason to refuse.
            sub = _Lexer(text)
            try:
                sub._scan(text, quotes=False)
            except (ValueError, RecursionError):
                continue
            for inner in sub.substitutions:
                other = _Reader()
                other.script(inner, depth + 1, "quoted text")
                self.lines.extend(other.lines)
                self.finals.extend(other.finals)

    def emit(self, words: Sequence[_Word]) -> None:
        if words:
            self.lines.append(" ".join(w.text for w in words))

    def script(self, text: str, depth: int, what: str) -> None:
        """Read C{text} as a shell script."""
        if depth > _MAX_DEPTH:
            self.lines.append(text)
            self.unreadable.append(f"{what} is nested more than {_MAX_DEPTH} deep")
            return
        lexer = _Lexer(text)
        try:
            tokens = lexer.tokens()
        except (ValueError, RecursionError) as e:
            self.lines.append(text)
            self.unreadable.append(f"{what} is not valid shell syntax ({e})")
            return
        self.commands(list(_commands(tokens)), lexer, depth)

    def script_word(self, word: _Word, depth: int, what: str) -> None:
        """A word some program runs as a script (sh -c, eval, su -c, ...)."""
        if word.expanded:
            # "sh -c "$x"": the script is whatever $x holds when it runs.
            self.unreadable.append(f"the script of {what} is only known at run time ({word.text!r})")
        self.script(word.text, depth + 1, f"the script of {what}")

    def command(self, command: _Command, depth: int) -> None:
        words = command.words
        self.emit(words)
        more = False  # xargs adds arguments from its input
        while words:
            i = 0
            while i < len(words):
                w = words[i]
                if _ASSIGNMENT.match(w.text) or (w.text in _KEYWORDS and not w.expanded):
                    i += 1
                elif w.text == "function" and i + 1 < len(words):
                    i += 2  # "function f { ... }": the body follows
                elif w.text == "coproc":
                    i += 2 if i + 2 < len(words) and words[i + 2].text in _COMPOUND else 1
                else:
                    break
            if i:
                words = words[i:]
                self.emit(words)
                continue
            program = words[0]
            if program.expanded:
                self.unreadable.append(f"the program {program.text!r} is only known at run time")
                return
            # zsh runs "=rm" as the rm found on PATH; bash finds no "=rm" at all.
            name = posixpath.basename(program.text.removeprefix("=")) or program.text
            if name != program.text:
                words = [_Word(name), *words[1:]]
                self.emit(words)
            try:
                if name in _PREFIXES:
                    with_arg, long_with_arg, skip = _PREFIXES[name]
                    _, _, i = _getopt(words, 1, with_arg, long_with_arg, attached=_ATTACHED.get(name, ""))
                    for w in words[i:i + skip]:
                        if w.split:
                            raise _Opaque(w.text)
                    words = words[i + skip:]
                    self.emit(words)
                    continue
                if name in _SCRIPTED:
                    inner = self._scripted(name, words, command, depth)
                    if inner is None:
                        return
                    words, extra = inner
                    more = more or extra
                    self.emit(words)
                    continue
                if name in _SHELLS:
                    self._shell(name, words, command, depth)
                    return
            except _Opaque as e:
                self.unreadable.append(f"{name} reads {str(e)!r} as an option or its argument, "
                                       "and it is only known at run time")
                return
            if name == "find":
                self._find(words, depth)
            self._final(words, more)
            return

    def _final(self, words: list[_Word], more: bool) -> None:
        texts = [w.text for w in words]
        canonical = _canonical(texts)
        if canonical != texts:
            self.lines.append(" ".join(canonical))
        self.finals.append(tuple(texts))
        if more or any(w.opaque for w in _before_end_of_options(words[1:])):
            self.unknown.append(texts[0])

    def _shell(self, name: str, words: list[_Word], command: _Command, depth: int) -> None:
        has_c = has_s = False
        script: _Word | None = None
        i = 1
        while i < len(words):
            word = words[i]
            w = word.text
            if word.opaque:
                raise _Opaque(w)
            if w in ("--", "-"):
                i += 1
                break
            if w.startswith("--"):
                option, eq, value = w[2:].partition("=")
                if option in ("command", "init-command"):  # fish
                    if eq:
                        script = _Word(value, word.expanded)
                    elif i + 1 < len(words):
                        script = words[i + 1]
                        i += 1
                elif not eq and option in ("rcfile", "init-file"):
                    i += 1
                i += 1
                continue
            if w[:1] in "-+" and len(w) > 1:
                letters = w[1:]
                if w[0] == "-":
                    has_c = has_c or "c" in letters
                    has_s = has_s or "s" in letters
                    if name == "fish" and "C" in letters and i + 1 < len(words):
                        script = words[i + 1]
                i += 1 + sum(1 for letter in letters if letter in "oO")  # -o OPTION, -O SHOPT
                continue
            break
        operands = words[i:]
        if script is not None:
            self.script_word(script, depth, name)
        if has_c:
            if operands:
                self.script_word(operands[0], depth, f"{name} -c")
            elif script is None:
                self.unreadable.append(f"{name} -c has no script on the line")
        elif operands and not has_s:
            self._script_file(name, operands[0], command, depth)
        else:
            self._stdin_script(name, command, depth)

    def _script_file(self, name: str, path: _Word, command: _Command, depth: int) -> None:
        if path.text in _STDIN_PATHS:
            self._stdin_script(name, command, depth)
        elif path.expanded and path.text.startswith("<("):
            self.unreadable.append(f"{name} runs a script a process substitution writes")
        elif path.text.startswith("/dev/fd/") or (path.text.startswith("/proc/") and "/fd/" in path.text):
            self.unreadable.append(f"{name} runs a script from a file descriptor")
        # Else a script file on the target: not read (see docs/ssh.md).

    def _stdin_script(self, name: str, command: _Command, depth: int) -> None:
        """A shell (or at, source /dev/stdin) reading its script from standard input."""
        if command.here is not None:
            self.script_word(command.here, depth, f"the here-document or here-string read by {name}")
        elif command.source is not None:
            self._script_file(name, command.source, _Command([]), depth)
        elif self.stdin_fed or command.piped:
            # "echo 'rm -rf /' | sh", "{ sh; } <<< ...", "(read; sh) < <(...)".
            self.unreadable.append(f"{name} reads its script from standard input, which the line feeds")
        # Else it reads the client's stream, as an interactive shell does: not read.

    def _scripted(
        self, name: str, words: list[_Word], command: _Command, depth: int
    ) -> tuple[list[_Word], bool] | None:
        """
        A command that runs a script or a command of its own: read the
        script; return the command it runs (and whether xargs adds
        arguments to it), or C{None}.
        """
        args = words[1:]
        if name == "eval":
            if args and args[0].text == "--":
                args = args[1:]
            if args:
                self.script_word(_joined(args), depth, "eval")
            return None
        if name == "trap":
            if args and args[0].text == "--":
                args = args[1:]
            if args and args[0].text not in ("-", "-l", "-p", "-lp", "-pl"):
                self.script_word(args[0], depth, "trap")
            return None
        if name in ("source", "."):
            if args and args[0].text == "--":
                args = args[1:]
            if args:
                self._script_file(name, args[0], command, depth)
            return None
        if name in ("at", "batch"):
            opts, _, _ = _getopt(words, 1, "qft", permute=True)
            if not any(option == "f" for option, _ in opts):
                self._stdin_script(name, command, depth)
            return None
        if name == "ssh":
            # ssh HOST COMMAND...: the remote shell runs the words joined.
            _, _, i = _getopt(words, 1, _SSH_WITH_ARG)
            _, _, j = _getopt(words, i + 1, _SSH_WITH_ARG)
            if j < len(words):
                self.script_word(_joined(words[j:]), depth, "ssh")
            return None
        if name == "alias":
            for arg in args:
                if "=" in arg.text:
                    value = arg.text.split("=", 1)[1]
                    count = len(self.finals)
                    self.script_word(_Word(value, arg.expanded), depth, "alias")
                    if len(self.finals) > count:
                        # Where the alias is used, arguments follow its last command.
                        self.unknown.append(self.finals[-1][0])
            return None
        if name == "env":
            opts, _, i = _getopt(words, 1, "uCS", ("unset", "chdir", "split-string"))
            # GNU env takes every following word with a "=" (and "-") as an assignment.
            while i < len(words) and (words[i].text == "-" or "=" in words[i].text):
                if words[i].opaque:
                    raise _Opaque(words[i].text)
                i += 1
            rest = words[i:]
            split = [value for option, value in opts if option in ("S", "split-string") and value is not None]
            if split:
                # env -S splits its string (roughly as a shell would) and runs it with the rest.
                line = " ".join([split[-1].text, *(shlex.quote(w.text) for w in rest)])
                expanded = split[-1].expanded or any(w.expanded for w in rest)
                self.script_word(_Word(line, expanded), depth, "env -S")
                return None
            if rest and rest[0].opaque:
                raise _Opaque(rest[0].text)
            return rest, False
        if name == "xargs":
            opts, _, i = _getopt(words, 1, "adEILnPs", ("arg-file", "delimiter", "eof", "max-lines", "max-args",
                                                        "max-procs", "max-chars", "process-slot-var"),
                                 attached="eil")
            replace = None
            for option, value in opts:
                if option in ("I", "i", "replace"):
                    replace = value.text if value is not None and value.text else "{}"
            rest = words[i:] or [_Word("echo")]
            if replace is None:
                return rest, True  # the arguments read from its input come after
            # With -I R, R in any word is replaced by an input line.
            rest = [_Word(w.text, True, w.lead or w.text.startswith(replace), w.split) if replace in w.text else w
                    for w in rest]
            return rest, False
        if name == "flock":
            _, _, i = _getopt(words, 1, "wE", ("timeout", "wait", "conflict-exit-code"))
            rest = words[i + 1:]  # after the lock file or descriptor
            if rest and rest[0].text in ("-c", "--command"):
                if len(rest) > 1:
                    self.script_word(rest[1], depth, "flock -c")
                else:
                    self.unreadable.append("flock -c has no script on the line")
                return None
            return rest, False
        if name in ("su", "runuser"):
            with_arg = "cCsgGw" + ("u" if name == "runuser" else "")
            longs = ("command", "session-command", "shell", "group", "supp-group", "whitelist-environment", "user")
            opts, _, i = _getopt(words, 1, with_arg, longs)
            if name == "runuser" and any(option in ("u", "user") for option, _ in opts):
                return words[i:], False  # runuser -u USER [--] COMMAND...
            opts, _, _ = _getopt(words, 1, with_arg, longs, permute=True)
            for option, value in opts:
                if option in ("c", "C", "command", "session-command") and value is not None:
                    self.script_word(value, depth, f"{name} -c")
            return None
        if name == "sg":
            i = 1
            if i < len(words) and words[i].text == "-":
                i += 1
            rest = words[i + 1:]  # after the group
            if rest and rest[0].text == "-c":
                rest = rest[1:2]
            if rest:
                self.script_word(_joined(rest), depth, "sg")
            return None
        if name == "watch":
            _, _, i = _getopt(words, 1, "nq", ("interval", "equexit"), attached="d")
            if i < len(words):
                self.script_word(_joined(words[i:]), depth, "watch")  # it runs sh -c "ARGS..."
            return None
        if name == "script":
            opts, _, _ = _getopt(words, 1, "BcEIOoTm", ("command", "echo", "log-in", "log-out", "log-io",
                                                         "log-timing", "logging-format", "output-limit"),
                                 attached="t", permute=True)
            for option, value in opts:
                if option in ("c", "command") and value is not None:
                    self.script_word(value, depth, "script -c")
            return None
        raise AssertionError(name)

    def _find(self, words: list[_Word], depth: int) -> None:
        """find's -exec, -execdir, -ok and -okdir commands ({} is a found path)."""
        i = 0
        while i < len(words):
            if words[i].text not in _FIND_EXEC:
                i += 1
                continue
            self.find_exec = True
            inner: list[_Word] = []
            i += 1
            while i < len(words):
                w = words[i]
                if w.text == ";" or (w.text == "+" and inner and inner[-1].text == "{}"):
                    break
                inner.append(_Word(w.text, True, w.lead, w.split) if "{}" in w.text else w)
                i += 1
            if inner and depth >= _MAX_DEPTH:
                self.unreadable.append(f"find -exec is nested more than {_MAX_DEPTH} deep")
            elif inner:
                self.command(_Command(inner), depth + 1)
            i += 1


def _joined(words: Sequence[_Word]) -> _Word:
    """Words a program joins with spaces to run as a script (eval, watch, sg)."""
    return _Word(" ".join(w.text for w in words), any(w.expanded for w in words))


def _before_end_of_options(words: Sequence[_Word]) -> Iterator[_Word]:
    for w in words:
        if w.text == "--" and not w.expanded:
            return
        yield w


# -- the parse ------------------------------------------------------------------


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
    @ivar unreadable: why the gateway cannot tell what the line runs
        (C{None} when it can): see L{policy_lines}.
    @ivar unknown: programs some of whose arguments are only known at run
        time (C{rm $opts /x}).
    @ivar finals: each command the line runs, prefixes stripped, as words
        (the program's basename first).
    """

    lines: tuple[str, ...]
    error: str | None = None
    simple: str | None = None
    unreadable: str | None = None
    unknown: tuple[str, ...] = ()
    finals: tuple[tuple[str, ...], ...] = ()


def parse_command(command: str) -> ParsedCommand:
    """
    The command line as policy sees it: shell words joined by one space, so
    that C{rm  -rf   /x} and C{'rm' -rf /x} both read C{rm -rf /x}; then
    each command it runs, at every stage of stripping (see the module's
    docstring), so that a rule on C{rm -rf *} also catches
    C{ls; rm -rf /x}, C{sudo -u root /bin/rm -rf /x} and
    C{sh -c 'rm -rf /x'}.
    """
    reader = _Reader()
    lexer = _Lexer(command)
    try:
        tokens = lexer.tokens()
    except (ValueError, RecursionError) as e:
        # (A RecursionError: substitutions nested thousands deep.)
        error = str(e) or type(e).__name__
        return ParsedCommand((command,), error, None, f"the line is not valid shell syntax ({error})")
    reader.lines.append(lexer.whole(tokens))
    commands = list(_commands(tokens))
    reader.commands(commands, lexer, 0)
    if "\x00" in command:
        # sshd refuses such a request; a shell would read a shorter line.
        reader.unreadable.append("the line holds a NUL byte")
    unreadable = "; ".join(dict.fromkeys(reader.unreadable)) or None
    simple = None
    if (len(commands) == 1 and not lexer.expansions and not any(t.op for t in tokens)
            and commands[0].here is None and unreadable is None and not reader.find_exec):
        words = [w.text for w in commands[0].words]
        program = posixpath.basename(words[0])
        if not (_ASSIGNMENT.match(words[0]) or words[0] in _KEYWORDS or words[0] in ("function", "coproc")
                or program in _SHELLS or program in _PREFIXES or program in _SCRIPTED):
            simple = " ".join(words)
    return ParsedCommand(
        tuple(dict.fromkeys(reader.lines)),
        None,
        simple,
        unreadable,
        tuple(dict.fromkeys(reader.unknown)),
        tuple(dict.fromkeys(reader.finals)),
    )


def command_lines(command: str) -> tuple[tuple[str, ...], str | None]:
    """
    L{parse_command}'s lines and parse error.

    @return: the lines (the whole line first) and, when the line is not
        valid shell syntax, the parse error (the raw command is then the
        only line).
    """
    parsed = parse_command(command)
    return parsed.lines, parsed.error


# -- with the policy's patterns ---------------------------------------------------------


def command_patterns(
    rules: Iterable[Any], identity: Any, connection: str, kind: str = "ssh.exec"
) -> tuple[tuple[str, ...], ...]:
    """
    The C{ssh.commands} patterns of each deny and review rule (of a
    L{hoopgw.policy.rules.PolicySet}) that can apply to C{identity}'s
    C{kind} actions on C{connection}: one tuple per rule.
    """
    groups: list[tuple[str, ...]] = []
    for rule in rules:
        if rule.effect not in (Effect.deny, Effect.review):
            continue
        if "*" not in rule.groups and not set(rule.groups) & set(identity.groups):
            continue
        if not any(fnmatch.fnmatchcase(identity.subject, p) for p in rule.users):
            continue
        if not any(fnmatch.fnmatchcase(connection, p) for p in rule.connections):
            continue
        if not any(fnmatch.fnmatchcase(kind, p) for p in rule.actions):
            continue
        for condition in rule.conditions:
            if condition.name == "ssh.commands" and not isinstance(condition.value, bool):
                groups.append(tuple(condition.value))
    return tuple(groups)


_CANDIDATES = string.ascii_letters + string.digits + string.punctuation + " \t"


def _matching(pattern: str) -> str | None:
    """A string C{pattern} matches: itself, with each C{[...]} set replaced by a member."""
    out, i, n = [], 0, len(pattern)
    while i < n:
        c = pattern[i]
        i += 1
        if c != "[":
            out.append(c)
            continue
        j = i
        if j < n and pattern[j] == "!":
            j += 1
        if j < n and pattern[j] == "]":
            j += 1
        while j < n and pattern[j] != "]":
            j += 1
        if j >= n:
            out.append(c)  # no closing bracket: a literal "["
            continue
        members = pattern[i - 1:j + 1]
        member = next((m for m in _CANDIDATES if fnmatch.fnmatchcase(m, members)), None)
        if member is None:
            member = next((chr(m) for m in range(0x80, 0x3000) if fnmatch.fnmatchcase(chr(m), members)), None)
        if member is None:
            return None
        out.append(member)
        i = j + 1
    text = "".join(out)
    return text if fnmatch.fnmatchcase(text, pattern) else None


def _respelled(final: tuple[str, ...], pattern: str) -> str | None:
    """
    C{final} spelled with C{pattern}'s leading options when it has them all
    (C{rm -v -R --force /x} for C{rm -rf *}: C{rm -rf -v /x}), else C{None}.
    """
    words = pattern.split()
    if len(words) < 2 or not fnmatch.fnmatchcase(final[0], words[0]):
        return None
    program = final[0]
    same = _SAME_LETTER.get(program, {})
    j = 1
    while j < len(words) and words[j].startswith("-") and words[j] != "--" and not any(c in words[j] for c in "*?["):
        j += 1
    if j == 1:
        return None
    wanted, wanted_longs, _ = _options(program, words[1:j])
    letters, longs, operands = _options(program, final[1:])
    wanted = {same.get(c, c) for c in wanted}
    have = {same.get(c, c) for c in letters}
    if not wanted <= have or not set(wanted_longs) <= set(longs):
        return None
    others = sorted({c for c in letters if same.get(c, c) not in wanted})
    rest_longs = sorted(set(longs) - set(wanted_longs))
    return " ".join([program, *words[1:j], *(f"-{c}" for c in others), *rest_longs, *operands])


def policy_lines(parsed: ParsedCommand, rules: Sequence[Sequence[str] | str]) -> tuple[str, ...] | None:
    """
    C{parsed.lines} as the deny (and review) rules with these C{ssh.commands}
    patterns (one sequence per rule, as L{command_patterns} returns; a lone
    string is a rule of its own) must see them.  For each rule no line
    matches yet:

      - a command spelled with the options of one of its patterns, when it
        has them all (see L{_respelled});
      - for an unreadable line (L{ParsedCommand.unreadable}), a string one
        of its patterns matches (the pattern itself, a C{[...]} set
        replaced by a member), so that every such rule matches it;
      - for a line with unknown arguments (L{ParsedCommand.unknown}),
        likewise for a pattern whose first word matches such a program.

    @return: the lines, or C{None} if some rule's patterns have no matching
        string (the caller must then refuse the command: fail closed).
    """
    lines = list(parsed.lines)
    for rule in rules:
        patterns = (rule,) if isinstance(rule, str) else tuple(rule)
        if not patterns:
            continue
        matches = re.compile("|".join(fnmatch.translate(p) for p in patterns)).match
        if any(matches(line) for line in lines):
            continue
        respelled = next((r for final in parsed.finals for p in patterns
                          for r in (_respelled(final, p),) if r is not None and matches(r)), None)
        if respelled is not None:
            lines.append(respelled)
            continue
        if parsed.unreadable is not None:
            chosen = list(patterns)
        else:
            chosen = [p for p in patterns
                      if any(fnmatch.fnmatchcase(program, (p.split() or [""])[0]) for program in parsed.unknown)]
        if not chosen:
            continue
        witness = next((m for m in map(_matching, chosen) if m is not None), None)
        if witness is None:
            return None
        lines.append(witness)
    return tuple(dict.fromkeys(lines))
