"""Tests for the finance pack."""

import pytest

from tools.finance import (
    break_even_point,
    cagr,
    compound_interest,
    internal_rate_of_return,
    loan_payment,
    net_present_value,
    present_value,
    price_after_discount_and_tax,
    profit_margin,
    split_bill,
)


def test_compound_interest() -> None:
    yearly = compound_interest.invoke(
        {"principal": 1000, "annual_rate_percent": 5, "years": 10, "compounds_per_year": 1}
    )
    assert yearly == {"future_value": 1628.89, "total_contributed": 1000.0, "interest_earned": 628.89}
    savings = compound_interest.invoke(
        {"principal": 0, "annual_rate_percent": 0, "years": 1, "monthly_contribution": 100}
    )
    assert savings["future_value"] == 1200.0
    with pytest.raises(ValueError, match="principal must be zero or positive"):
        compound_interest.invoke({"principal": -1, "annual_rate_percent": 5, "years": 1})


def test_loan_payment() -> None:
    mortgage = loan_payment.invoke({"principal": 200000, "annual_rate_percent": 6, "years": 30})
    assert mortgage["monthly_payment"] == 1199.1
    assert mortgage["number_of_payments"] == 360
    assert mortgage["total_interest"] == pytest.approx(231676.38, abs=0.01)
    interest_free = loan_payment.invoke({"principal": 1200, "annual_rate_percent": 0, "years": 1})
    assert interest_free["monthly_payment"] == 100.0
    with pytest.raises(ValueError, match="years"):
        loan_payment.invoke({"principal": 1000, "annual_rate_percent": 5, "years": 0})


def test_present_value() -> None:
    assert (
        present_value.invoke({"future_amount": 1100, "annual_discount_rate_percent": 10, "years": 1})
        == 1000.0
    )
    assert (
        present_value.invoke({"future_amount": 1000, "annual_discount_rate_percent": 0, "years": 5}) == 1000.0
    )


def test_net_present_value() -> None:
    npv = net_present_value.invoke({"rate_percent": 10, "cash_flows": [-1000, 500, 500, 500]})
    assert npv == 243.43
    with pytest.raises(ValueError, match="between 2 and 1000"):
        net_present_value.invoke({"rate_percent": 10, "cash_flows": [100]})


def test_internal_rate_of_return() -> None:
    assert internal_rate_of_return.invoke({"cash_flows": [-100, 110]}) == pytest.approx(10.0, abs=1e-4)
    assert internal_rate_of_return.invoke({"cash_flows": [-1000, 500, 500, 500]}) == pytest.approx(
        23.3752, abs=1e-3
    )
    with pytest.raises(ValueError, match="negative and one positive"):
        internal_rate_of_return.invoke({"cash_flows": [100, 200]})


def test_split_bill() -> None:
    assert split_bill.invoke({"bill_total": 120, "people": 4, "tip_percent": 15}) == {
        "tip": 18.0,
        "total": 138.0,
        "per_person": 34.5,
    }
    with pytest.raises(ValueError, match="people"):
        split_bill.invoke({"bill_total": 10, "people": 0})


def test_price_after_discount_and_tax() -> None:
    result = price_after_discount_and_tax.invoke(
        {"list_price": 80, "discount_percent": 25, "tax_percent": 10}
    )
    assert result == {
        "discount_amount": 20.0,
        "price_after_discount": 60.0,
        "tax_amount": 6.0,
        "final_price": 66.0,
    }
    with pytest.raises(ValueError, match="discount_percent"):
        price_after_discount_and_tax.invoke({"list_price": 80, "discount_percent": 120})


def test_break_even_point() -> None:
    result = break_even_point.invoke(
        {"fixed_costs": 10000, "price_per_unit": 50, "variable_cost_per_unit": 30}
    )
    assert result == {
        "break_even_units": 500,
        "break_even_revenue": 25000.0,
        "contribution_margin_per_unit": 20.0,
    }
    rounded_up = break_even_point.invoke(
        {"fixed_costs": 100, "price_per_unit": 7, "variable_cost_per_unit": 4}
    )
    assert rounded_up["break_even_units"] == 34
    with pytest.raises(ValueError, match="must exceed"):
        break_even_point.invoke({"fixed_costs": 100, "price_per_unit": 4, "variable_cost_per_unit": 4})


def test_profit_margin() -> None:
    assert profit_margin.invoke({"cost": 60, "selling_price": 100}) == {
        "profit": 40.0,
        "margin_percent": 40.0,
        "markup_percent": 66.6667,
    }
    assert profit_margin.invoke({"cost": 0, "selling_price": 10})["markup_percent"] is None


def test_cagr() -> None:
    assert cagr.invoke({"start_value": 100, "end_value": 200, "years": 5}) == pytest.approx(14.8698)
    assert cagr.invoke({"start_value": 100, "end_value": 121, "years": 2}) == pytest.approx(10.0)
    with pytest.raises(ValueError, match="start_value must be greater than 0"):
        cagr.invoke({"start_value": 0, "end_value": 5, "years": 1})
