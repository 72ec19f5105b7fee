{{/* Chart name, truncated to a DNS label. */}}
{{- define "tabadul-hub.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
Full name prefix of every resource. Short enough that "<fullname>-<i>-0"
(the pod of replica i's StatefulSet) and its controller-revision label
stay within 63 characters.
*/}}
{{- define "tabadul-hub.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 40 | trimSuffix "-" }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 40 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 40 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{/* Labels common to everything the chart makes. */}}
{{- define "tabadul-hub.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
{{ include "tabadul-hub.selectorLabels" . }}
app.kubernetes.io/component: hub
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end }}

{{/* Selects every replica of this release (the Service, the PDB). */}}
{{- define "tabadul-hub.selectorLabels" -}}
app.kubernetes.io/name: {{ include "tabadul-hub.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{/* The Secret of replica i: tls.crt, tls.key, log.key. Call with (list $ i). */}}
{{- define "tabadul-hub.replicaSecret" -}}
{{- $ := index . 0 }}
{{- printf "%s-%d" (default (include "tabadul-hub.fullname" $) $.Values.secrets.replicaPrefix) (index . 1) }}
{{- end }}

{{/* The shared Secret with ca.pem and crl.pem. */}}
{{- define "tabadul-hub.caSecret" -}}
{{- default (printf "%s-ca" (include "tabadul-hub.fullname" .)) .Values.secrets.ca }}
{{- end }}

{{/* The shared Secret with tokens.json. */}}
{{- define "tabadul-hub.tokensSecret" -}}
{{- default (printf "%s-tokens" (include "tabadul-hub.fullname" .)) .Values.secrets.tokens }}
{{- end }}

{{/* The ConfigMap holding dictionary.toml. */}}
{{- define "tabadul-hub.dictionaryConfigMap" -}}
{{- if and .Values.dictionary.configMap .Values.dictionary.content }}
{{- fail "give dictionary.configMap or dictionary.content, not both" }}
{{- end }}
{{- if .Values.dictionary.configMap }}
{{- .Values.dictionary.configMap }}
{{- else }}
{{- $_ := required "the data dictionary is required: --set-file dictionary.content=deploy/dictionary.toml, or dictionary.configMap=<existing ConfigMap>" .Values.dictionary.content }}
{{- printf "%s-dictionary" (include "tabadul-hub.fullname" .) }}
{{- end }}
{{- end }}

{{- define "tabadul-hub.image" -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) }}
{{- end }}

{{/* hub.toml of replica i. Call with (list $ i). Strings go through toJson:
a JSON string is a valid TOML basic string. */}}
{{- define "tabadul-hub.config" -}}
{{- $ := index . 0 }}
{{- $i := index . 1 }}
{{- $c := $.Values.config -}}
# hub.toml of replica {{ $i }}: identity spiffe://{{ $.Values.network }}/hub/{{ $.Values.hubId }}-{{ $i }}
# (from its certificate), log origin {{ $.Values.network }}/hub/{{ $.Values.hubId }}-{{ $i }} (from its log key).
# Rendered by the tabadul-hub chart; paths are the pod's mounts.
data_dir = "/var/lib/tabadul"
dictionary = "/etc/tabadul/dictionary/dictionary.toml"
# Copied from the replica's Secret by the init container, mode 0600.
log_key = "/run/tabadul/log.key"
deadline_ms = {{ int64 $c.deadlineMs }}
max_deadline_ms = {{ int64 $c.maxDeadlineMs }}
max_in_flight_per_member = {{ int64 $c.maxInFlightPerMember }}
max_concurrent_queries = {{ int64 $c.maxConcurrentQueries }}
max_queued_queries = {{ int64 $c.maxQueuedQueries }}
max_queue_wait_ms = {{ int64 $c.maxQueueWaitMs }}
witness_interval_ms = {{ int64 $c.witnessIntervalMs }}
crl_reload_interval_ms = {{ int64 $c.crlReloadIntervalMs }}
shutdown_grace_ms = {{ int64 $c.shutdownGraceMs }}

[http]
public_tier = {{ $c.http.publicTier }}
tokens = "/etc/tabadul/tokens/tokens.json"
max_body_bytes = {{ int64 $c.http.maxBodyBytes }}
max_cells = {{ int64 $c.http.maxCells }}
rate_per_minute = {{ int64 $c.http.ratePerMinute }}
burst = {{ int64 $c.http.burst }}
header_read_timeout_ms = {{ int64 $c.http.headerReadTimeoutMs }}

[cache]
max_entries = {{ int64 $c.cache.maxEntries }}
max_age_s = {{ int64 $c.cache.maxAgeS }}

[tls]
ca = "/etc/tabadul/ca/ca.pem"
crl = "/etc/tabadul/ca/crl.pem"
cert = "/etc/tabadul/tls/tls.crt"
key = "/etc/tabadul/tls/tls.key"
{{- range $.Values.members }}

[[member]]
code = {{ required "members[].code is required" .code | toJson }}
endpoint = {{ required "members[].endpoint is required" .endpoint | toJson }}
{{- with .identity }}
identity = {{ . | toJson }}
{{- end }}
log_vkey = {{ required "members[].log_vkey is required" .log_vkey | toJson }}
{{- with .witness_vkey }}
witness_vkey = {{ . | toJson }}
{{- end }}
{{- if hasKey . "witness" }}
witness = {{ .witness }}
{{- end }}
{{- end }}
{{- end }}
