# The project's own image: `imagebuilder` (API by default; `worker`, `submit`, ... as the command).
# BASE_IMAGE: any Debian-like image with python3 (>= 3.11) and its venv module.
ARG BASE_IMAGE=python:3.12-slim

# Workers build with BuildKit through Debian's Docker client (20.10 runs BuildKit without the buildx plugin);
# only the client binary is taken from the docker.io package.
FROM ${BASE_IMAGE} AS docker-client
RUN apt-get update && cd /tmp && apt-get download docker.io && dpkg-deb -x docker.io_*.deb /tmp/docker.io \
 && rm -rf /var/lib/apt/lists/*

FROM ${BASE_IMAGE}
COPY --from=docker-client /tmp/docker.io/usr/bin/docker /usr/bin/docker

# docker/ may hold ca-bundle.pem, trusted by pip here when a TLS-intercepting proxy is in the way.
COPY docker/ /tmp/docker/
COPY pyproject.toml README.md /src/
COPY config /src/config
COPY core /src/core
COPY worker /src/worker
COPY producer /src/producer
RUN if [ -f /tmp/docker/ca-bundle.pem ]; then export PIP_CERT=/tmp/docker/ca-bundle.pem; fi \
 && python3 -m venv /opt/imagebuilder \
 && /opt/imagebuilder/bin/pip install --no-cache-dir --disable-pip-version-check /src \
 && rm -rf /src /tmp/docker \
 && useradd --system --uid 10001 --no-create-home imagebuilder

ENV PATH=/opt/imagebuilder/bin:$PATH PYTHONUNBUFFERED=1
# The API runs unprivileged; the worker service overrides this with root, for the Docker socket.
USER imagebuilder
EXPOSE 8000
ENTRYPOINT ["imagebuilder"]
CMD ["api", "--host", "0.0.0.0", "--port", "8000"]
