"""Photos → one embedding each: decode → detect → keep the largest face → crop → embed (batched).

A photo that cannot be used is skipped with a reason; the run goes on. Crops are
buffered and embedded ``batch_size`` at a time, so memory stays flat in the number of
photos (only the float32 embeddings grow).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable

import numpy as np
from tqdm import tqdm

from .dataset import ImageRecord
from .embedder import Embedder
from .errors import ImageError
from .faces import Detector, face_crops
from .images import decode_image
from .quality import sharpness

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class FaceInfo:
    """What detection saw in one kept photo (for the data-quality report)."""

    num_faces: int
    face_size: float
    score: float
    padded_retry: bool
    sharpness: float = 0.0  # variance of the Laplacian of the grey crop


@dataclass
class Extraction:
    """Embeddings of the usable photos, aligned row by row with ``records`` and ``faces``."""

    embeddings: np.ndarray
    records: list[ImageRecord]
    faces: list[FaceInfo]
    skipped: list[tuple[Path, str]] = field(default_factory=list)

    @property
    def student_ids(self) -> np.ndarray:
        return np.array([r.student_id for r in self.records], dtype=str)

    def counts(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for r in self.records:
            out[r.student_id] = out.get(r.student_id, 0) + 1
        return out


def prepare_crop(record: ImageRecord, detector: Detector, embedder: Embedder) -> tuple[np.ndarray, FaceInfo]:
    """One photo → (aligned crop of its largest face, what was found). Raises ImageError."""
    rgb = decode_image(record.path)
    found = face_crops(detector, rgb, embedder.crop, max_faces=1)
    if not found.faces:
        raise ImageError("no face found (also tried with a padded border)")
    face = found.faces[0]
    crop = found.crops[0]
    return crop, FaceInfo(len(found.faces), face.size, face.score, found.padded_retry, sharpness(crop))


def extract_embeddings(records: Iterable[ImageRecord], detector: Detector, embedder: Embedder, *,
                       batch_size: int = 32, progress: bool = True, total: int | None = None) -> Extraction:
    """Embed every usable photo; the others go to ``skipped`` with their reason."""
    batch_size = max(1, int(batch_size))
    kept: list[ImageRecord] = []
    infos: list[FaceInfo] = []
    chunks: list[np.ndarray] = []
    skipped: list[tuple[Path, str]] = []
    crops: list[np.ndarray] = []
    pending: list[tuple[ImageRecord, FaceInfo]] = []

    def flush() -> None:
        if not crops:
            return
        vectors = embedder.embed(np.stack(crops))
        chunks.append(vectors.astype(np.float32, copy=False))
        for rec, info in pending:
            kept.append(rec)
            infos.append(info)
        crops.clear()
        pending.clear()

    for record in tqdm(records, total=total, desc="Extracting faces", unit="photo", disable=not progress):
        try:
            crop, info = prepare_crop(record, detector, embedder)
        except ImageError as err:
            log.warning("Skipped %s: %s", record.path, err)
            skipped.append((record.path, str(err)))
            continue
        except Exception as err:  # a detector/decoder bug must not end the run; report it
            log.exception("Unexpected error on %s", record.path)
            skipped.append((record.path, f"unexpected error: {type(err).__name__}: {err}"))
            continue
        crops.append(crop)
        pending.append((record, info))
        if len(crops) >= batch_size:
            flush()
    flush()
    embeddings = np.concatenate(chunks) if chunks else np.zeros((0, embedder.dim), dtype=np.float32)
    return Extraction(embeddings, kept, infos, skipped)
