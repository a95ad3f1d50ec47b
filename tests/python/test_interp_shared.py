"""px.SharedBuffer and px.Channel, in whatever mode the suite runs in (they
work the same in all three), from the main thread and from workers.

SharedBuffer's lifetime is checked against the kernel: its memory is a
mapping named "pyparallel.SharedBuffer" (or the mapped file's path) in
/proc/self/maps, which must exist exactly while something holds the buffer.
"""

import gc
import pickle
import queue
import threading
import time

import pytest

import pyparallel as px
from conftest import run_threads

MAPPING_NAME = "pyparallel.SharedBuffer"


def mappings(name=MAPPING_NAME):
    with open("/proc/self/maps") as maps:
        return sum(1 for line in maps if name in line)


# ---- functions the workers run (module level: every mode finds them) ------------


def fill(buf, value):
    view = memoryview(buf)
    view[:] = bytes([value]) * len(view)
    return len(view)


def byte_sum(buf):
    return sum(memoryview(buf))


def produce(channel, count, tag):
    for i in range(count):
        channel.put((tag, i))
    return count


def echo_back(requests, replies, count):
    for _ in range(count):
        replies.put(requests.get(timeout=10) * 2)
    return count


# ---- SharedBuffer ------------------------------------------------------------------


def test_shared_buffer_is_zero_filled_and_writable():
    buf = px.SharedBuffer(8192)
    assert len(buf) == 8192 and not buf.readonly
    view = memoryview(buf)
    assert view.readonly is False and bytes(view) == bytes(8192)
    view[10:13] = b"abc"
    assert bytes(memoryview(buf)[10:13]) == b"abc"
    assert "8192 bytes" in repr(buf)


def test_a_worker_writes_what_the_main_thread_reads_without_copying():
    buf = px.SharedBuffer(1 << 20)
    assert px.submit_work(fill, buf, 7).result(timeout=10) == 1 << 20
    view = memoryview(buf)
    assert bytes(view) == bytes([7]) * (1 << 20)


def test_workers_read_what_the_main_thread_wrote():
    buf = px.SharedBuffer(4096)
    memoryview(buf)[:4] = b"\x01\x02\x03\x04"
    results = px.map(byte_sum, [buf] * 8)
    assert results == [10] * 8


def test_from_file_maps_the_file_read_only(tmp_path):
    path = tmp_path / "data.bin"
    data = bytes(range(256)) * 1000
    path.write_bytes(data)
    buf = px.SharedBuffer.from_file(path)
    assert buf.readonly and len(buf) == len(data)
    view = memoryview(buf)
    assert view.readonly and bytes(view) == data
    with pytest.raises(TypeError):
        view[0] = 1
    assert px.submit_work(byte_sum, buf).result(timeout=10) == sum(data)
    assert str(path) in open("/proc/self/maps").read()


def test_from_file_of_an_empty_file(tmp_path):
    path = tmp_path / "empty"
    path.write_bytes(b"")
    buf = px.SharedBuffer.from_file(str(path))
    assert len(buf) == 0 and bytes(memoryview(buf)) == b""


def test_bad_arguments(tmp_path):
    with pytest.raises(ValueError, match="size must be >= 0"):
        px.SharedBuffer(-1)
    with pytest.raises(TypeError):
        px.SharedBuffer("10")
    with pytest.raises(FileNotFoundError):
        px.SharedBuffer.from_file(tmp_path / "missing")
    with pytest.raises(IsADirectoryError):
        px.SharedBuffer.from_file(tmp_path)
    with pytest.raises(ValueError, match="regular file"):
        px.SharedBuffer.from_file("/dev/null")


def test_a_shared_buffer_cannot_be_pickled():
    with pytest.raises(TypeError, match="cannot be pickled"):
        pickle.dumps(px.SharedBuffer(10))


def test_the_mapping_lives_exactly_as_long_as_a_holder():
    gc.collect()
    before = mappings()
    buf = px.SharedBuffer(3 << 20)
    assert mappings() == before + 1
    view = memoryview(buf)
    del buf
    gc.collect()
    assert mappings() == before + 1, "an exported view keeps the memory"
    view[0] = 1  # still valid memory
    view.release()
    assert mappings() == before


def test_a_buffer_in_a_channel_outlives_its_sender():
    gc.collect()
    before = mappings()
    channel = px.Channel()
    buf = px.SharedBuffer(1 << 16)
    memoryview(buf)[0] = 42
    channel.put(buf)
    del buf
    gc.collect()
    assert mappings() == before + 1, "the channel holds the buffer"
    received = channel.get(timeout=1)
    assert memoryview(received)[0] == 42
    del received
    gc.collect()
    assert mappings() == before


def test_a_channel_dropped_with_a_buffer_in_it_frees_the_buffer():
    gc.collect()
    before = mappings()
    channel = px.Channel()
    channel.put((1, px.SharedBuffer(1 << 16), "x"))
    assert mappings() == before + 1
    del channel
    gc.collect()
    assert mappings() == before


# ---- Channel --------------------------------------------------------------------------


def test_channel_is_first_in_first_out():
    channel = px.Channel()
    for i in range(1000):
        channel.put(i)
    assert len(channel) == 1000
    assert [channel.get() for _ in range(1000)] == list(range(1000))
    assert len(channel) == 0


def test_channel_copies_values_across():
    channel = px.Channel()
    values = [
        None,
        True,
        False,
        0,
        -5,
        1 << 100,
        -(1 << 70),
        2.5,
        "s\u00e9\u2603\U0001f600",
        b"\x00bytes",
        (1, ("nested", b"x"), None),
        [1, 2],
        {"a": 1},
        {3, 4},
    ]
    for value in values:
        channel.put(value)
    for value in values:
        got = channel.get(timeout=1)
        assert got == value and type(got) is type(value)
    original = [1, 2]
    channel.put(original)
    assert channel.get(timeout=1) is not original


def test_channel_refuses_what_cannot_cross():
    channel = px.Channel()
    with pytest.raises(TypeError, match="cannot cross to another interpreter"):
        channel.put(threading.Lock())
    with pytest.raises(TypeError, match="lambda"):
        channel.put(lambda: None)
    assert len(channel) == 0


def test_get_times_out_with_queue_empty():
    channel = px.Channel()
    started = time.monotonic()
    with pytest.raises(queue.Empty):
        channel.get(timeout=0.1)
    assert time.monotonic() - started >= 0.09
    with pytest.raises(queue.Empty):
        channel.get(timeout=0)


def test_get_waits_for_a_put_from_another_thread():
    channel = px.Channel()
    timer = threading.Timer(0.2, channel.put, args=("late",))
    started = time.monotonic()
    timer.start()
    assert channel.get(timeout=10) == "late"
    assert time.monotonic() - started >= 0.15
    timer.join()


def test_a_full_channel_blocks_put_until_there_is_room():
    channel = px.Channel(2)
    assert channel.maxsize == 2
    channel.put(1)
    channel.put(2)
    with pytest.raises(queue.Full):
        channel.put(3, timeout=0.05)
    with pytest.raises(queue.Full):
        channel.put(3, timeout=0)
    threading.Timer(0.2, channel.get).start()
    started = time.monotonic()
    channel.put(3, timeout=10)
    assert time.monotonic() - started >= 0.15
    assert [channel.get(), channel.get()] == [2, 3]


def test_many_producers_and_consumers_each_item_once_in_order():
    channel = px.Channel(maxsize=64)
    producers, per_producer, consumers = 4, 500, 4
    received = [[] for _ in range(consumers)]

    def consume(index):
        while True:
            item = channel.get(timeout=20)
            if item is None:
                return
            received[index].append(item)

    def produce_all(tag):
        for i in range(per_producer):
            channel.put((tag, i))

    threads = [threading.Thread(target=consume, args=(i,)) for i in range(consumers)]
    for thread in threads:
        thread.start()
    run_threads(*[(produce_all, tag) for tag in range(producers)])
    for _ in range(consumers):
        channel.put(None)
    for thread in threads:
        thread.join(20)
    every = sorted(item for items in received for item in items)
    assert every == sorted((tag, i) for tag in range(producers) for i in range(per_producer))
    for items in received:  # each consumer sees each producer's items in order
        for tag in range(producers):
            mine = [i for t, i in items if t == tag]
            assert mine == sorted(mine)


def test_workers_put_and_the_main_thread_gets_in_order():
    channel = px.Channel()
    futures = [px.submit_work(produce, channel, 200, tag) for tag in range(3)]
    assert [f.result(timeout=10) for f in futures] == [200] * 3
    items = [channel.get(timeout=10) for _ in range(600)]
    for tag in range(3):
        assert [i for t, i in items if t == tag] == list(range(200))


def test_a_worker_answers_through_channels():
    requests, replies = px.Channel(), px.Channel()
    future = px.submit_work(echo_back, requests, replies, 50)
    for i in range(50):
        requests.put(i)
        assert replies.get(timeout=10) == 2 * i
    assert future.result(timeout=10) == 50


def test_a_channel_passes_through_a_channel():
    outer, inner = px.Channel(), px.Channel(name="inner-test")
    outer.put(inner)
    same = outer.get(timeout=1)
    same.put("through the copy")
    assert inner.get(timeout=1) == "through the copy"
    assert same.name == "inner-test"


def test_stats_report_each_channel():
    channel = px.Channel(10, name="stats-test")
    for i in range(5):
        channel.put(i)
    channel.get()
    entry = next(c for c in px.stats()["channels"] if c["name"] == "stats-test")
    assert (entry["depth"], entry["maxsize"], entry["puts"], entry["gets"]) == (4, 10, 5, 1)
    assert entry["puts_per_second"] > 0
    del channel
    gc.collect()
    assert all(c["name"] != "stats-test" for c in px.stats()["channels"])


def test_channel_bad_arguments():
    with pytest.raises(ValueError, match="maxsize"):
        px.Channel(-1)
    channel = px.Channel()
    with pytest.raises(ValueError, match="timeout"):
        channel.get(timeout=-1)
    with pytest.raises(TypeError):
        channel.get(timeout="soon")
    with pytest.raises(TypeError, match="cannot be pickled"):
        pickle.dumps(channel)
