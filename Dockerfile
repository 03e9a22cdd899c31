# trackrelay: SMTP relay (2525) and tracker (8025) in one process.
FROM python:3.11-slim
WORKDIR /opt/trackrelay
COPY pyproject.toml README.md ./
COPY relay ./relay
COPY plugins ./plugins
RUN pip install --no-cache-dir . && useradd --system --home /var/lib/trackrelay trackrelay \
    && mkdir -p /var/lib/trackrelay /etc/trackrelay && chown trackrelay /var/lib/trackrelay
COPY config/trackrelay.docker.toml /etc/trackrelay/trackrelay.toml
USER trackrelay
WORKDIR /var/lib/trackrelay
EXPOSE 2525 8025
STOPSIGNAL SIGTERM
CMD ["trackrelay", "serve", "--config", "/etc/trackrelay/trackrelay.toml"]
