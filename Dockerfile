# studyhall: one image for every app node and the sandbox worker. docker-compose.yml builds it.

# The web app (web/): built here from its lockfile, so the image serves it at / with no Node.js at run time.
FROM node:22-slim AS web
WORKDIR /web
COPY web/package.json web/package-lock.json ./
RUN npm ci --no-audit --no-fund
COPY web/ ./
RUN npm run build

FROM python:3.11-slim

ENV PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

# The sandbox's bubblewrap and its languages: Debian's python3 (/usr/bin/python3, not this image's
# /usr/local one), node, gcc and g++. Only the worker service runs programs; see docker-compose.yml.
# ffmpeg (with ffprobe): the app nodes transcode lecture videos (media/video.py).
RUN apt-get update \
    && apt-get install -y --no-install-recommends bubblewrap python3 nodejs gcc g++ libc6-dev ffmpeg \
    && rm -rf /var/lib/apt/lists/*

WORKDIR /src
COPY . .
RUN pip install . \
    && useradd --system --create-home --home-dir /var/lib/studyhall --shell /usr/sbin/nologin studyhall \
    && rm -rf /src

COPY --from=web /web/dist /usr/share/studyhall/web

WORKDIR /var/lib/studyhall
USER studyhall
ENV STUDYHALL_WEB_DIR=/usr/share/studyhall/web \
    STUDYHALL_HOST=0.0.0.0 \
    STUDYHALL_PORT=8080 \
    STUDYHALL_DATA_DIR=/var/lib/studyhall
EXPOSE 8080

# /readyz answers 200 once the node can reach Postgres (the image has Python, not curl).
HEALTHCHECK --interval=10s --timeout=3s --start-period=20s --retries=3 \
    CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8080/readyz', timeout=2)"]

# SIGTERM stops a node gracefully (connections closed, pool drained).
STOPSIGNAL SIGTERM
CMD ["studyhall", "serve", "--host", "0.0.0.0", "--port", "8080"]
