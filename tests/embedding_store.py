"""Embed real photos once per test session, with the suite's own extraction and embedding cache.

The LFW fixtures (``test_stranger_estimate``, ``test_quality``, ``test_gate``) embed about 1 600
distinct photos with SCRFD 2.5g + dlib, many of them the same photos. They share one embedding
cache (``retraining/cache.py``: keyed by the SHA-256 of a photo's bytes, valid only for the
pipeline fingerprint that wrote it), so a photo is detected and embedded once per session,
whichever fixture asks first, and every photo is then read through ``extract_with_models``
exactly as a run reads its cache.

dlib embeds one face at a time in one thread (~90 ms a photo on these CPUs; detection ~18 ms),
so a long list of photos the cache does not hold yet is embedded by two processes at once,
each running the same ``extract_with_models`` on half of them; their caches are merged into
the shared one. dlib's embedding of a face does not depend on the batch it is in, and
detection is per photo, so the vectors are bit-for-bit those of one process.

    python tests/embedding_store.py <cache-dir> <file listing one photo path a line>

embeds the listed photos into ``<cache-dir>`` in this process (what each helper process runs).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

SCRFD_25G = (ROOT.parent / "shared" / "data" / "weights" / "scrfd_2.5g_bnkps.onnx").resolve()
#: From this many photos not yet in the cache on, two processes embed them (below it, starting a
#: process costs more than it saves).
PARALLEL_FROM = 60
PROCESSES = 2
#: the helper processes started (tests/conftest.py ends any still running when the session ends)
RUNNING: list[subprocess.Popen[bytes]] = []


def _backend() -> Any:
    from backend.recognizer.backends import BackendConfig

    # as retrain_model.py runs it on 2 cores: two detection threads ahead of the embedder
    return BackendConfig(
        detector="scrfd", detector_model=str(SCRFD_25G), embedder="dlib", device="cpu", detector_sessions=2
    )


def _extract(photos: list[Path], cache_dir: Path) -> Any:
    from retraining.dataset import ImageRecord
    from retraining.extract import extract_with_models

    records = [ImageRecord(p, "x", "x") for p in photos]
    return extract_with_models(records, _backend(), cache_dir, workers=2, progress=False)


def _load(cache_dir: Path) -> Any:
    """The cache in ``cache_dir`` under the fingerprint it was written with (None when there is none)."""
    from retraining import cache as cache_mod

    meta = cache_dir / cache_mod.META_NAME
    if not meta.exists():
        return None
    fingerprint = json.loads(meta.read_text(encoding="utf-8"))["fingerprint"]
    cache = cache_mod.load_cache(cache_dir, fingerprint, int(fingerprint["embedder"]["dim"]))
    assert cache.loaded_from is not None, f"the embedding cache in {cache_dir} is damaged"
    return cache


def _not_cached(photos: list[Path], cache_dir: Path) -> list[Path]:
    from backend.recognizer.hashing import sha256_bytes

    cache = _load(cache_dir)
    known = set() if cache is None else set(cache.entries)
    return [p for p in photos if sha256_bytes(p.read_bytes()) not in known]


def _embed_in_processes(photos: list[Path], cache_dir: Path, processes: int) -> None:
    """Embed ``photos`` in ``processes`` child processes, then merge what they stored into ``cache_dir``."""
    work = cache_dir.parent / f"{cache_dir.name}.parts"
    shutil.rmtree(work, ignore_errors=True)  # an earlier call's parts are merged already
    work.mkdir()
    running = []
    for i in range(processes):
        listing, part, log = work / f"{i}.txt", work / f"part{i}", work / f"{i}.log"
        listing.write_text("".join(f"{p}\n" for p in photos[i::processes]), encoding="utf-8")
        with open(log, "wb") as out:
            cmd = [sys.executable, str(Path(__file__).resolve()), str(part), str(listing)]
            running.append((subprocess.Popen(cmd, cwd=ROOT, stdout=out, stderr=subprocess.STDOUT), part, log))
            RUNNING.append(running[-1][0])
    try:
        for proc, _, log in running:
            assert proc.wait(timeout=1800) == 0, log.read_text(errors="replace")[-4000:]
    finally:
        for proc, _, _ in running:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    from retraining import cache as cache_mod

    parts = [_load(part) for _, part, _ in running]
    merged = _load(cache_dir) or cache_mod.EmbeddingCache(parts[0].fingerprint, parts[0].dim)
    for part in parts:
        assert part.id == merged.id, "the helper processes embedded with another pipeline"
        merged.entries.update(part.entries)
    merged.save(cache_dir)
    shutil.rmtree(work)


def fill_scrfd_dlib_cache(photos: list[Path], cache_dir: Path, parallel_from: int = PARALLEL_FROM) -> Any:
    """Make the embedding cache in ``cache_dir`` hold every one of ``photos`` (SCRFD 2.5g + dlib, the
    configuration of ``bench.lfw_enrollment.embed_all`` and of ``retrain_model.py --detector scrfd
    --detector-model <2.5g> --embedder dlib --device cpu``). From ``parallel_from`` new photos on, helper
    processes embed them. Returns the extraction of ``photos`` when it was made in this process, else None."""
    cache_dir = Path(cache_dir)
    new = _not_cached(photos, cache_dir)
    if not new:
        return None
    processes = min(PROCESSES, os.cpu_count() or 1)
    if len(new) >= parallel_from:
        _embed_in_processes(new, cache_dir, processes)
        return None
    return _extract(photos, cache_dir).extraction


def extract_scrfd_dlib(photos: list[Path], cache_dir: Path) -> Any:
    """The :class:`~retraining.extract.Extraction` of ``photos`` (see :func:`fill_scrfd_dlib_cache`),
    reading and adding to the embedding cache in ``cache_dir``."""
    extraction = fill_scrfd_dlib_cache(photos, cache_dir)
    if extraction is not None:
        return extraction
    run = _extract(photos, Path(cache_dir))  # every photo is in the cache now: read as a run reads it
    assert run.cache.misses == 0, f"{run.cache.misses} photos were not in the merged cache"
    return run.extraction


if __name__ == "__main__":
    cache_dir, listing = Path(sys.argv[1]), Path(sys.argv[2])
    _extract([Path(line) for line in listing.read_text(encoding="utf-8").splitlines() if line], cache_dir)
