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
Values this operator release cannot honour: refuse them instead of rendering a chart
that silently does something else. Each names the operator flag that would lift it.
*/}}
{{- define "turnpike.validate" -}}
{{- if ne .Values.webhook.failurePolicy "Fail" -}}
{{- fail (printf "webhook.failurePolicy=%s: this operator release always registers failurePolicy Fail on its MutatingWebhookConfiguration and has no flag to change it (pending: --webhook-failure-policy); see README \"Webhook\"" .Values.webhook.failurePolicy) -}}
{{- end -}}
{{- if ne (int .Values.webhook.service.port) 443 -}}
{{- fail "webhook.service.port: the operator registers the webhook Service on port 443; it cannot be changed" -}}
{{- end -}}
{{- if ne (int .Values.sidecar.listenPort) 9080 -}}
{{- fail "sidecar.listenPort: this operator release fixes the sidecar's default proxy port at 9080 (pending flag: --sidecar-listen-port); per pod, use the annotation turnpike.dev/listen-port" -}}
{{- end -}}
{{- if ne (int .Values.sidecar.adminPort) 9901 -}}
{{- fail "sidecar.adminPort: this operator release fixes the sidecar's admin port at 9901 (pending flag: --sidecar-admin-port)" -}}
{{- end -}}
{{- if .Values.webhook.certManager.enabled -}}
{{- fail "webhook.certManager.enabled: pending. This operator release makes and rotates its own webhook certificate (Secret turnpike-webhook-certs) and has no flag to serve one issued by cert-manager (needed: --webhook-cert-secret NAME, reading tls.crt, tls.key and ca.crt and publishing ca.crt as the caBundle); see README \"Pending options\"" -}}
{{- end -}}
{{- end -}}
