"""
Session recordings: asciicast v2 for terminal sessions
(L{hoopgw.recording.asciicast}) and best-effort shell command lines
reconstructed from terminal input (L{hoopgw.recording.lines}).  Pure: the
protocol front ends feed them the bytes they relay.
"""

from hoopgw.recording.asciicast import (
    Asciicast,
    AsciicastEvent,
    AsciicastRecorder,
    read_asciicast,
)
from hoopgw.recording.lines import MAX_LINE, LineReconstructor, ShellLine

__all__ = [
    "MAX_LINE",
    "Asciicast",
    "AsciicastEvent",
    "AsciicastRecorder",
    "LineReconstructor",
    "ShellLine",
    "read_asciicast",
]
