# Valdrix Gate server image (the image of deploy/helm/valdrix).
#   docker build -t ghcr.io/valdrix/valdrix-gate:0.1.0 .
# Builder: builds the wheel and installs it with its dependencies into /opt/venv.
# Runtime: only the venv on the same slim base; no compilers, no pip cache, non-root user 10001.
FROM python:3.11.13-slim-bookworm AS builder
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1 PYTHONDONTWRITEBYTECODE=1
WORKDIR /src
RUN python -m venv /opt/venv
COPY pyproject.toml README.md* ./
COPY valdrix ./valdrix
COPY valdrix_vendor ./valdrix_vendor
RUN /opt/venv/bin/pip wheel --no-deps --wheel-dir /wheels . \
 && /opt/venv/bin/pip install "$(ls /wheels/*.whl)[server]"

FROM python:3.11.13-slim-bookworm
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    VALDRIX_HOST=0.0.0.0 \
    VALDRIX_PORT=8080
RUN groupadd --system --gid 10001 valdrix \
 && useradd --system --uid 10001 --gid 10001 --home-dir /nonexistent --no-create-home --shell /usr/sbin/nologin valdrix
COPY --from=builder /opt/venv /opt/venv
USER 10001:10001
WORKDIR /tmp
EXPOSE 8080 8443
ENTRYPOINT ["valdrix"]
CMD ["serve"]
