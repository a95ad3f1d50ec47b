"""The load generators that bench/http.py and bench/apps.py drive against a server.

run_wrk() is one closed-loop wrk run (throughput, with the server's CPU time
and memory read from /proc around it); run_latency() is one open-loop run of
bench/latency_client.c at a fixed rate (percentiles of latency, each request
counted from when it was due). Both fail the benchmark (SystemExit) on a
failed run or on error responses, naming the server and showing the end of
its output, rather than report figures of a server that was not serving.
"""

import json
import os
import re
import subprocess

import _common

CONNECTIONS = 64


def run_wrk(server, path, seconds, script=None, connections=CONNECTIONS):
    """One wrk run: requests, req/s, CPU of server and wrk, server memory."""
    command = ["wrk", "-t1", f"-c{connections}", f"-d{seconds}s", "--timeout", "10s"]
    if script:
        command += ["-s", script]
    command.append(f"http://127.0.0.1:{server.port}{path}")
    server_cpu = server.cpu_seconds()
    start = _common.now()
    wrk = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    output = wrk.stdout.read().decode(errors="replace")
    # wait4 gives wrk's own rusage; subprocess's wait would discard it.
    _, status, usage = os.wait4(wrk.pid, 0)
    wrk.returncode = os.waitstatus_to_exitcode(status)
    elapsed = _common.now() - start
    server_cpu = server.cpu_seconds() - server_cpu
    rss, pss = server.memory_mib()
    found = re.search(r"(\d+) requests in", output)
    if wrk.returncode != 0 or not found or int(found.group(1)) == 0:
        raise SystemExit(f"{server.name} {path}: wrk failed:\n{output}{server.tail()}")
    errors = re.search(r"Non-2xx or 3xx responses: (\d+)", output)
    if errors:
        raise SystemExit(f"{server.name} {path}: {errors.group(1)} error responses")
    socket_errors = re.search(r"Socket errors: (.*)", output)
    requests = int(found.group(1))
    rate = float(re.search(r"Requests/sec:\s+([\d.]+)", output).group(1))
    return {
        "requests": requests,
        "req_per_s": rate,
        "elapsed_s": elapsed,
        "server_cpu_s": server_cpu,
        "wrk_cpu_s": usage.ru_utime + usage.ru_stime,
        "rss_mib": rss,
        "pss_mib": pss,
        "socket_errors": socket_errors.group(1) if socket_errors else None,
    }


def run_latency(client, server, path, rate, connections, warmup, duration):
    """One run of the latency client (its JSON: counts and percentiles in µs)."""
    command = [client, str(server.port), path, str(rate), str(connections), str(warmup), str(duration)]
    result = subprocess.run(command, capture_output=True, text=True, timeout=warmup + duration + 60)
    if result.returncode != 0:
        raise SystemExit(f"{server.name}: latency client failed: {result.stderr.strip()}{server.tail()}")
    return json.loads(result.stdout)


def interpreter_version(python):
    out = subprocess.run([python, "-c", "import sys; print(sys.version.split()[0])"], capture_output=True, text=True)
    return out.stdout.strip() or None
