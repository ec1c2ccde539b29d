#!/bin/sh
# Any CI system (Jenkins, Buildkite, CircleCI, Azure Pipelines, a cron job): plan → ask the gate → apply on exit 0.
#
# Needs: terraform, Python 3.11+ with the client (`pip install "valdrix==0.1.0"`; until that release is on
# PyPI: `pip install "valdrix @ git+https://github.com/valdrix/valdrix-gate@v0.1.0"`), and in the environment
#   VALDRIX_SERVER   the gate's URL
#   VALDRIX_API_KEY  a member key of this pipeline's principal (keep it in the CI system's secret store)
#   RUN_ID           an id that stays the same when this pipeline run is retried (e.g. the build number)
#   PROJECT          the budget scope (default: default); ENVIRONMENT prod or nonprod (default: nonprod)
# Keep the .valdrix/ directory between retries of one run: it holds the continuation (decision, token).
# Exit codes: 0 applied; 1 error; 2 denied; 3 approval pending/timed out/denied; 4 token refused; 5 plan changed.
set -eu
: "${VALDRIX_SERVER:?set VALDRIX_SERVER}" "${VALDRIX_API_KEY:?set VALDRIX_API_KEY}" "${RUN_ID:?set RUN_ID}"

terraform init -input=false
terraform plan -input=false -out=plan.tfplan
terraform show -json plan.tfplan > plan.json
valdrix preflight --plan plan.json --project "${PROJECT:-default}" --environment "${ENVIRONMENT:-nonprod}" \
  --run-id "$RUN_ID" --wait-for-approval="${VALDRIX_WAIT:-30m}"
terraform apply -input=false plan.tfplan
