"""Models already in service keep answering exactly as before: loaded as they are (pickles allowed) or upgraded.

``tests/fixtures/model_1_0_orl6`` was published by release 1.0 (6 ORL students × 8 photos,
MTCNN + dlib), together with the stored embeddings and the answers that release gave for
each of them. It is stored only as pickles (which reference
``backend.recognizer.linear_svm.BalancedLinearSVM``), so it loads only with
``allow_pickle=True``, and ``retrain_model.py --upgrade-model`` converts it to
``model.npz`` + ``model.json``: both paths must give release 1.0's answers.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import joblib
import numpy as np
import pytest
from conftest import OLD_RELEASE_FIXTURE, ORL, ROOT, require_shared_data, tree_digest

from backend.recognizer import FaceRecognizer, ModelLoadError
from backend.recognizer.loader import load_model_files
from backend.recognizer.manifest import read_manifest
from retraining import publish

FIXTURE = OLD_RELEASE_FIXTURE
EXPECTED = json.loads((FIXTURE / "expected_classify.json").read_text())


def _answers_as_release_1_0(recognizer: FaceRecognizer) -> None:
    assert recognizer.model_version == EXPECTED["model_version"]
    assert recognizer.metadata["threshold"] == pytest.approx(EXPECTED["threshold"])
    assert recognizer.metadata["embedding_dim"] == 128
    results = recognizer.classify(np.load(FIXTURE / "models" / "X.npy"), top_k=3)
    assert len(results) == len(EXPECTED["results"]) == 48
    worst = 0.0
    for got, want in zip(results, EXPECTED["results"], strict=True):
        assert got.student_id == want["student_id"] and got.accepted == want["accepted"]
        assert [c.student_id for c in got.top_k] == [sid for sid, _ in want["top_k"]]
        worst = max(worst, abs(got.confidence - want["confidence"]))
        worst = max(worst, *(abs(c.confidence - p) for c, (_, p) in zip(got.top_k, want["top_k"], strict=True)))
    assert worst < 1e-6


def test_a_release_1_0_model_loads_with_pickles_allowed_and_classifies_as_before() -> None:
    before = tree_digest(FIXTURE)
    _answers_as_release_1_0(FaceRecognizer.load(FIXTURE, require_manifest=True, allow_pickle=True))
    assert tree_digest(FIXTURE) == before  # loading wrote nothing


def test_a_release_1_0_model_is_refused_by_default_with_what_to_do(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("SMARTATTENDANCE_ALLOW_PICKLE", raising=False)
    with pytest.raises(ModelLoadError, match="old format.*can run any code.*--upgrade-model.*allow_pickle=True"):
        FaceRecognizer.load(FIXTURE, require_manifest=True)


def test_the_upgraded_release_1_0_model_answers_as_before_without_pickles(upgraded_fixture: Path) -> None:
    _answers_as_release_1_0(FaceRecognizer.load(upgraded_fixture, require_manifest=True, allow_pickle=False))
    classifier = upgraded_fixture / "backend" / "models" / "Classifier"
    # the pickles are kept byte for byte, the manifest now covers the arrays too and still the training outputs
    for name in ("face_classifier_v1.pkl", "label_encoder.pkl", "label_encoder_classes.npy"):
        assert (classifier / name).read_bytes() == (FIXTURE / "backend" / "models" / "Classifier" / name).read_bytes()
    old, new = read_manifest(FIXTURE / "backend" / "models" / "Classifier"), read_manifest(classifier)
    assert set(new.files) == set(old.files) | {"model.npz", "model.json"}
    assert all(new.files[n] == e for n, e in old.files.items())
    meta = json.loads((classifier / "model.json").read_text())
    assert meta["format"] == 3 and meta["library_versions"]["scikit-learn"] == "1.9.1"


def test_upgrading_twice_changes_nothing(upgraded_fixture: Path, tmp_path: Path) -> None:
    import retrain_model

    root = tmp_path / "root"
    shutil.copytree(upgraded_fixture, root)
    before = tree_digest(root / "backend" / "models" / "Classifier")
    assert retrain_model.main(["--upgrade-model", "--output-root", str(root), "--quiet"]) == 0
    assert tree_digest(root / "backend" / "models" / "Classifier") == before


def test_the_top_level_threshold_of_format_1_wins_over_the_metadata_copy(tmp_path: Path) -> None:
    """Format 1 stored threshold and names twice; where they differ the top-level copy wins, as it did."""
    root = tmp_path / "root"
    shutil.copytree(FIXTURE, root)
    classifier = root / "backend" / "models" / "Classifier"
    raw = joblib.load(classifier / "face_classifier_v1.pkl")  # our own fixture: trusted
    assert raw["metadata"]["threshold"] == raw["threshold"] == 0.85
    raw["threshold"] = 0.61
    raw["student_names"] = {**raw["student_names"], "STU001": "Top Level"}
    joblib.dump(raw, classifier / "face_classifier_v1.pkl")
    publish.write_manifest(classifier, EXPECTED["model_version"])
    loaded = load_model_files(classifier, require_manifest=True, allow_pickle=True)
    assert loaded.threshold == pytest.approx(0.61) and loaded.student_names["STU001"] == "Top Level"
    assert loaded.info.threshold == pytest.approx(0.61)


def test_a_damaged_release_1_0_model_is_still_refused(tmp_path: Path) -> None:
    root = tmp_path / "root"
    shutil.copytree(FIXTURE, root)
    pkl = root / "backend" / "models" / "Classifier" / "face_classifier_v1.pkl"
    pkl.write_bytes(pkl.read_bytes()[:-10])
    with pytest.raises(ModelLoadError, match="does not match the model manifest"):
        FaceRecognizer.load(root, require_manifest=True, allow_pickle=True)


def test_a_damaged_release_1_0_model_is_not_upgraded_and_stays_as_it_was(tmp_path: Path, capsys) -> None:
    import retrain_model

    root = tmp_path / "root"
    shutil.copytree(FIXTURE, root)
    pkl = root / "backend" / "models" / "Classifier" / "face_classifier_v1.pkl"
    pkl.write_bytes(pkl.read_bytes()[:-10])
    before = tree_digest(root)
    assert retrain_model.main(["--upgrade-model", "--output-root", str(root), "--quiet"]) == 1
    err = capsys.readouterr().err
    assert err.count("ERROR:") == 1 and "could not be converted" in err
    after = tree_digest(root)
    after.pop("backend/models/.retrain.lock", None)  # the (empty) OS lock file of the run
    assert after == before


@pytest.mark.slow
def test_an_upgraded_model_serves_with_no_scikit_learn_imported(upgraded_fixture: Path) -> None:
    """import + load + classify + identify + reload, in a fresh interpreter: sklearn and joblib never load."""
    require_shared_data()
    code = (
        "import os, sys, numpy as np\n"
        "from backend.recognizer import FaceRecognizer\n"
        f"root = {str(upgraded_fixture)!r}\n"
        "r = FaceRecognizer.load(root, require_manifest=True, device='cpu')\n"
        f"r.classify(np.load({str(FIXTURE / 'models' / 'X.npy')!r}))\n"
        f"faces = r.identify({str(ORL / 's1' / '1.pgm')!r})\n"
        "m = os.path.join(root, 'backend', 'models', 'Classifier', 'manifest.json')\n"
        "os.utime(m, ns=(1, 1))\n"
        "assert r.reload_if_changed()\n"
        "print(len(faces), faces[0].student_id)\n"
        "print(sorted(x for x in sys.modules if x.split('.')[0] in ('sklearn', 'joblib', 'retraining')))\n"
    )
    work = upgraded_fixture.parent / "serve"
    shutil.copytree(upgraded_fixture, work, dirs_exist_ok=True)
    code = code.replace(repr(str(upgraded_fixture)), repr(str(work)))
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
    faces, modules = out.stdout.strip().splitlines()
    assert faces == "1 STU001" and modules == "[]"


def test_a_pickle_written_now_names_the_serving_class_and_loads_without_retraining(tmp_path: Path) -> None:
    """Training code lives in retraining/; the pickled classifier it writes names the class every
    release's pickles name (backend.recognizer.linear_svm), which holds no training code, so a
    backend without the retraining package reads it and answers the same."""
    from retraining.train import fit_model

    rng = np.random.default_rng(0)
    X = rng.normal(size=(60, 8)).astype(np.float32)
    y = np.repeat(["A", "B", "C"], 20)
    X[y == "B"] += 0.5
    X /= np.linalg.norm(X, axis=1, keepdims=True)
    fitted = fit_model(X, y, seed=0)
    path = tmp_path / "classifier.pkl"
    joblib.dump(fitted.classifier, path)
    data = path.read_bytes()
    assert b"backend.recognizer.linear_svm" in data and b"retraining" not in data
    np.save(tmp_path / "X.npy", X)
    code = (
        "import sys, joblib, numpy as np; sys.modules['retraining'] = None  # importing it would fail\n"
        f"clf = joblib.load({str(path)!r}); X = np.load({str(tmp_path / 'X.npy')!r})\n"
        f"np.save({str(tmp_path / 'answers.npy')!r}, clf.predict_proba(X))"
    )
    subprocess.run([sys.executable, "-c", code], cwd=ROOT, check=True)
    assert np.allclose(np.load(tmp_path / "answers.npy"), fitted.classifier.predict_proba(X), atol=1e-6)
