#!/bin/sh
# Fetch the pinned vLLM release's sdist into a cache outside the work tree, extract the sources
# gpupin checks against, and print the extracted root. Progress on stderr; stdout is that path:
#   GPUPIN_VLLM_SOURCE="$(hack/fetch-vllm-source.sh)" .venv/bin/pytest tests/test_vllm_source.py
# The work is in fetch_vllm_source.py beside this file (stdlib + pip's own settings).
set -eu
exec "${PYTHON:-python3}" "$(dirname "$0")/fetch_vllm_source.py" "$@"
