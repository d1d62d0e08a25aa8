{{/*
Name of the operator's objects. One Turnpike per cluster, so it does not follow the
release name (see values.yaml fullnameOverride).
*/}}
{{- define "turnpike.fullname" -}}
{{- .Values.fullnameOverride | default "turnpike-operator" | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "turnpike.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* Labels that select the operator pods; never change them on upgrade. */}}
{{- define "turnpike.selectorLabels" -}}
app.kubernetes.io/name: turnpike-operator
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "turnpike.labels" -}}
{{ include "turnpike.selectorLabels" . }}
app.kubernetes.io/part-of: turnpike
app.kubernetes.io/component: operator
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ include "turnpike.chart" . }}
{{- with .Values.commonLabels }}
{{ toYaml . }}
{{- end }}
{{- end -}}

{{- define "turnpike.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- .Values.serviceAccount.name | default (include "turnpike.fullname" .) -}}
{{- else -}}
{{- required "serviceAccount.name is required when serviceAccount.create is false" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{/* repository:tag or repository@digest; the tag defaults to the appVersion. */}}
{{- define "turnpike.imageRef" -}}
{{- $img := index . 0 -}}
{{- $root := index . 1 -}}
{{- if $img.digest -}}
{{- printf "%s@%s" $img.repository $img.digest -}}
{{- else -}}
{{- printf "%s:%s" $img.repository ($img.tag | default $root.Chart.AppVersion) -}}
{{- end -}}
{{- end -}}

{{- define "turnpike.operatorImage" -}}
{{- include "turnpike.imageRef" (list .Values.image .) -}}
{{- end -}}

{{- define "turnpike.sidecarImage" -}}
{{- include "turnpike.imageRef" (list .Values.sidecar.image .) -}}
{{- end -}}

{{/* host:port for a listen flag; IPv6 addresses are given in brackets in values. */}}
{{- define "turnpike.listen" -}}
{{- printf "%s:%v" (index . 0) (index . 1) -}}
{{- end -}}

{{/*
Values the chart refuses instead of rendering something that fails later (at the
operator's start, or at every injected pod's creation).
*/}}
{{- define "turnpike.validate" -}}
{{- if ne (int .Values.webhook.service.port) 443 -}}
{{- fail "webhook.service.port: the operator registers the webhook Service on port 443; it cannot be changed" -}}
{{- end -}}
{{- $s := .Values.sidecar -}}
{{- if or (eq (int $s.listenPort) (int $s.adminPort)) (eq (int $s.listenPort) (int $s.upstreamPort)) (eq (int $s.upstreamPort) (int $s.adminPort)) -}}
{{- fail (printf "sidecar.listenPort (%v), sidecar.upstreamPort (%v) and sidecar.adminPort (%v) must differ: the sidecar's proxy, the workload and the sidecar's admin server share the pod's network" $s.listenPort $s.upstreamPort $s.adminPort) -}}
{{- end -}}
{{- if and .Values.webhook.certManager.enabled (not .Values.webhook.enabled) -}}
{{- fail "webhook.certManager.enabled needs webhook.enabled: without the webhook there is no certificate to issue" -}}
{{- end -}}
{{- end -}}
