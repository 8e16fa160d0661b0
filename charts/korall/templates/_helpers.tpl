{{/* Full name of the release's objects: the release name, with "korall" appended unless it already has it. */}}
{{- define "korall.fullname" -}}
{{- if contains .Chart.Name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name .Chart.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{- define "korall.selectorLabels" -}}
app.kubernetes.io/name: korall-operator
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "korall.labels" -}}
{{ include "korall.selectorLabels" . }}
app.kubernetes.io/component: operator
app.kubernetes.io/part-of: korall
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
{{- end -}}

{{- define "korall.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (include "korall.fullname" .) .Values.serviceAccount.name -}}
{{- else -}}
{{- default "default" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}
