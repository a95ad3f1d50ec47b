"""The client side of test_takeover's latency test, run in a process of its
own so that its timing does not depend on the server's GIL.

Usage: takeover_client.py PORT OTHERS SECONDS

Opens one connection that asks the server to compute for SECONDS, and
OTHERS connections that each send a one-byte ping every 20 ms (open loop:
a ping does not wait for the previous answer) while the computation runs.
Prints one JSON object: every ping's round trip in seconds ("latencies"),
and the computing connection's answer ("computed").
"""

import collections
import json
import selectors
import socket
import sys
import time

PING_INTERVAL = 0.02
# How long after asking for the computation the pings start, so that they
# all fall inside it.
HEAD_START = 0.05
# Longest wait for any answer before the client gives up.
ANSWER_TIMEOUT = 15.0


def connect(port):
    sock = socket.create_connection(("127.0.0.1", port), timeout=ANSWER_TIMEOUT)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return sock


def main(port, others, seconds):
    computing = connect(port)
    socks = [connect(port) for _ in range(others)]
    # Every connection answers once before the measurement: all are open
    # and spread over the workers.
    for sock in socks:
        sock.sendall(b"p")
    for sock in socks:
        if sock.recv(1) != b"p":
            raise SystemExit("a connection did not answer its first ping")
    computing.sendall(b"compute %f" % seconds)
    started = time.monotonic()
    time.sleep(HEAD_START)
    selector = selectors.DefaultSelector()
    for sock in socks:
        sock.setblocking(False)
        selector.register(sock, selectors.EVENT_READ)
    sent = {sock: collections.deque() for sock in socks}
    latencies = []
    pinging_until = started + seconds - HEAD_START
    next_tick = time.monotonic()
    while True:
        now = time.monotonic()
        if now < pinging_until and now >= next_tick:
            for sock in socks:
                sent[sock].append(time.monotonic())
                sock.sendall(b"p")
            next_tick += PING_INTERVAL
        elif now >= pinging_until and not any(sent.values()):
            break
        if now - started > seconds + ANSWER_TIMEOUT:
            raise SystemExit("pings were not answered in time")
        wait = max(0.0, next_tick - now) if now < pinging_until else 0.5
        for key, _ in selector.select(wait):
            got = key.fileobj.recv(4096)
            at = time.monotonic()
            if not got:
                raise SystemExit("the server closed a pinging connection")
            for _ in got:
                latencies.append(at - sent[key.fileobj].popleft())
    computed = computing.recv(64).decode()
    print(json.dumps({"latencies": latencies, "computed": computed}))


if __name__ == "__main__":
    main(int(sys.argv[1]), int(sys.argv[2]), float(sys.argv[3]))
