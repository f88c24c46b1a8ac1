"""The one GitHub-flavoured Markdown table writer of the reports (no tabulate dependency).

Table 1, Table 1b and Table 2 all go through ``markdown_table`` so that pipes, spacing and the
alignment row are the same everywhere; callers hand it a frame of display strings (values already
formatted, e.g. by ``reports.tables.display_table``), which it writes as they are.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable

import pandas as pd


def _line(cells: Iterable[object]) -> str:
    return "| " + " | ".join(str(c) for c in cells) + " |"


def markdown_table(frame: pd.DataFrame, left: Collection[str] = ()) -> str:
    """Header, alignment row and one line per row of ``frame`` (no trailing newline).

    Columns named in ``left`` are text and left-aligned (``---``); every other column holds numbers and
    is right-aligned (``---:``), so digits line up when the Markdown is rendered.
    """
    header = [str(c) for c in frame.columns]
    align = "|" + "|".join("---" if c in left else "---:" for c in header) + "|"
    rows = [_line(row[c] for c in frame.columns) for _, row in frame.iterrows()]
    return "\n".join([_line(header), align, *rows])
