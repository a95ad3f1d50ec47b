"""bench/run.py's output: the collected reports as Markdown tables and PNG plots.

markdown(run, plots) lays every report group out as one table, a line per
contender and a column per metric, with the first metric also given as a
ratio to the report's reference (pyparallel) measured in the same run; the
issues' targets follow in a table of their own, and a header says what
machine, interpreters, peers and I/O backend produced the figures.
draw_plots(run, directory) draws throughput, memory, latency, application
and compute plots with matplotlib's Agg backend (none when matplotlib is
missing).
"""

import os

from _common import _fmt

GROUP_TEXT = {
    "work": "GET /work, about 90 µs of pure Python per request. The compute limit is the "
    "handler's loop alone, timed in CPU time on the 3.13 GIL build, times the workers: "
    "what the cores could do with no HTTP, no load generator and no other process.",
    "plaintext": "GET /plaintext, TechEmpower's rules (keep-alive, a Date field in every response).",
    "json": "GET /json, TechEmpower's rules: a dict encoded per request.",
    "static": "GET of a 1 MiB file (nginx, pyparallel and gunicorn: sendfile; granian: its "
    "own static file server). The asyncio peers serve no files.",
    "shared": "GET /shared?k=<random key>: a lookup in a dict of {entries:,} entries that every "
    "server process loads at start-up. RSS and PSS are summed over all the server's "
    "processes after the run; PSS splits pages shared between forked processes. Mode "
    "interpreters imports the application in every worker's interpreter (and the "
    "main one), so each holds its own dict; its SharedBuffer row holds the table "
    "once, as bytes in a file mapped by every interpreter (sorted keys, binary "
    "search), which is how that mode shares big read-only data.",
    "latency": "GET /json at a fixed {rate:g} req/s from an open-loop generator "
    "(bench/latency_client.c): each request's latency counts from when it was due, "
    "so a stall is paid by every request it delays. Milliseconds.",
    "idle": "{connections:,} keep-alive connections, each after one GET /plaintext, held "
    "open: the growth of the server's RSS per connection held. A server that answers "
    "Connection: close holds none.",
    "pyparallel workers": "The memory each worker's interpreter took when it was created "
    "(px.stats()), in mode interpreters.",
}
# bench/apps.py's groups are "<framework> <route>": their text is the
# framework's, the route's and what every such table shows.
APP_TEXT = {
    "Flask": "Flask (WSGI), the same module on every server (bench/peers/apps_flask.py).",
    "Starlette": "Starlette (ASGI), the same module on every server (bench/peers/apps_starlette.py).",
}
ROUTE_TEXT = {
    "/json": "GET /json: TechEmpower's json test through the framework.",
    "/fortunes": "GET /fortunes: TechEmpower's fortunes test without a database: 20 rows held in memory, one "
    "added per request, sorted, rendered by a Jinja2 template that escapes them.",
    "/sleep": "GET /sleep: the handler awaits asyncio.sleep(0.01), with 256 connections: a worker serves its "
    "other connections while handlers wait.",
}
APP_ROUTE_TEXT = (
    "App CPU: the application called in-process on the server's interpreter; overhead = server CPU − app CPU "
    "(what serving costs). p99 at a fixed {rate:g} req/s, open loop."
)
SHORT = {
    "pyparallel 3.13 interpreters": "px interpreters",
    "pyparallel 3.13t threads": "px threads",
    "pyparallel 3.13 gil": "px gil",
    "pyparallel": "pyparallel",
}
COLOURS = {"pyparallel": "#1f6fb4", "nginx": "#444444", "limit": "#9ecae1", "peer": "#f28e2b"}


def group_text(group):
    """The paragraph above a group's table, or None (then the table lists
    contenders, not servers)."""
    if group in GROUP_TEXT:
        return GROUP_TEXT[group]
    framework, _, route = group.partition(" ")
    if framework in APP_TEXT and route in ROUTE_TEXT:
        return f"{APP_TEXT[framework]} {ROUTE_TEXT[route]} {APP_ROUTE_TEXT}"
    return None


def _doc_label(doc):
    """The report's title, with the interpreter and mode it ran on."""
    env = doc["environment"]
    if doc["scenario"] in ("http", "apps"):
        return doc["title"]
    build = "3.13t" if env.get("python_build") == "free-threaded" else "3.13"
    mode = env.get("pyparallel_mode")
    return f"{doc['title']} ({build}{', mode ' + mode if mode else ''})"


def _groups(doc):
    """group -> (columns, contenders, {(contender, column): row}), in order."""
    groups = {}
    for row in doc["rows"]:
        columns, contenders, cells = groups.setdefault(row["group"], ([], [], {}))
        if row["column"] not in columns:
            columns.append(row["column"])
        if row["contender"] not in contenders:
            contenders.append(row["contender"])
        cells[(row["contender"], row["column"])] = row
    return groups


def _header_cell(column, rows):
    unit = next((row["unit"] for row in rows if row["column"] == column and row["unit"]), "")
    better = next(row["better"] for row in rows if row["column"] == column)
    arrow = "↑" if better == "higher" else "↓"
    return f"{column}{f' ({unit})' if unit and unit not in column else ''} {arrow}"


def _table(group, columns, contenders, cells, reference):
    rows = list(cells.values())
    ref = SHORT.get(reference, reference)
    header = [
        "server" if group_text(group) is not None else "contender",
        _header_cell(columns[0], rows),
        f"× {ref}",
    ] + [_header_cell(c, rows) for c in columns[1:]]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for contender in contenders:
        first = cells.get((contender, columns[0]))
        ratio = first.get("ratio_to_ours") if first else None
        name = f"**{contender}**" if contender == reference else contender
        cell = [name, _fmt(first["median"]) if first else "-", "-" if ratio is None else f"{ratio:.2f}"]
        for column in columns[1:]:
            row = cells.get((contender, column))
            cell.append(_fmt(row["median"]) if row else "-")
        lines.append("| " + " | ".join(cell) + " |")
    return "\n".join(lines)


def _header(run):
    docs = run["reports"]
    http = next((d for d in docs if d["scenario"] == "http"), None)
    env = (http or docs[0])["environment"] if docs else {}
    pythons = {}
    io = set()
    for doc in docs:
        e = doc["environment"]
        build = "free-threaded" if e.get("python_build") == "free-threaded" else "GIL build"
        pythons[f"CPython {e['python']} ({build})"] = True
        if e.get("io_backend"):
            io.add(e["io_backend"])
    versions = (http or {}).get("params", {}).get("versions", {})
    apps = next((d for d in docs if d["scenario"] == "apps"), None)
    packages = {**(apps or {}).get("params", {}).get("versions", {}).get("bench", {}), **versions}
    for key, label in (("ft_python", "free-threaded"), ("gil_python", "GIL build")):
        if versions.get(key):
            pythons[f"CPython {versions[key]} ({label})"] = True
    for note in (http or {}).get("notes", []):
        if " io " in note:
            io.add(note.rsplit(" io ", 1)[1].strip())
    peers = ", ".join(
        f"{name} {packages[name]}"
        for name in ("uvloop", "gunicorn", "granian", "uvicorn", "httptools", "flask", "starlette", "jinja2")
        if packages.get(name)
    )
    tools = ", ".join(versions[t] for t in ("wrk", "nginx") if versions.get(t))
    lines = [
        "# Benchmark results",
        "",
        f"Produced by `make bench{'-quick' if run['quick'] else ''}` on {run['date']} in "
        f"{run['seconds'] / 60:.0f} minutes; every contender of a table was measured in the "
        "same run, back to back, in rounds whose order rotates, and each figure is the "
        "median of its rounds.",
        "",
        f"- Machine: {env.get('cpu', '?')}, {env.get('cores', '?')} cores, Linux "
        f"{env.get('kernel', '?')}; load average {run['load_average_before']:.2f} before, "
        f"{run['load_average_after']:.2f} after (the machine is shared: other processes "
        "compete with the benchmark).",
        f"- Interpreters: {', '.join(pythons)}.",
        f"- pyparallel I/O backend: {', '.join(sorted(io)) or 'unknown'}; "
        f"{(http or docs[0])['workers'] if docs else '?'} workers for pyparallel and one "
        "worker (process, thread or loop) per core for every peer.",
    ]
    if peers or tools:
        lines.append(f"- Peers: {', '.join(x for x in (peers, tools) if x)}.")
    if http:
        params = http["params"]
        lines.append(
            f"- Load: wrk -t1 -c{params['connections']} -d{params['duration_s']}s "
            f"(it shares the cores with the server); {http['repeat']} round(s)."
        )
    if run["quick"]:
        lines.append(
            "- **Quick run** (`make bench-quick`): one round per measurement, 1 s "
            "wrk runs with no warm-up, 1 s latency windows, "
            f"{(http or {}).get('params', {}).get('idle_connections', '?')} idle "
            f"connections instead of 10,000; skipped: {', '.join(run['skipped'])}. "
            "Use `make bench` for figures to quote."
        )
    lines.append(
        "- Ratios (×): a contender's figure divided by the reference's (in bold) "
        "from the same run; ↑ higher is better, ↓ lower is better."
    )
    return lines


# The summary's columns: (metric of the http report, heading).
SUMMARY = (
    ("work req/s", "work req/s"),
    ("plaintext req/s", "plaintext req/s"),
    ("json req/s", "json req/s"),
    ("static req/s", "static req/s"),
    ("shared req/s", "shared req/s"),
    ("shared server RSS", "shared RSS MiB"),
    ("idle memory/connection", "idle KiB/conn"),
    ("latency p99", "p99 ms"),
)


def summary(run):
    """One line per HTTP server, one column per scenario's main figure, each
    with its ratio to the reference: the table the README shows."""
    http = next((d for d in run["reports"] if d["scenario"] == "http"), None)
    if http is None:
        return ""
    rows = {(row["metric"], row["contender"]): row for row in http["rows"]}
    contenders = list(
        dict.fromkeys(
            row["contender"]
            for row in http["rows"]
            if row["group"] in GROUP_TEXT and row["group"] != "pyparallel workers"
        )
    )

    def rank(name):
        if name.startswith("compute limit"):
            return 0
        return 1 if name.startswith("pyparallel") else 2 if name == "nginx" else 3

    contenders.sort(key=rank)
    columns = [(metric, heading) for metric, heading in SUMMARY if any(m == metric for m, _ in rows)]
    lines = ["| server | " + " | ".join(h for _, h in columns) + " |", "|---|" + "---:|" * len(columns)]
    for contender in contenders:
        cells = []
        for metric, _ in columns:
            row = rows.get((metric, contender))
            if row is None:
                cells.append("")
                continue
            ratio = row.get("ratio_to_ours")
            cells.append(
                _fmt(row["median"]) + ("" if ratio is None or contender == http["reference"] else f" ({ratio:.2f}×)")
            )
        name = f"**{contender}**" if contender == http["reference"] else contender
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def markdown(run, plots):
    out = _header(run)
    table = summary(run)
    if table:
        out += [
            "",
            "## Summary",
            "",
            "The main figure of each HTTP scenario (ratio to the reference in "
            "parentheses); the tables below have the rest.",
            "",
            table,
        ]
    for name in plots:
        out += ["", f"![{os.path.splitext(name)[0]}]({name})"]
    targets = []
    for doc in run["reports"]:
        out += ["", f"## {_doc_label(doc)}", ""]
        params = doc["params"]
        for group, (columns, contenders, cells) in _groups(doc).items():
            if group == "targets":
                continue
            if group != doc["title"]:
                out += [f"### {group}", ""]
            text = group_text(group)
            if text:
                out += [
                    text.format(
                        entries=params.get("shared_entries", 0),
                        rate=params.get("latency_rate", 0),
                        connections=params.get("idle_connections", 0),
                    ),
                    "",
                ]
            out += [_table(group, columns, contenders, cells, doc["reference"]), ""]
        for row in doc["rows"]:
            if row["target"]:
                targets.append((_doc_label(doc), row))
        if doc["notes"]:
            out += ["<details><summary>notes</summary>", ""]
            out += [f"- {note}" for note in doc["notes"]]
            out += ["", "</details>"]
    if targets:
        out += [
            "",
            "## Targets of the issues",
            "",
            "| report | measure | contender | median | target | |",
            "|---|---|---|---|---|---|",
        ]
        for label, row in targets:
            op, bound = row["target"]
            out.append(
                f"| {label} | {row['metric']} | {row['contender']} | "
                f"{_fmt(row['median'])} {row['unit']} | {op} {_fmt(bound)} | "
                f"{'met' if row['target_met'] else '**missed**'} |"
            )
    if run["failed"]:
        out += ["", f"Scenarios that failed: {', '.join(run['failed'])}."]
    return "\n".join(out) + "\n"


# ---- plots -------------------------------------------------------------------------


def _colour(name):
    if name.startswith("pyparallel"):
        return COLOURS["pyparallel"]
    if name == "nginx":
        return COLOURS["nginx"]
    if name.startswith("compute limit"):
        return COLOURS["limit"]
    return COLOURS["peer"]


def _medians(doc, metric):
    return [(row["contender"], row["median"]) for row in doc["rows"] if row["metric"] == metric]


def _bars(ax, pairs, title, unit, log=False):
    names = [name for name, _ in pairs][::-1]
    values = [value for _, value in pairs][::-1]
    ax.barh(names, values, color=[_colour(n) for n in names])
    for y, value in enumerate(values):
        ax.text(value, y, f" {_fmt(value)}", va="center", fontsize=7)
    ax.set_title(title, fontsize=9)
    ax.set_xlabel(unit, fontsize=8)
    ax.tick_params(labelsize=7)
    if log:
        ax.set_xscale("log")
    ax.margins(x=0.25)


def draw_plots(run, directory):
    """Writes the PNGs into directory; returns their file names."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return []
    docs = {doc["name"]: doc for doc in run["reports"]}
    quick = " (quick run)" if run["quick"] else ""
    written = []

    def save(fig, name):
        fig.tight_layout()
        fig.savefig(os.path.join(directory, name), dpi=110)
        plt.close(fig)
        written.append(name)

    http = docs.get("http")
    if http:
        scenarios = [s for s in ("work", "plaintext", "json", "static", "shared") if _medians(http, f"{s} req/s")]
        if scenarios:
            fig, axes = plt.subplots(len(scenarios), 1, figsize=(7.5, 2.6 * len(scenarios)))
            for ax, scenario in zip(getattr(axes, "flat", [axes]), scenarios):
                _bars(ax, _medians(http, f"{scenario} req/s"), f"{scenario}: requests per second{quick}", "req/s")
            save(fig, "http_throughput.png")
        panels = [
            (m, t, u, log)
            for m, t, u, log in (
                ("shared server RSS", "shared: RSS of all server processes, 1M-entry dict", "MiB", False),
                ("idle memory/connection", "idle: RSS per idle keep-alive connection", "KiB", False),
                ("latency p99", f"latency: p99 at {http['params']['latency_rate']:g} req/s", "ms", True),
            )
            if _medians(http, m)
        ]
        if panels:
            fig, axes = plt.subplots(len(panels), 1, figsize=(7.5, 2.8 * len(panels)))
            for ax, (metric, title, unit, log) in zip(getattr(axes, "flat", [axes]), panels):
                _bars(ax, _medians(http, metric), title + quick, unit, log)
            save(fig, "http_memory_latency.png")
    apps = docs.get("apps")
    if apps:
        groups = list(dict.fromkeys(row["group"] for row in apps["rows"] if row["column"] == "req/s"))
        if groups:
            fig, axes = plt.subplots(len(groups), 1, figsize=(7.5, 2.2 * len(groups)))
            for ax, group in zip(getattr(axes, "flat", [axes]), groups):
                _bars(ax, _medians(apps, f"{group} req/s"), f"{group}: requests per second{quick}", "req/s")
            save(fig, "apps_throughput.png")
    compute = [
        (name, label)
        for name, label in (("map", "3.13t, threads"), ("map-interpreters", "3.13, interpreters"))
        if name in docs
    ]
    if compute:
        fig, axes = plt.subplots(len(compute), 1, figsize=(7.5, 2.4 * len(compute)))
        for ax, (name, label) in zip(getattr(axes, "flat", [axes]), compute):
            _bars(ax, _medians(docs[name], "speedup over serial"), f"map speedup over serial, {label}{quick}", "×")
            ax.axvline(1.95, color="#2ca02c", linestyle="--", linewidth=1)
            ax.text(1.95, -0.6, " target 1.95", color="#2ca02c", fontsize=7, va="top")
        save(fig, "compute.png")
    return written
