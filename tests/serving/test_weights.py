"""Locating weight files offline: --weights-dir, the environment variable, the libraries' caches,
and a clear error (file name, source, destination) when nothing is found and nothing downloads.

HOME / TORCH_HOME / XDG_CACHE_HOME point into tmp_path so the user's real caches are never
read or written, and the download functions are replaced so nothing touches the network.
"""

from __future__ import annotations

import os
from pathlib import Path
from urllib.error import URLError

import pytest
from conftest import SCRFD_WEIGHTS, require_shared_data

from backend.recognizer import weights
from backend.recognizer.backends import BackendConfig, build_detector, build_embedder
from backend.recognizer.errors import WeightsNotFoundError
from backend.recognizer.weights import (
    DLIB_FILE,
    FACENET_FILE,
    SCRFD_FILE,
    SCRFD_PACK,
    WEIGHTS_ENV,
    dlib_weights,
    facenet_weights,
    scrfd_weights,
)

assert SCRFD_FILE == "det_10g.onnx" and FACENET_FILE == "20180402-114759-vggface2.pt"
assert WEIGHTS_ENV == "SMARTATTENDANCE_WEIGHTS_DIR"


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A fake home with empty caches; records every download attempt (and fails it like offline)."""
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.setenv("TORCH_HOME", str(home / "torch"))
    monkeypatch.setenv("XDG_CACHE_HOME", str(home / ".cache"))
    monkeypatch.delenv(WEIGHTS_ENV, raising=False)
    assert weights.insightface_root() == home / ".insightface"
    return home


@pytest.fixture
def downloads(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Replace both libraries' download functions with ones that fail as offline (URLError)."""
    import facenet_pytorch.models.utils.download as fp_download
    import insightface.utils.storage as if_storage

    calls: list[str] = []

    def insightface_offline(sub_dir, name, root="~/.insightface"):
        calls.append(f"insightface:{name}")
        # like insightface: the pack folder is created, then the download fails
        Path(root, sub_dir).expanduser().mkdir(parents=True, exist_ok=True)
        raise URLError("offline (test)")

    def facenet_offline(url, dst, *args, **kwargs):
        calls.append(f"facenet:{url}")
        raise URLError("offline (test)")

    monkeypatch.setattr(if_storage, "ensure_available", insightface_offline)
    monkeypatch.setattr(fp_download, "download_url_to_file", facenet_offline)
    return calls


def _touch(path: Path, data: bytes = b"weights") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


# --------------------------------------------------------------------------- missing


@pytest.mark.parametrize("allow_download", [False, True])
def test_scrfd_missing_names_file_and_destination(
    home: Path, tmp_path: Path, downloads: list[str], allow_download: bool
) -> None:
    empty = tmp_path / "weights"
    empty.mkdir()
    with pytest.raises(WeightsNotFoundError) as info:
        scrfd_weights(None, empty, allow_download=allow_download)
    msg = str(info.value)
    assert SCRFD_FILE in msg and SCRFD_PACK in msg
    assert f"{empty}/{SCRFD_FILE}" in msg  # where to put it
    assert "mtcnn" in msg  # the offline alternative
    assert downloads == (["insightface:buffalo_l"] if allow_download else [])
    assert list(empty.iterdir()) == []  # nothing written to the weights folder
    if not allow_download:
        assert not (home / ".insightface").exists()


def test_scrfd_missing_after_failed_download_hints_empty_pack(home: Path, downloads: list[str]) -> None:
    (home / ".insightface" / "models" / SCRFD_PACK).mkdir(parents=True)  # left behind by a failed download
    with pytest.raises(WeightsNotFoundError, match="delete it") as info:
        scrfd_weights(allow_download=True)
    assert WEIGHTS_ENV in str(info.value)  # no folder given: says how to give one
    assert downloads == ["insightface:buffalo_l"]


@pytest.mark.parametrize("allow_download", [False, True])
def test_facenet_missing_names_file_source_and_destination(
    home: Path, tmp_path: Path, downloads: list[str], allow_download: bool
) -> None:
    empty = tmp_path / "weights"
    empty.mkdir()
    with pytest.raises(WeightsNotFoundError) as info:
        facenet_weights(empty, allow_download=allow_download)
    msg = str(info.value)
    assert FACENET_FILE in msg
    assert weights.FACENET_SOURCE in msg  # where it comes from
    assert f"{empty}/{FACENET_FILE}" in msg  # where to put it
    assert "dlib" in msg
    assert downloads == ([f"facenet:{weights.FACENET_SOURCE}"] if allow_download else [])
    assert not (home / "torch" / "checkpoints" / FACENET_FILE).exists()
    assert list(empty.iterdir()) == []


def test_build_backends_missing_weights_raise_before_loading(home: Path, tmp_path: Path, downloads: list[str]) -> None:
    empty = tmp_path / "weights"
    empty.mkdir()
    with pytest.raises(WeightsNotFoundError, match=SCRFD_FILE.replace(".", r"\.")):
        build_detector(BackendConfig(detector="scrfd", device="cpu", weights_dir=str(empty), allow_download=False))
    with pytest.raises(WeightsNotFoundError, match=FACENET_FILE.replace(".", r"\.")):
        build_embedder(BackendConfig(embedder="facenet", device="cpu", weights_dir=str(empty), allow_download=True))
    assert downloads == [f"facenet:{weights.FACENET_SOURCE}"]


def test_empty_weight_files_do_not_count(home: Path, tmp_path: Path) -> None:
    folder = tmp_path / "weights"
    _touch(folder / SCRFD_FILE, b"")
    _touch(folder / FACENET_FILE, b"")
    with pytest.raises(WeightsNotFoundError):
        scrfd_weights(None, folder, allow_download=False)
    with pytest.raises(WeightsNotFoundError):
        facenet_weights(folder, allow_download=False)


def test_explicit_detector_model_missing(home: Path, tmp_path: Path) -> None:
    with pytest.raises(WeightsNotFoundError, match="my_scrfd.onnx"):
        scrfd_weights(tmp_path / "my_scrfd.onnx", allow_download=True)


# --------------------------------------------------------------------------- found


@pytest.mark.parametrize("rel", [SCRFD_FILE, f"{SCRFD_PACK}/{SCRFD_FILE}", f"models/{SCRFD_PACK}/{SCRFD_FILE}"])
def test_scrfd_found_in_weights_dir(home: Path, tmp_path: Path, downloads: list[str], rel: str) -> None:
    target = _touch(tmp_path / "w" / rel)
    assert scrfd_weights(None, tmp_path / "w", allow_download=True) == target
    assert downloads == []


@pytest.mark.parametrize("rel", [FACENET_FILE, f"checkpoints/{FACENET_FILE}"])
def test_facenet_found_in_weights_dir(home: Path, tmp_path: Path, downloads: list[str], rel: str) -> None:
    target = _touch(tmp_path / "w" / rel)
    assert facenet_weights(tmp_path / "w", allow_download=True) == target
    assert downloads == []


def test_found_via_environment_variable(
    home: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, downloads: list[str]
) -> None:
    env_dir = tmp_path / "from_env"
    det = _touch(env_dir / SCRFD_FILE)
    emb = _touch(env_dir / FACENET_FILE)
    monkeypatch.setenv(WEIGHTS_ENV, str(env_dir))
    assert weights.weights_dir() == env_dir
    assert scrfd_weights(allow_download=False) == det
    assert facenet_weights(allow_download=False) == emb
    # an explicit --weights-dir wins over the environment variable
    explicit = tmp_path / "explicit"
    det2 = _touch(explicit / SCRFD_FILE)
    assert scrfd_weights(None, explicit, allow_download=False) == det2
    # "~" in the variable is expanded
    monkeypatch.setenv(WEIGHTS_ENV, "~/w")
    home_det = _touch(home / "w" / SCRFD_FILE)
    assert scrfd_weights(allow_download=False) == home_det
    assert downloads == []


def test_weights_dir_beats_library_cache(home: Path, tmp_path: Path) -> None:
    cached = _touch(home / ".insightface" / "models" / SCRFD_PACK / SCRFD_FILE)
    assert scrfd_weights(allow_download=False) == cached  # the library cache is used when no folder is given
    local = _touch(tmp_path / "w" / SCRFD_FILE)
    assert scrfd_weights(None, tmp_path / "w", allow_download=False) == local


def test_facenet_found_in_facenet_pytorch_cache(home: Path, downloads: list[str]) -> None:
    """facenet-pytorch itself caches vggface2 weights in $TORCH_HOME/checkpoints/ (not torch.hub's dir)."""
    from facenet_pytorch.models.inception_resnet_v1 import get_torch_home

    assert Path(get_torch_home()) == home / "torch"
    cached = _touch(home / "torch" / "checkpoints" / FACENET_FILE)
    assert facenet_weights(allow_download=False) == cached
    assert downloads == []


def test_facenet_download_lands_in_library_cache(home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import facenet_pytorch.models.utils.download as fp_download

    def fake_download(url, dst, *args, **kwargs):
        assert url == weights.FACENET_SOURCE
        Path(dst).write_bytes(b"downloaded")

    monkeypatch.setattr(fp_download, "download_url_to_file", fake_download)
    found = facenet_weights(allow_download=True)
    assert found == home / "torch" / "checkpoints" / FACENET_FILE
    assert found.read_bytes() == b"downloaded"


def test_real_scrfd_loads_from_weights_dir_and_env(
    home: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, downloads: list[str]
) -> None:
    src = SCRFD_WEIGHTS / "scrfd_500m_bnkps.onnx"
    require_shared_data(src)
    folder = tmp_path / "offline"
    folder.mkdir()
    os.symlink(src, folder / SCRFD_FILE)  # stands in for det_10g.onnx (same outputs, same code path)
    det = build_detector(BackendConfig(detector="scrfd", device="cpu", weights_dir=str(folder), allow_download=False))
    assert det.name == "scrfd" and Path(det.model_file) == folder / SCRFD_FILE
    assert det.weights_sha256 == weights.sha256_file(src)
    monkeypatch.setenv(WEIGHTS_ENV, str(folder))
    assert scrfd_weights(allow_download=False) == folder / SCRFD_FILE
    assert downloads == []


def test_sha256_file_changes_with_content(tmp_path: Path) -> None:
    import hashlib

    path = _touch(tmp_path / "f.bin", b"abc")
    assert weights.sha256_file(path) == hashlib.sha256(b"abc").hexdigest()
    os.utime(path, ns=(1, 1))
    path.write_bytes(b"abcd")
    assert weights.sha256_file(path) == hashlib.sha256(b"abcd").hexdigest()


def test_dlib_weights_located_without_pkg_resources() -> None:
    pytest.importorskip("dlib")
    path = dlib_weights()
    assert path.name == DLIB_FILE and path.is_file() and path.stat().st_size > 1_000_000


def test_dlib_weights_missing_package(monkeypatch: pytest.MonkeyPatch) -> None:
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name == "face_recognition_models" else real(name, *a)
    )
    with pytest.raises(WeightsNotFoundError, match="face.recognition.models"):
        dlib_weights()


def test_user_caches_untouched(home: Path, tmp_path: Path, downloads: list[str]) -> None:
    """Failed lookups with downloads off create nothing anywhere under the (fake) home."""
    before = sorted(p.relative_to(home) for p in home.rglob("*"))
    for call in (
        lambda: scrfd_weights(None, tmp_path, allow_download=False),
        lambda: facenet_weights(tmp_path, allow_download=False),
    ):
        with pytest.raises(WeightsNotFoundError):
            call()
    assert sorted(p.relative_to(home) for p in home.rglob("*")) == before
