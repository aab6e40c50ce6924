# syntax=docker/dockerfile:1
# discord-llm-bot: the bot and its ops endpoint (/metrics /healthz /readyz /alerts on 9464).

# ---- build: install the package and its dependencies into a virtualenv --------------------------
FROM python:3.11.11-slim-bookworm AS build
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /src
RUN python -m venv /opt/venv
# Metadata first, so the dependency layer is reused while only the code changes.
COPY pyproject.toml README.md* ./
COPY bot ./bot
RUN /opt/venv/bin/pip install .

# ---- runtime ----------------------------------------------------------------------------------
FROM python:3.11.11-slim-bookworm
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    DATA_DIR=/data \
    OPS_HOST=0.0.0.0 \
    OPS_PORT=9464
# A fixed non-root uid, so files in the data volume keep one owner across rebuilds.
RUN groupadd --system --gid 10001 bot \
    && useradd --system --uid 10001 --gid bot --home-dir /app --no-create-home \
       --shell /usr/sbin/nologin bot \
    && mkdir -p /app /data \
    && chown bot:bot /app /data
COPY --from=build /opt/venv /opt/venv
WORKDIR /app
USER bot
VOLUME ["/data"]
EXPOSE 9464
# The slim image has no curl: ask /healthz with the standard library.
HEALTHCHECK --interval=30s --timeout=5s --start-period=30s --retries=3 \
    CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:9464/healthz', timeout=4)"]
ENTRYPOINT ["python", "-m", "bot"]
CMD ["run"]
