"""Attendance over a session vs from one frame, on real LFW photos through the loader.

    .venv/bin/python bench/bench_session.py [--folds 3] [--enroll 8] [--seed 0] [--cache FILE] [--embedder dlib]

The 158 LFW people of ../shared/data/lfw are split into ``--folds`` groups; each group is
in turn held out as strangers (every person is a stranger once). For each fold:

* the others are enrolled with ``--enroll`` random photos each, and ``retrain_model.py``
  (SCRFD 2.5G + dlib, offline; ``--embedder facenet --weights-dir DIR`` for FaceNet) trains
  and publishes a model; its metrics.json gives the run's own per-session estimate
  (retraining/session_rates.py);
* the loader (``FaceRecognizer``) recognises every other photo: an enrolled person's unseen
  photos are that person's frames, a held-out person's photos (10-20) a stranger's frames
  (one frame per photo, the face the photo is labelled with: the one nearest its centre);
* each person's frames form one session, counted by ``AttendanceSession`` under the naive rule
  ("present if accepted once"), a lenient rule (10 % of the frames), ``PresenceRule()`` at the
  threshold, and the model's own rule (what ``AttendanceSession(recognizer)`` uses: the run's
  ``min_confidence`` when it chose one).

Printed: per frame vs per session, enrolled people marked present (all, and those with >= 4
frames), strangers who marked somebody present, sessions of an enrolled person in which a
wrong student was marked present; then the run's estimate beside the measured rates, and
every stranger who marked somebody present. ``--cache FILE`` keeps the frames' embeddings
(same detector and embedder every fold) for the next run.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "bench")]
SHARED = Path(os.environ.get("SHARED_DATA", ROOT.parent / "shared" / "data"))

import retrain_model
from backend.recognizer import AttendanceSession, FaceRecognizer, PresenceRule, Recognition
from backend.recognizer.paths import OutputPaths

MIN_FRAMES_COUNTED = 4  # the target is stated for students seen in at least this many frames


@dataclass
class Person:
    name: str
    student_id: str | None  # None: held out (a stranger in this fold)
    frames: list[Path]


def split(seed: int, folds: int, enroll: int) -> list[tuple[list[Person], dict[str, list[Path]]]]:
    """Per fold: the people (enrolled ones with their unseen photos, strangers with all theirs) and
    the enrollment tree {student folder: photos}."""
    people = sorted(p for p in (SHARED / "lfw").iterdir() if p.is_dir())
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(people))
    out = []
    for k in range(folds):
        held = {int(i) for i in order[k::folds]}
        persons, tree = [], {}
        for i, folder in enumerate(people):
            photos = sorted(folder.glob("*.jpg"))
            if i in held:
                persons.append(Person(folder.name, None, photos))
                continue
            chosen = rng.permutation(len(photos))
            sid = f"STU{i + 1:03d}"
            tree[f"{sid}_{folder.name}"] = [photos[j] for j in sorted(chosen[:enroll])]
            persons.append(Person(folder.name, sid, [photos[j] for j in sorted(chosen[enroll:])]))
        out.append((persons, tree))
    return out


def train(
    tree: dict[str, list[Path]], root: Path, cache_from: Path | None, embedder: str, weights_dir: Path | None
) -> Path:
    data = root / "processed"
    for folder, photos in tree.items():
        (data / folder).mkdir(parents=True)
        for p in photos:
            shutil.copy2(p, data / folder / p.name)
    paths = OutputPaths.at(root)
    if cache_from is not None and cache_from.is_dir():  # the same photos' embeddings: not embedded again
        shutil.copytree(cache_from, paths.cache_dir)
    detector = SHARED / "weights" / "scrfd_2.5g_bnkps.onnx"
    args = ["--data-dir", str(data), "--output-root", str(root), "--detector", "scrfd"]
    args += ["--detector-model", str(detector), "--embedder", embedder, "--device", "cpu", "--no-download", "--quiet"]
    if weights_dir is not None:
        args += ["--weights-dir", str(weights_dir)]
    code = retrain_model.main(args)
    if code != 0:
        raise SystemExit(f"retrain_model.py exited with {code}")
    return paths.cache_dir


def labelled_face(faces: list, size: tuple[int, int]) -> int:
    """The face an LFW photo is labelled with: the one nearest the centre (the deep-funneled photos
    are centred on it). The largest face is sometimes someone else's: Laura Bush's photos with
    George W Bush beside her."""
    cx, cy = size[0] / 2, size[1] / 2
    return int(
        np.argmin([((f.box[0] + f.box[2]) / 2 - cx) ** 2 + ((f.box[1] + f.box[3]) / 2 - cy) ** 2 for f in faces])
    )


def frame_vectors(recognizer: FaceRecognizer, photos: list[Path], cache: dict[str, np.ndarray], embedder: str) -> None:
    """The labelled face's embedding of each photo, through the loader (no face: an empty vector)."""
    todo = [p for p in photos if key(p, embedder) not in cache]
    t = time.perf_counter()
    for n, p in enumerate(todo, 1):
        faces, vectors = recognizer.embed(p)
        with Image.open(p) as im:
            size = im.size
        cache[key(p, embedder)] = vectors[labelled_face(faces, size)] if len(faces) else np.zeros(0, np.float32)
        if n % 200 == 0:
            print(f"  embedded {n}/{len(todo)} frames ({time.perf_counter() - t:.0f} s)", file=sys.stderr, flush=True)


def key(photo: Path, embedder: str) -> str:
    """A frame's entry in --cache: the embedder, the photo, which face (the labelled one)."""
    return f"{embedder}:{photo}#labelled"


def recognitions(
    recognizer: FaceRecognizer, person: Person, cache: dict[str, np.ndarray], embedder: str
) -> list[Recognition]:
    vectors = [cache[key(p, embedder)] for p in person.frames if cache[key(p, embedder)].size]
    return recognizer.classify(np.stack(vectors)) if vectors else []


def session_of(frames: list[Recognition], rule: PresenceRule) -> set[str]:
    session = AttendanceSession(None, rule=rule)
    for r in frames:
        session.add_recognitions([r])
    return {p.student_id for p in session.present()}


@dataclass
class Tally:
    enrolled: int = 0
    enrolled_ok: int = 0
    enrolled4: int = 0
    enrolled4_ok: int = 0
    wrong: int = 0
    strangers: int = 0
    strangers_marking: int = 0

    def add(self, person: Person, frames: list[Recognition], marked: set[str]) -> None:
        if person.student_id is None:
            self.strangers += 1
            self.strangers_marking += bool(marked)
            return
        self.enrolled += 1
        self.enrolled_ok += person.student_id in marked
        self.wrong += bool(marked - {person.student_id})
        if len(frames) >= MIN_FRAMES_COUNTED:
            self.enrolled4 += 1
            self.enrolled4_ok += person.student_id in marked

    def merge(self, other: Tally) -> None:
        for k, v in vars(other).items():
            setattr(self, k, getattr(self, k) + v)


def pct(a: int, b: int) -> str:
    return f"{100 * a / b:5.1f}% ({a}/{b})" if b else "n/a"


def main() -> None:
    ap = argparse.ArgumentParser(formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    ap.add_argument("--folds", type=int, default=3, help="groups of people held out as strangers in turn")
    ap.add_argument("--enroll", type=int, default=8, help="photos per enrolled person")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--cache", type=Path, default=None, help="npz file keeping the frames' embeddings between runs")
    ap.add_argument("--embedder", choices=("dlib", "facenet"), default="dlib", help="facenet needs --weights-dir")
    ap.add_argument("--weights-dir", type=Path, default=None, help="folder with 20180402-114759-vggface2.pt")
    args = ap.parse_args()
    cache: dict[str, np.ndarray] = {}
    if args.cache is not None and args.cache.is_file():
        with np.load(args.cache) as z:
            cache = {str(k): z[k] for k in z.files}
    work = Path(tempfile.mkdtemp(prefix="bench_session_"))
    rules = {
        "naive: present if accepted once": lambda _: PresenceRule(min_frames=1, min_share=0.0),
        "lenient: 10 % of the frames, at the threshold": lambda _: PresenceRule(min_share=0.1),
        "PresenceRule() at the threshold": lambda _: PresenceRule(),
        "the model's rule (AttendanceSession default)": lambda model_rule: model_rule,
    }
    per_frame = {"enrolled": [0, 0], "wrong": [0, 0], "stranger": [0, 0]}
    totals = {name: Tally() for name in rules}
    estimates, lookalikes = [], []
    # the runs' embedding cache is kept beside --cache too, so that a second run embeds nothing
    kept = None if args.cache is None else args.cache.with_suffix(".retrain-cache")
    cache_dir: Path | None = kept
    t0 = time.perf_counter()
    for k, (persons, tree) in enumerate(split(args.seed, args.folds, args.enroll)):
        root = work / f"fold{k}"
        print(f"fold {k + 1}/{args.folds}: training on {len(tree)} people ...", file=sys.stderr, flush=True)
        cache_dir = train(tree, root, cache_dir, args.embedder, args.weights_dir)
        recognizer = FaceRecognizer.load(root, device="cpu")
        names = recognizer.metadata["students"]
        model_rule = AttendanceSession(recognizer).rule
        metrics = json.loads(OutputPaths.at(root).metrics_json.read_text(encoding="utf-8"))
        session = metrics["session"]
        estimates.append((k, metrics["threshold"], model_rule.min_confidence, session))
        frame_vectors(recognizer, [p for person in persons for p in person.frames], cache, args.embedder)
        for person in persons:
            frames = recognitions(recognizer, person, cache, args.embedder)
            for r in frames:
                if person.student_id is None:
                    per_frame["stranger"][0] += r.accepted
                    per_frame["stranger"][1] += 1
                else:
                    per_frame["enrolled"][0] += r.accepted and r.student_id == person.student_id
                    per_frame["wrong"][0] += r.accepted and r.student_id != person.student_id
                    per_frame["enrolled"][1] += 1
                    per_frame["wrong"][1] += 1
            for name, make in rules.items():
                rule = make(model_rule)
                marked = session_of(frames, rule)
                fold = Tally()
                fold.add(person, frames, marked)
                totals[name].merge(fold)
                if person.student_id is None and marked and name.startswith("the model's rule"):
                    counts = {names[s]: sum(r.accepted and r.student_id == s for r in frames) for s in marked}
                    lookalikes.append((k, person.name, len(frames), counts))
    if args.cache is not None and kept is not None:
        np.savez(args.cache, **cache)
        if cache_dir is not None and cache_dir != kept:
            shutil.rmtree(kept, ignore_errors=True)
            shutil.copytree(cache_dir, kept)

    print(
        f"\nLFW sessions, {args.folds} folds (every person a stranger once), {args.enroll} photos enrolled per person, "
        f"SCRFD 2.5G + {args.embedder}, threshold = each run's recommended one ({', '.join(str(e[1]) for e in estimates)}); "
        f"{time.perf_counter() - t0:.0f} s"
    )
    print(
        f"{'':<58} {'enrolled marked present':>24} {'(>= 4 frames)':>20} {'strangers marking someone':>26} {'wrong student':>18}"
    )
    e, w, s = per_frame["enrolled"], per_frame["wrong"], per_frame["stranger"]
    print(f"{'per frame (one face)':<58} {pct(*e):>24} {'':>20} {pct(*s):>26} {pct(*w):>18}")
    for name, t in totals.items():
        print(
            f"{'per session, ' + name:<58} {pct(t.enrolled_ok, t.enrolled):>24} {pct(t.enrolled4_ok, t.enrolled4):>20} "
            f"{pct(t.strangers_marking, t.strangers):>26} {pct(t.wrong, t.enrolled):>18}"
        )
    print("\nThe runs' own estimates (metrics.json 'session'), per fold, at the threshold and under the model's rule:")
    for k, threshold, bar, session in estimates:
        for label, rates in (("PresenceRule()", session["rates"]), ("model's rule", session["model_rule_rates"])):
            shown = ", ".join(
                f"{r['frames']} frames: enrolled {r['enrolled_marked_present']:.1%}, "
                f"strangers {r['stranger_marks_present']:.1%} (bound {r['stranger_upper95']:.1%})"
                for r in rates
                if r["frames"] <= 20
            )
            print(f"  fold {k + 1}, {label}: threshold {threshold:.2f}; {shown}")
        print(f"  fold {k + 1}: the model's min_confidence {bar}; look-alikes counted: {session['lookalikes_counted']}")
    print(
        "\nStrangers who marked somebody present (the model's rule): fold, person, frames, {student: accepted frames}"
    )
    for k, name, n, counts in lookalikes:
        print(f"  {k + 1} {name} {n} {counts}")


if __name__ == "__main__":
    main()
