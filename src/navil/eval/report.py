"""Markdown rendering of evaluation summaries (``summary.json`` -> ``summary.md`` / terminal table)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

__all__ = ["format_value", "summaries_table", "summary_markdown"]


def format_value(value, digits: int = 2) -> str:
    """A number for a table cell (``-`` for None, booleans as yes/no)."""
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


def _cell(text) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def _table(header: Sequence[str], rows: Sequence[Sequence]) -> str:
    lines = [
        "| " + " | ".join(_cell(h) for h in header) + " |",
        "| " + " | ".join("---" for _ in header) + " |",
    ]
    lines += ["| " + " | ".join(_cell(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def _headline_row(summary: Mapping) -> list:
    res = summary.get("result") or {}
    score = res.get("score")
    return [
        summary.get("benchmark", res.get("benchmark", "?")),
        res.get("metric", "-"),
        format_value(score) if score is not None else (res.get("status") or "not scored"),
        res.get("unit", "-"),
        format_value(res.get("n")),
        format_value(res.get("n_missing")),
        format_value(summary.get("n_malformed", res.get("n_malformed"))),
        format_value(summary.get("n_errors", 0)),
    ]


_HEADLINE = ["benchmark", "metric", "score", "unit", "n", "missing", "malformed", "errors"]


def summary_markdown(summary: Mapping, *, title: bool = True) -> str:
    """The markdown report of one summary: headline table, per-category table, run details."""
    res = summary.get("result") or {}
    parts = []
    if title:
        parts.append(f"# {summary.get('benchmark', res.get('benchmark', 'evaluation'))}")
    parts.append(_table(_HEADLINE, [_headline_row(summary)]))
    cats = res.get("categories") or {}
    if cats:
        chance = res.get("chance") or {}
        details = res.get("category_details") or {}
        has_chance = bool(chance)
        header = ["category", "score"] + (["chance", "n"] if has_chance else [])
        rows = []
        for cat, value in cats.items():
            if isinstance(value, Mapping):  # some metrics nest numbers (e.g. HallusionBench)
                value = next((v for v in value.values() if isinstance(v, (int, float))), None)
            row = [cat, format_value(value)]
            if has_chance:
                row += [format_value(chance.get(cat)), format_value((details.get(cat) or {}).get("n"))]
            rows.append(row)
        if has_chance and res.get("chance_overall") is not None:
            rows.append(
                [
                    "**overall**",
                    format_value(res.get("score")),
                    format_value(res.get("chance_overall")),
                    format_value(res.get("n")),
                ]
            )
        parts.append(_table(header, rows))
    info = []
    for key in ("model", "data", "scored_tsv", "predictions", "limit"):
        if summary.get(key) is not None:
            info.append(f"- {key}: `{summary[key]}`")
    cfg = summary.get("config") or {}
    if cfg:
        info.append("- config: " + ", ".join(f"{k}={v}" for k, v in cfg.items()))
    timing = summary.get("timing") or {}
    if timing.get("generated"):
        info.append(
            f"- generated {timing['generated']} samples in {timing['seconds']:.1f} s this run "
            f"({timing.get('cached', 0)} reused from the cache)"
        )
    for w in res.get("warnings") or []:
        info.append(f"- warning: {w}")
    if info:
        parts.append("\n".join(info))
    return "\n\n".join(parts) + "\n"


def summaries_table(summaries: Sequence[Mapping]) -> str:
    """One headline row per summary (several benchmarks in one table)."""
    return _table(_HEADLINE, [_headline_row(s) for s in summaries]) + "\n"
