"""models/MODEL_README.md: what the model is and how to use it, rendered from one :class:`~retraining.summary.RunSummary`
with templates/MODEL_README.md.j2."""

from __future__ import annotations

from ..summary import RunSummary
from .templating import render
from .words import stranger_sentence


def model_readme_text(s: RunSummary) -> str:
    """models/MODEL_README.md."""
    os_ = s.evaluation.open_set
    stranger = stranger_sentence(s.verdict, os_.n_unknown_photos) if s.verdict.measured and os_ is not None else ""
    return render("MODEL_README.md.j2", s=s, stranger=stranger)
