"""models/report.html in a real browser (Debian's headless Chromium): every picture loads, nothing
comes from the network, and the photos to fix are shown with faces."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from conftest import OFFLINE_ARGS, ORL, require_shared_data, skip_unless_ci

import retrain_model
from backend.recognizer.paths import OutputPaths

pytestmark = pytest.mark.slow


def _tree(data: Path) -> Path:
    """6 ORL students x 8 photos; one photo of student 1 filed under student 2; one broken file."""
    require_shared_data()
    for k in range(1, 7):
        folder = data / f"STU{k:03d}_Person_{k}"
        folder.mkdir(parents=True)
        for i in range(1, 9):
            shutil.copyfile(ORL / f"s{k}" / f"{i}.pgm", folder / f"{i}.pgm")
    (data / "STU001_Person_1" / "8.pgm").rename(data / "STU002_Person_2" / "from_person_1.pgm")
    (data / "STU003_Person_3" / "broken.jpg").write_bytes(b"not a photo")
    return data


@pytest.fixture(scope="module")
def page_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The output root of one real run on :func:`_tree` (read-only: copy what a test changes)."""
    base = tmp_path_factory.mktemp("html")
    root = base / "root"
    assert (
        retrain_model.main(
            ["--data-dir", str(_tree(base / "data")), "--output-root", str(root), "--quiet", *OFFLINE_ARGS]
        )
        == 0
    )
    return root


@pytest.fixture(scope="module")
def page(page_root: Path) -> Path:
    return OutputPaths.at(page_root).report_html


def _browser():
    webdriver = pytest.importorskip("selenium.webdriver")
    chromium, driver = shutil.which("chromium") or shutil.which("chromium-browser"), shutil.which("chromedriver")
    missing = [name for name, found in (("chromium", chromium), ("chromedriver", driver)) if not found]
    if missing:
        skip_unless_ci(
            f"the browser test needs Debian's chromium and chromium-driver; not found: {', '.join(missing)}",
            ".ci/run installs them",
        )
    options = webdriver.ChromeOptions()
    options.binary_location = chromium or ""
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--window-size=1200,2400"):
        options.add_argument(arg)
    from selenium.webdriver.chrome.service import Service

    return webdriver.Chrome(options=options, service=Service(driver))


def test_the_page_opens_offline_with_every_picture_loaded(page: Path, tmp_path: Path) -> None:
    browser = _browser()
    try:
        browser.get(page.as_uri())
        images = browser.execute_script(
            "return Array.from(document.images).map(i => [i.alt, i.complete && i.naturalWidth > 0, i.src.slice(0, 22)])"
        )
        fetched = browser.execute_script("return performance.getEntriesByType('resource').map(e => e.name)")
        text = browser.find_element("tag name", "body").text
        browser.save_screenshot(str(tmp_path / "report.png"))
    finally:
        browser.quit()
    assert len(images) >= 6 and all(ok for _, ok, _ in images), images  # faces and plots
    assert {src for _, _, src in images} <= {"data:image/jpeg;base64", "data:image/png;base64,"}
    assert fetched == []  # nothing loaded from anywhere: the page is self-contained
    assert "Photos to fix" in text and "mislabel" in text and "from_person_1.pgm" in text
    assert "STU002 (its folder)" in text and "STU001 (looks like)" in text
    assert "broken.jpg" in text and "Who gets confused with whom" in text and "Stranger safety" in text
    assert (tmp_path / "report.png").stat().st_size > 10_000


def test_no_photos_in_report_leaves_every_face_out(tmp_path: Path, page_root: Path) -> None:
    root = tmp_path / "root"
    data = _tree(tmp_path / "data")
    # the same photos as page_root's run: their embeddings come from its cache (this test is about the page)
    shutil.copytree(OutputPaths.at(page_root).cache_dir, OutputPaths.at(root).cache_dir)
    args = ["--data-dir", str(data), "--output-root", str(root), "--quiet", "--no-photos-in-report", *OFFLINE_ARGS]
    assert retrain_model.main(args) == 0
    html = OutputPaths.at(root).report_html.read_text()
    assert "data:image/jpeg" not in html and "data:image/png" in html  # plots, no faces
    assert "holds no photos of students" in html and "from_person_1.pgm" in html


def test_without_a_browser_the_skip_names_what_is_missing(monkeypatch: pytest.MonkeyPatch) -> None:
    pytest.importorskip("selenium.webdriver")
    monkeypatch.delenv("CI", raising=False)
    monkeypatch.setattr(shutil, "which", lambda name: None)
    with pytest.raises(pytest.skip.Exception, match="chromium-driver; not found: chromium, chromedriver$"):
        _browser()
    monkeypatch.setenv("CI", "true")
    with pytest.raises(pytest.fail.Exception, match=r"\.ci/run installs them"):
        _browser()
