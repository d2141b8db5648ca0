#!/usr/bin/env bash
# make e2e-kind: the seed's scenario on a kind cluster, for users with Docker.
#
# Creates a kind cluster, builds and loads the gpupin image, installs the chart with the
# agent in fake-inventory mode (the kind node becomes the seed's RTX 4070 + RTX 2060
# workstation), applies the samples and checks the pods, their pinning and the statuses.
# Needs docker, kind, kubectl and helm on PATH. Skips, saying so, where Docker is absent.
# (It could not be run where gpupin is developed: that machine has no Docker engine.)
set -euo pipefail
cd "$(dirname "$0")/.."

if ! docker info >/dev/null 2>&1; then
  echo "e2e-kind: skipped — no Docker engine here (docker info failed). Use make test: it runs the same scenario on a real API server with KWOK nodes."
  exit 0
fi
for tool in kind kubectl helm; do
  command -v "$tool" >/dev/null || { echo "e2e-kind: $tool is not on PATH" >&2; exit 1; }
done

cluster=${GPUPIN_KIND_CLUSTER:-gpupin-e2e}
image=gpupin:e2e
kind get clusters | grep -qx "$cluster" || kind create cluster --name "$cluster" --wait 120s
export KUBECONFIG
KUBECONFIG=$(mktemp)
kind get kubeconfig --name "$cluster" > "$KUBECONFIG"
node=$(kubectl get nodes -o jsonpath='{.items[0].metadata.name}')

docker build -t "$image" .
kind load docker-image "$image" --name "$cluster"

values=$(mktemp)
cat > "$values" <<VALUES
image: {repository: gpupin, tag: e2e, pullPolicy: Never}
operator: {runtimeClassName: "", requireGPU: false}
agent:
  fakeInventory:
    enabled: true
    inventory:
      nodes:
      - name: $node
        gpus:
        - {index: 0, uuid: GPU-4070aaaa-0000-4000-8000-000000000000, name: NVIDIA GeForce RTX 4070, memory: 12282Mi, computeCapability: "8.9"}
        - {index: 1, uuid: GPU-2060bbbb-0000-4000-8000-000000000001, name: NVIDIA GeForce RTX 2060, memory: 6144Mi, computeCapability: "7.5"}
VALUES
helm upgrade --install gpupin charts/gpupin -n gpupin-system --create-namespace -f "$values" --wait --timeout 5m

kubectl wait --for=jsonpath='{.metadata.annotations.gpupin\.dev/gpu-inventory}' "node/$node" --timeout=120s 2>/dev/null \
  || kubectl get node "$node" -o jsonpath='{.metadata.annotations}' | grep -q gpu-inventory
kubectl apply -f manifests/samples/ollama-per-gpu.yaml -f manifests/samples/vllm-tp2-refused.yaml
kubectl wait llmd/assistant --for=jsonpath='{.status.reason}'=Placed --timeout=120s
kubectl wait llmd/chat-tp2 --for=jsonpath='{.status.reason}'=HeterogeneousTensorParallel --timeout=120s
pods=$(kubectl get pods -l gpupin.dev/deployment=assistant -o jsonpath='{range .items[*]}{.spec.containers[0].env[?(@.name=="NVIDIA_VISIBLE_DEVICES")].value}{"\n"}{end}' | sort)
expected=$(printf 'GPU-2060bbbb-0000-4000-8000-000000000001\nGPU-4070aaaa-0000-4000-8000-000000000000')
[ "$pods" = "$expected" ] || { echo "e2e-kind: pods pinned to '$pods', expected one per GPU" >&2; exit 1; }
[ -z "$(kubectl get pods -l gpupin.dev/deployment=chat-tp2 -o name)" ] || { echo "e2e-kind: the refused deployment has pods" >&2; exit 1; }
kubectl get llmd -o wide
echo "e2e-kind: passed (the images do not run on kind without GPUs: pods stay ContainerCreating or crash; placement and pinning are what is checked). Delete with: kind delete cluster --name $cluster"
