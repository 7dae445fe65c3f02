# Dojo on a CPU machine. Software OpenGL (Mesa llvmpipe through EGL) renders MuJoCo
# headless; no GPU needed. Build: docker build -t dojo .   Run: docker run --rm -v dojo-data:/app/data dojo
FROM python:3.11-slim-bookworm

ENV PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    MUJOCO_GL=egl \
    PYOPENGL_PLATFORM=egl \
    HF_HUB_OFFLINE=1 \
    TRANSFORMERS_OFFLINE=1 \
    DOJO_DATA=/app/data

# Headless rendering libraries (the same list as scripts/setup.sh).
RUN apt-get update \
 && apt-get install -y --no-install-recommends libegl1 libegl-mesa0 libgl1-mesa-dri libosmesa6 \
 && rm -rf /var/lib/apt/lists/*

RUN useradd --create-home --uid 1000 dojo
WORKDIR /app

# Dependencies before code, so code changes reuse this layer. torch first, from the
# CPU index: a plain resolve would pull several GB of CUDA packages.
COPY requirements.txt .
RUN pip install torch==2.13.0 --index-url https://download.pytorch.org/whl/cpu \
 && pip install -r requirements.txt

COPY --chown=dojo:dojo . .
RUN mkdir -p /app/data && chown dojo:dojo /app/data
USER dojo
VOLUME ["/app/data"]

# The bundled demo task end to end (demonstrations -> Stage 1 -> evaluation).
CMD ["python", "-m", "core.cli", "pipeline", "--root", "/app/data"]
