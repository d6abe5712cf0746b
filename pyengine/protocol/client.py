"""A blocking, one-frame-at-a-time client of the engine socket, for the CLI and the supervisor."""

import socket

from .framing import HEADER_BYTES, decode_response, encode_frame


def _read_exactly(sock: socket.socket, n: int) -> bytes:
    data = b""
    while len(data) < n:
        chunk = sock.recv(n - len(data))
        if not chunk:
            raise ConnectionError("engine closed the connection")
        data += chunk
    return data


def call(sock: socket.socket, msg):
    """Send one message and return the engine's reply (raises OSError or ProtocolError)."""
    sock.sendall(encode_frame(msg))
    return decode_response(_read_exactly(sock, int.from_bytes(_read_exactly(sock, HEADER_BYTES), "big")))
