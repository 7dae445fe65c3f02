#!/usr/bin/env bash
# The main job: set up if needed, then run Dojo on the bundled demo task
# (Block2Block tabletop): demonstrations -> Stage-1 training -> evaluation.
# Everything generated goes under ./data (git-ignored). Extra args go to the pipeline.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
export MUJOCO_GL=${MUJOCO_GL:-egl} PYOPENGL_PLATFORM=${PYOPENGL_PLATFORM:-egl}
exec .venv/bin/python -m core.cli pipeline --root "${DOJO_DATA:-data}" "$@"
