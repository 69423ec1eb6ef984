{{/* The prefix of every object's name: the release name, or <release>-agentfleet. */}}
{{- define "agentfleet.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 40 | trimSuffix "-" -}}
{{- else -}}
{{- $name := default .Chart.Name .Values.nameOverride -}}
{{- if contains $name .Release.Name -}}
{{- .Release.Name | trunc 40 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name $name | trunc 40 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{/* Labels that say which release of the chart made an object. */}}
{{- define "agentfleet.releaseLabels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
{{- end -}}

{{/* Labels of every object of ours. */}}
{{- define "agentfleet.labels" -}}
{{ include "agentfleet.releaseLabels" . }}
app.kubernetes.io/part-of: agentfleet
{{- end -}}

{{/* Selector labels of the operator's pods. */}}
{{- define "agentfleet.operatorSelectorLabels" -}}
app.kubernetes.io/name: {{ include "agentfleet.fullname" . }}-operator
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{/* Selector labels of the GPU agent's pods. */}}
{{- define "agentfleet.gpuAgentSelectorLabels" -}}
app.kubernetes.io/name: {{ include "agentfleet.fullname" . }}-gpu-agent
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "agentfleet.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (printf "%s-operator" (include "agentfleet.fullname" .)) .Values.serviceAccount.name -}}
{{- else -}}
{{- required "serviceAccount.name is required when serviceAccount.create is false" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{/* The documents of a multi-document YAML file under files/, as a list of maps. */}}
{{- define "agentfleet.docs" -}}
{{- $docs := list -}}
{{- range regexSplit "(?m)^---[ \t]*$" (.root.Files.Get .file) -1 -}}
{{- $d := fromYaml . -}}
{{- if $d.kind -}}{{- $docs = append $docs $d -}}{{- end -}}
{{- end -}}
{{- toJson $docs -}}
{{- end -}}
