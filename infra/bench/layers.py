"""Which layer of the stack a profiler sample's CPU belongs to, and CPU ms per order by layer.

A sample is one stack of one on-CPU thread (py-spy's raw format: frames root first,
innermost last). It is charged to the **innermost frame that belongs to a known layer**,
walking outward past frames that belong to none: self time, but of the nearest package
that chose to do the work. Generic standard-library frames (socket, selectors, ssl,
threading, re, ...) are transparent, so a socket send inside urllib3 counts as client, a
regex inside werkzeug's router as framework, and only what the server loop itself does
with selectors and sockets as server. The standard library's own layers are not
transparent: json is JSON, logging is telemetry, http.client is client. A stack with no
known frame at all is charged by its innermost frame's fallback (socket, selectors and
ssl: server; anything else: other).

Why not the first project or library frame from the top: every stack of a web process
starts in gunicorn and Flask, so that would charge everything to the server; the
innermost known frame says whose code the CPU ran in.

Samples become milliseconds by scaling: each process's sampled shares times the CPU
seconds /proc says it used during the same run, divided by the orders of the run. The
samples give the split, never the amount.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

SERVER = "server"
FRAMEWORK = "framework"
DATABASE = "database"
CLIENT = "client"
JSON = "json"
TELEMETRY = "telemetry"  # logging, metrics, tracing
BUSINESS = "business"  # business logic and the transaction protocols
OTHER = "other"
LAYERS = (SERVER, FRAMEWORK, DATABASE, CLIENT, JSON, TELEMETRY, BUSINESS, OTHER)

# Top-level package or module in site-packages -> layer; unknown libraries are "other".
LIBRARIES = {
    "gunicorn": SERVER,
    "flask": FRAMEWORK,
    "werkzeug": FRAMEWORK,
    "jinja2": FRAMEWORK,
    "click": FRAMEWORK,
    "itsdangerous": FRAMEWORK,
    "markupsafe": FRAMEWORK,
    "blinker": FRAMEWORK,
    "sqlalchemy": DATABASE,
    "psycopg2": DATABASE,
    "psycopg": DATABASE,
    "requests": CLIENT,
    "urllib3": CLIENT,
    "http.client": CLIENT,
    "pika": CLIENT,
    "redis": CLIENT,
    "tenacity": CLIENT,  # only paxkit/http.py retries with it
    "idna": CLIENT,
    "charset_normalizer": CLIENT,
    "orjson": JSON,
    "prometheus_client": TELEMETRY,
}
# Standard-library modules that are a layer of their own; the rest are transparent.
STDLIB = {"json": JSON, "logging": TELEMETRY, "http.client": CLIENT}
STDLIB_FALLBACK = {"socket": SERVER, "selectors": SERVER, "ssl": SERVER}
# Project files that are not business logic; every other project file is "business".
PROJECT_FILES = {
    "paxkit/server.py": SERVER,
    "paxkit/multiproc.py": SERVER,
    "paxkit/db.py": DATABASE,
    "paxkit/http.py": CLIENT,
    "paxkit/requests_json.py": JSON,
    "paxkit/logs.py": TELEMETRY,
    "paxkit/metrics.py": TELEMETRY,
    "paxkit/tracing.py": TELEMETRY,
    "gateway/metrics.py": TELEMETRY,
}
PROJECT_PACKAGES = ("paxkit", "gateway", "coordinator", "services", "infra")
SITE = re.compile(r"/(?:site|dist)-packages/(.+)$")
STDLIB_PATH = re.compile(r"/lib/python3\.\d+/(.+)$")
FROZEN = re.compile(r"^<frozen (.+)>$")
# One frame of py-spy's raw format: `function (file:line)`, or `function (file)`.
FRAME = re.compile(r"\(([^()]*?)(?::\d+)?\)$")


def module_name(relative: str) -> str:
    """`http/client.py` -> `http.client`; `json/__init__.py` -> `json`."""
    return relative.removesuffix(".py").removesuffix("/__init__").replace("/", ".")


def _lookup(module: str, table: Mapping[str, str]) -> str | None:
    """The layer of `module` or of the nearest enclosing package listed in `table`."""
    parts = module.split(".")
    for n in range(len(parts), 0, -1):
        if ".".join(parts[:n]) in table:
            return table[".".join(parts[:n])]
    return None


def stdlib_module(path: str) -> str | None:
    """The module a standard-library file is, None for any other file."""
    if frozen := FROZEN.match(path):
        return frozen.group(1)
    if SITE.search(path):
        return None
    found = STDLIB_PATH.search(path)
    return module_name(found.group(1)) if found else None


def layer_of(path: str, project_root: str) -> str | None:
    """The layer a frame's file belongs to; None for a transparent one (walk outward)."""
    root = project_root.rstrip("/") + "/"
    if site := SITE.search(path):
        return _lookup(module_name(site.group(1)), LIBRARIES) or OTHER
    if path.startswith(root) and "/.venv/" not in path:
        relative = path[len(root) :]
        if relative in PROJECT_FILES:
            return PROJECT_FILES[relative]
        return BUSINESS if relative.split("/")[0] in PROJECT_PACKAGES else OTHER
    module = stdlib_module(path)
    return _lookup(module, STDLIB) if module is not None else None


def fallback(path: str) -> str:
    """The layer of a stack none of whose frames belongs to a known layer."""
    module = stdlib_module(path)
    return (_lookup(module, STDLIB_FALLBACK) if module else None) or OTHER


def attribute(files: Sequence[str], project_root: str) -> str:
    """The layer of one sample, given its frames' files from the root to the innermost."""
    for path in reversed(files):
        layer = layer_of(path, project_root)
        if layer is not None:
            return layer
    return fallback(files[-1]) if files else OTHER


def frame_file(frame: str) -> str:
    found = FRAME.search(frame)
    return found.group(1) if found else ""


def parse_raw(text: str, project_root: str) -> Counter[str]:
    """Samples per layer in py-spy's raw output (`frame;frame;... count` per line)."""
    counts: Counter[str] = Counter()
    for line in text.splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        files = [frame_file(frame) for frame in stack.split(";")]
        counts[attribute(files, project_root)] += int(count)
    return counts


@dataclass(frozen=True)
class LayerTable:
    """CPU ms per order by process and layer; processes that used CPU but were not
    sampled (enough) keep their total apart."""

    rows: dict[str, dict[str, float]]
    unsplit: dict[str, float] = field(default_factory=dict)

    def totals(self) -> dict[str, float]:
        """The sum of every row, per layer and in all."""
        summed: Counter[str] = Counter()
        for row in self.rows.values():
            summed.update(row)
        return {k: round(summed[k], 2) for k in (*LAYERS, "total")}

    def as_json(self) -> dict[str, object]:
        return {"rows": self.rows, "totals": self.totals(), "unsplit": self.unsplit}


def ms_per_order(
    samples: Mapping[str, Mapping[str, int]],
    cpu_s: Mapping[str, float],
    orders: int,
    processes: Iterable[str],
    min_samples: int = 1,
) -> LayerTable:
    """Each process's CPU per order, split by its sampled layer shares."""
    per_order = 1000.0 / max(1, orders)
    rows: dict[str, dict[str, float]] = {}
    unsplit: dict[str, float] = {}
    for name in processes:
        ms = cpu_s.get(name, 0.0) * per_order
        seen = samples.get(name, {})
        total = sum(seen.values())
        if total < min_samples:
            if ms > 0:
                unsplit[name] = round(ms, 2)
            continue
        row = {layer: round(ms * seen.get(layer, 0) / total, 2) for layer in LAYERS}
        rows[name] = {**row, "total": round(ms, 2)}
    return LayerTable(rows, unsplit)
