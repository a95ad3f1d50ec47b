"""The idle scenario of bench/http.py: many keep-alive connections held open.

hold_idle() opens `count` connections to a server on 127.0.0.1 (at most
CONNECTING at a time, so that no listen backlog overflows), sends one GET on
each and reads its response, then leaves every connection idle. The server's
memory is read once the first RAMP share of the connections is answered (so
that what a server allocates once, on its first connections, and memory it
returns after the previous load do not count) and again SETTLE_S (1 s) after
the last response, and the connections still open then are counted: a server that
closes idle connections holds fewer, and one that answers Connection: close
holds none (the client closes its end then, as any client would). Memory per
connection is the growth divided by the connections held since the first
reading.
Every socket is then closed with a reset (SO_LINGER 0), so that thousands of
TIME_WAIT entries do not pile up from one server to the next.
"""

import errno
import selectors
import socket
import struct
import time

CONNECTING = 256
RAMP = 0.1
SETTLE_S = 1.0
# After this long the connections still waiting for an answer are given up.
TIMEOUT_S = 60.0
RESET_ON_CLOSE = struct.pack("ii", 1, 0)


def _response_complete(data):
    """None while incomplete, else whether the server keeps the connection."""
    head_end = data.find(b"\r\n\r\n")
    if head_end < 0:
        return None
    length, keep = 0, True
    for line in data[:head_end].split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        name = name.strip().lower()
        if name == b"content-length":
            length = int(value)
        elif name == b"connection":
            keep = value.strip().lower() != b"close"
    if len(data) < head_end + 4 + length:
        return None
    return keep


def _status(data):
    return int(data.split(None, 2)[1])


def hold_idle(server, path, count, settle=SETTLE_S):
    """Holds `count` idle connections to server; returns the figures.
    settle: seconds to wait before each reading of the server's memory."""
    request = f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n".encode()
    address = ("127.0.0.1", server.port)
    baseline = None  # (rss, pss, connections answered) at the first reading
    ramp = max(1, int(count * RAMP))
    selector = selectors.DefaultSelector()
    received = {}  # socket -> bytes of its response so far
    answered, failed, bad_status, refused = [], 0, 0, 0
    timed_out = False
    opened = 0
    deadline = time.monotonic() + TIMEOUT_S
    try:
        while len(answered) + failed + bad_status + refused < count:
            if baseline is None and len(answered) + failed + bad_status + refused >= ramp:
                time.sleep(settle)
                baseline = (*server.memory_mib(), len(answered))
            while opened < count and len(received) < CONNECTING:
                s = socket.socket()
                s.setblocking(False)
                s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, RESET_ON_CLOSE)
                err = s.connect_ex(address)
                if err not in (0, errno.EINPROGRESS):
                    s.close()
                    failed += 1
                else:
                    received[s] = None  # None: the request is not sent yet
                    selector.register(s, selectors.EVENT_WRITE)
                opened += 1
            if time.monotonic() > deadline:
                # Measured with what it holds: a server that stops
                # answering past some number of connections shows as such.
                timed_out = True
                break
            for key, _ in selector.select(timeout=5):
                s = key.fileobj
                try:
                    if received[s] is None:
                        err = s.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
                        if err:
                            raise OSError(err, "connect")
                        s.send(request)
                        received[s] = b""
                        selector.modify(s, selectors.EVENT_READ)
                        continue
                    chunk = s.recv(65536)
                    if not chunk:
                        raise OSError(errno.ECONNRESET, "closed")
                except OSError:
                    selector.unregister(s)
                    del received[s]
                    s.close()
                    failed += 1
                    continue
                data = received[s] + chunk
                received[s] = data
                keep = _response_complete(data)
                if keep is not None:
                    selector.unregister(s)
                    del received[s]
                    if _status(data) != 200:
                        bad_status += 1
                        s.close()
                    elif not keep:
                        # Connection: close. A client closes its end then
                        # (gunicorn's sync worker waits for that).
                        refused += 1
                        s.close()
                    else:
                        answered.append(s)
        time.sleep(settle)
        rss_after, pss_after = server.memory_mib()
        if baseline is None:
            baseline = (rss_after, pss_after, len(answered))
        rss_before, pss_before, answered_before = baseline
        held = 0
        for s in answered:
            try:
                held += s.recv(1, socket.MSG_PEEK | socket.MSG_DONTWAIT) != b""
            except BlockingIOError:
                held += 1  # nothing to read: still open and idle
            except OSError:
                pass
    finally:
        for s in list(received) + answered:
            s.close()
        selector.close()
    growth = rss_after - rss_before
    counted = held - answered_before
    return {
        "connections": count,
        "answered": len(answered),
        "held": held,
        "failed": failed,
        "bad_status": bad_status,
        "not_kept": refused,
        "unanswered": len(received),
        "timed_out": timed_out,
        "rss_before_mib": rss_before,
        "rss_after_mib": rss_after,
        "pss_before_mib": pss_before,
        "pss_after_mib": pss_after,
        "kib_per_connection": growth * 1024 / counted if counted > 0 else None,
    }
