{{/* Names and labels shared by every object of the release. */}}
{{- define "gpupin.fullname" -}}
{{- if contains .Chart.Name .Release.Name -}}
{{- .Release.Name | trunc 50 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name .Chart.Name | trunc 50 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{- define "gpupin.labels" -}}
app.kubernetes.io/name: gpupin
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version }}
{{- end -}}

{{- define "gpupin.image" -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) -}}
{{- end -}}

{{- define "gpupin.securityContext" -}}
allowPrivilegeEscalation: false
readOnlyRootFilesystem: true
runAsNonRoot: true
runAsUser: 65532
runAsGroup: 65532
capabilities:
  drop: [ALL]
seccompProfile:
  type: RuntimeDefault
{{- end -}}

{{/* operator.watchNamespaces as a JSON list: a list (--set 'operator.watchNamespaces={llm,chat}'),
or one comma-separated string ("llm, chat" in a values file); each must be a namespace name. */}}
{{- define "gpupin.watchNamespaces" -}}
{{- $given := .Values.operator.watchNamespaces -}}
{{- if kindIs "string" $given -}}{{- $given = splitList "," $given -}}{{- end -}}
{{- $names := list -}}
{{- range $given -}}
{{- $name := trim . -}}
{{- if $name -}}
{{- if or (gt (len $name) 63) (not (regexMatch "^[a-z0-9]([-a-z0-9]*[a-z0-9])?$" $name)) -}}
{{- fail (printf "operator.watchNamespaces: %q is not a namespace name (lowercase letters, digits and '-', at most 63)" $name) -}}
{{- end -}}
{{- $names = append $names $name -}}
{{- end -}}
{{- end -}}
{{- $names | uniq | toJson -}}
{{- end -}}

{{/* Contradictory values fail the install with a message, instead of a broken cluster. */}}
{{- define "gpupin.validate" -}}
{{- range .Values.operator.policy.allowedImages -}}
{{- if and (not (contains "/" .)) (contains "." .) (not (contains ":" .)) (not (contains "@" .)) -}}
{{- fail (printf "operator.policy.allowedImages: %q is a registry host; write it with its slash (%s/) to allow its images" . .) -}}
{{- end -}}
{{- end -}}
{{- if gt (int .Values.operator.replicas) 2 -}}
{{- fail "operator.replicas must be 0, 1 or 2: one operator writes (it holds the Lease) and a second waits as a warm standby; more would only wait" -}}
{{- end -}}
{{- if and .Values.operator.metricsPort (eq (int .Values.operator.metricsPort) (int .Values.operator.healthPort)) -}}
{{- fail (printf "operator.metricsPort and operator.healthPort are both %v: give them different ports (or 0 to disable one)" .Values.operator.metricsPort) -}}
{{- end -}}
{{- if and .Values.agent.metricsPort (eq (int .Values.agent.metricsPort) (int .Values.agent.healthPort)) -}}
{{- fail (printf "agent.metricsPort and agent.healthPort are both %v: give them different ports (or 0 to disable one)" .Values.agent.metricsPort) -}}
{{- end -}}
{{- if and .Values.agent.fakeInventory.enabled (not .Values.agent.enabled) -}}
{{- fail "agent.fakeInventory.enabled needs agent.enabled: the fake inventory is published by the agent" -}}
{{- end -}}
{{- if and .Values.agent.fakeInventory.enabled (eq (len .Values.agent.fakeInventory.inventory.nodes) 0) -}}
{{- fail "agent.fakeInventory.enabled needs agent.fakeInventory.inventory.nodes: the fake GPUs of each node" -}}
{{- end -}}
{{- end -}}

{{/* Where the agent runs, as JSON {"nodeSelector": {...}, "affinity": {...}} (either may be empty);
the DaemonSet and NOTES.txt both read it. agent.affinity, when set, is the affinity. Otherwise a
required node affinity: nodes with ANY of agent.gpuNodeLabels (unless agent.nodeSelector or fake
mode says where instead) and NONE of agent.excludeNodeLabels (NotIn also matches a node without
the label). The nodeSelector: agent.nodeSelector, or agent.fakeInventory.nodeSelector in fake mode. */}}
{{- define "gpupin.agentPlacement" -}}
{{- $agent := .Values.agent -}}
{{- $fake := $agent.fakeInventory.enabled -}}
{{- $selector := ternary ($agent.fakeInventory.nodeSelector | default dict) ($agent.nodeSelector | default dict) $fake -}}
{{- $affinity := $agent.affinity | default dict -}}
{{- if not $affinity -}}
{{- $exclude := list -}}
{{- range $key, $value := $agent.excludeNodeLabels -}}
{{- $exclude = append $exclude (dict "key" $key "operator" "NotIn" "values" (list $value)) -}}
{{- end -}}
{{- $terms := list -}}
{{- if not (or $fake $selector) -}}
{{- range $key, $value := $agent.gpuNodeLabels -}}
{{- $terms = append $terms (dict "matchExpressions" (prepend $exclude (dict "key" $key "operator" "In" "values" (list $value)))) -}}
{{- end -}}
{{- if not $terms -}}
{{- fail "agent.gpuNodeLabels is empty and agent.nodeSelector unset: the agent would run on every node; set agent.nodeSelector or agent.affinity to say where it runs" -}}
{{- end -}}
{{- else if $exclude -}}
{{- $terms = list (dict "matchExpressions" $exclude) -}}
{{- end -}}
{{- if $terms -}}
{{- $affinity = dict "nodeAffinity" (dict "requiredDuringSchedulingIgnoredDuringExecution" (dict "nodeSelectorTerms" $terms)) -}}
{{- end -}}
{{- end -}}
{{- dict "nodeSelector" $selector "affinity" $affinity | toJson -}}
{{- end -}}

{{/* The agent's placement in words, for NOTES.txt. */}}
{{- define "gpupin.agentTargetText" -}}
{{- $agent := .Values.agent -}}
{{- $placement := include "gpupin.agentPlacement" . | fromJson -}}
{{- $labels := list -}}
{{- range $key, $value := $placement.nodeSelector -}}{{- $labels = append $labels (printf "%s=%s" $key $value) -}}{{- end -}}
{{- if $agent.affinity -}}
nodes chosen by agent.affinity {{ toJson $agent.affinity }}{{ if $labels }} and labelled {{ join ", " $labels }}{{ end }}
{{- else -}}
{{- $any := list -}}
{{- if not (or $agent.fakeInventory.enabled $labels) -}}
{{- range $key, $value := $agent.gpuNodeLabels -}}{{- $any = append $any (printf "%s=%s" $key $value) -}}{{- end -}}
{{- end -}}
{{- $none := list -}}
{{- range $key, $value := $agent.excludeNodeLabels -}}{{- $none = append $none (printf "%s=%s" $key $value) -}}{{- end -}}
{{- if $any -}}nodes labelled any of {{ join ", " $any }}
{{- else if $labels -}}nodes labelled {{ join ", " $labels }}
{{- else -}}every node{{- end -}}
{{- if $none }}, except nodes labelled {{ join " or " $none }}{{ end -}}
{{- end -}}
{{- end -}}
