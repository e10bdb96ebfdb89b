#!/bin/sh
# apt-cacher-ng in the foreground on port 3142, with a configuration of its own (the package's remaps Debian's
# hosts to mirrors of its choosing), and its cache kept under APT_CACHE_MAX by its own `acngtool shrink`.
set -eu
conf=/etc/imagebuilder-apt-cache
mkdir -p "$conf" /var/cache/apt-cacher-ng /var/log/apt-cacher-ng
cat > "$conf/acng.conf" <<CONF
CacheDir: /var/cache/apt-cacher-ng
LogDir: /var/log/apt-cacher-ng
SupportDir: /usr/lib/apt-cacher-ng
Port: 3142
ForeGround: 1
ExThreshold: 4
TrackFileUse: 1
CONF
(
  while sleep "$APT_CACHE_SHRINK_EVERY_S"; do
    /usr/lib/apt-cacher-ng/acngtool shrink "$APT_CACHE_MAX" -f -c "$conf" >/dev/null || echo "apt-cache: shrink failed" >&2
  done
) &
exec /usr/sbin/apt-cacher-ng -c "$conf"
