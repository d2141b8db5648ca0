{{/* gpupin's alert rules (monitoring.prometheusRule), as the YAML list of a rule group; empty when
every alert is off or left out. The operator's alerts need its metrics (operator.metricsPort), the
agent's its own (agent.enabled, agent.metricsPort). */}}
{{- define "gpupin.alertRules" -}}
{{- $fullname := include "gpupin.fullname" . }}
{{- $alerts := .Values.monitoring.prometheusRule.alerts }}
{{- $operatorRules := gt (int .Values.operator.metricsPort) 0 }}
{{- $agentRules := and .Values.agent.enabled (gt (int .Values.agent.metricsPort) 0) }}
{{- $extra := .Values.monitoring.prometheusRule.alertLabels | default dict }}
{{- $stale := $alerts.GpupinAgentNotPublishing.staleSeconds }}
{{- if and $agentRules $alerts.GpupinAgentNotPublishing.enabled (le (float64 $stale) (mulf 2 .Values.agent.intervalSeconds)) }}
{{- fail (printf "monitoring.prometheusRule.alerts.GpupinAgentNotPublishing.staleSeconds (%v) must exceed twice agent.intervalSeconds (%v): an agent publishes once per interval" $stale .Values.agent.intervalSeconds) }}
{{- end }}
{{- if $operatorRules }}
{{- with $alerts.GpupinDeploymentRefused }}{{ if .enabled }}
- alert: GpupinDeploymentRefused
  expr: >-
    max by (namespace, llmdeployment) (gpupin_llmdeployment_condition{condition="Placed", status="False"}) == 1
  for: {{ .for }}
  labels:
    severity: {{ .severity }}
    {{- with $extra }}{{ toYaml . | nindent 4 }}{{ end }}
  annotations:
    summary: LLMDeployment {{ "{{ $labels.namespace }}/{{ $labels.llmdeployment }}" }} is refused
    description: >-
      gpupin has not placed LLMDeployment {{ "{{ $labels.namespace }}/{{ $labels.llmdeployment }}" }}
      (Placed=False) for {{ .for }}: no GPU fits it, its policy refuses it, or its spec cannot be
      served. Run `kubectl describe llmd -n {{ "{{ $labels.namespace }} {{ $labels.llmdeployment }}" }}`:
      the Placed condition's reason and message and the Events say why and what to change.
{{- end }}{{ end }}
{{- with $alerts.GpupinDeploymentNotReady }}{{ if .enabled }}
- alert: GpupinDeploymentNotReady
  expr: >-
    max by (namespace, llmdeployment) (gpupin_llmdeployment_condition{condition="Ready", status!="True", reason!="Paused"}) == 1
    unless on (namespace, llmdeployment)
    max by (namespace, llmdeployment) (gpupin_llmdeployment_condition{condition="Placed", status="False"}) == 1
  for: {{ .for }}
  labels:
    severity: {{ .severity }}
    {{- with $extra }}{{ toYaml . | nindent 4 }}{{ end }}
  annotations:
    summary: LLMDeployment {{ "{{ $labels.namespace }}/{{ $labels.llmdeployment }}" }} is not Ready
    description: >-
      The pods of LLMDeployment {{ "{{ $labels.namespace }}/{{ $labels.llmdeployment }}" }} have not been
      Ready for {{ .for }} (the model still downloading, too little GPU memory, a crashing server).
      Run `kubectl describe llmd -n {{ "{{ $labels.namespace }} {{ $labels.llmdeployment }}" }}` and
      `kubectl get pods -n {{ "{{ $labels.namespace }}" }} -l gpupin.dev/deployment={{ "{{ $labels.llmdeployment }}" }}`,
      then the logs of the pod that is not Ready.
{{- end }}{{ end }}
{{- with $alerts.GpupinNodeInventoryProblem }}{{ if .enabled }}
- alert: GpupinNodeInventoryProblem
  expr: >-
    max by (node, problem) (gpupin_node_inventory_problem) == 1
  for: {{ .for }}
  labels:
    severity: {{ .severity }}
    {{- with $extra }}{{ toYaml . | nindent 4 }}{{ end }}
  annotations:
    summary: Node {{ "{{ $labels.node }}" }} has a GPU inventory problem ({{ "{{ $labels.problem }}" }})
    description: >-
      gpupin does not use the GPUs of node {{ "{{ $labels.node }}" }} as reported ({{ "{{ $labels.problem }}" }})
      for {{ .for }}. Run `kubectl describe node {{ "{{ $labels.node }}" }}`: the gpupin.dev/ annotations
      and the node's Events (namespace default) say what is wrong; check the gpupin agent pod on it.
{{- end }}{{ end }}
{{- /* absent() fires when nothing scrapes the operator: only where this chart's ServiceMonitor does */}}
{{- if and (gt (int $.Values.operator.replicas) 0) $.Values.monitoring.serviceMonitor.enabled }}
{{- with $alerts.GpupinOperatorNotLeading }}{{ if .enabled }}
- alert: GpupinOperatorNotLeading
  expr: >-
    absent(sum(gpupin_lease_holder{namespace="{{ $.Release.Namespace }}"} == 1))
  for: {{ .for }}
  labels:
    severity: {{ .severity }}
    {{- with $extra }}{{ toYaml . | nindent 4 }}{{ end }}
  annotations:
    summary: No gpupin operator holds the Lease in {{ $.Release.Namespace }}
    description: >-
      No gpupin operator in namespace {{ $.Release.Namespace }} has held the Lease
      {{ $fullname }}-operator for {{ .for }} (or none is scraped): nothing places or repairs
      LLMDeployments. Run `kubectl get pods,lease -n {{ $.Release.Namespace }}` and read the
      operator's logs.
{{- end }}{{ end }}
{{- end }}
{{- end }}
{{- if $agentRules }}
{{- with $alerts.GpupinAgentNotPublishing }}{{ if .enabled }}
- alert: GpupinAgentNotPublishing
  expr: >-
    time() - max by (node) (gpupin_agent_last_publish_timestamp_seconds) > {{ .staleSeconds }}
  for: {{ .for }}
  labels:
    severity: {{ .severity }}
    {{- with $extra }}{{ toYaml . | nindent 4 }}{{ end }}
  annotations:
    summary: The gpupin agent on node {{ "{{ $labels.node }}" }} is not publishing
    description: >-
      The gpupin agent on node {{ "{{ $labels.node }}" }} last published the node's GPUs
      {{ "{{ $value | humanizeDuration }}" }} ago: the operator plans with what it published last.
      Find its pod with `kubectl get pods -n {{ $.Release.Namespace }} -l app.kubernetes.io/component=agent
      --field-selector spec.nodeName={{ "{{ $labels.node }}" }}` and read its logs (NVML errors, a
      refused Node patch; an agent that never published counts from its start). An agent that is
      gone altogether leaves no series: watch the DaemonSet's ready count for that.
{{- end }}{{ end }}
{{- end }}
{{- end -}}
