#!/usr/bin/env bash
# Remove gpupin and everything it made, in the order that leaves nothing behind:
#   1. every LLMDeployment in the cluster (the garbage collector removes their pods, Services,
#      routers and claim templates through ownerReferences), waiting until their pods are gone;
#   2. the release (operator, agents, RBAC): `helm uninstall`, or with --no-helm (a
#      `kubectl apply -f manifests/gpupin.yaml` install) every object of it by its labels (the
#      namespace itself is left) — the agents must be gone before the node labels go, or they
#      write them again;
#   3. the operator's Lease, the CRD, and the labels and annotations the agents put on Nodes.
# LLMDeployments, the CRD and the node labels are cluster-wide: with another gpupin operator
# running (another release), it stops unless --all-releases says to remove them anyway.
# Usage: hack/uninstall.sh [--release NAME] [--namespace NS] [--no-helm] [--keep-crd]
#                          [--all-releases] [--yes]
# KUBECONFIG / kubectl's current context choose the cluster. Without --yes it asks first.
set -euo pipefail
release=gpupin namespace=gpupin-system helm=yes yes=no crd=delete others=refuse
die() { echo "uninstall: $*" >&2; exit 2; }
while [ $# -gt 0 ]; do
  case $1 in
    --release|--namespace) [ $# -ge 2 ] || die "$1 needs a value"
      if [ "$1" = --release ]; then release=$2; else namespace=$2; fi; shift 2 ;;
    --no-helm) helm=no; shift ;;
    --keep-crd) crd=keep; shift ;;
    --all-releases) others=remove; shift ;;
    --yes) yes=yes; shift ;;
    -h|--help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
    *) die "unknown argument $1 (see the header of $0)" ;;
  esac
done
kubectl=${KUBECTL:-kubectl}
context=$("$kubectl" config current-context 2>/dev/null || echo "(in-cluster)")
operators=$("$kubectl" get deployments --all-namespaces -l app.kubernetes.io/name=gpupin,app.kubernetes.io/component=operator \
  -o jsonpath='{range .items[*]}{.metadata.namespace}/{.metadata.labels.app\.kubernetes\.io/instance}{"\n"}{end}' 2>/dev/null || true)
foreign=$(printf '%s\n' "$operators" | grep -v -x -F "$namespace/$release" | grep . || true)
if [ -n "$foreign" ] && [ "$others" != remove ]; then
  die "other gpupin releases run here ($(echo "$foreign" | tr '\n' ' ')): LLMDeployments, the CRD and node labels are theirs too; remove those first, or pass --all-releases"
fi
count=$("$kubectl" get llmd --all-namespaces --no-headers 2>/dev/null | wc -l || true)
if [ "$yes" != yes ]; then
  [ -t 0 ] || die "not a terminal to ask on: pass --yes to remove without asking"
  printf 'Remove gpupin from %s: delete %s LLMDeployment(s) and their pods, release %s in %s, %sthe node labels? [y/N] ' \
    "$context" "$count" "$release" "$namespace" "$([ "$crd" = delete ] && echo "the CRD, " || true)"
  read -r answer
  case $answer in y|Y|yes) ;; *) echo "nothing removed"; exit 1 ;; esac
fi
if "$kubectl" get crd llmdeployments.gpupin.dev >/dev/null 2>&1; then
  "$kubectl" delete llmd --all --all-namespaces --wait=true --timeout=5m
  echo "uninstall: waiting for gpupin's pods to go"
  "$kubectl" wait pods --all-namespaces -l app.kubernetes.io/managed-by=gpupin --for=delete --timeout=5m \
    || die "gpupin's pods are still there after 5 minutes (kubectl get pods -A -l app.kubernetes.io/managed-by=gpupin); nothing more removed"
fi
if [ "$helm" = yes ]; then
  if ${HELM:-helm} status "$release" --namespace "$namespace" >/dev/null 2>&1; then
    ${HELM:-helm} uninstall "$release" --namespace "$namespace" --wait
  else
    echo "uninstall: no Helm release $release in $namespace"
  fi
else
  selector="app.kubernetes.io/name=gpupin,app.kubernetes.io/instance=$release"
  "$kubectl" delete deployments,daemonsets --namespace "$namespace" -l "$selector" --wait=true
  "$kubectl" delete services,configmaps,serviceaccounts,roles,rolebindings --namespace "$namespace" -l "$selector"
  "$kubectl" delete roles,rolebindings --namespace default -l "$selector"
  "$kubectl" delete clusterroles,clusterrolebindings,validatingadmissionpolicies,validatingadmissionpolicybindings \
    -l "$selector" --ignore-not-found
fi
"$kubectl" delete lease --namespace "$namespace" --ignore-not-found "$release-operator" gpupin-operator
[ "$crd" = keep ] || "$kubectl" delete crd llmdeployments.gpupin.dev --ignore-not-found
"$kubectl" label nodes --all gpupin.dev/gpu-count- gpupin.dev/mixed- >/dev/null
"$kubectl" annotate nodes --all gpupin.dev/gpu-inventory- gpupin.dev/gpu-inventory-error- >/dev/null
echo "uninstall: gpupin removed from $context"
