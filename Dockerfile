# baton container images (BuildKit, the default builder since Docker 23).
#
#   docker build -t baton .                                  CPU image (target runtime, the last)
#   docker build --target runtime-cuda -t baton:cuda .       NVIDIA GPUs (nvidia/cuda base)
#   docker run -p 127.0.0.1:8080:8080 -v "$PWD/models:/models:ro" baton
#        serves /models/model.gguf; other commands: docker run ... baton serve -m /models/x.gguf
#        --ranks 2 --host 0.0.0.0 --port 8080 (keep --port and the PORT variable equal: the
#        healthcheck asks http://127.0.0.1:$PORT/health)
#
# docker-compose.yml runs it on one node (N ranks in one container) or on several containers
# (deploy/baton-node, see docs/deployment.md).

ARG CUDA_VERSION=12.6.3
ARG CUDA_UBUNTU=ubuntu24.04

# ---- CUDA build (only with --target runtime-cuda) ----
FROM nvidia/cuda:${CUDA_VERSION}-devel-${CUDA_UBUNTU} AS build-cuda
ENV DEBIAN_FRONTEND=noninteractive
RUN apt-get update \
 && apt-get install -y --no-install-recommends meson ninja-build pkg-config gcc libc6-dev python3 \
      libmicrohttpd-dev libcjson-dev libmpich-dev \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY . .
RUN meson setup /build -Dtests=false -Dcuda=enabled --buildtype=release --prefix=/usr/local \
 && meson compile -C /build \
 && meson install -C /build --destdir /out

# ---- CUDA runtime ----
FROM nvidia/cuda:${CUDA_VERSION}-runtime-${CUDA_UBUNTU} AS runtime-cuda
ENV DEBIAN_FRONTEND=noninteractive
# Ubuntu 24.04 names (t64); cuBLAS and NCCL come with the nvidia/cuda runtime image.
RUN apt-get update \
 && apt-get install -y --no-install-recommends libmicrohttpd12t64 libcjson1 mpich curl socat \
 && rm -rf /var/lib/apt/lists/*
COPY --from=build-cuda /out/usr/local/ /usr/local/
COPY deploy/baton-node deploy/baton-hostexec /usr/local/bin/
RUN useradd --system --uid 10001 --create-home --home-dir /home/baton baton \
 && mkdir -p /models && chown baton:baton /models
USER baton
WORKDIR /home/baton
ENV PORT=8080
EXPOSE 8080
VOLUME ["/models"]
HEALTHCHECK --interval=10s --timeout=3s --start-period=120s --retries=3 \
  CMD curl -fsS "http://127.0.0.1:${PORT}/health" >/dev/null || exit 1
ENTRYPOINT ["baton"]
CMD ["serve", "-m", "/models/model.gguf", "--ranks", "1", "--host", "0.0.0.0", "--port", "8080"]

# ---- CPU build ----
FROM debian:12 AS build
ENV DEBIAN_FRONTEND=noninteractive
RUN apt-get update \
 && apt-get install -y --no-install-recommends meson ninja-build pkg-config gcc libc6-dev python3 \
      libmicrohttpd-dev libcjson-dev libmpich-dev \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY . .
RUN meson setup /build -Dtests=false -Dcuda=disabled --buildtype=release --prefix=/usr/local \
 && meson compile -C /build \
 && meson install -C /build --destdir /out

# ---- CPU runtime (default target) ----
FROM debian:12-slim AS runtime
ENV DEBIAN_FRONTEND=noninteractive
# mpich brings hydra (mpiexec, hydra_pmi_proxy) and libmpich12; socat serves baton-node's agent.
RUN apt-get update \
 && apt-get install -y --no-install-recommends libmicrohttpd12 libcjson1 mpich libmpich12 curl socat \
 && rm -rf /var/lib/apt/lists/*
COPY --from=build /out/usr/local/ /usr/local/
COPY deploy/baton-node deploy/baton-hostexec /usr/local/bin/
RUN useradd --system --uid 10001 --create-home --home-dir /home/baton baton \
 && mkdir -p /models && chown baton:baton /models
USER baton
WORKDIR /home/baton
ENV PORT=8080
EXPOSE 8080
VOLUME ["/models"]
HEALTHCHECK --interval=10s --timeout=3s --start-period=120s --retries=3 \
  CMD curl -fsS "http://127.0.0.1:${PORT}/health" >/dev/null || exit 1
ENTRYPOINT ["baton"]
CMD ["serve", "-m", "/models/model.gguf", "--ranks", "1", "--host", "0.0.0.0", "--port", "8080"]
