"""pyparallel's contender in bench/echo.py: the echo server of the README.

Listens on 127.0.0.1 (port 0 unless given), prints "LISTENING <port>" once it
accepts connections, and returns every received chunk from data_received (so
it is sent back) on all workers, until SIGTERM or SIGINT (px.run() then shuts
down cleanly).

  python bench/peers/echo_pyparallel.py [PORT]
"""

import sys

import pyparallel as px


class Echo:
    def data_received(self, transport, data):
        return data


if __name__ == "__main__":
    server = px.server("127.0.0.1", int(sys.argv[1]) if len(sys.argv) > 1 else 0)
    px.register(server, Echo)
    print("LISTENING", server.sockname[1], flush=True)
    px.run()
