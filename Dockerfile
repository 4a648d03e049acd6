# The operator image. Not buildable on the development machines (no Docker
# engine there); kept minimal: the Pulumi CLI and the Kubernetes provider are
# built from Go modules by the same script as for local runs, the operator
# runs as a non-root user with a read-only root filesystem.
FROM golang:1.26.8-bookworm AS toolchain
WORKDIR /src
COPY scripts/build-toolchain.sh scripts/build-toolchain.sh
ENV IFLEARNER_CACHE=/cache
RUN bash scripts/build-toolchain.sh "pulumi python-plugin-scripts kubernetes-provider plugins" \
 && mkdir -p /opt/iflearner \
 && cp -r "$(bash scripts/build-toolchain.sh --print-dir)" /opt/iflearner/tools \
 && rm -rf /opt/iflearner/tools/logs

FROM python:3.11.7-slim-bookworm
RUN useradd --uid 65532 --create-home --home-dir /home/operator operator
WORKDIR /app
COPY requirements-runtime.lock .
RUN pip install --no-cache-dir --require-hashes --no-deps -r requirements-runtime.lock
COPY --from=toolchain /opt/iflearner/tools /opt/iflearner/tools
COPY iflearner/ iflearner/
COPY crd/ crd/
ENV IFLEARNER_TOOLS_DIR=/opt/iflearner/tools \
    PYTHONPATH=/app \
    HOME=/tmp \
    PYTHONUNBUFFERED=1
USER 65532:65532
ENTRYPOINT ["python3", "-m", "iflearner"]
CMD ["run"]
