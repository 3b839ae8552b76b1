{{/*
The FERRY_* variables naming PostgreSQL and Redis (Sentinel included), from the Secrets the
chart's values choose (ferry.databaseSecret, ferry.redisSecret): one definition for every
Deployment that reads them.
*/}}
{{- define "ferry.connectionEnv" -}}
{{- $db := include "ferry.databaseSecret" . | fromYaml -}}
{{- $redis := include "ferry.redisSecret" . | fromYaml -}}
- name: FERRY_DATABASE_URL
  valueFrom:
    secretKeyRef:
      name: {{ $db.name }}
      key: {{ $db.key }}
- name: FERRY_DATABASE_POOL_MAX_SIZE
  value: {{ .Values.database.poolMaxSize | quote }}
- name: FERRY_REDIS_URL
  valueFrom:
    secretKeyRef:
      name: {{ $redis.name }}
      key: {{ $redis.key }}
{{- with .Values.redis.sentinel }}
{{- if .hosts }}
# Redis Sentinel: the primary is whichever server these sentinels name for the master.
- name: FERRY_CACHE_SENTINELS
  value: {{ join " " .hosts | quote }}
- name: FERRY_CACHE_SENTINEL_MASTER
  value: {{ .master | quote }}
{{- if .passwordSecretRef.name }}
- name: FERRY_CACHE_SENTINEL_PASSWORD
  valueFrom:
    secretKeyRef:
      name: {{ .passwordSecretRef.name }}
      key: {{ .passwordSecretRef.key }}
{{- end }}
{{- end }}
{{- end }}
{{- end -}}
