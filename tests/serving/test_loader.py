"""The backend's loader: every load check fails loudly, hot reload, threads, and training/recognition parity."""

from __future__ import annotations

import json
import pickle
import subprocess
import sys
import threading
from concurrent.futures import ThreadPoolExecutor
from importlib import metadata
from pathlib import Path
from types import SimpleNamespace

import joblib
import numpy as np
import pytest
from conftest import ORL, ROOT
from fakes import DIM, make_model_bundle, publish_fake, seed_pickle_dict, write_classifier

from backend.recognizer import FaceRecognizer, ModelLoadError, loader, manifest
from backend.recognizer.errors import ImageError, WeightsNotFoundError
from backend.recognizer.loader import verify_model_dir
from backend.recognizer.metadata import BackendChoice
from backend.recognizer.paths import PICKLED_FILES, OutputPaths
from retraining import publish


@pytest.fixture
def paths(tmp_path: Path) -> OutputPaths:
    p = OutputPaths.at(tmp_path / "out")
    publish_fake(p, "v1")
    return p


def rewrite(paths: OutputPaths, name: str, obj: object) -> None:
    """Replace one Classifier file and re-sign the manifest: only the consistency checks can catch it."""
    target = paths.classifier_dir / name
    if name.endswith(".npz"):
        np.savez(target, **obj)  # type: ignore[arg-type]
    elif name.endswith(".json"):
        target.write_text(json.dumps(obj))
    elif name.endswith(".npy"):
        np.save(target, obj)
    else:
        joblib.dump(obj, target)
    version = manifest.read_manifest(paths.classifier_dir).model_version
    publish.write_manifest(paths.classifier_dir, version)


def arrays(paths: OutputPaths) -> dict[str, np.ndarray]:
    with np.load(paths.model_npz, allow_pickle=False) as npz:
        return {k: npz[k] for k in npz.files}


def described(paths: OutputPaths) -> dict[str, object]:
    return json.loads(paths.model_json.read_text())


@pytest.fixture
def old_paths(tmp_path: Path) -> OutputPaths:
    """A model of an earlier release: the three pickled files and a manifest, no model.npz."""
    p = OutputPaths.at(tmp_path / "old")
    p.classifier_dir.mkdir(parents=True)
    write_classifier(p.classifier_dir, "v1", pickles_only=True)
    publish.write_manifest(p.classifier_dir, "v1")
    return p


def test_import_is_light() -> None:
    code = (
        "import sys; import backend.recognizer.loader, backend.recognizer; "
        "heavy = [m for m in ('torch', 'insightface', 'dlib', 'facenet_pytorch', 'onnxruntime', 'sklearn') if m in sys.modules]; "
        "print(heavy)"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_load_exposes_metadata_and_classifies(paths: OutputPaths) -> None:
    rec = FaceRecognizer.load(paths.root)
    meta = rec.metadata
    assert meta["embedding_dim"] == DIM and meta["threshold"] == 0.5 and meta["model_version"] == "v1"
    assert meta["created_at"] and set(meta["students"]) == {"STU001", "STU002", "STU003"}
    _, X, y = make_model_bundle("v1")
    results = rec.classify(X)
    assert rec.model_metadata.students == {"STU001": "Student 1", "STU002": "Student 2", "STU003": "Student 3"}
    assert [r.student_id for r in results] == list(y)
    assert all(r.accepted and len(r.top_k) == 3 and r.top_k[0].confidence >= r.top_k[1].confidence for r in results)
    assert results[0].student_name == "Student 1" and results[0].box is None
    with pytest.raises(ValueError, match="embeddings"):
        rec.classify(np.zeros((1, DIM + 1)))


def test_threshold_decides_unknown(tmp_path: Path) -> None:
    paths = OutputPaths.at(tmp_path)
    publish_fake(paths, "vague", noise=3.0)  # students overlap: no confident answers
    _, X, _ = make_model_bundle("vague", noise=3.0)
    rec = FaceRecognizer.load(paths.root)
    override = FaceRecognizer.load(paths.root, threshold=0.99)
    assert override.metadata["threshold"] == 0.99
    for results in (rec.classify(X, threshold=0.99), override.classify(X)):
        assert any(not r.accepted for r in results)
        for r in results:
            assert r.accepted == (r.confidence >= 0.99)
            assert (r.student_id == r.student_name == "Unknown") == (not r.accepted)
            assert r.top_k[0].student_id.startswith("STU") and r.top_k[0].confidence == r.confidence
    lenient = rec.classify(X, threshold=0.0)
    assert all(r.accepted and r.student_id == r.top_k[0].student_id for r in lenient)


def test_missing_model_folder(tmp_path: Path) -> None:
    with pytest.raises(ModelLoadError, match="Run retraining"):
        FaceRecognizer.load(tmp_path / "nothing")


@pytest.mark.parametrize("name", ["model.npz", "model.json"])
def test_missing_file(paths: OutputPaths, name: str) -> None:
    (paths.classifier_dir / name).unlink()
    with pytest.raises(ModelLoadError, match=f"missing.*{name}"):
        FaceRecognizer.load(paths.root)


def test_missing_manifest_is_refused_when_required(paths: OutputPaths) -> None:
    paths.manifest.unlink()
    with pytest.raises(ModelLoadError, match="manifest"):
        verify_model_dir(paths.classifier_dir)


def test_model_arrays_missing_one(paths: OutputPaths) -> None:
    data = arrays(paths)
    del data["scaler_mean"]
    rewrite(paths, "model.npz", data)
    with pytest.raises(ModelLoadError, match="lacks the array.*scaler_mean"):
        FaceRecognizer.load(paths.root)


def test_model_arrays_with_an_object_array_are_refused_without_unpickling(paths: OutputPaths, tmp_path: Path) -> None:
    _Evil.marker = str(tmp_path / "marker")  # type: ignore[attr-defined]
    data = arrays(paths)
    data["student_ids"] = np.array([_Evil(), "STU002", "STU003"], dtype=object)
    rewrite(paths, "model.npz", data)
    with pytest.raises(ModelLoadError, match="model.npz is unreadable"):
        FaceRecognizer.load(paths.root)
    assert not (tmp_path / "marker").exists()


def test_model_description_of_wrong_type(paths: OutputPaths) -> None:
    rewrite(paths, "model.json", ["not", "a", "model"])
    with pytest.raises(ModelLoadError, match="model.json is unreadable or incomplete"):
        FaceRecognizer.load(paths.root)


def test_embedding_dim_mismatch(paths: OutputPaths) -> None:
    rewrite(paths, "model.json", {**described(paths), "embedding_dim": 512})
    with pytest.raises(ModelLoadError, match="Embedding size mismatch.*512"):
        FaceRecognizer.load(paths.root)


def test_scaler_from_other_model(paths: OutputPaths) -> None:
    data = arrays(paths)
    data["scaler_mean"] = np.zeros(8, np.float32)
    rewrite(paths, "model.npz", data)
    with pytest.raises(ModelLoadError, match="scaler_mean' has shape \\(8,\\)"):
        FaceRecognizer.load(paths.root)


def test_students_of_another_training(paths: OutputPaths) -> None:
    meta = described(paths)
    rewrite(paths, "model.json", {**meta, "students": {"STU001": "A", "STU002": "B", "STU999": "C"}})
    with pytest.raises(ModelLoadError, match="students in .*model.json.*different trainings"):
        FaceRecognizer.load(paths.root)


def test_model_files_of_another_version_than_the_manifest(paths: OutputPaths) -> None:
    rewrite(paths, "model.json", {**described(paths), "model_version": "v0"})
    with pytest.raises(ModelLoadError, match="manifest is for model v1 but the model files are model v0"):
        FaceRecognizer.load(paths.root)


def test_a_future_format_is_refused_with_what_to_do(paths: OutputPaths) -> None:
    rewrite(paths, "model.json", {**described(paths), "format": 4})
    with pytest.raises(ModelLoadError, match="format 4.*re-run retraining"):
        FaceRecognizer.load(paths.root)


@pytest.mark.parametrize("damage", ["truncated", "edited"])
def test_hash_mismatch_names_the_file(paths: OutputPaths, damage: str) -> None:
    target = paths.model_npz
    data = target.read_bytes()
    mid = len(data) // 2
    target.write_bytes(data[:100] if damage == "truncated" else data[:mid] + bytes([data[mid] ^ 1]) + data[mid + 1 :])
    with pytest.raises(ModelLoadError) as info:
        FaceRecognizer.load(paths.root)
    assert "model.npz" in str(info.value) and "--rollback" in str(info.value)


@pytest.mark.parametrize(
    ("folder", "model_files"), [("paths", ("model.npz", "model.json")), ("old_paths", PICKLED_FILES)]
)
def test_each_model_file_is_read_once_and_what_is_parsed_is_what_was_hashed(
    folder: str, model_files: tuple[str, ...], request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch
) -> None:
    """One read per model file, hashed and parsed from the same bytes; every other listed file still hashed."""
    classifier_dir = request.getfixturevalue(folder).classifier_dir
    listed = {n for n in manifest.read_manifest(classifier_dir).files if not n.startswith(manifest.MODELS_PREFIX)}
    reads: list[str] = []
    streamed: list[str] = []
    read_bytes, sha256_file = Path.read_bytes, manifest.sha256_file

    def counted_read(path: Path) -> bytes:
        reads.append(path.name)
        return read_bytes(path)

    def counted_hash(path: Path) -> str:
        streamed.append(Path(path).name)
        return sha256_file(path)

    monkeypatch.setattr(Path, "read_bytes", counted_read)
    monkeypatch.setattr(manifest, "sha256_file", counted_hash)
    loader.load_model_files(classifier_dir, require_manifest=True, allow_pickle=True)
    assert sorted(reads) == sorted(model_files)
    assert sorted(streamed) == sorted(listed - set(model_files))


class _Evil:
    def __reduce__(self):
        return (Path.write_text, (Path(_Evil.marker), "pwned"))


def test_tampered_pickle_is_never_unpickled(paths: OutputPaths, tmp_path: Path) -> None:
    _Evil.marker = str(tmp_path / "marker")  # type: ignore[attr-defined]
    paths.bundle.write_bytes(pickle.dumps({"x": _Evil()}))
    with pytest.raises(ModelLoadError, match="face_classifier_v1.pkl"):
        FaceRecognizer.load(paths.root)
    assert not (tmp_path / "marker").exists()


def test_crafted_pickles_with_a_rewritten_manifest_run_no_code_in_load_or_reload(
    paths: OutputPaths, tmp_path: Path
) -> None:
    """Whoever can write backend/models/ can also rewrite the manifest: the pickles must simply never be read."""
    marker = tmp_path / "marker"
    _Evil.marker = str(marker)  # type: ignore[attr-defined]
    rec = FaceRecognizer.load(paths.root, require_manifest=True)
    publish_fake(paths, "v2", seed=4)
    for name in ("face_classifier_v1.pkl", "label_encoder.pkl"):
        (paths.classifier_dir / name).write_bytes(pickle.dumps({"x": _Evil()}))
    publish.write_manifest(paths.classifier_dir, "v2")  # consistent again
    assert rec.reload_if_changed() is True and rec.model_version == "v2"
    again = FaceRecognizer.load(paths.root, require_manifest=True)
    _, X, y = make_model_bundle("v2", seed=4)
    assert [r.student_id for r in again.classify(X)] == list(y)
    assert not marker.exists()
    # ... and that stays so when the same pickles arrive as an old-format model (no model.npz)
    paths.model_npz.unlink()
    paths.model_json.unlink()
    publish.write_manifest(paths.classifier_dir, "v2")
    with pytest.raises(ModelLoadError, match="allow_pickle=True"):
        FaceRecognizer.load(paths.root, require_manifest=True)
    assert rec.reload_if_changed() is False and rec.model_version == "v2"
    assert not marker.exists()


def test_an_old_format_model_is_refused_unless_pickles_are_allowed(
    old_paths: OutputPaths, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv(loader.ALLOW_PICKLE_ENV, raising=False)
    with pytest.raises(ModelLoadError) as info:
        FaceRecognizer.load(old_paths.root, require_manifest=True)
    message = str(info.value)
    assert "can run any code" in message and "--upgrade-model" in message and loader.ALLOW_PICKLE_ENV in message
    _, X, y = make_model_bundle("v1")
    allowed = FaceRecognizer.load(old_paths.root, require_manifest=True, allow_pickle=True)
    assert [r.student_id for r in allowed.classify(X)] == list(y)
    monkeypatch.setenv(loader.ALLOW_PICKLE_ENV, "1")
    by_env = FaceRecognizer.load(old_paths.root, require_manifest=True)
    assert by_env.model_version == "v1"
    with pytest.raises(ModelLoadError, match="can run any code"):
        FaceRecognizer.load(old_paths.root, allow_pickle=False)  # an explicit False wins over the environment


def test_old_format_answers_equal_the_new_format(old_paths: OutputPaths, paths: OutputPaths) -> None:
    _, X, _ = make_model_bundle("v1")
    old = FaceRecognizer.load(old_paths.root, allow_pickle=True)._state.loaded.model
    new = FaceRecognizer.load(paths.root)._state.loaded.model
    for a, b in zip(old.recognize(X), new.recognize(X), strict=True):
        if a.dtype.kind == "f":
            np.testing.assert_allclose(a, b, rtol=0, atol=1e-6)
        else:
            assert np.array_equal(a, b)


def test_old_format_from_another_scikit_learn_version_is_loaded_with_a_warning(
    old_paths: OutputPaths, caplog: pytest.LogCaptureFixture
) -> None:
    bundle = seed_pickle_dict("v1")
    bundle["metadata"]["library_versions"] = {"scikit-learn": "0.24.2"}
    rewrite(old_paths, "face_classifier_v1.pkl", bundle)
    FaceRecognizer.load(old_paths.root, allow_pickle=True)
    assert "pickled with scikit-learn 0.24.2 but" in caplog.text and "--upgrade-model" in caplog.text
    caplog.clear()
    bundle["metadata"]["library_versions"] = {"scikit-learn": metadata.version("scikit-learn")}
    rewrite(old_paths, "face_classifier_v1.pkl", bundle)
    FaceRecognizer.load(old_paths.root, allow_pickle=True)
    assert "pickled with scikit-learn" not in caplog.text


def test_old_format_wrong_bundle_keys(old_paths: OutputPaths) -> None:
    bundle = seed_pickle_dict("v1")
    del bundle["scaler"], bundle["metadata"]
    rewrite(old_paths, "face_classifier_v1.pkl", bundle)
    with pytest.raises(ModelLoadError, match="missing the key.*scaler.*metadata"):
        FaceRecognizer.load(old_paths.root, allow_pickle=True)


def test_old_format_bundle_of_wrong_type(old_paths: OutputPaths) -> None:
    rewrite(old_paths, "face_classifier_v1.pkl", ["not", "a", "model"])
    with pytest.raises(ModelLoadError, match="neither a model bundle"):
        FaceRecognizer.load(old_paths.root, allow_pickle=True)


def test_old_format_classes_mismatch(old_paths: OutputPaths) -> None:
    rewrite(old_paths, "label_encoder_classes.npy", np.array(["STU001", "STU002", "STU999"]))
    with pytest.raises(ModelLoadError, match="label_encoder_classes.npy.*do not match"):
        FaceRecognizer.load(old_paths.root, allow_pickle=True)


def test_old_format_label_encoder_mismatch(old_paths: OutputPaths) -> None:
    other = seed_pickle_dict("v1", n_students=4)
    rewrite(old_paths, "label_encoder.pkl", other["label_encoder"])
    with pytest.raises(ModelLoadError, match="label_encoder.pkl.*do not match"):
        FaceRecognizer.load(old_paths.root, allow_pickle=True)


def test_old_format_scaler_from_other_model(old_paths: OutputPaths) -> None:
    bundle = seed_pickle_dict("v1")
    bundle["scaler"] = seed_pickle_dict("v1", dim=8)["scaler"]
    rewrite(old_paths, "face_classifier_v1.pkl", bundle)
    with pytest.raises(ModelLoadError, match="scaler has 8 features but the classifier 16"):
        FaceRecognizer.load(old_paths.root, allow_pickle=True)


def test_old_bare_classifier_form_still_loads_with_pickles_allowed(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    paths = OutputPaths.at(tmp_path)
    paths.classifier_dir.mkdir(parents=True)
    bundle = seed_pickle_dict("old")
    _, X, y = make_model_bundle("old")
    joblib.dump(bundle["classifier"], paths.bundle)
    joblib.dump(bundle["label_encoder"], paths.label_encoder)
    np.save(paths.classes, bundle["label_encoder"].classes_)
    with pytest.raises(ModelLoadError, match="can run any code"):
        FaceRecognizer.load(paths.root, allow_pickle=False)
    rec = FaceRecognizer.load(paths.root, allow_pickle=True)
    assert "old-style model" in caplog.text and "no manifest.json" in caplog.text
    assert rec.metadata["embedding_dim"] == DIM and rec.model_version == "legacy"
    # no scaler in the old form: the classifier sees raw embeddings, answers are still well-formed
    assert len(rec.classify(X[:3])) == 3
    with pytest.raises(ModelLoadError, match="manifest"):
        FaceRecognizer.load(paths.root, require_manifest=True, allow_pickle=True)


# --------------------------------------------------------------------------- reload & threads


def test_reload_picks_up_new_model_and_refuses_a_broken_one(paths: OutputPaths) -> None:
    rec = FaceRecognizer.load(paths.root)
    _, X, _ = make_model_bundle("v1")
    assert rec.reload_if_changed() is False  # nothing new
    publish_fake(paths, "v2", n_students=4, seed=3)
    assert rec.reload_if_changed() is True
    assert rec.model_version == "v2" and len(rec.metadata["students"]) == 4
    _, X2, y2 = make_model_bundle("v2", n_students=4, seed=3)
    answers = [r.student_id for r in rec.classify(X2)]
    assert answers == list(y2)

    publish_fake(paths, "v3", seed=5)
    data = paths.model_npz.read_bytes()
    paths.model_npz.write_bytes(data[: len(data) // 2])  # a half-written / damaged new model
    assert rec.reload_if_changed() is False
    assert rec.model_version == "v2"
    assert [r.student_id for r in rec.classify(X2)] == answers  # still serving
    assert rec.reload_if_changed() is False  # refused once, not retried in a loop


def test_threads_classify_same_as_serial(paths: OutputPaths) -> None:
    rec = FaceRecognizer.load(paths.root)
    _, X, _ = make_model_bundle("v1")
    serial = [rec.classify(x) for x in X]
    with ThreadPoolExecutor(8) as pool:
        parallel = list(pool.map(rec.classify, list(X) * 4))
    assert parallel == serial * 4


def test_threads_share_one_lazy_engine(paths: OutputPaths, monkeypatch: pytest.MonkeyPatch) -> None:
    from backend.recognizer import loader

    built = []

    def fake_build(loaded, device, weights_dir, allow_download=False):
        built.append(threading.get_ident())
        return loader._Engines(("k",), object(), object(), None)  # type: ignore[arg-type]

    monkeypatch.setattr(loader, "_build_engines", fake_build)
    rec = FaceRecognizer.load(paths.root)
    with ThreadPoolExecutor(8) as pool:
        states = list(pool.map(lambda _: rec._ensure_engines(), range(32)))
    assert len(built) == 1 and len({id(s.engines) for s in states}) == 1


# --------------------------------------------------------------------------- real photos (MTCNN + dlib)


def _training_photos(n_students: int = 4, n_images: int = 2) -> list[tuple[Path, str]]:
    return [
        (ORL / f"s{k}" / f"{i}.pgm", f"STU{k:03d}") for k in range(1, n_students + 1) for i in range(1, n_images + 1)
    ]


@pytest.fixture(scope="module")
def live(published_root: Path) -> FaceRecognizer:
    rec = FaceRecognizer.load(published_root, device="cpu")
    rec._ensure_engines()
    return rec


def test_parity_identify_embeds_exactly_as_training(live: FaceRecognizer, published_root: Path) -> None:
    paths = OutputPaths.at(published_root)
    X = np.load(paths.X)
    y = np.load(paths.y).astype(str)
    for photo, student in _training_photos():
        faces, vectors = live.embed(photo)
        assert len(faces) >= 1
        distances = np.abs(X - vectors[0]).max(axis=1)
        row = int(np.argmin(distances))
        assert distances[row] <= 1e-6, f"{photo}: embedding differs from training by {distances[row]}"
        assert y[row] == student
        assert live.identify(photo)[0].top_k[0].student_id == student


def test_parity_on_a_phone_size_photo(live: FaceRecognizer, tmp_path: Path) -> None:
    """A 12 MP JPEG (decoded reduced) is embedded by identify exactly as by training's extraction."""
    from PIL import Image

    from bench.phone_photos import phone_photo
    from retraining.dataset import ImageRecord
    from retraining.extract import extract_embeddings

    source = tmp_path / "orl.png"
    Image.open(ORL / "s4" / "2.pgm").convert("RGB").save(source)
    photo = phone_photo(source, tmp_path / "STU004_x" / "phone.jpg", portrait=True)
    engines = live._ensure_engines().engines
    assert engines is not None
    trained = extract_embeddings(
        [ImageRecord(photo, "STU004", "x")], engines.detector, engines.embedder, progress=False
    )
    faces, vectors = live.embed(photo)
    assert len(trained.records) == 1 and len(faces) >= 1
    assert np.abs(trained.embeddings[0] - vectors[0]).max() <= 1e-6
    assert max(faces[0].box) > 1000  # reported in the full photo's pixels (3024x4032), not the decoded 1/4


def test_identify_accepts_bgr_frames_and_reports_every_face(live: FaceRecognizer) -> None:
    import cv2

    gray = cv2.imread(str(ORL / "s2" / "1.pgm"), cv2.IMREAD_GRAYSCALE)
    frame = cv2.cvtColor(
        np.hstack([gray, np.full_like(gray, 128), cv2.imread(str(ORL / "s3" / "1.pgm"), 0)]), cv2.COLOR_GRAY2BGR
    )
    frame = cv2.resize(frame, None, fx=2, fy=2)
    results = live.identify(frame)
    assert {r.top_k[0].student_id for r in results} >= {"STU002", "STU003"}
    for r in results:
        assert r.box is not None and r.detection_score is not None
        assert (r.student_id == r.top_k[0].student_id) == r.accepted
    assert live.identify(np.zeros((120, 120, 3), np.uint8)) == []
    with pytest.raises(ImageError, match="too small"):  # the documented error, not the face models' own
        live.identify(np.zeros((10, 10, 3), np.uint8))


def test_threads_identify_same_as_serial(live: FaceRecognizer) -> None:
    photos = [p for p, _ in _training_photos(2, 2)]
    serial = [live.identify(p) for p in photos]
    with ThreadPoolExecutor(4) as pool:
        parallel = list(pool.map(live.identify, photos * 2))
    assert parallel == serial * 2


def test_weights_differing_from_training_are_refused(copy_root: Path) -> None:
    paths = OutputPaths.at(copy_root)
    meta = described(paths)
    meta["embedder"]["weights_sha256"] = "0" * 64  # type: ignore[index]
    rewrite(paths, "model.json", meta)
    rec = FaceRecognizer.load(copy_root, device="cpu")  # loading the classifier is fine ...
    with pytest.raises(ModelLoadError, match="embedder weights"):
        rec.identify(ORL / "s1" / "1.pgm")  # ... but recognition would not match training


def test_loader_does_not_download_weights_by_default(monkeypatch: pytest.MonkeyPatch) -> None:
    """A backend must not stall on a download at its first camera frame."""
    seen: list[bool] = []

    def fake_detector(config):
        seen.append(config.allow_download)
        raise WeightsNotFoundError("det_10g.onnx missing")

    monkeypatch.setattr("backend.recognizer.loader.build_detector", fake_detector)
    config = BackendChoice("scrfd", "facenet", None)
    fake = SimpleNamespace(bundle=SimpleNamespace(metadata=SimpleNamespace(backend=config)), classifier_dir=Path("x"))
    for kwargs, expected in (({}, False), ({"allow_download": True}, True)):
        with pytest.raises(WeightsNotFoundError):
            loader._build_engines(fake, "cpu", None, **kwargs)  # type: ignore[arg-type]
        assert seen[-1] is expected
