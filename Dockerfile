# m3u-proxy container image.
#
#   docker build -t m3u-proxy .
#   docker run -d --name m3u-proxy -p 8085:8085 -v m3u-proxy-data:/data m3u-proxy
#
# Settings are environment variables (HOST, PORT, API_TOKEN, ... and M3U_PROXY_<KEY>;
# see config.example.toml) or a TOML file mounted read-only and named by
# M3U_PROXY_CONFIG. The registry (SQLite) lives in the /data volume. `docker stop`
# sends SIGTERM: live streams end at once, other transfers get shutdown_timeout (5 s,
# inside docker's default 10 s grace), the registry is closed cleanly, the exit status is 0.

# -- build: install the package and its dependencies into a virtualenv -------------------
FROM python:3.11-slim AS build
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1
RUN python -m venv /opt/m3u-proxy
WORKDIR /src
COPY pyproject.toml README.md ./
COPY m3u_proxy ./m3u_proxy
RUN /opt/m3u-proxy/bin/pip install .

# -- runtime: the same base with only the virtualenv and an unprivileged user ------------
FROM python:3.11-slim
COPY --from=build /opt/m3u-proxy /opt/m3u-proxy
RUN useradd --system --uid 10001 --user-group --home-dir /data --no-create-home \
        --shell /usr/sbin/nologin m3u-proxy \
    && install -d -o m3u-proxy -g m3u-proxy -m 0700 /data
# The data directory as an environment default, not a --data-dir flag: a flag would
# silently override `-e M3U_PROXY_DATA_DIR=...` (options beat the environment).
ENV PATH=/opt/m3u-proxy/bin:$PATH \
    M3U_PROXY_DATA_DIR=/data \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1
USER m3u-proxy
VOLUME /data
EXPOSE 8085
# slim has no curl: ask /health with the interpreter that is already there. It follows
# PORT when set; /health is open even with API_TOKEN.
HEALTHCHECK --interval=30s --timeout=5s --start-period=10s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:' + os.environ.get('PORT', '8085') + '/health', timeout=4)"]
# Exec form: m3u-proxy is PID 1 and receives SIGTERM itself.
ENTRYPOINT ["m3u-proxy"]
CMD []
