# The Concurrent Job Manager service as a container image. `docker compose up` builds and runs it with PostgreSQL.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

# tini runs as PID 1: it forwards SIGTERM to the service (which then stops gracefully) and reaps the orphans of job
# process trees, which the service cannot reap because they are not its children.
RUN apt-get update \
    && apt-get install -y --no-install-recommends tini \
    && rm -rf /var/lib/apt/lists/*

RUN groupadd --system --gid 10001 jobmanager \
    && useradd --system --uid 10001 --gid jobmanager --create-home --home-dir /home/jobmanager \
        --shell /usr/sbin/nologin jobmanager

WORKDIR /app

# Dependencies first, in their own layer, so that a change to the code does not reinstall them. The install is
# editable: alembic.ini and migrations/ must stay beside service/, where service/db/migrate.py looks for them.
COPY pyproject.toml README.md ./
RUN mkdir service && touch service/__init__.py && pip install -e .
COPY alembic.ini ./
COPY migrations ./migrations
COPY service ./service

# /data holds the node id, every attempt's output, the log file (and the embedded PostgreSQL, when DATABASE_URL
# is unset). A named volume mounted there starts with this ownership.
RUN mkdir /data && chown jobmanager:jobmanager /data
VOLUME ["/data"]

# HOST=0.0.0.0: inside the container 127.0.0.1 is the container's own loopback, which a published port cannot
# reach. Exposure is decided where the port is published (docker-compose.yml publishes on the host's loopback).
ENV HOST=0.0.0.0 \
    PORT=3000 \
    DATA_DIR=/data \
    LOG_FILE=/data/logs/app.log

USER jobmanager
EXPOSE 3000

# slim has no curl; urlopen raises on a refused connection and on the 503 that /health returns without a database.
HEALTHCHECK --interval=10s --timeout=5s --start-period=30s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen(f\"http://127.0.0.1:{os.environ.get('PORT', '3000')}/health\", timeout=4)"]

ENTRYPOINT ["tini", "--"]
CMD ["jobmanager", "serve"]
