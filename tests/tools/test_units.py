"""Tests for the unit conversion pack."""

import pytest
from langchain_core.tools import BaseTool

from tools.units import (
    convert_area,
    convert_data_size,
    convert_energy,
    convert_length,
    convert_mass,
    convert_pressure,
    convert_speed,
    convert_temperature,
    convert_time_duration,
    convert_volume,
)


def _c(tool_obj: BaseTool, value: float, from_unit: str, to_unit: str) -> float:
    result: float = tool_obj.invoke({"value": value, "from_unit": from_unit, "to_unit": to_unit})
    return result


def test_convert_length() -> None:
    assert _c(convert_length, 1, "mi", "km") == 1.609344
    assert _c(convert_length, 12, "in", "ft") == 1.0
    assert _c(convert_length, 1, "nmi", "m") == 1852.0


def test_convert_mass() -> None:
    assert _c(convert_mass, 1, "st", "lb") == 14.0
    assert _c(convert_mass, 1, "kg", "lb") == pytest.approx(2.20462262185)
    assert _c(convert_mass, 16, "oz", "lb") == 1.0


def test_convert_temperature() -> None:
    assert _c(convert_temperature, 100, "C", "F") == 212.0
    assert _c(convert_temperature, -40, "C", "F") == -40.0
    assert _c(convert_temperature, 98.6, "F", "C") == 37.0
    assert _c(convert_temperature, 0, "K", "C") == -273.15
    with pytest.raises(ValueError, match="below absolute zero"):
        _c(convert_temperature, -300, "C", "K")


def test_convert_volume() -> None:
    assert _c(convert_volume, 1, "gallon", "cup") == 16.0
    assert _c(convert_volume, 3, "tsp", "tbsp") == 1.0
    assert _c(convert_volume, 1, "l", "ml") == 1000.0


def test_convert_speed() -> None:
    assert _c(convert_speed, 36, "km/h", "m/s") == 10.0
    assert _c(convert_speed, 100, "km/h", "mph") == pytest.approx(62.1371192237)
    assert _c(convert_speed, 1, "knot", "km/h") == 1.852


def test_convert_data_size() -> None:
    assert _c(convert_data_size, 1, "GiB", "MB") == 1073.741824
    assert _c(convert_data_size, 8, "bit", "B") == 1.0
    assert _c(convert_data_size, 1, "TB", "GB") == 1000.0


def test_convert_time_duration() -> None:
    assert _c(convert_time_duration, 90, "min", "h") == 1.5
    assert _c(convert_time_duration, 2, "week", "day") == 14.0
    assert _c(convert_time_duration, 1, "day", "s") == 86400.0


def test_convert_area() -> None:
    assert _c(convert_area, 1, "acre", "sq_ft") == 43560.0
    assert _c(convert_area, 1, "hectare", "m2") == 10000.0
    assert _c(convert_area, 1, "km2", "hectare") == 100.0


def test_convert_pressure() -> None:
    assert _c(convert_pressure, 1, "atm", "psi") == pytest.approx(14.6959487755)
    assert _c(convert_pressure, 1, "bar", "kPa") == 100.0


def test_convert_energy() -> None:
    assert _c(convert_energy, 1, "kcal", "kJ") == 4.184
    assert _c(convert_energy, 1, "kWh", "J") == 3.6e6


def test_unknown_unit_is_rejected_with_the_allowed_values() -> None:
    with pytest.raises(ValueError, match="'mg', 'g', 'kg'"):
        _c(convert_mass, 1, "stone", "lb")
