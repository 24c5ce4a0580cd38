"""Every path the suite reads or writes, derived from one output root in one place."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parents[2]
DEFAULT_DATA_DIR = Path("backend") / "dataset" / "processed"

#: The model as data: arrays (numpy.load(allow_pickle=False)) and its typed description.
MODEL_NPZ_NAME = "model.npz"
MODEL_JSON_NAME = "model.json"
#: Pickles written beside the model for other code that reads them; the loader reads them only with
#: allow_pickle (a model of an earlier release has nothing else).
BUNDLE_NAME = "face_classifier_v1.pkl"
LABEL_ENCODER_NAME = "label_encoder.pkl"
CLASSES_NAME = "label_encoder_classes.npy"
PICKLED_FILES = (BUNDLE_NAME, LABEL_ENCODER_NAME, CLASSES_NAME)
MANIFEST_NAME = "manifest.json"
JOURNAL_NAME = ".publish.json"


CLASSIFIER_DIR_NAME = "Classifier"
MODELS_DIR_NAME = "models"


@dataclass(frozen=True)
class ModelFolder:
    """One model's files: its ``Classifier/`` (what the backend loads) and its ``models/`` outputs.

    The same layout wherever a model lies: published (``backend/models/Classifier`` +
    ``models/``), kept for rollback (``versions/<v>/``), waiting for ``--promote``
    (``candidate/<v>/``), refused (``rejected/<v>/``) or being built (``.staging/<v>/``).
    """

    classifier_dir: Path
    models_dir: Path

    @classmethod
    def under(cls, root: Path) -> ModelFolder:
        """The layout of a kept model: ``root/Classifier`` and ``root/models``."""
        return cls(root / CLASSIFIER_DIR_NAME, root / MODELS_DIR_NAME)

    # Classifier/
    @property
    def model_npz(self) -> Path:
        return self.classifier_dir / MODEL_NPZ_NAME

    @property
    def model_json(self) -> Path:
        return self.classifier_dir / MODEL_JSON_NAME

    @property
    def bundle(self) -> Path:
        return self.classifier_dir / BUNDLE_NAME

    @property
    def label_encoder(self) -> Path:
        return self.classifier_dir / LABEL_ENCODER_NAME

    @property
    def classes(self) -> Path:
        return self.classifier_dir / CLASSES_NAME

    @property
    def manifest(self) -> Path:
        return self.classifier_dir / MANIFEST_NAME

    # models/
    @property
    def X(self) -> Path:  # the artifact's name
        return self.models_dir / "X.npy"

    @property
    def y(self) -> Path:
        return self.models_dir / "y.npy"

    @property
    def heldout(self) -> Path:
        """Which rows of X.npy were held out, their labels and the new model's answers (for the gate)."""
        return self.models_dir / "heldout.npz"

    @property
    def labels_csv(self) -> Path:
        return self.models_dir / "labels.csv"

    @property
    def report_txt(self) -> Path:
        return self.models_dir / "training_report.txt"

    @property
    def model_readme(self) -> Path:
        return self.models_dir / "MODEL_README.md"

    @property
    def metrics_json(self) -> Path:
        return self.models_dir / "metrics.json"

    @property
    def skipped_csv(self) -> Path:
        return self.models_dir / "skipped_images.csv"

    @property
    def report_html(self) -> Path:
        """The page a teacher reads: verdict, photos to fix (with faces), confusions, students, plots."""
        return self.models_dir / "report.html"

    @property
    def inputs_csv(self) -> Path:
        """Every file and folder of the data folder: used, skipped or ignored, with the reason."""
        return self.models_dir / "inputs.csv"

    @property
    def plots_dir(self) -> Path:
        return self.models_dir / "plots"


@dataclass(frozen=True)
class OutputPaths:
    """Artifact locations under an output root (default: the project root)."""

    root: Path

    @classmethod
    def at(cls, root: str | Path | None = None) -> OutputPaths:
        return cls(Path(root).resolve() if root else PROJECT_ROOT)

    # backend/models/: what the backend loads, and the models kept beside it
    @property
    def backend_models(self) -> Path:
        return self.root / "backend" / "models"

    @property
    def classifier_dir(self) -> Path:
        return self.backend_models / CLASSIFIER_DIR_NAME

    @property
    def models_dir(self) -> Path:
        return self.root / MODELS_DIR_NAME

    @property
    def published(self) -> ModelFolder:
        """The model in service: ``backend/models/Classifier`` and ``models/``."""
        return ModelFolder(self.classifier_dir, self.models_dir)

    def version(self, name: str) -> ModelFolder:
        """A previous model kept for rollback."""
        return ModelFolder.under(self.versions_dir / name)

    def candidate(self, name: str) -> ModelFolder:
        """A --review model waiting for --promote."""
        return ModelFolder.under(self.candidate_dir / name)

    @property
    def versions_dir(self) -> Path:
        """Earlier published models kept for rollback."""
        return self.backend_models / "versions"

    @property
    def staging_dir(self) -> Path:
        """New artifacts are assembled here, verified, then renamed into place."""
        return self.backend_models / ".staging"

    @property
    def candidate_dir(self) -> Path:
        """A model built with --review, waiting for --promote (never read by the backend)."""
        return self.backend_models / "candidate"

    @property
    def rejected_dir(self) -> Path:
        """Models the quality gate refused, kept for inspection (never read by the backend)."""
        return self.backend_models / "rejected"

    @property
    def lock_file(self) -> Path:
        """The OS lock that lets one retraining run publish at a time."""
        return self.backend_models / ".retrain.lock"

    @property
    def lock_owner_file(self) -> Path:
        """Who holds the lock (to name the other run in a message)."""
        return self.backend_models / ".retrain.owner.json"

    @property
    def journal_file(self) -> Path:
        """The publish journal: which model is complete while a swap is in progress."""
        return self.backend_models / JOURNAL_NAME

    @property
    def erasures_dir(self) -> Path:
        """One record per ``--erase``: which student ids were erased, when, and what was removed (ids only)."""
        return self.backend_models / "erasures"

    @property
    def erasure_intent(self) -> Path:
        """An erasure in progress: the ids being erased, until every place is clean (ids only)."""
        return self.backend_models / ".erasure.json"

    @property
    def trash_dir(self) -> Path:
        """Model folders being deleted by an erasure: renamed here first, so none is ever half-there."""
        return self.backend_models / ".erasing"

    @property
    def error_log(self) -> Path:
        """The traceback of the last run that failed unexpectedly."""
        return self.models_dir / "retrain_error.log"

    # the published model's files (see ModelFolder)
    @property
    def model_npz(self) -> Path:
        return self.published.model_npz

    @property
    def model_json(self) -> Path:
        return self.published.model_json

    @property
    def bundle(self) -> Path:
        return self.published.bundle

    @property
    def label_encoder(self) -> Path:
        return self.published.label_encoder

    @property
    def classes(self) -> Path:
        return self.published.classes

    @property
    def manifest(self) -> Path:
        return self.published.manifest

    @property
    def X(self) -> Path:
        return self.published.X

    @property
    def y(self) -> Path:
        return self.published.y

    @property
    def heldout(self) -> Path:
        return self.published.heldout

    @property
    def labels_csv(self) -> Path:
        return self.published.labels_csv

    @property
    def report_txt(self) -> Path:
        return self.published.report_txt

    @property
    def model_readme(self) -> Path:
        return self.published.model_readme

    @property
    def metrics_json(self) -> Path:
        return self.published.metrics_json

    @property
    def skipped_csv(self) -> Path:
        return self.published.skipped_csv

    @property
    def report_html(self) -> Path:
        return self.published.report_html

    @property
    def inputs_csv(self) -> Path:
        return self.published.inputs_csv

    @property
    def plots_dir(self) -> Path:
        return self.published.plots_dir

    @property
    def cache_dir(self) -> Path:
        return self.models_dir / "cache"

    def legacy_artifacts(self) -> list[Path]:
        """Artifacts of the original recipe, replaced or removed when a new model is published."""
        return [
            self.bundle,
            self.label_encoder,
            self.classes,
            self.X,
            self.y,
            self.labels_csv,
            self.report_txt,
            self.model_readme,
            self.models_dir / "temp",
            self.root / "backend" / "recognizer" / "embeddings_cache.npy",
        ]
