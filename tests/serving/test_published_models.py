"""Models already in service keep loading and answering exactly as before.

``tests/fixtures/model_1_0_orl6`` was published by release 1.0 (6 ORL students × 8 photos,
MTCNN + dlib), together with the stored embeddings and the answers that release gave for
each of them. Its pickles reference ``backend.recognizer.linear_svm.BalancedLinearSVM``.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from conftest import ROOT, tree_digest

from backend.recognizer import FaceRecognizer, ModelLoadError
from backend.recognizer.loader import load_model_files

FIXTURE = ROOT / "tests" / "fixtures" / "model_1_0_orl6"


def test_a_release_1_0_model_loads_and_classifies_its_embeddings_as_before() -> None:
    expected = json.loads((FIXTURE / "expected_classify.json").read_text())
    before = tree_digest(FIXTURE)
    recognizer = FaceRecognizer.load(FIXTURE, require_manifest=True)
    assert recognizer.model_version == expected["model_version"]
    assert recognizer.metadata["threshold"] == pytest.approx(expected["threshold"])
    assert recognizer.metadata["embedding_dim"] == 128
    results = recognizer.classify(np.load(FIXTURE / "models" / "X.npy"), top_k=3)
    assert len(results) == len(expected["results"]) == 48
    for got, want in zip(results, expected["results"], strict=True):
        assert got.student_id == want["student_id"] and got.accepted == want["accepted"]
        assert got.confidence == pytest.approx(want["confidence"], rel=1e-6, abs=1e-9)
        assert [c.student_id for c in got.top_k] == [sid for sid, _ in want["top_k"]]
        assert [c.confidence for c in got.top_k] == pytest.approx([p for _, p in want["top_k"]], rel=1e-6, abs=1e-9)
    assert tree_digest(FIXTURE) == before  # loading wrote nothing


def test_a_release_1_0_model_still_has_its_duplicated_threshold_read_from_the_top_level(tmp_path: Path) -> None:
    """Format 1 stored threshold and names twice; if they ever differ the top-level copy wins, as it did."""
    loaded = load_model_files(FIXTURE / "backend" / "models" / "Classifier", require_manifest=True)
    assert loaded.bundle.metadata["students"]["STU001"] == "Person 1"
    assert loaded.threshold == pytest.approx(json.loads((FIXTURE / "expected_classify.json").read_text())["threshold"])


def test_a_damaged_release_1_0_model_is_still_refused(tmp_path: Path) -> None:
    root = tmp_path / "root"
    shutil.copytree(FIXTURE, root)
    pkl = root / "backend" / "models" / "Classifier" / "face_classifier_v1.pkl"
    pkl.write_bytes(pkl.read_bytes()[:-10])
    with pytest.raises(ModelLoadError, match="does not match the model manifest"):
        FaceRecognizer.load(root, require_manifest=True)
