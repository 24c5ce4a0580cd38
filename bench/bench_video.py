"""Enrolling from a clip: decode and frame selection per 10 s of 1080p video against embedding the same
number of photos, and the peak memory of sampling a long 4K clip.

    .venv/bin/python bench/bench_video.py                 # 10 s 1080p: seconds and the ratio
    .venv/bin/python bench/bench_video.py --memory 60     # + peak memory of a 60 s 4K clip

The clip is built here from one LFW person's real photos (tests/clips.py; H.264, 30 fps, the
face a third of the frame high), so nothing is downloaded. Detector SCRFD 2.5g
(``../shared/data/weights``) and the offline dlib embedder, on the CPU, as the tests use.
Printed: seconds for the clip (open + hash + decode + detect + track + embed + select) and for
the same number of photos through ``extract_embeddings`` (read + decode + detect + embed) of the same
pictures saved as 1920x1080 JPEGs, and their ratio.
``--memory N``: an N-second 3840×2160 clip is sampled in a child process: the growth of its
peak RSS (VmHWM, reset after the imports) over the RSS after the same imports, against a
child that imports and does nothing (the baseline).
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]
SHARED = ROOT.parent / "shared" / "data"
DETECTOR = SHARED / "weights" / "scrfd_2.5g_bnkps.onnx"
PERSON = SHARED / "lfw" / "Laura_Bush"


def _backends():
    from backend.recognizer.backends import BackendConfig, build_detector, build_embedder

    config = BackendConfig(detector="scrfd", detector_model=str(DETECTOR), embedder="dlib", device="cpu")
    return build_detector(config), build_embedder(config)


def speed(tmp: Path) -> None:
    from clips import write_clip

    from retraining.clip_frames import clip_frames
    from retraining.dataset import ImageRecord
    from retraining.extract import extract_embeddings

    photos = sorted(PERSON.glob("*.jpg"))[:20]
    clip = write_clip(tmp / "ten_seconds.mp4", photos, size=(1920, 1080), seconds_per_photo=0.5, face_share=0.35)
    detector, embedder = _backends()
    started = time.perf_counter()
    got = clip_frames(ImageRecord(clip, "STU001", "x"), detector, embedder, None)
    clip_seconds = time.perf_counter() - started
    n = len(got.frames)
    records = [ImageRecord(p, "STU001", "x") for p in _as_photos(tmp, photos[:n])]
    started = time.perf_counter()
    extract_embeddings(records, detector, embedder, progress=False, workers=1)
    photo_seconds = time.perf_counter() - started
    print(f"10 s 1080p clip: {clip_seconds:.1f} s for {n} frames kept of {got.outcome.sampled if got.outcome else 0}")
    print(f"{n} photos (the same 1920x1080 pictures as JPEG files): {photo_seconds:.1f} s")
    print(f"ratio clip / photos: {clip_seconds / photo_seconds:.2f}")


def _as_photos(tmp: Path, photos: list[Path]) -> list[Path]:
    """Each photo on the clip's 1920x1080 canvas, saved as a JPEG: the baseline sees the same pixels."""
    import numpy as np
    from clips import _place
    from PIL import Image

    out = []
    for k, photo in enumerate(photos):
        canvas = np.full((1080, 1920, 3), 90, np.uint8)
        _place(canvas, photo, int(1080 * 0.35), 960)
        out.append(tmp / f"photo_{k:02d}.jpg")
        Image.fromarray(canvas).save(out[-1], quality=90)
    return out


CHILD = """
import sys
sys.path[:0] = [{root!r}]
import av, numpy
from retraining import video
from pathlib import Path


def status(key):
    for line in open("/proc/self/status"):
        if line.startswith(key):
            return int(line.split()[1]) / 1024


before = status("VmRSS")
open("/proc/self/clear_refs", "w").write("5")  # the peak (VmHWM) starts again from here
frames = 0
if {sample}:
    with video.open_clip(Path({clip!r})) as clip:
        frames = sum(1 for _ in video.sample_frames(clip))
print(before, status("VmHWM"), frames)
"""


def memory(tmp: Path, seconds: int) -> None:
    from clips import write_clip

    photos = sorted(PERSON.glob("*.jpg"))[:20]
    started = time.perf_counter()
    clip = write_clip(
        tmp / "long_4k.mp4", photos, size=(3840, 2160), seconds_per_photo=seconds / len(photos), face_share=0.35
    )
    print(f"{seconds} s 4K clip built in {time.perf_counter() - started:.0f} s: {clip.stat().st_size / 1e6:.0f} MB")

    def peak(sample: bool) -> tuple[float, float, int]:
        code = CHILD.format(root=str(ROOT), clip=str(clip), sample=sample)
        out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
        before, high, frames = out.stdout.split()
        return float(before), float(high), int(frames)

    base_before, base_high, _ = peak(False)
    before, high, frames = peak(True)
    print(
        f"RSS after imports {before:.0f} MiB; peak while sampling {frames} frames of the {seconds} s 4K clip {high:.0f} MiB"
    )
    print(
        f"growth while sampling: {high - before:.0f} MiB (doing nothing after the same imports: {base_high - base_before:.0f} MiB)"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--memory", type=int, default=0, help="also measure a clip of this many seconds in 4K")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        speed(Path(tmp))
        if args.memory:
            memory(Path(tmp), args.memory)


if __name__ == "__main__":
    main()
