"""A recording drawn as a space-time diagram (SVG): one lane per process, time running
left to right, arrows for messages, a mark for every prepare, commit, abort, crash or
pause, and the verdict underneath. Pure: a recording in, the SVG text out."""

from __future__ import annotations

import textwrap
from xml.sax.saxutils import escape

from paxkit.spacetime.record import Mark, Message, Recording

WIDTH = 1200
LEFT = 150
RIGHT = 40
TOP = 70
LANE_GAP = 80
BOTTOM = 50
LEAD_S = 0.5  # room before the first event, at most
LEAD_SHARE = 0.05  # of the span: a transaction of milliseconds gets milliseconds
TAIL_SHARE = 0.08  # and after the last one, for its labels
VERDICT_WIDTH = 150
COLOURS = {
    "info": "#555555",
    "prepare": "#d08c00",
    "commit": "#1a7f37",
    "abort": "#cf222e",
    "crash": "#000000",
    "pause": "#8250df",
    "resume": "#8250df",
    "blocked": "#bc4c00",
    "bad": "#cf222e",
}


class _Scale:
    """Seconds since the start to x, lane name to y."""

    def __init__(self, recording: Recording) -> None:
        times = event_times(recording) or [recording.started_at]
        self.start = min(times) - min(LEAD_S, max(0.001, LEAD_SHARE * (max(times) - min(times))))
        self.span = max(0.001, max(times) - self.start) * (1 + TAIL_SHARE)
        self.rows = {name: TOP + i * LANE_GAP for i, name in enumerate(recording.lanes)}

    def x(self, at: float) -> float:
        return LEFT + (at - self.start) / self.span * (WIDTH - LEFT - RIGHT)

    def y(self, lane: str) -> float:
        return self.rows[lane]


def event_times(recording: Recording) -> list[float]:
    times = [m.at for m in recording.marks]
    return times + [t for m in recording.messages for t in (m.sent_at, m.received_at)]


def render_svg(recording: Recording, title: str, verdict: str) -> str:
    scale = _Scale(recording)
    verdict_lines = textwrap.wrap(verdict, VERDICT_WIDTH)
    height = TOP + max(1, len(recording.lanes)) * LANE_GAP + BOTTOM + 18 * len(verdict_lines)
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{height}" '
        f'viewBox="0 0 {WIDTH} {height}" font-family="sans-serif" font-size="11">',
        '<defs><marker id="head" viewBox="0 0 10 10" refX="10" refY="5" markerWidth="7" '
        'markerHeight="7" orient="auto-start-reverse"><path d="M0,0 L10,5 L0,10 z" '
        'fill="context-stroke"/></marker></defs>',
        '<rect width="100%" height="100%" fill="white"/>',
        f'<text x="{LEFT}" y="28" font-size="16" font-weight="bold">{escape(title)}</text>',
        *_lanes(recording, scale),
        *_time_axis(scale, height),
        *(_message(m, scale) for m in recording.messages),
        *(_mark(m, i, scale) for i, m in enumerate(sorted(recording.marks, key=_when))),
        *(
            f'<text x="20" y="{height - 18 * (len(verdict_lines) - i) - 10}" font-size="13" '
            f'font-weight="bold">{escape(line)}</text>'
            for i, line in enumerate(verdict_lines)
        ),
        "</svg>",
    ]
    return "\n".join(parts) + "\n"


def render_text(recording: Recording) -> str:
    """The timeline: one line per event, seconds since the first one."""
    start = min(event_times(recording) or [recording.started_at])
    return "\n".join(f"{at - start:+8.3f}s  {line}" for at, line in recording.events())


def _when(mark: Mark) -> float:
    return mark.at


def _lanes(recording: Recording, scale: _Scale) -> list[str]:
    out = []
    for name in recording.lanes:
        y = scale.y(name)
        out.append(
            f'<line x1="{LEFT}" y1="{y}" x2="{WIDTH - RIGHT}" y2="{y}" stroke="#bbbbbb"/>'
            f'<text x="{LEFT - 10}" y="{y + 4}" text-anchor="end" font-weight="bold">'
            f"{escape(name)}</text>"
        )
    return out


def _time_axis(scale: _Scale, height: float) -> list[str]:
    step = _tick_step(scale.span)
    out, tick = [], 0.0
    while tick <= scale.span + 1e-9:
        x = scale.x(scale.start + tick)
        out.append(
            f'<line x1="{x:.1f}" y1="{TOP - 30}" x2="{x:.1f}" y2="{height - BOTTOM + 10}" '
            f'stroke="#eeeeee"/><text x="{x:.1f}" y="{TOP - 34}" text-anchor="middle" '
            f'fill="#888888">{tick:g}s</text>'
        )
        tick += step
    return out


def _tick_step(span: float) -> float:
    """A round step giving at most about a dozen ticks."""
    for step in (
        0.001,
        0.002,
        0.005,
        0.01,
        0.02,
        0.05,
        0.1,
        0.2,
        0.5,
        1,
        2,
        5,
        10,
        20,
        30,
        60,
        120,
    ):
        if span / step <= 12:
            return float(step)
    return span / 10


def _message(message: Message, scale: _Scale) -> str:
    x1, y1 = scale.x(message.sent_at), scale.y(message.source)
    x2, y2 = scale.x(message.received_at), scale.y(message.target)
    colour = "#1f6feb" if message.ok else "#cf222e"
    dash = "" if message.ok else ' stroke-dasharray="5,3"'
    mid_x, mid_y = (x1 + x2) / 2, (y1 + y2) / 2
    right = mid_x > WIDTH - RIGHT - 160
    label_x, anchor = (mid_x - 4, "end") if right else (mid_x + 4, "start")
    return (
        f'<line x1="{x1:.1f}" y1="{y1}" x2="{x2:.1f}" y2="{y2}" stroke="{colour}" '
        f'stroke-width="1.3" marker-end="url(#head)"{dash}/>'
        f'<text x="{label_x:.1f}" y="{mid_y - 3:.1f}" text-anchor="{anchor}" fill="{colour}" '
        f'font-size="10">{escape(message.label)}</text>'
    )


def _mark(mark: Mark, index: int, scale: _Scale) -> str:
    x, y = scale.x(mark.at), scale.y(mark.lane)
    colour = COLOURS[mark.kind]
    if mark.kind == "crash":
        symbol = (
            f'<path d="M{x - 6:.1f},{y - 6} L{x + 6:.1f},{y + 6} M{x - 6:.1f},{y + 6} '
            f'L{x + 6:.1f},{y - 6}" stroke="{colour}" stroke-width="3"/>'
        )
    elif mark.kind in ("pause", "resume", "blocked"):
        symbol = f'<rect x="{x - 5:.1f}" y="{y - 5}" width="10" height="10" fill="{colour}"/>'
    else:
        symbol = f'<circle cx="{x:.1f}" cy="{y}" r="5" fill="{colour}"/>'
    # Alternate labels above and below the lane so neighbours don't overwrite each other.
    label_y = y - 12 - 12 * (index % 2) if index % 4 < 2 else y + 20 + 12 * (index % 2)
    anchor = "end" if x > WIDTH - RIGHT - 120 else "start" if x < LEFT + 120 else "middle"
    return (
        f'{symbol}<text x="{x:.1f}" y="{label_y}" text-anchor="{anchor}" fill="{colour}">'
        f"{escape(mark.label)}</text>"
    )
