# syntax=docker/dockerfile:1
# One image for every mailmoat service: `docker run IMAGE run <service>` (ingress, routing, egress, ...),
# or the default `run all`, which supervises every service as a process.

# --- build: a virtualenv with mailmoat and its dependencies ----------------------------------------
FROM python:3.11-slim AS build
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_INPUT=1
WORKDIR /src
RUN python -m venv /opt/mailmoat
COPY pyproject.toml setup.py README.md ./
COPY libs ./libs
COPY cli ./cli
COPY services ./services
RUN /opt/mailmoat/bin/pip install --no-cache-dir . \
    && /opt/mailmoat/bin/python -m compileall -q /opt/mailmoat/lib

# --- runtime: the virtualenv, a non-root user, nothing written outside /tmp and /var/lib/mailmoat -----
FROM python:3.11-slim
ARG UID=10001
# libarchive: 7z and rar archives in the antivirus stage. Not pinned: the slim base image follows
# Debian's stable release, and the library's security updates should come with each rebuild.
# hadolint ignore=DL3008
RUN apt-get update && apt-get install -y --no-install-recommends libarchive13 \
    && rm -rf /var/lib/apt/lists/*
RUN groupadd --system --gid "${UID}" mailmoat \
    && useradd --system --uid "${UID}" --gid mailmoat --home-dir /nonexistent --no-create-home \
       --shell /usr/sbin/nologin mailmoat \
    && mkdir -p /var/lib/mailmoat/maildir \
    && chown -R "${UID}:${UID}" /var/lib/mailmoat
COPY --from=build /opt/mailmoat /opt/mailmoat
COPY config/policy.example.yaml /etc/mailmoat/policy.yaml
# Bytecode was compiled at build time, so a read-only root filesystem costs nothing at start.
ENV PATH=/opt/mailmoat/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    MAILMOAT_POLICY=/etc/mailmoat/policy.yaml \
    MAILMOAT_SMTP_HOST=0.0.0.0 \
    MAILMOAT_METRICS_HOST=0.0.0.0 \
    MAILMOAT_DEVMAILBOX_DIR=/var/lib/mailmoat/maildir \
    MAILMOAT_LOG_FORMAT=json
WORKDIR /tmp
USER ${UID}:${UID}
# SMTP, then the /metrics /healthz /readyz port of each service (settings.DEFAULT_METRICS_PORTS).
EXPOSE 2525 9110 9120 9130 9140 9150 9160
ENTRYPOINT ["mailmoat"]
CMD ["run", "all"]
