{{/* The device plugin and the TPU waker (issue 16): names, labels, and the resource names split for the plugin. */}}

{{- define "korall.devicePlugin.selectorLabels" -}}
app.kubernetes.io/name: korall-device-plugin
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "korall.tpuWake.selectorLabels" -}}
app.kubernetes.io/name: korall-tpu-wake
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{/* Labels of a device-side object; the argument is (list $ "component"). */}}
{{- define "korall.devices.labels" -}}
{{- $root := index . 0 -}}
app.kubernetes.io/component: {{ index . 1 }}
app.kubernetes.io/part-of: korall
app.kubernetes.io/version: {{ $root.Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ $root.Release.Service }}
helm.sh/chart: {{ printf "%s-%s" $root.Chart.Name $root.Chart.Version | replace "+" "_" }}
{{- end -}}

{{/* The plugin's image: repository:tag, pinned by digest when one is given. */}}
{{- define "korall.devicePlugin.image" -}}
{{- $image := .Values.devicePlugin.image -}}
{{- printf "%s:%s" $image.repository $image.tag -}}
{{- with $image.digest }}@{{ . }}{{ end -}}
{{- end -}}

{{/* Do pods get their devices from a device plugin (the chart's or the user's)? Without any, the operator requests
no camera or microphone resource: nobody would advertise it, and the pod would wait for it forever. */}}
{{- define "korall.devicesGranted" -}}
{{- if or .Values.devicePlugin.enabled (eq .Values.tpu.deviceAccess "device-plugin") -}}true{{- end -}}
{{- end -}}
