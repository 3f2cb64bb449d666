"""Plain-text, poseval-style and markdown rendering of one row of metric columns."""
from __future__ import annotations

import math
from collections.abc import Mapping

# poseval's abbreviated headers for the PoseTrack columns
POSEVAL_HEADERS = {
    "Head": "Head", "Shoulder": "Shou", "Elbow": "Elb ", "Wrist": "Wri ",
    "Hip": "Hip ", "Knee": "Knee", "Ankle": "Ankl", "Total": "Total",
}


def format_cell(value: float, digits: int = 1) -> str:
    """``79.53`` -> ``' 79.5'``: right-aligned in five characters like poseval's cells."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "{:>5}".format("nan")
    return "{:>5}".format(f"{value:.{digits}f}")


def render_poseval(columns: Mapping[str, float]) -> str:
    """Two lines exactly as poseval's ``printTable`` prints them (LaTeX-ready rows)."""
    names = list(columns)
    header = "&" + "&".join(f" {POSEVAL_HEADERS.get(n, n)} " for n in names[:-1])
    header += f"& {POSEVAL_HEADERS.get(names[-1], names[-1])}\\\\"
    row = "&" + "".join(format_cell(columns[n]) + " &" for n in names[:-1])
    row += format_cell(columns[names[-1]]) + " \\\\"
    return header + "\n" + row


def render_markdown(columns: Mapping[str, float], label: str = "") -> str:
    """A markdown table with one row; ``label`` fills an optional first column."""
    names = list(columns)
    lead = ["Method"] if label else []
    header = "| " + " | ".join(lead + names) + " |"
    rule = "|" + "|".join([":---"] * len(lead) + ["---:"] * len(names)) + "|"
    cells = ([label] if label else []) + [format_cell(columns[n]).strip() for n in names]
    return "\n".join([header, rule, "| " + " | ".join(cells) + " |"])


def render_table(columns: Mapping[str, float], title: str | None = None,
                 markdown: bool = False, label: str = "") -> str:
    """``title`` line (bold in markdown) followed by the table."""
    if not columns:
        raise ValueError("no columns to render")
    body = render_markdown(columns, label) if markdown else render_poseval(columns)
    if not title:
        return body
    head = f"**{title}**\n" if markdown else f"{title}\n"
    return head + ("\n" if markdown else "") + body
