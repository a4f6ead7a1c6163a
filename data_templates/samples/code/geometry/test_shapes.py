import math

from shapes import Circle, Polygon, convex_hull
from vectors import Vec2


def test_square_area_and_perimeter():
    square = Polygon((Vec2(0, 0), Vec2(2, 0), Vec2(2, 2), Vec2(0, 2)))
    assert square.area() == 4
    assert square.perimeter() == 8
    assert square.centroid() == Vec2(1, 1)


def test_circle():
    c = Circle(Vec2(0, 0), 1)
    assert math.isclose(c.area(), math.pi)
    assert c.contains(Vec2(0.5, 0.5)) and not c.contains(Vec2(1, 1))


def test_convex_hull_drops_inner_points():
    pts = [Vec2(0, 0), Vec2(1, 1), Vec2(2, 0), Vec2(2, 2), Vec2(0, 2), Vec2(1, 0.5)]
    hull = convex_hull(pts)
    assert set(hull.points) == {Vec2(0, 0), Vec2(2, 0), Vec2(2, 2), Vec2(0, 2)}
    assert hull.area() == 4
