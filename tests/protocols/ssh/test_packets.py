"""
Tests for L{hoopgw.protocols.ssh.packets}: the same bytes on the wire as
Conch's own transport, in both directions.
"""

from __future__ import annotations

import os

from hypothesis import given, settings
from hypothesis import strategies as st
from twisted.conch.ssh import transport
from twisted.internet.testing import StringTransport
from twisted.trial.unittest import SynchronousTestCase

from hoopgw.protocols.ssh.packets import FastPackets

KEYS = [os.urandom(64) for _ in range(6)]


class Fast(FastPackets, transport.SSHTransportBase):
    pass


def _leg(cls: type, cipher: bytes, mac: bytes, *, sender: bool) -> transport.SSHTransportBase:
    t = cls()
    t.transport = StringTransport()
    t.buf = b""
    t.outgoingPacketSequence = t.incomingPacketSequence = 0
    t.outgoingCompression = t.incomingCompression = None
    t.disconnected = []
    t.sendDisconnect = lambda code, text: t.disconnected.append((code, text))
    ciphers = transport.SSHCiphers(cipher, cipher, mac, mac)
    a, b = (KEYS[0:3], KEYS[3:6]) if sender else (KEYS[3:6], KEYS[0:3])
    ciphers.setKeys(a[0], a[1], b[0], b[1], a[2], b[2])
    t.currentEncryptions = ciphers
    return t


def _receive(receiver: transport.SSHTransportBase, wire: bytes) -> list[bytes]:
    receiver.buf += wire
    packets = []
    while (packet := receiver.getPacket()) is not None:
        packets.append(packet)
    return packets


CIPHERS = [b"aes128-ctr", b"aes256-ctr", b"aes128-cbc"]
MACS = [b"hmac-sha2-256", b"hmac-sha2-512", b"hmac-sha1"]


class PacketTests(SynchronousTestCase):
    def test_sameWireBytes(self) -> None:
        """With the same padding, L{FastPackets} sends exactly what Conch sends."""
        self.patch(os, "urandom", lambda n: b"\x07" * n)
        self.patch(transport.randbytes, "secureRandom", lambda n: b"\x07" * n)
        for cipher in CIPHERS:
            for mac in MACS:
                conch, fast = _leg(transport.SSHTransportBase, cipher, mac, sender=True), _leg(Fast, cipher, mac, sender=True)
                for size in (0, 1, 11, 12, 100, 32768):
                    payload = os.urandom(size) if size else b""
                    conch.sendPacket(94, payload)
                    fast.sendPacket(94, payload)
                self.assertEqual(fast.transport.value(), conch.transport.value(), (cipher, mac))

    @settings(max_examples=30, deadline=None)
    @given(
        payloads=st.lists(st.binary(max_size=3000), min_size=1, max_size=8),
        chunk=st.integers(min_value=1, max_value=5000),
        cipher=st.sampled_from(CIPHERS),
        mac=st.sampled_from(MACS),
    )
    def test_roundTrip(self, payloads: list[bytes], chunk: int, cipher: bytes, mac: bytes) -> None:
        """
        Packets from Conch's transport are read back by L{FastPackets} and
        the other way round, however the bytes arrive.
        """
        for sender_cls, receiver_cls in ((transport.SSHTransportBase, Fast), (Fast, transport.SSHTransportBase)):
            sender = _leg(sender_cls, cipher, mac, sender=True)
            receiver = _leg(receiver_cls, cipher, mac, sender=False)
            for p in payloads:
                sender.sendPacket(94, p)
            wire = sender.transport.value()
            got: list[bytes] = []
            for i in range(0, len(wire), chunk):
                got += _receive(receiver, wire[i : i + chunk])
            self.assertEqual(got, [b"\x5e" + p for p in payloads])
            self.assertEqual(receiver.disconnected, [])

    def test_badMac(self) -> None:
        """A packet whose MAC does not match is refused, as by Conch."""
        sender = _leg(Fast, b"aes128-ctr", b"hmac-sha2-256", sender=True)
        receiver = _leg(Fast, b"aes128-ctr", b"hmac-sha2-256", sender=False)
        sender.sendPacket(94, b"hello")
        wire = bytearray(sender.transport.value())
        wire[-1] ^= 1
        self.assertEqual(_receive(receiver, bytes(wire)), [])
        self.assertEqual(receiver.disconnected, [(transport.DISCONNECT_MAC_ERROR, b"bad MAC")])
