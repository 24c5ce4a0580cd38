"""models/MODEL_README.md: what the model is and how to use it, rendered from one :class:`~retraining.summary.RunSummary`."""

from __future__ import annotations

from ..summary import RunSummary
from .words import fmt_threshold, pct, stranger_sentence


def _stranger_sentence(s: RunSummary) -> str:
    v = s.verdict
    os_ = s.evaluation.open_set
    if not v.measured or os_ is None:
        return "Not measured (needs at least 3 students)."
    return stranger_sentence(v, os_.n_unknown_photos)


def _gate_sentence(s: RunSummary) -> str:
    if s.gate.forced:
        return "**Published with --force although the quality gate refused it:** " + s.gate.verdict()[len("FORCED: ") :]
    return "Quality gate: " + s.gate.verdict() + "."


def model_readme_text(s: RunSummary) -> str:
    """models/MODEL_README.md."""
    m = s.face_models
    summary_line = (
        f"Students: {len(s.extraction.counts())} - photos embedded: {len(s.extraction.records)} - "
        f"held-out accuracy: {pct(s.evaluation.accuracy)} - threshold in use: **{fmt_threshold(s.threshold)}**."
    )
    text = f"""# Face recognition model {s.version}

Created {s.created_at} from `{s.data_dir}` by `retrain_model.py`.
{summary_line}
{_gate_sentence(s)}

## Pipeline (training and recognition share it: `backend/recognizer/faces.py`)
1. Decode the photo (EXIF rotation applied; grey, transparent, 16-bit and CMYK images converted to RGB).
2. Detect faces with **{m.detector.name}** ({m.detector.model_file or "bundled weights"}); keep the largest.
3. Align and crop to **{m.crop.size}x{m.crop.size}** ({m.crop.method}).
4. Embed with **{m.embedder.name}** -> **{m.embedding_dim}-d** vector, **L2-normalised** (unit length).
5. `StandardScaler` (fitted on the training embeddings, stored in `model.npz`) -> class-balanced linear SVM
   with temperature-calibrated probabilities (`CalibratedClassifierCV(method="temperature")`).
6. Open-set confidence of the top answer (SVM probability + similarity to that student's photos, calibrated
   with students held out as strangers; `backend/recognizer/openset.py`) >= threshold -> that student;
   otherwise **Unknown**.

Never feed the classifier raw or differently-normalised vectors: always L2-normalise, then `scaler.transform`.
`backend/recognizer/loader.py` does all of this for you.

## Files
- `backend/models/Classifier/model.npz` - what the backend loads, as plain arrays (read without pickle): scaler mean/scale,
  classifier weights and intercepts, calibration temperature, open-set centres and calibrator, student ids.
- `backend/models/Classifier/model.json` - threshold, student names, face models and weight hashes, scores, gate record.
- `backend/models/Classifier/face_classifier_v1.pkl`, `label_encoder.pkl`, `label_encoder_classes.npy` - the same model as
  the original recipe's joblib pickles, for other code that reads them (the backend does not).
- `backend/models/Classifier/manifest.json` - SHA-256 of every artifact; the loader refuses files that do not match.
- `models/X.npy` (float32 N x {m.embedding_dim}), `models/y.npy` (student ids), `models/labels.csv`.
- `models/training_report.txt`, `models/metrics.json`, `models/skipped_images.csv` - what this run measured and skipped.

## Enrolling students and retraining
One folder per student under the data folder, named `STU001_First_Last`, holding 5-20 clear photos of that
student (front-facing, good light, one person). Then double-click `retrain_clean.bat` (Windows) or run
`python retrain_model.py`. The previous model is kept: `python retrain_model.py --rollback` restores it.

## How likely is a stranger to be marked present?
{_stranger_sentence(s)}
Pictures: {", ".join(f"`models/{p}`" for p in s.plots) or "none"}.

## Changing the threshold
Re-run with `--threshold 0.8`, or pass `threshold=` to `FaceRecognizer.load(...)` / `identify(...)` in the backend.
Higher values accept fewer strangers and ask more students to retry. See the sweep in `training_report.txt`.
"""
    return text
