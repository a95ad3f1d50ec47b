"""A chat server: every line a member says goes to every other member.

    python examples/chat.py [--host 127.0.0.1] [--port 8023]
    python examples/chat.py --selftest

Connect a few terminals with `nc 127.0.0.1 8023` and type. It shows 1:m
fan-out: the callback of the connection that received a line calls
transport.send on the *other* connections' transports. send may be called
from any thread and on any connection; each connection's data goes out in the
order of the calls, so every member sees each speaker's lines in order.

The member table is shared by callbacks running in parallel, so it is guarded
by a lock; the broadcast itself runs outside the lock. A member that left
while a line was being sent to it makes send raise px.AsyncError (the
connection is closed) or an OSError such as BrokenPipeError (its peer went
away first), which only means that member is gone.

--selftest connects four members, has each say five lines at once, and checks
that every member heard the other three, each in order.
"""

import argparse
import sys
import threading

import pyparallel as px
from _selftest import connect, recv_lines, run_clients, run_selftest, use_a_mode_that_shares_objects


class Room:
    def __init__(self):
        self.lock = threading.Lock()
        self.members = {}  # transport -> name
        self.joined = 0

    def join(self, transport):
        with self.lock:
            self.joined += 1
            name = f"guest{self.joined}"
            self.members[transport] = name
            return name

    def leave(self, transport):
        with self.lock:
            return self.members.pop(transport, None)

    def broadcast(self, sender, line):
        with self.lock:
            others = [t for t in self.members if t is not sender]
        for member in others:
            try:
                member.send(line)
            except (px.AsyncError, OSError):
                pass  # that member has just left (closed, or its peer went away)


room = Room()


class Chat:
    lines_mode = True

    def connection_made(self, transport):
        self.name = room.join(transport)
        return f"* welcome, you are {self.name}\r\n"

    def lines_received(self, transport, line):
        if line == b"/quit":
            transport.close()
            return None
        room.broadcast(transport, b"%s: %s\r\n" % (self.name.encode(), line))
        return None

    def connection_lost(self, transport, exc):
        if room.leave(transport):
            room.broadcast(transport, f"* {self.name} left\r\n")


def drive(port):
    members, lines_each = 4, 5
    socks = [connect(port) for _ in range(members)]
    names = []
    for sock in socks:
        (welcome,) = recv_lines(sock, 1)
        names.append(welcome.rsplit(b" ", 1)[1])
    heard = [None] * members

    def member(index):
        sock = socks[index]
        for i in range(lines_each):
            sock.sendall(b"line %d\r\n" % i)
        heard[index] = recv_lines(sock, (members - 1) * lines_each)

    run_clients(member, members)
    for index, lines in enumerate(heard):
        for speaker, name in enumerate(names):
            said = [line for line in lines if line.startswith(name + b": ")]
            expected = [] if speaker == index else [b"%s: line %d" % (name, i) for i in range(lines_each)]
            if said != expected:
                raise AssertionError(f"member {index} heard {said!r} from {name!r}, expected {expected!r}")
    socks[0].sendall(b"/quit\r\n")
    for sock in socks[1:]:
        (left,) = recv_lines(sock, 1)
        if left != b"* %s left" % names[0]:
            raise AssertionError(f"expected a leave notice, got {left!r}")
    for sock in socks:
        sock.close()
    return f"{members} members, {lines_each} lines each, every line heard by every other member in order"


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8023)
    parser.add_argument("--selftest", action="store_true", help="serve on a free port, check, exit")
    args = parser.parse_args(argv)
    use_a_mode_that_shares_objects("chat", "one table of members")

    server = px.server(args.host, 0 if args.selftest else args.port)
    px.register(server, Chat)
    host, port = server.sockname
    if args.selftest:
        return run_selftest("chat", lambda: drive(port))
    # Printed by run() on the main thread once it serves (and Ctrl-C works).
    banner = f"chat server on {host}:{port}; connect with: nc {host} {port}"
    px.call_from_main_thread(print, banner, flush=True)
    px.run()
    return 0


if __name__ == "__main__":
    sys.exit(main())
