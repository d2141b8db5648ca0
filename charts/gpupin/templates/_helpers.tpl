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
{{- if and .Values.agent.fakeInventory.enabled (not .Values.agent.enabled) -}}
{{- fail "agent.fakeInventory.enabled needs agent.enabled: the fake inventory is published by the agent" -}}
{{- end -}}
{{- if and .Values.agent.fakeInventory.enabled (eq (len .Values.agent.fakeInventory.inventory.nodes) 0) -}}
{{- fail "agent.fakeInventory.enabled needs agent.fakeInventory.inventory.nodes: the fake GPUs of each node" -}}
{{- end -}}
{{- end -}}
