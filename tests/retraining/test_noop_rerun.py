"""--demo, and re-runs: an identical re-run publishes nothing, --dry-run lists exactly what a real
run removes, --force and a changed photo publish (real ORL photos, MTCNN + dlib, as --demo uses)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from conftest import ORL, make_orl_tree
from PIL import Image

import retrain_model
from backend.recognizer.paths import OutputPaths

pytestmark = pytest.mark.slow  # end-to-end runs of retrain_model.py


def _demo_photos(demo: Path) -> Path:
    """4 students x 4 ORL photos; one folder (s4) not named like STU001_First_Last."""
    photos = make_orl_tree(demo / "photos", n_students=3, n_images=4)
    (photos / "s4").mkdir()
    for i in range(1, 5):
        shutil.copyfile(ORL / "s4" / f"{i}.pgm", photos / "s4" / f"{i}.pgm")
    return photos


def _block(out: str, header: str) -> list[str]:
    """The paths listed under the line that starts with ``header`` (indented lines, until the next other)."""
    lines = out.splitlines()
    start = next(i for i, line in enumerate(lines) if line.strip().startswith(header))
    indent = len(lines[start]) - len(lines[start].lstrip()) + 2
    listed = []
    for line in lines[start + 1 :]:
        if not line.startswith(" " * indent):
            break
        listed.append(line.strip())
    return listed


def _version(paths: OutputPaths) -> str:
    return str(json.loads(paths.manifest.read_text(encoding="utf-8"))["model_version"])


def test_demo_reruns_publish_only_what_changed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    demo = tmp_path / "program" / "demo"
    photos = _demo_photos(demo)
    monkeypatch.setattr(retrain_model, "DEMO_ROOT", demo)
    elsewhere = tmp_path / "somewhere_else"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)  # the demo's folders come from the program's folder, not from here
    paths = OutputPaths.at(demo / "output")

    # the demo: offline models, its own output root, the report tables around the threshold in use
    assert retrain_model.main(["--demo", "--quiet"]) == 0
    assert list(elsewhere.iterdir()) == []
    meta = json.loads(paths.model_json.read_text(encoding="utf-8"))
    assert meta["detector"]["name"] == "mtcnn" and meta["embedder"]["name"].startswith("dlib")
    assert meta["run_fingerprint"] and meta["dataset"]["data_dir"] == str(photos.resolve())
    report = paths.report_txt.read_text(encoding="utf-8")
    sweep = report.split("THRESHOLD SWEEP")[1].split("\n\n")[0]
    assert sum("<- in use" in line for line in sweep.splitlines()) == 1
    page = paths.report_html.read_text(encoding="utf-8")
    assert "Folders to rename (1)" in page and ">s4<" in page
    first, manifest = _version(paths), paths.manifest.read_bytes()

    # the same photos, options and program: nothing is published, and --dry-run says so
    capsys.readouterr()
    assert retrain_model.main(["--demo", "--quiet"]) == 0
    out = capsys.readouterr().out
    assert f"Nothing changed since model {first}" in out and "--force" in out
    assert paths.manifest.read_bytes() == manifest
    assert not paths.versions_dir.exists() or not any(paths.versions_dir.iterdir())
    assert retrain_model.main(["--demo", "--dry-run"]) == 0
    assert f"nothing changed since model {first}" in capsys.readouterr().out

    # --force publishes; its dry run lists exactly what the run removes (leftovers of the original recipe too)
    (paths.models_dir / "temp").mkdir()
    (paths.models_dir / "temp" / "old.npy").write_bytes(b"x")
    legacy_cache = paths.root / "backend" / "recognizer" / "embeddings_cache.npy"
    legacy_cache.parent.mkdir(parents=True)
    np.save(legacy_cache, np.zeros(3))
    assert retrain_model.main(["--demo", "--dry-run", "--force"]) == 0
    listed = _block(capsys.readouterr().out, "If the new model passes the quality gate")
    assert retrain_model.main(["--demo", "--force", "--quiet"]) == 0
    removed = _block(capsys.readouterr().out, "previous artifacts removed")
    assert listed == removed and len(removed) >= 19
    assert {str(paths.bundle), str(paths.heldout), str(paths.inputs_csv), str(legacy_cache)} <= set(removed)
    forced = _version(paths)
    assert forced != first and len(list(paths.versions_dir.iterdir())) == 1

    # a changed photo: published without --force; then identical again
    photo = photos / "STU001_Person_1" / "1.pgm"
    Image.open(photo).transpose(Image.Transpose.FLIP_LEFT_RIGHT).save(photo)
    assert retrain_model.main(["--demo", "--quiet"]) == 0
    changed = _version(paths)
    assert changed not in (first, forced)
    capsys.readouterr()
    assert retrain_model.main(["--demo", "--quiet"]) == 0
    assert f"Nothing changed since model {changed}" in capsys.readouterr().out
