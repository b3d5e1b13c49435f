"""
Fuzz the PostgreSQL codec (hoopgw.protocols.postgres.codec): both parsers,
any chunking, the lazily decoded fields, and the round trip.

Input: C{[mode][chunk seed] + stream}.

  - mode bit 0: the stream is the server's (L{BackendParser}), else the
    client's (L{FrontendParser});
  - client: bits 1-2 say how 'p' messages decode (password, SASL initial
    response, SASL response, undecoded); server: bit 1 announces an
    encryption response first;
  - bit 3: interactive: the parser is fed in pieces and an encryption
    request is answered between them, as the proxy does (no differential);
  - bit 4 (client): a canned StartupMessage goes first, so the stream is
    all tagged messages;
  - bit 5: small message limits (64 bytes);
  - bit 6 (server): runs of DataRows framed as one (C{row_runs}), and the
    stream parsed whole must frame the same rows, bytes and other messages
    as it does row by row.

Checked: C{feed} raises only L{codec.ProtocolError}, and keeps raising
after one; the stream parses the same whole and in pieces; the parsed
messages' bytes are exactly a prefix of the stream; every decoded
message re-encodes from its fields to its own bytes; L{DataRow.values}
and friends raise only L{codec.ProtocolError}, and what they decode
re-encodes to the same row.
"""

from __future__ import annotations

import sys
from pathlib import Path

if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from tests.fuzz._fuzzing import Violation, check, chunks, fuzz, instrumented

with instrumented(__name__):
    import attrs

    from hoopgw.protocols.postgres import codec

_AUTH_RESPONSES = (codec.PasswordMessage, codec.SASLInitialResponse, codec.SASLResponse, codec.GenericMessage)
STARTUP = codec.encode(codec.StartupMessage([("user", "alice"), ("database", "appdb")]))
SMALL = 64


def _parser(mode: int) -> codec.FrontendParser | codec.BackendParser:
    small = bool(mode & 0x20)
    if mode & 1:
        backend = codec.BackendParser(max_message_length=SMALL) if small else codec.BackendParser()
        backend.row_runs = bool(mode & 0x40)
        if mode & 2:
            backend.expect_encryption_response()
        return backend
    if small:
        frontend = codec.FrontendParser(
            max_message_length=SMALL, max_small_message_length=SMALL,
            max_startup_length=SMALL, max_password_message_length=SMALL,
        )
    else:
        frontend = codec.FrontendParser()
    frontend.expect_auth_response(_AUTH_RESPONSES[(mode >> 1) & 3])
    if mode & 0x10:
        frontend.feed(STARTUP)
    return frontend


def _inspect(message: codec.Message) -> None:
    """The message's fields, lazy ones included, as the gateway reads them."""
    repr(message)
    raw = codec.encode(message)
    check(raw == message.raw and isinstance(raw, bytes), "encode() of a parsed message is not its raw bytes")
    kind = type(message)
    if kind is codec.DataRows:
        rows = codec.BackendParser().feed(raw)
        check(len(rows) == message.count and all(type(r) is codec.DataRow for r in rows),
              "a run of DataRows does not hold its count of whole rows")
    elif kind is codec.DataRow:
        _data_row(message)
    elif kind is codec.CopyData:
        check(codec.CopyData.from_data(message.data).raw == raw, "CopyData.from_data(data) differs")
    elif kind is codec.GenericMessage:
        check(codec.GenericMessage.from_body(message.tag, message.body).raw == raw, "GenericMessage.from_body differs")
    else:
        # Decoded when framed: the fields alone give the same bytes back.
        fresh = attrs.evolve(message)
        check(fresh.raw is None, "attrs.evolve kept raw")
        check(codec.encode(fresh) == raw, f"{kind.__name__} does not re-encode to the bytes it was parsed from")
        if kind is codec.StartupMessage:
            message.user, message.database  # noqa: B018
        elif kind in (codec.ErrorResponse, codec.NoticeResponse):
            message.severity, message.code, message.message, message.detail, message.hint  # noqa: B018
        elif kind is codec.RowDescription:
            for f in message.fields:
                check(isinstance(f.name, str), "a RowDescription field name is not text")


def _data_row(row: codec.DataRow) -> None:
    try:
        values = row.values
    except codec.ProtocolError:
        try:
            if row.column_count:
                row.replace_column(0, b"x")
        except codec.ProtocolError:
            pass
        return
    check(row.column_count == len(values), "DataRow.column_count differs from len(values)")
    check(codec.DataRow.from_values(values).raw == row.raw, "DataRow.from_values(values) differs")
    for index in {0, len(values) // 2, len(values) - 1} if values else ():
        for new in (None, b"", b"masked"):
            changed = row.replace_column(index, new)
            expected = values[:index] + (new,) + values[index + 1 :]
            check(changed.values == expected, "DataRow.replace_column changed another column")
            check(changed.raw == codec.DataRow.from_values(expected).raw, "DataRow.replace_column bytes differ")


def _feed(parser: codec.FrontendParser | codec.BackendParser, piece: bytes) -> tuple[list[codec.Message], bool]:
    try:
        return parser.feed(piece), False
    except codec.ProtocolError as e:
        messages = getattr(e, "messages", [])
    # A parser that failed stays failed.
    try:
        parser.feed(b"\0")
    except codec.ProtocolError:
        return messages, True
    raise Violation("a failed parser accepted more bytes")


def _run(mode: int, pieces: list[bytes], interactive: bool) -> tuple[list[tuple[type, bytes]], bool, int]:
    parser = _parser(mode)
    messages: list[codec.Message] = []
    failed = False
    for piece in pieces:
        if interactive and getattr(parser, "phase", None) is codec.FrontendPhase.ENCRYPTION_PENDING:
            parser.encryption_answered()
        got, failed = _feed(parser, piece)
        messages.extend(got)
        if failed:
            break
    for message in messages:
        _inspect(message)
    stream = b"".join(pieces)
    consumed = b"".join(codec.encode(m) for m in messages)
    check(stream.startswith(consumed), "the messages' bytes are not the start of the stream")
    if not failed:
        check(len(consumed) + parser.buffered == len(stream), "bytes lost: messages plus buffered differ from the stream")
    return _rows_merged(messages), failed, parser.buffered


def _rows_merged(messages: list[codec.Message]) -> list[tuple[type, bytes]]:
    """Each message's type and bytes, consecutive rows (one by one or in runs) as one entry: how they were cut aside."""
    out: list[tuple[type, bytes]] = []
    for message in messages:
        kind = type(message)
        if kind is codec.DataRow or kind is codec.DataRows:
            if out and out[-1][0] is codec.DataRows:
                out[-1] = (codec.DataRows, out[-1][1] + codec.encode(message))
                continue
            kind = codec.DataRows
        out.append((kind, codec.encode(message)))
    return out


def one_input(data: bytes) -> None:
    if len(data) < 2:
        return
    mode, seed, stream = data[0], data[1], data[2:]
    # An encryption response is refused with bytes behind it in the same
    # read, by design (CVE-2021-23222): only fed interactively.
    interactive = bool(mode & 8) or (mode & 3) == 3
    pieces = chunks(stream, seed)
    if interactive:
        _run(mode, pieces, True)
        return
    whole = _run(mode, [stream] if stream else [], False)
    parts = _run(mode, pieces, False)
    if mode & 0x41 == 0x41:
        # Runs cut where the reads are cut, and a failure leaves out the run it ends:
        # compared with framing row by row only where the stream parsed.
        if not whole[1] and not parts[1]:
            check(whole == parts, f"runs differ whole and in {len(pieces)} pieces")
            check(whole == _run(mode & ~0x40, [stream] if stream else [], False),
                  "runs of rows differ from the rows framed one by one")
        return
    check(whole == parts, f"the stream parses differently whole and in {len(pieces)} pieces: {whole[1:]} vs {parts[1:]}")


if __name__ == "__main__":
    fuzz(one_input)
