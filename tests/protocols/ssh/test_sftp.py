"""
Tests for L{hoopgw.protocols.ssh.sftp}.
"""

from __future__ import annotations

import os
import select
import struct
import subprocess
import tempfile
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st
from twisted.trial.unittest import SkipTest, SynchronousTestCase

from hoopgw.model import Identity
from hoopgw.model import Status as OutcomeStatus
from hoopgw.policy.loader import build_policy_set
from hoopgw.policy.rules import CONDITIONS, ConditionKind
from hoopgw.protocols.ssh.sftp import (
    DEFAULT_MAX_LENGTH,
    AttrsReply,
    Close,
    Data,
    Extended,
    ExtendedReply,
    FileAttributes,
    Fsetstat,
    Fstat,
    Fstatvfs,
    Fsync,
    Handle,
    Hardlink,
    Init,
    Lsetstat,
    Lstat,
    Mkdir,
    Name,
    NameEntry,
    Open,
    Opendir,
    OpenFlags,
    Packet,
    PacketType,
    PosixRename,
    Read,
    Readdir,
    Readlink,
    Realpath,
    Remove,
    Rename,
    Request,
    Rmdir,
    Sender,
    Setstat,
    SFTPAuditor,
    SFTPError,
    SFTPParser,
    Stat,
    Status,
    StatusCode,
    Statvfs,
    Symlink,
    Unknown,
    Version,
    Write,
    encode,
)

# -- strategies --------------------------------------------------------------

u32 = st.integers(0, 2**32 - 1)
u64 = st.integers(0, 2**64 - 1)
blob = st.binary(max_size=24)
# Any bytes but NUL, as the codec decodes them (UTF-8, surrogateescape).
path = st.binary(max_size=16).filter(lambda b: b"\0" not in b).map(
    lambda b: b.decode("utf-8", "surrogateescape")
)
text = st.binary(max_size=16).map(lambda b: b.decode("utf-8", "surrogateescape"))
pairs = st.lists(st.tuples(text, blob), max_size=3).map(tuple)
attributes = st.builds(
    lambda size, ids, permissions, times, extended: FileAttributes(
        size, *(ids or (None, None)), permissions, *(times or (None, None)), extended  # type: ignore[misc,call-arg]
    ),
    st.none() | u64,
    st.none() | st.tuples(u32, u32),
    st.none() | u32,
    st.none() | st.tuples(u32, u32),
    pairs,
)
KNOWN_EXTENSIONS = {c.EXTENSION for c in (PosixRename, Hardlink, Statvfs, Fstatvfs, Fsync, Lsetstat)}
CLIENT_TYPES = {1, *range(3, 21), 200}
SERVER_TYPES = {2, *range(101, 106), 201}


def unknown(known: set[int]) -> st.SearchStrategy[Unknown]:
    return st.builds(Unknown, st.integers(0, 255).filter(lambda t: t not in known), blob)


client_packets = st.one_of(
    st.builds(Init, u32, pairs),
    st.builds(Open, u32, path, u32, attributes),
    st.builds(Close, u32, blob),
    st.builds(Read, u32, blob, u64, u32),
    st.builds(Write.from_data, u32, blob, u64, st.binary(max_size=64)),
    st.builds(Lstat, u32, path),
    st.builds(Fstat, u32, blob),
    st.builds(Setstat, u32, path, attributes),
    st.builds(Fsetstat, u32, blob, attributes),
    st.builds(Opendir, u32, path),
    st.builds(Readdir, u32, blob),
    st.builds(Remove, u32, path),
    st.builds(Mkdir, u32, path, attributes),
    st.builds(Rmdir, u32, path),
    st.builds(Realpath, u32, path),
    st.builds(Stat, u32, path),
    st.builds(Rename, u32, path, path),
    st.builds(Readlink, u32, path),
    st.builds(Symlink, u32, path, path),
    st.builds(Extended, u32, text.filter(lambda n: n not in KNOWN_EXTENSIONS), blob),
    st.builds(PosixRename, u32, path, path),
    st.builds(Hardlink, u32, path, path),
    st.builds(Statvfs, u32, path),
    st.builds(Fstatvfs, u32, blob),
    st.builds(Fsync, u32, blob),
    st.builds(Lsetstat, u32, path, attributes),
    unknown(CLIENT_TYPES),
)

server_packets = st.one_of(
    st.builds(Version, u32, pairs),
    st.builds(Status, u32, u32, text, text),
    st.builds(Handle, u32, blob),
    st.builds(Data.from_data, u32, st.binary(max_size=64)),
    st.builds(Name, u32, st.lists(st.builds(NameEntry, text, text, attributes), max_size=3)),
    st.builds(AttrsReply, u32, attributes),
    st.builds(ExtendedReply, u32, blob),
    unknown(SERVER_TYPES),
)


def parse_one(sender: Sender, packet: Packet) -> Any:
    [parsed] = SFTPParser(sender).feed(encode(packet))
    return parsed


def split(data: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted({c % (len(data) + 1) for c in cuts})
    return [data[a:b] for a, b in zip([0, *points], [*points, len(data)])]


# -- framing and decoding ----------------------------------------------------


class FramingTests(SynchronousTestCase):
    @settings(max_examples=300, deadline=None)
    @given(st.lists(client_packets, max_size=8), st.lists(st.integers(0, 10_000), max_size=12))
    def test_clientChunking(self, packets: list[Packet], cuts: list[int]) -> None:
        """
        However the client's stream is cut into chunks, the parser returns
        the same packets, each with the exact bytes it was read from.
        """
        data = b"".join(encode(p) for p in packets)
        parser = SFTPParser(Sender.client)
        parsed = [p for chunk in split(data, cuts) for p in parser.feed(chunk)]
        self.assertEqual(parsed, packets)
        self.assertEqual(b"".join(p.raw for p in parsed), data)

    @settings(max_examples=300, deadline=None)
    @given(st.lists(server_packets, max_size=8), st.lists(st.integers(0, 10_000), max_size=12))
    def test_serverChunking(self, packets: list[Packet], cuts: list[int]) -> None:
        """
        However the server's stream is cut into chunks, the parser returns
        the same packets, each with the exact bytes it was read from.
        """
        data = b"".join(encode(p) for p in packets)
        parser = SFTPParser(Sender.server)
        parsed = [p for chunk in split(data, cuts) for p in parser.feed(chunk)]
        self.assertEqual(parsed, packets)
        self.assertEqual(b"".join(p.raw for p in parsed), data)

    @settings(max_examples=500, deadline=None)
    @given(client_packets)
    def test_clientRoundTrip(self, packet: Packet) -> None:
        """
        Every client packet type parses back to an equal value, and a parsed
        packet encodes to exactly the bytes it came from.
        """
        data = encode(packet)
        parsed = parse_one(Sender.client, packet)
        self.assertEqual(parsed, packet)
        self.assertIs(type(parsed), type(packet))
        self.assertEqual(encode(parsed), data)

    @settings(max_examples=500, deadline=None)
    @given(server_packets)
    def test_serverRoundTrip(self, packet: Packet) -> None:
        """
        Every server packet type parses back to an equal value, and a parsed
        packet encodes to exactly the bytes it came from.
        """
        data = encode(packet)
        parsed = parse_one(Sender.server, packet)
        self.assertEqual(parsed, packet)
        self.assertIs(type(parsed), type(packet))
        self.assertEqual(encode(parsed), data)

    @settings(max_examples=1000, deadline=None)
    @given(st.sampled_from(Sender), st.binary(max_size=200), st.lists(st.integers(0, 300), max_size=6))
    def test_arbitraryBytes(self, sender: Sender, data: bytes, cuts: list[int]) -> None:
        """
        Arbitrary bytes, in any chunks, yield packets or L{SFTPError},
        never another exception, and an auditor fed what they yield raises
        nothing but L{SFTPError} either.
        """
        parser = SFTPParser(sender, max_length=128)
        auditor = SFTPAuditor()
        feed = auditor.client_packet if sender is Sender.client else auditor.server_packet
        try:
            for chunk in split(data, cuts):
                for packet in parser.feed(chunk):
                    feed(packet)
        except SFTPError:
            pass

    @settings(max_examples=1000, deadline=None)
    @given(st.sampled_from(Sender), st.integers(0, 255), st.binary(max_size=80))
    def test_arbitraryPayloads(self, sender: Sender, packet_type: int, payload: bytes) -> None:
        """
        A well-framed packet of any type with an arbitrary payload decodes
        or raises L{SFTPError}, and so does auditing it.
        """
        data = struct.pack(">IB", len(payload) + 1, packet_type) + payload
        auditor = SFTPAuditor()
        feed = auditor.client_packet if sender is Sender.client else auditor.server_packet
        try:
            [packet] = SFTPParser(sender).feed(data)
            self.assertEqual(encode(packet), data)
            feed(packet)
        except SFTPError:
            pass

    @settings(max_examples=200, deadline=None)
    @given(st.sampled_from(Sender), st.integers(DEFAULT_MAX_LENGTH + 1, 2**32 - 1) | st.just(0))
    def test_lengthRefusedOnHeader(self, sender: Sender, length: int) -> None:
        """
        A length of 0 or above the maximum is refused once the header is in,
        before any payload is buffered; the parser then stays failed.
        """
        parser = SFTPParser(sender)
        self.assertEqual(parser.feed(struct.pack(">I", length)[:3]), [])
        self.assertRaises(SFTPError, parser.feed, struct.pack(">I", length)[3:] + b"\x03")
        self.assertRaises(SFTPError, parser.feed, encode(Stat(1, "/")))

    def test_maximumLengthBuffered(self) -> None:
        """
        A WRITE of the largest length OpenSSH allows is framed; one byte
        more is refused.
        """
        handle = b"0"
        room = DEFAULT_MAX_LENGTH - (1 + 4 + 4 + len(handle) + 8 + 4)
        packet = Write.from_data(7, handle, 0, b"x" * room)
        self.assertEqual(len(packet.raw), DEFAULT_MAX_LENGTH + 4)
        parser = SFTPParser(Sender.client)
        self.assertEqual(parser.feed(packet.raw[:5]), [])
        [parsed] = parser.feed(packet.raw[5:])
        assert isinstance(parsed, Write)
        self.assertEqual((parsed.length, parsed.data), (room, b"x" * room))
        too_big = Write.from_data(7, handle, 0, b"x" * (room + 1))
        self.assertRaises(SFTPError, SFTPParser(Sender.client).feed, too_big.raw[:5])

    def test_wholeChunkNotCopied(self) -> None:
        """
        A chunk holding exactly one packet becomes that packet's C{raw}
        itself: relaying a large WRITE copies nothing.
        """
        data = Write.from_data(1, b"h", 0, b"d" * 32768).raw
        [packet] = SFTPParser(Sender.client).feed(data)
        self.assertIs(packet.raw, data)

    def test_writeDataNotDecoded(self) -> None:
        """
        A WRITE records the length of its data; the data is read out of
        C{raw} only when asked for.
        """
        packet = parse_one(Sender.client, Write.from_data(5, b"hd", 1 << 40, b"payload"))
        self.assertEqual(packet, Write(5, b"hd", 1 << 40, 7))
        self.assertEqual(packet.data, b"payload")
        self.assertRaises(ValueError, encode, Write(5, b"hd", 0, 7))

    def test_truncatedField(self) -> None:
        """
        A packet whose fields run past its length is an L{SFTPError} naming
        the packet.
        """
        body = bytes([PacketType.OPEN]) + struct.pack(">II", 1, 100) + b"short"
        error = self.assertRaises(
            SFTPError, SFTPParser(Sender.client).feed, struct.pack(">I", len(body)) + body
        )
        self.assertIn("OPEN", str(error))

    def test_nulInPathRefused(self) -> None:
        """
        A client path holding a NUL byte is refused: a server using C
        strings would act on a shorter path than policy saw.
        """
        data = encode(Remove(1, "/tmp/ok\0/etc/passwd"))
        self.assertRaises(SFTPError, SFTPParser(Sender.client).feed, data)

    def test_trailingBytesIgnored(self) -> None:
        """
        Bytes after a packet's last field are ignored, as OpenSSH's
        sftp-server ignores them; C{raw} still carries them.
        """
        body = encode(Remove(3, "/x"))[4:] + b"junk"
        data = struct.pack(">I", len(body)) + body
        [packet] = SFTPParser(Sender.client).feed(data)
        self.assertEqual(packet, Remove(3, "/x"))
        self.assertEqual(encode(packet), data)

    def test_otherDirectionUnknown(self) -> None:
        """
        A server packet type sent by the client is L{Unknown}, with its
        request id.
        """
        packet = parse_one(Sender.client, Status(9, 0, "ok", "en"))
        self.assertIsInstance(packet, Unknown)
        self.assertEqual((packet.packet_type, packet.request_id), (PacketType.STATUS, 9))

    def test_statusWithoutStrings(self) -> None:
        """
        A STATUS without message and language (servers before version 3)
        parses with empty strings.
        """
        body = bytes([PacketType.STATUS]) + struct.pack(">II", 4, StatusCode.EOF)
        [packet] = SFTPParser(Sender.server).feed(struct.pack(">I", len(body)) + body)
        self.assertEqual(packet, Status(4, StatusCode.EOF))

    def test_unknownAttributeBitsIgnored(self) -> None:
        """
        Attribute flag bits version 3 does not define are ignored, as
        OpenSSH ignores them.
        """
        body = (bytes([PacketType.ATTRS]) + struct.pack(">II", 1, 0x00000100 | 0x4)
                + struct.pack(">I", 0o755))
        [packet] = SFTPParser(Sender.server).feed(struct.pack(">I", len(body)) + body)
        self.assertEqual(packet, AttrsReply(1, FileAttributes(permissions=0o755)))

    def test_hugeCountsRefused(self) -> None:
        """
        A NAME or extended-attribute count the packet cannot hold is refused
        before any entry is decoded.
        """
        body = bytes([PacketType.NAME]) + struct.pack(">II", 1, 2**32 - 1)
        self.assertRaises(SFTPError, SFTPParser(Sender.server).feed,
                          struct.pack(">I", len(body)) + body)
        body = (bytes([PacketType.ATTRS]) + struct.pack(">II", 1, 0x80000000)
                + struct.pack(">I", 2**31))
        self.assertRaises(SFTPError, SFTPParser(Sender.server).feed,
                          struct.pack(">I", len(body)) + body)


# -- auditing ----------------------------------------------------------------


class Exchange:
    """
    Drives an auditor as the front end would: every packet is encoded,
    parsed by its direction's parser, and handed to the auditor.
    """

    def __init__(self) -> None:
        self.auditor = SFTPAuditor()
        self.client_parser = SFTPParser(Sender.client)
        self.server_parser = SFTPParser(Sender.server)

    def client(self, packet: Packet) -> Any:
        [parsed] = self.client_parser.feed(encode(packet))
        return self.auditor.client_packet(parsed)

    def server(self, packet: Packet) -> Any:
        [parsed] = self.server_parser.feed(encode(packet))
        return self.auditor.server_packet(parsed)


WRITE_CREATE = OpenFlags.WRITE | OpenFlags.CREAT | OpenFlags.TRUNC


class AuditorTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.x = Exchange()
        self.assertIsNone(self.x.client(Init(3)))
        self.assertIsNone(self.x.server(Version(3, [("posix-rename@openssh.com", b"1")])))

    def learnHome(self, home: str = "/home/deploy") -> None:
        self.x.client(Realpath(1, "."))
        completion = self.x.server(Name(1, [NameEntry(home, home)]))
        self.assertEqual(completion.names, (home,))

    def test_versions(self) -> None:
        """The auditor remembers both versions and the server's extensions."""
        a = self.x.auditor
        self.assertEqual((a.client_version, a.server_version), (3, 3))
        self.assertEqual(a.server_extensions, (("posix-rename@openssh.com", b"1"),))

    def test_uploadCounted(self) -> None:
        """
        An OPEN for writing is a write action on the file; the WRITEs are
        not actions; the CLOSE reports the bytes the server acknowledged
        writing (a failed WRITE is not counted).
        """
        self.learnHome()
        request = self.x.client(Open(2, "up.bin", WRITE_CREATE, FileAttributes(permissions=0o644)))
        action = request.action()
        self.assertEqual(action.kind, "ssh.sftp.open")
        self.assertEqual(action.attributes, {
            "ssh.sftp.paths": ("up.bin", "/home/deploy/up.bin"),
            "ssh.sftp.write": True,
        })
        self.assertEqual(action.details["ssh.sftp.flags"], ["write", "creat", "trunc"])
        self.assertEqual(action.details["ssh.sftp.attrs"], {"permissions": "644"})
        self.assertEqual(action.input, 'open "up.bin" write creat trunc')
        completion = self.x.server(Handle(2, b"h1"))
        self.assertTrue(completion.ok)
        for i in range(4):
            self.assertIsNone(self.x.client(Write.from_data(10 + i, b"h1", i * 1000, b"x" * 1000)))
        for i in range(3):
            self.assertIsNone(self.x.server(Status(10 + i, StatusCode.OK, "Success", "")))
        self.assertIsNone(self.x.server(Status(13, StatusCode.FAILURE, "Failure", "")))
        [handle] = self.x.auditor.open_handles()
        self.assertEqual((handle.path, handle.bytes_written), ("up.bin", 3000))
        close = self.x.client(Close(14, b"h1"))
        self.assertEqual(close.action().kind, "ssh.sftp.close")
        self.assertEqual(close.action().attributes["ssh.sftp.paths"],
                         ("up.bin", "/home/deploy/up.bin"))
        self.assertFalse(close.write)
        completion = self.x.server(Status(14, StatusCode.OK, "Success", ""))
        self.assertEqual((completion.bytes_written, completion.bytes_read), (3000, 0))
        outcome = completion.outcome()
        self.assertEqual((outcome.status, outcome.bytes_in, outcome.bytes_out),
                         (OutcomeStatus.succeeded, 3000, 0))
        self.assertEqual(self.x.auditor.open_handles(), ())
        self.assertEqual(self.x.auditor.pending_requests(), ())

    def test_downloadCounted(self) -> None:
        """
        An OPEN for reading only is not a write; DATA replies are counted as
        bytes read and reported by the CLOSE; EOF ends the reads quietly.
        """
        request = self.x.client(Open(1, "/srv/data.csv", OpenFlags.READ))
        self.assertEqual(request.action().attributes["ssh.sftp.write"], False)
        self.x.server(Handle(1, b"\x00\x01"))
        self.x.client(Read(2, b"\x00\x01", 0, 32768))
        self.x.client(Read(3, b"\x00\x01", 32768, 32768))
        self.x.client(Read(4, b"\x00\x01", 65536, 32768))
        self.assertIsNone(self.x.server(Data.from_data(2, b"a" * 32768)))
        self.assertIsNone(self.x.server(Data.from_data(3, b"b" * 100)))
        self.assertIsNone(self.x.server(Status(4, StatusCode.EOF, "End of file", "")))
        self.x.client(Close(5, b"\x00\x01"))
        completion = self.x.server(Status(5, StatusCode.OK))
        self.assertEqual((completion.bytes_read, completion.bytes_written), (32868, 0))
        self.assertEqual(completion.outcome().bytes_out, 32868)

    def test_rename(self) -> None:
        """
        RENAME and posix-rename are both C{ssh.sftp.rename} writes naming
        both paths.
        """
        for request in (self.x.client(Rename(1, "/a/old", "/b/new")),
                        self.x.client(PosixRename(2, "/a/old", "/b/new"))):
            action = request.action()
            self.assertEqual(action.kind, "ssh.sftp.rename")
            self.assertEqual(action.attributes,
                             {"ssh.sftp.paths": ("/a/old", "/b/new"), "ssh.sftp.write": True})
        self.assertEqual(request.packet, "posix-rename@openssh.com")
        self.assertTrue(self.x.server(Status(1, StatusCode.OK)).ok)
        self.assertTrue(self.x.server(Status(2, StatusCode.OK)).ok)

    def test_removeFails(self) -> None:
        """
        A REMOVE the server refuses completes with the error code and
        message, which become a failed outcome.
        """
        request = self.x.client(Remove(1, "/tmp/gone"))
        self.assertEqual(request.action().kind, "ssh.sftp.remove")
        completion = self.x.server(Status(1, StatusCode.NO_SUCH_FILE, "No such file", "en"))
        self.assertFalse(completion.ok)
        outcome = completion.outcome()
        self.assertEqual((outcome.status, outcome.code, outcome.error),
                         (OutcomeStatus.failed, "SSH_FX_NO_SUCH_FILE", "No such file"))

    def test_mkdirRmdir(self) -> None:
        """MKDIR and RMDIR are writes on their path; MKDIR's attributes are in the details."""
        mkdir = self.x.client(Mkdir(1, "/srv/new", FileAttributes(permissions=0o750))).action()
        self.assertEqual((mkdir.kind, mkdir.attributes["ssh.sftp.write"]), ("ssh.sftp.mkdir", True))
        self.assertEqual(mkdir.details["ssh.sftp.attrs"], {"permissions": "750"})
        rmdir = self.x.client(Rmdir(2, "/srv/new")).action()
        self.assertEqual(rmdir.attributes, {"ssh.sftp.paths": ("/srv/new",), "ssh.sftp.write": True})

    def test_failedOpen(self) -> None:
        """
        An OPEN answered by an error STATUS completes with that error, and
        no handle is opened.
        """
        self.x.client(Open(1, "/etc/shadow", OpenFlags.READ))
        completion = self.x.server(Status(1, StatusCode.PERMISSION_DENIED, "Permission denied", ""))
        self.assertFalse(completion.ok)
        self.assertEqual(completion.code, StatusCode.PERMISSION_DENIED)
        self.assertEqual(completion.outcome().code, "SSH_FX_PERMISSION_DENIED")
        self.assertEqual(self.x.auditor.open_handles(), ())

    def test_refusal(self) -> None:
        """
        A refused request gets a STATUS PERMISSION_DENIED with its own id
        and the message, and is forgotten: a reply to it from the server
        would be a protocol error.
        """
        request = self.x.client(Remove(42, "/etc/passwd"))
        data = self.x.auditor.refusal(request, "denied by policy rule \"no-etc\"")
        [status] = SFTPParser(Sender.server).feed(data)
        self.assertEqual(status, Status(42, StatusCode.PERMISSION_DENIED,
                                        "denied by policy rule \"no-etc\"", "en"))
        self.assertEqual(self.x.auditor.pending_requests(), ())
        self.assertRaises(SFTPError, self.x.auditor.server_packet, status)
        # The id is free again.
        self.assertIsNotNone(self.x.client(Remove(42, "/tmp/x")))

    def test_relativePathsNormalised(self) -> None:
        """
        Once the home directory is known, relative and dotted paths are also
        reported in absolute, normalised form, so a rule on C{/etc/*}
        catches them.
        """
        self.learnHome("/home/deploy")
        action = self.x.client(Stat(2, "../../etc/passwd")).action()
        self.assertEqual(action.attributes["ssh.sftp.paths"], ("../../etc/passwd", "/etc/passwd"))
        action = self.x.client(Lstat(3, "//etc/./shadow")).action()
        self.assertEqual(action.attributes["ssh.sftp.paths"], ("//etc/./shadow", "/etc/shadow"))
        self.assertEqual(action.details["ssh.sftp.packet"], "lstat")

    def test_relativeBeforeHome(self) -> None:
        """Before the home directory is known, a relative path is reported as sent."""
        action = self.x.client(Stat(1, "notes.txt")).action()
        self.assertEqual(action.attributes["ssh.sftp.paths"], ("notes.txt",))

    def test_handleRequests(self) -> None:
        """
        Requests on a handle (FSTAT, FSETSTAT, READDIR, fsync) name the path
        it was opened with; a READDIR ending in EOF succeeded; the CLOSE of
        a directory reports no byte counts.
        """
        self.x.client(Opendir(1, "/srv"))
        self.x.server(Handle(1, b"d"))
        readdir = self.x.client(Readdir(2, b"d"))
        self.assertEqual(readdir.action().attributes["ssh.sftp.paths"], ("/srv",))
        self.assertEqual(self.x.server(Name(2, [NameEntry("a"), NameEntry("b")])).entries, 2)
        self.x.client(Readdir(3, b"d"))
        self.assertTrue(self.x.server(Status(3, StatusCode.EOF, "End of file")).ok)
        self.x.client(Close(4, b"d"))
        completion = self.x.server(Status(4, StatusCode.OK))
        self.assertEqual((completion.bytes_read, completion.bytes_written), (None, None))

        self.x.client(Open(5, "/srv/f", OpenFlags.READ | OpenFlags.WRITE))
        self.x.server(Handle(5, b"f"))
        fsetstat = self.x.client(Fsetstat(6, b"f", FileAttributes(size=0))).action()
        self.assertEqual((fsetstat.kind, fsetstat.attributes),
                         ("ssh.sftp.setstat", {"ssh.sftp.paths": ("/srv/f",), "ssh.sftp.write": True}))
        fstat = self.x.client(Fstat(7, b"f"))
        self.assertEqual((fstat.op, fstat.packet, fstat.paths), ("stat", "fstat", ("/srv/f",)))
        self.assertEqual(self.x.server(AttrsReply(7, FileAttributes(size=9))).attrs.size, 9)
        fsync = self.x.client(Fsync(8, b"f"))
        self.assertEqual((fsync.kind, fsync.paths, fsync.write), ("ssh.sftp.fsync", ("/srv/f",), False))

    def test_linksAndSetstat(self) -> None:
        """
        SYMLINK and hardlink name both paths; SETSTAT and lsetstat are
        setstat writes.
        """
        symlink = self.x.client(Symlink(1, "/etc/passwd", "/tmp/p"))
        self.assertEqual((symlink.kind, symlink.paths), ("ssh.sftp.symlink", ("/tmp/p", "/etc/passwd")))
        hardlink = self.x.client(Hardlink(2, "/a", "/b"))
        self.assertEqual((hardlink.kind, hardlink.paths, hardlink.write), ("ssh.sftp.hardlink", ("/a", "/b"), True))
        for request in (self.x.client(Setstat(3, "/a", FileAttributes(permissions=0o777))),
                        self.x.client(Lsetstat(4, "/a", FileAttributes(uid=0, gid=0)))):
            self.assertEqual((request.kind, request.write), ("ssh.sftp.setstat", True))
        self.assertEqual(request.action().details["ssh.sftp.attrs"], {"uid": 0, "gid": 0})
        for request, kind in ((self.x.client(Readlink(5, "/tmp/p")), "ssh.sftp.readlink"),
                              (self.x.client(Statvfs(6, "/")), "ssh.sftp.statvfs"),
                              (self.x.client(Realpath(7, "/x/..")), "ssh.sftp.realpath")):
            self.assertEqual((request.kind, request.write), (kind, False))
        completion = self.x.server(Name(5, [NameEntry("/etc/passwd")]))
        self.assertEqual(completion.names, ("/etc/passwd",))

    def test_symlinkTargetResolvedAgainstLinkDirectory(self) -> None:
        """
        A relative symlink target is resolved as the server will follow it:
        against the link's directory, not the session's starting directory
        (issue 11, item 9).  An absolute target is only normalised.
        """
        self.learnHome("/home/deploy")
        # The link /srv/pub/a/l -> ../../secret/key points at /srv/secret/key;
        # against the home directory it would read /secret/key.
        link = self.x.client(Symlink(2, "../../secret/key", "/srv/pub/a/l")).action()
        self.assertEqual(link.attributes["ssh.sftp.paths"],
                         ("/srv/pub/a/l", "../../secret/key", "/srv/secret/key"))
        # A relative link: its directory is under the home directory.
        link = self.x.client(Symlink(3, "../secret", "pub/l")).action()
        self.assertEqual(link.attributes["ssh.sftp.paths"],
                         ("pub/l", "../secret", "/home/deploy/pub/l", "/home/deploy/secret"))
        link = self.x.client(Symlink(4, "//etc/./shadow", "l")).action()
        self.assertEqual(link.attributes["ssh.sftp.paths"],
                         ("l", "//etc/./shadow", "/home/deploy/l", "/etc/shadow"))

    def test_symlinkBeforeHome(self) -> None:
        """
        Before the home directory is known, a relative link (and so its
        relative target) has no absolute form; an absolute link does.
        """
        request = self.x.client(Symlink(1, "x", "l"))
        self.assertEqual(request.absolute, ())
        request = self.x.client(Symlink(2, "../x", "/srv/l"))
        self.assertEqual(request.absolute, ("/srv/l", "/x"))

    def test_unreadableRequestsAreWrites(self) -> None:
        """
        An extension known by name only, or a packet type version 3 does
        not define, is a write with no paths: policy cannot tell what it
        changes.
        """
        extended = self.x.client(Extended(1, "copy-data", b"\x00" * 8))
        self.assertEqual((extended.kind, extended.packet, extended.write, extended.paths),
                         ("ssh.sftp.extended", "copy-data", True, ()))
        self.assertEqual(extended.action().input, "copy-data")
        self.assertTrue(self.x.server(ExtendedReply(1, b"")).ok)
        unknown = self.x.client(Unknown(99, struct.pack(">I", 2)))
        self.assertEqual((unknown.kind, unknown.request_id, unknown.write), ("ssh.sftp.unknown", 2, True))
        self.assertRaises(SFTPError, self.x.auditor.client_packet, Unknown(99, b"\x01"))

    def test_nonUTF8Path(self) -> None:
        """
        A path that is not UTF-8 reaches policy and the audit trail with its
        odd bytes shown as C{\\xNN}.
        """
        name = b"/tmp/caf\xe9".decode("utf-8", "surrogateescape")
        action = self.x.client(Remove(1, name)).action()
        self.assertEqual(action.attributes["ssh.sftp.paths"], ("/tmp/caf\\xe9",))
        self.assertEqual(action.input, 'remove "/tmp/caf\\\\xe9"')

    def test_reusedIdRefused(self) -> None:
        """
        A client reusing the id of a request awaiting its reply is a
        protocol error: replies could no longer be told apart.
        """
        self.x.client(Stat(1, "/"))
        self.assertRaises(SFTPError, self.x.client, Remove(1, "/x"))
        self.x.client(Read(2, b"h", 0, 10))
        self.assertRaises(SFTPError, self.x.client, Stat(2, "/"))

    def test_unexpectedReply(self) -> None:
        """A reply to no pending request is a protocol error."""
        self.assertRaises(SFTPError, self.x.server, Status(77, StatusCode.OK))

    def test_flood(self) -> None:
        """More pending requests than C{max_pending} is a protocol error."""
        auditor = SFTPAuditor(max_pending=3)
        for i in range(3):
            auditor.client_packet(Read(i, b"h", 0, 1))
        self.assertRaises(SFTPError, auditor.client_packet, Stat(9, "/"))

    def test_unclosedHandle(self) -> None:
        """Handles still open, and requests unanswered, are reported with their counts."""
        self.x.client(Open(1, "/f", OpenFlags.WRITE))
        self.x.server(Handle(1, b"h"))
        self.x.client(Write.from_data(2, b"h", 0, b"12345"))
        self.x.server(Status(2, StatusCode.OK))
        stat = self.x.client(Stat(3, "/f"))
        [handle] = self.x.auditor.open_handles()
        self.assertEqual((handle.path, handle.flags, handle.bytes_written, handle.directory),
                         ("/f", ("write",), 5, False))
        self.assertEqual(self.x.auditor.pending_requests(), (stat,))


class PolicyTests(SynchronousTestCase):
    def test_conditions(self) -> None:
        """C{ssh.sftp.paths} (globs) and C{ssh.sftp.write} (boolean) are policy conditions."""
        self.assertIs(CONDITIONS["ssh.sftp.paths"].kind, ConditionKind.globs)
        self.assertIs(CONDITIONS["ssh.sftp.write"].kind, ConditionKind.boolean)

    def test_rulesDecideRequests(self) -> None:
        """
        Rules on C{ssh.sftp.write} and C{ssh.sftp.paths} decide the actions
        the auditor produces, dotted paths included.
        """
        policy = build_policy_set([("p.toml", b"""
[[rule]]
name = "allow"
effect = "allow"
[[rule]]
name = "read-only"
effect = "deny"
connections = ["prod-*"]
ssh.sftp.write = true
[[rule]]
name = "no-etc"
effect = "deny"
ssh.sftp.paths = ["/etc/*"]
""")])
        alice = Identity("https://idp", "alice")
        x = Exchange()
        x.client(Realpath(1, "."))
        x.server(Name(1, [NameEntry("/home/alice")]))
        upload = x.client(Open(2, "a.txt", WRITE_CREATE)).action()
        escape = x.client(Stat(3, "../../etc/shadow")).action()
        listing = x.client(Opendir(4, "/srv")).action()
        self.assertEqual(policy.evaluate(alice, "prod-web", upload).rule, "read-only")
        self.assertTrue(policy.evaluate(alice, "dev-web", upload).allowed)
        self.assertEqual(policy.evaluate(alice, "dev-web", escape).rule, "no-etc")
        self.assertTrue(policy.evaluate(alice, "prod-web", listing).allowed)


# -- the real sftp-server ----------------------------------------------------

SFTP_SERVER = "/usr/lib/openssh/sftp-server"


class OpenSSHServerTests(SynchronousTestCase):
    """
    OpenSSH's own sftp-server, speaking SFTP on its stdin and stdout, is
    driven with packets this module encodes, and its replies go through the
    parser and the auditor.
    """

    def setUp(self) -> None:
        if not os.access(SFTP_SERVER, os.X_OK):
            if os.environ.get("CI") == "true":
                self.fail(f"{SFTP_SERVER} is not installed")
            raise SkipTest(f"{SFTP_SERVER} is not installed (apt-get install openssh-sftp-server)")
        self.dir = os.path.realpath(tempfile.mkdtemp())
        self.process = subprocess.Popen(
            [SFTP_SERVER, "-e", "-l", "QUIET"], cwd=self.dir,
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
        )
        self.addCleanup(self.stop)
        self.auditor = SFTPAuditor()
        self.client_parser = SFTPParser(Sender.client)
        self.server_parser = SFTPParser(Sender.server)
        self.replies: list[Packet] = []

    def stop(self) -> None:
        assert self.process.stdin is not None
        self.process.stdin.close()
        self.process.wait(10)
        assert self.process.stdout is not None
        self.process.stdout.close()

    def send(self, *packets: Packet) -> list[Any]:
        """Send packets as a client would (pipelined); return what the auditor made of them."""
        assert self.process.stdin is not None
        requests: list[Request | None] = []
        for packet in packets:
            data = encode(packet)
            [parsed] = self.client_parser.feed(data)
            requests.append(self.auditor.client_packet(parsed))
            self.process.stdin.write(parsed.raw)
        self.process.stdin.flush()
        return requests

    def receive(self, count: int) -> list[Any]:
        """Read C{count} replies; return what the auditor made of each."""
        assert self.process.stdout is not None
        fd = self.process.stdout.fileno()
        while len(self.replies) < count:
            ready, _, _ = select.select([fd], [], [], 10)
            if not ready:
                self.fail("sftp-server did not answer")
            chunk = os.read(fd, 65536)
            if not chunk:
                self.fail("sftp-server closed its output")
            self.replies.extend(self.server_parser.feed(chunk))
        replies, self.replies = self.replies[:count], self.replies[count:]
        return [self.auditor.server_packet(p) for p in replies]

    def test_session(self) -> None:
        """
        A session of uploads, metadata changes and downloads against the
        real server is framed, decoded and audited as the server meant it.
        """
        self.send(Init(3))
        self.assertEqual(self.receive(1), [None])
        self.assertEqual(self.auditor.server_version, 3)
        extensions = dict(self.auditor.server_extensions)
        self.assertIn("posix-rename@openssh.com", extensions)

        # The home directory, as OpenSSH's client asks for it first.
        self.send(Realpath(1, "."))
        [completion] = self.receive(1)
        self.assertEqual((completion.ok, completion.names), (True, (self.dir,)))
        self.assertEqual(self.auditor.home, self.dir)

        # Upload: open, three pipelined writes, close.
        [upload] = self.send(Open(2, "a.txt", WRITE_CREATE, FileAttributes(permissions=0o600)))
        self.assertEqual(upload.absolute, (os.path.join(self.dir, "a.txt"),))
        [completion] = self.receive(1)
        self.assertTrue(completion.ok)
        [handle] = self.auditor.open_handles()
        chunks = [bytes([65 + i]) * 20000 for i in range(3)]
        self.send(*(Write.from_data(3 + i, handle.handle, i * 20000, c) for i, c in enumerate(chunks)))
        self.assertEqual(self.receive(3), [None, None, None])
        self.send(Close(6, handle.handle))
        [completion] = self.receive(1)
        self.assertEqual((completion.ok, completion.bytes_written, completion.bytes_read),
                         (True, 60000, 0))
        with open(os.path.join(self.dir, "a.txt"), "rb") as f:
            self.assertEqual(f.read(), b"".join(chunks))

        # Metadata: stat, setstat, mkdir, rename, posix-rename.
        self.send(Stat(7, "a.txt"), Setstat(8, "a.txt", FileAttributes(permissions=0o640)),
                  Mkdir(9, "sub", FileAttributes(permissions=0o755)),
                  Rename(10, "a.txt", "sub/b.txt"),
                  PosixRename(11, "sub/b.txt", "sub/c.txt"))
        stat, setstat, mkdir, rename, posix = self.receive(5)
        self.assertEqual((stat.attrs.size, stat.attrs.permissions & 0o777), (60000, 0o600))
        self.assertTrue(setstat.ok and mkdir.ok and rename.ok and posix.ok)
        self.assertEqual(os.stat(os.path.join(self.dir, "sub", "c.txt")).st_mode & 0o777, 0o640)

        # Download through a read handle, reading past the end.
        self.send(Open(12, "sub/c.txt", OpenFlags.READ))
        [completion] = self.receive(1)
        [handle] = self.auditor.open_handles()
        self.send(*(Read(13 + i, handle.handle, i * 32768, 32768) for i in range(3)))
        self.assertEqual(self.receive(3), [None, None, None])
        self.send(Close(16, handle.handle))
        [completion] = self.receive(1)
        self.assertEqual((completion.bytes_read, completion.bytes_written), (60000, 0))

        # Errors: opening a missing file, removing twice.
        self.send(Open(17, "missing", OpenFlags.READ), Remove(18, "sub/c.txt"),
                  Remove(19, "sub/c.txt"), Rmdir(20, "sub"))
        missing, removed, again, rmdir = self.receive(4)
        self.assertEqual((missing.ok, missing.outcome().code), (False, "SSH_FX_NO_SUCH_FILE"))
        self.assertTrue(removed.ok and rmdir.ok)
        self.assertEqual((again.ok, again.code), (False, StatusCode.NO_SUCH_FILE))
        self.assertEqual(os.listdir(self.dir), [])
        self.assertEqual(self.auditor.pending_requests(), ())
        self.assertEqual(self.auditor.open_handles(), ())
