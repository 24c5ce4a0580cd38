#!/usr/bin/env bash
# Retrain the face model (Linux/macOS twin of retrain_clean.bat). Extra arguments are passed on,
# e.g.  ./retrain_clean.sh --dry-run
cd "$(dirname "$0")" || exit 1
PY=".venv/bin/python"
[ -x "$PY" ] || PY="python3"
"$PY" retrain_model.py --open-report "$@"   # --no-open keeps the report page closed
code=$?
if [ $code -ne 0 ]; then
  echo
  echo "Retraining FAILED (exit code $code). The previous model is still in place."
  echo "Read the ERROR line above and models/training_report.txt, fix the problem, then run again."
fi
exit $code
