#!/usr/bin/env bash
# Idempotent set-up: system libraries for headless MuJoCo rendering, the virtual
# environment at .venv and the pinned Python packages. Safe to re-run; fast when done.
set -euo pipefail
cd "$(dirname "$0")/.."

# g++: torch.compile's CPU code generation for practice's rollout forward (optional: without
# it practice falls back to the eager forward and says so).
SYSTEM_PACKAGES=(libegl1 libegl-mesa0 libgl1-mesa-dri libosmesa6 g++)
missing=()
if command -v dpkg >/dev/null 2>&1; then
  for p in "${SYSTEM_PACKAGES[@]}"; do
    dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p")
  done
fi
if [ ${#missing[@]} -gt 0 ]; then
  echo "[setup] installing system packages for headless rendering: ${missing[*]}"
  SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi

PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  echo "[setup] creating .venv"
  "$PY" -m venv .venv
fi
stamp=.venv/.dojo-requirements.sha256
want=$(cat requirements.txt requirements-nodeps.txt | sha256sum | cut -d' ' -f1)
# TORCH_INDEX: where torch comes from, e.g. https://download.pytorch.org/whl/cu128 for a
# CUDA build on a GPU machine (default: the package index's CPU build).
[ -n "${TORCH_INDEX:-}" ] && want="$want-$TORCH_INDEX"
if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ]; then
  echo "[setup] installing Python packages (torch CPU build first)"
  .venv/bin/pip install -q --upgrade pip
  # torch first: a plain resolve of torch would pull several GB of CUDA packages.
  .venv/bin/pip install -q torch==2.13.0 ${TORCH_INDEX:+--index-url "$TORCH_INDEX"}
  .venv/bin/pip install -q -r requirements.txt
  .venv/bin/pip install -q --no-deps -r requirements-nodeps.txt
  echo "$want" > "$stamp"
fi
echo "[setup] ready (.venv, MUJOCO_GL=${MUJOCO_GL:-egl})"
