#!/usr/bin/env bash
# Does LeRobot's own LeRobotDataset load Dojo's LeRobot v3.0 export? Run by hand (not in CI: it
# downloads LeRobot and its dataset stack into a throwaway venv, ~1 GB):
#
#   bash scripts/lerobot_check/run.sh [EXPORT_DIR]
#
# Without EXPORT_DIR it exports 4 scripted tabletop demonstrations first (core.cli demos + data
# export). LeRobot 0.4.4 pins torch < 2.11, which does not install beside Dojo's torch 2.13, so
# it goes into its own venv (data/lerobot_check/venv) with --no-deps on top of the same CPU torch;
# torchvision 0.25 (the last with the PyAV VideoReader LeRobot's "pyav" backend calls) is PyPI's
# CUDA build, whose C ops cannot load here: sitecustomize.py skips their registrations (only its
# pure-Python video reader is used). Prints the dataset's counts, one decoded frame, then OK.
set -euo pipefail
cd "$(dirname "$0")/../.."
WORK=data/lerobot_check
VENV=$WORK/venv
export MUJOCO_GL=${MUJOCO_GL:-egl} PYOPENGL_PLATFORM=${PYOPENGL_PLATFORM:-egl} HF_HUB_OFFLINE=1
if [ ! -x "$VENV/bin/python" ]; then
  python3.11 -m venv "$VENV"
  "$VENV/bin/pip" install -q torch==2.13.0 "datasets>=4,<5" "huggingface-hub>=0.34.2,<0.36" "av>=15,<16" \
      draccus==0.10.0 jsonlines einops deepdiff termcolor "packaging<26" "accelerate>=1.10,<2" pillow
  "$VENV/bin/pip" install -q --no-deps torchvision==0.25.0 lerobot==0.4.4
  cp scripts/lerobot_check/sitecustomize.py "$("$VENV/bin/python" -c 'import site; print(site.getsitepackages()[0])')/"
fi
EXPORT=${1:-}
if [ -z "$EXPORT" ]; then
  rm -rf "$WORK/demos" "$WORK/lr"
  .venv/bin/python -m core.cli demos --out "$WORK/demos" --n 4 --image-size 64 --workers 1 --quiet >/dev/null
  .venv/bin/python -m core.cli data export --format lerobot --data "$WORK/demos" --out "$WORK/lr" >/dev/null
  EXPORT=$WORK/lr
fi
"$VENV/bin/python" scripts/lerobot_check/load.py "$EXPORT"
