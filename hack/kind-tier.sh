#!/usr/bin/env bash
# make kind: brings up the kind cluster (hack/kind-up.sh) and runs tests/kind against it.
# Where no kind cluster can be made (no Docker, not root), says why and skips, unless
# GPUPIN_KIND_REQUIRED=1 (CI), where that is a failure. Extra pytest flags: PYTEST_ARGS.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
tools=$(hack/build-cluster-tools.sh)
rc=0
kubeconfig=$(GPUPIN_TOOLS_BIN=$tools PYTHON="$root/.venv/bin/python" hack/kind-up.sh) || rc=$?
if [ "$rc" -eq 3 ]; then
  if [ "${GPUPIN_KIND_REQUIRED:-0}" = 1 ]; then
    echo "kind tier: FAILED: required here (GPUPIN_KIND_REQUIRED=1), and no kind cluster can be made (above)" >&2
    exit 1
  fi
  echo "kind tier: SKIPPED (the reason is above; the pure and KWOK tiers ran)" >&2
  exit 0
fi
[ "$rc" -eq 0 ] || exit "$rc"
set -a
# shellcheck source=/dev/null
. "$(dirname "$kubeconfig")/env"
set +a
# shellcheck disable=SC2086  # PYTEST_ARGS holds flags
GPUPIN_KIND_KUBECONFIG=$kubeconfig GPUPIN_TOOLS_BIN=$tools .venv/bin/pytest tests/kind ${PYTEST_ARGS:-}
