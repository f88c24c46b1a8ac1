"""One table model for every report table, rendered to Markdown (``table1.md``, ``table2.md``, ``table3.md``) and
to an HTML section (``report.html``).

Why one model: each table used to be built twice, once as Markdown and once as HTML, each with its own title and
its own copy of the prose, and the copies drifted (Table 1b's reading guide said different things on the two
pages). A ``TableDoc`` holds the title, the prose before and after the table and the display frame (strings,
``*_display`` of its module) once; ``render_markdown`` and ``render_section`` only lay it out.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import pandas as pd

from reports.html import Section, table_html
from reports.markdown import markdown_table


@dataclass
class TableDoc:
    """One report table as data.

    ``frame`` holds display strings (its columns are the table's header); ``left`` names the columns aligned
    left in Markdown (text, not numbers); ``empty`` is the sentence shown in place of an empty frame;
    ``notes`` come before the table, ``footnotes`` after it; ``bullets`` (Markdown list items, one line each)
    close it, as HTML paragraphs."""

    title: str
    frame: pd.DataFrame
    notes: list[str] = field(default_factory=list)
    footnotes: list[str] = field(default_factory=list)
    bullets: list[str] = field(default_factory=list)
    left: tuple[str, ...] = ()
    empty: str = "no rows"


def render_markdown(doc: TableDoc) -> str:
    """``## title``, the notes, the table (``reports.markdown.markdown_table``) or ``_empty_``, the footnotes and
    the bullets, paragraphs separated by blank lines, ending in a newline."""
    blocks = [f"## {doc.title}", *doc.notes]
    blocks.append(f"_{doc.empty}_" if doc.frame.empty else markdown_table(doc.frame, left=doc.left))
    blocks += doc.footnotes
    if doc.bullets:
        blocks.append("\n".join(f"- {line}" for line in doc.bullets))
    return "\n\n".join(blocks) + "\n"


def render_section(doc: TableDoc, *extra_html: str) -> Section:
    """The same table as one HTML section (``extra_html``, e.g. a figure, follows the table)."""
    section = Section(doc.title)
    for note in doc.notes:
        section.add_text(note)
    if doc.frame.empty:
        section.add_text(doc.empty)
    else:
        section.add_html(table_html(doc.frame))
    for line in [*doc.footnotes, *doc.bullets]:
        section.add_text(line)
    for fragment in extra_html:
        section.add_html(fragment)
    return section
