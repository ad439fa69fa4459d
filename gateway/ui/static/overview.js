// The overview's live charts: reads /admin/ui/api/overview every few seconds and turns two
// readings of the components' counters into rates, ratios and latency quantiles.
"use strict";

(function () {
  const root = document.getElementById("overview");
  const source = root.dataset.source;
  const every = Number(root.dataset.refreshMs);
  const KEEP = 90; // readings kept per series: three minutes at 2 s
  const history = { orders: {}, latency: {}, limited: {}, cache: {}, outbox: {}, queues: {} };
  let previous = null;

  function push(group, name, t, value) {
    const points = (history[group][name] = history[group][name] || []);
    points.push([t, value]);
    if (points.length > KEEP) points.shift();
  }

  function series(group) {
    return Object.entries(history[group]).map(([name, points]) => ({ name, points }));
  }

  function growth(now, before) {
    return Math.max(0, now - (before || 0)); // a restarted process starts its totals over
  }

  function sum(values) {
    return Object.values(values).reduce((a, b) => a + b, 0);
  }

  // The q-quantile (seconds) of what a histogram counted between two readings (past its
  // last finite bucket: that bucket's bound).
  function quantile(data, before, q) {
    const total = growth(data.orders_timed, before.orders_timed);
    if (total === 0) return null;
    const old = new Map(before.order_latency.map(([le, n]) => [le, n]));
    let lower = 0, below = 0;
    for (const [le, cumulative] of data.order_latency) {
      const n = growth(cumulative, old.get(le));
      if (n >= q * total) {
        return lower + ((q * total - below) / Math.max(1, n - below)) * (le - lower);
      }
      lower = le;
      below = n;
    }
    return lower;
  }

  function rates(data, dt) {
    const t = data.at;
    for (const [key, total] of Object.entries(data.transactions)) {
      push("orders", key, t, growth(total, previous.transactions[key]) / dt);
    }
    for (const [q, name] of [[0.5, "p50"], [0.99, "p99"]]) {
      const value = quantile(data, previous, q);
      if (value !== null) push("latency", name, t, value * 1000);
    }
    push("limited", "429s", t, growth(data.limited, previous.limited) / dt);
    const looked = growth(sum(data.cache), sum(previous.cache));
    if (looked > 0) {
      const hits = growth(data.cache.hit || 0, previous.cache.hit);
      push("cache", "hit ratio", t, (100 * hits) / looked);
    }
  }

  function gauges(data) {
    const t = data.at;
    for (const [component, lag] of Object.entries(data.outbox_lag_s)) push("outbox", component, t, lag);
    push("queues", "backlog", t, sum(data.queues));
    push("queues", "dead letters", t, sum(data.dead_letters));
  }

  function text(id, value) {
    document.getElementById(id).textContent = value;
  }

  function byName(values) {
    return Object.entries(values).filter(([, n]) => n > 0)
      .map(([name, n]) => `${name.split(".").pop()} ${n}`).join(", ");
  }

  function tiles(data) {
    const audit = data.audit;
    const tile = document.getElementById("audit");
    tile.textContent = audit ? (audit.ok ? "consistent" : `${audit.violations} violation(s)`) : "not run yet";
    tile.className = "big " + (audit ? (audit.ok ? "ok" : "bad") : "muted");
    text("audit-when", audit ? new Date(audit.finished_at * 1000).toLocaleString() : "");
    const list = document.getElementById("breakers");
    list.replaceChildren(...Object.entries(data.breakers).map(([upstream, state]) => {
      const item = document.createElement("li");
      item.className = "breaker-" + state;
      item.dataset.upstream = upstream;
      item.textContent = `${upstream}: ${state}`;
      return item;
    }));
    text("dead-letters", String(sum(data.dead_letters)));
    text("dead-letters-by", byName(data.dead_letters));
    text("backlog", String(sum(data.queues)));
    text("backlog-by", byName(data.queues));
    const unreachable = document.getElementById("unreachable");
    unreachable.hidden = data.unreachable.length === 0;
    unreachable.textContent = "Not answering: " + data.unreachable.join(", ");
    text("updated", "last reading " + new Date(data.at * 1000).toLocaleTimeString());
  }

  function charts() {
    for (const [id, group] of [["chart-orders", "orders"], ["chart-latency", "latency"],
                               ["chart-limited", "limited"], ["chart-cache", "cache"],
                               ["chart-outbox", "outbox"], ["chart-queues", "queues"]]) {
      const svg = document.getElementById(id);
      window.PaxChart.draw(svg, series(group), svg.dataset.unit);
    }
  }

  async function tick() {
    const response = await fetch(source, { headers: { Accept: "application/json" } });
    if (response.status === 401) {
      window.location.reload(); // the session ended: the page sends us to the login form
      return;
    }
    if (!response.ok) return;
    const data = await response.json();
    if (previous !== null && data.at > previous.at) rates(data, data.at - previous.at);
    gauges(data);
    tiles(data);
    charts();
    previous = data;
  }

  tick();
  setInterval(tick, every);
})();
