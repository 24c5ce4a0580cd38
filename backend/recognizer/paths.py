"""Every path the suite reads or writes, derived from one output root in one place."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parents[2]
DEFAULT_DATA_DIR = Path("backend") / "dataset" / "processed"

BUNDLE_NAME = "face_classifier_v1.pkl"
LABEL_ENCODER_NAME = "label_encoder.pkl"
CLASSES_NAME = "label_encoder_classes.npy"
MANIFEST_NAME = "manifest.json"


@dataclass(frozen=True)
class OutputPaths:
    """Artifact locations under an output root (default: the project root)."""

    root: Path

    @classmethod
    def at(cls, root: str | Path | None = None) -> OutputPaths:
        return cls(Path(root).resolve() if root else PROJECT_ROOT)

    # backend/models/Classifier: what the backend loads
    @property
    def backend_models(self) -> Path:
        return self.root / "backend" / "models"

    @property
    def classifier_dir(self) -> Path:
        return self.backend_models / "Classifier"

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
    def heldout(self) -> Path:
        """Which rows of X.npy were held out, their labels and the new model's answers (for the gate)."""
        return self.models_dir / "heldout.npz"

    @property
    def error_log(self) -> Path:
        """The traceback of the last run that failed unexpectedly."""
        return self.models_dir / "retrain_error.log"

    @property
    def lock_file(self) -> Path:
        """The OS lock that lets one retraining run publish at a time."""
        return self.backend_models / ".retrain.lock"

    @property
    def lock_owner_file(self) -> Path:
        """Who holds the lock (to name the other run in a message)."""
        return self.backend_models / ".retrain.owner.json"

    # models/: training data and reports
    @property
    def models_dir(self) -> Path:
        return self.root / "models"

    @property
    def X(self) -> Path:  # the artifact's name
        return self.models_dir / "X.npy"

    @property
    def y(self) -> Path:
        return self.models_dir / "y.npy"

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
