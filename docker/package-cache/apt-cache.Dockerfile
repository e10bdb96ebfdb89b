# The shared apt cache: Debian's apt-cacher-ng as a plain caching proxy (no remapping: a file is fetched from the
# host the build's sources name, and cached under that name). BASE_IMAGE: any Debian-like image.
ARG BASE_IMAGE=debian:bookworm-slim
FROM ${BASE_IMAGE}
RUN apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends apt-cacher-ng \
 && rm -rf /var/lib/apt/lists/*
COPY docker/package-cache/apt-cache.sh /usr/local/bin/imagebuilder-apt-cache
# The cache's bound: package files beyond it go, the least recently used first, every APT_CACHE_SHRINK_EVERY_S.
ENV APT_CACHE_MAX=20G APT_CACHE_SHRINK_EVERY_S=600
VOLUME /var/cache/apt-cacher-ng
EXPOSE 3142
ENTRYPOINT ["/usr/local/bin/imagebuilder-apt-cache"]
