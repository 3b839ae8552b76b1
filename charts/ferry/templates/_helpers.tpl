{{/* Names and labels shared by every template. */}}

{{- define "ferry.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "ferry.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" -}}
{{- else if contains (include "ferry.name" .) .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name (include "ferry.name" .) | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{- define "ferry.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
app.kubernetes.io/name: {{ include "ferry.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: ferry
{{- end -}}

{{/* The operator pods. */}}
{{- define "ferry.selectorLabels" -}}
app.kubernetes.io/name: {{ include "ferry.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: operator
{{- end -}}

{{/* The pods of `ferry webhooks` (webhooks-deployment.yaml). */}}
{{- define "ferry.webhookSelectorLabels" -}}
app.kubernetes.io/name: {{ include "ferry.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: webhooks
{{- end -}}

{{- define "ferry.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (include "ferry.fullname" .) .Values.serviceAccount.name -}}
{{- else -}}
{{- required "serviceAccount.name is required when serviceAccount.create is false" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{- define "ferry.image" -}}
{{- if .Values.image.digest -}}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest -}}
{{- else -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) -}}
{{- end -}}
{{- end -}}

{{/* An image of a trial component: {repository, tag, digest}. */}}
{{- define "ferry.trialImage" -}}
{{- if .digest -}}
{{- printf "%s@%s" .repository .digest -}}
{{- else -}}
{{- printf "%s:%s" .repository .tag -}}
{{- end -}}
{{- end -}}

{{- define "ferry.webhookServiceName" -}}
{{- printf "%s-webhook" (include "ferry.fullname" .) -}}
{{- end -}}

{{- define "ferry.webhookSecretName" -}}
{{- printf "%s-webhook-tls" (include "ferry.fullname" .) -}}
{{- end -}}

{{/* The Secret (name and key) the database URI is read from. */}}
{{- define "ferry.databaseSecret" -}}
{{- $chosen := list -}}
{{- if .Values.database.url -}}{{- $chosen = append $chosen "database.url" -}}{{- end -}}
{{- if .Values.database.existingSecret.name -}}{{- $chosen = append $chosen "database.existingSecret.name" -}}{{- end -}}
{{- if .Values.trial.postgresql.enabled -}}{{- $chosen = append $chosen "trial.postgresql.enabled" -}}{{- end -}}
{{- if ne (len $chosen) 1 -}}
{{- fail (printf "PostgreSQL: set exactly one of database.url, database.existingSecret.name or trial.postgresql.enabled (set: %s)" (default "none" (join ", " $chosen))) -}}
{{- end -}}
{{- if .Values.database.existingSecret.name -}}
name: {{ .Values.database.existingSecret.name }}
key: {{ .Values.database.existingSecret.key }}
{{- else -}}
name: {{ include "ferry.fullname" . }}-connections
key: database-url
{{- end -}}
{{- end -}}

{{- define "ferry.redisSecret" -}}
{{- $chosen := list -}}
{{- if .Values.redis.url -}}{{- $chosen = append $chosen "redis.url" -}}{{- end -}}
{{- if .Values.redis.existingSecret.name -}}{{- $chosen = append $chosen "redis.existingSecret.name" -}}{{- end -}}
{{- if .Values.trial.redis.enabled -}}{{- $chosen = append $chosen "trial.redis.enabled" -}}{{- end -}}
{{- if ne (len $chosen) 1 -}}
{{- fail (printf "Redis: set exactly one of redis.url, redis.existingSecret.name or trial.redis.enabled (set: %s)" (default "none" (join ", " $chosen))) -}}
{{- end -}}
{{- if and .Values.redis.sentinel.hosts .Values.trial.redis.enabled -}}
{{- fail "Redis: redis.sentinel.hosts is set, but the trial Redis (trial.redis.enabled) has no sentinels: give the URL of your Redis (redis.url or redis.existingSecret.name) instead" -}}
{{- end -}}
{{- if and .Values.redis.sentinel.passwordSecretRef.name (not .Values.redis.sentinel.hosts) -}}
{{- fail "Redis: redis.sentinel.passwordSecretRef is set but redis.sentinel.hosts is empty: list the sentinels (host:port)" -}}
{{- end -}}
{{- if .Values.redis.existingSecret.name -}}
name: {{ .Values.redis.existingSecret.name }}
key: {{ .Values.redis.existingSecret.key }}
{{- else -}}
name: {{ include "ferry.fullname" . }}-connections
key: redis-url
{{- end -}}
{{- end -}}

{{/*
A random secret kept across upgrades: the value already in the live Secret when there is one
(helm install/upgrade look it up), else a new random one. Args: (list $ secretName key length).
*/}}
{{- define "ferry.keptRandom" -}}
{{- $root := index . 0 -}}{{- $name := index . 1 -}}{{- $key := index . 2 -}}{{- $length := index . 3 -}}
{{- $existing := lookup "v1" "Secret" $root.Release.Namespace $name -}}
{{- if and $existing (hasKey ($existing.data | default dict) $key) -}}
{{- index $existing.data $key | b64dec -}}
{{- else -}}
{{- randAlphaNum $length -}}
{{- end -}}
{{- end -}}

{{/*
The issuer of the serving certificates (webhooks, history API) with cert-manager: yours
(webhook.certificate.certManager.issuerRef), else the chart's CA Issuer (webhooks.yaml). Never a
self-signed Issuer directly: a self-signed certificate is its own CA, so each renewal would
change the caBundle before the pods serve the new certificate.
*/}}
{{- define "ferry.servingIssuerRef" -}}
{{- with .Values.webhook.certificate.certManager.issuerRef }}
{{- toYaml . }}
{{- else }}
name: {{ include "ferry.fullname" . }}-ca
kind: Issuer
{{- end }}
{{- end }}
