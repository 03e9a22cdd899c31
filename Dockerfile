# trackrelay: the SMTP relay (2525) and the tracker (8025) in one container.
#
#   docker build -t trackrelay .
#   docker run -p 2525:2525 -p 8025:8025 -v trackrelay-data:/var/lib/trackrelay trackrelay
#
# Debian's own Python in a virtual environment, run as an unprivileged user; data (the
# SQLite store, captured mail, the event spool) lives in the /var/lib/trackrelay volume.
# Configure with a file mounted over /etc/trackrelay/trackrelay.toml or with
# TRACKRELAY_<SECTION>__<KEY> environment variables (README, "Configuration").
FROM debian:bookworm-slim

# Only for building behind a TLS-intercepting proxy: the path of its CA bundle inside the
# build (mounted with -v). Leave unset for a normal build.
ARG PIP_CERT

RUN apt-get update \
    && apt-get install -y --no-install-recommends python3 python3-venv ca-certificates \
    && rm -rf /var/lib/apt/lists/* \
    && python3 -m venv /opt/trackrelay \
    && useradd --system --home-dir /var/lib/trackrelay --shell /usr/sbin/nologin trackrelay \
    && mkdir -p /var/lib/trackrelay /etc/trackrelay \
    && chown trackrelay:trackrelay /var/lib/trackrelay

WORKDIR /usr/src/trackrelay
COPY pyproject.toml README.md ./
COPY relay ./relay
COPY plugins ./plugins
RUN if [ -z "${PIP_CERT:-}" ]; then unset PIP_CERT; fi \
    && /opt/trackrelay/bin/pip install --no-cache-dir --disable-pip-version-check . \
    && rm -rf /usr/src/trackrelay
COPY config/trackrelay.docker.toml /etc/trackrelay/trackrelay.toml

ENV PATH=/opt/trackrelay/bin:$PATH PYTHONUNBUFFERED=1
USER trackrelay
WORKDIR /var/lib/trackrelay
VOLUME ["/var/lib/trackrelay"]
EXPOSE 2525 8025
STOPSIGNAL SIGTERM
HEALTHCHECK --interval=30s --timeout=5s --start-period=20s --retries=3 \
    CMD ["python3", "-c", "import sys, urllib.request; sys.exit(urllib.request.urlopen('http://127.0.0.1:8025/healthz', timeout=4).status != 200)"]
CMD ["trackrelay", "serve", "--config", "/etc/trackrelay/trackrelay.toml"]
