"""Plotting helpers shared by the heatmap of ``fw.tune`` (and ``python -m
forkwait tune``) and the timeline of ``forkwait.profile``: one place that
imports matplotlib.

Figures are made with matplotlib's object API (``matplotlib.figure.Figure``),
never through pyplot, so that forkwait neither picks a backend nor keeps
figures alive in a user's session.
"""

from __future__ import annotations

from typing import Any

MISSING = ("matplotlib is not installed: pip install matplotlib (or install forkwait "
           "with its tools: pip install 'forkwait[tools]')")


def require() -> None:
    """ImportError that says what to install, when matplotlib is missing.
    Called before a picture imports anything of matplotlib's."""
    try:
        import matplotlib  # noqa: F401
    except ImportError as exc:
        raise ImportError(MISSING) from exc


def figure(width: float, height: float) -> Any:
    """A new matplotlib Figure (not registered with pyplot; constrained layout,
    so that titles, labels and colour bars do not overlap)."""
    require()
    from matplotlib.figure import Figure

    return Figure(figsize=(width, height), layout="constrained")


def palette(n: int) -> list[str]:
    """`n` distinct colours (matplotlib's tab10, then tab20)."""
    from matplotlib import colormaps

    cmap = colormaps["tab10" if n <= 10 else "tab20"]
    return [_hex(cmap(i % cmap.N)) for i in range(n)]


def text_colour(background: Any) -> str:
    """Black or white, whichever reads better on `background` (WCAG luminance)."""
    from matplotlib.colors import to_rgb

    def channel(c: float) -> float:
        return c / 12.92 if c <= 0.03928 else ((c + 0.055) / 1.055) ** 2.4

    r, g, b = (channel(c) for c in to_rgb(background))
    luminance = 0.2126 * r + 0.7152 * g + 0.0722 * b
    # contrast against black (L + 0.05) / 0.05 vs white 1.05 / (L + 0.05)
    return "black" if (luminance + 0.05) ** 2 > 0.0525 else "white"


def _hex(rgba: tuple[float, ...]) -> str:
    from matplotlib.colors import to_hex

    return str(to_hex(rgba))
