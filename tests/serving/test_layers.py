"""The two packages and the arrow between them: serving never imports retraining and never writes."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

from conftest import ROOT

SERVING = ROOT / "backend" / "recognizer"
TRAINING = ROOT / "retraining"
#: Calls that create, change or delete files: none of them may appear in the serving package.
WRITING_CALLS = {
    "write_text",
    "write_bytes",
    "unlink",
    "rmdir",
    "mkdir",
    "rmtree",
    "replace",
    "rename",
    "makedirs",
    "remove",
    "dump",
    "save",
    "savez",
    "touch",
    "chmod",
}


def _imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    out: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            out.add(node.module)
    return out


def test_serving_never_imports_retraining() -> None:
    offenders = {
        str(p.relative_to(ROOT)): sorted(m for m in _imports(p) if m.split(".")[0] == "retraining")
        for p in SERVING.rglob("*.py")
    }
    assert {k: v for k, v in offenders.items() if v} == {}


#: The one exception: a weight download, only with allow_download=True (off in the backend by
#: default), into the library's own cache folder, never into the project or the model folders.
ALLOWED_WRITES = {("weights.py", "mkdir")}


def test_serving_has_no_file_writing_calls() -> None:
    found = []
    for path in SERVING.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Call):
                func = node.func
                name = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", "")
                owner = func.value.id if isinstance(func, ast.Attribute) and isinstance(func.value, ast.Name) else ""
                if owner == "dataclasses" or (path.name, name) in ALLOWED_WRITES:
                    continue
                mode = next((a for a in node.args[1:2] if isinstance(a, ast.Constant)), None)
                if name in WRITING_CALLS or (
                    name == "open" and mode is not None and set(str(mode.value)) & set("wax+")
                ):
                    found.append(f"{path.relative_to(ROOT)}:{node.lineno} {name}")
    assert found == []


def test_only_the_legacy_reader_imports_pickle_machinery() -> None:
    """scikit-learn and joblib (pickles) are imported by the old-model reader and by the class old pickles name."""
    users = {
        p.name
        for p in SERVING.rglob("*.py")
        if {m.split(".")[0] for m in _imports(p)} & {"sklearn", "joblib", "pickle", "cloudpickle", "dill"}
    }
    assert users == {"legacy.py", "linear_svm.py"}


def test_each_package_has_its_modules() -> None:
    """What the backend runs and what only retraining runs, at a glance."""
    serving = {p.stem for p in SERVING.glob("*.py")}
    training = {p.stem for p in TRAINING.glob("*.py")}
    assert {"loader", "bundle", "model", "manifest", "journal", "faces", "embedder", "weights", "images"} <= serving
    assert {"pipeline", "dataset", "extract", "cache", "train", "evaluate", "quality", "report", "publish", "lock"} <= (
        training
    )
    assert not (serving & (training - {"__init__", "errors"}))


def test_backend_use_imports_no_training_module_nor_scikit_learn(upgraded_fixture: Path) -> None:
    """Import the public names, load a published model and classify: no module of retraining/ is loaded,
    nor scikit-learn or joblib (nothing the backend reads is a pickle)."""
    code = (
        "import sys, numpy as np\n"
        "from backend.recognizer import FaceRecognizer\n"
        f"r = FaceRecognizer.load({str(upgraded_fixture)!r}, require_manifest=True)\n"
        f"r.classify(np.load({str(upgraded_fixture / 'models' / 'X.npy')!r}))\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] in ('retraining', 'sklearn', 'joblib')))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_backend_requirements_cover_what_serving_imports_and_no_more() -> None:
    """backend/requirements.txt is exactly what the backend needs (dlib only for dlib-trained models)."""
    from importlib.metadata import packages_distributions

    def norm(name: str) -> str:  # distribution names compare case- and separator-insensitively
        return name.strip().lower().replace("_", "-")

    pinned = {
        norm(line.split("==")[0])
        for line in (ROOT / "backend" / "requirements.txt").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    }
    dists = packages_distributions()
    local = {"backend", "__future__"}
    imported = set().union(*(_imports(p) for p in SERVING.rglob("*.py")))  # function-level imports too
    needed = set()
    for module in {m.split(".")[0] for m in imported} - local - set(sys.stdlib_module_names):
        needed.update(norm(d) for d in dists.get(module, [module]))
    optional = {"dlib", "dlib-bin"}  # only for models trained with --embedder dlib (installed by ../requirements.txt)
    assert needed - optional <= pinned, f"serving imports unpinned: {sorted(needed - optional - pinned)}"
    unused = pinned - needed - {"torch", "torchvision"}  # facenet_pytorch imports torchvision itself
    assert unused == set(), f"backend/requirements.txt pins what serving never imports: {sorted(unused)}"
