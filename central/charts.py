"""Charts drawn on the server as inline SVG (no JavaScript, no CDN): bars, stacked bars and a heat map.

Every mark carries its number (`data-value`) and a `<title>` tooltip; the pages show the same numbers in a table.
Text is escaped (markupsafe), so labels from the database cannot inject markup.
"""

from __future__ import annotations

from collections.abc import Sequence

from markupsafe import Markup, escape

PALETTE = ("#2f6fb0", "#9cc3e6", "#d98c2b")


def _svg(width: int, height: int, label: str, body: list[str], cls: str) -> Markup:
    head = (
        f'<svg class="chart {escape(cls)}" viewBox="0 0 {width} {height}" width="100%" role="img" '
        f'aria-label="{escape(label)}" preserveAspectRatio="xMinYMin meet" xmlns="http://www.w3.org/2000/svg">'
    )
    return Markup(head + "".join(body) + "</svg>")


def _tick_labels(labels: Sequence[str], x0: float, step: float, y: float, every: int) -> list[str]:
    out = []
    for i, text in enumerate(labels):
        if i % every == 0:
            x = x0 + i * step + step / 2
            out.append(f'<text x="{x:.1f}" y="{y}" text-anchor="middle" class="tick">{escape(text)}</text>')
    return out


def bars(
    labels: Sequence[str],
    series: Sequence[tuple[str, Sequence[int]]],
    *,
    label: str,
    cls: str = "bars",
    width: int = 720,
    height: int = 200,
    max_ticks: int = 16,
) -> Markup:
    """Bars per label; with several series they are stacked (first at the bottom). A legend names the series."""
    left, bottom, top = 36, 22, 18 if len(series) > 1 else 6
    plot_w, plot_h = width - left - 4, height - bottom - top
    totals = [sum(values[i] for _, values in series) for i in range(len(labels))]
    peak = max([1, *totals])
    step = plot_w / max(1, len(labels))
    body = [
        f'<line x1="{left}" y1="{top + plot_h}" x2="{width - 4}" y2="{top + plot_h}" class="axis"/>',
        f'<text x="{left - 4}" y="{top + 8}" text-anchor="end" class="tick">{peak}</text>',
        f'<text x="{left - 4}" y="{top + plot_h}" text-anchor="end" class="tick">0</text>',
    ]
    for i, name in enumerate(labels):
        base = top + plot_h
        for k, (sname, values) in enumerate(series):
            n = values[i]
            h = plot_h * n / peak
            if n:
                x = left + i * step + step * 0.1
                body.append(
                    f'<rect x="{x:.1f}" y="{base - h:.1f}" width="{step * 0.8:.1f}" height="{h:.1f}" '
                    f'fill="{PALETTE[k % len(PALETTE)]}" class="mark s{k}" data-series="{escape(sname)}" '
                    f'data-label="{escape(name)}" data-value="{n}"><title>{escape(name)}: {n} {escape(sname)}'
                    f"</title></rect>"
                )
            base -= h
    every = max(1, -(-len(labels) // max_ticks))
    body += _tick_labels(labels, left, step, height - 6, every)
    if len(series) > 1:
        x = left
        for k, (sname, _) in enumerate(series):
            body.append(f'<rect x="{x}" y="3" width="10" height="10" fill="{PALETTE[k % len(PALETTE)]}"/>')
            body.append(f'<text x="{x + 14}" y="12" class="tick">{escape(sname)}</text>')
            x += 24 + 7 * len(sname)
    return _svg(width, height, label, body, cls)


def heatmap(
    grid: Sequence[Sequence[int]],
    row_labels: Sequence[str],
    col_labels: Sequence[str],
    *,
    label: str,
    cls: str = "heatmap",
    cell: int = 26,
) -> Markup:
    """A grid of cells shaded by value (darkest: the largest), e.g. arrivals by weekday x hour."""
    left, top = 40, 16
    width, height = left + cell * len(col_labels) + 4, top + cell * len(row_labels) + 4
    peak = max([1, *(n for row in grid for n in row)])
    body = []
    for j, text in enumerate(col_labels):
        if j % 2 == 0:
            body.append(
                f'<text x="{left + j * cell + cell / 2}" y="{top - 4}" text-anchor="middle" class="tick">'
                f"{escape(text)}</text>"
            )
    for i, row in enumerate(grid):
        y = top + i * cell
        body.append(
            f'<text x="{left - 6}" y="{y + cell * 0.65}" text-anchor="end" class="tick">{escape(row_labels[i])}</text>'
        )
        for j, n in enumerate(row):
            alpha = 0.06 + 0.94 * n / peak if n else 0.0
            body.append(
                f'<rect x="{left + j * cell}" y="{y}" width="{cell - 2}" height="{cell - 2}" class="cell" '
                f'fill="{PALETTE[0]}" fill-opacity="{alpha:.3f}" data-row="{escape(row_labels[i])}" '
                f'data-col="{escape(col_labels[j])}" data-value="{n}"><title>{escape(row_labels[i])} '
                f"{escape(col_labels[j])}:00 — {n}</title></rect>"
            )
    return _svg(width, height, label, body, cls)
