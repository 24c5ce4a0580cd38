"""Index the student photo folders (read-only): who is enrolled and which files are photos.

``STU001_Alice_Smith/`` → student_id ``STU001``, name ``Alice Smith``. A folder that does
not follow the pattern still counts (its id is the folder name) and is listed in the
report. Enrollment is exactly what the folders say: two folders that give the same student id
stop the run (:func:`index_dataset`), and an output root that would write into the data folder
is refused (:func:`refuse_overlap`). Nothing under the data folder is ever written, moved or
followed outside it.
"""

from __future__ import annotations

import errno
import logging
import os
import re
import unicodedata
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from backend.recognizer.errors import ImageError
from backend.recognizer.images import IMAGE_EXTENSIONS, is_image_name, require_regular
from backend.recognizer.paths import OutputPaths

from .errors import DatasetError
from .files import shown, write_csv
from .video import VIDEO_EXTENSIONS, is_video_name

log = logging.getLogger(__name__)

FOLDER_PATTERN = re.compile(r"^(?P<id>[A-Za-z]{2,}\d+)_(?P<name>.+)$")
HIDDEN_JUNK = frozenset({"thumbs.db", "desktop.ini", ".ds_store"})
#: Longest path (in bytes, absolute) that the later stages can open on Linux (PATH_MAX 4096 with its NUL).
MAX_PATH_BYTES = 4095


@dataclass(frozen=True)
class ImageRecord:
    """One photo file that belongs to one student, a clip file, or one frame taken from a clip.

    A frame's ``path`` is its name in every report (``clip.mov#t=3.20s``, :func:`~retraining.video.frame_name`);
    ``clip`` is the file it came from and ``seconds`` its time there.
    """

    path: Path
    student_id: str
    student_name: str
    clip: Path | None = None
    seconds: float | None = None

    @property
    def source(self) -> Path:
        """The file this record's face came from: the photo, or the clip of a frame. Held-out
        evaluation and the data-quality checks treat one source as one piece of evidence."""
        return self.clip if self.clip is not None else self.path

    @property
    def is_clip(self) -> bool:
        """A clip file, not yet turned into frames."""
        return self.clip is None and is_video_name(self.path)


@dataclass(frozen=True)
class Student:
    student_id: str
    student_name: str
    folder: str
    follows_pattern: bool
    num_images: int  # photos and clips


@dataclass
class DatasetIndex:
    """What the data folder holds."""

    data_dir: Path
    students: list[Student]
    records: list[ImageRecord]
    ignored_files: list[Path] = field(default_factory=list)  # not photos or clips (by extension) or hidden
    skipped: list[tuple[Path, str]] = field(default_factory=list)  # unusable entries, with reasons
    loose_files: list[Path] = field(default_factory=list)  # files directly in data_dir
    subfolders: list[Path] = field(default_factory=list)  # folders inside student folders (their photos count)
    renamed: list[tuple[Path, str]] = field(default_factory=list)  # student folders whose id/name had to be cleaned

    def ignored(self) -> list[tuple[Path, str]]:
        """Every ignored entry with the reason, in words."""
        out = [
            (p, "a file directly in the data folder, not in a student folder: move it into one")
            for p in self.loose_files
        ]
        for p in self.ignored_files:
            if p.name.startswith("."):
                out.append((p, "hidden file or folder"))
            elif p.name.lower() in HIDDEN_JUNK:
                out.append((p, "system file"))
            else:
                out.append((p, f"not a photo or video type ({p.suffix.lower() or 'no extension'})"))
        return sorted(out, key=lambda e: str(e[0]))

    def ignored_by_extension(self) -> Counter[str]:
        """How many files of each extension were ignored (hidden and system files not counted)."""
        return Counter(
            p.suffix.lower() or "(no extension)"
            for p in [*self.ignored_files, *self.loose_files]
            if not p.name.startswith(".") and p.name.lower() not in HIDDEN_JUNK and not p.is_dir()
        )

    def skipped_student_folders(self) -> list[Path]:
        """Folders directly in the data folder that were not used as students (links, paths too long, …)."""
        return [p for p, _ in self.skipped if p.parent == self.data_dir]

    @property
    def nonconforming_folders(self) -> list[str]:
        return [s.folder for s in self.students if not s.follows_pattern]

    def names(self) -> dict[str, str]:
        return {s.student_id: s.student_name for s in self.students}

    def without_faces(self, embedded: dict[str, int]) -> tuple[str, ...]:
        """The students of whom no photo or clip gave a face (``embedded``: faces per student): left out of the model."""
        return tuple(s.student_id for s in self.students if embedded.get(s.student_id, 0) == 0)


def clean_text(text: str) -> str:
    """``text`` safe for an id, a CSV cell or a report line: bytes that are not UTF-8 shown as
    ``\\xff`` (as the file system holds them), control characters (newline, tab, …) as ``_``."""
    return "".join("_" if unicodedata.category(c) in ("Cc", "Cf", "Zl", "Zp") else c for c in shown(text))


def parse_folder_name(folder: str) -> tuple[str, str, bool]:
    """``STU001_Alice_Smith`` → ``("STU001", "Alice Smith", True)``; otherwise id = name = folder.

    Both are cleaned (:func:`clean_text`): a folder name with a newline or bytes that are not
    UTF-8 still gives a usable id, and the report says what was changed."""
    folder = clean_text(folder)
    match = FOLDER_PATTERN.match(folder)
    if match:
        return match.group("id"), match.group("name").replace("_", " ").strip(), True
    return folder, folder.replace("_", " ").strip(), False


def index_dataset(data_dir: str | Path) -> DatasetIndex:
    """List student folders and their photos. Raises :class:`DatasetError` if there are none."""
    data_dir = Path(data_dir)
    if not data_dir.is_dir():
        raise DatasetError(
            f"Student photo folder not found: {data_dir}. Create it with one sub-folder per student "
            f"(e.g. {data_dir / 'STU001_Alice_Smith'}) holding that student's photos, or pass --data-dir."
        )
    root_real = data_dir.resolve()
    index = DatasetIndex(data_dir, [], [])
    folders: list[tuple[Path, str, str, bool]] = []  # (folder, student id, name, follows the pattern)
    for entry in sorted(data_dir.iterdir(), key=lambda p: p.name):
        if entry.name.startswith(".") or entry.name.lower() in HIDDEN_JUNK:
            index.ignored_files.append(entry)
            continue
        too_long = _unreachable(entry)
        if too_long:
            index.skipped.append((entry, too_long))
            continue
        if not entry.is_dir():
            index.loose_files.append(entry)
            continue
        if entry.is_symlink():  # a student folder elsewhere: never followed outside the data folder
            index.skipped.append(
                (
                    entry,
                    "is a link to a folder; links to folders are not followed "
                    "(copy the photos into a real folder instead)",
                )
            )
            continue
        student_id, name, conforming = parse_folder_name(entry.name)
        if clean_text(entry.name) != entry.name:
            index.renamed.append(
                (
                    entry,
                    f"the folder name holds control characters or bytes that are not text; used as student "
                    f"{student_id!r} ({name!r}); rename the folder to {clean_text(entry.name)!r}",
                )
            )
        folders.append((entry, student_id, name, conforming))
    refuse_shared_ids(data_dir, [(entry.name, student_id) for entry, student_id, _, _ in folders])
    for entry, student_id, name, conforming in folders:
        photos = _photos_in(entry, root_real, student_id, name, index)
        index.students.append(Student(student_id, name, entry.name, conforming, len(photos)))
        index.records.extend(photos)
    if not index.students:
        raise DatasetError(
            f"No student folders in {data_dir}. Add one sub-folder per student "
            f"(e.g. STU001_Alice_Smith) with that student's photos."
        )
    if not index.records:
        ignored = index.ignored_by_extension()
        found = (
            " Ignored: " + ", ".join(f"{n} {ext} file{'s' if n > 1 else ''}" for ext, n in ignored.most_common()) + "."
            if ignored
            else ""
        )
        raise DatasetError(
            f"The student folders in {data_dir} contain no photos.{found} Accepted photo types: "
            f"{', '.join(sorted(IMAGE_EXTENSIONS))}, and videos {', '.join(sorted(VIDEO_EXTENSIONS))} (any case). Put each "
            "student's photos (e.g. JPEG or HEIC from a phone) or a short video in their folder and run again."
        )
    log.debug("Indexed %d photos of %d students in %s", len(index.records), len(index.students), data_dir)
    return index


def id_key(student_id: str) -> str:
    """What makes two student ids the same one: equal after Unicode normalisation (NFC, as macOS
    and Windows may spell ``ë`` differently) and ignoring case. ``STU001`` and ``stu001`` are one
    id: Windows and macOS cannot even hold both folders, and a teacher reads them as one student."""
    return unicodedata.normalize("NFC", student_id).casefold()


def refuse_shared_ids(data_dir: Path, folders: list[tuple[str, str]]) -> None:
    """Raise :class:`DatasetError` when two student folders (``(folder name, student id)``) give the
    same student id (:func:`id_key`): the model knows a student by id, so one of them would be
    silently merged or left out. Checked before any photo is read or anything is written."""
    groups: dict[str, list[tuple[str, str]]] = {}
    for folder, student_id in folders:
        groups.setdefault(id_key(student_id), []).append((folder, student_id))
    shared = [group for group in groups.values() if len(group) > 1]
    if not shared:
        return
    clashes = "; ".join(
        f"student id {_visible(group[0][1])} is given by folders "
        + ", ".join(_visible(folder) for folder, _ in group[:-1])
        + f" and {_visible(group[-1][0])}"
        + (
            f" (ids {', '.join(sorted({_visible(i) for _, i in group}))} differ only in upper/lower case and count as one)"
            if len({i for _, i in group}) > 1
            else ""
        )
        for group in shared
    )
    raise DatasetError(
        f"Student folders in {_visible(str(data_dir))} give the same student id: {clashes}. The model knows each "
        "student by this id, so one of them would be left out or mixed with the other. Nothing was changed. Rename "
        "one folder (all but one where more share an id) so each student has their own id (e.g. STU001_Alice_Smith "
        "and STU002_Bob_Jones), then run again."
    )


def _visible(text: str) -> str:
    """``text`` quoted for a one-line message: control characters (tab, newline) written as ``\\t``, ``\\n``."""
    shown_text = "".join(
        c.encode("unicode_escape").decode("ascii") if unicodedata.category(c) in ("Cc", "Cf", "Zl", "Zp") else c
        for c in shown(text)
    )
    return f"'{shown_text}'"


def refuse_overlap(data_dir: Path, paths: OutputPaths) -> None:
    """Raise :class:`DatasetError` when the run would write into the student photo folder, or the
    photo folder lies inside a folder this suite writes and cleans up (``<root>/backend/models``,
    ``<root>/models``). The default layout, photos in ``<root>/backend/dataset/processed``, is fine:
    nothing is written there. Checked before anything is read or written."""
    data = _comparable(data_dir)
    written = (paths.backend_models, paths.models_dir)
    problem = ""
    if data == _comparable(paths.root):
        problem = f"is also the output root: the run writes {written[0]} and {written[1]} inside it"
    else:
        for target in (*written, *paths.legacy_artifacts()):
            if data == _comparable(target) or data in _comparable(target).parents:
                problem = f"holds {target}, which the run writes or replaces"
                break
            if target in written and _comparable(target) in data.parents:
                problem = f"lies inside {target}, which the run writes and cleans up"
                break
    if problem:
        raise DatasetError(
            f"The student photo folder {data_dir} {problem}; the run never writes into the photos, so it stopped. "
            f"Nothing was changed. Keep the two apart: pass an --output-root outside the photo folder, or a "
            f"--data-dir outside {written[0]} and {written[1]} (the usual place for the photos is "
            f"{paths.root / 'backend' / 'dataset' / 'processed'})."
        )


def _comparable(path: Path) -> Path:
    """``path`` made absolute with links resolved, in the file system's case rule (Windows: any case)."""
    try:
        real = Path(path).resolve()
    except (OSError, RuntimeError):  # a link loop on the way (Python < 3.13 raises RuntimeError)
        real = Path(os.path.abspath(path))
    return Path(os.path.normcase(real))


def _unreachable(path: Path) -> str | None:
    """Why ``path`` cannot be opened by name (too long for the system, a name over 255 bytes, a link
    loop), in words; ``None`` when it can. Such an entry is skipped, never a crash later."""
    length = len(os.fsencode(os.path.abspath(path)))
    if length > MAX_PATH_BYTES:
        return (
            f"the path is too long ({length} bytes; at most {MAX_PATH_BYTES} can be opened): move the photos to a "
            "folder nearer the student folder, or shorten the folder names"
        )
    try:
        os.lstat(path)
    except OSError as err:
        if err.errno == errno.ENAMETOOLONG:
            return "the path or a name in it is too long to open: shorten the folder or file names"
        if err.errno == errno.ELOOP:
            return "cannot open it: too many links on the way (a link loop?); replace the links with real folders"
        return None  # gone, or no permission: the later steps say why
    return None


def _photos_in(folder: Path, root_real: Path, student_id: str, name: str, index: DatasetIndex) -> list[ImageRecord]:
    photos: list[ImageRecord] = []

    def unreadable(err: OSError) -> None:  # os.walk would otherwise skip the folder silently
        where = Path(err.filename) if err.filename else folder
        index.skipped.append((where, f"cannot open the folder ({err.strerror or err}); check its permissions"))

    for dirpath, dirnames, filenames in os.walk(folder, onerror=unreadable, followlinks=False):
        unreachable: set[str] = set()
        for d in dirnames:
            if d.startswith("."):
                index.ignored_files.append(Path(dirpath) / d)
                continue
            why = _unreachable(Path(dirpath) / d)
            if why:
                unreachable.add(d)
                index.skipped.append((Path(dirpath) / d, why))
            elif (Path(dirpath) / d).is_symlink():  # os.walk lists it but (followlinks=False) never enters it
                index.skipped.append((Path(dirpath) / d, "is a link to a folder; links to folders are not followed"))
            elif _usable_name(Path(d)):
                index.skipped.append((Path(dirpath) / d, "is a folder named like a photo or video, not one"))
        dirnames[:] = sorted(
            d
            for d in dirnames
            if not d.startswith(".")
            and d not in unreachable
            and not _usable_name(Path(d))
            and not (Path(dirpath) / d).is_symlink()
        )
        index.subfolders.extend(Path(dirpath) / d for d in dirnames)
        for filename in sorted(filenames):
            path = Path(dirpath) / filename
            if filename.startswith(".") or filename.lower() in HIDDEN_JUNK or not _usable_name(path):
                index.ignored_files.append(path)
                continue
            why = _unreachable(path)
            if why:
                index.skipped.append((path, why))
                continue
            try:
                real = path.resolve(strict=True)
            except (OSError, RuntimeError) as err:  # broken link or symlink loop
                index.skipped.append((path, _unfollowable(err)))
                continue
            if path.is_symlink() and not real.is_relative_to(root_real):
                index.skipped.append((path, "link points outside the data folder"))
                continue
            try:  # listed as skipped here; read_photo refuses it too, without ever blocking on it
                require_regular(os.lstat(real).st_mode)
            except OSError:
                pass  # decoding says why it cannot be read
            except ImageError as err:
                index.skipped.append((path, str(err)))
                continue
            photos.append(ImageRecord(path, student_id, name))
    return photos


def _usable_name(path: Path) -> bool:
    """Named like a photo or a clip: the files a student folder is read for."""
    return is_image_name(path) or is_video_name(path)


def _unfollowable(err: OSError | RuntimeError) -> str:
    """Why a link cannot be used, in words (Python < 3.13 raises RuntimeError on a loop, later ELOOP)."""
    if isinstance(err, RuntimeError) or getattr(err, "errno", None) == errno.ELOOP:
        return "cannot follow the link: it loops back on itself; replace it with the photo"
    if isinstance(err, FileNotFoundError):
        return "cannot follow the link: the file it points to does not exist (moved or deleted?)"
    if isinstance(err, PermissionError):
        return "cannot follow the link (permission denied)"
    return f"cannot follow the link ({type(err).__name__}: {getattr(err, 'strerror', None) or err})"


def write_labels_csv(path: Path, index: DatasetIndex, embedded_counts: dict[str, int] | None = None) -> None:
    """``labels.csv``: student_id, student_name, num_images (+ num_embedded when known)."""
    header = ["student_id", "student_name", "num_images"]
    if embedded_counts is not None:
        header.append("num_embedded")
    rows: list[list[object]] = []
    for s in index.students:
        row: list[object] = [s.student_id, s.student_name, s.num_images]
        if embedded_counts is not None:
            row.append(embedded_counts.get(s.student_id, 0))
        rows.append(row)
    write_csv(path, header, rows)
