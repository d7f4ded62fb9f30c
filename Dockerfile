# syntax=docker/dockerfile:1
#
# One image for the four loopwise services (scorer, router, labels, quality),
# the one-shot `loopwise db upgrade` migration and the CLI. docker-compose.yml
# picks the command per container, e.g. `loopwise serve router`.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_ROOT_USER_ACTION=ignore \
    LOOPWISE_HOST=0.0.0.0

# Unprivileged runtime user with a writable working directory (the default
# SQLite URL points at ./var/; compose uses PostgreSQL instead).
RUN groupadd --system --gid 10001 loopwise \
 && useradd --system --uid 10001 --gid loopwise --home-dir /app --shell /usr/sbin/nologin loopwise \
 && mkdir -p /app/var \
 && chown -R loopwise:loopwise /app

# Install the project (a regular, non-editable install); the source tree is
# only needed for the build. The pip cache mount keeps rebuilds fast.
COPY . /tmp/src
RUN --mount=type=cache,target=/root/.cache/pip \
    pip install /tmp/src \
 && rm -rf /tmp/src \
 && loopwise --help > /dev/null

WORKDIR /app
USER loopwise:loopwise

EXPOSE 8001 8002 8003 8004

CMD ["loopwise", "--help"]
