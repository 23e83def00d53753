"""Small SVG charts drawn by the server (no chart library, nothing for the CSP to allow)."""

from __future__ import annotations

from collections.abc import Sequence

from markupsafe import Markup, escape

WIDTH, HEIGHT, PAD = 720, 180, 30


def per_minute(series: dict[str, Sequence[int]], label: str) -> Markup:
    """One polyline per series (CSS class = its name) over the same minutes, oldest first."""
    values = [v for points in series.values() for v in points]
    top = max(values, default=0) or 1
    n = max((len(p) for p in series.values()), default=0)
    step = (WIDTH - 2 * PAD) / max(n - 1, 1)
    lines = []
    for name, points in series.items():
        coords = " ".join(f"{PAD + i * step:.1f},{HEIGHT - PAD - v / top * (HEIGHT - 2 * PAD):.1f}"
                          for i, v in enumerate(points))
        lines.append(f'<polyline class="{escape(name)}" points="{coords}"/>')
    axes = (f'<line x1="{PAD}" y1="{HEIGHT - PAD}" x2="{WIDTH - PAD}" y2="{HEIGHT - PAD}" '
            f'stroke="#999"/><text x="{PAD}" y="{HEIGHT - 8}">-60 min</text>'
            f'<text x="{WIDTH - PAD - 20}" y="{HEIGHT - 8}">now</text>'
            f'<text x="4" y="{PAD}">{top}</text>')
    return Markup(f'<svg class="chart" role="img" aria-label="{escape(label)}" '
                  f'viewBox="0 0 {WIDTH} {HEIGHT}" width="{WIDTH}" height="{HEIGHT}">'
                  f'{axes}{"".join(lines)}</svg>')
