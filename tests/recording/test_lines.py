"""
Tests for L{hoopgw.recording.lines}: shell lines reconstructed from pty input.
"""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st
from twisted.trial.unittest import SynchronousTestCase

from hoopgw.recording import LineReconstructor, ShellLine

LEFT, RIGHT, UP, DOWN = b"\x1b[D", b"\x1b[C", b"\x1b[A", b"\x1b[B"
HOME, END, DELETE = b"\x1b[H", b"\x1b[F", b"\x1b[3~"
BS, DEL = b"\x08", b"\x7f"
PASTE_START, PASTE_END = b"\x1b[200~", b"\x1b[201~"


def lines(data: bytes, **kwargs: int) -> list[ShellLine]:
    return LineReconstructor(**kwargs).feed(data)


def sure(*texts: str) -> list[ShellLine]:
    return [ShellLine(t, certain=True) for t in texts]


class TypingTests(SynchronousTestCase):
    def test_plain(self) -> None:
        """Typed text followed by Enter (CR) is one certain line."""
        self.assertEqual(lines(b"ls -la /tmp\r"), sure("ls -la /tmp"))

    def test_no_enter_no_line(self) -> None:
        """Text without Enter is not a line yet; Enter in a later chunk ends it."""
        r = LineReconstructor()
        self.assertEqual(r.feed(b"uptime"), [])
        self.assertEqual(r.feed(b"\r"), sure("uptime"))

    def test_line_endings(self) -> None:
        """CR, LF and CR LF each end exactly one line; empty lines are not reported."""
        self.assertEqual(lines(b"a\rb\nc\r\nd\r\r\n\n"), sure("a", "b", "c", "d"))

    def test_crlf_across_chunks(self) -> None:
        """A CR LF split across chunks is still one Enter."""
        r = LineReconstructor()
        self.assertEqual(r.feed(b"pwd\r"), sure("pwd"))
        self.assertEqual(r.feed(b"\nid\r"), sure("id"))

    def test_utf8(self) -> None:
        """Non-ASCII text is kept, even split across chunks; bad bytes become U+FFFD."""
        r = LineReconstructor()
        data = "echo café".encode()
        self.assertEqual(r.feed(data[:-1]), [])
        self.assertEqual(r.feed(data[-1:] + b" \xff\r"), sure("echo café \ufffd"))

    def test_backspace(self) -> None:
        """DEL and Ctrl-H delete the character before the cursor."""
        self.assertEqual(lines(b"lss" + DEL + b" -lx" + BS + b"a\r"), sure("ls -la"))

    def test_backspace_at_start(self) -> None:
        """Backspace with nothing before the cursor does nothing."""
        self.assertEqual(lines(DEL * 3 + b"id\r"), sure("id"))

    def test_arrows(self) -> None:
        """Left/right arrows (CSI and SS3 forms) move the insertion point."""
        self.assertEqual(lines(b"echo wrld" + LEFT * 3 + b"o" + RIGHT * 9 + b"!\r"), sure("echo world!"))
        self.assertEqual(lines(b"cat fle\x1bOD\x1bODi\x1bOC\x1bOC.txt\r"), sure("cat file.txt"))

    def test_backspace_in_middle(self) -> None:
        """Backspace after moving left deletes inside the line."""
        self.assertEqual(lines(b"rm -rf /tmpx/a" + LEFT * 2 + DEL + b"\r"), sure("rm -rf /tmp/a"))

    def test_home_end(self) -> None:
        """All Home and End encodings, and Ctrl-A / Ctrl-E, jump to the ends."""
        for home, end in [
            (HOME, END),
            (b"\x1bOH", b"\x1bOF"),
            (b"\x1b[1~", b"\x1b[4~"),
            (b"\x1b[7~", b"\x1b[8~"),
            (b"\x01", b"\x05"),
        ]:
            self.assertEqual(lines(b"ls" + home + b"sudo " + end + b" /root\r"), sure("sudo ls /root"), home)

    def test_delete(self) -> None:
        """Delete and Ctrl-D remove the character under the cursor."""
        self.assertEqual(lines(b"xxls" + HOME + DELETE + b"\x04" + END + DELETE + b"\r"), sure("ls"))

    def test_ctrl_u(self) -> None:
        """Ctrl-U at the end of the line kills the whole line."""
        self.assertEqual(lines(b"rm -rf /\x15echo safe\r"), sure("echo safe"))

    def test_ctrl_u_mid_line(self) -> None:
        """
        Ctrl-U before the end kills back to the start as bash does; zsh kills
        the whole line, so the result is marked uncertain.
        """
        self.assertEqual(lines(b"bad ls" + LEFT * 2 + b"\x15\r"), [ShellLine("ls", certain=False)])

    def test_ctrl_w(self) -> None:
        """Ctrl-W kills back to the previous whitespace, trailing spaces included."""
        self.assertEqual(lines(b"git push --force  \x17origin\r"), sure("git push origin"))
        self.assertEqual(lines(b"cat /etc/passwd\x17/etc/hosts\r"), sure("cat /etc/hosts"))

    def test_meta_words(self) -> None:
        """Meta-b / Meta-f / Ctrl-arrows move by word; Meta-DEL kills a word back."""
        self.assertEqual(lines(b"cp a b\x1bb\x1bbx\x1bf\x1bfy\r"), sure("cp xa by"))
        self.assertEqual(lines(b"cp a b\x1b[1;5Dz\x1b[1;5Cw\r"), sure("cp a zbw"))
        self.assertEqual(lines(b"ls /var/log\x1b\x7flib\r"), sure("ls /var/lib"))

    def test_ctrl_k(self) -> None:
        """Ctrl-K kills from the cursor to the end."""
        self.assertEqual(lines(b"ls; rm -rf ~" + HOME + RIGHT * 2 + b"\x0b\r"), sure("ls"))

    def test_ctrl_c(self) -> None:
        """Ctrl-C discards the line being typed, uncertainty included."""
        self.assertEqual(lines(b"rm -rf /\x03ls\r"), sure("ls"))
        self.assertEqual(lines(UP + b"\x03\r"), [])

    def test_ctrl_l(self) -> None:
        """Ctrl-L clears the screen and leaves the line alone."""
        self.assertEqual(lines(b"ls\x0c -l\r"), sure("ls -l"))


class UncertainTests(SynchronousTestCase):
    def test_history(self) -> None:
        """
        Up/down arrows and Ctrl-P/N recall history the input does not show:
        the line is uncertain, holding only what was typed after the recall.
        """
        for key in (UP, DOWN, b"\x1bOA", b"\x10", b"\x0e"):
            self.assertEqual(lines(b"ls" + key + b" | wc -l\r"), [ShellLine(" | wc -l", certain=False)])

    def test_history_alone(self) -> None:
        """A recalled line run as-is is still reported, with empty text, as uncertain."""
        self.assertEqual(lines(UP + b"\r"), [ShellLine("", certain=False)])

    def test_tab(self) -> None:
        """Tab completion marks the line uncertain but keeps what was typed."""
        self.assertEqual(lines(b"cat /etc/pas\t\r"), [ShellLine("cat /etc/pas", certain=False)])

    def test_uncertainty_is_per_line(self) -> None:
        """The next line starts certain again."""
        self.assertEqual(
            lines(b"ls\t\rid\r"), [ShellLine("ls", certain=False), ShellLine("id", certain=True)]
        )

    def test_reverse_search_and_yank(self) -> None:
        """Ctrl-R and Ctrl-Y depend on shell state: uncertain."""
        self.assertEqual(lines(b"\x12ssh\r"), [ShellLine("ssh", certain=False)])
        self.assertEqual(lines(b"one two\x17\x19\r"), [ShellLine("one two", certain=False)])

    def test_meta_unknown(self) -> None:
        """An unmodelled Meta key (Meta-. inserts the last argument) makes it uncertain."""
        self.assertEqual(lines(b"vi \x1b.\r"), [ShellLine("vi ", certain=False)])

    def test_too_long(self) -> None:
        """A line longer than the bound is emitted truncated and uncertain."""
        self.assertEqual(
            lines(b"x" * 20 + b"\ry\r", max_line=8),
            [ShellLine("x" * 8, certain=False), ShellLine("y", certain=True)],
        )


class EscapeTests(SynchronousTestCase):
    def test_unknown_sequences_consumed(self) -> None:
        """
        Function keys, focus and mouse reports and other unknown CSI/SS3
        sequences are consumed whole and leave the line as it was.
        """
        noise = b"\x1b[15~\x1b[I\x1b[O\x1b[<0;12;5M\x1bOP\x1b[?1;2c\x1b[2~"
        self.assertEqual(lines(b"l" + noise + b"s\r"), sure("ls"))

    def test_sequence_split_across_chunks(self) -> None:
        """An escape sequence split across chunks is still recognised."""
        r = LineReconstructor()
        self.assertEqual(r.feed(b"ac\x1b"), [])
        self.assertEqual(r.feed(b"["), [])
        self.assertEqual(r.feed(b"Db\r"), sure("abc"))

    def test_interrupted_sequence(self) -> None:
        """A control character inside a sequence ends it and takes effect."""
        self.assertEqual(lines(b"ls\x1b[1\r"), sure("ls"))

    def test_overlong_sequence(self) -> None:
        """An absurdly long parameter string is consumed without effect."""
        self.assertEqual(lines(b"ls" + b"\x1b[" + b"1;" * 1000 + b"D\r"), sure("ls"))

    def test_bracketed_paste(self) -> None:
        """
        Bracketed paste inserts the pasted text literally at the cursor:
        control keys and newlines in it do not edit or submit the line.
        """
        self.assertEqual(
            lines(b"echo " + PASTE_START + b"a\x03b\x7f\tc" + PASTE_END + b"\r"), sure("echo ab\tc")
        )
        self.assertEqual(
            lines(b"  done" + HOME + PASTE_START + b"for i in 1 2\r\ndo echo $i\r" + PASTE_END + b"\r"),
            sure("for i in 1 2\ndo echo $i\n  done"),
        )

    def test_paste_end_split(self) -> None:
        """The paste-end marker split across chunks still ends the paste."""
        r = LineReconstructor()
        self.assertEqual(r.feed(PASTE_START + b"ls" + PASTE_END[:3]), [])
        self.assertEqual(r.feed(PASTE_END[3:] + b"\r"), sure("ls"))

    def test_paste_arrows_ignored(self) -> None:
        """Arrow sequences inside a paste neither move the cursor nor add uncertainty."""
        self.assertEqual(lines(PASTE_START + b"a" + LEFT + UP + b"b" + PASTE_END + b"\r"), sure("ab"))

    def test_keypad(self) -> None:
        """Application-keypad digits insert characters; keypad Enter submits."""
        self.assertEqual(lines(b"echo \x1bOq\x1bOk\x1bOr\x1bOM"), sure("echo 1+2"))


# Input streams made of the keys a user presses: the interesting bytes
# (escapes, controls, partial UTF-8) far more often than random bytes would give.
_KEYS = st.sampled_from(
    [
        b"a",
        b"Z",
        b" ",
        b"/",
        "é".encode(),
        "\U0001f680".encode(),
        b"\r",
        b"\n",
        b"\r\n",
        DEL,
        BS,
        LEFT,
        RIGHT,
        UP,
        DOWN,
        HOME,
        END,
        DELETE,
        b"\x1bOD",
        b"\x1b[1~",
        b"\x1b[4~",
        b"\x01",
        b"\x05",
        b"\x03",
        b"\x15",
        b"\x17",
        b"\x0b",
        b"\t",
        b"\x1bb",
        b"\x1bf",
        b"\x1b\x7f",
        b"\x1b[1;5D",
        PASTE_START,
        PASTE_END,
        b"\x1b",
        b"\x1b[",
        b"\xff",
        b"\xe2\x82",
    ]
)
_STREAMS = st.lists(_KEYS, max_size=60).map(b"".join)


def chunked(data: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted({c % (len(data) + 1) for c in cuts} | {0, len(data)})
    return [data[a:b] for a, b in zip(points, points[1:])]


class PropertyTests(SynchronousTestCase):
    @settings(max_examples=300, deadline=None)
    @given(data=_STREAMS | st.binary(max_size=200), cuts=st.lists(st.integers(min_value=0), max_size=30))
    def test_any_chunking(self, data: bytes, cuts: list[int]) -> None:
        """However the input is chunked, the same lines come out."""
        whole = LineReconstructor().feed(data)
        r = LineReconstructor()
        pieces: list[ShellLine] = []
        for chunk in chunked(data, cuts):
            pieces.extend(r.feed(chunk))
        self.assertEqual(pieces, whole)

    @settings(max_examples=300, deadline=None)
    @given(data=st.lists(st.binary(max_size=50) | _KEYS, max_size=40))
    def test_arbitrary_bytes(self, data: list[bytes]) -> None:
        """Arbitrary bytes never raise, and no line exceeds the bound."""
        r = LineReconstructor(max_line=16)
        for chunk in data:
            for line in r.feed(chunk):
                self.assertLessEqual(len(line.text), 16)

    @settings(max_examples=200, deadline=None)
    @given(
        st.lists(
            st.text(st.characters(min_codepoint=0x20, blacklist_categories=("Cs", "Cc")), min_size=1),
            max_size=10,
        )
    )
    def test_plain_typing(self, texts: list[str]) -> None:
        """Printable text typed line by line comes back exactly, all certain."""
        data = b"".join(t.encode() + b"\r" for t in texts)
        self.assertEqual(lines(data), sure(*texts))
