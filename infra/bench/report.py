"""One table, one JSON and one chart from every benchmark of this run.

Reads bench-results/raw.json (infra.bench.raw), orders.json (infra.bench.orders) and,
when present, gateway.json (infra.bench.gateway); prints a single table of each figure
beside the raw limit of the same machine measured in the same run, the ratio and its
target, and each synchronous mode beside the `naive` baseline of the same run (the same
orders through the same services with no protocol); then CPU ms per order by component,
hops and statements per order and, per mode that was profiled, CPU ms per order by
process and layer; writes bench-results/bench.json and bench-results/bench.png. Exits 1
when an audit is not clean, an error was counted, or a target is missed.

    python -m infra.bench.report [--since EPOCH]   # make bench passes its start time
"""

from __future__ import annotations

import argparse
import os
import sys
from dataclasses import asdict, dataclass, field
from typing import Any

from infra.bench.common import RESULTS_DIR, read_result, write_result

RSS_LIMIT_MIB = 1024.0
P99_OVER_P50_MAX = 3.0
# More CPU than this used by processes outside the benchmark makes its figures unreliable.
BUSY_MACHINE_CORES = 0.25
# mode -> (figure, raw limit key, raw limit label, minimum ratio: None for no target)
MODE_TARGETS: dict[str, tuple[str, str, str, float | None]] = {
    "naive": ("orders_per_s", "4db_plain", "4-DB plain", None),
    "2pc": ("orders_per_s", "4db_xa", "4-DB XA", 0.15),
    "tcc": ("orders_per_s", "4db_plain", "4-DB plain", 0.08),
    "saga": ("orders_per_s", "4db_plain", "4-DB plain", 0.08),
}
BASELINE = "naive"
# mode -> minimum share of the naive baseline's orders/s (2pc/naive >= 0.6, the range DTM
# publishes for its saga); tcc and saga are shown beside it without a target of their own.
BASELINE_TARGETS: dict[str, float | None] = {"2pc": 0.6, "tcc": None, "saga": None}
MSG_TARGETS: dict[str, tuple[str, str, str, float | None]] = {
    "order msg accepted": ("accepted_per_s", "trivial_flask", "trivial Flask", 0.15),
    "order msg settled": ("settled_per_s", "4db_plain", "4-DB plain", 0.06),
}


@dataclass
class Row:
    """One line of the table; empty cells stay None."""

    what: str
    rate: float | None = None
    limit_name: str = ""
    limit: float | None = None
    target: float | None = None
    latency: dict[str, float] = field(default_factory=dict)
    errors: int | None = None
    audit: bool | None = None
    note: str = ""
    # A ratio measured on its own (the median of interleaved rounds' ratios), which wins
    # over rate / limit: the medians of two noisy series need not divide to it.
    share: float | None = None

    @property
    def ratio(self) -> float | None:
        if self.share is not None:
            return self.share
        if self.rate is None or not self.limit:
            return None
        return self.rate / self.limit

    @property
    def tail(self) -> float | None:
        p50 = self.latency.get("p50")
        return self.latency["p99"] / p50 if p50 else None

    def failures(self) -> list[str]:
        """What this row misses: a target, the tail bound, errors, the audit."""
        missed = []
        if self.what.startswith("raw") and self.rate is None:
            missed.append(f"{self.what}: not measured ({self.note})")
        if self.target is not None and not self.limit:
            missed.append(f"{self.what}: no raw limit ({self.limit_name}) to compare with")
        elif self.target is not None and (self.ratio is None or self.ratio < self.target):
            missed.append(f"{self.what}: ratio below {self.target}")
        if self.tail is not None and self.tail > P99_OVER_P50_MAX:
            missed.append(f"{self.what}: p99/p50 {self.tail:.1f} > {P99_OVER_P50_MAX:g}")
        if self.errors:
            missed.append(f"{self.what}: {self.errors} errors")
        if self.audit is False:
            missed.append(f"{self.what}: audit not clean")
        return missed

    def as_json(self) -> dict[str, Any]:
        return {
            **asdict(self),
            "ratio": None if self.ratio is None else round(self.ratio, 3),
            "p99_over_p50": None if self.tail is None else round(self.tail, 2),
            "pass": not self.failures(),
        }


def raw_rate(raw: dict[str, Any], key: str) -> float | None:
    """The raw limit's rate; None when it was not measured (its entry says why)."""
    entry = raw.get(key, {})
    for name in ("rounds_per_s", "tps", "msgs_per_s", "rps"):
        if name in entry:
            return float(entry[name])
    return None


def raw_rows(raw: dict[str, Any]) -> list[Row]:
    labels = {
        "pgbench": "raw pgbench -N (tps)",
        "4db_plain": "raw 4-DB plain commits",
        "4db_xa": "raw 4-DB PREPARE/COMMIT PREPARED",
        "rabbitmq": "raw RabbitMQ persistent+confirm",
        "trivial_flask": "raw trivial Flask POST",
    }
    return [
        Row(label, rate=raw_rate(raw, key), note=raw[key].get("error", ""))
        for key, label in labels.items()
        if key in raw
    ]


def _target_row(
    raw: dict[str, Any],
    result: dict[str, Any],
    what: str,
    spec: tuple[str, str, str, float | None],
) -> Row:
    figure, key, label, target = spec
    return Row(what, result[figure], label, raw_rate(raw, key), target)


def mode_rows(raw: dict[str, Any], orders: dict[str, Any]) -> list[Row]:
    """One row per mode (two for msg: accepted and settled); latency, errors and audit go
    on the mode's first row."""
    rows = []
    for mode, result in orders.get("modes", {}).items():
        if not result.get("available"):
            rows.append(Row(f"order {mode}", note=f"not available ({result.get('why')})"))
            continue
        if mode in MODE_TARGETS:
            mine = [_target_row(raw, result, f"order {mode}", MODE_TARGETS[mode])]
        else:
            mine = [_target_row(raw, result, w, spec) for w, spec in MSG_TARGETS.items()]
        if alone := result.get("accept_alone"):
            mine.append(
                Row(
                    "order msg accepted, settle paused",
                    alone["accepted_per_s"],
                    "trivial Flask",
                    raw_rate(raw, "trivial_flask"),
                    note=f"backlog {alone['backlog_after_burst']}, drained in "
                    f"{alone['drain_s']} s ({alone['drained_per_s']}/s)",
                )
            )
        first = mine[0]
        if "drain_s" in result:
            first.note = (
                f"backlog {result['backlog_after_burst']} after the burst, "
                f"drained in {result['drain_s']} s"
            )
        first.latency = result["latency_ms"]
        first.errors = result["errors"]
        first.audit = result["audit"]["ok"]
        rows += mine
    return rows


def baseline_rows(orders: dict[str, Any]) -> list[Row]:
    """Each synchronous mode's orders/s as a share of the naive baseline's, same run; none
    when the run left the baseline out, no limit (a miss) when it could not measure it."""
    modes = orders.get("modes", {})
    if BASELINE not in modes:
        return []
    base = modes[BASELINE].get("orders_per_s") if modes[BASELINE].get("available") else None
    return [
        Row(f"order {mode} / {BASELINE}", modes[mode]["orders_per_s"], BASELINE, base, target)
        for mode, target in BASELINE_TARGETS.items()
        if modes.get(mode, {}).get("available")
    ]


# The processes a msg order is accepted in; the rest of its CPU is settlement.
ACCEPT_PROCESSES = ("gateway", "order")
# Half load at this share of the settle rate or more is a saturated stack (msg_floors).
SATURATED_SHARE = 0.8
OUTSIDE = ("other", "load generator (wrk)")


def _cpu_ms(result: dict[str, Any], names: tuple[str, ...]) -> float:
    """CPU ms per order of the named processes during saturation."""
    per_order = result["cpu"]["cpu_ms_per_order"]
    return sum(per_order.get(name, 0.0) for name in names)


def sync_floor(raw: dict[str, Any], modes: dict[str, Any], mode: str) -> str | None:
    """A missed synchronous target beside what the naive baseline reaches against the same
    raw limit: when even the same calls with no protocol fall short, the hops are the floor."""
    figure, key, label, target = MODE_TARGETS[mode]
    limit, base = raw_rate(raw, key), modes.get(BASELINE, {})
    result = modes[mode]
    if target is None or not limit or not base.get("available"):
        return None
    if result[figure] / limit >= target:
        return None
    need, naive = target * limit, base[figure]
    verdict = (
        "the same calls with no protocol stay below the target: the floor is the hops"
        if naive < need
        else "the protocol's own cost is the gap"
    )
    return (
        f"{mode}: target {target:g} x {label} = {need:.0f}/s ({need / naive:.2f} x naive); "
        f"measured {result[figure]:.0f}/s; naive {naive:.0f}/s = {naive / limit:.3f} x "
        f"{label}: {verdict}"
    )


def msg_floors(raw: dict[str, Any], result: dict[str, Any]) -> list[str]:
    """The accept rate with settlement paused (the accept path alone on the cores) and the
    settle rate beside the whole stack's CPU per settled order over burst and drain (every
    order is accepted and settled, so the cores cap it there)."""
    lines = []
    trivial, plain = raw_rate(raw, "trivial_flask"), raw_rate(raw, "4db_plain")
    target = MSG_TARGETS["order msg accepted"][3]
    alone = result.get("accept_alone")
    if alone and trivial and target is not None:
        share = alone["accepted_per_s"] / trivial
        verdict = (
            "the target holds when settlement has cores of its own"
            if share >= target
            else "below the target even alone"
        )
        lines.append(
            f"msg accept: {alone['accepted_per_s']:.0f}/s with settlement paused = "
            f"{share:.3f} x trivial ({verdict}); {result['accepted_per_s']:.0f}/s with "
            f"settlement on the same cores; gateway and order processes "
            f"{_cpu_ms(result, ACCEPT_PROCESSES):.1f} ms CPU per order"
        )
    per_settled = result.get("cpu_ms_per_settled_order")
    if per_settled and plain:
        all_ms = sum(v for k, v in per_settled.items() if k not in OUTSIDE)
        ceiling = result["cpu"]["cores"] * 1000.0 / all_ms if all_ms else 0.0
        lines.append(
            f"msg settle: the whole stack {all_ms:.1f} ms CPU per settled order over burst "
            f"and drain -> at most {ceiling:.0f}/s = {ceiling / plain:.3f} x 4-DB plain on "
            f"{result['cpu']['cores']} cores; measured {result['settled_per_s']:.0f}/s"
        )
        lines += half_load_floor(result, ceiling)
    return lines


def half_load_floor(result: dict[str, Any], ceiling: float) -> list[str]:
    """msg's half load is half its accept rate; once that is most of what the stack can
    settle (the CPU cap, or the rate this run settled at), "half load" is full load."""
    half = result.get("half_load", {}).get("target_rate", 0.0)
    settled = result.get("settled_per_s", 0.0)
    limit = min(ceiling, settled) if settled else ceiling
    if not limit or half < SATURATED_SHARE * limit:
        return []
    return [
        f"msg half load: {half:.0f}/s accepted is {half / limit:.2f} x the {limit:.0f}/s "
        f"the stack settles (measured {settled:.0f}/s, CPU cap {ceiling:.0f}/s), so 'half "
        f"load' saturates it and its tail (p99/p50 {result['p99_over_p50']}) is a "
        "saturated machine's"
    ]


def floor_lines(raw: dict[str, Any], orders: dict[str, Any]) -> list[str]:
    """What this run's own figures put under each order-rate target."""
    modes = {m: r for m, r in orders.get("modes", {}).items() if r.get("available")}
    lines = [
        line for mode in MODE_TARGETS if mode in modes if (line := sync_floor(raw, modes, mode))
    ]
    if "msg" in modes:
        lines += msg_floors(raw, modes["msg"])
    return lines


def gateway_rows(gateway: dict[str, Any] | None) -> list[Row]:
    """The gateway's rates, judged as its own benchmark judges them: on the median of the
    per-round ratios (each round's runs back to back), with their spread."""
    if gateway is None:
        return []
    median, targets = gateway["rps_median"], gateway["targets"]
    samples = gateway["rps_samples"]
    rounds = list(zip(samples["trivial"], samples["cached"], samples["limited"], strict=True))
    cached_spread = [cached / trivial for trivial, cached, _ in rounds]
    limited_spread = [limited / cached for _, cached, limited in rounds]
    cached = Row(
        "gateway cached GET",
        median["cached"],
        "trivial GET",
        median["trivial"],
        targets["cached_vs_trivial_min"],
        share=gateway["cached_vs_trivial"],
        note=_spread(cached_spread),
    )
    limited = Row(
        "gateway GET + rate limit",
        median["limited"],
        "cached GET",
        median["cached"],
        1 - targets["limiter_cost_max"],
        share=1 - gateway["limiter_cost"],
        note=_spread(limited_spread),
    )
    return [cached, limited]


def _spread(ratios: list[float]) -> str:
    if not ratios:
        return ""
    return f"median of {len(ratios)} rounds' ratios ({min(ratios):.2f}-{max(ratios):.2f})"


def stack_facts(orders: dict[str, Any]) -> dict[str, Any]:
    modes = [m for m in orders.get("modes", {}).values() if m.get("available")]
    rss = max((m["rss"]["max_total_mib"] for m in modes), default=0.0)
    pss = max((m["rss"].get("max_pss_mib", 0.0) for m in modes), default=0.0)
    shares = [m["generator_cpu_share"] for m in modes]
    shares += [m["half_load"]["generator_cpu_share"] for m in modes]
    share = max(shares, default=0.0)
    other = max(
        (m["cpu"]["cpu_s"].get("other", 0.0) / m["cpu"]["wall_s"] for m in modes), default=0
    )
    return {
        "rss_max_mib": rss,
        "pss_max_mib": pss,
        "rss_limit_mib": RSS_LIMIT_MIB,
        "load_generator_cpu_share_max": share,
        "other_processes_cores_max": round(other, 2),
    }


def cpu_table(orders: dict[str, Any]) -> str:
    """CPU ms per order by component during each mode's saturation run: where time goes."""
    modes = {m: r for m, r in orders.get("modes", {}).items() if r.get("available")}
    if not modes:
        return ""
    groups: list[str] = []
    for result in modes.values():
        for name in result["cpu"]["cpu_ms_per_order"]:
            if name not in groups:
                groups.append(name)
    lines = ["CPU ms per order during saturation ('other' = processes outside this benchmark)"]
    lines.append(f"{'':<24}" + "".join(f"{m:>9}" for m in modes))
    for name in groups:
        cells = "".join(
            f"{r['cpu']['cpu_ms_per_order'].get(name, 0.0):>9.1f}" for r in modes.values()
        )
        lines.append(f"  {name:<22}{cells}")
    return "\n".join(lines)


LAYER_HEADS = {
    "server": "server",
    "framework": "frmwork",
    "database": "db",
    "client": "client",
    "json": "json",
    "telemetry": "log/met",
    "business": "business",
    "other": "other",
    "total": "total",
}


def _layer_line(name: str, cells: dict[str, float]) -> str:
    return f"  {name:<22}" + "".join(f"{cells.get(k, 0.0):>9.2f}" for k in LAYER_HEADS)


def _sampled(layers: dict[str, Any]) -> str:
    return "GIL holder" if layers.get("threads", "gil") == "gil" else "running threads"


def layer_table(mode: str, result: dict[str, Any]) -> str:
    """CPU ms per order of one mode by process (rows) and layer (columns), or why not."""
    layers = result.get("layers")
    if not layers:
        return ""
    if not layers.get("available"):
        return f"CPU by layer, {mode}: none ({layers.get('why')})"
    split = layers["ms_per_order"]
    lines = [
        f"CPU ms per order by layer, {mode} (py-spy samples of the {_sampled(layers)} at "
        f"{layers['rate_hz']} Hz, scaled to each process's measured CPU)",
        f"{'':<24}" + "".join(f"{h:>9}" for h in LAYER_HEADS.values()),
    ]
    lines.insert(
        1,
        f"  (a separate profiled run: {layers['orders_per_s']:.1f} orders/s, py-spy itself "
        f"{layers['profiler_cpu_ms_per_order']:.2f} ms/order)",
    )
    lines += [_layer_line(name, row) for name, row in split["rows"].items()]
    lines.append(_layer_line("all sampled", split["totals"]))
    if split["unsplit"]:
        unsplit = ", ".join(f"{k} {v:.2f}" for k, v in split["unsplit"].items())
        lines.append(f"  not split (too few samples or not sampled), ms/order: {unsplit}")
    for target, why in layers.get("failures", {}).items():
        lines.append(f"  not sampled: {target}: {why}")
    overhead = result.get("profile_overhead")
    if overhead and overhead["throughput_ratio_on_over_off"] is not None:
        lines.append(
            f"  py-spy overhead: throughput with/without sampling "
            f"{overhead['throughput_ratio_on_over_off']:.3f} "
            f"(bursts of {overhead['seconds']:g} s, off {overhead['rates_off']}, "
            f"on {overhead['rates_on']} orders/s)"
        )
    return "\n".join(lines)


def layer_tables(orders: dict[str, Any]) -> str:
    tables = (layer_table(m, r) for m, r in orders.get("modes", {}).items() if r.get("available"))
    return "\n\n".join(t for t in tables if t)


def counts_table(orders: dict[str, Any]) -> str:
    """Hops (requests behind the gateway) and SQL statements per order, by component."""
    modes = {m: r["per_order"] for m, r in orders.get("modes", {}).items() if "per_order" in r}
    if not modes:
        return ""
    lines = ["Per order: hops behind the gateway, SQL statements (BEGIN/COMMIT not counted)"]
    lines.append(f"{'':<24}" + "".join(f"{m:>9}" for m in modes))
    lines.append(f"  {'hops':<22}" + "".join(f"{c['hops']:>9.1f}" for c in modes.values()))
    names = sorted({n for c in modes.values() for n in c["sql_statements_by_component"]})
    for name in names:
        cells = "".join(
            f"{c['sql_statements_by_component'].get(name, 0.0):>9.1f}" for c in modes.values()
        )
        lines.append(f"  {'SQL ' + name:<22}{cells}")
    total = "".join(f"{c['sql_statements']:>9.1f}" for c in modes.values())
    lines.append(f"  {'SQL in all':<22}{total}")
    return "\n".join(lines)


def _fmt(value: float | None, spec: str = ".1f") -> str:
    return "" if value is None else format(value, spec)


def table(rows: list[Row], facts: dict[str, Any], durability: dict[str, str]) -> str:
    head = (
        f"{'what':<34} {'rate/s':>8}  {'raw limit':<22} {'ratio':>6} {'target':>7} "
        f"{'p50 ms':>8} {'p95 ms':>8} {'p99 ms':>8} {'p99/p50':>7} {'errors':>6} {'audit':>5}  ok"
    )
    lines = [head, "-" * len(head)]
    for row in rows:
        limit = f"{row.limit_name} {_fmt(row.limit) or '?'}" if row.limit_name else ""
        audit = "" if row.audit is None else ("clean" if row.audit else "DIRTY")
        missed = row.failures()
        verdict = "NO" if missed else ("n/a" if row.rate is None else "yes")
        target = f">={row.target:.2f}" if row.target is not None else ""
        lines.append(
            f"{row.what:<34} {_fmt(row.rate):>8}  {limit:<22} {_fmt(row.ratio, '.2f'):>6} "
            f"{target:>7} {_fmt(row.latency.get('p50')):>8} "
            f"{_fmt(row.latency.get('p95')):>8} {_fmt(row.latency.get('p99')):>8} "
            f"{_fmt(row.tail, '.1f'):>7} {_fmt(row.errors, 'd'):>6} {audit:>5}  {verdict}"
            + (f"  {row.note}" if row.note else "")
        )
    rss_ok = facts["rss_max_mib"] < facts["rss_limit_mib"]
    lines += [
        "-" * len(head),
        f"stack RSS at saturation (max)      {facts['rss_max_mib']:.0f} MiB "
        f"(limit {facts['rss_limit_mib']:.0f} MiB)  {'yes' if rss_ok else 'NO'}",
        f"stack PSS at saturation (max)      {facts['pss_max_mib']:.0f} MiB "
        "(shared pages counted once)",
        f"load generator CPU (max share)     {facts['load_generator_cpu_share_max']:.1%} "
        "of the machine",
        f"other processes on the machine     up to {facts['other_processes_cores_max']:.2f} "
        "cores during a saturation run",
        "postgres durability                "
        + ", ".join(f"{k}={v}" for k, v in durability.items()),
    ]
    if facts["other_processes_cores_max"] > BUSY_MACHINE_CORES:
        lines.append(
            "WARNING: other work used the machine during the runs; rates and tails are low "
            "and noisy (the CPU ms per order below are the steadier figure)"
        )
    return "\n".join(lines)


def chart(rows: list[Row], facts: dict[str, Any], path: str) -> None:
    """Rates beside their raw limits (and the target share of it); latency at half load."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rated = [r for r in rows if r.rate is not None and r.limit is not None]
    timed = [r for r in rows if r.latency]
    fig, (left, right) = plt.subplots(1, 2, figsize=(14, 6))
    names = [r.what for r in rated]
    ys = range(len(rated))
    left.barh([y + 0.2 for y in ys], [r.limit or 0 for r in rated], 0.4, label="raw limit")
    left.barh([y - 0.2 for y in ys], [r.rate or 0 for r in rated], 0.4, label="paxmart")
    for y, r in zip(ys, rated, strict=True):
        if r.target is not None and r.limit:
            left.plot([r.target * r.limit] * 2, [y - 0.45, y + 0.05], "k--", linewidth=1)
    for y, r in zip(ys, rated, strict=True):
        left.text(r.rate or 0, y - 0.2, f" {r.rate:.0f}", va="center", fontsize=8)
        left.text(r.limit or 0, y + 0.2, f" {r.limit:.0f}", va="center", fontsize=8)
    left.set_yticks(list(ys), names)
    left.invert_yaxis()
    left.set_xlabel("per second (dashed: target)")
    left.legend(loc="lower right")
    left.set_title("throughput vs the machine's raw limits")
    width = 0.25
    xs = range(len(timed))
    for n, pct in enumerate(("p50", "p95", "p99")):
        right.bar(
            [x + (n - 1) * width for x in xs], [r.latency[pct] for r in timed], width, label=pct
        )
    right.set_xticks(list(xs), [r.what for r in timed], rotation=20)
    right.set_ylabel("ms (open loop at half the saturation rate)")
    right.set_title("latency at half load")
    right.legend()
    fig.suptitle(
        f"paxmart bench on {os.cpu_count()} cores: stack RSS max {facts['rss_max_mib']:.0f} MiB, "
        f"load generator {facts['load_generator_cpu_share_max']:.1%} CPU"
    )
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def fresh_results(since: float) -> tuple[dict[str, dict[str, Any] | None], list[str]]:
    """Each benchmark's results, None for one missing or written before `since` (a module
    that failed in this run must not lend the table an older figure)."""
    results: dict[str, dict[str, Any] | None] = {}
    stale = []
    for name in ("raw", "orders", "gateway"):
        path = RESULTS_DIR / f"{name}.json"
        if path.exists() and path.stat().st_mtime < since:
            stale.append(f"{name}: no results from this run (an older {path.name} is ignored)")
            results[name] = None
        else:
            results[name] = read_result(name)
    return results, stale


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument(
        "--since", type=float, default=0.0, help="ignore results written before this epoch"
    )
    args = parser.parse_args(argv)
    results, failures = fresh_results(args.since)
    raw, orders, gateway = results["raw"], results["orders"], results["gateway"]
    if raw is None or orders is None:
        print("no results of infra.bench.raw and infra.bench.orders from this run", file=sys.stderr)
        return 2
    rows = raw_rows(raw) + mode_rows(raw, orders) + baseline_rows(orders) + gateway_rows(gateway)
    facts = stack_facts(orders)
    failures += [f for row in rows for f in row.failures()]
    if facts["rss_max_mib"] >= RSS_LIMIT_MIB:
        failures.append(f"stack RSS {facts['rss_max_mib']:.0f} MiB >= {RSS_LIMIT_MIB:.0f} MiB")
    print("\n" + table(rows, facts, raw.get("durability", {})))
    print("\n" + cpu_table(orders))
    print("\n" + counts_table(orders))
    if floors := floor_lines(raw, orders):
        print("\nFloors under the order-rate targets (this run's figures)")
        print("\n".join(f"  {line}" for line in floors))
    if layers := layer_tables(orders):
        print("\n" + layers)
    png = RESULTS_DIR / "bench.png"
    chart(rows, facts, str(png))
    path = write_result(
        "bench",
        {
            "cores": os.cpu_count(),
            "rows": [r.as_json() for r in rows],
            "facts": facts,
            "floors": floor_lines(raw, orders),
            "failures": failures,
            "pass": not failures,
            "raw": raw,
            "orders": orders,
            "gateway": gateway,
        },
    )
    print(f"\nwritten: {path}, {png}")
    for failure in failures:
        print(f"  missed: {failure}")
    return 0 if not failures else 1


if __name__ == "__main__":
    sys.exit(main())
