"""Fast paths: embedding cache, threaded extraction, fast linear SVM.

Real photos (ORL) with the offline MTCNN + dlib backends; no downloads.
"""

from __future__ import annotations

import shutil
import warnings
from pathlib import Path

import numpy as np
import pytest
from conftest import make_orl_tree
from PIL import Image

from backend.recognizer.openset import features
from backend.recognizer.paths import OutputPaths
from retraining import cache as cache_mod
from retraining.dataset import index_dataset
from retraining.extract import extract_embeddings
from retraining.train import fit_calibrator, fit_model


@pytest.fixture(scope="module")
def engines(mtcnn_detector, dlib_embedder):
    """The session's MTCNN + dlib (what BackendConfig(detector="mtcnn", embedder="dlib") builds)."""
    return mtcnn_detector, dlib_embedder


@pytest.fixture(scope="module")
def small_tree(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """3 ORL students × 3 photos + one photo without a face + one corrupt file."""
    root = make_orl_tree(tmp_path_factory.mktemp("fast") / "processed", n_students=3, n_images=3)
    Image.new("RGB", (120, 120), (128, 128, 128)).save(root / "STU001_Person_1" / "blank.png")
    (root / "STU002_Person_2" / "broken.jpg").write_bytes(b"not a jpeg")
    return root


def _run(tree: Path, engines, cache=None, workers: int = 1):
    detector, embedder = engines
    return extract_embeddings(
        index_dataset(tree).records, detector, embedder, batch_size=4, progress=False, workers=workers, cache=cache
    )


@pytest.fixture(scope="module")
def serial(small_tree: Path, engines):
    return _run(small_tree, engines, workers=0)


def _same(a, b) -> None:
    assert [r.path for r in a.records] == [r.path for r in b.records]
    assert np.array_equal(a.embeddings, b.embeddings)
    assert a.skipped == b.skipped
    assert a.faces == b.faces


def test_threaded_extraction_equals_serial(small_tree: Path, engines, serial) -> None:
    assert len(serial.records) == 9 and len(serial.skipped) == 2
    _same(serial, _run(small_tree, engines, workers=2))


def test_cache_hits_return_identical_vectors(small_tree: Path, engines, serial, tmp_path: Path) -> None:
    detector, embedder = engines
    fp = cache_mod.pipeline_fingerprint(detector, embedder)
    first = cache_mod.EmbeddingCache(fp, embedder.dim)
    _same(serial, _run(small_tree, engines, cache=first))
    assert first.misses == 11 and first.hits == 0
    first.save(tmp_path / "cache", keep=first.used)
    again = cache_mod.load_cache(tmp_path / "cache", fp, embedder.dim)
    assert len(again.entries) == 11  # 9 embeddings + 2 skip reasons (no face, corrupt file)
    out = _run(small_tree, engines, cache=again)
    _same(serial, out)
    assert again.misses == 0


def test_changed_photo_is_re_embedded(small_tree: Path, engines, tmp_path: Path) -> None:
    detector, embedder = engines
    tree = tmp_path / "tree"
    shutil.copytree(small_tree, tree)
    fp = cache_mod.pipeline_fingerprint(detector, embedder)
    cache = cache_mod.EmbeddingCache(fp, embedder.dim)
    before = _run(tree, engines, cache=cache)
    photo = tree / "STU001_Person_1" / "1.pgm"
    Image.open(photo).transpose(Image.Transpose.FLIP_LEFT_RIGHT).save(photo)
    cache.hits = cache.misses = 0
    after = _run(tree, engines, cache=cache)
    assert cache.misses == 1 and cache.hits == 10
    i = [r.path for r in after.records].index(photo)
    assert not np.array_equal(before.embeddings[i], after.embeddings[i])


def test_fingerprint_change_or_damage_invalidates(engines, serial, tmp_path: Path) -> None:
    detector, embedder = engines
    fp = cache_mod.pipeline_fingerprint(detector, embedder)
    cache = cache_mod.EmbeddingCache(fp, embedder.dim)
    cache.put("a" * 64, cache_mod.CachedFace(serial.embeddings[0], (1, 50.0, 0.99, False, 10.0, 0.0)))
    cache.put("b" * 64, cache_mod.CachedFace(None, None, "no face found"))
    cache.save(tmp_path)
    ok = cache_mod.load_cache(tmp_path, fp, embedder.dim)
    assert np.array_equal(ok.entries["a" * 64].vector, serial.embeddings[0])
    assert ok.entries["b" * 64].reason == "no face found"
    other = dict(fp, embedder=dict(fp["embedder"], weights_sha256="0" * 64))
    assert cache_mod.cache_status(tmp_path, other) == "mismatch"
    assert cache_mod.load_cache(tmp_path, other, embedder.dim).entries == {}
    data = tmp_path / cache_mod.DATA_NAME
    raw = bytearray(data.read_bytes())
    raw[len(raw) // 2] ^= 0xFF
    data.write_bytes(bytes(raw))
    assert cache_mod.load_cache(tmp_path, fp, embedder.dim).entries == {}


@pytest.fixture(scope="module")
def orl_embeddings(tmp_path_factory: pytest.TempPathFactory, engines, published_root: Path):
    """20 ORL students x 10 photos (MTCNN + dlib). The first 12 students' photos are the ones the session's
    published model was trained on: they are read from its embedding cache (a copy in memory; the root is
    not written), the other 80 photos are embedded here."""
    detector, embedder = engines
    tree = make_orl_tree(tmp_path_factory.mktemp("orl20") / "processed", n_students=20, n_images=10)
    fingerprint = cache_mod.pipeline_fingerprint(detector, embedder)
    cache = cache_mod.load_cache(OutputPaths.at(published_root).cache_dir, fingerprint, embedder.dim)
    ex = _run(tree, engines, cache=cache, workers=2)
    assert (cache.hits, cache.misses) == (120, 80), "the published run's cache is of other models"
    assert len(ex.records) == 200 and not ex.skipped
    return ex.embeddings, ex.student_ids


def test_fast_classifier_agrees_with_svc_recipe_on_orl(orl_embeddings) -> None:
    from sklearn.calibration import CalibratedClassifierCV
    from sklearn.preprocessing import StandardScaler
    from sklearn.svm import SVC

    X, y = orl_embeddings
    test = np.zeros(len(y), dtype=bool)
    for sid in np.unique(y):
        test[np.flatnonzero(y == sid)[-3:]] = True
    with warnings.catch_warnings():
        warnings.simplefilter("error", FutureWarning)
        warnings.simplefilter("error", DeprecationWarning)
        model = fit_model(X[~test], y[~test])
    proba, pred, _ = model.recognize(X[test])
    fast_acc = float(np.mean(pred == y[test]))
    scaler = StandardScaler().fit(X[~test])
    ref = CalibratedClassifierCV(
        SVC(kernel="linear", class_weight="balanced"), method="temperature", cv=5, ensemble=False
    ).fit(scaler.transform(X[~test]), y[~test])
    ref_acc = float(np.mean(ref.predict(scaler.transform(X[test])) == y[test]))
    assert fast_acc >= ref_acc - 0.005, (fast_acc, ref_acc)
    # the fast predict path computes exactly what scikit-learn computes
    slow = model.classifier.predict_proba(model.scaler.transform(X[test]))
    np.testing.assert_allclose(proba, slow, atol=1e-6)
    assert np.allclose(proba.sum(axis=1), 1.0)


@pytest.mark.parametrize("balance_binary", [True, False])
def test_linear_svm_reaches_liblinear_optimum(orl_embeddings, balance_binary: bool) -> None:
    """Every one-vs-rest problem BalancedLinearSVM solves ends at the optimum liblinear finds
    for the same weighted problem (squared hinge, regularised intercept)."""
    from sklearn.preprocessing import StandardScaler
    from sklearn.svm import LinearSVC

    from retraining.balanced_svm import BalancedLinearSVM

    X, y = orl_embeddings
    X = StandardScaler().fit_transform(X)
    # unequal photo counts, so both balances matter
    keep = np.ones(len(y), dtype=bool)
    for k, sid in enumerate(np.unique(y)[:5]):
        keep[np.flatnonzero(y == sid)[3 + k :]] = False
    X, y = X[keep], y[keep]
    yi = np.unique(y, return_inverse=True)[1]
    K, n, C = int(yi.max()) + 1, len(y), 0.05 / len(y)
    model = BalancedLinearSVM(C=C, max_iter=300, tol=1e-9, balance_binary=balance_binary).fit(X, y)
    s = (n / (K * np.bincount(yi)))[yi]

    def objective(w: np.ndarray, b: float, own: np.ndarray, weight: np.ndarray) -> float:
        margin = np.maximum(0.0, 1.0 - np.where(own, 1.0, -1.0) * (X @ w + b))
        return 0.5 * (w @ w + b * b) + C * float(np.sum(weight * margin**2))

    for c in (0, 4, K - 1):
        own = yi == c
        weight = s * np.where(own, K - 1 if balance_binary else 1, 1)
        ref = LinearSVC(C=C, tol=1e-10, max_iter=100_000).fit(X, own, sample_weight=weight)
        ours = objective(model.coef_[c], model.intercept_[c], own, weight)
        best = objective(ref.coef_[0], ref.intercept_[0], own, weight)
        assert ours <= best * (1 + 1e-5), (c, ours, best)
        np.testing.assert_allclose(model.coef_[c], ref.coef_[0], atol=2e-3 * np.abs(ref.coef_[0]).max())


@pytest.mark.parametrize(
    ("sparse_active", "sparse_inactive"), [(1.1, 0.0), (0.0, 1.1)], ids=["sparse residuals", "all-violators formula"]
)
def test_linear_svm_correction_branches_agree_with_the_dense_product(
    orl_embeddings, monkeypatch: pytest.MonkeyPatch, sparse_active: float, sparse_inactive: float
) -> None:
    """Each chunk's correction Xᵀ S R is one GEMM, a sparse product of few residuals, or the
    all-violators formula G·W + Xᵀ S 1 plus a sparse fix-up: the same steps, whichever is taken."""
    from sklearn.preprocessing import StandardScaler

    from retraining import balanced_svm as linear_svm

    X, y = orl_embeddings
    X = StandardScaler().fit_transform(X)

    def fit() -> linear_svm.BalancedLinearSVM:
        return linear_svm.BalancedLinearSVM(C=0.05 / len(y), max_iter=20, tol=1e-9).fit(X, y)

    monkeypatch.setattr(linear_svm, "SPARSE_ACTIVE", 0.0)
    monkeypatch.setattr(linear_svm, "SPARSE_INACTIVE", 0.0)
    dense = fit()  # every chunk through the GEMM
    monkeypatch.setattr(linear_svm, "SPARSE_ACTIVE", sparse_active)
    monkeypatch.setattr(linear_svm, "SPARSE_INACTIVE", sparse_inactive)
    other = fit()
    scale = max(np.abs(dense.coef_).max(), np.abs(dense.intercept_).max())
    np.testing.assert_allclose(other.coef_, dense.coef_, rtol=0, atol=1e-5 * scale)
    np.testing.assert_allclose(other.intercept_, dense.intercept_, rtol=0, atol=1e-5 * scale)


def test_students_with_one_to_three_photos(orl_embeddings) -> None:
    X, y = orl_embeddings
    keep = np.ones(len(y), dtype=bool)
    for sid, n in zip(np.unique(y)[:3], (1, 2, 3)):
        idx = np.flatnonzero(y == sid)
        keep[idx[n:]] = False
    model = fit_model(X[keep], y[keep])
    assert len(model.classes) == 20
    _, pred, conf = model.recognize(X[keep][:5])
    assert len(pred) == 5 and np.all((conf >= 0) & (conf <= 1))
    two = np.isin(y, np.unique(y)[:2])  # two students: the binary case
    model2 = fit_model(X[two], y[two])
    assert np.mean(model2.recognize(X[two])[1] == y[two]) == 1.0


def test_fast_open_set_confidence_equals_sklearn(orl_embeddings) -> None:
    X, y = orl_embeddings
    base = fit_model(X, y)
    proba = base.predict_proba(X)
    rng = np.random.default_rng(0)
    correct = rng.random(len(y)) < 0.7  # any two-class target: this checks arithmetic, not quality
    calibrator = fit_calibrator(features(proba, X, base.open_set.centres), correct)
    model = fit_model(X, y, open_set_calibrator=calibrator)
    fast = model.open_set.confidence(proba, X)
    slow = calibrator.predict_proba(features(proba, X, model.open_set.centres))[:, 1]
    np.testing.assert_allclose(fast, slow, rtol=1e-9, atol=1e-12)
    assert np.ptp(fast) > 0.01  # the comparison is not between two constants
