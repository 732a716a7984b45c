"""Geometry pack: areas and perimeters of flat shapes, volumes of solids, distances on the globe."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Annotated, Literal

from langchain_core.tools import BaseTool, tool

from tools._common import clean_number, pack, require_finite

EARTH_RADIUS_KM = 6371.0088  # IUGG mean Earth radius


def _dims(shape: str, dimensions: dict[str, float], required: tuple[str, ...]) -> dict[str, float]:
    missing = [name for name in required if name not in dimensions]
    if missing:
        raise ValueError(f"a {shape} needs dimensions {list(required)}; missing {missing}")
    for name in required:
        require_finite(name, dimensions[name])
        if dimensions[name] <= 0:
            raise ValueError(f"dimension {name!r} must be greater than 0, got {dimensions[name]}")
    return dimensions


Shape2D = Literal["circle", "square", "rectangle", "triangle", "right_triangle", "trapezoid", "ellipse"]
_SHAPES_2D: dict[str, tuple[tuple[str, ...], Callable[[dict[str, float]], tuple[float, float]]]] = {
    "circle": (("radius",), lambda d: (math.pi * d["radius"] ** 2, 2 * math.pi * d["radius"])),
    "square": (("side",), lambda d: (d["side"] ** 2, 4 * d["side"])),
    "rectangle": (("width", "height"), lambda d: (d["width"] * d["height"], 2 * (d["width"] + d["height"]))),
    "triangle": (("a", "b", "c"), lambda d: _heron(d["a"], d["b"], d["c"])),
    "right_triangle": (
        ("base", "height"),
        lambda d: (d["base"] * d["height"] / 2, d["base"] + d["height"] + math.hypot(d["base"], d["height"])),
    ),
    "trapezoid": (
        ("base1", "base2", "height"),
        lambda d: ((d["base1"] + d["base2"]) / 2 * d["height"], math.nan),
    ),
    "ellipse": (("semi_major", "semi_minor"), lambda d: _ellipse(d["semi_major"], d["semi_minor"])),
}


def _heron(a: float, b: float, c: float) -> tuple[float, float]:
    # Kahan's form on sides scaled to the longest: the plain s(s-a)(s-b)(s-c) underflowed to 0 for tiny
    # sides and refused an equilateral triangle as "not a triangle"
    x, y, z = sorted((a, b, c), reverse=True)
    y, z = y / x, z / x
    product = (1 + (y + z)) * (z - (1 - y)) * (z + (1 - y)) * (1 + (y - z))
    if product <= 0:
        rule = "each side must be shorter than the sum of the other two"
        raise ValueError(f"sides {a}, {b}, {c} cannot form a triangle ({rule})")
    return x * x * math.sqrt(product) / 4, a + b + c


def _ellipse(a: float, b: float) -> tuple[float, float]:
    h = ((a - b) / (a + b)) ** 2
    perimeter = math.pi * (a + b) * (1 + 3 * h / (10 + math.sqrt(4 - 3 * h)))  # Ramanujan's approximation
    return math.pi * a * b, perimeter


@tool
def shape_area(
    shape: Annotated[Shape2D, "Kind of flat 2D shape"],
    dimensions: Annotated[
        dict[str, float],
        "Named lengths: circle {radius}; square {side}; rectangle {width, height}; triangle {a, b, c} sides; "
        "right_triangle {base, height}; trapezoid {base1, base2, height}; ellipse {semi_major, semi_minor}",
    ],
) -> dict[str, float | None]:
    """Area and perimeter (circumference) of a flat shape: a circle, square, rectangle, triangle, right
    triangle, trapezoid or ellipse, from its radius, sides or other lengths. Returns the area and the
    perimeter (none for a trapezoid).

    Example: "what's the area of a room 4 m by 7 m?" -> shape_area(shape="rectangle", dimensions={"width": 4,
    "height": 7})
    """
    required, formula = _SHAPES_2D[shape]
    area, perimeter = formula(_dims(shape, dimensions, required))
    if area == 0:  # the dimensions are positive: the area underflowed
        raise ValueError(f"the {shape}'s dimensions {dimensions} are too small: its area is below 1e-308")
    rounded_perimeter = None if math.isnan(perimeter) else clean_number(perimeter)
    return {"area": clean_number(area), "perimeter": rounded_perimeter}


Solid = Literal["cube", "box", "sphere", "cylinder", "cone", "pyramid"]
_SOLIDS: dict[str, tuple[tuple[str, ...], Callable[[dict[str, float]], tuple[float, float]]]] = {
    "cube": (("side",), lambda d: (d["side"] ** 3, 6 * d["side"] ** 2)),
    "box": (
        ("length", "width", "height"),
        lambda d: (
            d["length"] * d["width"] * d["height"],
            2 * (d["length"] * d["width"] + d["length"] * d["height"] + d["width"] * d["height"]),
        ),
    ),
    "sphere": (("radius",), lambda d: (4 / 3 * math.pi * d["radius"] ** 3, 4 * math.pi * d["radius"] ** 2)),
    "cylinder": (
        ("radius", "height"),
        lambda d: (
            math.pi * d["radius"] ** 2 * d["height"],
            2 * math.pi * d["radius"] * (d["radius"] + d["height"]),
        ),
    ),
    "cone": (
        ("radius", "height"),
        lambda d: (
            math.pi * d["radius"] ** 2 * d["height"] / 3,
            math.pi * d["radius"] * (d["radius"] + math.hypot(d["radius"], d["height"])),
        ),
    ),
    "pyramid": (
        ("base_side", "height"),
        lambda d: (
            d["base_side"] ** 2 * d["height"] / 3,
            d["base_side"] ** 2 + 2 * d["base_side"] * math.hypot(d["base_side"] / 2, d["height"]),
        ),
    ),
}


@tool
def solid_volume(
    shape: Annotated[Solid, "Kind of 3D solid; pyramid means a square-based pyramid"],
    dimensions: Annotated[
        dict[str, float],
        "Named lengths: cube {side}; box {length, width, height}; sphere {radius}; cylinder and cone "
        "{radius, height}; pyramid {base_side, height}",
    ],
) -> dict[str, float]:
    """Volume and surface area of a 3D solid: a cube, box, sphere (ball), cylinder (can, tank), cone or square
    pyramid, from its lengths. Returns the volume and the total surface area.

    Example: "how much does a cylinder tank of radius 3 and height 10 hold?" -> solid_volume(shape="cylinder",
    dimensions={"radius": 3, "height": 10})
    """
    required, formula = _SOLIDS[shape]
    volume, surface = formula(_dims(shape, dimensions, required))
    if volume == 0:  # the dimensions are positive: the volume underflowed
        raise ValueError(f"the {shape}'s dimensions {dimensions} are too small: its volume is below 1e-308")
    return {"volume": clean_number(volume), "surface_area": clean_number(surface)}


@tool
def great_circle_distance(
    lat1: Annotated[float, "Latitude of the first point in decimal degrees (-90 to 90)"],
    lon1: Annotated[float, "Longitude of the first point in decimal degrees (-180 to 180)"],
    lat2: Annotated[float, "Latitude of the second point in decimal degrees"],
    lon2: Annotated[float, "Longitude of the second point in decimal degrees"],
    unit: Annotated[Literal["km", "mi", "nmi"], "Result unit: kilometres, miles or nautical miles"] = "km",
) -> dict[str, float]:
    """Distance as the crow flies between two places given by latitude and longitude (GPS coordinates), in
    kilometres, miles or nautical miles. Returns the distance and the initial compass bearing.

    Example: "how far is 51.5, -0.13 from 48.86, 2.35 in miles?" -> great_circle_distance(lat1=51.5,
    lon1=-0.13, lat2=48.86, lon2=2.35, unit="mi")
    """
    checks = (("lat1", lat1, 90), ("lat2", lat2, 90), ("lon1", lon1, 180), ("lon2", lon2, 180))
    for name, value, bound in checks:
        require_finite(name, value)
        if abs(value) > bound:
            raise ValueError(f"{name} must be between -{bound} and {bound} degrees, got {value}")
    p1, p2 = math.radians(lat1), math.radians(lat2)
    dp, dl = p2 - p1, math.radians(lon2 - lon1)
    h = math.sin(dp / 2) ** 2 + math.cos(p1) * math.cos(p2) * math.sin(dl / 2) ** 2
    km = 2 * EARTH_RADIUS_KM * math.asin(min(1.0, math.sqrt(h)))
    factor = {"km": 1.0, "mi": 1 / 1.609344, "nmi": 1 / 1.852}[unit]
    y = math.sin(dl) * math.cos(p2)
    x = math.cos(p1) * math.sin(p2) - math.sin(p1) * math.cos(p2) * math.cos(dl)
    bearing = (math.degrees(math.atan2(y, x)) + 360) % 360
    return {"distance": round(km * factor, 3), "initial_bearing_degrees": round(bearing, 1)}


TOOLS: list[BaseTool] = pack(shape_area, solid_volume, great_circle_distance)
