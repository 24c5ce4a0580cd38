"""Numbers and layout as the reports print them: the filters of every template (templating.py).

Each takes a value of the record and returns its text, so a template says ``{{ rate|pct }}`` and
every output writes a rate, a threshold or a padded column the same way.
"""

from __future__ import annotations

import textwrap
from collections.abc import Iterable

from ..session_rates import REPORT_WIDTH


def pct(value: float | None, digits: int = 1) -> str:
    """0.0123 → "1.2%"; None (not measured) → "n/a"."""
    return "n/a" if value is None else f"{value:.{digits}%}"


def fmt_threshold(t: float) -> str:
    """0.8 → "0.80"; a threshold set with more digits keeps them (0.995 → "0.995")."""
    return f"{t:.2f}" if abs(round(t, 2) - t) < 1e-9 else f"{t:.4g}"


def one_in(rate: float | None) -> str:
    """A share of strangers in words a teacher reads: "1 in 100", "1 in 30", "3 in 10", "none"."""
    if rate is None:
        return "an unknown share of"
    if rate <= 0:
        return "none of the"
    if rate >= 0.95:
        return "almost all"
    if rate >= 0.1:
        return f"{round(rate * 10):.0f} in 10"
    return f"1 in {float(f'{1 / rate:.2g}'):.0f}"


def strangers_in_words(rate: float | None) -> str:
    """ "about 1 in 150 strangers accepted", or "no stranger accepted in the test"."""
    if rate is not None and rate <= 0:
        return "no stranger accepted in the test"
    return f"about {one_in(rate)} strangers accepted"


def decimals(value: float, digits: int) -> str:
    """A number with a fixed count of decimals: seconds, confidences, the recommended threshold."""
    return f"{value:.{digits}f}"


def significant(value: float, digits: int = 3) -> str:
    """A confidence bar with ``digits`` significant digits (0.99734 → "0.997")."""
    return f"{value:.{digits}g}"


def ljust(value: object, width: int) -> str:
    """A table cell aligned left in ``width`` characters."""
    return str(value).ljust(width)


def rjust(value: object, width: int) -> str:
    """A table cell aligned right in ``width`` characters."""
    return str(value).rjust(width)


def widest(values: Iterable[object]) -> int:
    """Characters of the longest value: the width of a column that holds them all."""
    return max((len(str(v)) for v in values), default=0)


def wrap(paragraph: str) -> str:
    """A paragraph of training_report.txt, wrapped at its width under a hanging indent; each line ends
    with a newline (a ``{% filter wrap %}`` block stands for whole lines of the report, and the line
    breaks inside the block are spaces)."""
    lines = textwrap.wrap(paragraph, REPORT_WIDTH, initial_indent="  ", subsequent_indent="     ")
    return "".join(line + "\n" for line in lines)


def near(value: float, other: float | None) -> bool:
    """Jinja test: the same threshold, up to the noise of float arithmetic."""
    return other is not None and abs(value - other) < 1e-9


FILTERS = {
    "pct": pct,
    "threshold": fmt_threshold,
    "one_in": one_in,
    "strangers_in_words": strangers_in_words,
    "decimals": decimals,
    "significant": significant,
    "ljust": ljust,
    "rjust": rjust,
    "widest": widest,
    "wrap": wrap,
}
TESTS = {"near": near}
