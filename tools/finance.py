"""Finance pack: interest, loans, discounting, cash flows, pricing and bill splitting."""

from __future__ import annotations

import math
from typing import Annotated

from langchain_core.tools import BaseTool, tool

from tools._common import clean_number, pack, require_finite

_FLOWS_DOC = "Cash flow per period starting at period 0, e.g. [-1000, 300, 400, 500]"


def _money(value: float) -> float:
    return round(clean_number(value), 2) + 0.0


def _non_negative(name: str, value: float) -> float:
    require_finite(name, value)
    if value < 0:
        raise ValueError(f"{name} must be zero or positive, got {value}")
    return value


def _rate(name: str, percent: float) -> float:
    require_finite(name, percent)
    if not -100 < percent <= 1000:
        raise ValueError(f"{name} must be a percentage between -100 and 1000, got {percent}")
    return percent / 100


@tool
def compound_interest(
    principal: Annotated[float, "Starting amount invested or saved"],
    annual_rate_percent: Annotated[float, "Nominal yearly interest rate in percent, e.g. 5 for 5%"],
    years: Annotated[float, "Investment period in years (may be fractional)"],
    compounds_per_year: Annotated[int, "Compounding periods per year: 1 yearly, 12 monthly, 365 daily"] = 12,
    monthly_contribution: Annotated[float, "Amount added at the end of every month (default 0)"] = 0.0,
) -> dict[str, float]:
    """Savings or investment growth with compound interest: what a deposit grows to after some years at a
    yearly rate, compounded monthly, yearly or daily, with optional monthly additions. Returns the final
    balance, the total paid in and the interest earned.

    Example: "3,000 left in a deposit at 2.5% compounded quarterly for 6 years grows to?" ->
    compound_interest(principal=3000, annual_rate_percent=2.5, years=6, compounds_per_year=4)
    """
    _non_negative("principal", principal)
    _non_negative("years", years)
    _non_negative("monthly_contribution", monthly_contribution)
    rate = _rate("annual_rate_percent", annual_rate_percent)
    if not 1 <= compounds_per_year <= 366:
        raise ValueError(f"compounds_per_year must be between 1 and 366, got {compounds_per_year}")
    if years > 200:
        raise ValueError(f"years must be at most 200, got {years}")
    growth = (1 + rate / compounds_per_year) ** (compounds_per_year * years)
    balance = principal * growth
    months = round(years * 12)
    if monthly_contribution:
        monthly_factor = (1 + rate / compounds_per_year) ** (compounds_per_year / 12)
        balance += sum(monthly_contribution * monthly_factor ** (months - m) for m in range(1, months + 1))
    contributed = principal + monthly_contribution * months
    return {
        "future_value": _money(balance),
        "total_contributed": _money(contributed),
        "interest_earned": _money(balance - contributed),
    }


@tool
def loan_payment(
    principal: Annotated[float, "Amount borrowed, e.g. 250000 for a mortgage"],
    annual_rate_percent: Annotated[float, "Yearly interest rate in percent (APR), e.g. 4.5"],
    years: Annotated[float, "Loan term in years, e.g. 30"],
) -> dict[str, float]:
    """Monthly payment of a loan or mortgage repaid in equal instalments, from the amount borrowed, the yearly
    interest rate and the term in years. Returns the monthly payment, total repaid and total interest.

    Example: "mortgage 310k, 30 years, 3.8% interest: what is paid per month?" ->
    loan_payment(principal=310000, annual_rate_percent=3.8, years=30)
    """
    if _non_negative("principal", principal) == 0:
        raise ValueError("principal must be greater than 0")
    rate = _rate("annual_rate_percent", annual_rate_percent)
    if not 0 < years <= 100:
        raise ValueError(f"years must be greater than 0 and at most 100, got {years}")
    n = round(years * 12)
    if n < 1:
        raise ValueError(f"years={years} gives less than one monthly payment")
    monthly_rate = rate / 12
    if monthly_rate == 0:
        payment = principal / n
    else:  # 1 - (1+r)**-n without cancellation: a rate of 1e-12 % gave 0 (a division by zero) or noise
        payment = principal * monthly_rate / -math.expm1(-n * math.log1p(monthly_rate))
    return {
        "monthly_payment": _money(payment),
        "number_of_payments": n,
        "total_paid": _money(payment * n),
        "total_interest": _money(payment * n - principal),
    }


@tool
def present_value(
    future_amount: Annotated[float, "Amount to be received in the future"],
    annual_discount_rate_percent: Annotated[float, "Discount (or inflation) rate per year in percent"],
    years: Annotated[float, "Years until the amount is received"],
) -> float:
    """What an amount of money paid in the future is worth today (present value), discounted at a yearly
    interest, discount or inflation rate. Returns the present value.

    Example: "a bond pays 2,500 in 8 years; discounted at 4% what is it worth now?" ->
    present_value(future_amount=2500, annual_discount_rate_percent=4, years=8)
    """
    require_finite("future_amount", future_amount)
    _non_negative("years", years)
    rate = _rate("annual_discount_rate_percent", annual_discount_rate_percent)
    return _money(future_amount / (1 + rate) ** years)


def _npv(rate: float, flows: list[float]) -> float:
    return math.fsum(cf / (1 + rate) ** t for t, cf in enumerate(flows))


def _check_flows(cash_flows: list[float]) -> list[float]:
    if len(cash_flows) < 2 or len(cash_flows) > 1000:
        raise ValueError(f"cash_flows must hold between 2 and 1000 values, got {len(cash_flows)}")
    for cf in cash_flows:
        require_finite("cash_flows", cf)
    return cash_flows


@tool
def net_present_value(
    rate_percent: Annotated[float, "Discount rate per period in percent, e.g. 8"],
    cash_flows: Annotated[list[float], _FLOWS_DOC],
) -> float:
    """Net present value (NPV) of an investment's cash flows at a discount rate, the first flow (often a
    negative outlay) now, to judge whether a project is worth it. Returns the NPV; positive means it adds
    value.

    Example: "NPV at 8% of paying 1500 now and getting 450, 620 and 710 over the next three years" ->
    net_present_value(rate_percent=8, cash_flows=[-1500, 450, 620, 710])
    """
    rate = _rate("rate_percent", rate_percent)
    return _money(_npv(rate, _check_flows(cash_flows)))


@tool
def internal_rate_of_return(
    cash_flows: Annotated[list[float], _FLOWS_DOC],
) -> float:
    """Internal rate of return (IRR) of an investment's cash flows: the yearly (per-period) return at which
    their net present value is zero. Returns the IRR in percent.

    Example: "what's the IRR of paying 1500 now and getting 450, 620 and 710 back over three years?" ->
    internal_rate_of_return(cash_flows=[-1500, 450, 620, 710])
    """
    flows = _check_flows(cash_flows)
    if not (any(cf < 0 for cf in flows) and any(cf > 0 for cf in flows)):
        raise ValueError("cash_flows need at least one negative and one positive value to have an IRR")
    lo, hi = -0.9999, 10.0
    f_lo, f_hi = _npv(lo, flows), _npv(hi, flows)
    if f_lo * f_hi > 0:
        raise ValueError("no IRR found between -99.99% and 1000% for these cash flows")
    for _ in range(200):
        mid = (lo + hi) / 2
        f_mid = _npv(mid, flows)
        if f_lo * f_mid <= 0:
            hi = mid
        else:
            lo, f_lo = mid, f_mid
    return round((lo + hi) / 2 * 100, 4)


@tool
def split_bill(
    bill_total: Annotated[float, "Bill amount before tip"],
    people: Annotated[int, "Number of people sharing the bill (1-1000)"],
    tip_percent: Annotated[float, "Tip or gratuity in percent, e.g. 15"] = 0.0,
) -> dict[str, float]:
    """Split a restaurant bill (the check) evenly between people, with an optional tip (gratuity) in percent.
    Returns the tip, the total with tip and what each person pays.

    Example: "a 64.80 taxi fare shared by 4 friends with a 10% tip" -> split_bill(bill_total=64.8, people=4,
    tip_percent=10)
    """
    _non_negative("bill_total", bill_total)
    _non_negative("tip_percent", tip_percent)
    if not 1 <= people <= 1000:
        raise ValueError(f"people must be between 1 and 1000, got {people}")
    tip = bill_total * tip_percent / 100
    total = bill_total + tip
    return {"tip": _money(tip), "total": _money(total), "per_person": _money(total / people)}


@tool
def price_after_discount_and_tax(
    list_price: Annotated[float, "Original price before any discount"],
    discount_percent: Annotated[float, "Discount or sale percentage off, e.g. 20 for 20% off"] = 0.0,
    tax_percent: Annotated[float, "Sales tax or VAT percentage applied after the discount, e.g. 8.25"] = 0.0,
) -> dict[str, float]:
    """Sale price after a percent discount (percent off, a sale or coupon), then sales tax or VAT on top.
    Returns the discount, the price after discount, the tax and the final price.

    Example: "a 64 dollar shirt is 35% off and tax is 8%; what do I pay?" ->
    price_after_discount_and_tax(list_price=64, discount_percent=35, tax_percent=8)
    """
    _non_negative("list_price", list_price)
    if not 0 <= discount_percent <= 100:
        raise ValueError(f"discount_percent must be between 0 and 100, got {discount_percent}")
    _non_negative("tax_percent", tax_percent)
    discount = list_price * discount_percent / 100
    discounted = list_price - discount
    tax = discounted * tax_percent / 100
    return {
        "discount_amount": _money(discount),
        "price_after_discount": _money(discounted),
        "tax_amount": _money(tax),
        "final_price": _money(discounted + tax),
    }


@tool
def break_even_point(
    fixed_costs: Annotated[float, "Total fixed costs (rent, salaries, ...)"],
    price_per_unit: Annotated[float, "Selling price of one unit"],
    variable_cost_per_unit: Annotated[float, "Variable cost of producing one unit"],
) -> dict[str, float]:
    """Break-even point: how many units must be sold to cover fixed costs, given the price and the variable
    cost of one unit. Returns the break-even units (rounded up), that revenue and the margin per unit.

    Example: "rent is 5000 a month and I sell mugs at 12 that cost 4 to make; how many to break even?" ->
    break_even_point(fixed_costs=5000, price_per_unit=12, variable_cost_per_unit=4)
    """
    _non_negative("fixed_costs", fixed_costs)
    _non_negative("price_per_unit", price_per_unit)
    _non_negative("variable_cost_per_unit", variable_cost_per_unit)
    margin = price_per_unit - variable_cost_per_unit
    if margin <= 0:
        raise ValueError(
            f"price_per_unit ({price_per_unit}) must exceed variable_cost_per_unit ({variable_cost_per_unit})"
        )
    units = math.ceil(clean_number(fixed_costs / margin))
    return {
        "break_even_units": units,
        "break_even_revenue": _money(units * price_per_unit),
        "contribution_margin_per_unit": _money(margin),
    }


@tool
def profit_margin(
    cost: Annotated[float, "What the item costs you"],
    selling_price: Annotated[float, "What you sell it for (greater than 0)"],
) -> dict[str, float | None]:
    """Profit, profit margin and markup from what something costs and what it sells for. Returns the profit,
    the margin percent (profit/price) and the markup percent (profit/cost).

    Example: "I buy at 36 and sell at 54, what's my margin?" -> profit_margin(cost=36, selling_price=54)
    """
    _non_negative("cost", cost)
    if _non_negative("selling_price", selling_price) == 0:
        raise ValueError("selling_price must be greater than 0")
    profit = selling_price - cost
    return {
        "profit": _money(profit),
        "margin_percent": round(profit / selling_price * 100, 4),
        "markup_percent": round(profit / cost * 100, 4) if cost else None,
    }


@tool
def cagr(
    start_value: Annotated[float, "Value at the beginning (greater than 0)"],
    end_value: Annotated[float, "Value at the end (zero or more)"],
    years: Annotated[float, "Number of years between the two values (greater than 0)"],
) -> float:
    """Compound annual growth rate (CAGR): the average yearly growth that takes a start value to an end value
    over some years. Returns the yearly rate in percent.

    Example: "subscribers rose from 12,000 to 20,500 over 3 years; yearly growth?" -> cagr(start_value=12000,
    end_value=20500, years=3)
    """
    if _non_negative("start_value", start_value) == 0:
        raise ValueError("start_value must be greater than 0")
    _non_negative("end_value", end_value)
    if _non_negative("years", years) == 0:
        raise ValueError("years must be greater than 0")
    growth: float = (end_value / start_value) ** (1 / years)
    return round((growth - 1) * 100, 4)


TOOLS: list[BaseTool] = pack(
    compound_interest,
    loan_payment,
    present_value,
    net_present_value,
    internal_rate_of_return,
    split_bill,
    price_after_discount_and_tax,
    break_even_point,
    profit_margin,
    cagr,
)
