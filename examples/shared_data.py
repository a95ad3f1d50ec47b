"""One big read-only dict, loaded once, read by every worker at full speed.

    python examples/shared_data.py [--host 127.0.0.1] [--port 8024] [--entries 200000]
    python examples/shared_data.py --selftest

The process builds a table of ENTRIES user records once and calls
px.eternalize on it: the dict and everything in it become immortal, so the
workers read it without reference-count traffic (on a free-threaded Python,
two threads reading one ordinary shared dict slow each other down; an
eternalized one scales with the cores). The table is never freed and must
not be modified afterwards: treat it as a constant.

Two ways of reading it are shown:
  - submit_work: one scan per worker, each over a stride of the keys, summed
    up and compared with a scan on the main thread;
  - a lookup server on PORT: send a user name per line (user000042), get its
    record back, from whichever worker serves your connection.

--selftest does both with a smaller table and checks the answers.
"""

import argparse
import sys

import pyparallel as px
from _selftest import connect, recv_lines, run_clients, run_selftest, use_a_mode_that_shares_objects


def build_table(entries):
    return {
        f"user{i:06d}": (i, f"name-{i}", (i * 37) % 1000 / 10.0, frozenset({i % 7, i % 11})) for i in range(entries)
    }


def scan(table, keys, start, step):
    """Sums a stride of the records: every worker runs this on the same table."""
    total = 0.0
    count = 0
    for key in keys[start::step]:
        number, name, score, tags = table[key]
        total += score + len(tags)
        count += 1
    return count, total, px.thread_seq_id()


class Lookup:
    lines_mode = True
    table = None  # the eternalized table, set in main()

    def lines_received(self, transport, line):
        record = self.table.get(line.decode("ascii", "replace"))
        if record is None:
            return b"? " + line + b"\r\n"
        number, name, score, tags = record
        return f"{line.decode()} {number} {name} {score} {sorted(tags)}\r\n"


def scan_on_all_workers(table):
    keys = list(table)
    workers = px.stats()["workers"]
    futures = [px.submit_work(scan, table, keys, start, workers) for start in range(workers)]
    results = [future.result() for future in futures]
    count = sum(r[0] for r in results)
    total = sum(r[1] for r in results)
    expected_count, expected_total, _ = scan(table, keys, 0, 1)
    if count != expected_count or abs(total - expected_total) > 1e-6 * max(1.0, expected_total):
        raise AssertionError(f"the workers' scans ({count}, {total}) differ from the main thread's")
    threads = sorted({r[2] for r in results})
    return count, total, threads


def drive(port, table, entries):
    count, total, threads = scan_on_all_workers(table)
    if count != entries:
        raise AssertionError(f"scanned {count} of {entries} records")

    def client(offset):
        with connect(port) as sock:
            wanted = [offset + 97 * i for i in range(50)]
            sock.sendall(b"".join(b"user%06d\r\n" % i for i in wanted) + b"nobody\n")
            lines = recv_lines(sock, len(wanted) + 1)
            for i, line in zip(wanted, lines):
                fields = line.split(b" ", 3)
                if fields[:3] != [b"user%06d" % i, b"%d" % i, b"name-%d" % i]:
                    raise AssertionError(f"wrong record for user{i:06d}: {line!r}")
            if lines[-1] != b"? nobody":
                raise AssertionError(f"unknown key answered with {lines[-1]!r}")

    run_clients(client, 6)
    return f"{count} records scanned on threads {threads}, 6 lookup clients served"


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8024)
    parser.add_argument("--entries", type=int, default=200_000)
    parser.add_argument("--selftest", action="store_true", help="serve on a free port, check, exit")
    args = parser.parse_args(argv)
    if args.selftest:
        args.entries = min(args.entries, 50_000)
    use_a_mode_that_shares_objects("shared_data", "one eternalized table")

    Lookup.table = px.eternalize(build_table(args.entries))
    server = px.server(args.host, 0 if args.selftest else args.port)
    px.register(server, Lookup)
    host, port = server.sockname
    if args.selftest:
        return run_selftest("shared_data", lambda: drive(port, Lookup.table, args.entries))
    count, total, threads = scan_on_all_workers(Lookup.table)
    print(f"{count} records eternalized and scanned by worker threads {threads}")
    # Printed by run() on the main thread once it serves (and Ctrl-C works).
    banner = f"lookup server on {host}:{port}; try: echo user000042 | nc {host} {port}"
    px.call_from_main_thread(print, banner, flush=True)
    px.run()
    return 0


if __name__ == "__main__":
    sys.exit(main())
