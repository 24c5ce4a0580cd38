"""What ``retrain_model.py --erase ID`` costs, beside a re-run that finds every photo in the cache.

    .venv/bin/python bench/bench_erase.py [--dataset orl lfw] [--people 150] [--detector mtcnn scrfd]
                                          [--student 7] [--workers N] [--keep DIR]

Each dataset is written as student folders in a temp dir (copies): ``orl`` as 40 students
``STU001_Orl_S1`` … (``../shared/data/orl``), ``lfw`` as the first ``--people`` people of
``../shared/data/lfw`` (``STU001_First_Last``). Every command is ``retrain_model.py`` in its own
process, as a school runs it (normal verbosity, stderr captured), with the offline backends:
``mtcnn`` = ``--detector mtcnn --embedder dlib --device cpu``, ``scrfd`` = ``--detector scrfd
--detector-model ../shared/data/weights/scrfd_2.5g_bnkps.onnx --embedder dlib --device cpu``.
Times are wall-clock seconds of the whole command (interpreter start, imports and model loading
included), so the baseline and the erasure pay the same fixed costs.

1. first run (every photo embedded), then the same command again: every photo a cache hit. That
   second run is the **baseline**: a retraining that embeds nothing, what an erasure that
   retrains should cost.
2. "the live model holds the student": the student's folder (``--student``, STU007 by default)
   is moved out of the data folder, then ``--erase STU007``: timed. Checked from its console:
   it retrained (``retrained`` in its summary) and its ``Faces: N photos embedded (M reused from
   the last run), K skipped`` line says that no photo was embedded anew (N + K - M = 0).
3. "folder deleted and retrained already, a kept version holds them": the folder is put back,
   a run enrols the student again (their photos are embedded anew: the erasure dropped them from
   the cache), the folder is moved out, a run retrains without them (the live model no longer
   holds them, the kept version does), then ``--erase STU007``: timed; no retraining expected
   (no ``Faces:`` line, no ``retrained``).
4. a plain run without the student (cache hits): the first erasure's retraining without the
   erasure, measured last, so a drift of the machine's load shows beside the baseline.

After each erasure the bench checks, independently of the command's own check: no model folder
holds the id (``retraining.face_data.model_places``), the cache holds none of the student's photos
(by SHA-256), and no file under the output root (the erasure records aside) names the id or the
student's name. The ratio column is each time over the baseline of the same run. Not a test.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
SHARED = Path(os.environ.get("SHARED_DATA", ROOT.parent / "shared" / "data"))

from backend.recognizer.hashing import sha256_file
from backend.recognizer.paths import OutputPaths
from retraining.dataset import parse_folder_name
from retraining.face_data import model_places

FACES_LINE = re.compile(r"Faces: (\d+) photos embedded \((\d+) reused from the last run\), (\d+) skipped")
BACKENDS = {
    "mtcnn": ["--detector", "mtcnn", "--embedder", "dlib", "--device", "cpu"],
    "scrfd": [
        "--detector",
        "scrfd",
        "--detector-model",
        str(SHARED / "weights" / "scrfd_2.5g_bnkps.onnx"),
        "--embedder",
        "dlib",
        "--device",
        "cpu",
    ],
}


@dataclass
class Run:
    label: str
    seconds: float
    code: int
    stdout: str
    stderr: str
    load: tuple[float, float]  # 1-minute load average before and after

    @property
    def faces(self) -> tuple[int, int, int] | None:
        """(embedded, reused, skipped) from the run's ``Faces:`` line; None when it did not retrain."""
        found = FACES_LINE.findall(self.stderr)
        if len(found) > 1:
            raise SystemExit(f"{self.label}: {len(found)} 'Faces:' lines, expected at most one")
        return tuple(map(int, found[0])) if found else None  # type: ignore[return-value]

    @property
    def anew(self) -> int | None:
        """Photos decoded, detected and embedded in this run (not reused): embedded + skipped - reused."""
        f = self.faces
        return None if f is None else f[0] + f[2] - f[1]


def write_orl(data: Path) -> list[str]:
    folders = []
    for i in range(1, 41):
        name = f"STU{i:03d}_Orl_S{i}"
        shutil.copytree(SHARED / "orl" / f"s{i}", data / name)
        folders.append(name)
    return folders


def write_lfw(data: Path, people: int) -> list[str]:
    source = sorted(p for p in (SHARED / "lfw").iterdir() if p.is_dir())[:people]
    if len(source) < people:
        raise SystemExit(f"only {len(source)} people in {SHARED / 'lfw'}")
    folders = []
    for i, person in enumerate(source, 1):
        name = f"STU{i:03d}_{person.name}"
        shutil.copytree(person, data / name)
        folders.append(name)
    return folders


def retrain(label: str, data: Path, out: Path, backend: list[str], extra: list[str], workers: int | None) -> Run:
    cmd = [sys.executable, str(ROOT / "retrain_model.py"), "--data-dir", str(data), "--output-root", str(out)]
    cmd += [*backend, "--no-open", *extra]
    if workers is not None:
        cmd += ["--workers", str(workers)]
    load0 = os.getloadavg()[0]
    started = time.perf_counter()
    done = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, stdin=subprocess.DEVNULL)
    seconds = time.perf_counter() - started
    run = Run(label, seconds, done.returncode, done.stdout, done.stderr, (load0, os.getloadavg()[0]))
    print(f"  [{time.strftime('%H:%M:%S')}] {label}: {seconds:.1f} s, exit {done.returncode}", flush=True)
    return run


def must_succeed(run: Run) -> None:
    if run.code != 0:
        print(f"--- {run.label} failed (exit {run.code}); stderr:\n{run.stderr}\n--- stdout:\n{run.stdout}")
        raise SystemExit(1)


def holders(out: Path, sid: str) -> list[str]:
    return [p.label for p in model_places(OutputPaths.at(out)) if sid in p.students]


def cache_keys(out: Path) -> set[str]:
    npz_path = OutputPaths.at(out).cache_dir / "embeddings.npz"
    if not npz_path.is_file():
        return set()
    with np.load(npz_path, allow_pickle=False) as npz:
        return {str(k) for k in npz["keys"]} | {str(k) for k in npz["skipped_keys"]}


def files_naming(out: Path, words: list[str]) -> list[str]:
    """Files under ``out`` (the erasure records aside) that hold one of ``words`` as a whole word,
    in UTF-8 or UTF-32 (numpy string arrays)."""
    patterns = []
    for w in words:
        patterns.append(re.compile(rb"(?<![A-Za-z0-9])" + re.escape(w.encode()) + rb"(?![A-Za-z0-9])"))
        patterns.append(re.compile(re.escape(w.encode("utf-32-le")) + rb"(?![A-Za-z0-9]\x00\x00\x00)"))
    records = OutputPaths.at(out).erasures_dir
    found = []
    for path in sorted(p for p in out.rglob("*") if p.is_file() and not p.is_symlink()):
        if records in path.parents:
            continue
        data = path.read_bytes()
        if any(p.search(data) for p in patterns):
            found.append(str(path.relative_to(out)))
    return found


def check_erased(run: Run, out: Path, folder: str, photos: set[str], retrained: bool) -> list[str]:
    """What is wrong after an erasure ([] = nothing)."""
    sid, name, _ = parse_folder_name(folder)
    problems = []
    if run.code != 0:
        problems.append(f"exit {run.code}: {run.stderr.strip().splitlines()[-1:]}")
    if ("retrained :" in run.stdout) != retrained:
        problems.append(f"expected {'a' if retrained else 'no'} 'retrained' line in its summary")
    if retrained and run.anew != 0:
        problems.append(f"{run.anew} photo(s) embedded anew (Faces line: {run.faces})")
    if not retrained and run.faces is not None:
        problems.append(f"it retrained (Faces line: {run.faces})")
    if left := holders(out, sid):
        problems.append(f"still held by {left}")
    if cached := photos & cache_keys(out):
        problems.append(f"{len(cached)} of the student's photos still in the cache")
    if named := files_naming(out, [sid, name, folder]):
        problems.append(f"files still naming {sid}/{name!r}: {named[:5]}")
    return problems


def scenario(
    dataset: str, backend_name: str, people: int, student: int, workers: int | None, keep: Path | None
) -> None:
    backend = BACKENDS[backend_name]
    print(f"\n== {dataset}, {backend_name} + dlib ==", flush=True)
    with tempfile.TemporaryDirectory(prefix="bench_erase_") as tmp_name:
        tmp = Path(tmp_name)
        data, out, aside = tmp / "data", tmp / "out", tmp / "aside"
        data.mkdir()
        aside.mkdir()
        folders = write_orl(data) if dataset == "orl" else write_lfw(data, people)
        folder = folders[student - 1]
        sid = parse_folder_name(folder)[0]
        photos = {sha256_file(p) for p in (data / folder).iterdir() if p.is_file()}
        total = sum(1 for f in folders for p in (data / f).iterdir() if p.is_file())
        print(f"  {len(folders)} students, {total} photos; erasing {folder} ({len(photos)} photos)", flush=True)

        def run(label: str, *extra: str) -> Run:
            return retrain(label, data, out, backend, list(extra), workers)

        first = run("first run (every photo embedded)")
        must_succeed(first)
        base = run("baseline: the same run again (cache hits)")
        must_succeed(base)
        rows: list[tuple[Run, str]] = [(first, ""), (base, "")]

        # 2: the live model holds the student
        held = holders(out, sid)
        shutil.move(str(data / folder), str(aside / folder))
        erase_live = run(f"--erase {sid}, live model holds them", "--erase", sid)
        rows.append((erase_live, "; ".join(check_erased(erase_live, out, folder, photos, retrained=True)) or "ok"))
        print(f"    held before: {held}", flush=True)

        # 3: the folder was deleted and a run retrained without them; a kept version holds them
        shutil.move(str(aside / folder), str(data / folder))
        again = run("folder back: the student enrolled again")
        must_succeed(again)
        shutil.move(str(data / folder), str(aside / folder))
        without = run("folder out: retrained without them (cache hits)")
        must_succeed(without)
        held = holders(out, sid)
        erase_kept = run(f"--erase {sid}, only kept versions hold them", "--erase", sid)
        rows.append((again, ""))
        rows.append((without, "kept: " + ", ".join(held)))
        rows.append((erase_kept, "; ".join(check_erased(erase_kept, out, folder, photos, retrained=False)) or "ok"))
        print(f"    held before: {held}", flush=True)
        # the same work as the first erasure's retraining, without the erasure: shows the load drift
        after = run("after: plain re-run without them (cache hits)")
        must_succeed(after)
        rows.append((after, ""))

        if keep is not None:
            dest = keep / f"{dataset}_{backend_name}"
            dest.mkdir(parents=True, exist_ok=True)
            for r, _ in rows:
                slug = re.sub(r"[^A-Za-z0-9]+", "_", r.label).strip("_")[:60]
                (dest / f"{slug}.log").write_text(f"{r.stderr}\n--- stdout ---\n{r.stdout}", encoding="utf-8")

        for r in (erase_live, erase_kept):
            if r.code != 0:
                print(f"--- {r.label} failed (exit {r.code}); stderr:\n{r.stderr}\n--- stdout:\n{r.stdout}")
            else:
                print(f"--- {r.label}: console")
                print("\n".join("    " + line for line in (r.stderr + r.stdout).strip().splitlines()))

    print(
        f"\n{dataset} ({len(folders)} students, {total} photos), {backend_name} + dlib; "
        f"baseline = the cache-hit re-run, {base.seconds:.1f} s"
    )
    print(f"{'run':<48} {'s':>7} {'vs baseline':>11} {'embedded anew':>13} {'load 1m':>9}  checks")
    for r, note in rows:
        anew = "-" if r.anew is None else str(r.anew)
        load = f"{r.load[0]:.1f}-{r.load[1]:.1f}"
        print(f"{r.label:<48} {r.seconds:>7.1f} {r.seconds / base.seconds:>10.2f}x {anew:>13} {load:>9}  {note}")


def main() -> None:
    ap = argparse.ArgumentParser(formatter_class=argparse.ArgumentDefaultsHelpFormatter, description=__doc__)
    ap.add_argument("--dataset", nargs="+", choices=("orl", "lfw"), default=["orl", "lfw"])
    ap.add_argument("--people", type=int, default=150, help="LFW people enrolled (the first N by name)")
    ap.add_argument("--detector", nargs="+", choices=tuple(BACKENDS), default=["mtcnn"], help="with dlib")
    ap.add_argument("--student", type=int, default=7, help="the student erased: STU00N, the N-th folder")
    ap.add_argument("--workers", type=int, default=None, help="retrain_model.py --workers (default: its own)")
    ap.add_argument("--keep", type=Path, default=None, help="write every run's console here")
    args = ap.parse_args()
    print(f"{os.cpu_count()} CPU cores; load average at start {os.getloadavg()}")
    for dataset in args.dataset:
        for detector in args.detector:
            scenario(dataset, detector, args.people, args.student, args.workers, args.keep)


if __name__ == "__main__":
    main()
