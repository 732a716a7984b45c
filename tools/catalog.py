"""The bundled tool catalog: every pack's tools in one stable, de-duplicated list.

The engine's manifest loads this as ``tools.catalog:TOOLS``. Packs are listed in a fixed order and
each pack keeps its own internal order, so tool positions are stable between runs.
"""

from __future__ import annotations

from langchain_core.tools import BaseTool

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
