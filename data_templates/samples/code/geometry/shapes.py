"""Polygons and circles."""

from __future__ import annotations

import math
from dataclasses import dataclass

from vectors import Vec2


@dataclass(frozen=True)
class Circle:
    center: Vec2
    radius: float

    def area(self) -> float:
        return math.pi * self.radius**2

    def contains(self, p: Vec2) -> bool:
        return (p - self.center).norm() <= self.radius


@dataclass(frozen=True)
class Polygon:
    points: tuple[Vec2, ...]

    def area(self) -> float:
        """Shoelace formula: half the absolute sum of cross products of consecutive vertices."""
        pts = self.points
        total = sum(pts[i].cross(pts[(i + 1) % len(pts)]) for i in range(len(pts)))
        return abs(total) / 2

    def perimeter(self) -> float:
        pts = self.points
        return sum((pts[(i + 1) % len(pts)] - pts[i]).norm() for i in range(len(pts)))

    def centroid(self) -> Vec2:
        n = len(self.points)
        return Vec2(sum(p.x for p in self.points) / n, sum(p.y for p in self.points) / n)


def convex_hull(points: list[Vec2]) -> Polygon:
    """Andrew's monotone chain: the convex hull in counter-clockwise order."""
    pts = sorted(set(points), key=lambda p: (p.x, p.y))
    if len(pts) <= 2:
        return Polygon(tuple(pts))

    def half(seq: list[Vec2]) -> list[Vec2]:
        out: list[Vec2] = []
        for p in seq:
            while len(out) >= 2 and (out[-1] - out[-2]).cross(p - out[-2]) <= 0:
                out.pop()
            out.append(p)
        return out

    lower, upper = half(pts), half(list(reversed(pts)))
    return Polygon(tuple(lower[:-1] + upper[:-1]))
