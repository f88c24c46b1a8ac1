"""A self-contained HTML report: inline CSS, every image base64-embedded, no scripts, no external URLs."""

from __future__ import annotations

import base64
import html
from dataclasses import dataclass, field

import pandas as pd

STYLE = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:2em auto;max-width:1200px;color:#222}
h1{font-size:1.5em}h2{font-size:1.2em;border-bottom:1px solid #ddd;padding-bottom:.2em;margin-top:1.8em}
table{border-collapse:collapse;font-size:.85em;margin:.6em 0}
th,td{border:1px solid #ccc;padding:.3em .6em;text-align:right}th{background:#f3f3f3}
td:first-child,th:first-child{text-align:left}
.note{color:#555;font-size:.85em}.gen{display:inline-block;vertical-align:top;margin:0 1.5em 1em 0}
img{max-width:100%}.row{display:flex;flex-wrap:wrap;align-items:flex-start;gap:1em}
figure{margin:0}figcaption{color:#555;font-size:.8em}code{background:#f3f3f3;padding:0 .2em}
"""


def data_uri(data: bytes, mime: str) -> str:
    return f"data:{mime};base64,{base64.b64encode(data).decode('ascii')}"


def image_tag(data: bytes, mime: str = "image/png", alt: str = "") -> str:
    return f'<img src="{data_uri(data, mime)}" alt="{html.escape(alt)}">'


def table_html(frame: pd.DataFrame) -> str:
    """A plain HTML table of strings (every cell escaped)."""
    head = "".join(f"<th>{html.escape(str(c))}</th>" for c in frame.columns)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(str(v))}</td>" for v in row) + "</tr>"
                   for row in frame.itertuples(index=False))
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


@dataclass
class Section:
    """One report section: a title and pre-rendered HTML fragments."""

    title: str
    parts: list[str] = field(default_factory=list)

    def add_text(self, text: str, css: str = "note") -> None:
        self.parts.append(f'<p class="{css}">{html.escape(text)}</p>')

    def add_html(self, fragment: str) -> None:
        self.parts.append(fragment)


def render_page(title: str, subtitle: str, sections: list[Section]) -> str:
    """The whole page as one string."""
    body = "".join(f"<section><h2>{html.escape(s.title)}</h2>{''.join(s.parts)}</section>" for s in sections)
    return (f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8"><title>{html.escape(title)}</title>'
            f"<style>{STYLE}</style></head><body><h1>{html.escape(title)}</h1>"
            f'<p class="note">{html.escape(subtitle)}</p>{body}</body></html>\n')
