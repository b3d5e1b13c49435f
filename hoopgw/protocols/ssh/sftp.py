"""
Sans-IO SFTP, version 3 (draft-ietf-secsh-filexfer-02, as OpenSSH speaks
it), and the audit tracker of an SFTP subsystem channel.

Bytes in, packets out (L{SFTPParser}); packets in, bytes out (L{encode}).
No channel in sight, in the manner of C{twisted.protocols.haproxy}: the SSH
front end feeds what a channel delivers and relays the packets' C{raw}
bytes, and tests can chop and replay streams freely.

Hot path.  A 50 MB upload is some 1600 WRITE packets, so:

  - every parsed packet keeps the exact bytes it was read from (C{raw}:
    length, type and payload) and L{encode} returns them as they are, so
    relaying never re-encodes;
  - L{Write} and L{Data} record the length of their data, not the data:
    C{raw} is the only copy (L{Write.data} slices it when asked);
  - a chunk holding exactly one packet becomes that packet's C{raw} without
    a copy.

Safety.  The length is checked as soon as its 4 bytes are in, before
anything is buffered: below 1 or above the parser's maximum (OpenSSH's
256 KiB by default) raises L{SFTPError}.  Malformed payloads raise
L{SFTPError} naming the packet and the problem, and a parser that failed
stays failed.  Bytes after a packet's last field are ignored, as OpenSSH's
C{sftp-server} ignores them, so that the gateway reads each request as the
server will.  Paths are C{str} decoded from UTF-8 with C{surrogateescape}
(any bytes round-trip); a client path holding a NUL byte is refused, since
servers built on C strings would read a shorter path than policy saw.

Auditing.  L{SFTPAuditor} is pure state: fed the client's packets it names
the L{Request} each one makes (to be decided before it is forwarded, or
refused with L{SFTPAuditor.refusal}); fed the server's, the L{Completion}
of each request.  Reads and writes are not requests: they are counted on
their handle and reported when it is closed.
"""

from __future__ import annotations

import json
import posixpath
import struct
from collections.abc import Callable, Iterable
from enum import Enum, IntEnum
from typing import Any, ClassVar, Self, TypeVar

from attrs import define, field, frozen

from hoopgw.errors import HoopgwError
from hoopgw.model import Action, Outcome
from hoopgw.model import Status as OutcomeStatus

__all__ = [
    "SFTPError",
    "SFTP_VERSION",
    "DEFAULT_MAX_LENGTH",
    "PacketType",
    "StatusCode",
    "OpenFlags",
    "Sender",
    "FileAttributes",
    "NameEntry",
    "Packet",
    "encode",
    "SFTPParser",
    # Client to server.
    "Init",
    "Open",
    "Close",
    "Read",
    "Write",
    "Lstat",
    "Fstat",
    "Setstat",
    "Fsetstat",
    "Opendir",
    "Readdir",
    "Remove",
    "Mkdir",
    "Rmdir",
    "Realpath",
    "Stat",
    "Rename",
    "Readlink",
    "Symlink",
    "Extended",
    "PosixRename",
    "Hardlink",
    "Statvfs",
    "Fstatvfs",
    "Fsync",
    "Lsetstat",
    # Server to client.
    "Version",
    "Status",
    "Handle",
    "Data",
    "Name",
    "AttrsReply",
    "ExtendedReply",
    # Either direction.
    "Unknown",
    # Auditing.
    "Request",
    "Completion",
    "OpenHandle",
    "SFTPAuditor",
]

SFTP_VERSION = 3

DEFAULT_MAX_LENGTH = 256 * 1024
"""
The largest packet length (type byte and payload) accepted by default:
OpenSSH's C{SFTP_MAX_MSG_LENGTH}, which its client and server both enforce,
so nothing larger could work through the gateway anyway.
"""


class SFTPError(HoopgwError):
    """The SFTP stream is malformed or breaks the protocol; the channel must close."""


class PacketType(IntEnum):
    INIT = 1
    VERSION = 2
    OPEN = 3
    CLOSE = 4
    READ = 5
    WRITE = 6
    LSTAT = 7
    FSTAT = 8
    SETSTAT = 9
    FSETSTAT = 10
    OPENDIR = 11
    READDIR = 12
    REMOVE = 13
    MKDIR = 14
    RMDIR = 15
    REALPATH = 16
    STAT = 17
    RENAME = 18
    READLINK = 19
    SYMLINK = 20
    STATUS = 101
    HANDLE = 102
    DATA = 103
    NAME = 104
    ATTRS = 105
    EXTENDED = 200
    EXTENDED_REPLY = 201


class StatusCode(IntEnum):
    OK = 0
    EOF = 1
    NO_SUCH_FILE = 2
    PERMISSION_DENIED = 3
    FAILURE = 4
    BAD_MESSAGE = 5
    NO_CONNECTION = 6
    CONNECTION_LOST = 7
    OP_UNSUPPORTED = 8


class OpenFlags(IntEnum):
    """C{pflags} bits of an OPEN (C{SSH_FXF_*})."""

    READ = 0x01
    WRITE = 0x02
    APPEND = 0x04
    CREAT = 0x08
    TRUNC = 0x10
    EXCL = 0x20


# Opening with any of these can change the file, so the OPEN is a write.
_WRITE_FLAGS = OpenFlags.WRITE | OpenFlags.APPEND | OpenFlags.CREAT | OpenFlags.TRUNC

_ATTR_SIZE = 0x00000001
_ATTR_UIDGID = 0x00000002
_ATTR_PERMISSIONS = 0x00000004
_ATTR_ACMODTIME = 0x00000008
_ATTR_EXTENDED = 0x80000000


class Sender(str, Enum):
    """Which peer a parser reads: the two directions carry different packet types."""

    client = "client"
    server = "server"


# -- wire primitives ---------------------------------------------------------

_U32 = struct.Struct(">I")
_U64 = struct.Struct(">Q")
# Typed as what their format makes (a Struct's own say tuple[Any, ...]).
_unpack_u32: Callable[[bytes, int], tuple[int]] = _U32.unpack_from
_unpack_u64: Callable[[bytes, int], tuple[int]] = _U64.unpack_from
_HEADER = struct.Struct(">IB")


def _u32(value: int) -> bytes:
    return _U32.pack(value)


def _u64(value: int) -> bytes:
    return _U64.pack(value)


def _string(value: bytes) -> bytes:
    return _U32.pack(len(value)) + value


def _text(value: str) -> bytes:
    return _string(value.encode("utf-8", "surrogateescape"))


class _Reader:
    """Reads fields of one packet's payload; every shortfall is an L{SFTPError}."""

    __slots__ = ("data", "pos", "what")

    def __init__(self, data: bytes, pos: int, what: str) -> None:
        self.data = data
        self.pos = pos
        self.what = what

    def fail(self, problem: str) -> SFTPError:
        return SFTPError(f"SFTP {self.what}: {problem}")

    def u32(self) -> int:
        pos = self.pos
        if pos + 4 > len(self.data):
            raise self.fail("truncated")
        self.pos = pos + 4
        return _unpack_u32(self.data, pos)[0]

    def u64(self) -> int:
        pos = self.pos
        if pos + 8 > len(self.data):
            raise self.fail("truncated")
        self.pos = pos + 8
        return _unpack_u64(self.data, pos)[0]

    def skip_string(self) -> int:
        """Step over a string without copying it; return its length."""
        length = self.u32()
        if self.pos + length > len(self.data):
            raise self.fail("a string runs past the end of the packet")
        self.pos += length
        return length

    def string(self) -> bytes:
        start = self.pos + 4
        length = self.skip_string()
        return self.data[start:start + length]

    def text(self) -> str:
        return self.string().decode("utf-8", "surrogateescape")

    def path(self) -> str:
        value = self.string()
        if b"\0" in value:
            raise self.fail("a path holds a NUL byte")
        return value.decode("utf-8", "surrogateescape")

    def rest(self) -> bytes:
        value = self.data[self.pos:]
        self.pos = len(self.data)
        return value

    def at_end(self) -> bool:
        return self.pos >= len(self.data)

    def pairs(self) -> tuple[tuple[str, bytes], ...]:
        """Extension pairs (name, data) up to the end of the packet."""
        pairs = []
        while not self.at_end():
            pairs.append((self.text(), self.string()))
        return tuple(pairs)

    def attrs(self) -> FileAttributes:
        flags = self.u32()
        # Unknown flag bits are ignored, as OpenSSH's decode_attrib ignores
        # them: version 3 defines no field for them.
        size = self.u64() if flags & _ATTR_SIZE else None
        uid = gid = None
        if flags & _ATTR_UIDGID:
            uid, gid = self.u32(), self.u32()
        permissions = self.u32() if flags & _ATTR_PERMISSIONS else None
        atime = mtime = None
        if flags & _ATTR_ACMODTIME:
            atime, mtime = self.u32(), self.u32()
        extended: tuple[tuple[str, bytes], ...] = ()
        if flags & _ATTR_EXTENDED:
            count = self.u32()
            # Each pair takes at least 8 bytes: refuse a count the packet
            # cannot hold before looping on it.
            if count * 8 > len(self.data) - self.pos:
                raise self.fail(f"{count} extended attributes do not fit in the packet")
            extended = tuple((self.text(), self.string()) for _ in range(count))
        return FileAttributes(size, uid, gid, permissions, atime, mtime, extended)


def _pairs(value: Iterable[tuple[str, bytes]]) -> tuple[tuple[str, bytes], ...]:
    return tuple((str(name), bytes(data)) for name, data in value)


@frozen
class FileAttributes:
    """
    An C{ATTRS} structure; C{None} is a field the sender left out.  C{uid}
    and C{gid} travel together, as do C{atime} and C{mtime}.
    """

    size: int | None = None
    uid: int | None = None
    gid: int | None = None
    permissions: int | None = None
    atime: int | None = None
    mtime: int | None = None
    extended: tuple[tuple[str, bytes], ...] = field(default=(), converter=_pairs)

    def __attrs_post_init__(self) -> None:
        if (self.uid is None) != (self.gid is None):
            raise ValueError("uid and gid are set together")
        if (self.atime is None) != (self.mtime is None):
            raise ValueError("atime and mtime are set together")

    def to_bytes(self) -> bytes:
        flags = 0
        parts = [b""]
        if self.size is not None:
            flags |= _ATTR_SIZE
            parts.append(_u64(self.size))
        if self.uid is not None and self.gid is not None:
            flags |= _ATTR_UIDGID
            parts.append(_u32(self.uid) + _u32(self.gid))
        if self.permissions is not None:
            flags |= _ATTR_PERMISSIONS
            parts.append(_u32(self.permissions))
        if self.atime is not None and self.mtime is not None:
            flags |= _ATTR_ACMODTIME
            parts.append(_u32(self.atime) + _u32(self.mtime))
        if self.extended:
            flags |= _ATTR_EXTENDED
            parts.append(_u32(len(self.extended)))
            parts.extend(_text(name) + _string(data) for name, data in self.extended)
        parts[0] = _u32(flags)
        return b"".join(parts)

    def to_record(self) -> dict[str, Any]:
        """The attributes set, for audit details (extended ones by name only)."""
        record: dict[str, Any] = {}
        for name in ("size", "uid", "gid", "atime", "mtime"):
            value = getattr(self, name)
            if value is not None:
                record[name] = value
        if self.permissions is not None:
            record["permissions"] = f"{self.permissions:o}"
        if self.extended:
            record["extended"] = [_printable(name) for name, _ in self.extended]
        return record


# -- packets -----------------------------------------------------------------

P = TypeVar("P", bound="Packet")


@frozen
class Packet:
    """
    Base of every packet.  C{raw} is the exact bytes a parsed packet was read
    from (empty for one built from its fields; C{attrs.evolve} also gives one
    without C{raw}, so that L{encode} encodes the changed fields).
    """

    TYPE: ClassVar[int] = 0
    raw: bytes = field(default=b"", init=False, eq=False, repr=False)

    def _body(self) -> bytes:
        raise NotImplementedError

    @classmethod
    def _decode(cls, r: _Reader) -> Self:
        raise NotImplementedError


def encode(packet: Packet) -> bytes:
    """The bytes of a packet: its C{raw} if parsed, else freshly encoded."""
    if packet.raw:
        return packet.raw
    body = packet._body()
    packet_type = packet.packet_type if isinstance(packet, Unknown) else packet.TYPE
    return _HEADER.pack(len(body) + 1, packet_type) + body


def _with_raw(packet: P, raw: bytes) -> P:
    object.__setattr__(packet, "raw", raw)
    return packet


@frozen
class _IdPath(Packet):
    """Shape of the requests that carry one path."""

    request_id: int
    path: str

    def _body(self) -> bytes:
        return _u32(self.request_id) + _text(self.path)

    @classmethod
    def _decode(cls, r: _Reader) -> Self:
        return cls(r.u32(), r.path())  # (subclasses have the fields)


@frozen
class _IdHandle(Packet):
    """Shape of the requests that carry one handle."""

    request_id: int
    handle: bytes

    def _body(self) -> bytes:
        return _u32(self.request_id) + _string(self.handle)

    @classmethod
    def _decode(cls, r: _Reader) -> Self:
        return cls(r.u32(), r.string())


@frozen
class _IdTwoPaths(Packet):
    request_id: int
    oldpath: str
    newpath: str

    def _body(self) -> bytes:
        return _u32(self.request_id) + _text(self.oldpath) + _text(self.newpath)

    @classmethod
    def _decode(cls, r: _Reader) -> Self:
        return cls(r.u32(), r.path(), r.path())


@frozen
class Init(Packet):
    """C{SSH_FXP_INIT}: the client's version (no request id)."""

    TYPE = PacketType.INIT
    version: int = SFTP_VERSION
    extensions: tuple[tuple[str, bytes], ...] = field(default=(), converter=_pairs)

    def _body(self) -> bytes:
        return _u32(self.version) + b"".join(_text(n) + _string(d) for n, d in self.extensions)

    @classmethod
    def _decode(cls, r: _Reader) -> Init:
        return cls(r.u32(), r.pairs())


@frozen
class Version(Packet):
    """C{SSH_FXP_VERSION}: the server's version and extensions (no request id)."""

    TYPE = PacketType.VERSION
    version: int = SFTP_VERSION
    extensions: tuple[tuple[str, bytes], ...] = field(default=(), converter=_pairs)

    def _body(self) -> bytes:
        return _u32(self.version) + b"".join(_text(n) + _string(d) for n, d in self.extensions)

    @classmethod
    def _decode(cls, r: _Reader) -> Version:
        return cls(r.u32(), r.pairs())


@frozen
class Open(Packet):
    TYPE = PacketType.OPEN
    request_id: int
    filename: str
    pflags: int
    attrs: FileAttributes = FileAttributes()

    def _body(self) -> bytes:
        return (_u32(self.request_id) + _text(self.filename) + _u32(self.pflags)
                + self.attrs.to_bytes())

    @classmethod
    def _decode(cls, r: _Reader) -> Open:
        return cls(r.u32(), r.path(), r.u32(), r.attrs())


@frozen
class Close(_IdHandle):
    TYPE = PacketType.CLOSE


@frozen
class Read(Packet):
    TYPE = PacketType.READ
    request_id: int
    handle: bytes
    offset: int
    length: int

    def _body(self) -> bytes:
        return _u32(self.request_id) + _string(self.handle) + _u64(self.offset) + _u32(self.length)

    @classmethod
    def _decode(cls, r: _Reader) -> Read:
        return cls(r.u32(), r.string(), r.u64(), r.u32())


@frozen
class Write(Packet):
    """
    C{SSH_FXP_WRITE}, lazily: C{length} is the length of the data, which
    stays in C{raw} (build one with L{Write.from_data}).
    """

    TYPE = PacketType.WRITE
    request_id: int
    handle: bytes
    offset: int
    length: int

    @classmethod
    def from_data(cls, request_id: int, handle: bytes, offset: int, data: bytes) -> Write:
        body = _u32(request_id) + _string(handle) + _u64(offset) + _string(data)
        raw = _HEADER.pack(len(body) + 1, cls.TYPE) + body
        return _with_raw(cls(request_id, handle, offset, len(data)), raw)

    @property
    def data(self) -> bytes:
        """The data written (a copy out of C{raw}: not for the relay path)."""
        start = 25 + len(self.handle)
        return self.raw[start:start + self.length]

    def _body(self) -> bytes:
        raise ValueError("a Write without raw bytes has no data: build it with Write.from_data")

    @classmethod
    def _decode(cls, r: _Reader) -> Write:
        return cls(r.u32(), r.string(), r.u64(), r.skip_string())


@frozen
class Lstat(_IdPath):
    TYPE = PacketType.LSTAT


@frozen
class Fstat(_IdHandle):
    TYPE = PacketType.FSTAT


@frozen
class Setstat(Packet):
    TYPE = PacketType.SETSTAT
    request_id: int
    path: str
    attrs: FileAttributes

    def _body(self) -> bytes:
        return _u32(self.request_id) + _text(self.path) + self.attrs.to_bytes()

    @classmethod
    def _decode(cls, r: _Reader) -> Setstat:
        return cls(r.u32(), r.path(), r.attrs())


@frozen
class Fsetstat(Packet):
    TYPE = PacketType.FSETSTAT
    request_id: int
    handle: bytes
    attrs: FileAttributes

    def _body(self) -> bytes:
        return _u32(self.request_id) + _string(self.handle) + self.attrs.to_bytes()

    @classmethod
    def _decode(cls, r: _Reader) -> Fsetstat:
        return cls(r.u32(), r.string(), r.attrs())


@frozen
class Opendir(_IdPath):
    TYPE = PacketType.OPENDIR


@frozen
class Readdir(_IdHandle):
    TYPE = PacketType.READDIR


@frozen
class Remove(_IdPath):
    TYPE = PacketType.REMOVE


@frozen
class Mkdir(Packet):
    TYPE = PacketType.MKDIR
    request_id: int
    path: str
    attrs: FileAttributes = FileAttributes()

    def _body(self) -> bytes:
        return _u32(self.request_id) + _text(self.path) + self.attrs.to_bytes()

    @classmethod
    def _decode(cls, r: _Reader) -> Mkdir:
        return cls(r.u32(), r.path(), r.attrs())


@frozen
class Rmdir(_IdPath):
    TYPE = PacketType.RMDIR


@frozen
class Realpath(_IdPath):
    TYPE = PacketType.REALPATH


@frozen
class Stat(_IdPath):
    TYPE = PacketType.STAT


@frozen
class Rename(_IdTwoPaths):
    TYPE = PacketType.RENAME


@frozen
class Readlink(_IdPath):
    TYPE = PacketType.READLINK


@frozen
class Symlink(Packet):
    """
    C{SSH_FXP_SYMLINK}.  OpenSSH sends the link's target first and the new
    link's path second, the reverse of the draft; fields are named for what
    OpenSSH does, the order that matters to the servers the gateway fronts.
    """

    TYPE = PacketType.SYMLINK
    request_id: int
    target_path: str
    link_path: str

    def _body(self) -> bytes:
        return _u32(self.request_id) + _text(self.target_path) + _text(self.link_path)

    @classmethod
    def _decode(cls, r: _Reader) -> Symlink:
        return cls(r.u32(), r.path(), r.path())


@frozen
class Extended(Packet):
    """An C{SSH_FXP_EXTENDED} request the codec knows by name only."""

    TYPE = PacketType.EXTENDED
    request_id: int
    name: str
    data: bytes = b""

    def _body(self) -> bytes:
        return _u32(self.request_id) + _text(self.name) + self.data


@frozen
class _Ext(Packet):
    """Base of the decoded extensions: C{EXTENSION} is the name on the wire."""

    TYPE = PacketType.EXTENDED
    EXTENSION: ClassVar[str] = ""

    request_id: int

    def _fields(self) -> bytes:
        raise NotImplementedError

    def _body(self) -> bytes:
        return _u32(self.request_id) + _text(self.EXTENSION) + self._fields()


@frozen
class PosixRename(_Ext):
    """C{posix-rename@openssh.com}: rename(2), replacing C{newpath} if it exists."""

    EXTENSION = "posix-rename@openssh.com"
    oldpath: str
    newpath: str

    def _fields(self) -> bytes:
        return _text(self.oldpath) + _text(self.newpath)

    @classmethod
    def _decode_ext(cls, request_id: int, r: _Reader) -> PosixRename:
        return cls(request_id, r.path(), r.path())


@frozen
class Hardlink(_Ext):
    """C{hardlink@openssh.com}: link(2) C{oldpath} as C{newpath}."""

    EXTENSION = "hardlink@openssh.com"
    oldpath: str
    newpath: str

    def _fields(self) -> bytes:
        return _text(self.oldpath) + _text(self.newpath)

    @classmethod
    def _decode_ext(cls, request_id: int, r: _Reader) -> Hardlink:
        return cls(request_id, r.path(), r.path())


@frozen
class Statvfs(_Ext):
    EXTENSION = "statvfs@openssh.com"
    path: str

    def _fields(self) -> bytes:
        return _text(self.path)

    @classmethod
    def _decode_ext(cls, request_id: int, r: _Reader) -> Statvfs:
        return cls(request_id, r.path())


@frozen
class Fstatvfs(_Ext):
    EXTENSION = "fstatvfs@openssh.com"
    handle: bytes

    def _fields(self) -> bytes:
        return _string(self.handle)

    @classmethod
    def _decode_ext(cls, request_id: int, r: _Reader) -> Fstatvfs:
        return cls(request_id, r.string())


@frozen
class Fsync(_Ext):
    EXTENSION = "fsync@openssh.com"
    handle: bytes

    def _fields(self) -> bytes:
        return _string(self.handle)

    @classmethod
    def _decode_ext(cls, request_id: int, r: _Reader) -> Fsync:
        return cls(request_id, r.string())


@frozen
class Lsetstat(_Ext):
    """C{lsetstat@openssh.com}: SETSTAT that does not follow a final symlink."""

    EXTENSION = "lsetstat@openssh.com"
    path: str
    attrs: FileAttributes

    def _fields(self) -> bytes:
        return _text(self.path) + self.attrs.to_bytes()

    @classmethod
    def _decode_ext(cls, request_id: int, r: _Reader) -> Lsetstat:
        return cls(request_id, r.path(), r.attrs())


_EXTENSIONS: dict[str, Callable[[int, _Reader], Packet]] = {
    cls.EXTENSION: cls._decode_ext
    for cls in (PosixRename, Hardlink, Statvfs, Fstatvfs, Fsync, Lsetstat)
}


def _decode_extended(r: _Reader) -> Packet:
    request_id = r.u32()
    name = r.text()
    decode = _EXTENSIONS.get(name)
    if decode is None:
        return Extended(request_id, name, r.rest())
    r.what = name
    return decode(request_id, r)


@frozen
class Status(Packet):
    """C{SSH_FXP_STATUS}.  C{code} stays an int: servers may send codes beyond L{StatusCode}."""

    TYPE = PacketType.STATUS
    request_id: int
    code: int
    message: str = ""
    language: str = ""

    def _body(self) -> bytes:
        return _u32(self.request_id) + _u32(self.code) + _text(self.message) + _text(self.language)

    @classmethod
    def _decode(cls, r: _Reader) -> Status:
        request_id, code = r.u32(), r.u32()
        # Servers of versions before 3 send neither string.
        if r.at_end():
            return cls(request_id, code)
        message = r.text()
        return cls(request_id, code, message, "" if r.at_end() else r.text())


@frozen
class Handle(_IdHandle):
    TYPE = PacketType.HANDLE


@frozen
class Data(Packet):
    """
    C{SSH_FXP_DATA}, lazily: C{length} is the length of the data, which stays
    in C{raw} (build one with L{Data.from_data}).
    """

    TYPE = PacketType.DATA
    request_id: int
    length: int

    @classmethod
    def from_data(cls, request_id: int, data: bytes) -> Data:
        body = _u32(request_id) + _string(data)
        return _with_raw(cls(request_id, len(data)), _HEADER.pack(len(body) + 1, cls.TYPE) + body)

    @property
    def data(self) -> bytes:
        """The data read (a copy out of C{raw}: not for the relay path)."""
        return self.raw[13:13 + self.length]

    def _body(self) -> bytes:
        raise ValueError("a Data without raw bytes has no data: build it with Data.from_data")

    @classmethod
    def _decode(cls, r: _Reader) -> Data:
        return cls(r.u32(), r.skip_string())


@frozen
class NameEntry:
    filename: str
    longname: str = ""
    attrs: FileAttributes = FileAttributes()


def _entries(value: Iterable[NameEntry]) -> tuple[NameEntry, ...]:
    return tuple(value)


@frozen
class Name(Packet):
    TYPE = PacketType.NAME
    request_id: int
    entries: tuple[NameEntry, ...] = field(converter=_entries)

    def _body(self) -> bytes:
        return _u32(self.request_id) + _u32(len(self.entries)) + b"".join(
            _text(e.filename) + _text(e.longname) + e.attrs.to_bytes() for e in self.entries
        )

    @classmethod
    def _decode(cls, r: _Reader) -> Name:
        request_id, count = r.u32(), r.u32()
        # An entry takes at least 12 bytes (two strings and the attribute
        # flags): refuse a count the packet cannot hold before looping on it.
        if count * 12 > len(r.data) - r.pos:
            raise r.fail(f"{count} names do not fit in the packet")
        return cls(request_id, [NameEntry(r.text(), r.text(), r.attrs()) for _ in range(count)])


@frozen
class AttrsReply(Packet):
    """C{SSH_FXP_ATTRS}."""

    TYPE = PacketType.ATTRS
    request_id: int
    attrs: FileAttributes

    def _body(self) -> bytes:
        return _u32(self.request_id) + self.attrs.to_bytes()

    @classmethod
    def _decode(cls, r: _Reader) -> AttrsReply:
        return cls(r.u32(), r.attrs())


@frozen
class ExtendedReply(Packet):
    """C{SSH_FXP_EXTENDED_REPLY}: its contents depend on the request, so they stay opaque."""

    TYPE = PacketType.EXTENDED_REPLY
    request_id: int
    data: bytes = b""

    def _body(self) -> bytes:
        return _u32(self.request_id) + self.data

    @classmethod
    def _decode(cls, r: _Reader) -> ExtendedReply:
        return cls(r.u32(), r.rest())


@frozen
class Unknown(Packet):
    """
    A packet of a type this direction does not define; C{body} is its payload.
    """

    packet_type: int
    body: bytes = b""

    @property
    def request_id(self) -> int | None:
        """The first field, which is the request id in every request of the draft."""
        if len(self.body) < 4:
            return None
        return _unpack_u32(self.body, 0)[0]

    def _body(self) -> bytes:
        return self.body


_CLIENT_TYPES: dict[int, Callable[[_Reader], Packet]] = {
    cls.TYPE: cls._decode
    for cls in (Init, Open, Close, Read, Write, Lstat, Fstat, Setstat, Fsetstat, Opendir,
                Readdir, Remove, Mkdir, Rmdir, Realpath, Stat, Rename, Readlink, Symlink)
}
_CLIENT_TYPES[PacketType.EXTENDED] = _decode_extended

_SERVER_TYPES: dict[int, Callable[[_Reader], Packet]] = {
    cls.TYPE: cls._decode
    for cls in (Version, Status, Handle, Data, Name, AttrsReply, ExtendedReply)
}

_TYPE_NAMES = {member.value: member.name for member in PacketType}


@define
class SFTPParser:
    """
    Frames and decodes one direction of an SFTP stream.

    @ivar sender: whose packets these are; the other direction's types
        decode as L{Unknown}.
    @ivar max_length: the largest length field accepted.
    """

    sender: Sender
    max_length: int = DEFAULT_MAX_LENGTH
    _buffer: bytearray = field(factory=bytearray, init=False)
    _failure: SFTPError | None = field(default=None, init=False)
    _types: dict[int, Callable[[_Reader], Packet]] = field(factory=dict, init=False, repr=False)

    def __attrs_post_init__(self) -> None:
        self.sender = Sender(self.sender)
        self._types = _CLIENT_TYPES if self.sender is Sender.client else _SERVER_TYPES

    def feed(self, data: bytes) -> list[Packet]:
        """
        Add bytes received; return the packets they complete, in order.

        @raise SFTPError: the stream is malformed; this and every later call.
        """
        if self._failure is not None:
            raise self._failure
        try:
            return self._feed(data)
        except SFTPError as e:
            self._failure = e
            self._buffer = bytearray()
            raise

    def _feed(self, data: bytes) -> list[Packet]:
        buffer: bytes | bytearray
        if self._buffer:
            self._buffer += data
            buffer = self._buffer
        else:
            buffer = data
        packets = []
        pos, size = 0, len(buffer)
        while size - pos >= 4:
            length = _U32.unpack_from(buffer, pos)[0]
            if length < 1 or length > self.max_length:
                raise SFTPError(
                    f"SFTP packet length {length} from the {self.sender.value} is outside "
                    f"1..{self.max_length}"
                )
            end = pos + 4 + length
            if end > size:
                break
            if type(buffer) is bytes:
                # A whole chunk is returned as is, not copied.
                raw = buffer if (pos == 0 and end == size) else buffer[pos:end]
            else:
                with memoryview(buffer) as view:
                    raw = bytes(view[pos:end])
            packets.append(self._decode(raw))
            pos = end
        if buffer is self._buffer:
            del self._buffer[:pos]
        elif pos < size:
            self._buffer = bytearray(buffer[pos:])
        return packets

    def _decode(self, raw: bytes) -> Packet:
        packet_type = raw[4]
        decode = self._types.get(packet_type)
        if decode is None:
            return _with_raw(Unknown(packet_type, raw[5:]), raw)
        reader = _Reader(raw, 5, _TYPE_NAMES[packet_type])
        return _with_raw(decode(reader), raw)


# -- auditing ----------------------------------------------------------------


def _printable(text: str) -> str:
    """
    A decoded path as the audit trail and policy see it: bytes that are not
    UTF-8 are shown as C{\\xNN} (audit records must be valid Unicode).
    """
    if text.isascii():
        return text
    try:
        text.encode("utf-8")
        return text
    except UnicodeEncodeError:
        return text.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")


def _absolute(path: str, home: str | None) -> str | None:
    """
    The lexically normalised absolute form of C{path}, or C{None} when it is
    relative and the home directory is not yet known.  Symlinks on the
    target are not (cannot be) resolved.
    """
    if not path.startswith("/"):
        if home is None:
            return None
        path = posixpath.join(home, path)
    # normpath keeps a leading "//" (POSIX leaves it implementation-defined;
    # Linux treats it as "/"), so strip it to one.
    return "/" + posixpath.normpath(path).lstrip("/")


def _link_target(target: str, link: str | None) -> str | None:
    """
    The absolute form of a symlink's target as the server follows it: a
    relative target is resolved against the directory of the link (whose
    absolute form is C{link}), not the session's; C{None} if that is unknown.
    """
    if target.startswith("/"):
        return _absolute(target, None)
    if link is None:
        return None
    return _absolute(target, posixpath.dirname(link))


def _flag_names(pflags: int) -> tuple[str, ...]:
    return tuple(flag.name.lower() for flag in OpenFlags if pflags & flag)


@frozen
class Request:
    """
    One SFTP request as an action to decide and audit.

    @ivar op: the operation: C{open}, C{close}, C{stat} (also LSTAT, FSTAT),
        C{setstat} (also FSETSTAT and C{lsetstat@openssh.com}), C{opendir},
        C{readdir}, C{remove}, C{mkdir}, C{rmdir}, C{realpath}, C{rename}
        (also C{posix-rename@openssh.com}), C{readlink}, C{symlink},
        C{hardlink}, C{statvfs}, C{fsync}, C{extended} (another extension),
        C{unknown} (a packet type SFTP 3 does not define).
    @ivar packet: the precise request: C{"lstat"}, C{"posix-rename@openssh.com"}, ...
    @ivar paths: the paths as the client sent them, or for a request on a
        handle the path it was opened with.
    @ivar absolute: the lexically normalised absolute forms of C{paths},
        where they can be known (see L{SFTPAuditor.home}).
    @ivar write: whether the request can change the target's files.
    @ivar flags: for an OPEN, the names of its C{pflags} (C{"read"},
        C{"write"}, C{"append"}, C{"creat"}, C{"trunc"}, C{"excl"}).
    """

    request_id: int
    op: str
    packet: str
    paths: tuple[str, ...] = ()
    absolute: tuple[str, ...] = ()
    write: bool = False
    flags: tuple[str, ...] = ()
    attrs: FileAttributes | None = None
    handle: bytes | None = field(default=None, repr=False)

    @property
    def unknown_handle(self) -> bool:
        """A request on a handle whose file the auditor does not know (see L{SFTPAuditor})."""
        return self.handle is not None and not self.paths

    @property
    def kind(self) -> str:
        return f"ssh.sftp.{self.op}"

    def action(self) -> Action:
        """
        The action to decide: C{ssh.sftp.paths} holds every path as sent and
        in absolute form, so that a rule on C{"/etc/*"} also catches
        C{"../../etc/passwd"} sent from a home directory.
        """
        paths = tuple(dict.fromkeys(_printable(p) for p in self.paths + self.absolute))
        details: dict[str, Any] = {"ssh.sftp.request_id": self.request_id,
                                   "ssh.sftp.packet": self.packet}
        if self.flags:
            details["ssh.sftp.flags"] = list(self.flags)
        if self.attrs is not None:
            details["ssh.sftp.attrs"] = self.attrs.to_record()
        return Action(
            kind=self.kind,
            input=" ".join([self.packet, *(_quote_path(p) for p in self.paths), *self.flags]),
            attributes={"ssh.sftp.paths": paths, "ssh.sftp.write": self.write},
            details=details,
        )


def _quote_path(path: str) -> str:
    return json.dumps(_printable(path), ensure_ascii=False)


@frozen
class Completion:
    """
    How a request ended, from the server's reply.

    @ivar code: the STATUS code (L{StatusCode}), C{OK} for any other reply.
    @ivar names: for C{realpath} and C{readlink}, the names returned.
    @ivar entries: for C{readdir}, how many names were returned.
    @ivar bytes_read: for the CLOSE of a file handle, the bytes the server
        returned through it (DATA replies); C{bytes_written} the bytes it
        acknowledged writing.
    """

    request: Request
    ok: bool
    code: int = StatusCode.OK
    message: str = ""
    names: tuple[str, ...] = ()
    entries: int | None = None
    attrs: FileAttributes | None = None
    bytes_read: int | None = None
    bytes_written: int | None = None

    @property
    def code_name(self) -> str:
        try:
            return f"SSH_FX_{StatusCode(self.code).name}"
        except ValueError:
            return str(self.code)

    def outcome(self, *, duration_us: int | None = None) -> Outcome:
        """
        The action's outcome.  Bytes are from the client's side: written
        bytes came I{in} from the client, read bytes went I{out} to it.
        """
        if self.ok:
            return Outcome(OutcomeStatus.succeeded, bytes_in=self.bytes_written,
                           bytes_out=self.bytes_read, duration_us=duration_us)
        return Outcome(
            OutcomeStatus.failed,
            error=_printable(self.message) or self.code_name,
            code=self.code_name,
            bytes_in=self.bytes_written,
            bytes_out=self.bytes_read,
            duration_us=duration_us,
        )


@frozen
class OpenHandle:
    """A snapshot of a handle the server opened and has not closed."""

    handle: bytes = field(repr=False)
    path: str
    directory: bool
    flags: tuple[str, ...] = ()
    bytes_read: int = 0
    bytes_written: int = 0


@define
class _HandleState:
    path: str
    directory: bool
    flags: tuple[str, ...]
    bytes_read: int = 0
    bytes_written: int = 0


@define
class SFTPAuditor:
    """
    The audit state of one SFTP channel: pure, fed packets in the order they
    crossed the gateway.

    @ivar home: the target's starting directory, learnt from the reply to
        the client's C{REALPATH "."} (OpenSSH's client sends one first);
        relative paths are resolved against it for L{Request.absolute}.
    @ivar max_pending: the most requests (reads and writes included) that
        may await replies; beyond it the client is flooding and
        L{SFTPError} is raised rather than growing without bound.
    """

    max_pending: int = 4096
    home: str | None = field(default=None, init=False)
    client_version: int | None = field(default=None, init=False)
    server_version: int | None = field(default=None, init=False)
    server_extensions: tuple[tuple[str, bytes], ...] = field(default=(), init=False)
    _pending: dict[int, Request] = field(factory=dict, init=False)
    _reads: dict[int, bytes] = field(factory=dict, init=False)
    _writes: dict[int, tuple[bytes, int]] = field(factory=dict, init=False)
    _handles: dict[bytes, _HandleState] = field(factory=dict, init=False)
    # Handles with a CLOSE forwarded and not answered: sftp-server may hand
    # the same handle out again for an OPEN sent meanwhile.
    _closing: dict[bytes, int] = field(factory=dict, init=False)

    # -- client --------------------------------------------------------------

    def client_packet(self, packet: Packet) -> Request | None:
        """
        Note a packet from the client.

        @return: the request it makes, which the front end decides before
            forwarding the packet (or refuses with L{refusal}); C{None} for
            INIT, READ and WRITE, which are forwarded as they are.
        @raise SFTPError: the client reuses the id of a request awaiting
            its reply, or floods.
        """
        if isinstance(packet, Init):
            self.client_version = packet.version
            return None
        request_id = getattr(packet, "request_id", None)
        if request_id is None:
            kind = packet.packet_type if isinstance(packet, Unknown) else packet.TYPE
            raise SFTPError(f"an SFTP packet of type {kind} from the client has no request id")
        if request_id in self._pending or request_id in self._reads or request_id in self._writes:
            raise SFTPError(f"SFTP request id {request_id} reused while awaiting its reply")
        if len(self._pending) + len(self._reads) + len(self._writes) >= self.max_pending:
            raise SFTPError(f"more than {self.max_pending} SFTP requests await replies")
        if isinstance(packet, Read):
            self._reads[request_id] = packet.handle
            return None
        if isinstance(packet, Write):
            self._writes[request_id] = (packet.handle, packet.length)
            return None
        request = self._request(packet, request_id)
        self._pending[request_id] = request
        return request

    def _request(self, packet: Packet, request_id: int) -> Request:
        def make(op: str, name: str, paths: tuple[str, ...], write: bool, **kw: Any) -> Request:
            absolute = tuple(a for a in (_absolute(p, self.home) for p in paths) if a is not None)
            return Request(request_id, op, name, paths, absolute, write, **kw)

        def on_handle(op: str, name: str, handle: bytes, write: bool, **kw: Any) -> Request:
            # A handle whose OPEN's reply has not been seen (a client
            # guessing what it will be), or that is being closed, could be
            # any file: no paths (Request.unknown_handle; refused).
            state = None if handle in self._closing else self._handles.get(handle)
            paths = (state.path,) if state is not None else ()
            return make(op, name, paths, write, handle=handle, **kw)

        if isinstance(packet, Open):
            flags = _flag_names(packet.pflags)
            return make("open", "open", (packet.filename,), bool(packet.pflags & _WRITE_FLAGS),
                        flags=flags, attrs=packet.attrs)
        if isinstance(packet, Close):
            request = on_handle("close", "close", packet.handle, False)
            self._closing[packet.handle] = self._closing.get(packet.handle, 0) + 1
            return request
        if isinstance(packet, Stat):
            return make("stat", "stat", (packet.path,), False)
        if isinstance(packet, Lstat):
            return make("stat", "lstat", (packet.path,), False)
        if isinstance(packet, Fstat):
            return on_handle("stat", "fstat", packet.handle, False)
        if isinstance(packet, Setstat):
            return make("setstat", "setstat", (packet.path,), True, attrs=packet.attrs)
        if isinstance(packet, Lsetstat):
            return make("setstat", packet.EXTENSION, (packet.path,), True, attrs=packet.attrs)
        if isinstance(packet, Fsetstat):
            return on_handle("setstat", "fsetstat", packet.handle, True, attrs=packet.attrs)
        if isinstance(packet, Opendir):
            return make("opendir", "opendir", (packet.path,), False)
        if isinstance(packet, Readdir):
            return on_handle("readdir", "readdir", packet.handle, False)
        if isinstance(packet, Remove):
            return make("remove", "remove", (packet.path,), True)
        if isinstance(packet, Mkdir):
            return make("mkdir", "mkdir", (packet.path,), True, attrs=packet.attrs)
        if isinstance(packet, Rmdir):
            return make("rmdir", "rmdir", (packet.path,), True)
        if isinstance(packet, Realpath):
            return make("realpath", "realpath", (packet.path,), False)
        if isinstance(packet, Readlink):
            return make("readlink", "readlink", (packet.path,), False)
        if isinstance(packet, Rename):
            return make("rename", "rename", (packet.oldpath, packet.newpath), True)
        if isinstance(packet, PosixRename):
            return make("rename", packet.EXTENSION, (packet.oldpath, packet.newpath), True)
        if isinstance(packet, Hardlink):
            return make("hardlink", packet.EXTENSION, (packet.oldpath, packet.newpath), True)
        if isinstance(packet, Symlink):
            # Both paths: a rule on a folder catches links made in it and
            # links made to it.  The target as the server will follow it:
            # "../secret" from a link in /srv/pub/ is /srv/secret, wherever
            # the session started.
            link = _absolute(packet.link_path, self.home)
            target = _link_target(packet.target_path, link)
            return Request(request_id, "symlink", "symlink", (packet.link_path, packet.target_path),
                           tuple(a for a in (link, target) if a is not None), True)
        if isinstance(packet, Statvfs):
            return make("statvfs", packet.EXTENSION, (packet.path,), False)
        if isinstance(packet, Fstatvfs):
            return on_handle("statvfs", packet.EXTENSION, packet.handle, False)
        if isinstance(packet, Fsync):
            return on_handle("fsync", packet.EXTENSION, packet.handle, False)
        # What the gateway cannot read may change anything: treat it as a write.
        if isinstance(packet, Extended):
            return make("extended", packet.name, (), True)
        if isinstance(packet, Unknown):
            return make("unknown", f"type {packet.packet_type}", (), True)
        raise SFTPError(f"SFTP packet type {packet.TYPE} is not a client request")

    def refusal(self, request: Request, message: str) -> bytes:
        """
        Forget a request that will not be forwarded; return the STATUS
        packet (C{SSH_FX_PERMISSION_DENIED}, with C{message}) to send the
        client in its place.
        """
        if self._pending.pop(request.request_id, None) is not None and request.op == "close":
            self._closed(request)
        return encode(Status(request.request_id, StatusCode.PERMISSION_DENIED, message, "en"))

    def _closed(self, request: Request) -> None:
        """A CLOSE is answered or refused: its handle is no longer being closed."""
        if request.handle is None:
            return
        left = self._closing.pop(request.handle, 0) - 1
        if left > 0:
            self._closing[request.handle] = left

    # -- server --------------------------------------------------------------

    def server_packet(self, packet: Packet) -> Completion | None:
        """
        Note a packet from the server.

        @return: the completion of the request it answers; C{None} for
            VERSION and for the replies to READ and WRITE (counted on their
            handle).
        @raise SFTPError: the server answers a request that is not awaiting
            a reply.
        """
        if isinstance(packet, Version):
            self.server_version = packet.version
            self.server_extensions = packet.extensions
            return None
        request_id = getattr(packet, "request_id", None)
        if request_id is None:
            return None
        handle = self._reads.pop(request_id, None)
        if handle is not None:
            state = self._handles.get(handle)
            if state is not None and isinstance(packet, Data):
                state.bytes_read += packet.length
            return None
        written = self._writes.pop(request_id, None)
        if written is not None:
            state = self._handles.get(written[0])
            if state is not None and isinstance(packet, Status) and packet.code == StatusCode.OK:
                state.bytes_written += written[1]
            return None
        request = self._pending.pop(request_id, None)
        if request is None:
            raise SFTPError(f"the SFTP server answered request {request_id}, which is not pending")
        return self._complete(request, packet)

    def _complete(self, request: Request, packet: Packet) -> Completion:
        bytes_read = bytes_written = None
        if request.op == "close" and request.handle is not None:
            self._closed(request)
            # sftp-server forgets a handle even when closing it fails.
            state = self._handles.pop(request.handle, None)
            if state is not None and not state.directory:
                bytes_read, bytes_written = state.bytes_read, state.bytes_written
        if isinstance(packet, Status):
            ok = packet.code == StatusCode.OK or (
                packet.code == StatusCode.EOF and request.op == "readdir"
            )
            return Completion(request, ok, packet.code, packet.message,
                              bytes_read=bytes_read, bytes_written=bytes_written)
        if isinstance(packet, Handle):
            if request.op in ("open", "opendir") and request.paths:
                self._handles[packet.handle] = _HandleState(
                    request.paths[0], request.op == "opendir", request.flags
                )
            return Completion(request, True)
        if isinstance(packet, Name):
            if request.op == "readdir":
                return Completion(request, True, entries=len(packet.entries))
            names = tuple(_printable(e.filename) for e in packet.entries)
            if (request.op == "realpath" and request.paths in ((".",), ("",))
                    and len(names) == 1 and names[0].startswith("/")):
                self.home = packet.entries[0].filename
            return Completion(request, True, names=names)
        if isinstance(packet, AttrsReply):
            return Completion(request, True, attrs=packet.attrs)
        return Completion(request, True)

    # -- state ---------------------------------------------------------------

    def pending_requests(self) -> tuple[Request, ...]:
        """Requests forwarded and not yet answered (when the channel closes: never answered)."""
        return tuple(self._pending.values())

    def open_handles(self) -> tuple[OpenHandle, ...]:
        """Handles the server opened and the client has not closed, with their byte counts."""
        return tuple(
            OpenHandle(h, s.path, s.directory, s.flags, s.bytes_read, s.bytes_written)
            for h, s in self._handles.items()
        )
