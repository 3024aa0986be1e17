"""What the server and the SQLite writer process say to each other over their socket.

The server sends a ``Group`` of commands (``store.commands``) to commit in one
transaction; the process answers each group, in order, with one ``Answer``: the
command results, or why the whole transaction failed. Each message is one frame: a
4-byte big-endian length and a msgpack body. Tracking calls travel as ``WireCall``
(their ``raw`` already JSON text) and structs as arrays, the cheapest form to encode
and decode on the request path.
"""

from __future__ import annotations

import socket
import struct
from typing import TYPE_CHECKING, Any, Union

import msgspec

from opencdp.store.commands import AppendCalls, Command
from opencdp.store.sqlite.append import WireCall

LENGTH = struct.Struct(">I")

if TYPE_CHECKING:
    WireCommand = Command[Any]
else:
    #: Every command as the writer process decodes it (tracking calls as ``WireCall``).
    WireCommand = Union[  # noqa: UP007  (a union built from a tuple of classes)
        tuple(AppendCalls[WireCall] if kind is AppendCalls else kind for kind in Command.kinds)
    ]

#: ``Answer.error`` when another connection held the write lock past the busy timeout
#: (an index being built, a long ``opencdp`` command): worth a retry, unlike other errors.
BUSY = "busy"


class Group(msgspec.Struct, array_like=True):
    """What the server sends: commands to commit together, in order."""

    commands: list[WireCommand]


class Answer(msgspec.Struct, array_like=True):
    """What the process sends back, once the group is committed (or has failed).

    ``results``: one per command (each encoded as its command's result type), or None
    when the transaction failed, with ``error`` saying why. ``refusals``: guardrail
    refusals, for the server's metrics; ``positions``: the ``seq`` ranges (first,
    last) of the new events.
    """

    results: list[msgspec.Raw] | None
    error: str | None = None
    refusals: list[str] = []
    positions: list[tuple[int, int]] = []


READY = Answer([])  # the first frame: the process's connection is open


def wire_command(command: Command[Any]) -> Command[Any]:
    """``command`` in the form the writer process decodes."""
    if isinstance(command, AppendCalls):
        return AppendCalls(command.workspace, [WireCall.of(call) for call in command.calls])
    return command


def frame(payload: bytes) -> bytes:
    """``payload`` as one frame: its length, then itself."""
    return LENGTH.pack(len(payload)) + payload


def send_frame(sock: socket.socket, payload: bytes) -> None:
    sock.sendall(frame(payload))


def receive_frame(sock: socket.socket) -> bytes | None:
    """The next frame's body, or None when the other end has closed the socket."""
    head = _receive_exactly(sock, LENGTH.size)
    if head is None:
        return None
    body = _receive_exactly(sock, LENGTH.unpack(head)[0])
    if body is None:
        raise ConnectionError("the socket closed in the middle of a frame")
    return body


def _receive_exactly(sock: socket.socket, size: int) -> bytes | None:
    buffer = bytearray(size)
    view = memoryview(buffer)
    got = 0
    while got < size:
        n = sock.recv_into(view[got:])
        if n == 0:
            if got == 0:
                return None
            raise ConnectionError("the socket closed in the middle of a frame")
        got += n
    return bytes(buffer)
