"""A raw WebSocket client for the tests that must send what no library
sends (unmasked frames, reserved bits, oversized control frames, invalid
UTF-8) or read exactly what the server sent (its pings, its close frame)."""

import base64
import os
import socket
import struct

from conftest import LOCALHOST, SOCKET_TIMEOUT, recv_exactly, recv_until

TEXT, BINARY, CONT, CLOSE, PING, PONG = 0x1, 0x2, 0x0, 0x8, 0x9, 0xA


def frame(opcode, payload=b"", fin=True, rsv=0, mask=True, length=None):
    """A client frame; length overrides the length field (payload is still
    what follows)."""
    n = len(payload) if length is None else length
    head = bytes([(0x80 if fin else 0) | rsv << 4 | opcode])
    bit = 0x80 if mask else 0
    if n < 126:
        head += bytes([bit | n])
    elif n < 1 << 16:
        head += bytes([bit | 126]) + struct.pack(">H", n)
    else:
        head += bytes([bit | 127]) + struct.pack(">Q", n)
    if mask:
        key = os.urandom(4)
        payload = bytes(b ^ key[i % 4] for i, b in enumerate(payload))
        head += key
    return head + payload


def close_payload(code, reason=b""):
    return struct.pack(">H", code) + reason


class RawWebSocket:
    """A socket past a successful handshake."""

    def __init__(self, port, path="/echo", headers=(), timeout=SOCKET_TIMEOUT, rcvbuf=None):
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        if rcvbuf is not None:  # before connecting, so that the window is small from the start
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        self.sock.settimeout(timeout)
        self.sock.connect((LOCALHOST, port))
        key = base64.b64encode(os.urandom(16)).decode()
        lines = [
            f"GET {path} HTTP/1.1",
            f"Host: {LOCALHOST}:{port}",
            "Upgrade: websocket",
            "Connection: Upgrade",
            f"Sec-WebSocket-Key: {key}",
            "Sec-WebSocket-Version: 13",
            *(f"{name}: {value}" for name, value in headers),
        ]
        self.sock.sendall(("\r\n".join(lines) + "\r\n\r\n").encode())
        head = recv_until(self.sock, b"\r\n\r\n")
        self.head = head.decode("latin-1")
        assert self.head.startswith("HTTP/1.1 101 "), self.head

    def send(self, data):
        self.sock.sendall(data)

    def read_frame(self):
        """(fin, opcode, payload) of the next server frame; None at EOF."""
        first = self.sock.recv(1)
        if not first:
            return None
        second = recv_exactly(self.sock, 1)[0]
        assert second & 0x80 == 0, "a server frame must not be masked"
        n = second & 0x7F
        if n == 126:
            n = struct.unpack(">H", recv_exactly(self.sock, 2))[0]
        elif n == 127:
            n = struct.unpack(">Q", recv_exactly(self.sock, 8))[0]
        return bool(first[0] & 0x80), first[0] & 0x0F, recv_exactly(self.sock, n)

    def expect_close(self):
        """The code of the server's close frame (skipping data frames), then
        EOF."""
        while True:
            got = self.read_frame()
            assert got is not None, "closed without a close frame"
            if got[1] == CLOSE:
                code = struct.unpack(">H", got[2][:2])[0] if got[2] else 1005
                assert self.sock.recv(1) == b"", "more after the close frame"
                return code

    def close(self):
        self.sock.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
