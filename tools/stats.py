"""Statistics pack: descriptive statistics, percentiles, regression and averages over number lists."""

from __future__ import annotations

import math
import statistics
from typing import Annotated, Literal

from langchain_core.tools import BaseTool, tool

from tools._common import clean_number, pack, require_finite, require_nonempty

MAX_VALUES = 100_000


def _check_list(name: str, values: list[float]) -> list[float]:
    if len(values) > MAX_VALUES:
        raise ValueError(f"{name} holds {len(values)} values; the limit is {MAX_VALUES}")
    return require_nonempty(name, values)


@tool
def summary_statistics(
    numbers: Annotated[list[float], "The data values, e.g. [2, 4, 4, 5, 7]"],
) -> dict[str, float | int | list[float] | None]:
    """Statistics of a list of numbers: the average (mean), median, mode, sum, count, min, max, range,
    standard deviation and variance. Returns each by name; the average is 'mean', not 'sum'.

    Example: "my last runs took 31, 28, 35, 30 and 33 minutes; typical time and spread?" ->
    summary_statistics(numbers=[31, 28, 35, 30, 33])
    """
    data = _check_list("numbers", numbers)
    try:
        return _summary(data)
    except OverflowError:  # the squares of the deviations: statistics' exact arithmetic can't make a float
        raise ValueError("numbers are too large: their variance overflows a float; scale them down") from None


def _summary(data: list[float]) -> dict[str, float | int | list[float] | None]:
    n = len(data)
    sample_sd = statistics.stdev(data) if n > 1 else None
    return {
        "count": n,
        "sum": clean_number(math.fsum(data)),
        "mean": clean_number(statistics.fmean(data)),
        "median": clean_number(statistics.median(data)),
        "modes": [clean_number(m) for m in statistics.multimode(data)],
        "min": min(data),
        "max": max(data),
        "range": clean_number(max(data) - min(data)),
        "stdev_sample": None if sample_sd is None else clean_number(sample_sd),
        "variance_sample": None if sample_sd is None else clean_number(statistics.variance(data)),
        "stdev_population": clean_number(statistics.pstdev(data)),
        "variance_population": clean_number(statistics.pvariance(data)),
    }


@tool
def percentile(
    numbers: Annotated[list[float], "The data values"],
    percent: Annotated[float, "Percent from 0 to 100, not a fraction: 50 is the median, 90 the P90"],
) -> float:
    """Percentile or quartile of a list of numbers: the value a given percent of the data falls below, like
    the 90th percentile (P90) or the upper quartile. Returns that value, interpolated between ranks.

    Example: "which value do 75% of these page loads stay under: 0.8, 1.2, 0.9, 2.4, 1.1, 1.6?" ->
    percentile(numbers=[0.8, 1.2, 0.9, 2.4, 1.1, 1.6], percent=75)
    """
    data = sorted(_check_list("numbers", numbers))
    require_finite("percent", percent)
    if not 0 <= percent <= 100:
        raise ValueError(f"percent must be between 0 and 100, got {percent}")
    pos = (len(data) - 1) * percent / 100
    lo = math.floor(pos)
    hi = min(lo + 1, len(data) - 1)
    return clean_number(data[lo] + (data[hi] - data[lo]) * (pos - lo))


@tool
def linear_regression(
    x_values: Annotated[list[float], "Independent variable values"],
    y_values: Annotated[list[float], "Dependent variable values, same length as x_values"],
    predict_x: Annotated[float | None, "Optional x at which to predict y with the fitted line"] = None,
) -> dict[str, float | None]:
    """Fit a straight trend line (least-squares linear regression, y = slope*x + intercept) to pairs of x and
    y values, and optionally predict y at a new x. Returns slope, intercept, correlation r, R squared and the
    prediction.

    Example: "fit a line to x 1, 2, 3, 4 and y 2, 4, 5, 8, and predict y at x = 5" ->
    linear_regression(x_values=[1, 2, 3, 4], y_values=[2, 4, 5, 8], predict_x=5)
    """
    xs = _check_list("x_values", x_values)
    ys = _check_list("y_values", y_values)
    if len(xs) != len(ys):
        raise ValueError(f"x_values has {len(xs)} items but y_values has {len(ys)}; they must match")
    if len(xs) < 2:
        raise ValueError("at least two (x, y) points are needed to fit a line")
    if len(set(xs)) == 1:
        raise ValueError("x_values are all identical, so the slope is undefined")
    try:
        slope, intercept = statistics.linear_regression(xs, ys)
        r = statistics.correlation(xs, ys) if len(set(ys)) > 1 else 0.0
    except OverflowError:
        raise ValueError(
            "the values are too large: their squares overflow a float; scale them down"
        ) from None
    prediction = None if predict_x is None else clean_number(slope * predict_x + intercept)
    return {
        "slope": clean_number(slope),
        "intercept": clean_number(intercept),
        "r": clean_number(r),
        "r_squared": clean_number(r * r),
        "prediction": prediction,
    }


@tool
def weighted_average(
    values: Annotated[list[float], "The values to average, e.g. grades [90, 80, 70]"],
    weights: Annotated[list[float], "Non-negative weight of each value, e.g. credits [3, 2, 1]"],
) -> float:
    """Weighted average of values that count differently, like a GPA from grades and credits or a final mark
    from exam weights. Returns sum(value*weight)/sum(weight).

    Example: "my grades are 90, 80 and 70 for courses of 3, 2 and 1 credits; what's my weighted average?" ->
    weighted_average(values=[90, 80, 70], weights=[3, 2, 1])
    """
    vals = _check_list("values", values)
    ws = _check_list("weights", weights)
    if len(vals) != len(ws):
        raise ValueError(f"values has {len(vals)} items but weights has {len(ws)}; they must match")
    if any(w < 0 for w in ws):
        raise ValueError(f"weights must be non-negative, got {ws}")
    total = math.fsum(ws)
    if total == 0:
        raise ValueError("weights sum to 0, so the weighted average is undefined")
    return clean_number(math.fsum(v * w for v, w in zip(vals, ws, strict=True)) / total)


@tool
def moving_average(
    numbers: Annotated[list[float], "Time series values in order, e.g. daily sales"],
    window: Annotated[int, "Number of points in each window (>= 1 and <= the series length)"],
    kind: Annotated[
        Literal["simple", "exponential"],
        "simple: rolling mean over the window; exponential: EMA with alpha = 2/(window+1)",
    ] = "simple",
) -> list[float]:
    """Rolling (moving) average of a series over a window of points, simple (SMA) or exponential (EMA), to
    smooth daily or monthly figures. Returns the smoothed series as a list of numbers.

    Example: "3-day moving average of the sales 31, 35, 28, 42 and 37" -> moving_average(numbers=[31, 35, 28,
    42, 37], window=3)
    """
    data = _check_list("numbers", numbers)
    if not 1 <= window <= len(data):
        raise ValueError(f"window must be between 1 and {len(data)} (the series length), got {window}")
    if kind == "exponential":
        alpha = 2 / (window + 1)
        out = [data[0]]
        for v in data[1:]:
            out.append(alpha * v + (1 - alpha) * out[-1])
        return [clean_number(v) for v in out]
    running = math.fsum(data[:window])
    result = [running / window]
    for i in range(window, len(data)):
        running += data[i] - data[i - window]
        result.append(running / window)
    return [clean_number(v) for v in result]


TOOLS: list[BaseTool] = pack(
    summary_statistics,
    percentile,
    linear_regression,
    weighted_average,
    moving_average,
)
