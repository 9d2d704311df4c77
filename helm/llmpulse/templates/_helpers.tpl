{{/* Chart name, overridable. */}}
{{- define "llmpulse.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Release-scoped name: release name unless it already contains the chart name. */}}
{{- define "llmpulse.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{- define "llmpulse.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "llmpulse.selectorLabels" -}}
app.kubernetes.io/name: {{ include "llmpulse.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: worker
{{- end }}

{{- define "llmpulse.labels" -}}
helm.sh/chart: {{ include "llmpulse.chart" . }}
{{ include "llmpulse.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end }}

{{- define "llmpulse.image" -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) }}
{{- end }}

{{/* Name of the Secret holding the API token, and its key. */}}
{{- define "llmpulse.secretName" -}}
{{- default (printf "%s-api" (include "llmpulse.fullname" .)) .Values.apiToken.existingSecret }}
{{- end }}

{{- define "llmpulse.secretKey" -}}
{{- if .Values.apiToken.existingSecret }}{{ .Values.apiToken.existingSecretKey }}{{ else }}api-token{{ end }}
{{- end }}

{{/* The worker's KAFKA_SECURITY_PROTOCOL, KAFKA_SASL_* and KAFKA_SSL_* variables; secrets by secretKeyRef only. */}}
{{- define "llmpulse.kafkaSecurityEnv" -}}
{{- $k := .Values.kafka }}
{{- $tlsDir := "/etc/llmpulse/kafka-tls" }}
{{- with $k.securityProtocol }}
- name: KAFKA_SECURITY_PROTOCOL
  value: {{ . | quote }}
{{- end }}
{{- with $k.sasl.mechanism }}
- name: KAFKA_SASL_MECHANISM
  value: {{ . | quote }}
{{- end }}
{{- with $k.sasl.username }}
- name: KAFKA_SASL_USERNAME
  value: {{ . | quote }}
{{- end }}
{{- if $k.sasl.passwordSecret.name }}
- name: KAFKA_SASL_PASSWORD
  valueFrom:
    secretKeyRef:
      name: {{ $k.sasl.passwordSecret.name }}
      key: {{ $k.sasl.passwordSecret.key }}
{{- end }}
{{- if $k.tls.secretName }}
{{- with $k.tls.caKey }}
- name: KAFKA_SSL_CA_LOCATION
  value: {{ printf "%s/%s" $tlsDir . | quote }}
{{- end }}
{{- with $k.tls.certificateKey }}
- name: KAFKA_SSL_CERTIFICATE_LOCATION
  value: {{ printf "%s/%s" $tlsDir . | quote }}
{{- end }}
{{- with $k.tls.keyKey }}
- name: KAFKA_SSL_KEY_LOCATION
  value: {{ printf "%s/%s" $tlsDir . | quote }}
{{- end }}
{{- end }}
{{- if $k.tls.keyPasswordSecret.name }}
- name: KAFKA_SSL_KEY_PASSWORD
  valueFrom:
    secretKeyRef:
      name: {{ $k.tls.keyPasswordSecret.name }}
      key: {{ $k.tls.keyPasswordSecret.key }}
{{- end }}
{{- end }}
