"""A messy school enrollment made from LFW, with the photos the run never sees kept apart.

Real school folders hold mistakes: a student enrolled twice (one person over two folders),
photos filed under the wrong student, the same file saved in two folders. This module plants
those mistakes, with a fixed seed, into a tree of real LFW photos, and keeps back, for every
enrolled person, photos the run never sees (the "new photos" a classroom camera would take),
so that every estimate the suite makes can be checked through the loader against data it
never saw: those unseen photos, and the people in ``lfw_strangers`` who are never enrolled.

``embed_all`` embeds photos once through the suite's extraction, and ``measure`` reads a
published model through the loader on the photos the run never saw.

Used by ``bench/bench_open_set.py`` and by the tests of the stranger estimate.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np


@dataclass(frozen=True)
class Mistakes:
    """What to plant: people split over two folders, a share of photos moved, files copied."""

    split_people: int = 6
    moved_share: float = 0.05
    copied_files: int = 6

    @classmethod
    def none(cls) -> Mistakes:
        return cls(0, 0.0, 0)


@dataclass
class Enrollment:
    """Which folder holds which photo, what was planted, and the photos kept back."""

    folders: dict[str, list[Path]]  # student folder name -> source photos (in that folder's order)
    person_of_folder: dict[str, str]  # folder name -> LFW person shown by most of its photos
    unseen: dict[str, list[Path]]  # LFW person -> photos never put into the tree
    split: list[str] = field(default_factory=list)  # LFW persons enrolled in two folders
    moved: list[tuple[Path, str]] = field(default_factory=list)  # (photo, folder it was moved into)
    copied: list[tuple[Path, str]] = field(default_factory=list)  # (photo, second folder holding it too)

    def folders_of(self, person: str) -> set[str]:
        """Every folder that stands for this person (two for a person enrolled twice)."""
        return {f for f, p in self.person_of_folder.items() if p == person}

    def write(self, root: Path) -> Path:
        """Copy the photos into ``root`` (one sub-folder per student); returns ``root``."""
        for folder, photos in self.folders.items():
            dest = root / folder
            dest.mkdir(parents=True, exist_ok=True)
            for k, photo in enumerate(photos):
                shutil.copyfile(photo, dest / f"{k:02d}_{photo.name}")
        return root


def people_with(lfw: Path, min_photos: int) -> list[Path]:
    """LFW people folders with at least ``min_photos`` photos, sorted by name."""
    return [p for p in sorted(lfw.iterdir()) if p.is_dir() and len(list(p.glob("*.jpg"))) >= min_photos]


def make_enrollment(
    lfw: Path,
    *,
    n_people: int = 80,
    enrolled_photos: int = 10,
    unseen_photos: int = 4,
    mistakes: Mistakes | None = None,
    seed: int = 0,
) -> Enrollment:
    """``n_people`` LFW people with ``enrolled_photos`` photos each in the tree and ``unseen_photos``
    kept back, with ``mistakes`` planted (none by default)."""
    mistakes = mistakes or Mistakes.none()
    rng = np.random.default_rng(seed)
    pool = people_with(lfw, enrolled_photos + unseen_photos)
    if len(pool) < n_people:
        raise ValueError(f"only {len(pool)} LFW people have {enrolled_photos + unseen_photos} photos")
    people = [pool[i] for i in sorted(rng.choice(len(pool), n_people, replace=False))]
    folders: dict[str, list[Path]] = {}
    person_of: dict[str, str] = {}
    unseen: dict[str, list[Path]] = {}
    split = {people[i].name for i in rng.choice(n_people, mistakes.split_people, replace=False)}
    number = 1
    for person in people:
        photos = [Path(p) for p in rng.permutation(sorted(person.glob("*.jpg")))]
        enrolled, unseen[person.name] = photos[:enrolled_photos], photos[enrolled_photos:][:unseen_photos]
        parts = [enrolled[: len(enrolled) // 2], enrolled[len(enrolled) // 2 :]] if person.name in split else [enrolled]
        for part in parts:
            name = f"STU{number:03d}_{person.name}"
            folders[name], person_of[name] = list(part), person.name
            number += 1
    names = list(folders)
    all_photos = [(p, f) for f in names for p in folders[f]]
    moved: list[tuple[Path, str]] = []
    for i in rng.choice(len(all_photos), int(round(mistakes.moved_share * len(all_photos))), replace=False):
        photo, source = all_photos[i]
        target = names[int(rng.integers(len(names)))]
        while person_of[target] == person_of[source]:
            target = names[int(rng.integers(len(names)))]
        folders[source].remove(photo)
        folders[target].append(photo)
        moved.append((photo, target))
    moved_photos = {p for p, _ in moved}
    copied: list[tuple[Path, str]] = []
    candidates = [(p, f) for f in names for p in folders[f] if p not in moved_photos]
    for i in rng.choice(len(candidates), mistakes.copied_files, replace=False):
        photo, source = candidates[i]
        target = names[int(rng.integers(len(names)))]
        while person_of[target] == person_of[source]:
            target = names[int(rng.integers(len(names)))]
        folders[target].append(photo)
        copied.append((photo, target))
    return Enrollment(folders, person_of, unseen, sorted(split), moved, copied)


def stranger_photos(lfw_strangers: Path) -> list[Path]:
    """Every photo of the people who are never enrolled."""
    return sorted(lfw_strangers.glob("*/*.jpg"))


@dataclass(frozen=True)
class Measured:
    threshold: float
    recognised: float  # unseen photos of enrolled people accepted as (one of) their own folder(s)
    wrong_student: float  # ... accepted as somebody else
    strangers: float  # never-enrolled people's photos accepted as anybody
    n_unseen: int
    n_strangers: int


def embed_all(photos: list[Path], cache_dir: Path, detector: Path) -> dict[Path, np.ndarray]:
    """Embedding of every photo with a face (SCRFD ``detector`` + dlib), through the suite's
    extraction and its cache in ``cache_dir``."""
    from backend.recognizer.backends import BackendConfig
    from retraining.dataset import ImageRecord
    from retraining.extract import extract_with_models

    config = BackendConfig(
        detector="scrfd", detector_model=str(detector), embedder="dlib", device="cpu", detector_sessions=2
    )
    run = extract_with_models([ImageRecord(p, "x", "x") for p in photos], config, cache_dir, workers=2, progress=False)
    return {Path(r.path): v for r, v in zip(run.extraction.records, run.extraction.embeddings)}


def measure(
    out: Path,
    enrollment: Enrollment,
    vectors: dict[Path, np.ndarray],
    strangers: list[Path],
    thresholds: tuple[float, ...],
) -> list[Measured]:
    """Recognition, wrong student and strangers accepted, through the loader, at each threshold
    (an answer is accepted when its confidence is at least the threshold, as the loader decides)."""
    from backend.recognizer import FaceRecognizer

    recognizer = FaceRecognizer.load(out, device="cpu")
    unseen = [(person, p) for person, photos in enrollment.unseen.items() for p in photos if p in vectors]
    known = recognizer.classify(np.stack([vectors[p] for _, p in unseen]), threshold=0.0, top_k=1)
    odd = recognizer.classify(np.stack([vectors[p] for p in strangers if p in vectors]), threshold=0.0, top_k=1)
    rows = []
    for t in thresholds:
        right = wrong = 0
        for (person, _), r in zip(unseen, known):
            if r.confidence >= t:
                if r.top_k[0].student_id in {f.split("_")[0] for f in enrollment.folders_of(person)}:
                    right += 1
                else:
                    wrong += 1
        accepted = sum(r.confidence >= t for r in odd)
        rows.append(Measured(t, right / len(known), wrong / len(known), accepted / len(odd), len(known), len(odd)))
    return rows
