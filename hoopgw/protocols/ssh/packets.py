"""
Cheaper binary packets for both legs' SSH transports.

Every relayed 32 KiB of channel data is decrypted, MAC-checked, re-framed,
encrypted and MAC'd again, and bench/ssh.py found Conch's per-packet work
(a fresh C{hmac.HMAC} per packet over C{seq + packet}, and several
concatenations of the whole packet) to be a large share of the gateway's
CPU.  L{FastPackets} redoes only C{sendPacket} and C{getPacket}, with the
same bytes on the wire:

  - the HMAC keyed once per key (after each key exchange) and C{copy()}'d
    per packet, fed the sequence number and the packet's parts in turn;
  - the packet encrypted in parts (a stream cipher's output, and a block
    cipher's in cryptography, do not depend on how the input is split) and
    handed to the socket with C{writeSequence}, without joining;
  - the receive buffer sliced once per packet.

Anything else (key exchange in progress, compression, no MAC, an AEAD or
ETM MAC Conch might add) takes Conch's own path.
"""

from __future__ import annotations

import hmac
import os
import struct
from typing import TYPE_CHECKING, Any, Callable

from twisted.conch.ssh import transport
from twisted.internet.interfaces import ITransport

if TYPE_CHECKING:
    # A mixin of an SSHTransportBase subclass: typed as one, an object at run time.
    _Transport = transport.SSHTransportBase
else:
    _Transport = object

__all__ = ["FastPackets"]

_HEADER = struct.Struct("!LBB")  # packet length, padding length, message type
_SEQ = struct.Struct(">L")
_LENGTHS = struct.Struct("!LB")


class _Keyed:
    """The HMACs of one set of keys, keyed once (Conch keys one per packet); both MACs are on."""

    # (Any: Conch types SSHCiphers.outMAC and inMAC as the empty tuple they
    # start as, not the keyed MAC parameters, with a key, setKeys puts there.)
    def __init__(self, ciphers: Any) -> None:
        self.ciphers = ciphers
        self.out = hmac.new(ciphers.outMAC.key, digestmod=ciphers.outMAC[0])
        self.into = hmac.new(ciphers.inMAC.key, digestmod=ciphers.inMAC[0])


class FastPackets(_Transport):
    """Mixed into an L{transport.SSHTransportBase} subclass (before it)."""

    transport: ITransport
    _keyed: _Keyed | None = None

    def _keyed_for(self, ciphers: Any) -> _Keyed | None:
        keyed = self._keyed
        if keyed is None or keyed.ciphers is not ciphers:
            if not (ciphers.outMAC[0] and ciphers.inMAC[0]):
                return None  # before the first key exchange: no MAC
            keyed = self._keyed = _Keyed(ciphers)
        return keyed

    def sendPacket(self, messageType: int, payload: bytes) -> None:
        ciphers = self.currentEncryptions
        keyed = self._keyed_for(ciphers)
        if (
            keyed is None
            or self._keyExchangeState != self._KEY_EXCHANGE_NONE
            or self.outgoingCompression
        ):
            # (Conch leaves sendPacket unannotated: typed here.)
            send: Callable[[int, bytes], None] = super().sendPacket
            return send(messageType, payload)
        bs = ciphers.encBlockSize
        total = 6 + len(payload)  # length, padding length, type, payload
        pad = bs - (total % bs)
        if pad < 4:
            pad += bs
        header = _HEADER.pack(total + pad - 4, pad, messageType)
        padding = os.urandom(pad)
        mac = keyed.out.copy()
        mac.update(_SEQ.pack(self.outgoingPacketSequence))
        mac.update(header)
        mac.update(payload)
        mac.update(padding)
        encrypt = ciphers.encryptor.update
        self.transport.writeSequence(
            [encrypt(header), encrypt(payload), encrypt(padding), mac.digest()]
        )
        self.outgoingPacketSequence += 1

    def getPacket(self) -> bytes | None:
        ciphers = self.currentEncryptions
        keyed = self._keyed_for(ciphers)
        if keyed is None or self.incomingCompression:
            return self._conch_packet()
        buf = self.buf
        bs = ciphers.decBlockSize
        ms = ciphers.verifyDigestSize
        if len(buf) < bs:
            return None
        first = self.__dict__.pop("first", None)
        if first is None:
            first = ciphers.decrypt(buf[:bs])
        packet_len, padding_len = _LENGTHS.unpack_from(first)
        if packet_len > 1048576 or (packet_len + 4) % bs or padding_len + 1 > packet_len:
            # Conch's own checks and messages (it keeps "first" to re-read).
            self.first = first
            return self._conch_packet()
        end = 4 + packet_len
        if len(buf) < end + ms:
            self.first = first
            return None
        view = memoryview(buf)
        rest = ciphers.decrypt(view[bs:end])
        mac = keyed.into.copy()
        mac.update(_SEQ.pack(self.incomingPacketSequence))
        mac.update(first)
        mac.update(rest)
        good = hmac.compare_digest(mac.digest(), bytes(view[end : end + ms]))
        view.release()
        self.buf = buf[end + ms :]
        if not good:
            disconnect: Callable[[int, bytes], None] = self.sendDisconnect
            disconnect(transport.DISCONNECT_MAC_ERROR, b"bad MAC")
            return None
        self.incomingPacketSequence += 1
        # The payload: after the lengths, before the padding (one copy).
        if padding_len <= len(rest):
            return b"".join((first[5:], memoryview(rest)[: len(rest) - padding_len]))
        packet: bytes = (first + rest)[5 : end - padding_len]
        return packet

    def _conch_packet(self) -> bytes | None:
        """Conch's own getPacket (unannotated there: typed here)."""
        get: Callable[[], bytes | None] = super().getPacket
        return get()
