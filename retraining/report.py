"""Machine-readable outputs of one run and the writers of every ``models/`` file: metrics.json,
skipped_images.csv, inputs.csv, labels.csv, the arrays; training_report.txt and MODEL_README.md are
rendered by the presentation package (retraining/presentation) and written here."""

from __future__ import annotations

import json
import logging
from dataclasses import asdict
from pathlib import Path

import numpy as np

from backend.recognizer.metadata import FaceModels
from backend.recognizer.paths import ModelFolder, OutputPaths

from .dataset import write_labels_csv
from .evaluate import Evaluation
from .files import ESCAPE, files_under, write_csv
from .heldout import Heldout
from .presentation.readme import model_readme_text
from .presentation.text_report import training_report_text
from .presentation.words import stranger_sentence, verdict_headline  # noqa: F401  (stranger_sentence: re-exported)
from .publish import Stage
from .summary import RunSummary, inventory
from .verdict import Verdict

log = logging.getLogger(__name__)


def write_training_report(path: Path, s: RunSummary, artifact_paths: list[Path]) -> None:
    path.write_text(training_report_text(s, artifact_paths), encoding="utf-8", errors=ESCAPE)


def write_model_readme(path: Path, s: RunSummary) -> None:
    path.write_text(model_readme_text(s), encoding="utf-8", errors=ESCAPE)


def metrics_dict(s: RunSummary) -> dict:
    ev = s.evaluation
    return {
        "model_version": s.version,
        "created_at": s.created_at,
        "models": _models_dict(s.models),
        "counts": {
            "students": len(s.index.students),
            "students_usable": len(s.extraction.counts()),
            "images_found": len(s.index.records),
            "images_embedded": len(s.extraction.records),
            "images_skipped": len(s.all_skipped),
            "files_ignored": len(s.index.ignored_files) + len(s.index.loose_files),
            "train": ev.n_train,
            "test": ev.n_test,
        },
        "accuracy": ev.accuracy,
        "per_student": {k: v for k, v in ev.report_dict.items() if isinstance(v, dict)},
        "confidence": ev.confidence,
        "threshold_sweep": [asdict(r) for r in ev.sweep],
        "recommended_threshold": ev.recommended_threshold,
        "recommendation_reason": ev.recommendation_reason,
        "threshold": s.threshold,
        "threshold_source": s.threshold_source,
        "confusion_matrix": {"labels": ev.labels, "matrix": np.asarray(ev.confusion).tolist()},
        "train_only_students": ev.train_only_students,
        "excluded_students": s.excluded_students,
        "duplicate_photos": [[str(p) for p in g] for g in s.duplicate_groups],
        "several_faces": [{"path": str(p), "faces": n} for p, n in s.several_faces],
        "skipped": [{"path": str(p), "reason": r} for p, r in s.all_skipped],
        "nonconforming_folders": s.index.nonconforming_folders,
        "open_set": open_set_dict(ev, s.verdict),
        "verdict": _verdict_dict(s.verdict),
        "session": None if s.sessions is None else s.sessions.to_dict(),
        "data_quality": [asdict(f) for f in s.findings],
        "plots": [str(p) for p in s.plots],
        "timings_s": s.timings.as_dict(),
        "library_versions": dict(s.library_versions),
        "quality_gate": s.gate.to_dict(),
        "weights_warnings": s.weights_warnings,
    }


def _verdict_dict(v: Verdict) -> dict[str, object]:
    """The verdict for metrics.json, with its headline in words after ``recognition_poor``."""
    d = v.to_dict()
    at = list(d).index("recognition_poor") + 1
    items = list(d.items())
    return dict([*items[:at], ("headline", verdict_headline(v)), *items[at:]])


def _models_dict(models: FaceModels) -> dict:
    """The face models as metrics.json records them (detector and embedder first, as ``backends.describe``)."""
    d = models.to_dict()
    return {"detector": d.pop("detector"), "embedder": d.pop("embedder"), **d}


def open_set_dict(ev: Evaluation, verdict: Verdict) -> dict | None:
    """The open-set measurement for metrics.json; ``target_reached`` is the verdict's ``target_met``
    (at the threshold in use), so metrics.json and the summary cannot disagree."""
    os_ = ev.open_set
    if os_ is None:
        return None
    at = os_.row_at(ev.recommended_threshold)
    return {
        "folds": os_.n_folds,
        "unknown_students_per_fold": os_.unknown_students,
        "known_photos": os_.n_known_photos,
        "known_photos_within_clip": os_.n_known_within_clip,
        "unknown_photos": os_.n_unknown_photos,
        "max_far": os_.max_far,
        "target_reached": verdict.target_met,
        "threshold_in_use": verdict.threshold,
        "enrolled_ratio": os_.enrolled_ratio,
        "false_accept_rate_at_recommended": at.false_accept_rate,
        "false_accept_upper95_at_recommended": at.false_accept_upper95,
        "recognition_rate_at_recommended": at.recognition_rate,
        "sweep": [asdict(r) for r in os_.sweep],
        "fine_sweep": [asdict(r) for r in os_.fine_sweep],
        "left_out": {
            "held_together": [list(g) for g in os_.left_out.held_together],
            "accepted_as": [
                {"student": a, "taken_for": b, "accepted": k, "photos": n} for a, b, k, n in os_.left_out.accepted_as
            ],
            "photos": dict(os_.left_out.photos),
            "stranger_photos_dropped": os_.left_out.stranger_photos_dropped,
        },
    }


def write_metrics(path: Path, s: RunSummary) -> None:
    path.write_text(json.dumps(metrics_dict(s), indent=2, ensure_ascii=False) + "\n", encoding="utf-8", errors=ESCAPE)


def write_inputs_csv(path: Path, s: RunSummary) -> None:
    write_csv(path, ["path", "status", "reason"], ([str(p), status, why] for p, status, why in inventory(s)))


def write_skipped_csv(path: Path, s: RunSummary) -> None:
    write_csv(path, ["path", "reason"], ([str(p), r] for p, r in s.all_skipped))


def report_files(folder: ModelFolder) -> list[Path]:
    """The ``models/`` files every run writes besides its plots, in the order the report lists them."""
    return [
        *(folder.X, folder.y, folder.heldout, folder.labels_csv, folder.report_txt, folder.report_html),
        *(folder.model_readme, folder.metrics_json, folder.skipped_csv, folder.inputs_csv),
    ]


def new_models_files(plots: list[Path]) -> list[str]:
    """The ``models/`` files (relative POSIX paths) a run with these plots publishes: what its swap replaces."""
    folder = ModelFolder.under(Path())
    return [p.relative_to(folder.models_dir).as_posix() for p in report_files(folder)] + [
        Path(p).as_posix() for p in plots
    ]


def write_reports(stage: Stage, paths: OutputPaths, s: RunSummary) -> list[Path]:
    """Write the run's ``models/`` outputs into the stage; return every artifact's final path
    (model files first), in the order the report and the summary list them."""
    out = stage.models_dir
    np.save(out / paths.X.name, s.extraction.embeddings.astype(np.float32))
    np.save(out / paths.y.name, s.extraction.student_ids)
    ev = s.evaluation
    Heldout(ev.test_index, ev.test_true, ev.test_pred).save(out / paths.heldout.name)
    write_labels_csv(out / paths.labels_csv.name, s.index, s.extraction.counts())
    final = [
        *(paths.classifier_dir / name for name in files_under(stage.classifier_dir)),
        paths.manifest,
        *report_files(paths.published),
        *(paths.models_dir / p for p in s.plots),
    ]
    write_training_report(out / paths.report_txt.name, s, final)
    write_model_readme(out / paths.model_readme.name, s)
    write_metrics(out / paths.metrics_json.name, s)
    write_skipped_csv(out / paths.skipped_csv.name, s)
    write_inputs_csv(out / paths.inputs_csv.name, s)
    return final  # report.html is written by presentation.html.write_html_report
