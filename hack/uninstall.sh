#!/usr/bin/env bash
# Remove gpupin and everything it made, in the order that leaves nothing behind:
#   1. every LLMDeployment (the garbage collector removes their pods, Services, routers and
#      claim templates through ownerReferences), waiting until their pods are gone;
#   2. the Helm release (operator, agents, RBAC) — skipped with --no-helm (a kubectl-apply install:
#      then `kubectl delete -f manifests/gpupin.yaml` does it);
#   3. the CRD, and the labels and annotations the agents put on Nodes.
# Usage: hack/uninstall.sh [--release NAME] [--namespace NS] [--no-helm] [--keep-crd] [--yes]
# KUBECONFIG / kubectl's current context choose the cluster. Without --yes it asks first.
set -euo pipefail
release=gpupin namespace=gpupin-system helm=yes yes=no crd=delete
while [ $# -gt 0 ]; do
  case $1 in
    --release) release=$2; shift 2 ;;
    --namespace) namespace=$2; shift 2 ;;
    --no-helm) helm=no; shift ;;
    --keep-crd) crd=keep; shift ;;
    --yes) yes=yes; shift ;;
    *) echo "uninstall: unknown argument $1 (see the header of $0)" >&2; exit 2 ;;
  esac
done
kubectl=${KUBECTL:-kubectl}
context=$("$kubectl" config current-context 2>/dev/null || echo "(in-cluster)")
count=$("$kubectl" get llmd --all-namespaces --no-headers 2>/dev/null | wc -l || true)
if [ "$yes" != yes ]; then
  printf 'Remove gpupin from %s: delete %s LLMDeployment(s) and their pods, %sthe CRD and the node labels? [y/N] ' \
    "$context" "$count" "$([ "$helm" = yes ] && echo "release $release in $namespace, " || true)"
  read -r answer
  case $answer in y|Y|yes) ;; *) echo "nothing removed"; exit 1 ;; esac
fi
if "$kubectl" get crd llmdeployments.gpupin.dev >/dev/null 2>&1; then
  # the operator must still run here if finalizers were ever set; gpupin sets none on LLMDeployments
  "$kubectl" delete llmd --all --all-namespaces --wait=true --timeout=5m
  echo "uninstall: waiting for gpupin's pods to go"
  "$kubectl" wait pods --all-namespaces -l app.kubernetes.io/managed-by=gpupin --for=delete --timeout=5m 2>/dev/null || true
fi
if [ "$helm" = yes ]; then
  ${HELM:-helm} uninstall "$release" --namespace "$namespace" --wait || echo "uninstall: no release $release in $namespace"
fi
[ "$crd" = keep ] || "$kubectl" delete crd llmdeployments.gpupin.dev --ignore-not-found
"$kubectl" label nodes --all gpupin.dev/gpu-count- gpupin.dev/mixed- >/dev/null
"$kubectl" annotate nodes --all gpupin.dev/gpu-inventory- gpupin.dev/gpu-inventory-error- >/dev/null
echo "uninstall: gpupin removed from $context"
