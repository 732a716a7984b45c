"""Tests for the geometry pack."""

import math

import pytest

from tools.geometry import great_circle_distance, shape_area, solid_volume


def test_shape_area() -> None:
    circle = shape_area.invoke({"shape": "circle", "dimensions": {"radius": 2}})
    assert circle["area"] == pytest.approx(4 * math.pi)
    assert circle["perimeter"] == pytest.approx(4 * math.pi)
    assert shape_area.invoke({"shape": "triangle", "dimensions": {"a": 3, "b": 4, "c": 5}}) == {
        "area": 6.0,
        "perimeter": 12.0,
    }
    assert shape_area.invoke({"shape": "rectangle", "dimensions": {"width": 3, "height": 4}}) == {
        "area": 12.0,
        "perimeter": 14.0,
    }
    assert (
        shape_area.invoke({"shape": "right_triangle", "dimensions": {"base": 3, "height": 4}})["perimeter"]
        == 12.0
    )
    trapezoid = shape_area.invoke({"shape": "trapezoid", "dimensions": {"base1": 3, "base2": 5, "height": 2}})
    assert trapezoid == {"area": 8.0, "perimeter": None}
    circle_as_ellipse = shape_area.invoke(
        {"shape": "ellipse", "dimensions": {"semi_major": 3, "semi_minor": 3}}
    )
    assert circle_as_ellipse["perimeter"] == pytest.approx(6 * math.pi)


def test_shape_area_validation() -> None:
    with pytest.raises(ValueError, match="cannot form a triangle"):
        shape_area.invoke({"shape": "triangle", "dimensions": {"a": 1, "b": 1, "c": 3}})
    with pytest.raises(ValueError, match="missing \\['height'\\]"):
        shape_area.invoke({"shape": "rectangle", "dimensions": {"width": 1}})
    with pytest.raises(ValueError, match="greater than 0"):
        shape_area.invoke({"shape": "square", "dimensions": {"side": -2}})


def test_solid_volume() -> None:
    assert solid_volume.invoke({"shape": "box", "dimensions": {"length": 2, "width": 3, "height": 4}}) == {
        "volume": 24.0,
        "surface_area": 52.0,
    }
    cylinder = solid_volume.invoke({"shape": "cylinder", "dimensions": {"radius": 1, "height": 2}})
    assert cylinder["volume"] == pytest.approx(2 * math.pi)
    sphere = solid_volume.invoke({"shape": "sphere", "dimensions": {"radius": 3}})
    assert sphere["volume"] == pytest.approx(36 * math.pi)
    pyramid = solid_volume.invoke({"shape": "pyramid", "dimensions": {"base_side": 6, "height": 4}})
    assert pyramid == {"volume": 48.0, "surface_area": 96.0}
    cone = solid_volume.invoke({"shape": "cone", "dimensions": {"radius": 3, "height": 4}})
    assert cone["surface_area"] == pytest.approx(24 * math.pi)


def test_great_circle_distance() -> None:
    london_paris = great_circle_distance.invoke(
        {"lat1": 51.5074, "lon1": -0.1278, "lat2": 48.8566, "lon2": 2.3522}
    )
    assert london_paris["distance"] == pytest.approx(343.56, abs=0.05)
    assert london_paris["initial_bearing_degrees"] == 148.1
    one_degree = great_circle_distance.invoke({"lat1": 0, "lon1": 0, "lat2": 0, "lon2": 1, "unit": "nmi"})
    assert one_degree == {"distance": pytest.approx(60.04, abs=0.01), "initial_bearing_degrees": 90.0}
    with pytest.raises(ValueError, match="lat1 must be between -90 and 90"):
        great_circle_distance.invoke({"lat1": 91, "lon1": 0, "lat2": 0, "lon2": 0})
