#!/usr/bin/env bash
# The main job: set up if needed, then run Dojo on this machine: the database
# (data/dojo.sqlite), the first admin (DOJO_ADMIN_PASSWORD, or a generated password printed
# once), the demo task (Block2Block tabletop) and, on a fresh machine, its preparation jobs
# (demonstrations -> Stage-1 SFT -> a practice session); then the worker and the web app on
# http://localhost:8501. Ctrl-C stops both. Options: see `scripts/launch.py --help`.
#
#   ./scripts/run.sh pipeline [ARGS]   the former headless run: demos -> SFT -> eval, JSON report
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
export MUJOCO_GL=${MUJOCO_GL:-egl} PYOPENGL_PLATFORM=${PYOPENGL_PLATFORM:-egl}
if [ "${1:-}" = "pipeline" ]; then
  shift
  exec .venv/bin/python -m core.cli pipeline --root "${DOJO_DATA:-data}" "$@"
fi
exec .venv/bin/python scripts/launch.py "$@"
