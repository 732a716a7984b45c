"""Tests for the statistics pack."""

import pytest

from tools.stats import linear_regression, moving_average, percentile, summary_statistics, weighted_average


def test_summary_statistics() -> None:
    result = summary_statistics.invoke({"numbers": [2, 4, 4, 4, 5, 5, 7, 9]})
    assert result["count"] == 8
    assert result["sum"] == 40.0
    assert result["mean"] == 5.0
    assert result["median"] == 4.5
    assert result["modes"] == [4.0]
    assert (result["min"], result["max"], result["range"]) == (2.0, 9.0, 7.0)
    assert result["stdev_population"] == 2.0
    assert result["variance_population"] == 4.0
    assert result["stdev_sample"] == pytest.approx(2.1380899353)


def test_summary_statistics_single_value_and_empty() -> None:
    single = summary_statistics.invoke({"numbers": [3]})
    assert single["stdev_sample"] is None
    assert single["mean"] == 3.0
    with pytest.raises(ValueError, match="non-empty"):
        summary_statistics.invoke({"numbers": []})


def test_percentile() -> None:
    data = [15, 20, 35, 40, 50]
    assert percentile.invoke({"numbers": data, "percent": 50}) == 35.0
    assert percentile.invoke({"numbers": data, "percent": 0}) == 15.0
    assert percentile.invoke({"numbers": data, "percent": 100}) == 50.0
    assert percentile.invoke({"numbers": data, "percent": 40}) == 29.0
    with pytest.raises(ValueError, match="between 0 and 100"):
        percentile.invoke({"numbers": data, "percent": 101})


def test_linear_regression() -> None:
    fit = linear_regression.invoke({"x_values": [1, 2, 3, 4], "y_values": [3, 5, 7, 9], "predict_x": 10})
    assert fit == {"slope": 2.0, "intercept": 1.0, "r": 1.0, "r_squared": 1.0, "prediction": 21.0}
    noisy = linear_regression.invoke({"x_values": [1, 2, 3], "y_values": [1, 3, 2]})
    assert noisy["slope"] == 0.5
    assert noisy["r"] == pytest.approx(0.5)
    assert noisy["prediction"] is None
    with pytest.raises(ValueError, match="must match"):
        linear_regression.invoke({"x_values": [1, 2], "y_values": [1]})
    with pytest.raises(ValueError, match="identical"):
        linear_regression.invoke({"x_values": [2, 2], "y_values": [1, 3]})


def test_weighted_average() -> None:
    assert weighted_average.invoke({"values": [90, 80, 70], "weights": [3, 2, 1]}) == pytest.approx(
        83.3333333
    )
    assert weighted_average.invoke({"values": [4.0, 3.0], "weights": [1, 1]}) == 3.5
    with pytest.raises(ValueError, match="sum to 0"):
        weighted_average.invoke({"values": [1, 2], "weights": [0, 0]})
    with pytest.raises(ValueError, match="non-negative"):
        weighted_average.invoke({"values": [1, 2], "weights": [1, -1]})


def test_moving_average() -> None:
    assert moving_average.invoke({"numbers": [1, 2, 3, 4, 5], "window": 3}) == [2.0, 3.0, 4.0]
    ema = moving_average.invoke({"numbers": [1, 2, 3, 4, 5], "window": 3, "kind": "exponential"})
    assert ema == [1.0, 1.5, 2.25, 3.125, 4.0625]
    with pytest.raises(ValueError, match="window must be between 1 and 2"):
        moving_average.invoke({"numbers": [1, 2], "window": 3})
