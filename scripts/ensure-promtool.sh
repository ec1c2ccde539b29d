#!/usr/bin/env bash
# Install promtool for the alert-rule tests (tests/helm/test_alerts.py) from the machine's packages.
#
# Debian's `prometheus` package ships /usr/bin/promtool; --no-install-recommends keeps it to the binaries,
# and no service is started (no init system runs here). Idempotent: does nothing when promtool works.
set -euo pipefail

if command -v promtool >/dev/null 2>&1 && promtool --version >/dev/null 2>&1; then
  echo "promtool already present: $(command -v promtool)"
  exit 0
fi
if ! command -v apt-get >/dev/null 2>&1; then
  echo "ensure-promtool: no promtool and no apt-get; install Prometheus' promtool by hand" >&2
  exit 1
fi
SUDO=""
[[ "$(id -u)" -eq 0 ]] || SUDO="sudo"
export DEBIAN_FRONTEND=noninteractive
${SUDO} apt-get install -y -qq --no-install-recommends prometheus >/dev/null 2>&1 || {
  ${SUDO} apt-get update -qq
  ${SUDO} apt-get install -y -qq --no-install-recommends prometheus
}
echo "installed $(command -v promtool) ($(promtool --version 2>&1 | head -1))"
