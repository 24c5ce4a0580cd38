"""``models/heldout.npz``: which rows of ``X.npy`` were held out, their student ids and the model's answers.

Written by every run (``report.write_reports``) and read by the quality gate when
``--promote`` publishes a waiting model (``gate.candidate_from_folder``): one type, one
writer, one reader, so the two cannot disagree on a key.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np


@dataclass(frozen=True)
class Heldout:
    index: np.ndarray  # rows of X.npy
    true: np.ndarray  # their student ids
    pred: np.ndarray  # the model's answers (top student id)

    def save(self, path: Path) -> None:
        np.savez(
            path,
            allow_pickle=False,
            index=np.asarray(self.index, dtype=np.int64),
            true=np.asarray(self.true).astype(str),
            pred=np.asarray(self.pred).astype(str),
        )

    @classmethod
    def load(cls, path: Path) -> Heldout:
        """Read it back (no pickle); ``ValueError``/``OSError``/``KeyError`` when it is damaged."""
        with np.load(path, allow_pickle=False) as held:
            index, true, pred = held["index"], held["true"], held["pred"]
        if not (len(index) == len(true) == len(pred)):
            raise ValueError(f"{path}: index, true and pred differ in length")
        return cls(index.astype(np.int64), true.astype(str), pred.astype(str))
