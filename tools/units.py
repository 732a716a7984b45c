"""Units pack: one converter per physical dimension, with the accepted units spelled out as enums."""

from __future__ import annotations

from typing import Annotated, Literal

from langchain_core.tools import BaseTool, tool

from tools._common import clean_number, pack, require_finite


def _convert(value: float, from_unit: str, to_unit: str, factors: dict[str, float]) -> float:
    """Convert through the base unit: `factors` maps each unit to its size in the base unit."""
    require_finite("value", value)
    for label, unit in (("from_unit", from_unit), ("to_unit", to_unit)):
        if unit not in factors:
            raise ValueError(f"{label} {unit!r} is not supported; expected one of {sorted(factors)}")
    return clean_number(value * factors[from_unit] / factors[to_unit])


LengthUnit = Literal["mm", "cm", "m", "km", "in", "ft", "yd", "mi", "nmi"]
_LENGTH = {
    "mm": 0.001, "cm": 0.01, "m": 1.0, "km": 1000.0, "in": 0.0254, "ft": 0.3048,
    "yd": 0.9144, "mi": 1609.344, "nmi": 1852.0,
}  # fmt: skip


@tool
def convert_length(
    value: Annotated[float, "The distance to convert"],
    from_unit: Annotated[LengthUnit, "Unit of the value: mm, cm, m, km, in, ft, yd, mi (mile), nmi"],
    to_unit: Annotated[LengthUnit, "Unit to convert into"],
) -> float:
    """Convert a length, distance or height between metric and imperial units: millimetres, centimetres,
    metres, kilometres, inches, feet, yards, miles and nautical miles. Returns the converted number.

    Example: "a 5.5 inch phone screen in millimetres" -> convert_length(value=5.5, from_unit="in",
    to_unit="mm")
    """
    return _convert(value, from_unit, to_unit, _LENGTH)


MassUnit = Literal["mg", "g", "kg", "t", "oz", "lb", "st"]
_MASS = {
    "mg": 1e-6, "g": 0.001, "kg": 1.0, "t": 1000.0, "oz": 0.028349523125, "lb": 0.45359237, "st": 6.35029318,
}  # fmt: skip


@tool
def convert_mass(
    value: Annotated[float, "The weight to convert"],
    from_unit: Annotated[MassUnit, "Unit of the value: mg, g, kg, t (metric tonne), oz, lb (pound), st"],
    to_unit: Annotated[MassUnit, "Unit to convert into"],
) -> float:
    """Convert a weight or mass between milligrams, grams, kilograms (kilos), metric tonnes, ounces, pounds
    and stone. Returns the converted number.

    Example: "my suitcase may weigh 23 kg; what is that in lb?" -> convert_mass(value=23, from_unit="kg",
    to_unit="lb")
    """
    return _convert(value, from_unit, to_unit, _MASS)


TemperatureUnit = Literal["C", "F", "K"]


@tool
def convert_temperature(
    value: Annotated[float, "The temperature reading"],
    from_unit: Annotated[TemperatureUnit, "Scale of the value: C (Celsius), F (Fahrenheit) or K (Kelvin)"],
    to_unit: Annotated[TemperatureUnit, "Scale to convert into: C, F or K"],
) -> float:
    """Convert a temperature between degrees Celsius (centigrade), Fahrenheit and Kelvin. Returns the
    converted reading; a value below absolute zero is refused.

    Example: "the pool is at 301 kelvin, in Celsius?" -> convert_temperature(value=301, from_unit="K",
    to_unit="C")
    """
    require_finite("value", value)
    to_kelvin = {"C": lambda v: v + 273.15, "F": lambda v: (v - 32) * 5 / 9 + 273.15, "K": lambda v: v}
    from_kelvin = {"C": lambda k: k - 273.15, "F": lambda k: (k - 273.15) * 9 / 5 + 32, "K": lambda k: k}
    if from_unit not in to_kelvin or to_unit not in from_kelvin:
        raise ValueError(f"units must be 'C', 'F' or 'K', got {from_unit!r} -> {to_unit!r}")
    kelvin = to_kelvin[from_unit](value)
    if kelvin < -1e-9:
        raise ValueError(f"{value} {from_unit} is below absolute zero")
    return clean_number(from_kelvin[to_unit](kelvin), 10)


VolumeUnit = Literal["ml", "l", "m3", "tsp", "tbsp", "cup", "fl_oz", "pint", "quart", "gallon", "uk_gallon"]
_VOLUME = {
    "ml": 1e-3, "l": 1.0, "m3": 1000.0, "tsp": 0.00492892159375, "tbsp": 0.01478676478125,
    "cup": 0.2365882365, "fl_oz": 0.0295735295625, "pint": 0.473176473, "quart": 0.946352946,
    "gallon": 3.785411784, "uk_gallon": 4.54609,
}  # fmt: skip


@tool
def convert_volume(
    value: Annotated[float, "The volume or capacity to convert"],
    from_unit: Annotated[VolumeUnit, "Unit of the value; cup, fl_oz, pint, quart and gallon are US measures"],
    to_unit: Annotated[VolumeUnit, "Unit to convert into"],
) -> float:
    """Convert a liquid volume or capacity between millilitres, litres (liters), cubic metres, teaspoons,
    tablespoons, cups, fluid ounces, pints, quarts and gallons (US, or UK gallons). Returns the converted
    number.

    Example: "how many millilitres are 2 tablespoons?" -> convert_volume(value=2, from_unit="tbsp",
    to_unit="ml")
    """
    return _convert(value, from_unit, to_unit, _VOLUME)


SpeedUnit = Literal["m/s", "km/h", "mph", "knot", "ft/s"]
_SPEED = {"m/s": 1.0, "km/h": 1 / 3.6, "mph": 0.44704, "knot": 1852 / 3600, "ft/s": 0.3048}


@tool
def convert_speed(
    value: Annotated[float, "The speed or velocity to convert"],
    from_unit: Annotated[SpeedUnit, "Unit of the value: m/s, km/h, mph, knot or ft/s"],
    to_unit: Annotated[SpeedUnit, "Unit to convert into"],
) -> float:
    """Convert a speed between metres per second, kilometres per hour (km/h), miles per hour (mph), knots and
    feet per second. Returns the converted number.

    Example: "a boat at 18 knots goes how many mph?" -> convert_speed(value=18, from_unit="knot",
    to_unit="mph")
    """
    return _convert(value, from_unit, to_unit, _SPEED)


DataUnit = Literal["bit", "B", "KB", "MB", "GB", "TB", "PB", "KiB", "MiB", "GiB", "TiB"]
_DATA = {
    "bit": 0.125, "B": 1.0, "KB": 1e3, "MB": 1e6, "GB": 1e9, "TB": 1e12, "PB": 1e15,
    "KiB": 1024.0, "MiB": 1024.0**2, "GiB": 1024.0**3, "TiB": 1024.0**4,
}  # fmt: skip


@tool
def convert_data_size(
    value: Annotated[float, "The amount of digital storage or file size"],
    from_unit: Annotated[DataUnit, "Unit of the value; KB/MB/GB are powers of 1000, KiB/MiB/GiB of 1024"],
    to_unit: Annotated[DataUnit, "Unit to convert into"],
) -> float:
    """Convert a file or storage size between bits, bytes, KB, MB, GB, TB and PB (powers of 1000) and KiB,
    MiB, GiB and TiB (powers of 1024). Returns the converted number.

    Example: "a 750 MiB video, in megabytes as the website counts them" -> convert_data_size(value=750,
    from_unit="MiB", to_unit="MB")
    """
    return _convert(value, from_unit, to_unit, _DATA)


DurationUnit = Literal["ms", "s", "min", "h", "day", "week", "year"]
_DURATION = {
    "ms": 0.001, "s": 1.0, "min": 60.0, "h": 3600.0, "day": 86400.0, "week": 604800.0, "year": 31557600.0,
}  # fmt: skip


@tool
def convert_time_duration(
    value: Annotated[float, "The length of time to convert"],
    from_unit: Annotated[DurationUnit, "Unit of the value: ms, s, min, h, day, week or year (365.25 days)"],
    to_unit: Annotated[DurationUnit, "Unit to convert into"],
) -> float:
    """Convert an amount of time between milliseconds, seconds, minutes, hours, days, weeks and years, e.g.
    how many seconds are in a day. Returns the converted number.

    Example: "a 9-week course lasts how many days?" -> convert_time_duration(value=9, from_unit="week",
    to_unit="day")
    """
    return _convert(value, from_unit, to_unit, _DURATION)


AreaUnit = Literal["mm2", "cm2", "m2", "km2", "hectare", "sq_in", "sq_ft", "sq_yd", "acre", "sq_mi"]
_AREA = {
    "mm2": 1e-6, "cm2": 1e-4, "m2": 1.0, "km2": 1e6, "hectare": 1e4, "sq_in": 0.00064516,
    "sq_ft": 0.09290304, "sq_yd": 0.83612736, "acre": 4046.8564224, "sq_mi": 2589988.110336,
}  # fmt: skip


@tool
def convert_area(
    value: Annotated[float, "The surface area to convert"],
    from_unit: Annotated[AreaUnit, "Unit of the value, e.g. m2, hectare, sq_ft, acre"],
    to_unit: Annotated[AreaUnit, "Unit to convert into"],
) -> float:
    """Convert an area of land or floor between square millimetres, centimetres, metres and kilometres,
    hectares, square inches, feet and yards, acres and square miles. Returns the converted number.

    Example: "a 0.6 acre plot in square metres" -> convert_area(value=0.6, from_unit="acre", to_unit="m2")
    """
    return _convert(value, from_unit, to_unit, _AREA)


PressureUnit = Literal["Pa", "kPa", "bar", "atm", "psi", "mmHg"]
_PRESSURE = {
    "Pa": 1.0, "kPa": 1000.0, "bar": 1e5, "atm": 101325.0, "psi": 6894.757293168, "mmHg": 133.322387415,
}  # fmt: skip


@tool
def convert_pressure(
    value: Annotated[float, "The pressure to convert"],
    from_unit: Annotated[PressureUnit, "Unit of the value: Pa, kPa, bar, atm, psi or mmHg"],
    to_unit: Annotated[PressureUnit, "Unit to convert into"],
) -> float:
    """Convert a pressure (tyre, weather or blood pressure) between pascals, kilopascals, bar, atmospheres,
    psi and millimetres of mercury (mmHg). Returns the converted number.

    Example: "a diving tank at 200 bar in atmospheres" -> convert_pressure(value=200, from_unit="bar",
    to_unit="atm")
    """
    return _convert(value, from_unit, to_unit, _PRESSURE)


EnergyUnit = Literal["J", "kJ", "cal", "kcal", "Wh", "kWh", "BTU"]
_ENERGY = {
    "J": 1.0, "kJ": 1000.0, "cal": 4.184, "kcal": 4184.0, "Wh": 3600.0, "kWh": 3.6e6, "BTU": 1055.05585262,
}  # fmt: skip


@tool
def convert_energy(
    value: Annotated[float, "The amount of energy to convert"],
    from_unit: Annotated[EnergyUnit, "Unit of the value: J, kJ, cal, kcal (food Calorie), Wh, kWh or BTU"],
    to_unit: Annotated[EnergyUnit, "Unit to convert into"],
) -> float:
    """Convert energy between joules, kilojoules, calories, kilocalories (food Calories, kcal), watt-hours,
    kilowatt-hours (kWh) and British thermal units (BTU). Returns the converted number.

    Example: "the heater used 3.2 kWh; in kilojoules?" -> convert_energy(value=3.2, from_unit="kWh",
    to_unit="kJ")
    """
    return _convert(value, from_unit, to_unit, _ENERGY)


TOOLS: list[BaseTool] = pack(
    convert_length,
    convert_mass,
    convert_temperature,
    convert_volume,
    convert_speed,
    convert_data_size,
    convert_time_duration,
    convert_area,
    convert_pressure,
    convert_energy,
)
