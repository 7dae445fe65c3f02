# Dojo on a CPU machine: the web app and the worker, started together by scripts/launch.py
# (the same launcher as ./scripts/run.sh). Software OpenGL (Mesa llvmpipe through EGL)
# renders MuJoCo headless; no GPU needed.
#
#   docker build -t dojo .
#   docker run --rm -p 8501:8501 -p 8765:8765 -v dojo-data:/app/data \
#              -e DOJO_ADMIN_PASSWORD=change-me-please dojo
#   open http://localhost:8501   (without DOJO_ADMIN_PASSWORD the log prints a generated one once)
#
# The browser also connects to the worker's live-feed websocket on port 8765 (publish it).
# If the page is opened under another host name than the one serving 8765, set
# DOJO_TELEMETRY_PUBLIC_HOST to the host the browser should use.
#
# On a GPU host: build with a CUDA torch and run with the GPU (NVIDIA Container Toolkit);
# training and practice then put the models on it (--device auto), the simulators stay on
# the CPU cores:
#   docker build --build-arg TORCH_INDEX=https://download.pytorch.org/whl/cu128 -t dojo-gpu .
#   docker run --rm --gpus all -p 8501:8501 -p 8765:8765 -v dojo-data:/app/data dojo-gpu
#
# The same image is every node of a Ray cluster for simulated robots (docs/cluster.md): the head
#   docker run -d --network host -e RAY_AUTH_MODE=token -e RAY_AUTH_TOKEN dojo \
#       ray start --head --port 6379 --num-cpus 0 --include-dashboard false --block
# and each robot node
#   docker run -d --network host -e RAY_AUTH_MODE=token -e RAY_AUTH_TOKEN dojo \
#       ray start --address HEAD:6379 --num-cpus 8 --resources '{"dojo_robot": 8}' --block
# (PYTHONPATH=/app below lets Ray's worker processes import Dojo's simulators.)
FROM python:3.11-slim-bookworm

ENV PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    MUJOCO_GL=egl \
    PYOPENGL_PLATFORM=egl \
    HF_HUB_OFFLINE=1 \
    TRANSFORMERS_OFFLINE=1 \
    DOJO_DATA=/app/data \
    PYTHONPATH=/app

# Headless rendering libraries (the same list as scripts/setup.sh), and g++ for torch.compile's
# CPU code generation (practice's rollout forward; without it practice runs eagerly and says so).
RUN apt-get update \
 && apt-get install -y --no-install-recommends libegl1 libegl-mesa0 libgl1-mesa-dri libosmesa6 g++ \
 && rm -rf /var/lib/apt/lists/*

RUN useradd --create-home --uid 1000 dojo
WORKDIR /app

# Dependencies before code, so a code change reuses these layers. As in scripts/setup.sh,
# torch 2.13.0 (the CPU build) goes in first, so that requirements.txt's torch pin is already
# satisfied and no CUDA packages are pulled; TORCH_INDEX is where that build comes from (the CPU
# one by default; a CUDA index for a GPU image, above).
ARG TORCH_INDEX=https://download.pytorch.org/whl/cpu
COPY requirements.txt requirements-nodeps.txt ./
RUN pip install torch==2.13.0 --index-url "${TORCH_INDEX}" \
 && pip install -r requirements.txt \
 && pip install --no-deps -r requirements-nodeps.txt

COPY --chown=dojo:dojo . .
RUN mkdir -p /app/data && chown dojo:dojo /app/data
USER dojo
VOLUME ["/app/data"]
EXPOSE 8501 8765

HEALTHCHECK --interval=30s --timeout=5s --start-period=60s \
  CMD python -c "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8501/_stcore/health', timeout=4)"

# SIGTERM (docker stop) reaches the launcher, which stops the worker (its job is re-queued) and the app.
STOPSIGNAL SIGTERM
CMD ["python", "scripts/launch.py", "--host", "0.0.0.0"]
