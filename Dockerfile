# syntax=docker/dockerfile:1
#
# callbot production image: two stages on the same base, so the virtualenv built in the first stage runs
# unchanged in the second (its interpreter symlinks point at the same /usr/local/bin/python3.13).
# Production installs the plain package: no `local` (offline speech) and no `dev` extras.
#
#   docker build -t callbot .
#   docker run --rm -p 8000:8000 --env-file .env callbot

# ---------------------------------------------------------------------------------------------------------------
FROM python:3.13-slim AS build

ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1 \
    PYTHONDONTWRITEBYTECODE=1

WORKDIR /src
RUN python -m venv /opt/venv

# Only what the wheel is built from (the .dockerignore keeps everything else out of the context anyway).
COPY pyproject.toml README.md ./
COPY callbot ./callbot

# Build the wheel first, then install it (and its dependencies, all available as binary wheels for
# CPython 3.13 on manylinux, so no compiler is needed) into the virtualenv.
RUN python -m pip wheel --no-deps --wheel-dir /wheels . \
 && /opt/venv/bin/pip install /wheels/*.whl \
 && /opt/venv/bin/callbot --help > /dev/null

# ---------------------------------------------------------------------------------------------------------------
FROM python:3.13-slim AS runtime

# FORWARDED_ALLOW_IPS: uvicorn honours X-Forwarded-Proto/For only from these addresses. The container is meant
# to sit behind a reverse proxy (Azure Container Apps ingress terminates TLS and forwards plain HTTP from
# addresses inside the environment that are not known in advance), so trust the proxy headers from any peer:
# request URLs then say https/wss. Do not publish the container port directly to the internet with this
# setting. The service builds every URL it gives to ACS from CALLBOT_PUBLIC_URL anyway.
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    FORWARDED_ALLOW_IPS="*"

RUN groupadd --system --gid 10001 callbot \
 && useradd --system --uid 10001 --gid callbot --create-home --home-dir /home/callbot \
        --shell /usr/sbin/nologin callbot

COPY --from=build /opt/venv /opt/venv

WORKDIR /home/callbot
USER 10001:10001

EXPOSE 8000

# slim has no curl: probe with the interpreter. Non-200 (or no answer) exits non-zero.
HEALTHCHECK --interval=30s --timeout=5s --start-period=20s --retries=3 \
    CMD ["python", "-c", "import sys, urllib.request; r = urllib.request.urlopen('http://127.0.0.1:8000/healthz', timeout=4); sys.exit(0 if r.status == 200 else 1)"]

# The service drains active calls on SIGTERM (CALLBOT_DRAIN_SECONDS); the platform's grace period must be longer.
STOPSIGNAL SIGTERM

CMD ["callbot", "serve", "--host", "0.0.0.0", "--port", "8000"]
