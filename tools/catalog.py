"""The bundled tool catalog: every pack's tools in one stable, de-duplicated list.

The engine's manifest loads this as ``tools.catalog:TOOLS``. Packs are listed in a fixed order and
each pack keeps its own internal order, so tool positions are stable between runs.
"""

from __future__ import annotations

from langchain_core.tools import BaseTool

from orchestrator import PlanExample
from tools import (
    arithmetic,
    csv_tools,
    dates,
    docs,
    encoding,
    extract,
    finance,
    geometry,
    json_tools,
    lists,
    stats,
    text,
    units,
)

PACKS: dict[str, list[BaseTool]] = {
    "arithmetic": arithmetic.TOOLS,
    "stats": stats.TOOLS,
    "finance": finance.TOOLS,
    "units": units.TOOLS,
    "geometry": geometry.TOOLS,
    "dates": dates.TOOLS,
    "text": text.TOOLS,
    "extract": extract.TOOLS,
    "json_tools": json_tools.TOOLS,
    "csv_tools": csv_tools.TOOLS,
    "lists": lists.TOOLS,
    "encoding": encoding.TOOLS,
    "docs": docs.TOOLS,
}


def _collect() -> list[BaseTool]:
    tools: list[BaseTool] = []
    seen: set[str] = set()
    for pack_name, pack_tools in PACKS.items():
        for t in pack_tools:
            if t.name in seen:
                raise RuntimeError(f"tool name {t.name!r} from pack {pack_name!r} is already taken")
            seen.add(t.name)
            tools.append(t)
    return tools


TOOLS: list[BaseTool] = _collect()

# What the tools cover, in the words the agent's system prompt uses ("... for <COVERS>.").
COVERS = (
    "arithmetic, percentages, money (interest, loans, prices), unit conversions, dates and weekdays, "
    "or measuring a text, changing its letter case or form, and finding emails, links or numbers in it"
)

# Worked plans for requests these tools answer, one small example per pattern (none is a copy of an
# evaluation task). The agent shows the few closest to each request to the model that plans.
PLAN_EXAMPLES: tuple[PlanExample, ...] = (
    PlanExample("What is 15% of 240?", ({"tool": "calculate 15/100*240"},)),
    PlanExample("How far is 5 miles in kilometers?", ({"tool": "convert length 5 mi to km"},)),
    PlanExample("Turn 350 grams into ounces please", ({"tool": "convert mass 350 g to oz"},)),
    PlanExample(
        "How long is it from 2025-04-03 to 2025-06-30?",
        ({"tool": "difference in days between 2025-04-03 and 2025-06-30"},),
    ),
    PlanExample("Which day of the week was 14 July 1999?", ({"tool": "weekday of 1999-07-14"},)),
    PlanExample("What date is 45 days after 2025-03-10?", ({"tool": "add 45 days to 2025-03-10"},)),
    # (No "how many hours between two dates" example: it is the closest to a plain "how many days between"
    # request, and the local 1.5B copied its conversion to hours into that request's plan.)
    # Plans that compose, where one tool can't do the whole: a later part takes earlier results ("uses":
    # their part numbers, from 1), and the answer states its result. Arithmetic on a result is a
    # "calculate ..." part: the words a search finds the calculator by. (Arithmetic one expression can
    # do stays one part: "calculate 3**5 - 10" below.)
    PlanExample(
        "How many minutes are in 3 days and 5 hours?",
        (
            {"tool": "convert 3 days to minutes"},
            {"tool": "convert 5 hours to minutes"},
            {"tool": "calculate the sum of the two results", "uses": [1, 2]},
        ),
    ),
    PlanExample(
        "A lamp costs 80 dollars. With 25% off, what is that in euros at 0.92 euros per dollar?",
        (
            {"tool": "price of 80 after a 25 percent discount"},
            {"tool": "calculate the result times 0.92", "uses": [1]},
        ),
    ),
    PlanExample(
        "Which day of the week is 100 days after 2026-02-10?",
        (
            {"tool": "add 100 days to 2026-02-10"},
            {"tool": "weekday of the resulting date", "uses": [1]},
        ),
    ),
    PlanExample("What's 3 to the power of 5, minus 10?", ({"tool": "calculate 3**5 - 10"},)),
    PlanExample(
        "A client paid 19.99 and 5.01 for two orders. What is the total?",
        ({"tool": "calculate 19.99 + 5.01"},),
    ),
    PlanExample(
        "By what percent did the price go from 80 to 92?", ({"tool": "percent change from 80 to 92"},)
    ),
    PlanExample(
        "If I put 2000 in savings at 4% a year, compounded monthly, what do I have after 3 years?",
        ({"tool": "compound interest on 2000 at 4 percent for 3 years, monthly"},),
    ),
    PlanExample(
        "How many words are in 'the cat sat on the warm mat'?", ({"tool": "count the words of the text"},)
    ),
    PlanExample(
        "What is 12 squared? And how many days are in February 2028?",
        ({"tool": "calculate 12**2"}, {"tool": "days in the month February 2028"}),
    ),
    # Text tools beside the text workers: letter case is a tool, a rewrite in another tone is a worker's
    # (the project's workers bring their own examples); email addresses are found by a tool.
    PlanExample(
        "Put this in title case: 'a tale of two cities'", ({"tool": "convert the text to title case"},)
    ),
    PlanExample(
        "Find the email addresses in this note: 'ask jo@example.com or sam@example.org'",
        ({"tool": "extract the email addresses from the text"},),
    ),
)
