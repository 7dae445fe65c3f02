#!/usr/bin/env bash
# Set up if needed, then run the default test suite (slow benchmarks excluded;
# run them with `scripts/test.sh -m slow`). Extra args go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
export MUJOCO_GL=${MUJOCO_GL:-egl} PYOPENGL_PLATFORM=${PYOPENGL_PLATFORM:-egl}
exec .venv/bin/python -m pytest -q "$@"
