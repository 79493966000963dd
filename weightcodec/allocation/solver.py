"""Choosing one option per tensor: the rate / predicted-loss frontier (Lagrangian, on convex hulls).

Each tensor has options ``(bytes, loss)``. For a multiplier ``lam >= 0`` the choice that
minimises ``bytes + lam * loss`` tensor by tensor is optimal for its own total bytes and total
predicted loss (predictions add over tensors), and as ``lam`` grows it walks every tensor along
the lower convex hull of its options. :func:`frontier` lists those choices in order, from every
tensor at its cheapest option to every tensor at its most accurate one: each step moves the one
tensor whose next hull point buys the most loss reduction per byte (the classic equal-slope
allocation). The accuracy search bisects along this list; a size budget takes the last point that
fits and then spends what is left greedily (:func:`fill`).
"""

from __future__ import annotations

import heapq
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from .candidates import Option, TensorOptions


def lower_hull(options: Sequence[Option]) -> list[Option]:
    """The options on the lower convex hull of (bytes, loss), cheapest first, loss strictly falling.

    Options that cost more and predict no less loss than a cheaper one are dropped, and so are
    the points above the chords of their neighbours (a mix of the neighbours would do better).
    """
    points = sorted(options, key=lambda o: (o.bytes, o.loss))
    pareto: list[Option] = []
    for option in points:
        if pareto and option.loss >= pareto[-1].loss:
            continue
        if pareto and option.bytes == pareto[-1].bytes:
            pareto[-1] = option
            continue
        pareto.append(option)
    hull: list[Option] = []
    for option in pareto:
        while len(hull) >= 2:
            a, b = hull[-2], hull[-1]
            # b is above the chord a-option: (b - a) x (option - a) <= 0 in (bytes, loss)
            cross = (b.bytes - a.bytes) * (option.loss - a.loss) - (b.loss - a.loss) * (option.bytes - a.bytes)
            if cross <= 0:
                hull.pop()
            else:
                break
        hull.append(option)
    return hull


@dataclass(frozen=True)
class Point:
    """One allocation on the frontier: the hull index chosen for every tensor, and its totals."""

    choice: tuple[int, ...]  # index into each tensor's hull, in the order of ``Frontier.names``
    bytes: int  # payload bytes of all tensors (no header)
    loss: float  # total predicted loss


@dataclass
class Frontier:
    names: list[str]
    hulls: list[list[Option]]
    points: list[Point]  # cheapest (most loss) first, most accurate last

    def options(self, point: Point) -> dict[str, Option]:
        return {name: self.hulls[i][point.choice[i]] for i, name in enumerate(self.names)}

    @property
    def most_accurate(self) -> Point:
        return self.points[-1]

    @property
    def cheapest(self) -> Point:
        return self.points[0]

    def index_for_loss(self, budget: float) -> int:
        """The cheapest point whose predicted loss is at most ``budget`` (the most accurate if none)."""
        for index, point in enumerate(self.points):
            if point.loss <= budget:
                return index
        return len(self.points) - 1

    def index_for_bytes(self, budget: int) -> int | None:
        """The most accurate point of at most ``budget`` payload bytes (None if even the cheapest is larger)."""
        best = None
        for index, point in enumerate(self.points):
            if point.bytes <= budget:
                best = index
        return best


def frontier(table: Mapping[str, TensorOptions]) -> Frontier:
    """Every Lagrangian allocation of ``table``, cheapest first (see the module docstring)."""
    names = list(table)
    hulls = [lower_hull(table[name].options) for name in names]
    choice = [0] * len(names)
    total_bytes = sum(h[0].bytes for h in hulls)
    total_loss = sum(h[0].loss for h in hulls)
    points = [Point(tuple(choice), total_bytes, total_loss)]
    heap: list[tuple[float, int]] = []

    def push(i: int) -> None:
        k = choice[i]
        hull = hulls[i]
        if k + 1 < len(hull):
            gain = (hull[k].loss - hull[k + 1].loss) / max(hull[k + 1].bytes - hull[k].bytes, 1)
            heapq.heappush(heap, (-gain, i))

    for i in range(len(names)):
        push(i)
    while heap:
        _, i = heapq.heappop(heap)
        k = choice[i]
        total_bytes += hulls[i][k + 1].bytes - hulls[i][k].bytes
        total_loss += hulls[i][k + 1].loss - hulls[i][k].loss
        choice[i] = k + 1
        points.append(Point(tuple(choice), total_bytes, max(total_loss, 0.0)))
        push(i)
    return Frontier(names, hulls, points)


def fill(front: Frontier, point: Point, budget: int) -> dict[str, Option]:
    """Spend ``budget - point.bytes`` more bytes where they cut the most predicted loss per byte,
    over every option of every tensor (not only hull points): what a size budget keeps after the
    frontier point that fits. Returns the options chosen."""
    chosen = front.options(point)
    spare = budget - point.bytes
    while spare > 0:
        best = None
        for i, name in enumerate(front.names):
            current = chosen[name]
            for option in front.hulls[i]:
                extra = option.bytes - current.bytes
                cut = current.loss - option.loss
                if 0 < extra <= spare and cut > 0 and (best is None or cut / extra > best[0]):
                    best = (cut / extra, name, option)
        if best is None:
            break
        _, name, option = best
        spare -= option.bytes - chosen[name].bytes
        chosen[name] = option
    return chosen


__all__ = ["Frontier", "Point", "fill", "frontier", "lower_hull"]
