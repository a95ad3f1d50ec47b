"""px.read_file and px.write_file: real files in tmp_path, in the mode and on
the I/O backend under test. Files of sizes around the 1 MiB piece size are
written and read back whole and in ranges; appending, exclusive creation and
every error (OSError with errno and filename, as open() gives); awaiting the
futures from a coroutine on a worker; the futures of requests still running
when run() stops are settled.
"""

import errno
import os

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import pyparallel as px
from conftest import run_bounded
from file_work import read_on_worker, write_then_read

PIECE = 1 << 20
TIMEOUT = 10


def pattern(size, seed=0):
    return bytes((i * 7 + seed) % 256 for i in range(size)) if size < 4096 else os.urandom(size)


@pytest.mark.parametrize("size", [0, 1, PIECE - 1, PIECE, PIECE + 1, 3 * PIECE + 7])
def test_sizes_around_the_piece_size_round_trip(tmp_path, size):
    path = tmp_path / "f"
    data = pattern(size)
    assert px.write_file(path, data).result(TIMEOUT) == size
    assert path.read_bytes() == data
    assert px.read_file(path).result(TIMEOUT) == data
    assert px.read_file(str(path), offset=size // 2).result(TIMEOUT) == data[size // 2 :]


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    size=st.sampled_from([0, 5, PIECE - 3, PIECE + 3, 2 * PIECE]),
    offset=st.integers(0, 2 * PIECE + 10),
    length=st.one_of(st.none(), st.integers(0, 2 * PIECE + 10)),
)
def test_ranges_read_what_slicing_gives(tmp_path, size, offset, length):
    path = tmp_path / f"r{size}"
    if not path.exists():
        path.write_bytes(os.urandom(size))
    data = path.read_bytes()
    expect = data[offset:] if length is None else data[offset : offset + length]
    assert px.read_file(path, offset=offset, length=length).result(TIMEOUT) == expect


def test_append_and_exclusive_and_sendable_data(tmp_path):
    path = tmp_path / "log"
    assert px.write_file(path, "héllo").result(TIMEOUT) == len("héllo".encode())
    assert px.write_file(path, (b" ", bytearray(b"wor"), memoryview(b"ld")), append=True).result(TIMEOUT) == 6
    assert path.read_bytes() == "héllo world".encode()
    assert px.write_file(path, b"new").result(TIMEOUT) == 3  # truncates
    assert path.read_bytes() == b"new"
    with pytest.raises(FileExistsError) as info:
        px.write_file(path, b"x", exclusive=True).result(TIMEOUT)
    assert info.value.filename == str(path)  # os.fspath(path), as open() gives
    assert px.write_file(tmp_path / "fresh", b"x", exclusive=True).result(TIMEOUT) == 1


def test_errors_are_oserrors_with_errno_and_filename(tmp_path):
    missing = str(tmp_path / "missing")
    cases = [
        (px.read_file(missing), FileNotFoundError, errno.ENOENT, missing),
        (px.read_file(tmp_path), IsADirectoryError, errno.EISDIR, tmp_path),
        (px.write_file(tmp_path, b"x"), IsADirectoryError, errno.EISDIR, tmp_path),
        (px.write_file(tmp_path / "no" / "f", b"x"), FileNotFoundError, errno.ENOENT, tmp_path / "no" / "f"),
    ]
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    cases.append((px.read_file(fifo), OSError, errno.EINVAL, fifo))
    for future, kind, code, filename in cases:
        exc = future.exception(TIMEOUT)
        assert type(exc) is kind and exc.errno == code and exc.filename == str(filename), exc


def test_bad_arguments(tmp_path):
    with pytest.raises(ValueError):
        px.read_file(tmp_path / "f", offset=-1)
    with pytest.raises(ValueError):
        px.read_file(tmp_path / "f", length=-1)
    with pytest.raises(TypeError):
        px.read_file(42)
    with pytest.raises(TypeError):
        px.write_file(tmp_path / "f", 42)
    with pytest.raises(TypeError):
        px.read_file(tmp_path / "f", 0)  # offset is keyword-only


def test_awaited_from_a_coroutine_and_waited_on_a_worker(tmp_path):
    path = str(tmp_path / "aw")
    data = os.urandom(PIECE + 5)
    assert px.submit_work(write_then_read, path, data).result(TIMEOUT) == (len(data), data)
    assert px.submit_work(read_on_worker, path).result(TIMEOUT) == (True, data)


def test_requests_running_at_stop_are_settled(tmp_path):
    path = tmp_path / "big"
    path.write_bytes(os.urandom(4 * PIECE))
    futures = [px.read_file(path) for _ in range(16)]
    px.stop()
    run_bounded(15)
    for future in futures:
        assert future.done()
        assert future.result() == path.read_bytes()
