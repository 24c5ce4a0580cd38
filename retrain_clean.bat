@echo off
REM Double-click to retrain the SmartAttendance face model from backend\dataset\processed.
REM Extra arguments are passed on, e.g.  retrain_clean.bat --dry-run  or  retrain_clean.bat --no-open
setlocal
cd /d "%~dp0"
set "PY=python"
if exist ".venv\Scripts\python.exe" set "PY=.venv\Scripts\python.exe"
REM --open-report shows models\report.html at the end; add --no-open to keep it closed
"%PY%" retrain_model.py --open-report %*
set "CODE=%ERRORLEVEL%"
echo.
if not "%CODE%"=="0" (
  echo Retraining FAILED ^(exit code %CODE%^). The previous model is still in place.
  echo Read the ERROR line above and models\training_report.txt, fix the problem, then run again.
) else (
  echo Retraining finished. Restart the attendance backend ^(or let it call reload_if_changed^) to use the new model.
)
echo.
pause
exit /b %CODE%
