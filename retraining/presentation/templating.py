"""The one Jinja environment every output is rendered with: the console summaries, training_report.txt,
MODEL_README.md and report.html.

Templates live in ``templates/``; a name ending in ``.html.j2`` is autoescaped, the text ones are not.
A variable a template names but the context lacks is an error, never an empty string. The layout of
a text template is its lines: a line holding only a ``{% ... %}`` tag prints nothing, a line of text
that ends in a tag keeps its newline only when the tag ends in ``+%}``, and ``{%-`` joins a tag to the
line above. The filters (``{{ rate|pct }}``) are formats.py's.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import jinja2

from .formats import FILTERS, TESTS

TEMPLATES = Path(__file__).with_name("templates")

ENV = jinja2.Environment(
    loader=jinja2.FileSystemLoader(TEMPLATES),
    autoescape=jinja2.select_autoescape(enabled_extensions=("html.j2",), default_for_string=False, default=False),
    undefined=jinja2.StrictUndefined,
    keep_trailing_newline=True,
    trim_blocks=True,
    lstrip_blocks=True,
)
ENV.filters.update(FILTERS)
ENV.tests.update(TESTS)


def render(name: str, **context: Any) -> str:
    """The text of template ``name`` for ``context``."""
    return ENV.get_template(name).render(**context)


def render_lines(name: str, **context: Any) -> list[str]:
    """Template ``name``'s lines (split at newlines only), for a section also placed inside another output."""
    text = render(name, **context)
    return text.removesuffix("\n").split("\n") if text else []
