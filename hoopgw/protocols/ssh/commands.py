"""
What an exec request's command line asks the target's shell to run, as
policy sees it (C{ssh.commands}, C{ssh.simple_command}).

The target runs the command with the login user's shell (C{$SHELL -c
COMMAND}), so the gateway reads it the way bash would, as far as that can
be done without running it: comments are dropped; operators (C{;}, C{&&},
C{||}, C{|}, C{&}, newlines, subshell parentheses) separate commands;
redirections are dropped; leading assignments, shell keywords (C{then},
C{do}, C{!}, C{function f}, C{coproc}, ...) and prefix commands (C{env},
C{sudo}, C{nice}, C{timeout}, C{xargs}, C{flock}, C{chroot}, ...) are
stripped, their options read as each program reads them (GNU
abbreviations of long options included); the scripts of C{sh -c}, C{su
-c}, C{eval}, C{trap}, C{env -S}, C{find -exec}, C{mapfile -C}, here-strings
and here-documents fed to a shell, and the commands inside C{$(...)},
backticks and C{<(...)} are read too.  Arithmetic (C{((...))},
C{$((...))}, C{$[...]}), C{[[ ... ]]} (its regular expressions and
patterns), extended globs (C{@(...)}) and array assignments are read as
bash reads them, so that a C{#} or a C{<<} in them hides nothing.  Every
stage is a line of its own, so a rule written for any of them matches.
docs/ssh.md lists exactly what is read.

Fail closed.  What the reader cannot follow is not guessed at:

  - the line is I{unreadable} (L{ParsedCommand.unreadable}) when it is not
    valid shell syntax (as far as the gateway reads it), when it is longer
    than L{MAX_COMMAND_LENGTH}, or when which program runs is only known at
    run time (C{$a -rf /}, C{/bin/r? -rf /}, C{{rm,-rf,/}}, a script built
    from an expansion, a shell reading its script from a pipe, an alias or
    C{hash -p} defined on the line, C{PATH} or C{BASH_ENV} set, a
    variable whose value bash may run as code in arithmetic, an option a
    wrapper is not known to take): policy then sees it match every
    C{ssh.commands} deny (and review) rule;
  - a program's arguments are I{unknown} (L{ParsedCommand.unknown}) when a
    word may expand to an option or to several words (C{rm $o /x},
    C{rm "$o" /x}, C{rm -"$o" /x}, C{rm *}, C{rm -{r,f} /x}, the arguments
    C{xargs} adds): the line then matches every such rule whose pattern
    names that program.

Both are made to match by L{policy_lines}, which the front end calls with
the patterns of the rules in force.  It also spells each command with a
deny pattern's options when it has them all (C{rm -v -R --force /x} is
read as C{rm -rf -v /x} for a pattern C{rm -rf *}).

The reader's work is linear in the line (a budget bounds what scripts
nested in quotes make it read again); the front end refuses longer lines
before reading them.

This is still a guardrail, not a sandbox: a program the gateway does not
read can run anything (C{python3 -c ...}, C{find -delete}, a script file).
Only an allow-list of commands (C{ssh.simple_command}) bounds what runs.
"""

from __future__ import annotations

import bisect
import fnmatch
import posixpath
import re
import shlex
import string
from typing import Any, Iterable, Iterator, Sequence

from attrs import frozen

from hoopgw.policy.rules import glob_witness, restrictive_patterns

__all__ = ["MAX_COMMAND_LENGTH", "ParsedCommand", "command_lines", "command_patterns", "parse_command",
           "policy_lines"]

# The longest exec command line the gateway reads (characters; the front
# end counts bytes).  Longer ones are refused: no audited command line is
# that long (ARG_MAX is larger, but such a line is data, not a command).
MAX_COMMAND_LENGTH = 64 * 1024

# Operators that separate commands (C{(} and C{)}: subshells, C{case} patterns).
_SEPARATORS = frozenset({";", "&&", "||", "|", "&", "\n", "(", ")", ";;", ";&", ";;&", "|&"})
# Redirections, longest first: each is followed by its target word.
_REDIRECTS = ("&>>", "<<<", "<<-", "&>", ">>", "<<", "<&", ">&", "<>", ">|", "<", ">")
_OPERATORS = sorted(_SEPARATORS - {"\n"} | set(_REDIRECTS), key=len, reverse=True)
_OPERATOR_START = frozenset(op[0] for op in _OPERATORS)
_OPERATOR = re.compile("|".join(re.escape(op) for op in _OPERATORS))
# What ends a word: bash's metacharacters (a carriage return is not one).
_WORD_END = frozenset(" \t\n") | _OPERATOR_START
# A run of characters that mean only themselves in a word, read at once.
_PLAIN = re.compile(r"[^ \t\n'\"\\$`*?\[\]{},.;&|()<>+@!]+")
# The same, when no brace or bracket is open in the word.
_PLAIN_OUTSIDE = re.compile(r"(?:[^ \t\n'\"\\$`*?\[{;&|()<>+@!]|[+@!](?!\())+")
# What ends a run in a here-document's body, and in a group (see _Lexer._matched).
_SCAN_SPECIAL = re.compile(r"[\\$`]")
_BACKTICK_SPECIAL = re.compile(r"[\\`]")
_GROUP_SPECIAL = {op: re.compile("[\\\\'\"`$%s]" % re.escape(op + close)) for op, close in (("(", ")"), ("[", "]"))}
_DQ_PLAIN = re.compile(r'[^"\\$`]+')
# A line continuation: a backslash (not itself escaped) before a newline.
_CONTINUATION = re.compile(r"(?<!\\)((?:\\\\)*)\\\n")
# Before "(": an extended glob (bash reads it as one word when extglob is
# on, and always in the patterns of [[ ]]).
_EXTGLOB = frozenset("?*+@!")
_ASSIGNMENT = re.compile(r"[A-Za-z_][A-Za-z0-9_]*(\[[^]]*\])?\+?=")
_ASSIGNED = re.compile(r"([A-Za-z_][A-Za-z0-9_]*)(?:\[(.*)\])?\+?=(.*)", re.S)
_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_NAMED = re.compile(r"([A-Za-z_][A-Za-z0-9_]*)(?:\[(.*)\])?", re.S)
_NUMBER = re.compile(r"[+-]?(?:0[xX][0-9A-Fa-f]+|[0-9]+(?:#[0-9A-Za-z@_]+)?)?")
# A value that is one arithmetic expansion (a number; what it reads is checked on its own).
_ARITH_VALUE = re.compile(r"\$\(\((?:[^()]|\([^()]*\))*\)\)|\$\[[^][]*\]")
_FD_VARIABLE = re.compile(r"\{[A-Za-z_][A-Za-z0-9_]*\}\Z")
# After "${": the parameter ("!" indirection, "#" length).
_PARAMETER = re.compile(r"(?P<pre>[!#](?=[A-Za-z_0-9@*#?$!-]))?(?P<name>[A-Za-z_][A-Za-z0-9_]*|[0-9]+|[-@*#?$!])")
_PARAMETER_START = frozenset(string.ascii_letters + string.digits + "_@*#?$!-")
_KEYWORDS = frozenset({"!", "then", "do", "else", "elif", "if", "while", "until", "{", "}", "fi", "done", "esac"})
# After "coproc NAME": a compound command (so NAME is the coprocess's name).
_COMPOUND = frozenset({"{", "(", "while", "until", "for", "if", "case", "select", "[["})
_SHELLS = frozenset({"sh", "bash", "dash", "zsh", "ksh", "ksh93", "mksh", "lksh", "oksh", "pdksh", "ash",
                     "rbash", "yash", "posh", "fish", "csh", "tcsh"})
_FIND_EXEC = frozenset({"-exec", "-execdir", "-ok", "-okdir"})
# [[ A -eq B ]]: both operands are evaluated as arithmetic.
_ARITH_TESTS = frozenset({"-eq", "-ne", "-lt", "-le", "-gt", "-ge"})
# Scripts nested in one another (sh -c "sh -c '...'", $(...)): deeper is unreadable.
_MAX_DEPTH = 8
# Constructs nested in one another in one text (${, $(, quotes, ...).
_MAX_NEST = 40
# Prefix commands stripped from one command (nice nice ... rm).
_MAX_STAGES = 32
# Words, operators, newlines, expansions, brace groups, here-document lines
# (and a unit per 16 characters of arithmetic) read in all, the line's and
# those of the scripts in it: bounds the reader's work, whatever the line's
# shape.
_MAX_TOKENS = 8192
# Setting these changes what later commands run (or runs code): BASH_ENV
# and ENV name a file a shell reads first, PS4 is expanded (running its
# $(...)) by set -x, BASH_ALIASES and BASH_CMDS are the alias and hash
# tables, SHELLOPTS/BASHOPTS/BASH_COMPAT/POSIXLY_CORRECT change how the
# line (and the wrappers' options) are read.
_DANGEROUS = frozenset({"PATH", "BASH_ENV", "ENV", "BASH_ALIASES", "BASH_CMDS", "PS0", "PS1", "PS2", "PS3", "PS4",
                        "PROMPT_COMMAND", "SHELLOPTS", "BASHOPTS", "BASH_COMPAT", "POSIXLY_CORRECT", "MAILPATH",
                        "MAIL", "BASH_LOADABLES_PATH", "EXECIGNORE", "BASH_XTRACEFD", "HISTFILE", "INPUTRC"})
_DANGEROUS_ASSIGNMENT = re.compile(r"(%s)(\[[^]]*\])?\+?=" % "|".join(sorted(_DANGEROUS)))


class _Word:
    """
    A shell word: its text with quotes removed (expansions kept as
    written), and what is only known once the shell expands it.

    @ivar expanded: a part of it is an expansion ($, backticks, a glob, a
        brace expansion): its value is decided at run time.
    @ivar lead: its first character comes from an expansion (it may start
        with "-", i.e. be an option).
    @ivar split: it may become several words (an unquoted expansion, a
        brace expansion, C{"$@"}, C{"${a[@]}"}).
    @ivar span: where it is in the text the lexer read (the lexer, start,
        end), for the arithmetic check.
    @ivar arith: an arithmetic command C{((...))} (never a program).
    @ivar array: an array assignment C{NAME=(...)} as written.
    """

    __slots__ = ("text", "expanded", "lead", "split", "span", "arith", "array")

    def __init__(self, text: str, expanded: bool = False, lead: bool = False, split: bool = False,
                 span: tuple[Any, int, int] | None = None) -> None:
        self.text = text
        self.expanded = expanded
        self.lead = lead
        self.split = split
        self.span = span
        self.arith = False
        self.array = False  # NAME=(...) as written

    @property
    def opaque(self) -> bool:
        """The shell may turn it into other words, or into an option."""
        return self.lead or self.split

    @property
    def unsure(self) -> bool:
        """As L{opaque}, or an option some of whose letters come from an expansion (C{-r"$x"})."""
        return self.lead or self.split or (self.expanded and self.text[:1] == "-")


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
    A bash tokenizer: words with quotes removed and what in them is
    expanded at run time, operators, comments, here-documents, and the
    commands of every command substitution, lexed once (a C{$(...)} is a
    L{_Lexer} of its own over the same text, as bash 5.2 parses it).

    The lexer of a whole text (its I{root}) also collects what the
    arithmetic check needs: where the text is arithmetic (L{arith}), what
    bash would evaluate as code whatever the values (L{sinks}), and the
    variables C{${NAME:=...}} assigns (L{assigned}).
    """

    def __init__(self, text: str, start: int = 0, end: int | None = None, root: _Lexer | None = None,
                 nest: int = 0, limit: list[int] | None = None) -> None:
        if nest > _MAX_NEST:
            raise ValueError(f"constructs nested more than {_MAX_NEST} deep")
        self.text = text
        self.pos = start
        self.n = len(text) if end is None else end
        self.root: _Lexer = self if root is None else root
        self._nest = nest
        self.result: list[_Token] = []
        # Command substitutions: lexed ($(...), <(...)), or text (backticks).
        self.substitutions: list[_Lexer | str] = []
        self.expansions = False  # a $ or backtick expansion anywhere
        self.stdin = False  # a pipe, an input redirection or a here-document anywhere
        # "$(" or a backtick in single-quoted text: bash still runs it where
        # it evaluates the text as code (x='a[$(cmd)]'; echo $((x))).
        self.latent: list[str] = []
        self.cond_arith: list[_Word] = []  # [[ A -eq B ]]: A and B
        self.cond_names: list[_Word] = []  # [[ -v NAME ]]: NAME
        self._heredocs: list[tuple[_Token, str, bool, bool]] = []
        # The word being read: literal characters so far, and its flags.
        self._produced = 0
        self._expanded = self._lead = self._split = False
        if root is None:
            # Words and operators it may still read (shared with other texts).
            self.limit = [_MAX_TOKENS] if limit is None else limit
            self.arith: list[tuple[int, int]] = []  # spans of arithmetic text
            self.sinks: list[str] = []
            self.assigned: list[str] = []

    # -- tokens -----------------------------------------------------------------

    def tokens(self, comsub: bool = False) -> list[_Token]:
        """
        The tokens to the end of the text, or (C{comsub}) to the
        parenthesis closing a C{$(} or C{<(} just read.
        """
        out = self.result
        text, n = self.text, self.n
        gap = True  # blanks, a newline or the start before the next token
        stack: list[str] = []  # in a substitution: "(" and "case" (a pattern's ")" closes nothing)
        cond: int | None = None  # where "[[" is in out
        regex = False  # the next word is [[ =~ ]]'s regular expression
        while True:
            start = self.pos
            while self.pos < n and text[self.pos] in " \t":
                self.pos += 1
            gap = gap or self.pos > start
            if self.pos >= n:
                if comsub:
                    raise ValueError("No closing parenthesis")
                if cond is not None:
                    self._cond(out, cond)
                self._read_heredocs()
                return out
            c = text[self.pos]
            if c == "#":  # a comment, to the end of the line
                end = text.find("\n", self.pos, n)
                self.pos = n if end < 0 else end
                continue
            if c == "\n":
                self._count()
                self.pos += 1
                out.append(_Token("\n"))
                self._read_heredocs()
                gap = True
                continue
            if c == "\\" and self.pos + 1 < n and text[self.pos + 1] == "\n":
                self.pos += 2
                continue
            if comsub and c == ")" and not stack:
                if self._heredocs:
                    raise ValueError("a here-document is not ended inside its command substitution")
                if cond is not None:
                    self._cond(out, cond)
                self.pos += 1
                return out
            if regex:
                regex = False
                token = _Token(word=self._word(regex=True))
            elif c == "(" and text.startswith("(", self.pos + 1, n):
                token = _Token(word=self._arith_command())
            elif c in "<>" and text.startswith("(", self.pos + 1, n):
                # Process substitution <(cmd) / >(cmd): a word (a /dev/fd path) of its own.
                self.pos += 2
                self.substitutions.append(self._child())
                self.expansions = True
                self.stdin = self.stdin or c == "<"
                if c == ">":
                    # >(cmd): cmd reads what the outer command writes
                    # (echo 'rm -rf /' > >(sh)).
                    self.substitutions[-1].stdin = True  # type: ignore[union-attr]
                token = _Token(word=_Word(f"{c}(...)", expanded=True))
            elif c in _OPERATOR_START and (op := self._operator()) is not None:
                self._count()
                self.pos += len(op)
                token = _Token(op)
                if op[0] == "<" or op in ("|", "|&"):
                    self.stdin = True
                if cond is not None and op in ("<<", "<<-", "<<<"):
                    raise ValueError(f"{op} inside [[ ]]")
                if comsub and op == "(":
                    stack.append("(")
                elif comsub and op == ")" and stack and stack[-1] == "(":
                    stack.pop()
                if op in ("<<", "<<-"):
                    token.gap, gap = gap, False
                    out.append(token)
                    while self.pos < n and text[self.pos] in " \t":
                        self.pos += 1
                        gap = True
                    start = self.pos
                    delimiter = self._word()
                    raw = _CONTINUATION.sub(r"\1", text[start:self.pos])
                    quoted = any(q in raw for q in "'\"\\")
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
                t = word.text
                if out and out[-1].op in (">&", "<&") and (word.expanded or "$" in t or "`" in t):
                    # ">&WORD" that is not a descriptor is "&>WORD", and
                    # bash expands WORD again: a $(...) in its value runs.
                    self.root.sinks.append(f"the target of {out[-1].op} ({t!r}): bash expands it twice")
                if not word.expanded:
                    # "[[" anywhere: where bash does not take it for the
                    # keyword, what is read differently here is a syntax
                    # error there.
                    if t == "[[" and cond is None:
                        cond = len(out)
                    elif cond is not None and t == "]]":
                        self._cond(out, cond)
                        cond = None
                    elif cond is not None and t == "=~":
                        regex = True
                    if comsub and t == "case":
                        stack.append("case")
                    elif comsub and t == "esac" and stack and stack[-1] == "case":
                        stack.pop()
            token.gap, gap = gap, False
            out.append(token)

    def _operator(self) -> str | None:
        m = _OPERATOR.match(self.text, self.pos, self.n)
        return None if m is None else m.group()

    def _cond(self, out: list[_Token], start: int) -> None:
        """The operands of [[ ]] that bash evaluates as arithmetic, or as variable names."""
        for i in range(start, len(out)):
            word = out[i].word
            if word is None or word.expanded:
                continue
            if word.text in _ARITH_TESTS:
                for j in (i - 1, i + 1):
                    operand = out[j].word if start < j < len(out) else None
                    if operand is not None:
                        self.cond_arith.append(operand)
            elif word.text == "-v" and i + 1 < len(out):
                named = out[i + 1].word
                if named is not None:
                    self.cond_names.append(named)

    def _child(self) -> _Lexer:
        """The commands of a C{$(...)} or C{<(...)} whose parenthesis was just read."""
        child = _Lexer(self.text, self.pos, self.n, self.root, self._nest + 1)
        child.tokens(comsub=True)
        self.pos = child.pos
        return child

    def whole(self, tokens: list[_Token]) -> str:
        """The line's words (quotes removed) and operators, as spaced in the line; newlines as spaces."""
        parts: list[str] = []
        for token in tokens:
            if token.op == "\n":
                continue
            if parts and token.gap:
                parts.append(" ")
            if token.op is not None:
                parts.append(token.op)
            elif token.word is not None:  # (a token is one or the other)
                parts.append(token.word.text)
        return "".join(parts)

    def _read_heredocs(self) -> None:
        """After a newline: the bodies of the here-documents started on the line."""
        text, n = self.text, self.n
        pending, self._heredocs = self._heredocs, []
        for token, delimiter, quoted, strip_tabs in pending:
            lines: list[str] = []
            body_start = body_end = self.pos
            while self.pos < n:
                self._count()
                line_start = self.pos
                end = text.find("\n", self.pos, n)
                line = text[self.pos:n if end < 0 else end]
                self.pos = n if end < 0 else end + 1
                # Unquoted, a backslash-newline joins lines before the
                # delimiter is looked for (reading on is the safe side).
                while not quoted and line.endswith("\\") and self.pos < n:
                    end = text.find("\n", self.pos, n)
                    line = line[:-1] + text[self.pos:n if end < 0 else end]
                    self.pos = n if end < 0 else end + 1
                if strip_tabs:
                    line = line.lstrip("\t")
                if line == delimiter:
                    body_end = line_start
                    break
                lines.append(line)
                body_end = self.pos
            body = "".join(f"{line}\n" for line in lines)
            expanded = False
            if not quoted:
                expanded = self._scan(body_start, body_end)
            token.here = _Word(body, expanded=expanded, lead=expanded, split=expanded)

    def _scan(self, start: int, end: int) -> bool:
        """
        The expansions in C{text[start:end]} (a here-document's body, or
        single-quoted text bash expands), read as in double quotes: note
        the command substitutions; return whether there is any expansion.
        """
        saved = self.pos, self.n, self._save()
        self.pos, self.n = start, end
        self._expanded = False
        text = self.text
        try:
            while True:
                special = _SCAN_SPECIAL.search(text, self.pos, end)
                if special is None:
                    break
                c = special.group()
                self.pos = special.end()
                if c == "\\":
                    self.pos += 1
                else:
                    self._dollar(c, True)
            return self._expanded
        finally:
            self.pos, self.n = saved[0], saved[1]
            self._restore(saved[2])

    # -- words --------------------------------------------------------------------

    def _save(self) -> tuple[int, bool, bool, bool]:
        return self._produced, self._expanded, self._lead, self._split

    def _restore(self, mark: tuple[int, bool, bool, bool]) -> None:
        self._produced, self._expanded, self._lead, self._split = mark

    def _enter(self) -> None:
        self._nest += 1
        if self._nest > _MAX_NEST:
            raise ValueError(f"constructs nested more than {_MAX_NEST} deep")

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

    def _count(self, units: int = 1) -> None:
        limit = self.root.limit
        limit[0] -= units
        if limit[0] < 0:
            raise ValueError(f"more than {_MAX_TOKENS} words, operators and expansions")

    def _word(self, regex: bool = False, compound: bool = False) -> _Word:
        self._count()
        text, n = self.text, self.n
        start = self.pos
        parts: list[str] = []
        self._produced = 0
        self._expanded = self._lead = self._split = False
        braces: list[list[Any]] = []  # [where "{" was produced, has "," or ".."]
        bracket: int | None = None  # where an unquoted "[" was produced
        array = False
        while self.pos < n:
            plain = (_PLAIN if braces or bracket is not None else _PLAIN_OUTSIDE).match(text, self.pos, n)
            if plain is not None:
                parts.append(self._literal(plain.group()))
                self.pos = plain.end()
                continue
            c = text[self.pos]
            if regex and c in "(|":
                # [[ =~ ]]: parentheses group (blanks, "#" and all) and "|" is a character.
                begin = self.pos
                self.pos += 1
                if c == "(":
                    mark = self._save()
                    self._matched("(", ")")
                    self._restore(mark)
                parts.append(self._literal(text[begin:self.pos]))
                continue
            if c in _EXTGLOB and text.startswith("(", self.pos + 1, n):
                # @(...), !(...): one word to the closing parenthesis.
                if compound:
                    # Without extglob, a syntax error, after which bash goes
                    # on with the next line: which it is, is not guessed at.
                    raise ValueError("an extended glob in an array assignment")
                begin = self.pos
                self._glob(self._produced)
                self.pos += 2
                mark = self._save()
                self._matched("(", ")")
                self._restore(mark)
                parts.append(self._literal(text[begin:self.pos]))
                continue
            if c == "(" and parts and not compound and not self._expanded and text[start:self.pos] == "".join(parts) \
                    and _ASSIGNMENT.fullmatch("".join(parts)):
                # NAME=(...): an array assignment, one word.
                self.pos += 1
                parts.append(self._literal("(" + self._compound() + ")"))
                array = True
                continue
            if c in _WORD_END:  # a blank, or an operator's first character
                break
            self.pos += 1
            if c == "\\":
                if self.pos < n:
                    if text[self.pos] != "\n":
                        parts.append(self._literal(text[self.pos]))
                    self.pos += 1
            elif c == "'":
                end = text.find("'", self.pos, n)
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
            elif c == "[" and bracket is None and not braces and (
                _NAME.fullmatch(text, start, self.pos - 1) or (compound and self.pos - 1 == start)
            ):
                # NAME[...]: where an assignment may start, bash reads the
                # subscript as one word to its "]" (blanks, "#", "<<" in it).
                begin = self.pos - 1
                if self._subscript():
                    parts.append(self._literal(text[begin:self.pos]))
                    self._glob(begin - start)
                    if compound and begin == start:
                        # [SUBSCRIPT]=VALUE in NAME=(...): arithmetic (for an indexed array).
                        self.root.arith.append((begin + 1, self.pos - 1))
                else:
                    bracket = self._produced
                    parts.append(self._literal(c))
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
                    self._count()
                    braces.append([self._produced, False])
                elif braces and (c == "," or (c == "." and text.startswith(".", self.pos, n))):
                    braces[-1][1] = True
                elif c == "}" and braces:
                    begin, listed = braces.pop()
                    if listed:
                        self._expanded = self._split = True
                        self._lead = self._lead or begin == 0
                parts.append(self._literal(c))
        word = _Word("".join(parts), self._expanded, self._lead, self._split, (self.root, start, self.pos))
        word.array = array
        return word

    def _compound(self) -> str:
        """
        After C{NAME=(}: the array's words, to the closing parenthesis
        (comments and newlines allowed).  A syntax error in it makes bash
        drop the rest of the line and go on with the next one (unlike
        elsewhere): anything but words is refused here.
        """
        text, n = self.text, self.n
        mark = self._save()
        self._enter()
        words: list[str] = []
        expanded = False
        while True:
            while self.pos < n and text[self.pos] in " \t\n":
                self.pos += 1
            if self.pos >= n:
                raise ValueError("No closing parenthesis")
            c = text[self.pos]
            if c == "#":
                end = text.find("\n", self.pos, n)
                self.pos = n if end < 0 else end
                continue
            if c == ")":
                self.pos += 1
                break
            if c in "<>" and text.startswith("(", self.pos + 1, n):
                self.pos += 2
                self.substitutions.append(self._child())
                self.expansions = expanded = True
                words.append(f"{c}(...)")
                continue
            if c in _OPERATOR_START:
                raise ValueError(f"{c!r} in an array assignment")
            word = self._word(compound=True)  # VALUE or [SUBSCRIPT]=VALUE
            expanded = expanded or word.expanded
            words.append(word.text)
        self._nest -= 1
        self._restore(mark)
        if expanded:
            self._expanded = self._split = True
        return " ".join(words)

    def _glob(self, where: int) -> None:
        self._expanded = True
        if where == 0:
            self._lead = True

    def _double(self) -> str:
        text, n, parts = self.text, self.n, []
        self._enter()
        while True:
            plain = _DQ_PLAIN.match(text, self.pos, n)
            if plain is not None:
                parts.append(self._literal(plain.group()))
                self.pos = plain.end()
            if self.pos >= n:
                raise ValueError("No closing quotation")
            c = text[self.pos]
            self.pos += 1
            if c == '"':
                self._nest -= 1
                return "".join(parts)
            if c == "\\":
                if self.pos < n and text[self.pos] in '$`"\\\n':
                    if text[self.pos] != "\n":
                        parts.append(self._literal(text[self.pos]))
                    self.pos += 1
                else:
                    parts.append(self._literal(c))
            else:
                parts.append(self._dollar(c, True))

    def _dollar(self, c: str, quoted: bool) -> str:
        """After C{$} or a backtick: an expansion's text, kept as written."""
        text, n = self.text, self.n
        self._count()
        mark = self._save()
        if c == "`":
            parts = []
            while True:
                special = _BACKTICK_SPECIAL.search(text, self.pos, n)
                if special is None:
                    raise ValueError("No closing backquote")
                parts.append(text[self.pos:special.start()])
                self.pos = special.end()
                if special.group() == "`":
                    break
                if self.pos < n and text[self.pos] in "$`\\":
                    parts.append(text[self.pos])
                    self.pos += 1
                else:
                    parts.append("\\")
            inner = "".join(parts)
            self.substitutions.append(inner)
            self.expansions = True
            self._expansion(quoted)
            return f"`{inner}`"
        nxt = text[self.pos] if self.pos < n else ""
        if nxt == "(":
            self.pos += 1
            begin = self.pos
            if text.startswith("(", self.pos, n):
                # $((...)): arithmetic (bash 5.2 takes "$((" for arithmetic first).
                self.pos += 1
                self._arith("(", ")", True)
            else:
                self.substitutions.append(self._child())
            self.expansions = True
            self._restore(mark)
            self._expansion(quoted)
            return "$(" + text[begin:self.pos - 1] + ")"
        if nxt == "[":
            # $[...]: the old spelling of $((...)).
            self.pos += 1
            begin = self.pos
            self._arith("[", "]", False)
            self.expansions = True
            self._restore(mark)
            self._expansion(quoted)
            return "$[" + text[begin:self.pos - 1] + "]"
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
            begin = self.pos
            split = self._braced(quoted)
            self.expansions = True
            self._restore(mark)
            self._expansion(quoted, split=split)
            return "${" + text[begin:self.pos - 1] + "}"
        if nxt and nxt in "#?$!":
            # $#, $?, $$, $!: a number (never an option, never several words).
            self.expansions = self._expanded = True
            self._produced += 1
            return "$"
        if nxt and nxt in _PARAMETER_START:
            self.expansions = True
            self._expansion(quoted, split=nxt in "@*")
            return "$"
        return self._literal("$")  # a "$" before anything else is itself

    def _braced(self, quoted: bool) -> bool:
        """
        After C{${}: read to its closing brace, noting what is arithmetic
        (a subscript, a substring's offset and length), what it assigns
        (C{${NAME:=...}}), and what evaluates a value as code.  Return
        whether it may become several words.
        """
        text, n, root = self.text, self.n, self.root
        if self.pos < n and text[self.pos] in " \t\n|":
            # "${ cmd; }" and "${| cmd; }": bash 5.3 runs cmd (5.2 refuses it).
            raise ValueError("${ COMMAND; } (a command substitution in bash 5.3)")
        self._enter()
        split = False
        offset: int | None = None  # ${NAME:OFFSET:LENGTH}
        head = _PARAMETER.match(text, self.pos, n)
        if head is not None:
            pre, name = head.group("pre") or "", head.group("name")
            p = head.end()
            subscript = None
            if text.startswith("[", p, n):
                self.pos = p + 1
                self._matched("[", "]")
                subscript = text[p + 1:self.pos - 1]
                if subscript in ("@", "*"):
                    split = pre != "#"
                else:
                    root.arith.append((p + 1, self.pos - 1))
                p = self.pos
            op = text[p] if p < n else ""
            after = text[p + 1] if p + 1 < n else ""
            if pre == "!" and not (subscript in ("@", "*") or (subscript is None and op in "@*" and after == "}")):
                root.sinks.append(f"${{!{name}...}} (an indirect expansion evaluates a value as a name)")
            if pre == "!" or (name in "@*" and not pre):
                split = True
            if op == ":" and after not in "-=+?":
                offset = p + 1
            elif op == "=" or (op == ":" and after == "="):
                root.assigned.append(name)
            elif op == "@" and after == "P":
                root.sinks.append(f"${{{name}@P}} (a prompt expansion runs what the value holds)")
            self.pos = p
        while self.pos < n:
            c = text[self.pos]
            self.pos += 1
            if c == "\\":
                self.pos += 1
            elif c == "'":
                end = text.find("'", self.pos, n)
                if end < 0:
                    raise ValueError("No closing quotation")
                if quoted:
                    # In a quoted ${...}, bash expands what is in single quotes.
                    self._scan(self.pos, end)
                self.pos = end + 1
            elif c == '"':
                self._double()
            elif c == "`":
                self._dollar(c, True)
            elif c == "$":
                if text.startswith("'", self.pos, n) and quoted:
                    raise ValueError("$'...' inside a quoted ${...} (bash expands what it decodes)")
                if self.pos < n and text[self.pos] in "({['\"":
                    self._dollar(c, quoted)
            elif c == "}":
                if offset is not None:
                    root.arith.append((offset, self.pos - 1))
                self._nest -= 1
                return split
        raise ValueError("No closing brace")

    def _subscript(self) -> bool:
        """
        After C{NAME[}: to the matching C{]}, if there is one (else C{False},
        and nothing read).  Bash reads it so only where an assignment may
        start; elsewhere a blank or an operator in it ends the word.  Which
        of the two it is is not guessed at: such a subscript is refused.
        """
        start = self.pos
        saved = self._save(), self._nest, len(self.substitutions), len(self.root.arith), len(self.root.sinks)
        try:
            spread = self._matched("[", "]", watch=" \t\n;&|<>()#")
        except ValueError as e:
            if str(e) != "No closing ']'":
                raise
            self.pos = start
            self._restore(saved[0])
            self._nest = saved[1]
            del self.substitutions[saved[2]:], self.root.arith[saved[3]:], self.root.sinks[saved[4]:]
            return False
        if spread:
            raise ValueError("an array subscript holding blanks or operators (one word only where an assignment "
                             "may start)")
        return True

    def _matched(self, open_: str, close: str, watch: str = "") -> bool:
        """
        After C{open_}: to the matching C{close}, as bash's
        parse_matched_pair reads a group (an extended glob, a regular
        expression's parentheses, arithmetic, a subscript): quotes and
        substitutions nest, nothing else is special (no comments, no
        here-documents).  Return whether a character of C{watch} is in it
        outside quotes and substitutions.
        """
        text, n = self.text, self.n
        special = _GROUP_SPECIAL[open_]
        self._enter()
        count = 1
        seen = False  # a character of watch outside quotes and substitutions
        while True:
            m = special.search(text, self.pos, n)
            if m is None:
                break
            if watch and not seen:
                seen = any(ch in watch for ch in text[self.pos:m.start()])
            c = m.group()
            self.pos = m.end()
            if c == "\\":
                self.pos += 1
            elif c == close:
                count -= 1
                if count == 0:
                    self._nest -= 1
                    return seen
            elif c == open_:
                self._count()
                count += 1
            elif c == "'":
                end = text.find("'", self.pos, n)
                if end < 0:
                    raise ValueError("No closing quotation")
                self.pos = end + 1
            elif c == '"':
                self._double()
            elif c == "`":
                self._dollar(c, True)
            elif c == "$" and self.pos < n and text[self.pos] in "({['":
                self._dollar(c, text[self.pos] != "'")
        raise ValueError(f"No closing {close!r}")

    def _arith(self, open_: str, close: str, double: bool) -> None:
        """
        After C{((}, C{$((} or C{$[}: the arithmetic expression, to its
        closing C{))} (C{double}) or C{]}.  A C{((} that does not end so
        would be nested subshells (or, in C{$((}, a command substitution):
        refused, C{( (} is the way to write those.
        """
        start = self.pos
        self._matched(open_, close)
        end = self.pos - 1
        self._count((end - start) // 16)  # the arithmetic check reads it again
        if double:
            if not self.text.startswith(")", self.pos, self.n):
                raise ValueError("(( not closed by )) is read as arithmetic by bash; write ( ( for nested subshells")
            self.pos += 1
        self.root.arith.append((start, end))
        self.expansions = True

    def _arith_command(self) -> _Word:
        """C{((...))} (also C{for ((...))}): one word, never a program."""
        start = self.pos
        self.pos += 2
        self._arith("(", ")", True)
        word = _Word(self.text[start:self.pos], span=(self.root, start, self.pos))
        word.arith = True
        return word


def _lex(text: str, limit: list[int]) -> _Lexer:
    """
    Lex C{text}.  Bash removes a line continuation (backslash-newline)
    before it reads the line, except in single quotes, quoted
    here-documents and comments; the lexer, only where it reads words.  So
    a line holding one is lexed again with every continuation removed: if
    the two readings differ (a continuation inside an operator, after a
    C{$}, in a C{${...}}'s name, ...), which one bash takes is not
    guessed at (L{ValueError}).
    """
    lexer = _Lexer(text, limit=limit)
    lexer.tokens()
    if "\\\n" in text:
        joined = _CONTINUATION.sub(r"\1", text)
        if joined != text:
            other = _Lexer(joined, limit=limit)
            try:
                other.tokens()
            except ValueError:
                same = False
            else:
                same = _fingerprint(lexer) == _fingerprint(other)
            if not same:
                raise ValueError("a line continuation (backslash-newline) where bash would read the line otherwise")
    return lexer


def _fingerprint(lexer: _Lexer) -> list[Any]:
    """What a lexed text reads as, continuations removed from its texts (see L{_lex})."""

    def norm(text: str) -> str:
        return _CONTINUATION.sub(r"\1", text)

    out: list[Any] = []
    for token in lexer.result:
        if token.word is not None:
            w = token.word
            out.append((norm(w.text), w.expanded, w.lead, w.split, w.arith))
        else:
            out.append(token.op)
        if token.here is not None:
            out.append(("here", norm(token.here.text), token.here.expanded))
    for inner in lexer.substitutions:
        out.append(norm(inner) if isinstance(inner, str) else _fingerprint(inner))
    out.append([norm(t) for t in lexer.latent])
    out.append([norm(w.text) for w in lexer.cond_arith + lexer.cond_names])
    if lexer.root is lexer:
        out.append(sorted(norm(lexer.text[s:e]) for s, e in lexer.arith))
        out.append(sorted(lexer.sinks))
        out.append(sorted(lexer.assigned))
    return out


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


class _Unknown(Exception):
    """An option the gateway does not know the program to take (or an ambiguous abbreviation)."""


_NONE, _REQUIRED, _OPTIONAL = 0, 1, 2


class _Spec:
    """
    A program's options as getopt_long reads them.

    @ivar short: letter -> (argument kind, name).
    @ivar long: long name -> (argument kind, name): the name is the short
        letter the option stands for, if any.
    @ivar stop: the first operand ends the options ("+" in the optstring,
        as the wrappers all have); else options may follow operands.
    """

    __slots__ = ("short", "long", "stop")

    def __init__(self, optstring: str, longs: str = "", stop: bool = True) -> None:
        self.short: dict[str, tuple[int, str]] = {}
        i = 0
        while i < len(optstring):
            letter = optstring[i]
            i += 1
            kind = _NONE
            if optstring.startswith("::", i):
                kind, i = _OPTIONAL, i + 2
            elif optstring.startswith(":", i):
                kind, i = _REQUIRED, i + 1
            self.short[letter] = (kind, letter)
        self.long: dict[str, tuple[int, str]] = {}
        for entry in longs.split():
            # NAME[=|?][:LETTER]: "=" takes an argument, "?" an optional one
            # (--NAME=ARG only); else as LETTER does, or none.
            name, _, letter = entry.partition(":")
            if name[-1] in "=?":
                kind = _REQUIRED if name[-1] == "=" else _OPTIONAL
                name = name[:-1]
            else:
                kind = self.short[letter][0] if letter else _NONE
            self.long[name] = (kind, letter or name)
        self.stop = stop

    def long_option(self, name: str, word: str) -> tuple[int, str]:
        """As getopt_long: an exact name, or an unambiguous abbreviation."""
        if name in self.long:
            return self.long[name]
        found = [long for long in self.long if name and long.startswith(name)]
        if not found:
            raise _Unknown(f"{word!r} is not an option it is known to take")
        if len({self.long[f] for f in found}) > 1:
            raise _Unknown(f"{word!r} is ambiguous ({', '.join('--' + f for f in found)})")
        return self.long[found[0]]


_NICE_NUMBER = re.compile(r"-[-+]?[0-9]")


def _getopt(
    words: list[_Word], start: int, spec: _Spec, *, numeric: bool = False
) -> tuple[list[tuple[str, _Word | None]], list[_Word], int]:
    """
    GNU getopt_long over C{words[start:]}, with C{spec}.

    @param numeric: C{-N} (and C{--N}, C{-+N}) is an option (nice's adjustment).
    @return: the options (name, argument), the operands (when options may
        follow them), and the index after the last option read.
    @raise _Opaque: a word read as an option is one the shell expands into
        an unknown one, or an option's argument may become several words.
    @raise _Unknown: an option C{spec} does not have, an ambiguous
        abbreviation, or an argument given to an option taking none.
    """
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
            if not spec.stop:
                operands.extend(words[i:])
                i = len(words)
            break
        if numeric and _NICE_NUMBER.match(w):
            opts.append(("n", _Word(w[1:], word.expanded)))
            i += 1
            continue
        if w.startswith("--"):
            name, eq, value = w[2:].partition("=")
            kind, option = spec.long_option(name, w)
            if eq:
                if kind == _NONE:
                    raise _Unknown(f"{w!r} gives an argument to an option that takes none")
                opts.append((option, _Word(value, word.expanded)))
            elif kind == _REQUIRED and i + 1 < len(words):
                if words[i + 1].split:
                    raise _Opaque(words[i + 1].text)
                opts.append((option, words[i + 1]))
                i += 1
            else:
                opts.append((option, None))
            i += 1
            continue
        if w.startswith("-") and len(w) > 1:
            j = 1
            while j < len(w):
                letter = w[j]
                j += 1
                if letter not in spec.short:
                    raise _Unknown(f"-{letter} (in {w!r}) is not an option it is known to take")
                kind, option = spec.short[letter]
                if kind == _NONE:
                    opts.append((option, None))
                    continue
                if j < len(w):
                    opts.append((option, _Word(w[j:], word.expanded)))
                elif kind == _REQUIRED and i + 1 < len(words):
                    if words[i + 1].split:
                        raise _Opaque(words[i + 1].text)
                    opts.append((option, words[i + 1]))
                    i += 1
                else:
                    opts.append((option, None))
                break
            i += 1
            continue
        if spec.stop:
            break
        operands.append(word)
        i += 1
    return opts, operands, i


# Prefix commands: their options (as in their man pages, newest versions:
# an option an older version lacks only makes it fail), and how many
# operands come before the command they run (timeout's duration, chroot's
# root, taskset's mask, chrt's priority).  They all stop reading options at
# the first operand.
_PREFIXES: dict[str, tuple[_Spec, int]] = {
    "sudo": (_Spec("Aa:BbC:c:D:Eeg:Hh::iKklNnPp:R:r:SsT:t:U:u:Vv",
                   "askpass:A auth-type:a background:b bell:B close-from:C login-class:c chdir:D preserve-env?:E "
                   "edit:e group:g set-home:H help host= login:i remove-timestamp:K reset-timestamp:k list:l "
                   "non-interactive:n no-update:N preserve-groups:P prompt:p chroot:R role:r stdin:S shell:s "
                   "type:t command-timeout:T other-user:U user:u version:V validate:v"), 0),
    "doas": (_Spec("a:C:Lnsu:"), 0),
    "command": (_Spec("pvV"), 0),
    "builtin": (_Spec(""), 0),
    "exec": (_Spec("a:cl"), 0),
    "nohup": (_Spec("", "help version"), 0),
    "setsid": (_Spec("cfwhV", "ctty:c fork:f wait:w help:h version:V"), 0),
    "time": (_Spec("ao:f:pqvV", "append:a format:f help output:o output-file:o portability:p quiet:q verbose:v "
                   "version:V"), 0),
    "nice": (_Spec("n:", "adjustment:n help version"), 0),
    "ionice": (_Spec("c:n:p:P:tu:hV", "class:c classdata:n pid:p pgid:P ignore:t uid:u help:h version:V"), 0),
    "stdbuf": (_Spec("i:o:e:", "input:i output:o error:e help version"), 0),
    "timeout": (_Spec("fk:ps:v", "foreground:f kill-after:k preserve-status:p signal:s verbose:v help version"), 1),
    "chrt": (_Spec("abdD:fiphmoP:T:rRvV", "all-tasks:a batch:b deadline:d sched-deadline:D fifo:f idle:i pid:p "
                   "help:h max:m other:o sched-period:P sched-runtime:T rr:r reset-on-fork:R verbose:v "
                   "version:V"), 1),
    "taskset": (_Spec("acphV", "all-tasks:a cpu-list:c pid:p help:h version:V"), 1),
    "chroot": (_Spec("", "groups= userspec= skip-chdir help version"), 1),
    "pkexec": (_Spec("u:", "user:u disable-internal-agent keep-cwd help version"), 0),
    "unshare": (_Spec("fhVmuinpCTUrR:w:S:G:cl:",
                      "mount?:m uts?:u ipc?:i net?:n pid?:p user?:U cgroup?:C time?:T fork:f kill-child? "
                      "mount-proc? mount-binfmt? map-user= map-users= map-group= map-groups= map-root-user:r "
                      "map-current-user:c map-auto map-subids propagation= setgroups= keep-caps setuid:S "
                      "setgid:G root:R wd:w monotonic= boottime= load-interp:l help:h version:V"), 0),
    "nsenter": (_Spec("ahVt:m::u::i::n::p::C::U::T::S:G:r::w::W:FZce",
                      "all:a target:t mount:m uts:u ipc:i net:n pid:p cgroup:C user:U time:T setuid:S setgid:G "
                      "preserve-credentials root:r wd:w wdns:W no-fork:F follow-context:Z join-cgroup:c env:e "
                      "user-parent keep-caps net-socket= help:h version:V"), 0),
    "busybox": (_Spec(""), 0),
    "toybox": (_Spec(""), 0),
    "setpriv": (_Spec("dhV", "dump:d nnp no-new-privs ambient-caps= inh-caps= bounding-set= ruid= euid= rgid= "
                      "egid= reuid= regid= clear-groups keep-groups init-groups groups= securebits= pdeathsig= "
                      "selinux-label= apparmor-profile= landlock-access= landlock-rule= seccomp-filter= "
                      "ptracer= reset-env help:h version:V"), 0),
    "prlimit": (_Spec("c::d::e::f::i::l::m::n::q::r::s::t::u::v::x::y::p:o:Vh",
                      "core:c data:d nice:e fsize:f sigpending:i memlock:l rss:m nofile:n msgqueue:q rtprio:r "
                      "stack:s cpu:t nproc:u as:v locks:x rttime:y pid:p output:o noheadings raw verbose "
                      "help:h version:V"), 0),
    "systemd-run": (_Spec("hrC:H:M:E:p:tPqGdSu:",
                          "help:h version user system capsule:C scope unit:u description= slice= slice-inherit "
                          "remain-after-exit:r send-sighup host:H machine:M service-type= wait uid= gid= nice= "
                          "setenv:E property:p tty:t pty:t pty-late pipe:P quiet:q on-active= on-boot= "
                          "on-startup= on-unit-active= on-unit-inactive= on-calendar= on-timezone-change "
                          "on-clock-change timer-property= path-property= socket-property= no-block "
                          "no-ask-password collect:G working-directory= same-dir:d shell:S job-mode= "
                          "ignore-failure background= json= expand-environment="), 0),
}
# Prefix commands that take more than options: see _Reader._scripted.
_ENV = _Spec("a:C:iS:u:v0", "argv0:a block-signal? chdir:C default-signal? ignore-environment:i ignore-signal? "
             "list-signal-handling null:0 split-string:S unset:u debug:v help version")
_XARGS = _Spec("0a:d:E:e::I:i::L:l::n:oprP:s:tx",
               "null:0 arg-file:a delimiter:d eof?:e replace?:I max-lines?:l max-args:n open-tty:o interactive:p "
               "no-run-if-empty:r max-chars:s verbose:t exit:x max-procs:P process-slot-var= show-limits help "
               "version")
_FLOCK = _Spec("sexnoFuw:E:hV", "shared:s exclusive:x unlock:u nonblock:n nb:n close:o timeout:w wait:w "
               "conflict-exit-code:E no-fork:F verbose help:h version:V")
_SU_LONG = ("command:c session-command= fast:f group:g supp-group:G login:l preserve-environment:m pty:P "
            "shell:s help:h version:V whitelist-environment:w")
_SU = _Spec("c:fg:G:lmpPs:hVw:", _SU_LONG, stop=False)
_RUNUSER = _Spec("c:fg:G:lmpPs:u:hVw:", _SU_LONG + " user:u", stop=False)
_SCRIPT = _Spec("aB:c:eE:fI:O:o:qm:T:t::Vh", "append:a command:c echo:E return:e flush:f force log-in:I "
                "log-out:O log-io:B log-timing:T logging-format:m output-limit:o quiet:q timing?:t help:h "
                "version:V", stop=False)
_WATCH = _Spec("bcCd::eghn:pq:rtvwx", "beep:b color:c no-color:C differences?:d errexit:e chgexit:g help:h "
               "interval:n precise:p equexit:q no-rerun:r no-title:t version:v no-wrap:w exec:x")
_AT = _Spec("q:f:t:MmvlrdbVc", stop=False)
_SSH = _Spec("46AaCfGgKkMNnqsTtVvXxYyB:b:c:D:E:e:F:I:i:J:L:l:m:O:o:P:p:Q:R:S:W:w:")
# Bash builtins that assign variables or run code.
_READ = _Spec("ersa:d:i:n:N:p:t:u:")
_MAPFILE = _Spec("d:n:O:s:tu:C:c:")
_PRINTF = _Spec("v:")
_WAIT = _Spec("fnp:")
_UNSET = _Spec("fvn")
_COMPGEN = _Spec("abcdefgjksuvprDEIo:A:G:W:F:C:X:P:S:V:")
_DECLARE = frozenset({"declare", "typeset", "local", "export", "readonly"})
_BUILTINS = _DECLARE | {"read", "mapfile", "readarray", "printf", "wait", "getopts", "for", "select", "unset", "let",
                        "test", "[", "hash", "enable", "fc", "compgen", "complete"}
# Builtins that run code (or change what a command name runs): never a simple command.
_RUNS_CODE = frozenset({"jobs", "mapfile", "readarray", "compgen", "complete", "fc", "enable", "hash"})
# Commands whose script argument is read (besides shells): see _Reader._scripted.
_SCRIPTED = frozenset({"env", "xargs", "flock", "su", "runuser", "sg", "watch", "script", "eval", "trap", "alias",
                       "source", ".", "at", "batch", "ssh", "newgrp"})
# Programs that run a shell (the user's, the target user's, $SHELL) when
# given no command: that shell reads its script from their standard input
# (sudo -s <<< '...', echo ... | chroot /, su root <<< '...').
_SHELL_WITHOUT_COMMAND = frozenset({"sudo", "doas", "pkexec", "chroot", "unshare", "nsenter", "su", "runuser",
                                    "sg", "script", "ssh"})
# What names a shell's standard input as its script file.
_STDIN_PATHS = frozenset({"/dev/stdin", "/dev/fd/0", "/proc/self/fd/0"})


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


# -- arithmetic -----------------------------------------------------------------

# In arithmetic text: numbers (0x1f, 16#ff), expansions, variable names,
# and what bash would evaluate as code whatever the values are.
_ARITH_TOKEN = re.compile(r"""
    (?P<num>[0-9][0-9A-Za-z_@#]*)
  | \$\{(?P<braced>[^{}]*)\}
  | \$(?P<open>\(\(|\[|\(|\{|')
  | \$(?P<var>[A-Za-z_][A-Za-z0-9_]*)
  | \$(?P<special>[#?$!])
  | \$(?P<other>.?)
  | (?P<name>[A-Za-z_][A-Za-z0-9_]*)
  | (?P<bad>[`'\\])
""", re.X | re.S)
_BRACED_NAME = re.compile(r"(#?)([A-Za-z_][A-Za-z0-9_]*)(\[[@*]\])?")
# Arithmetic assignments (their result is a number).
_ARITH_ASSIGN = re.compile(
    r"(?<![A-Za-z0-9_$])(?P<a>[A-Za-z_][A-Za-z0-9_]*)\s*(?:\[[^]]*\]\s*)?(?:[-+*/%&|^]|<<|>>)?=(?!=)"
    r"|(?P<b>[A-Za-z_][A-Za-z0-9_]*)\s*(?:\+\+|--)|(?:\+\+|--)\s*(?P<c>[A-Za-z_][A-Za-z0-9_]*)"
)
_IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_NUMERIC_ASSIGNMENT = re.compile(
    r"(?:\[[^]\n]*\])?\+?=(?:[+-]?(?:0[xX][0-9A-Fa-f]+|[0-9]+(?:#[0-9A-Za-z@_]+)?)|%s)?(?=[ \t\n;&|)]|\Z)"
    % _ARITH_VALUE.pattern
)
_FOR_BEFORE = re.compile(r"(?:^|[\s;&|()])for[ \t]+\Z")
# Variables bash keeps numeric itself.
_NUMERIC_SPECIAL = frozenset({"RANDOM", "SRANDOM", "SECONDS", "LINENO", "BASHPID", "PPID", "UID", "EUID",
                              "EPOCHSECONDS", "HISTCMD", "OPTIND", "SHLVL"})
# Variables whose assigned value bash evaluates as arithmetic (OPTIND='a[$(cmd)]' runs cmd).
_ARITH_SPECIAL = _NUMERIC_SPECIAL | {"OPTERR"}


def _arith_refs(text: str) -> tuple[set[str], str | None]:
    """The variables arithmetic C{text} reads, or what in it bash would run as code whatever they hold."""
    refs: set[str] = set()
    for m in _ARITH_TOKEN.finditer(text):
        kind = m.lastgroup
        if kind == "braced":
            inner = _BRACED_NAME.fullmatch(m.group("braced"))
            if inner is None:
                return refs, f"${{{m.group('braced')}}}"
            if not inner.group(1):
                refs.add(inner.group(2))
        elif kind == "open":
            if m.group("open") in ("(", "{"):
                return refs, "a command substitution (its output is evaluated)"
            if m.group("open") == "'":
                return refs, "$'...'"
        elif kind in ("var", "name"):
            refs.add(m.group(kind))
        elif kind == "other":
            return refs, f"${m.group('other')} (a value from outside the line)"
        elif kind == "bad":
            return refs, f"{m.group('bad')!r} (quoted text is expanded again)"
    return refs, None


def _merged(spans: list[tuple[int, int]]) -> tuple[list[int], list[int]]:
    starts: list[int] = []
    ends: list[int] = []
    for s, e in sorted(spans):
        if ends and s <= ends[-1]:
            ends[-1] = max(ends[-1], e)
        else:
            starts.append(s)
            ends.append(e)
    return starts, ends


# -- reading --------------------------------------------------------------------


class _Reader:
    """Collects what a command line runs, stage by stage (see the module docstring)."""

    def __init__(self, budget: int = 0) -> None:
        self.lines: list[str] = []
        self.unreadable: list[str] = []
        self.unknown: list[str] = []
        self.finals: list[tuple[str, ...]] = []
        self.find_exec = False
        self.stdin_fed = False  # the script being read has a pipe or an input redirection
        # Characters the reader may still lex again (the scripts of sh -c,
        # eval, here-documents fed to a shell, ...): its work stays linear.
        self.budget = budget
        self.limit = [_MAX_TOKENS]  # words and operators all its lexers may still read
        # For the arithmetic check: every text lexed, arithmetic words
        # (text, span), and the variables assigned a number or anything else.
        self.roots: list[_Lexer] = []
        self.arith_words: list[tuple[str, tuple[Any, int, int] | None]] = []
        self.numeric: set[str] = set()
        self.nonnumeric: set[str] = set()

    def commands(self, commands: list[_Command], lexer: _Lexer, depth: int) -> None:
        """Read a script's commands, then its substitutions and latent ones."""
        # A script run by a command of a script whose standard input the line
        # feeds (bash -c bash <<EOF) reads that input too.
        fed, self.stdin_fed = self.stdin_fed, self.stdin_fed or lexer.stdin
        for command in commands:
            self.command(command, depth)
        self.stdin_fed = fed
        for word in lexer.cond_arith:
            self.arith_words.append((word.text, word.span))
        for word in lexer.cond_names:
            self._name(word, "[[ -v ]]", assigns=False)
        for inner in lexer.substitutions:
            if isinstance(inner, str):
                self.script(inner, depth + 1, "a command substitution")
            elif depth + 1 > _MAX_DEPTH:
                self.unreadable.append(f"a command substitution is nested more than {_MAX_DEPTH} deep")
            else:
                self.commands(list(_commands(inner.result)), inner, depth + 1)
        for text in lexer.latent:
            # Over-read, best effort: lines only, never a reason to refuse.
            self.budget -= len(text) + 1
            if self.budget < 0:
                break
            sub = _Lexer(text, limit=self.limit)
            try:
                sub._scan(0, len(text))
            except (ValueError, RecursionError):
                continue
            for inner in sub.substitutions:
                other = _Reader(self.budget)
                other.limit = self.limit
                if isinstance(inner, str):
                    other.script(inner, depth + 1, "quoted text")
                elif depth + 1 <= _MAX_DEPTH:
                    other.commands(list(_commands(inner.result)), inner, depth + 1)
                self.budget = other.budget
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
        self.budget -= len(text) + 1
        if self.budget < 0:
            self.lines.append(text)
            self.unreadable.append(f"{what} makes the line too long to read (scripts nested in quotes)")
            return
        try:
            lexer = _lex(text, self.limit)
        except (ValueError, RecursionError) as e:
            self.lines.append(text)
            self.unreadable.append(f"{what} is not valid shell syntax ({e})")
            return
        self.roots.append(lexer)
        self.commands(list(_commands(lexer.result)), lexer, depth)

    def script_word(self, word: _Word, depth: int, what: str) -> None:
        """A word some program runs as a script (sh -c, eval, su -c, ...)."""
        if word.expanded:
            # "sh -c "$x"": the script is whatever $x holds when it runs.
            self.unreadable.append(f"the script of {what} is only known at run time ({word.text!r})")
        self.script(word.text, depth + 1, f"the script of {what}")

    def callback(self, word: _Word, depth: int, what: str) -> None:
        """A script run with arguments added (an alias, mapfile -C, compgen -C)."""
        count = len(self.finals)
        self.script_word(word, depth, what)
        if len(self.finals) > count:
            self.unknown.append(self.finals[-1][0])

    def _suspect(self, words: list[_Word]) -> None:
        """Words that change what the line's later commands are, wherever they are."""
        for word in words:
            t = word.text
            m = _DANGEROUS_ASSIGNMENT.match(t)
            if m is not None:
                self.unreadable.append(f"the line sets {m.group(1)}, which changes what the commands after it run")
            if "BASH_FUNC_" in t:
                self.unreadable.append("a BASH_FUNC_ variable defines a function for the shells it starts")
            if t.startswith("command_not_found_handle"):
                self.unreadable.append("command_not_found_handle runs in place of commands that are not found")

    def command(self, command: _Command, depth: int) -> None:
        words = command.words
        self._suspect(words)
        self.emit(words)
        more = False  # xargs adds arguments from its input
        stages = 0
        while words:
            stages += 1
            if stages > _MAX_STAGES:
                self.unreadable.append(f"a command has more than {_MAX_STAGES} prefix commands")
                return
            i = 0
            while i < len(words):
                w = words[i]
                if _ASSIGNMENT.match(w.text):
                    self._name(w, "an assignment", assigns=True)
                    i += 1
                elif w.text in _KEYWORDS and not w.expanded:
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
            if program.arith:
                return  # ((...)): the arithmetic check reads it
            if program.expanded:
                self.unreadable.append(f"the program {program.text!r} is only known at run time")
                return
            # zsh runs "=rm" as the rm found on PATH; bash finds no "=rm" at all.
            name = posixpath.basename(program.text.removeprefix("=")) or program.text
            if name != program.text:
                words = [_Word(name, span=program.span), *words[1:]]
                self.emit(words)
            try:
                if name in _BUILTINS:
                    self._builtin(name, words, depth)
                elif name == "jobs" and len(words) > 1 and words[1].text == "-x":
                    words = words[2:]  # jobs -x COMMAND: runs it
                    self.emit(words)
                    continue
                elif name in _PREFIXES:
                    spec, skip = _PREFIXES[name]
                    opts, _, i = _getopt(words, 1, spec, numeric=name == "nice")
                    for w in words[i:i + skip]:
                        if w.split:
                            raise _Opaque(w.text)
                    words = words[i + skip:]
                    if not words and name in _SHELL_WITHOUT_COMMAND and (
                        # sudo and doas start one only with -s (or sudo -i):
                        # sudo -S -v, reading a password, does not.
                        name not in ("sudo", "doas") or any(o in ("s", "i") for o, _ in opts)
                    ):
                        self._stdin_script(name, command, depth)
                    self.emit(words)
                    continue
                elif name in _SCRIPTED:
                    inner = self._scripted(name, words, command, depth)
                    if inner is None:
                        return
                    words, extra = inner
                    more = more or extra
                    self.emit(words)
                    continue
                elif name in _SHELLS:
                    self._shell(name, words, command, depth)
                    return
            except _Opaque as e:
                self.unreadable.append(f"{name} reads {str(e)!r} as an option or its argument, "
                                       "and it is only known at run time")
                return
            except _Unknown as e:
                self.unreadable.append(f"{name}: {e}")
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
        if more or any(w.unsure for w in _before_end_of_options(words[1:])):
            self.unknown.append(texts[0])

    # -- variables and builtins ---------------------------------------------------

    def _name(self, word: _Word, who: str, assigns: bool) -> None:
        """
        A variable a word names (C{NAME=VALUE}, C{NAME[SUB]=VALUE}, or a
        builtin's C{NAME} argument; C{assigns}: the builtin sets it): its
        subscript is arithmetic; what it is set to is noted for the
        arithmetic check.
        """
        text = word.text
        head, eq, value = text.partition("=")
        if eq and head.endswith("+"):
            head = head[:-1]
        m = _NAMED.fullmatch(head)
        if m is None:
            if word.expanded:
                self.unreadable.append(f"{who} names a variable only known at run time ({text!r})")
            return
        name, subscript = m.groups()
        if subscript is not None and subscript not in ("@", "*"):
            self.arith_words.append((subscript, word.span))
        if not (eq or assigns):
            return
        if name in _DANGEROUS:
            self.unreadable.append(f"the line sets {name}, which changes what the commands after it run")
        if name in _ARITH_SPECIAL:
            if eq:
                self.arith_words.append((value, word.span))
            else:
                self.unreadable.append(f"{who} sets {name}, whose value bash evaluates as arithmetic")
        if eq and (_NUMBER.fullmatch(value) or _ARITH_VALUE.fullmatch(value)):
            self.numeric.add(name)
        else:
            self.nonnumeric.add(name)

    def _builtin(self, name: str, words: list[_Word], depth: int) -> None:
        """Bash builtins that set variables, evaluate arithmetic or change what later commands run."""
        args = words[1:]
        if name in _DECLARE:
            flags: set[str] = set()
            i = 0
            while i < len(args) and len(args[i].text) > 1 and args[i].text[0] in "-+" and args[i].text != "--":
                if args[i].unsure:
                    raise _Opaque(args[i].text)
                if args[i].text[0] == "-":
                    flags.update(args[i].text[1:])
                i += 1
            if i < len(args) and args[i].text == "--":
                i += 1
            if "n" in flags and name != "export":
                self.unreadable.append(f"{name} -n makes a name reference: what it sets is only known at run time")
            if "i" in flags:
                self.unreadable.append(f"{name} -i makes variables whose values bash evaluates as arithmetic")
            if flags & {"f", "F"}:
                return
            for word in args[i:]:
                self._name(word, name, assigns=False)
                value = word.text.partition("=")[2]
                if word.expanded and not word.array and value[:1] in ("$", "`", "("):
                    # Of an array, bash reads a value expanding to "(...)" as an
                    # array assignment again, running the $(...) in it.
                    self.unreadable.append(f"{name} {word.text!r} may assign an array from an expanded value")
        elif name in ("read", "mapfile", "readarray", "printf", "wait"):
            spec = {"read": _READ, "printf": _PRINTF, "wait": _WAIT}.get(name, _MAPFILE)
            opts, _, i = _getopt(words, 1, spec)
            for option, argument in opts:
                if option in ("a", "v", "p") and argument is not None:
                    self._name(argument, name, assigns=True)
                elif option == "C" and argument is not None:
                    self.callback(argument, depth, f"{name} -C")
            if name not in ("printf", "wait"):
                for word in words[i:]:
                    self._name(word, name, assigns=True)
        elif name == "getopts":
            if len(args) > 1:
                self._name(args[1], name, assigns=True)
        elif name in ("for", "select"):
            if args and not args[0].arith:
                listed = args[2:] if len(args) > 1 and args[1].text == "in" else None
                if name == "for" and listed and all(_NUMBER.fullmatch(w.text) for w in listed):
                    self._name(_Word(args[0].text + "=0", span=args[0].span), name, assigns=True)
                else:
                    self._name(args[0], name, assigns=True)
        elif name == "unset":
            _, _, i = _getopt(words, 1, _UNSET)
            for word in words[i:]:
                self._name(word, name, assigns=False)
        elif name == "let":
            for word in args:
                self.arith_words.append((word.text, word.span))
        elif name in ("test", "["):
            for i, word in enumerate(args[:-1]):
                if word.text == "-v":
                    self._name(args[i + 1], name, assigns=False)
        elif name == "hash":
            if any(w.text.startswith("-") and "p" in w.text for w in args):
                self.unreadable.append("hash -p gives a command name another program")
        elif name == "enable":
            if args:
                self.unreadable.append("enable changes which builtins (or loaded ones) commands run")
        elif name == "fc":
            self.unreadable.append("fc runs commands from the shell's history")
        elif name in ("compgen", "complete"):
            opts, _, _ = _getopt(words, 1, _COMPGEN)
            for option, argument in opts:
                if option == "C" and argument is not None:
                    self.callback(argument, depth, f"{name} -C")
                elif option == "W" and argument is not None and (argument.expanded or "$" in argument.text
                                                                 or "`" in argument.text):
                    self.unreadable.append(f"{name} -W expands its word list when it runs")

    def check_arithmetic(self) -> None:
        """
        Bash evaluates a variable read in arithmetic as arithmetic too, and
        runs a C{$(...)} in an array subscript there (C{x='a[$(cmd)]';
        echo $((x))}): a variable read in arithmetic must be one the line
        sets to plain numbers only (or one of bash's numeric ones), named
        nowhere else in its text but where it is read or so set.
        """
        texts: list[tuple[str, Any]] = [(text, span[0] if span else None) for text, span in self.arith_words]
        spans: dict[int, list[tuple[int, int]]] = {}
        for root in self.roots:
            spans[id(root)] = list(root.arith)
            texts.extend((root.text[s:e], root) for s, e in root.arith)
            self.unreadable.extend(root.sinks)
            for name in root.assigned:
                self.nonnumeric.add(name)
                if name in _DANGEROUS or name in _ARITH_SPECIAL:
                    self.unreadable.append(f"the line sets {name} in a ${{{name}:=...}}")
        for _, span in self.arith_words:
            if span is not None and id(span[0]) in spans:
                spans[id(span[0])].append((span[1], span[2]))
        refs: dict[int, tuple[Any, set[str]]] = {}
        for text, root in texts:
            names, sink = _arith_refs(text)
            if sink is not None:
                self.unreadable.append(f"arithmetic holds {sink}")
                continue
            for m in _ARITH_ASSIGN.finditer(text):
                self.numeric.add(m.group("a") or m.group("b") or m.group("c"))
            if names:
                refs.setdefault(id(root), (root, set()))[1].update(names)
        for root, names in refs.values():
            unsafe = sorted(name for name in names if not self._numeric(name))
            if not unsafe and root is not None:
                unsafe = self._named_elsewhere(root, names, spans.get(id(root), []))
            if unsafe:
                self.unreadable.append(
                    f"arithmetic reads {', '.join(unsafe)}: the line does not set only plain numbers in it, and "
                    "bash evaluates what a variable holds as arithmetic (running a $(...) in it)"
                )

    def _numeric(self, name: str) -> bool:
        if name in self.nonnumeric:
            return False
        if name in _NUMERIC_SPECIAL:
            return True
        # Bash and the client set upper-case variables (REPLY, BASH_REMATCH, LC_*).
        return name in self.numeric and any(c.islower() for c in name)

    @staticmethod
    def _named_elsewhere(root: _Lexer, names: set[str], spans: list[tuple[int, int]]) -> list[str]:
        """The C{names} that the text names other than where arithmetic reads them, C{$NAME} or C{NAME=NUMBER}."""
        text = root.text
        starts, ends = _merged(spans)
        found: set[str] = set()
        for m in _IDENTIFIER.finditer(text):
            name = m.group()
            if name not in names or name in found:
                continue
            s, e = m.span()
            k = bisect.bisect_right(starts, s) - 1
            if k >= 0 and e <= ends[k]:
                continue
            if text[s - 1:s] == "$" or (text[s - 2:s] == "${" or text[s - 3:s] == "${#") and text[e:e + 1] == "}":
                continue
            if (s == 0 or text[s - 1] in " \t\n;&|(") and _NUMERIC_ASSIGNMENT.match(text, e):
                continue
            if _FOR_BEFORE.search(text, max(0, s - 16), s):
                continue  # for NAME in ...: what it is set to is checked where the loop is read
            found.add(name)
        return sorted(found)

    # -- shells and scripted commands ---------------------------------------------

    def _shell(self, name: str, words: list[_Word], command: _Command, depth: int) -> None:
        has_c = has_s = False
        script: _Word | None = None
        i = 1
        while i < len(words):
            word = words[i]
            w = word.text
            if word.unsure:
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
                    # An interactive bash (-i) runs it first: a script too
                    # (bash --rcfile <(echo ...) -i).
                    if i + 1 < len(words):
                        self._script_file(name, words[i + 1], command, depth)
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
            opts, _, _ = _getopt(words, 1, _AT)
            if not any(option == "f" for option, _ in opts):
                self._stdin_script(name, command, depth)
            return None
        if name == "ssh":
            # ssh HOST COMMAND...: the remote shell runs the words joined.
            opts, _, i = _getopt(words, 1, _SSH)
            more, _, j = _getopt(words, i + 1, _SSH)
            if j < len(words):
                self.script_word(_joined(words[j:]), depth, "ssh")
            elif not any(option in ("N", "W") for option, _ in opts + more):
                self._stdin_script(name, command, depth)  # the remote login shell reads it
            return None
        if name == "alias":
            for arg in args:
                if "=" in arg.text:
                    # Where an alias is used, it is replaced before the line
                    # is read (and its last command takes the arguments).
                    self.unreadable.append("an alias is defined: a command after it may not be what it reads")
                    self.callback(_Word(arg.text.split("=", 1)[1], arg.expanded), depth, "alias")
            return None
        if name == "env":
            opts, _, i = _getopt(words, 1, _ENV)
            # GNU env takes every following word with a "=" (and "-") as an assignment.
            while i < len(words) and (words[i].text == "-" or "=" in words[i].text):
                if words[i].opaque:
                    raise _Opaque(words[i].text)
                if words[i].text != "-":
                    self._name(words[i], "env", assigns=True)
                i += 1
            rest = words[i:]
            split = [value for option, value in opts if option == "S" and value is not None]
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
            opts, _, i = _getopt(words, 1, _XARGS)
            replace = None
            for option, value in opts:
                if option in ("I", "i"):
                    replace = value.text if value is not None and value.text else "{}"
            rest = words[i:] or [_Word("echo")]
            if replace is None:
                return rest, True  # the arguments read from its input come after
            # With -I R, R in any word is replaced by an input line.
            rest = [_Word(w.text, True, w.lead or w.text.startswith(replace), w.split) if replace in w.text else w
                    for w in rest]
            return rest, False
        if name == "flock":
            _, _, i = _getopt(words, 1, _FLOCK)
            rest = words[i + 1:]  # after the lock file or descriptor
            if rest and rest[0].text in ("-c", "--command"):
                if len(rest) > 1:
                    self.script_word(rest[1], depth, "flock -c")
                else:
                    self.unreadable.append("flock -c has no script on the line")
                return None
            return rest, False
        if name in ("su", "runuser"):
            opts, operands, _ = _getopt(words, 1, _RUNUSER if name == "runuser" else _SU)
            if name == "runuser" and any(option == "u" for option, _ in opts):
                return operands, False  # runuser -u USER [--] COMMAND...
            scripted = False
            for option, value in opts:
                if option in ("c", "session-command") and value is not None:
                    self.script_word(value, depth, f"{name} -c")
                    scripted = True
            if operands and operands[0].text == "-":
                operands = operands[1:]
            if len(operands) > 1:
                # su USER ARGS...: the user's shell gets ARGS (su root -- -c 'cmd').
                self._shell("sh", [_Word("sh"), *operands[1:]], command, depth)
            elif not scripted:
                self._stdin_script(name, command, depth)  # su [USER]: the user's shell reads it
            return None
        if name == "newgrp":
            self._stdin_script(name, command, depth)  # newgrp [GROUP]: a shell reading standard input
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
            else:
                self._stdin_script(name, command, depth)  # sg GROUP: a shell, as newgrp
            return None
        if name == "watch":
            _, _, i = _getopt(words, 1, _WATCH)
            if i < len(words):
                self.script_word(_joined(words[i:]), depth, "watch")  # it runs sh -c "ARGS..."
            return None
        if name == "script":
            opts, _, _ = _getopt(words, 1, _SCRIPT)
            if not any(option == "c" for option, _ in opts):
                self._stdin_script(name, command, depth)  # $SHELL on a terminal fed from its input
            for option, value in opts:
                if option == "c" and value is not None:
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
    C{sh -c 'rm -rf /x'}.  Linear in the line; a line longer than
    L{MAX_COMMAND_LENGTH} is not read (it is unreadable).
    """
    if len(command) > MAX_COMMAND_LENGTH:
        return ParsedCommand((command,), None, None,
                             f"the line is longer than the {MAX_COMMAND_LENGTH} characters the gateway reads")
    reader = _Reader(budget=4 * len(command) + 4096)
    try:
        lexer = _lex(command, reader.limit)
        tokens = lexer.result
    except (ValueError, RecursionError) as e:
        # (A RecursionError: substitutions nested thousands deep.)
        error = str(e) or type(e).__name__
        return ParsedCommand((command,), error, None, f"the line is not valid shell syntax ({error})")
    reader.roots.append(lexer)
    reader.lines.append(lexer.whole(tokens))
    commands = list(_commands(tokens))
    reader.commands(commands, lexer, 0)
    reader.check_arithmetic()
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
                or program in _SHELLS or program in _PREFIXES or program in _SCRIPTED or program in _RUNS_CODE):
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
    """The C{ssh.commands} patterns of each deny and review rule that can apply (L{restrictive_patterns})."""
    return restrictive_patterns(rules, identity, connection, kind, "ssh.commands")




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


def _candidates(
    finals: Sequence[tuple[str, ...]], patterns: Sequence[str]
) -> Iterator[tuple[tuple[str, ...], str]]:
    """
    The (command, pattern) pairs L{_respelled} may spell, in the order of
    the commands: those whose program the pattern's first word matches
    (found by program, so that many commands cost no more than a lookup).
    """
    by_program: dict[str, list[int]] = {}
    for k, final in enumerate(finals):
        by_program.setdefault(final[0], []).append(k)
    pairs: list[tuple[int, int]] = []
    for j, pattern in enumerate(patterns):
        words = pattern.split()
        if len(words) < 2 or not words[1].startswith("-"):
            continue
        program = words[0]
        if any(c in program for c in "*?["):
            found = [k for name, ks in by_program.items() if fnmatch.fnmatchcase(name, program) for k in ks]
        else:
            found = by_program.get(program, [])
        pairs.extend((k, j) for k in found)
    for k, j in sorted(pairs):
        yield finals[k], patterns[j]


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
        respelled = next((r for final, p in _candidates(parsed.finals, patterns)
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
        witness = next((m for m in map(glob_witness, chosen) if m is not None), None)
        if witness is None:
            return None
        lines.append(witness)
    return tuple(dict.fromkeys(lines))
