"""A dependency-free SVG line plot (the project's figures: docs/figures/*.svg), and the two small
helpers the figure scripts share."""
import os


def size_label(n):
    """4096 -> "4k" (multiples of 1024), else the number."""
    n = int(n)
    return "%dk" % (n // 1024) if n % 1024 == 0 else str(n)


def pop_option(args, flag):
    """Removes `flag VALUE` from the argument list and returns VALUE (None when absent)."""
    if flag not in args:
        return None
    i = args.index(flag)
    value = args[i + 1]
    del args[i:i + 2]
    return value


def line_plot(path, xlabels, series, ylabel, xlabel, ymax=None, log_y=False):
    """series: {name: [value or None per x]}; writes an SVG of the lines with a legend."""
    import math
    W, H, L, B = 560, 300, 64, 50
    vals = [v for pts in series.values() for v in pts if v is not None]
    top = ymax if ymax is not None else (max(vals) * 1.1 if vals else 1.0)
    bottom = min(vals) / 1.5 if log_y and vals else 0.0
    def py(v):
        if log_y:
            f = (math.log10(v) - math.log10(bottom)) / (math.log10(top) - math.log10(bottom))
        else:
            f = (v - bottom) / (top - bottom)
        return H - B - f * (H - B - 20)
    px = lambda i: L + i * (W - L - 20) / max(1, len(xlabels) - 1)
    colors = ["#1b7837", "#d6604d", "#4393c3", "#762a83", "#e08214", "#8c510a", "#35978f", "#c51b7d", "#666666", "#b8a500"]  # one per series (up to 10)
    if len(series) > len(colors):
        raise ValueError("svg_plot: at most %d series" % len(colors))
    s = ['<svg xmlns="http://www.w3.org/2000/svg" width="%d" height="%d" font-family="sans-serif" font-size="12">' % (W, H + 16 * len(series) + 10),
         '<rect width="100%" height="100%" fill="white"/>']
    ticks = [bottom * (top / bottom) ** (k / 4) for k in range(5)] if log_y else [bottom + (top - bottom) * k / 4 for k in range(5)]
    for v in ticks:
        s.append('<line x1="%d" y1="%.1f" x2="%d" y2="%.1f" stroke="#ddd"/>' % (L, py(v), W - 20, py(v)))
        s.append('<text x="%d" y="%.1f" text-anchor="end">%s</text>' % (L - 6, py(v) + 4, ("%.3g" % v)))
    for i, x in enumerate(xlabels):
        s.append('<text x="%.1f" y="%d" text-anchor="middle">%s</text>' % (px(i), H - B + 18, x))
    s.append('<text x="%d" y="%d" text-anchor="middle">%s</text>' % ((W + L) // 2, H - B + 36, xlabel))
    s.append('<text x="14" y="%d" transform="rotate(-90 14 %d)" text-anchor="middle">%s</text>' % (H // 2, H // 2, ylabel))
    for c, (name, pts) in zip(colors, series.items()):
        p = [(px(i), py(v)) for i, v in enumerate(pts) if v is not None]
        s.append('<polyline fill="none" stroke="%s" stroke-width="2" points="%s"/>' % (c, " ".join("%.1f,%.1f" % q for q in p)))
        s += ['<circle cx="%.1f" cy="%.1f" r="3" fill="%s"/>' % (a, b, c) for a, b in p]
    for j, (c, name) in enumerate(zip(colors, series)):
        s.append('<rect x="%d" y="%d" width="12" height="3" fill="%s"/><text x="%d" y="%d">%s</text>' % (
            L, H + 2 + 16 * j, c, L + 18, H + 7 + 16 * j, name))
    s.append("</svg>")
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    open(path, "w").write("\n".join(s) + "\n")
