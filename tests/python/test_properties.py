"""Property tests (hypothesis) of the protocol edge cases where TCP's lack of
message boundaries matters: however a byte stream is cut into packets,
lines_mode delivers the same lines as a reference split, and an echo server
returns the same bytes.

Each example uses a fresh connection to one server that lives for the whole
test; chunks are sent with TCP_NODELAY and a short pause between them, so the
cuts mostly survive as separate segments.
"""

import time

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

# The protocols are conftest's: in mode "interpreters" the workers import a
# protocol's module, and hypothesis (imported here) does not load in
# subinterpreters.
from conftest import Echo, Framed, Netstring, connect, recv_exactly, recv_until

SETTINGS = settings(
    max_examples=60,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
SENTINEL = b"--end-of-example--"


def split_at(data, cuts):
    points = sorted({c for c in cuts if 0 < c < len(data)})
    bounds = [0] + points + [len(data)]
    return [data[a:b] for a, b in zip(bounds, bounds[1:]) if b > a]


def send_chunks(sock, chunks):
    for chunk in chunks:
        sock.sendall(chunk)
        time.sleep(0.0005)


def reference_lines(stream):
    """Lines end at \\n; one \\r before it is part of the ending."""
    lines = stream.split(b"\n")[:-1]
    return [line[:-1] if line.endswith(b"\r") else line for line in lines]


# Pieces rich in the characters that matter: \r and \n alone and together,
# empty lines, bytes that are not ASCII, and longer runs.
LINE_PIECES = st.sampled_from([b"a", b"bc", b"\r", b"\n", b"\r\n", b"\n\n", b"\xff\x00", b" ", b"x" * 300])
LINE_STREAMS = st.lists(LINE_PIECES, max_size=80).map(b"".join)


def read_netstrings(sock, until):
    buffer = b""
    lines = []
    while not lines or lines[-1] != until:
        while True:
            colon = buffer.find(b":")
            if colon < 0:
                break
            size = int(buffer[:colon])
            end = colon + 1 + size
            if len(buffer) < end + 1:
                break
            assert buffer[end : end + 1] == b",", buffer[: end + 1]
            lines.append(buffer[colon + 1 : end])
            buffer = buffer[end + 1 :]
        if lines and lines[-1] == until:
            break
        chunk = sock.recv(65536)
        assert chunk, f"EOF after {lines!r}"
        buffer += chunk
    assert buffer == b"", buffer
    return lines


def test_lines_mode_any_chunking_gives_the_reference_lines(rt):
    port = rt.serve(Netstring)

    @SETTINGS
    @given(stream=LINE_STREAMS, cuts=st.lists(st.integers(0, 24_000), max_size=30))
    def check(stream, cuts):
        full = stream + b"\n" + SENTINEL + b"\n"
        with connect(port) as sock:
            send_chunks(sock, split_at(full, cuts))
            assert read_netstrings(sock, SENTINEL) == reference_lines(full)

    rt.run(check, timeout=90)


@pytest.mark.timeout(120)
def test_lines_mode_byte_by_byte(rt):
    """The hardest chunking: every byte its own packet."""
    port = rt.serve(Netstring)
    stream = b"one\r\ntwo\n\r\n\n\rthree\r\r\n" + SENTINEL + b"\n"

    def driver():
        with connect(port) as sock:
            send_chunks(sock, [stream[i : i + 1] for i in range(len(stream))])
            return read_netstrings(sock, SENTINEL)

    assert rt.run(driver) == [b"one", b"two", b"", b"", b"\rthree\r", SENTINEL]


def test_echo_any_chunking_is_byte_exact(rt):
    port = rt.serve(Echo)

    @SETTINGS
    @given(data=st.binary(min_size=1, max_size=50_000), cuts=st.lists(st.integers(0, 50_000), max_size=40))
    def check(data, cuts):
        with connect(port) as sock:
            send_chunks(sock, split_at(data, cuts))
            assert recv_exactly(sock, len(data)) == data

    rt.run(check, timeout=90)


LINE_CONTENTS = st.binary(max_size=200).map(lambda b: b.replace(b"\n", b"").replace(b"\r", b""))


def test_vectored_replies_arrive_whole(rt):
    port = rt.serve(Framed)

    @SETTINGS
    @given(lines=st.lists(LINE_CONTENTS, max_size=20))
    def check(lines):
        stream = b"".join(line + b"\n" for line in lines) + SENTINEL + b"\n"
        with connect(port) as sock:
            sock.sendall(stream)
            got = recv_until(sock, SENTINEL + b"\n")
        assert got == stream

    rt.run(check, timeout=90)
