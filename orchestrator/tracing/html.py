"""A trace report as one self-contained HTML page: where the cost (or the compute time) goes, and when.

`orch traces report (RUN | --last N) --html FILE` writes it. The page holds
- a flame graph (an icicle: all runs, then node, then model or tool) of the scope's cost, or of its compute
  time when nothing in it has a cost (local models); a scope mixing priced and local runs gets both;
- the hotspot tables by node, model and tool;
- a waterfall of each run's spans (the most recent run open, the others folded).

No server and no network: inline SVG and CSS, one small script, and a Content-Security-Policy that lets the
page load nothing and run no script but its own. Every text from the store is data and is escaped. The
charts carry their values as `data-*` attributes (`data-value`, `data-ms`, `data-cost`), so the numbers can be
read back from the page.
"""

from __future__ import annotations

import secrets
import time
import zlib
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from html import escape
from pathlib import Path
from typing import Any, Literal

from orchestrator._version import __version__
from orchestrator.errors import ConfigError
from orchestrator.formats import format_ms as _ms
from orchestrator.formats import format_usd as _money
from orchestrator.tracing.report import span_tree
from orchestrator.tracing.store import TraceStore

__all__ = ["ReportSummary", "report_runs", "write_report"]

Measure = Literal["cost", "time"]

_WIDTH = 1000  # px: the charts are drawn at a fixed size, so a rendered width is a value's exact share
_ROW = 24  # flame graph row height
_CHAR_PX = 7.3  # one character of the 12px monospace labels
_LANE = 18  # waterfall row height
_LABEL_W, _BAR_X, _BAR_W = 330, 340, 560  # waterfall: label column, then the time axis
_NO_NODE = "(outside any node)"
_OWN = "(node's own time)"
_KIND_COLOURS = {"run": "#8da0cb", "node": "#fc8d62", "chat": "#66c2a5", "tool": "#e78ac3"}


@dataclass(frozen=True)
class ReportSummary:
    """What `write_report` wrote: the scope's totals and the measures its charts show."""

    path: str
    runs: int
    spans: int
    cost_usd: float  # known cost; calls with no known price are counted in unpriced_calls
    unpriced_calls: int
    time_ms: float  # compute time, as the time chart weighs it
    measures: tuple[Measure, ...]
    top: str | None  # the biggest node and its share, e.g. "controller (92% of the cost)"

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def line(self) -> str:
        """One line for a terminal."""
        text = (
            f"{self.runs} run{'s' if self.runs != 1 else ''}, {self.spans} spans, "
            f"cost {_money(self.cost_usd)}"
            f"{f' (+{self.unpriced_calls} unpriced calls)' if self.unpriced_calls else ''}, "
            f"compute time {_ms(self.time_ms)}; "
            f"charts by {' and '.join(_MEASURE_NAMES[m] for m in self.measures)}"
        )
        return text + (f"; biggest: {self.top}" if self.top else "")


_MEASURE_NAMES: dict[Measure, str] = {"cost": "cost (USD)", "time": "compute time"}


def report_runs(store: TraceStore, run: str | None = None, last: int | None = None) -> list[dict[str, Any]]:
    """The runs a report covers, most recent first: one run (full id or unique prefix) or the last N."""
    if (run is None) == (last is None):
        raise ConfigError("give a run id or --last N (one of the two), e.g. `orch traces report --last 5`")
    if run is not None:
        row = store.get_run(run)
        if row is None:
            raise ConfigError(f"no run {run!r} in {store.path}; see `orch traces list` for the run ids")
        return [row]
    assert last is not None
    if last < 1:
        raise ConfigError(f"--last must be 1 or more, got {last}")
    rows = store.list_runs(last)
    if not rows:
        raise ConfigError(
            f"no runs in {store.path} yet; run a graph first (`orch run ...`) "
            "or point --traces at another store"
        )
    return rows


def write_report(store: TraceStore, path: str | Path, runs: Sequence[dict[str, Any]]) -> ReportSummary:
    """Write the report page for `runs` (from `report_runs`) to `path`; a `ConfigError` if it can't.

    Example:
        >>> store = TraceStore("traces.db")  # doctest: +SKIP
        >>> write_report(store, "report.html", report_runs(store, last=5)).line()  # doctest: +SKIP
        '5 runs, 61 spans, cost $0.0123, compute time 4.21 s; charts by cost (USD); biggest: ...'
    """
    target = Path(path)
    page, summary = _build(store, runs, str(target.resolve()))
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(page, encoding="utf-8")
    except OSError as exc:
        why = exc.strerror or str(exc)
        if isinstance(exc, FileExistsError):  # from mkdir: a file where the folder should be
            why = f"{str(target.parent)!r} is a file, not a folder"
        raise ConfigError(
            f"can't write the report to {str(path)!r}: {why}; pass --html a file path in a writable folder"
        ) from None
    return summary


# --- the numbers --------------------------------------------------------------------------------------------
@dataclass
class _Part:
    """One leaf of the flame graph: a model's calls, a tool's calls, or a node's own time, under one node."""

    node: str
    kind: Literal["model", "tool", "own"]
    key: str
    cost: float = 0.0
    time_ms: float = 0.0


@dataclass
class _Group:
    """One row of a hotspot table."""

    key: str
    calls: int = 0
    input_tokens: int = 0
    output_tokens: int = 0
    cost: float = 0.0
    priced: int = 0
    unpriced: int = 0
    time_ms: float = 0.0
    durations: list[float] = field(default_factory=list)
    errors: int = 0


def _own_ms(spans: Sequence[dict[str, Any]]) -> dict[str, float]:
    """Each span's own time: its duration less its direct children's (never below 0: children can overlap)."""
    children: dict[str, float] = {}
    for s in spans:
        if s["parent_id"]:
            children[s["parent_id"]] = children.get(s["parent_id"], 0.0) + (s["duration_ms"] or 0.0)
    return {
        s["span_id"]: max(0.0, (s["duration_ms"] or 0.0) - children.get(s["span_id"], 0.0)) for s in spans
    }


def _parts(spans_by_run: dict[str, list[dict[str, Any]]]) -> list[_Part]:
    """The flame graph's leaves over all runs. Time: a model call's compute time (its own time where the
    model reports none), a tool call's own time, a node's own time outside them."""
    parts: dict[tuple[str, str, str], _Part] = {}
    for spans in spans_by_run.values():
        own = _own_ms(spans)
        for s in spans:
            node = s["node"] or _NO_NODE
            if s["kind"] == "chat":
                part = parts.setdefault(
                    (node, "model", s["model"] or "?"), _Part(node, "model", s["model"] or "?")
                )
                part.cost += s["cost_usd"] or 0.0
                part.time_ms += s["compute_ms"] if s["compute_ms"] is not None else own[s["span_id"]]
            elif s["kind"] == "tool":
                part = parts.setdefault(
                    (node, "tool", s["tool"] or "?"), _Part(node, "tool", s["tool"] or "?")
                )
                part.time_ms += own[s["span_id"]]
            elif s["kind"] == "node":
                parts.setdefault((node, "own", _OWN), _Part(node, "own", _OWN)).time_ms += own[s["span_id"]]
    return list(parts.values())


def _groups(spans: Iterable[dict[str, Any]], parts: Sequence[_Part], by: str) -> list[_Group]:
    """Hotspot rows by node, model or tool: calls, tokens and cost of the model calls made directly under the
    key, its time as the flame graph weighs it, p50/p95 of its spans' wall time, errors."""
    timed_kind = {"node": "node", "model": "chat", "tool": "tool"}[by]
    groups: dict[str, _Group] = {}
    for s in spans:
        key = str(s[by] or (_NO_NODE if by == "node" else "?"))
        if s["kind"] == timed_kind:
            g = groups.setdefault(key, _Group(key))
            g.calls += 1
            g.durations.append(s["duration_ms"] or 0.0)
            g.errors += s["status"] == "error"
        if s["kind"] == "chat" and by != "tool":
            g = groups.setdefault(key, _Group(key))
            g.input_tokens += s["input_tokens"] or 0
            g.output_tokens += s["output_tokens"] or 0
            if s["cost_usd"] is None:
                g.unpriced += 1
            else:
                g.priced += 1
                g.cost += s["cost_usd"]
    for p in parts:
        if by == "node" or p.kind == by:
            part_key = p.node if by == "node" else p.key
            groups.setdefault(part_key, _Group(part_key)).time_ms += p.time_ms
    return sorted(groups.values(), key=lambda g: (-g.cost, -g.time_ms, g.key))


def _pct(values: list[float], q: float) -> float:
    """The nearest-rank percentile, as `orch traces top` computes it."""
    if not values:
        return 0.0
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))]


def _measures(
    runs: Sequence[dict[str, Any]], spans_by_run: dict[str, list[dict[str, Any]]]
) -> tuple[tuple[Measure, ...], str]:
    """Cost when any call has one, compute time when none does; both when some runs are priced and others
    (local models) made calls that all cost nothing. Returns the measures and a sentence saying why."""

    def calls(run: dict[str, Any]) -> list[dict[str, Any]]:
        return [s for s in spans_by_run[run["run_id"]] if s["kind"] == "chat"]

    n = len(runs)
    priced = sum(1 for r in runs if any((c["cost_usd"] or 0) > 0 for c in calls(r)))
    free = sum(1 for r in runs if calls(r) and all(not c["cost_usd"] for c in calls(r)))
    if not priced:
        why = (
            f"Compute time: no model call in {'this run' if n == 1 else f'these {n} runs'} has a cost "
            "(local models cost nothing), so the charts weigh time: each model call's compute time "
            "(its own time where the model reports none), each tool call's time and each node's own time."
        )
        return ("time",), why
    if not free:
        return (
            "cost",
        ), f"Cost (USD): the price of each model call, summed; {_runs_phrase(priced, n)} priced."
    why = (
        f"Cost (USD) and compute time: {_runs_phrase(priced, n)} priced and {free} ran at no cost "
        f"(local models), so both are shown, each over {'both' if n == 2 else f'all {n}'} runs."
    )
    return ("cost", "time"), why


def _runs_phrase(k: int, n: int) -> str:
    if k == n:
        return "the run is" if n == 1 else f"all {n} runs are"
    return f"{k} of the {n} runs {'is' if k == 1 else 'are'}"


# --- the page ----------------------------------------------------------------------------------------------
def _build(store: TraceStore, runs: Sequence[dict[str, Any]], path: str) -> tuple[str, ReportSummary]:
    if not runs:
        raise ConfigError("no runs to report on; pick them with report_runs(store, run=...) or last=N")
    spans_by_run = {r["run_id"]: store.run_spans(r["run_id"]) for r in runs}
    every = [s for spans in spans_by_run.values() for s in spans]
    parts = _parts(spans_by_run)
    measures, why = _measures(runs, spans_by_run)
    chats = [s for s in every if s["kind"] == "chat"]
    cost = sum(s["cost_usd"] or 0.0 for s in chats)
    unpriced = sum(1 for s in chats if s["cost_usd"] is None)
    time_ms = sum(p.time_ms for p in parts)
    top = None
    for m in measures:
        by_node = _by_node(parts, m)
        total = sum(by_node.values())
        if total > 0:
            node, value = max(by_node.items(), key=lambda kv: kv[1])
            top = f"{node} ({value / total:.0%} of the {'cost' if m == 'cost' else 'compute time'})"
            break
    summary = ReportSummary(
        path=path,
        runs=len(runs),
        spans=len(every),
        cost_usd=cost,
        unpriced_calls=unpriced,
        time_ms=time_ms,
        measures=measures,
        top=top,
    )
    nonce = secrets.token_urlsafe(16)
    title = f"run {runs[0]['run_id']}" if len(runs) == 1 else f"the last {len(runs)} runs"
    body = [
        f"<h1>Trace report: {_e(title)}</h1>",
        _header(store, runs, summary, why),
        "<h2>Where it goes</h2>",
        *(_flame(parts, m, len(runs)) for m in measures),
        "<h2>Hotspots</h2>",
        _hotspots(every, parts, cost, time_ms),
        "<h2>Waterfall</h2>",
        "<p class='note'>Each run's spans on its own time axis, in tree order"
        + (": the most recent run is open, click another to open it." if len(runs) > 1 else ".")
        + " Colours: "
        + " ".join(
            f"<span class='swatch' style='background:{c}'></span>{k}" for k, c in _KIND_COLOURS.items()
        )
        + "; a red outline is an error.</p>",
        *(_waterfall(store, r, i == 0) for i, r in enumerate(runs)),
    ]
    page = _PAGE.format(
        title=_e(f"Trace report: {title}"), nonce=nonce, css=_CSS, body="\n".join(body), script=_SCRIPT
    )
    return page, summary


def _by_node(parts: Sequence[_Part], measure: Measure) -> dict[str, float]:
    out: dict[str, float] = {}
    for p in parts:
        out[p.node] = out.get(p.node, 0.0) + _value(p, measure)
    return out


def _value(p: _Part, measure: Measure) -> float:
    return p.cost if measure == "cost" else p.time_ms


def _header(store: TraceStore, runs: Sequence[dict[str, Any]], s: ReportSummary, why: str) -> str:
    graphs = sorted({r["graph"] or "?" for r in runs})
    facts = [
        ("runs", str(s.runs)),
        ("graphs", ", ".join(graphs)),
        ("spans", str(s.spans)),
        ("cost", _money(s.cost_usd) + (f" (+{s.unpriced_calls} unpriced calls)" if s.unpriced_calls else "")),
        ("compute time", _ms(s.time_ms)),
    ]
    cards = "".join(f"<div class='fact'><b>{_e(v)}</b><span>{_e(k)}</span></div>" for k, v in facts)
    measures = " ".join(s.measures)
    return (
        f"<div class='facts'>{cards}</div>"
        f"<p class='measure' data-measures='{_e(measures)}'><b>Measure.</b> {_e(why)}</p>"
        f"<p class='note'>From {_e(store.path)}, written {_e(time.strftime('%Y-%m-%d %H:%M:%S %Z'))} "
        f"by orchestrator {_e(__version__)}.</p>"
    )


def _flame(parts: Sequence[_Part], measure: Measure, n_runs: int) -> str:
    """An icicle: all runs, then nodes, then each node's models (and, for time, tools and own time)."""
    nodes: dict[str, list[_Part]] = {}
    for p in parts:
        if _value(p, measure) > 0:
            nodes.setdefault(p.node, []).append(p)
    total = sum(_value(p, measure) for ps in nodes.values() for p in ps)
    what = "cost" if measure == "cost" else "compute time"
    head = (
        f"<h3>{'Cost' if measure == 'cost' else 'Compute time'} by node, then "
        f"{'model' if measure == 'cost' else 'model, tool or the node itself'}</h3>"
    )
    if total <= 0:
        return head + f"<p class='note' data-measure='{measure}'>Nothing in scope has any {what}.</p>"
    scope = "the run" if n_runs == 1 else f"all {n_runs} runs"
    cells = [_cell(0, 0.0, total, total, measure, None, scope)]
    x = 0.0
    for node, ps in sorted(nodes.items(), key=lambda kv: (-sum(_value(p, measure) for p in kv[1]), kv[0])):
        node_total = sum(_value(p, measure) for p in ps)
        cells.append(_cell(1, x, node_total, total, measure, node, node))
        px = x
        for p in sorted(ps, key=lambda p: (-_value(p, measure), p.kind, p.key)):
            label = p.key if p.kind != "tool" else f"tool {p.key}"
            cells.append(_cell(2, px, _value(p, measure), total, measure, node, label, p))
            px += _value(p, measure)
        x += node_total
    return (
        head + f"<div class='chart'><svg class='flame' data-measure='{measure}' data-total='{total!r}' "
        f"data-width='{_WIDTH}' width='{_WIDTH}' height='{3 * _ROW}' xmlns='http://www.w3.org/2000/svg' "
        f"role='img' aria-label='{_e(what)} by node'>{''.join(cells)}</svg></div>"
        "<p class='note'>Click a cell to zoom in, the top row to zoom out. Hover for values.</p>"
    )


def _cell(
    level: int,
    start: float,
    value: float,
    total: float,
    measure: Measure,
    node: str | None,
    label: str,
    part: _Part | None = None,
) -> str:
    """One flame graph cell: `start` and `value` in the measure's units, drawn at their share of the width."""
    x0, width = start * _WIDTH / total, value * _WIDTH / total
    attrs: list[tuple[str, str]] = [
        ("class", f"cell level{level}"),
        ("data-level", str(level)),
        ("data-value", repr(value)),
        ("data-share", repr(value / total)),
        ("data-x0", repr(x0)),
        ("data-x1", repr(x0 + width)),
        ("data-label", label),
    ]
    if node is not None:
        attrs.append(("data-node", node))
    if part is not None:
        attrs += [("data-kind", part.kind), (f"data-{part.kind}", part.key)]
    colour = "#b0b8c8" if level == 0 else _colour(label, level)
    shown = _fit(label, width)
    tip = (
        f"{label if level != 2 else f'{node} › {label}'}\n{_value_text(measure, value)} · {value / total:.1%}"
    )
    return (
        f"<g {' '.join(f'{k}={_q(v)}' for k, v in attrs)}>"
        f"<rect x='{x0:.3f}' y='{level * _ROW}' width='{width:.3f}' height='{_ROW - 1}' fill='{colour}'/>"
        f"<text x='{x0 + 4:.3f}' y='{level * _ROW + 16}'>{_e(shown)}</text>"
        f"<title>{_e(tip)}</title></g>"
    )


def _hotspots(every: Sequence[dict[str, Any]], parts: Sequence[_Part], cost: float, time_ms: float) -> str:
    out = [
        "<p class='note'>Cost: of the model calls made directly in the node, or by the model. Time: as the "
        "flame graph weighs it. p50 and p95: each call's wall time. Shares: of the scope's total.</p>"
    ]
    for by in ("node", "model", "tool"):
        groups = _groups(every, parts, by)
        if not groups:
            continue
        rows = []
        for g in groups:
            no_calls = by == "tool" or not (g.priced or g.unpriced)
            cost_text = "-" if no_calls else _money(g.cost if g.priced else None, g.unpriced)
            share = g.cost / cost if cost > 0 and not no_calls else None
            tshare = g.time_ms / time_ms if time_ms > 0 else None
            data = {
                "data-key": g.key,
                "data-calls": str(g.calls),
                "data-cost": repr(g.cost) if g.priced else "",  # empty: no priced call
                "data-ms": repr(g.time_ms),
                "data-errors": str(g.errors),
            }
            cells = [
                f"<td class='key'>{_e(g.key)}</td>",
                f"<td>{g.calls}</td>",
                f"<td>{g.input_tokens if by != 'tool' else '-'}</td>",
                f"<td>{g.output_tokens if by != 'tool' else '-'}</td>",
                f"<td>{_e(cost_text)}</td>",
                _share_cell(share),
                f"<td>{_e(_ms(g.time_ms))}</td>",
                _share_cell(tshare),
                f"<td>{_e(_ms(_pct(g.durations, 0.5)))}</td>",
                f"<td>{_e(_ms(_pct(g.durations, 0.95)))}</td>",
                f"<td class='{'err' if g.errors else ''}'>{g.errors}</td>",
            ]
            rows.append(f"<tr {' '.join(f'{k}={_q(v)}' for k, v in data.items())}>{''.join(cells)}</tr>")
        heads = (by, "calls", "in tok", "out tok", "cost", "share", "time", "share", "p50", "p95", "errors")
        out.append(
            f"<h3>By {by}</h3><table class='hotspots' data-by='{by}'><thead><tr>"
            + "".join(f"<th>{h}</th>" for h in heads)
            + f"</tr></thead><tbody>{''.join(rows)}</tbody></table>"
        )
    return "".join(out)


def _share_cell(share: float | None) -> str:
    if share is None:
        return "<td>-</td>"
    return f"<td class='share'><span style='width:{share * 100:.1f}%'></span>{share:.0%}</td>"


def _waterfall(store: TraceStore, run: dict[str, Any], open_: bool) -> str:
    """One run's spans as bars on the run's time axis, in tree order (children under their parent)."""
    flat: list[tuple[int, dict[str, Any]]] = []

    def walk(span: dict[str, Any], depth: int) -> None:
        flat.append((depth, span))
        for child in span["children"]:
            walk(child, depth + 1)

    for root in span_tree(store, run["run_id"]):
        walk(root, 0)
    summary = (
        f"<summary><b>{_e(run['run_id'])}</b> {_e(run['graph'] or '')} · {_e(run['status'] or '')} · "
        f"{_e(_money(run['cost_usd']))} · {_e(_ms(run['duration_ms']))} · {len(flat)} spans</summary>"
    )
    error = f"<p class='err'>{_e(run['error'])}</p>" if run.get("error") else ""
    details = f"<details class='run' data-run={_q(run['run_id'])}{' open' if open_ else ''}>"
    if not flat:
        return f"{details}{summary}{error}<p class='note'>No spans recorded.</p></details>"
    t0 = min(s["start_ns"] or 0 for _, s in flat)
    extent_ms = max((max(s["end_ns"] or 0 for _, s in flat) - t0) / 1e6, 1e-6)
    scale = _BAR_W / extent_ms
    rows = [_axis(extent_ms)]
    for i, (depth, s) in enumerate(flat):
        y = 22 + i * _LANE
        start_ms = ((s["start_ns"] or t0) - t0) / 1e6
        dur_ms = ((s["end_ns"] or s["start_ns"] or t0) - (s["start_ns"] or t0)) / 1e6
        bits = [_ms(dur_ms)]
        if s["kind"] == "chat":
            bits.append(f"{s['input_tokens'] or 0}+{s['output_tokens'] or 0} tok, {_money(s['cost_usd'])}")
            if s.get("compute_ms") is not None:
                bits.append(f"compute {_ms(s['compute_ms'])}")
        if s["status"] == "error":
            bits.append(f"error: {s['status_message'] or ''}")
        name = s["name"] or ""
        data = {
            "class": f"bar {s['kind'] or ''}{' error' if s['status'] == 'error' else ''}",
            "data-span": s["span_id"],
            "data-kind": s["kind"] or "",
            "data-name": name,
            "data-node": s["node"] or "",
            "data-depth": str(depth),
            "data-start-ms": repr(start_ms),
            "data-ms": repr(dur_ms),
            "data-cost": "" if s["cost_usd"] is None else repr(s["cost_usd"]),
        }
        rows.append(
            f"<g {' '.join(f'{k}={_q(v)}' for k, v in data.items())}>"
            f"<text x='{4 + depth * 12}' y='{y + 13}'>{_e(_fit(name, _LABEL_W - depth * 12))}</text>"
            f"<rect x='{_BAR_X + start_ms * scale:.3f}' y='{y + 2}' width='{max(1.0, dur_ms * scale):.3f}' "
            f"height='{_LANE - 4}' fill='{_KIND_COLOURS.get(s['kind'] or '', '#999')}'/>"
            f"<text class='dur' x='{_BAR_X + _BAR_W + 8}' y='{y + 13}'>{_e(_ms(dur_ms))}</text>"
            f"<title>{_e(name)}\n{_e(' · '.join(bits))}</title></g>"
        )
    height = 22 + len(flat) * _LANE + 4
    return (
        f"{details}{summary}{error}<div class='chart'><svg class='waterfall' data-run={_q(run['run_id'])} "
        f"data-extent-ms='{extent_ms!r}' data-bar-x='{_BAR_X}' data-bar-width='{_BAR_W}' width='{_WIDTH}' "
        f"height='{height}' xmlns='http://www.w3.org/2000/svg'>{''.join(rows)}</svg></div></details>"
    )


def _axis(extent_ms: float) -> str:
    ticks = []
    for i in range(5):
        x = _BAR_X + _BAR_W * i / 4
        ticks.append(
            f"<line x1='{x:.1f}' y1='16' x2='{x:.1f}' y2='100%' class='tick'/>"
            f"<text class='tick' x='{x:.1f}' y='12' text-anchor='middle'>{_e(_ms(extent_ms * i / 4))}</text>"
        )
    return f"<g class='axis'>{''.join(ticks)}</g>"


# --- formatting --------------------------------------------------------------------------------------------
def _e(text: object) -> str:
    """Escape any text for HTML content and attribute values (quotes included)."""
    return escape(str(text), quote=True)


def _q(text: str) -> str:
    """A quoted attribute value."""
    return f'"{_e(text)}"'


def _fit(label: str, width: float) -> str:
    """The label cut to the pixels it has (the script does the same after a zoom)."""
    room = int((width - 8) / _CHAR_PX)
    if room < 2:
        return ""
    return label if len(label) <= room else label[: room - 1] + "…"


def _colour(key: str, level: int) -> str:
    hue = zlib.crc32(key.encode()) % 60  # reds to yellows, the flame graph's warm range
    return f"hsl({hue}, {70 if level == 1 else 60}%, {62 if level == 1 else 72}%)"


def _value_text(measure: Measure, value: float) -> str:
    return _money(value) if measure == "cost" else _ms(value)


_CSS = """
:root { color-scheme: light; }
body { font: 14px/1.45 system-ui, sans-serif; margin: 24px auto; max-width: 1060px; padding: 0 16px; }
body { color: #222; }
h1 { font-size: 20px; margin: 0 0 12px; word-break: break-all; } h2 { font-size: 17px; margin: 28px 0 6px; }
h3 { font-size: 14px; margin: 16px 0 6px; }
.facts { display: flex; gap: 12px; flex-wrap: wrap; }
.fact { border: 1px solid #ddd; border-radius: 6px; padding: 6px 12px; min-width: 90px; }
.fact b { display: block; font-size: 16px; } .fact span { color: #666; font-size: 12px; }
.measure { background: #f4f6fa; border-left: 4px solid #8da0cb; padding: 8px 12px; }
.note { color: #555; font-size: 12.5px; } .err { color: #b00020; }
.chart { overflow-x: auto; }
svg { font: 12px ui-monospace, monospace; display: block; }
svg.flame g.cell { cursor: pointer; } svg.flame rect { stroke: #fff; stroke-width: 1; }
svg.flame g.cell:hover rect { stroke: #333; }
svg .tick { stroke: #e3e3e3; fill: #888; } svg text.tick { stroke: none; font-size: 10px; }
svg.waterfall g.bar:hover { fill: #000; } svg.waterfall g.bar:hover rect { opacity: .8; }
svg.waterfall g.error rect { stroke: #d00; stroke-width: 1.5; } svg text.dur { fill: #666; }
table.hotspots { border-collapse: collapse; font-size: 12.5px; width: 100%; }
table.hotspots th, table.hotspots td { border-bottom: 1px solid #eee; padding: 3px 6px; text-align: right; }
table.hotspots th:first-child, table.hotspots td.key { text-align: left; word-break: break-all; }
td.share { position: relative; min-width: 60px; }
td.share span { position: absolute; left: 0; top: 3px; bottom: 3px; background: #fdd9c6; z-index: -1; }
td.err { color: #b00020; font-weight: bold; }
details.run { border: 1px solid #e5e5e5; border-radius: 6px; margin: 8px 0; padding: 4px 8px; }
details.run summary { cursor: pointer; word-break: break-all; }
.swatch { display: inline-block; width: 10px; height: 10px; margin: 0 3px 0 8px; border-radius: 2px; }
"""

# Zoom: a click on a flame cell stretches its span [x0, x1] to the full width; labels are cut again to fit.
_SCRIPT = """
for (const svg of document.querySelectorAll("svg.flame")) {
  const width = Number(svg.dataset.width);
  const cells = [...svg.querySelectorAll("g.cell")];
  const fit = (label, w) => {
    const room = Math.floor((w - 8) / %(char)s);
    return room < 2 ? "" : label.length <= room ? label : label.slice(0, room - 1) + "\\u2026";
  };
  const zoom = (x0, x1) => {
    const k = width / (x1 - x0);
    for (const cell of cells) {
      const a = Math.max(Number(cell.dataset.x0), x0), b = Math.min(Number(cell.dataset.x1), x1);
      const rect = cell.querySelector("rect"), text = cell.querySelector("text");
      cell.style.display = b - a > 1e-6 ? "" : "none";  // past float rounding
      const x = (a - x0) * k, w = Math.max(0, (b - a) * k);
      rect.setAttribute("x", x); rect.setAttribute("width", w);
      text.setAttribute("x", x + 4); text.textContent = fit(cell.dataset.label, w);
    }
  };
  for (const cell of cells) {
    cell.addEventListener("click", () => zoom(Number(cell.dataset.x0), Number(cell.dataset.x1)));
  }
}
document.documentElement.dataset.ready = "1";
""".replace("%(char)s", str(_CHAR_PX))

_PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<meta http-equiv="Content-Security-Policy"
 content="default-src 'none'; style-src 'unsafe-inline'; script-src 'nonce-{nonce}'; img-src data:">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{title}</title>
<style>{css}</style></head>
<body>
{body}
<script nonce="{nonce}">{script}</script>
</body></html>
"""
