"""Series for the charts: `Downsampled` keeps every step at a fixed cost by merging neighbouring
points pairwise whenever it outgrows `max_points`; `sparkline` and `resample` draw and fit them."""
from __future__ import annotations

import math
from typing import Iterable


class Downsampled:
    """x/y series that keeps at most `max_points` points by merging neighbours pairwise."""

    def __init__(self, columns: int, max_points: int = 2048) -> None:
        self.max_points = max(4, max_points - max_points % 2)
        self.stride = 1
        self.x: list[int] = []
        self.ys: list[list[float]] = [[] for _ in range(columns)]
        self._pending: list[tuple[int, tuple[float, ...]]] = []

    def add(self, x: int, *ys: float) -> None:
        """Add a point (x: the step; one y per column); every `stride` points are averaged into one."""
        self._pending.append((x, ys))
        if len(self._pending) >= self.stride:
            self._flush()

    def _flush(self) -> None:
        point = _mean_point(self._pending)
        self._pending = []
        self.x.append(point[0])
        for column, value in zip(self.ys, point[1]):
            column.append(value)
        if len(self.x) > self.max_points:
            self._halve()

    def _halve(self) -> None:
        pairs = len(self.x) // 2
        self.x = [self.x[2 * i + 1] for i in range(pairs)] + self.x[2 * pairs:]
        self.ys = [[(c[2 * i] + c[2 * i + 1]) / 2 for i in range(pairs)] + c[2 * pairs:] for c in self.ys]
        self.stride *= 2

    def snapshot(self) -> tuple[tuple[int, ...], tuple[tuple[float, ...], ...]]:
        """(xs, one tuple per column): the kept points plus the mean of the still-partial bucket."""
        xs, ys = list(self.x), [list(c) for c in self.ys]
        if self._pending:  # show the partial bucket too, so the newest step is never hidden
            x, values = _mean_point(self._pending)
            xs.append(x)
            for column, value in zip(ys, values):
                column.append(value)
        return tuple(xs), tuple(tuple(c) for c in ys)


def _mean_point(points: list[tuple[int, tuple[float, ...]]]) -> tuple[int, tuple[float, ...]]:
    columns = zip(*(values for _, values in points))
    return points[-1][0], tuple(sum(c) / len(c) for c in columns)


SPARK_CHARS = "▁▂▃▄▅▆▇█"


def sparkline(values: Iterable[float], width: int) -> str:
    """The newest `width` values as block characters scaled between their min and max."""
    tail = [v for v in values if math.isfinite(v)][-width:] if width > 0 else []
    if not tail:
        return ""
    low, high = min(tail), max(tail)
    span = high - low
    top = len(SPARK_CHARS) - 1
    return "".join(SPARK_CHARS[int(round((v - low) / span * top)) if span else top // 2] for v in tail)


def resample(values: tuple[float, ...], width: int) -> list[float]:
    """`values` averaged into `width` buckets (or returned as is when they already fit)."""
    if len(values) <= width or width <= 0:
        return list(values)
    out = []
    for i in range(width):
        lo, hi = i * len(values) // width, (i + 1) * len(values) // width
        chunk = values[lo:max(hi, lo + 1)]
        out.append(sum(chunk) / len(chunk))
    return out
