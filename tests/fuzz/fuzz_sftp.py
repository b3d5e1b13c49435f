"""
Fuzz the SFTP parser and auditor (hoopgw.protocols.ssh.sftp).

Input: C{[mode][chunk seed] + bytes}.

  - mode bits 0-1: 0, the client's stream; 1, the server's; 2 or 3, a
    conversation: records C{[direction][SFTP packet]} (direction bit 0:
    server, bit 1: the gateway refuses the client's request), each packet
    framed by its own length, fed to one parser per direction and its
    packets to an L{SFTPAuditor}, as the SSH front end does;
  - bit 2: small limits (64-byte packets, 8 requests pending).

Checked: the parsers raise only L{SFTPError}, and keep raising after one;
a stream parses the same whole and in pieces (or fails either way); the packets' bytes are
exactly a prefix of the stream; every packet re-encoded from its fields
parses back to an equal packet; the auditor raises only L{SFTPError}, its
requests and completions make actions and outcomes, its refusals are one
STATUS packet, and it never holds more requests than its limit.
"""

from __future__ import annotations

import struct
import sys
from pathlib import Path

if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from tests.fuzz._fuzzing import Input, Violation, check, chunks, fuzz, instrumented

with instrumented(__name__):
    import attrs

    from hoopgw.model import Action, Outcome
    from hoopgw.protocols.ssh import sftp

SMALL_LENGTH = 64
SMALL_PENDING = 8


def _parser(sender: str, small: bool) -> sftp.SFTPParser:
    return sftp.SFTPParser(sftp.Sender(sender), SMALL_LENGTH) if small else sftp.SFTPParser(sftp.Sender(sender))


def _feed(parser: sftp.SFTPParser, piece: bytes) -> tuple[list[sftp.Packet], bool]:
    try:
        return parser.feed(piece), False
    except sftp.SFTPError:
        pass
    try:
        parser.feed(b"\0\0\0\x05\x01")
    except sftp.SFTPError:
        return [], True
    raise Violation("a failed SFTP parser accepted more bytes")


def _inspect(packet: sftp.Packet, sender: str) -> None:
    repr(packet)
    raw = sftp.encode(packet)
    check(raw == packet.raw and raw, "encode() of a parsed packet is not its raw bytes")
    if isinstance(packet, (sftp.Write, sftp.Data)):
        check(len(packet.data) == packet.length, f"{type(packet).__name__}.data is not length bytes long")
        return  # lazy: no fields to re-encode from
    fresh = attrs.evolve(packet)
    check(not fresh.raw, "attrs.evolve kept raw")
    again = sftp.SFTPParser(sftp.Sender(sender), max_length=1 << 30).feed(sftp.encode(fresh))
    check(len(again) == 1 and again[0] == packet, f"{type(packet).__name__} does not survive re-encoding: {packet!r}")


def _stream(sender: str, small: bool, pieces: list[bytes]) -> tuple[list[tuple[type, bytes]], bool]:
    parser = _parser(sender, small)
    packets: list[sftp.Packet] = []
    failed = False
    for piece in pieces:
        got, failed = _feed(parser, piece)
        packets.extend(got)
        if failed:
            break
    for packet in packets:
        _inspect(packet, sender)
    stream = b"".join(pieces)
    consumed = b"".join(sftp.encode(p) for p in packets)
    check(stream.startswith(consumed), "the packets' bytes are not the start of the stream")
    return [(type(p), sftp.encode(p)) for p in packets], failed


def _records(data: bytes) -> list[tuple[int, bytes]]:
    """The conversation's records: a direction byte, then one length-framed packet."""
    read, out = Input(data), []
    while read.left:
        direction = read.byte()
        header = read.take(4)
        length = struct.unpack(">I", header)[0] if len(header) == 4 else 0
        out.append((direction, header + read.take(min(length, read.left))))
    return out


def _conversation(data: bytes, small: bool) -> None:
    parsers = {"client": _parser("client", small), "server": _parser("server", small)}
    auditor = sftp.SFTPAuditor(max_pending=SMALL_PENDING) if small else sftp.SFTPAuditor()
    try:
        for direction, segment in _records(data):
            sender = "server" if direction & 1 else "client"
            for packet in parsers[sender].feed(segment):
                if sender == "client":
                    request = auditor.client_packet(packet)
                    if request is not None:
                        check(isinstance(request.action(), Action), "Request.action() is not an Action")
                        if direction & 2:
                            status = sftp.SFTPParser(sftp.Sender.server).feed(auditor.refusal(request, "denied"))
                            check(len(status) == 1 and isinstance(status[0], sftp.Status)
                                  and status[0].request_id == request.request_id, "a refusal is not one STATUS")
                else:
                    completion = auditor.server_packet(packet)
                    if completion is not None:
                        check(isinstance(completion.outcome(duration_us=1), Outcome), "Completion.outcome()")
                        completion.code_name  # noqa: B018
                check(len(auditor.pending_requests()) <= auditor.max_pending, "more requests pending than allowed")
                for handle in auditor.open_handles():
                    check(handle.bytes_read >= 0 and handle.bytes_written >= 0, "negative byte counts")
    except sftp.SFTPError:
        pass  # the channel closes


def one_input(data: bytes) -> None:
    if len(data) < 2:
        return
    mode, seed, body = data[0], data[1], data[2:]
    small = bool(mode & 4)
    if mode & 2:
        _conversation(body, small)
        return
    sender = "server" if mode & 1 else "client"
    pieces = chunks(body, seed)
    whole = _stream(sender, small, [body] if body else [])
    parts = _stream(sender, small, pieces)
    # A feed that raises returns none of its packets: the packets before an
    # error depend on where the pieces end; whether there is one must not.
    check(whole[1] == parts[1] and (whole[1] or whole[0] == parts[0]),
          f"the stream parses differently whole and in {len(pieces)} pieces")


if __name__ == "__main__":
    fuzz(one_input)
