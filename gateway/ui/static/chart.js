// A small SVG line chart of the project's own: series of [time, value] points, drawn into
// an <svg> element with its axis, the latest value and a legend. No library, no network.
"use strict";

window.PaxChart = (function () {
  const NS = "http://www.w3.org/2000/svg";
  const WIDTH = 460, HEIGHT = 180, LEFT = 46, RIGHT = 10, TOP = 10, BOTTOM = 46;
  const COLOURS = ["#1f6feb", "#1a7f37", "#cf222e", "#d08c00", "#8250df", "#0a7ea4",
                   "#bc4c00", "#57606a", "#bf3989", "#116329"];

  function element(name, attributes, text) {
    const node = document.createElementNS(NS, name);
    for (const [key, value] of Object.entries(attributes)) node.setAttribute(key, value);
    if (text !== undefined) node.textContent = text;
    return node;
  }

  function niceMax(value) {
    if (value <= 0) return 1;
    const power = Math.pow(10, Math.floor(Math.log10(value)));
    for (const step of [1, 2, 5, 10]) if (value <= step * power) return step * power;
    return 10 * power;
  }

  function format(value) {
    if (value >= 100) return value.toFixed(0);
    if (value >= 10) return value.toFixed(1);
    return value.toFixed(2);
  }

  function draw(svg, series, unit) {
    svg.setAttribute("viewBox", `0 0 ${WIDTH} ${HEIGHT}`);
    svg.replaceChildren();
    const points = series.flatMap((s) => s.points);
    if (points.length === 0) {
      svg.appendChild(element("text", { x: WIDTH / 2, y: HEIGHT / 2, "text-anchor": "middle",
                                        class: "empty" }, "no data yet"));
      return;
    }
    const times = points.map((p) => p[0]);
    const start = Math.min(...times), span = Math.max(1, Math.max(...times) - start);
    const top = niceMax(Math.max(...points.map((p) => p[1])));
    const x = (t) => LEFT + ((t - start) / span) * (WIDTH - LEFT - RIGHT);
    const y = (v) => TOP + (1 - v / top) * (HEIGHT - TOP - BOTTOM);
    for (const fraction of [0, 0.5, 1]) {
      const level = y(top * fraction);
      svg.appendChild(element("line", { x1: LEFT, x2: WIDTH - RIGHT, y1: level, y2: level,
                                        class: "grid" }));
      svg.appendChild(element("text", { x: LEFT - 4, y: level + 4, "text-anchor": "end",
                                        class: "axis" }, format(top * fraction) + unit));
    }
    series.forEach((s, index) => {
      const colour = COLOURS[index % COLOURS.length];
      const path = s.points.map((p) => `${x(p[0]).toFixed(1)},${y(p[1]).toFixed(1)}`).join(" ");
      svg.appendChild(element("polyline", { points: path, fill: "none", stroke: colour,
                                            "stroke-width": 1.6, "data-series": s.name }));
      const last = s.points[s.points.length - 1];
      svg.appendChild(element("circle", { cx: x(last[0]).toFixed(1), cy: y(last[1]).toFixed(1),
                                          r: 2.5, fill: colour }));
      const legendX = LEFT + (index % 3) * 140, legendY = HEIGHT - 28 + Math.floor(index / 3) * 12;
      svg.appendChild(element("text", { x: legendX, y: legendY, fill: colour, class: "legend" },
                              `${s.name}: ${format(last[1])}${unit}`));
    });
  }

  return { draw };
})();
