#!/usr/bin/env bash
# Installs what the demo and the tests need on a Debian machine (run as root): system packages, then .venv.
set -euo pipefail
cd "$(dirname "$0")/.."

PACKAGES=(docker.io docker-registry redis-server busybox-static debootstrap apache2-utils ca-certificates iptables
          docker-compose openssl chromium fonts-dejavu-core)
missing=()
for package in "${PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$package" 2>/dev/null | grep -q "install ok installed" || missing+=("$package")
done
if [ "${#missing[@]}" -gt 0 ]; then
  echo "bootstrap: installing ${missing[*]}" >&2
  apt-get update
  DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends "${missing[@]}"
fi

[ -x .venv/bin/python ] || python3 -m venv .venv
.venv/bin/pip install --quiet --disable-pip-version-check -e '.[test]' 2> >(grep -v "is ignored: it is neither" >&2)
