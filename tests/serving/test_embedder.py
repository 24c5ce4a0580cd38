"""Embedders: FaceNet loading/standardisation/channel order, dlib identity separation.

FaceNet runs the real ``InceptionResnetV1`` class with a randomly initialised state_dict
saved here (no download). Random weights prove nothing about recognition, so FaceNet is
checked by exact parity with facenet-pytorch; identity is checked with dlib (real weights).
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from conftest import LFW, ORL, require_shared_data

from backend.recognizer.backends import BackendConfig, build_embedder
from backend.recognizer.embedder import DlibEmbedder, FaceNetEmbedder, l2_normalize
from backend.recognizer.errors import RetrainError, WeightsNotFoundError
from backend.recognizer.faces import MtcnnDetector, face_crops
from backend.recognizer.images import decode_image
from backend.recognizer.weights import FACENET_FILE


@pytest.fixture(scope="module")
def facenet_files(tmp_path_factory: pytest.TempPathFactory, rgb_crops: np.ndarray) -> dict[str, Path]:
    """One random InceptionResnetV1 saved twice: with logits.* (classify=True) and without.

    Freshly initialised BatchNorm statistics (mean 0, var 1) make a random network map
    every input to almost the same vector; one train-mode pass over real crops sets them
    to real activation statistics so the outputs depend clearly on the input.
    """
    from facenet_pytorch import InceptionResnetV1, fixed_image_standardization

    torch.manual_seed(1234)
    model = InceptionResnetV1(pretrained=None, classify=True, num_classes=8631)
    for module in model.modules():
        if isinstance(module, (torch.nn.BatchNorm1d, torch.nn.BatchNorm2d)):
            module.momentum = None  # cumulative average: one pass gives the batch statistics
    model.train()
    with torch.no_grad():
        model(fixed_image_standardization(torch.from_numpy(rgb_crops).permute(0, 3, 1, 2).float()))
    model.eval()
    state = model.state_dict()
    assert any(k.startswith("logits.") for k in state)
    folder = tmp_path_factory.mktemp("facenet")
    with_logits = folder / "with_logits" / FACENET_FILE
    with_logits.parent.mkdir()
    torch.save(state, with_logits)
    plain = folder / "plain.pt"
    torch.save({k: v for k, v in state.items() if not k.startswith("logits.")}, plain)
    return {"with_logits": with_logits, "plain": plain}


@pytest.fixture(scope="module")
def facenet(facenet_files: dict[str, Path]) -> FaceNetEmbedder:
    return FaceNetEmbedder(facenet_files["with_logits"], device="cpu")


@pytest.fixture(scope="module")
def reference_model(facenet_files: dict[str, Path]):
    """facenet-pytorch's model loaded by hand from the same file (independent of our loader)."""
    from facenet_pytorch import InceptionResnetV1

    model = InceptionResnetV1(pretrained=None, classify=False)
    state = torch.load(facenet_files["plain"], map_location="cpu", weights_only=True)
    model.load_state_dict(state, strict=True)
    return model.eval()


@pytest.fixture(scope="module")
def rgb_crops() -> np.ndarray:
    """3 real colour face crops (LFW photos, centre 160×160), RGB uint8."""
    require_shared_data()
    people = sorted(p for p in LFW.iterdir() if p.is_dir())[:30:10]
    crops = []
    for person in people:
        rgb = decode_image(sorted(person.glob("*.jpg"))[0])
        crops.append(np.ascontiguousarray(rgb[45:205, 45:205]))
    return np.stack(crops)


def _manual(model, crops_rgb: np.ndarray, standardise) -> np.ndarray:
    tensor = torch.from_numpy(np.ascontiguousarray(crops_rgb)).permute(0, 3, 1, 2).float()
    with torch.inference_mode():
        out = model(standardise(tensor))
    out = out.numpy().astype(np.float32)
    return out / np.linalg.norm(out, axis=1, keepdims=True)


@pytest.fixture(scope="module")
def ours_rgb(facenet: FaceNetEmbedder, rgb_crops: np.ndarray) -> np.ndarray:
    """Our embedder on the first two RGB crops (computed once: a forward pass is slow on CPU)."""
    return facenet.embed(rgb_crops[:2])


@pytest.fixture(scope="module")
def reference_rgb(reference_model, rgb_crops: np.ndarray) -> np.ndarray:
    """facenet-pytorch by hand: fixed_image_standardization on the RGB tensor, then the model."""
    from facenet_pytorch import fixed_image_standardization

    return _manual(reference_model, rgb_crops[:2], fixed_image_standardization)


# --------------------------------------------------------------------------- FaceNet


def test_facenet_output_shape_dtype_unit_norm(
    facenet: FaceNetEmbedder, ours_rgb: np.ndarray, rgb_crops: np.ndarray
) -> None:
    out = ours_rgb
    assert out.shape == (2, 512) and out.dtype == np.float32
    assert facenet.dim == 512 and facenet.crop.size == 160
    np.testing.assert_allclose(np.linalg.norm(out, axis=1), 1.0, atol=1e-5)
    assert len(facenet.weights_sha256) == 64
    empty = facenet.embed(np.zeros((0, 160, 160, 3), np.uint8))
    assert empty.shape == (0, 512) and empty.dtype == np.float32
    # different faces → different vectors; the same face alone (batch of 1) → the same vector
    assert np.abs(out[0] - out[1]).max() > 1e-2
    again = facenet.embed(rgb_crops[1:2])
    np.testing.assert_allclose(again[0], out[1], atol=1e-5)


def test_facenet_loads_with_and_without_logits(
    facenet: FaceNetEmbedder, facenet_files: dict[str, Path], ours_rgb: np.ndarray, rgb_crops: np.ndarray
) -> None:
    # ``facenet`` was loaded from the classify=True state_dict (logits.* present)
    plain = FaceNetEmbedder(facenet_files["plain"], device="cpu")
    np.testing.assert_allclose(plain.embed(rgb_crops[:1]), ours_rgb[:1], atol=1e-5)
    assert plain.weights_sha256 != facenet.weights_sha256


def test_facenet_standardisation_equals_facenet_pytorch(
    ours_rgb: np.ndarray, reference_rgb: np.ndarray, reference_model, rgb_crops: np.ndarray
) -> None:
    # the loaded weights are the saved ones and the input is standardised exactly like facenet-pytorch
    np.testing.assert_allclose(ours_rgb, reference_rgb, atol=1e-5)
    # the check is sensitive: another common standardisation gives other vectors
    other = _manual(reference_model, rgb_crops[:2], lambda t: t / 255.0)
    assert np.abs(other - ours_rgb).max() > 1e-2


def test_facenet_takes_rgb_not_bgr(
    facenet: FaceNetEmbedder, ours_rgb: np.ndarray, reference_rgb: np.ndarray, rgb_crops: np.ndarray
) -> None:
    bgr = np.ascontiguousarray(rgb_crops[:2, ..., ::-1])
    ours_bgr = facenet.embed(bgr)
    # RGB crops give exactly the manual RGB path …
    np.testing.assert_allclose(ours_rgb, reference_rgb, atol=1e-5)
    # … and swapping channels changes the output: the embedder neither flips nor ignores colour order
    assert np.abs(ours_bgr - reference_rgb).max() > 1e-2
    assert np.abs(ours_bgr - ours_rgb).max() > 100 * np.abs(ours_rgb - reference_rgb).max()


def test_build_embedder_facenet_from_weights_dir(
    facenet_files: dict[str, Path], rgb_crops: np.ndarray, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    monkeypatch.delenv("SMARTATTENDANCE_WEIGHTS_DIR", raising=False)
    emb = build_embedder(
        BackendConfig(
            embedder="facenet", device="cpu", weights_dir=str(facenet_files["with_logits"].parent), allow_download=False
        )
    )
    assert isinstance(emb, FaceNetEmbedder)
    assert Path(emb.weights_file) == facenet_files["with_logits"]
    assert emb.embed(rgb_crops[:1]).shape == (1, 512)
    assert not (tmp_path / "torch").exists()  # nothing written to the cache


@pytest.mark.parametrize("kind", ["random_tensor_dict", "garbage_bytes", "empty", "bare_tensor", "wrong_shapes"])
def test_facenet_wrong_file_raises_weights_error(tmp_path: Path, kind: str) -> None:
    path = tmp_path / f"wrong_{kind}.pt"
    if kind == "random_tensor_dict":
        torch.save({"foo": torch.randn(3, 3), "bar.weight": torch.randn(4)}, path)
    elif kind == "garbage_bytes":
        path.write_bytes(b"<html>404 not found</html>" * 10)
    elif kind == "empty":
        path.write_bytes(b"")
    elif kind == "bare_tensor":
        torch.save(torch.randn(5), path)
    else:
        from facenet_pytorch import InceptionResnetV1

        state = InceptionResnetV1(pretrained=None).state_dict()
        state["last_linear.weight"] = torch.zeros(256, 1792)  # right keys, wrong shape
        torch.save(state, path)
    with pytest.raises(WeightsNotFoundError, match=path.name):
        FaceNetEmbedder(path, device="cpu")


# --------------------------------------------------------------------------- l2_normalize


def test_l2_normalize() -> None:
    vecs = np.array([[3.0, 4.0], [0.0, 0.0], [1e-3, 0.0]], dtype=np.float64)
    out = l2_normalize(vecs)
    assert out.dtype == np.float32
    np.testing.assert_allclose(out, [[0.6, 0.8], [0.0, 0.0], [1.0, 0.0]], atol=1e-6)
    assert np.isfinite(out).all()


# --------------------------------------------------------------------------- dlib


def test_dlib_embeddings_separate_orl_people(dlib_embedder: DlibEmbedder, mtcnn_detector: MtcnnDetector) -> None:
    require_shared_data()
    assert dlib_embedder.dim == 128 and dlib_embedder.crop.size == 150
    detector = mtcnn_detector
    crops, labels = [], []
    for person in range(1, 6):
        for i in (1, 5, 9):
            rgb = decode_image(ORL / f"s{person}" / f"{i}.pgm")
            result = face_crops(detector, rgb, dlib_embedder.crop, max_faces=1)
            assert result.crops, f"s{person}/{i}.pgm"
            crops.append(result.crops[0])
            labels.append(person)
    emb = dlib_embedder.embed(np.stack(crops))
    assert emb.shape == (15, 128) and emb.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(emb, axis=1), 1.0, atol=1e-5)
    y = np.array(labels)
    dist = np.linalg.norm(emb[:, None] - emb[None], axis=2)
    iu = np.triu_indices(len(y), 1)
    same = (y[:, None] == y[None])[iu]
    med_same, med_diff = np.median(dist[iu][same]), np.median(dist[iu][~same])
    assert med_same + 0.08 < med_diff, (med_same, med_diff)
    # leave-one-out nearest neighbour recognises most photos
    np.fill_diagonal(dist, np.inf)
    nn_acc = (y[dist.argmin(axis=1)] == y).mean()
    assert nn_acc >= 0.8, nn_acc
    # RGB in, deterministic out; empty batch
    np.testing.assert_allclose(dlib_embedder.embed(np.stack(crops[:1]))[0], emb[0], atol=1e-5)
    assert dlib_embedder.embed(np.zeros((0, 150, 150, 3), np.uint8)).shape == (0, 128)


def test_dlib_embedding_changes_with_channel_order(dlib_embedder: DlibEmbedder, rgb_crops: np.ndarray) -> None:
    crops = np.stack([cv2.resize(c, (150, 150)) for c in rgb_crops[:2]])
    a = dlib_embedder.embed(crops)
    b = dlib_embedder.embed(np.ascontiguousarray(crops[..., ::-1]))
    assert np.abs(a - b).max() > 1e-3


def test_facenet_onnxruntime_equals_torch(
    facenet: FaceNetEmbedder, facenet_files: dict[str, Path], ours_rgb: np.ndarray, rgb_crops: np.ndarray
) -> None:
    # on the CPU the default runtime is ONNX Runtime; torch must give the same vectors
    assert facenet.runtime == "onnxruntime"
    eager = FaceNetEmbedder(facenet_files["plain"], device="cpu", runtime="torch")
    assert eager.runtime == "torch"
    np.testing.assert_allclose(eager.embed(rgb_crops[:2]), ours_rgb, atol=1e-5)
    # batch size is dynamic in the exported graph: 3 crops at once = one by one
    three = facenet.embed(rgb_crops)
    np.testing.assert_allclose(three[:2], ours_rgb, atol=1e-5)
    with pytest.raises(RetrainError, match="runtime"):
        FaceNetEmbedder(facenet_files["plain"], device="cpu", runtime="tensorrt")
