{{/* Chart name, truncated to 63 characters (the DNS label limit). */}}
{{- define "slotbridge.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Fully qualified app name: <release>-<chart> unless the release already contains it. */}}
{{- define "slotbridge.fullname" -}}
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

{{- define "slotbridge.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "slotbridge.labels" -}}
helm.sh/chart: {{ include "slotbridge.chart" . }}
{{ include "slotbridge.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end }}

{{- define "slotbridge.selectorLabels" -}}
app.kubernetes.io/name: {{ include "slotbridge.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "slotbridge.image" -}}
{{- printf "%s:%s" .Values.image.repository (.Values.image.tag | default .Chart.AppVersion) }}
{{- end }}

{{/* Where Secrets are mounted; the config points at these files. */}}
{{- define "slotbridge.clientTlsDir" -}}/etc/slotbridge-tls/client{{- end }}
{{- define "slotbridge.backendTlsDir" -}}/etc/slotbridge-tls/backend{{- end }}

{{/*
slotbridge.toml: .Values.config plus what the chart owns (listen, admin,
seeds, TLS file paths, client_ca_file with tls.client.verifyClients).
*/}}
{{- define "slotbridge.configToml" -}}
{{- if not .Values.seeds }}
{{- fail "seeds: set at least one Redis Cluster node (host:port)" }}
{{- end }}
{{- if and .Values.tls.client.verifyClients (not .Values.tls.client.enabled) }}
{{- fail "tls.client.verifyClients needs tls.client.enabled: client certificates are checked in the client TLS handshake" }}
{{- end }}
{{- $cfg := deepCopy (.Values.config | default dict) }}
{{- $_ := set $cfg "listen" (printf "0.0.0.0:%d" (int64 .Values.ports.client)) }}
{{- $_ = set $cfg "admin" (printf "0.0.0.0:%d" (int64 .Values.ports.admin)) }}
{{- $_ = set $cfg "seeds" .Values.seeds }}
{{- if .Values.tls.client.enabled }}
{{- $dir := include "slotbridge.clientTlsDir" . }}
{{- $tls := index $cfg "tls" | default dict }}
{{- $_ = set $tls "cert_file" (printf "%s/tls.crt" $dir) }}
{{- $_ = set $tls "key_file" (printf "%s/tls.key" $dir) }}
{{- if .Values.tls.client.verifyClients }}
{{- $_ = set $tls "client_ca_file" (printf "%s/%s" $dir (required "tls.client.caKey is required when tls.client.verifyClients" .Values.tls.client.caKey)) }}
{{- end }}
{{- $_ = set $cfg "tls" $tls }}
{{- end }}
{{- if .Values.tls.backend.enabled }}
{{- $tls := index $cfg "tls" | default dict }}
{{- $_ = set $tls "backend" true }}
{{- $_ = set $tls "backend_ca_file" (printf "%s/ca.crt" (include "slotbridge.backendTlsDir" .)) }}
{{- $_ = set $cfg "tls" $tls }}
{{- end }}
{{- include "slotbridge.toml" (dict "table" $cfg "prefix" "") | trim }}
{{- end }}

{{/*
TOML for a map: its scalar keys first, then one [table] per non-empty map.
Called with (dict "table" MAP "prefix" "dotted.name").
*/}}
{{- define "slotbridge.toml" -}}
{{- $prefix := .prefix }}
{{- range $k, $v := .table }}
{{- if and (not (kindIs "map" $v)) (not (kindIs "invalid" $v)) }}
{{ $k }} = {{ include "slotbridge.tomlValue" $v }}
{{- end }}
{{- end }}
{{- range $k, $v := .table }}
{{- if and (kindIs "map" $v) $v }}
{{- $name := ternary $k (printf "%s.%s" $prefix $k) (eq $prefix "") }}

[{{ $name }}]
{{- include "slotbridge.toml" (dict "table" $v "prefix" $name) }}
{{- end }}
{{- end }}
{{- end }}

{{/* One TOML value. Numbers are written as integers: every numeric field is one. */}}
{{- define "slotbridge.tomlValue" -}}
{{- if kindIs "string" . }}
{{- toJson . }}
{{- else if kindIs "bool" . }}
{{- . }}
{{- else if or (kindIs "float64" .) (kindIs "int64" .) (kindIs "int" .) }}
{{- int64 . }}
{{- else if kindIs "slice" . }}
{{- $items := list }}
{{- range . }}
{{- $items = append $items (include "slotbridge.tomlValue" .) }}
{{- end }}
{{- printf "[%s]" (join ", " $items) }}
{{- else }}
{{- fail (printf "config: cannot write %v (%s) as TOML" . (kindOf .)) }}
{{- end }}
{{- end }}
