{{/* Chart name, at most 63 characters. */}}
{{- define "scimrelay.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
Fully qualified name. Resource names add a suffix of up to 16 characters
("-scim-headless"), so it is cut at 47 to keep them valid DNS labels.
*/}}
{{- define "scimrelay.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 47 | trimSuffix "-" }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 47 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 47 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{- define "scimrelay.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Labels that identify the release's pods, without the role. */}}
{{- define "scimrelay.selectorLabels" -}}
app.kubernetes.io/name: {{ include "scimrelay.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "scimrelay.labels" -}}
helm.sh/chart: {{ include "scimrelay.chart" . }}
{{ include "scimrelay.selectorLabels" . }}
app.kubernetes.io/version: {{ include "scimrelay.tag" . | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end }}

{{/* The image tag: image.tag, else the chart's appVersion; never latest. */}}
{{- define "scimrelay.tag" -}}
{{- $tag := .Values.image.tag | default .Chart.AppVersion | toString }}
{{- if or (eq $tag "latest") (eq $tag "") }}
{{- fail "image.tag must name a scimrelay release (it defaults to the chart's appVersion); \"latest\" is refused so that every pod runs the same build" }}
{{- end }}
{{- $tag }}
{{- end }}

{{- define "scimrelay.image" -}}
{{- $tag := include "scimrelay.tag" . }}
{{- if .Values.image.digest }}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest }}
{{- else }}
{{- printf "%s:%s" .Values.image.repository $tag }}
{{- end }}
{{- end }}

{{- define "scimrelay.secretName" -}}
{{- default (include "scimrelay.fullname" .) .Values.secret.existingSecret }}
{{- end }}

{{- define "scimrelay.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "scimrelay.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{/* Where the relay finds its files inside the container. */}}
{{- define "scimrelay.configDir" -}}/etc/scimrelay{{- end }}
{{- define "scimrelay.dataDir" -}}/var/lib/scimrelay{{- end }}
{{- define "scimrelay.natsCredsDir" -}}/etc/scimrelay-nats{{- end }}

{{/*
The Secret with a role's NATS credentials: <role>.natsCredentialsSecret.name,
else nats.credentialsSecret.name. relay.yaml is one file for both roles, so
either both have a Secret (mounted at the same path) or neither has.
*/}}
{{- define "scimrelay.natsCredentialsSecret" -}}
{{- $ := .root }}
{{- $scim := $.Values.scim.natsCredentialsSecret.name | default $.Values.nats.credentialsSecret.name }}
{{- $sinks := $.Values.sinks.natsCredentialsSecret.name | default $.Values.nats.credentialsSecret.name }}
{{- if and (or $scim $sinks) (not (and $scim $sinks)) }}
{{- fail "NATS credentials for one role only: both roles read one relay.yaml, so set nats.credentialsSecret.name (or scim.natsCredentialsSecret.name and sinks.natsCredentialsSecret.name)" }}
{{- end }}
{{- if eq .role "scim" }}{{ $scim }}{{ else }}{{ $sinks }}{{ end }}
{{- end }}

{{/*
relay.yaml: .Values.config with the keys the chart owns set from the chart's
own values, so that ports, volume and NATS agree with the manifests.
*/}}
{{- define "scimrelay.relayYAML" -}}
{{- $cfg := deepCopy (.Values.config | default dict) }}
{{- $_ := set $cfg "listen" (printf "0.0.0.0:%d" (int .Values.ports.scim)) }}
{{- $_ = set $cfg "admin_listen" (printf "0.0.0.0:%d" (int .Values.ports.admin)) }}
{{- $_ = set $cfg "data_dir" (include "scimrelay.dataDir" .) }}
{{- $nats := get $cfg "nats" | default dict }}
{{- $_ = set $nats "url" (required "nats.url must name the NATS cluster's client URL(s)" .Values.nats.url) }}
{{- if include "scimrelay.natsCredentialsSecret" (dict "root" . "role" "scim") }}
{{- $_ = set $nats "credentials" (printf "%s/%s" (include "scimrelay.natsCredsDir" .) .Values.nats.credentialsSecret.key) }}
{{- end }}
{{- $_ = set $cfg "nats" $nats }}
{{- toYaml $cfg }}
{{- end }}

{{/* The pod spec both roles share; .role is scim or sinks. */}}
{{- define "scimrelay.podSpec" -}}
{{- $ := .root }}
{{- $values := index $.Values .role -}}
{{- $natsCredentials := include "scimrelay.natsCredentialsSecret" . -}}
serviceAccountName: {{ include "scimrelay.serviceAccountName" $ }}
# The relay never talks to the Kubernetes API.
automountServiceAccountToken: false
enableServiceLinks: false
terminationGracePeriodSeconds: {{ $.Values.terminationGracePeriodSeconds }}
securityContext:
  {{- toYaml $.Values.podSecurityContext | nindent 2 }}
{{- with $.Values.imagePullSecrets }}
imagePullSecrets:
  {{- toYaml . | nindent 2 }}
{{- end }}
containers:
  - name: scimrelay
    image: {{ include "scimrelay.image" $ | quote }}
    imagePullPolicy: {{ $.Values.image.pullPolicy }}
    args: ["serve", "--role", {{ .role | quote }}, "--config", "{{ include "scimrelay.configDir" $ }}/relay.yaml"]
    envFrom:
      - secretRef:
          name: {{ include "scimrelay.secretName" $ }}
    ports:
      {{- if eq .role "scim" }}
      - name: scim
        containerPort: {{ $.Values.ports.scim }}
        protocol: TCP
      {{- end }}
      - name: admin
        containerPort: {{ $.Values.ports.admin }}
        protocol: TCP
    startupProbe:
      httpGet: {path: /healthz, port: admin}
      {{- toYaml $.Values.probes.startup | nindent 6 }}
    livenessProbe:
      httpGet: {path: /healthz, port: admin}
      {{- toYaml $.Values.probes.liveness | nindent 6 }}
    readinessProbe:
      httpGet: {path: /readyz, port: admin}
      {{- toYaml $.Values.probes.readiness | nindent 6 }}
    resources:
      {{- toYaml $values.resources | nindent 6 }}
    securityContext:
      {{- toYaml $.Values.securityContext | nindent 6 }}
    volumeMounts:
      - name: data
        mountPath: {{ include "scimrelay.dataDir" $ }}
      - name: config
        mountPath: {{ include "scimrelay.configDir" $ }}
        readOnly: true
      {{- if $natsCredentials }}
      - name: nats-credentials
        mountPath: {{ include "scimrelay.natsCredsDir" $ }}
        readOnly: true
      {{- end }}
volumes:
  - name: config
    configMap:
      name: {{ include "scimrelay.fullname" $ }}
  {{- if ne .role "scim" }}
  # Writable but not kept: a worker holds no state (its admin token, if
  # generated, lives as long as the pod).
  - name: data
    emptyDir: {}
  {{- end }}
  {{- with $natsCredentials }}
  # This role's NATS user: the sink workers may have a narrower one than the
  # front end (README, "Who can reach what").
  - name: nats-credentials
    secret:
      secretName: {{ . }}
      defaultMode: 0440
  {{- end }}
{{- with $values.nodeSelector }}
nodeSelector:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with $values.tolerations }}
tolerations:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with $values.affinity }}
affinity:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- end }}

{{/* Annotations that roll the pods when relay.yaml or the Secret change. */}}
{{- define "scimrelay.podAnnotations" -}}
{{- $ := .root -}}
checksum/config: {{ include (print $.Template.BasePath "/configmap.yaml") $ | sha256sum }}
{{- if not $.Values.secret.existingSecret }}
checksum/secret: {{ include (print $.Template.BasePath "/secret.yaml") $ | sha256sum }}
{{- end }}
{{- with (index $.Values .role).podAnnotations }}
{{ toYaml . }}
{{- end }}
{{- end }}
