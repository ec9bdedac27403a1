# The slim serving images: locked serving dependencies, the service code, nothing else.
#   default target: serves the compiled graph through ONNX Runtime; nothing in it can unpickle
#                   (no scikit-learn, scipy, joblib or pandas)
#   --target sklearn: adds scikit-learn, for versions without a verified graph (tag suffix -sklearn)
#   --target grpc: the default image plus the Open Inference Protocol over gRPC (tag suffix -grpc)
# Builds with the classic builder and with BuildKit (no RUN --mount, heredocs or COPY --chmod).
ARG PYTHON_IMAGE=python:3.11-slim

FROM ${PYTHON_IMAGE} AS tools
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1
# binutils only to strip debug symbols below; these stages are thrown away. Debian's version for
# the base release is what we want, so it is not pinned (hadolint DL3008).
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install --yes --no-install-recommends binutils \
    && rm -rf /var/lib/apt/lists/*
# Hashed, pinned wheels only, then pruned of what serving never needs (the script says what).
COPY deploy/docker/install-venv.sh /usr/local/bin/install-venv

FROM tools AS venv-onnx
COPY requirements/serve.txt /tmp/requirements.txt
RUN install-venv /tmp/requirements.txt

FROM tools AS venv-sklearn
COPY requirements/serve-sklearn.txt /tmp/requirements.txt
RUN install-venv /tmp/requirements.txt

FROM tools AS venv-grpc
COPY requirements/serve-grpc.txt /tmp/requirements.txt
RUN install-venv /tmp/requirements.txt

# One model version to bake in (MODEL=models/<name>/<version>), or none: then mount /models.
FROM ${PYTHON_IMAGE} AS model
ARG MODEL=
COPY models/ /context/models/
RUN mkdir -p /models \
    && if [ -n "$MODEL" ]; then \
         case "$MODEL" in models/*/*) ;; *) echo "MODEL must look like models/<name>/<version>" >&2; exit 1;; esac; \
         test -f "/context/$MODEL/metadata.json" -a -f "/context/$MODEL/model.joblib" \
           || { echo "no model at $MODEL in the build context" >&2; exit 1; }; \
         mkdir -p "/models/$(dirname "${MODEL#models/}")" \
           && cp -r "/context/$MODEL" "/models/${MODEL#models/}"; \
       fi

# The service code, byte-compiled once for both images.
FROM ${PYTHON_IMAGE} AS code
WORKDIR /app
COPY modelstore/ modelstore/
COPY service/ service/
RUN python -m compileall -q modelstore service

FROM ${PYTHON_IMAGE} AS base
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONPATH=/app \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    MODEL_DIR=/models \
    HOST=0.0.0.0 \
    PORT=8000 \
    LOG_FORMAT=json
RUN groupadd --system --gid 10001 app \
    && useradd --system --uid 10001 --gid app --no-create-home --home-dir /nonexistent \
       --shell /usr/sbin/nologin app
WORKDIR /app
USER 10001:10001
EXPOSE 8000
# Every 2 s: the service is ready about 2.5 s after start, so Docker reports healthy at ~4 s.
HEALTHCHECK --interval=2s --timeout=2s --start-period=30s --retries=3 \
    CMD ["python", "-m", "service.healthcheck"]
CMD ["python", "-m", "service"]

FROM base AS sklearn
COPY --from=venv-sklearn /opt/venv /opt/venv
COPY --from=code /app /app
COPY --from=model /models /models
# Build facts last, so a new commit or date invalidates no layer above.
ARG VERSION=0.0.0
ARG REVISION=unknown
ARG CREATED=unknown
ARG SOURCE=unknown
LABEL org.opencontainers.image.title="sklearn-serve-sklearn" \
      org.opencontainers.image.description="Serves one verified scikit-learn model over HTTP, through scikit-learn" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.revision="${REVISION}" \
      org.opencontainers.image.created="${CREATED}" \
      org.opencontainers.image.source="${SOURCE}" \
      org.opencontainers.image.licenses="MIT"

# The default image plus the Open Inference Protocol over gRPC on GRPC_PORT and OpenTelemetry's
# SDK and OTLP exporters for tracing (tag suffix -grpc): grpcio, protobuf and OpenTelemetry add
# about 26 MB, past the default image's size target.
FROM base AS grpc
COPY --from=venv-grpc /opt/venv /opt/venv
COPY --from=code /app /app
COPY --from=model /models /models
EXPOSE 8001
ARG VERSION=0.0.0
ARG REVISION=unknown
ARG CREATED=unknown
ARG SOURCE=unknown
LABEL org.opencontainers.image.title="sklearn-serve-grpc" \
      org.opencontainers.image.description="Serves one verified scikit-learn model over HTTP and gRPC, through ONNX Runtime" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.revision="${REVISION}" \
      org.opencontainers.image.created="${CREATED}" \
      org.opencontainers.image.source="${SOURCE}" \
      org.opencontainers.image.licenses="MIT"

FROM base AS runtime
COPY --from=venv-onnx /opt/venv /opt/venv
COPY --from=code /app /app
COPY --from=model /models /models
ARG VERSION=0.0.0
ARG REVISION=unknown
ARG CREATED=unknown
ARG SOURCE=unknown
LABEL org.opencontainers.image.title="sklearn-serve" \
      org.opencontainers.image.description="Serves one verified scikit-learn model over HTTP, through ONNX Runtime" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.revision="${REVISION}" \
      org.opencontainers.image.created="${CREATED}" \
      org.opencontainers.image.source="${SOURCE}" \
      org.opencontainers.image.licenses="MIT"
