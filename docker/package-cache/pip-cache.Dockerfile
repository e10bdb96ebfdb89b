# The shared pip cache: proxpi, a PyPI caching mirror (https://pypi.org/project/proxpi/), served by gunicorn on
# port 5000 under /index/. BASE_IMAGE: any Debian-like image with python3 (>= 3.9) and its venv module.
ARG BASE_IMAGE=python:3.12-slim
FROM ${BASE_IMAGE}
# docker/ may hold ca-bundle.pem, trusted by pip here when a TLS-intercepting proxy is in the way.
COPY docker/ /tmp/docker/
RUN if [ -f /tmp/docker/ca-bundle.pem ]; then export PIP_CERT=/tmp/docker/ca-bundle.pem; fi \
 && python3 -m venv /opt/proxpi \
 && /opt/proxpi/bin/pip install --no-cache-dir --disable-pip-version-check "proxpi>=1.3,<2" "gunicorn>=22" \
 && rm -rf /tmp/docker && useradd --system --uid 10002 --no-create-home proxpi \
 && mkdir -p /var/cache/proxpi && chown proxpi /var/cache/proxpi
# PROXPI_CACHE_SIZE bounds the files kept (bytes, least recently used go first); PROXPI_INDEX_URL is the origin.
# A file not fetched within PROXPI_DOWNLOAD_TIMEOUT is fetched on, while the build is sent to the origin for it.
ENV PROXPI_CACHE_DIR=/var/cache/proxpi PROXPI_CACHE_SIZE=10737418240 PROXPI_DOWNLOAD_TIMEOUT=10 \
    PROXPI_INDEX_URL=https://pypi.org/simple/
USER proxpi
VOLUME /var/cache/proxpi
EXPOSE 5000
ENTRYPOINT ["/opt/proxpi/bin/gunicorn", "--bind", "0.0.0.0:5000", "--threads", "8", "proxpi.server:app"]
