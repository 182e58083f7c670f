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

{{/*
The Secret a role's pods take their environment from; .role is scim or
sinks. The chart's own are two: the front end's holds secret.scimTokens,
the workers' does not (they never answer SCIM, and they are the pods that
call out to third parties). Of your own, secret.existingSecret serves both
roles unless sinks.existingSecret gives the workers a narrower one.
*/}}
{{- define "scimrelay.secretName" -}}
{{- $ := .root }}
{{- $shared := $.Values.secret.existingSecret }}
{{- $sinks := $.Values.sinks.existingSecret }}
{{- if and $sinks (not $shared) }}
{{- fail "sinks.existingSecret narrows secret.existingSecret for the sink workers: set secret.existingSecret too (without it the chart already gives the workers a Secret without secret.scimTokens)" }}
{{- end }}
{{- if eq .role "scim" }}
{{- $shared | default (include "scimrelay.fullname" $) }}
{{- else }}
{{- $sinks | default $shared | default (printf "%s-sinks" (include "scimrelay.fullname" $)) }}
{{- end }}
{{- end }}

{{/*
The data of the chart's Secret for a role (.role scim or sinks), one
"NAME: base64" line a variable: SCIMRELAY_ADMIN_TOKEN for scim alone (each
worker generates its own: with the front end's, a worker could mint SCIM
tokens through its admin API), and
secret.webhookSecrets for both, secret.scimTokens for scim alone. Every
slot is checked whatever the role, so that both Secrets refuse alike.
*/}}
{{- define "scimrelay.secretData" -}}
{{- $ := .root }}
{{- $role := .role }}
{{- $env := dict }}
{{- $roles := dict }}
{{- with $.Values.secret.adminToken }}
{{- $_ := set $env "SCIMRELAY_ADMIN_TOKEN" . }}
{{- $_ = set $roles "SCIMRELAY_ADMIN_TOKEN" (list "scim") }}
{{- end }}
{{- range $group := list "scimTokens" "webhookSecrets" }}
{{- range $name, $value := index $.Values.secret $group }}
{{- if not (regexMatch "^[A-Za-z_][A-Za-z0-9_]*$" $name) }}
{{- fail (printf "secret.%s: %q is not an environment variable name" $group $name) }}
{{- end }}
{{- if hasKey $env $name }}
{{- fail (printf "secret.%s: %s is set twice" $group $name) }}
{{- end }}
{{- $_ := set $env $name (toString $value) }}
{{- $_ = set $roles $name (eq $group "scimTokens" | ternary (list "scim") (list "scim" "sinks")) }}
{{- end }}
{{- end }}
{{- range $name, $value := $env }}
{{- if has $role (get $roles $name) }}
{{ $name }}: {{ $value | b64enc | quote }}
{{- end }}
{{- end }}
{{- end }}

{{/*
Refuses a literal secret in config: relay.yaml is a ConfigMap, readable
by whoever may read ConfigMaps (the view role can, Secrets it cannot). A
key that holds a secret must be empty or made of ${VARIABLE} references
alone (see config/env.go), whose values are in a Secret. ${NAME:-default} with a
default is a literal: it is what the relay uses when the variable is
missing, and it is in the ConfigMap. ${NAME:-} and ${NAME:?message} are
references. A header's value may start with one word and a space (its
scheme: "Bearer ${CRM_API_KEY}"), which names no secret: one of the
HTTP authentication schemes receivers use (Bearer, Basic, Token, Bot,
ApiKey, Key, SSWS, Digest), not any word, which could be the secret
itself ("sk_live_... ${X:-}").
*/}}
{{- define "scimrelay.refuseLiteralSecrets" -}}
{{- $cfg := .Values.config | default dict }}
{{- $fields := list }}
{{- $admin := get $cfg "admin" }}
{{- if kindIs "map" $admin }}
{{- $fields = append $fields (dict "key" "config.admin.token" "value" (get $admin "token") "slot" "secret.adminToken (its variable is SCIMRELAY_ADMIN_TOKEN)") }}
{{- end }}
{{- $nats := get $cfg "nats" }}
{{- if kindIs "map" $nats }}
{{- range $k := list "password" "token" }}
{{- $fields = append $fields (dict "key" (printf "config.nats.%s" $k) "value" (get $nats $k) "slot" "secret.webhookSecrets (both roles get it)") }}
{{- end }}
{{- end }}
{{- $tenants := get $cfg "tenants" }}
{{- if kindIs "slice" $tenants }}
{{- range $i, $t := $tenants }}
{{- if kindIs "map" $t }}
{{- $tokens := get $t "tokens" }}
{{- range $j, $token := (kindIs "slice" $tokens | ternary $tokens (list $tokens)) }}
{{- $fields = append $fields (dict "key" (printf "config.tenants[%d].tokens[%d]" $i $j) "value" $token "slot" "secret.scimTokens") }}
{{- end }}
{{- end }}
{{- end }}
{{- end }}
{{- $sinks := get $cfg "sinks" }}
{{- if kindIs "slice" $sinks }}
{{- range $i, $s := $sinks }}
{{- if kindIs "map" $s }}
{{- range $k := list "secret" "previous_secret" }}
{{- $fields = append $fields (dict "key" (printf "config.sinks[%d].%s" $i $k) "value" (get $s $k) "slot" "secret.webhookSecrets") }}
{{- end }}
{{- $fields = append $fields (dict "key" (printf "config.sinks[%d].url" $i) "value" (get $s "url") "slot" "secret.webhookSecrets" "url" true) }}
{{- $headers := get $s "headers" }}
{{- if kindIs "map" $headers }}
{{- range $h, $v := $headers }}
{{- $fields = append $fields (dict "key" (printf "config.sinks[%d].headers.%s" $i $h) "value" $v "slot" "secret.webhookSecrets" "scheme" true) }}
{{- end }}
{{- end }}
{{- end }}
{{- end }}
{{- end }}
{{- $fields = append $fields (dict "key" "nats.url" "value" .Values.nats.url "slot" "secret.webhookSecrets (both roles get it)" "url" true) }}
{{- $ref := `\$\{[A-Za-z_][A-Za-z0-9_]*(:-|:\?[^}]*)?\}` }}
{{- range $f := $fields }}
{{- if and $f.url (not (kindIs "invalid" $f.value)) }}
{{- /* A URL is no secret, but its user information and query values
are: the relay redacts them wherever it shows one. Each may be a
${VARIABLE}, or the whole URL. */}}
{{- $rest := regexReplaceAll $ref (toString $f.value) "" }}
{{- /* A literal password, or a literal user alone (a NATS token);
a literal user before a ${VARIABLE} password is no secret. */}}
{{- if or (regexMatch `://[^/?#@]*:[^/?#@]+@` $rest) (regexMatch `://[^/?#:@]+@` $rest) (regexMatch `[?&][^=&#]+=[^&#]+` $rest) }}
{{- fail (printf "%s holds a credential (a user or password before @, or a query value) that the chart would write in plain text into its ConfigMap: write that part, or the whole URL, as a ${VARIABLE} and give the variable its value in %s or in your Secret (secret.existingSecret)" $f.key $f.slot) }}
{{- end }}
{{- else if not (kindIs "invalid" $f.value) }}
{{- $pattern := printf "^(%s)+$" $ref }}
{{- $scheme := "" }}
{{- if $f.scheme }}
{{- $pattern = printf "^((?i:bearer|basic|token|bot|apikey|key|ssws|digest) )?(%s)+$" $ref }}
{{- $scheme = ` (a header's value may start with its scheme: "Bearer ${VARIABLE}")` }}
{{- end }}
{{- $value := toString $f.value }}
{{- if and $value (not (regexMatch $pattern $value)) }}
{{- fail (printf "%s holds a literal secret, which the chart would write in plain text into its ConfigMap: write a ${VARIABLE} there%s and give the variable its value in %s or in your Secret (secret.existingSecret); a ${VARIABLE:-default} with a default is a literal too (${VARIABLE:-} may stay empty)" $f.key $scheme $f.slot) }}
{{- end }}
{{- end }}
{{- end }}
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

{{- define "scimrelay.natsTLSDir" -}}/etc/scimrelay-nats-tls{{- end }}

{{/*
A Secret each role mounts for NATS: <role>.<own>.name, else
nats.<shared>.name. relay.yaml is one file for both roles, so either both
have a Secret (mounted at the same path) or neither has. .what names it in
the refusal.
*/}}
{{- define "scimrelay.natsRoleSecret" -}}
{{- $ := .root }}
{{- $shared := (index $.Values.nats .shared | default dict).name | default "" }}
{{- $scim := (index $.Values.scim .own | default dict).name | default $shared }}
{{- $sinks := (index $.Values.sinks .own | default dict).name | default $shared }}
{{- if and (or $scim $sinks) (not (and $scim $sinks)) }}
{{- fail (printf "%s for one role only: both roles read one relay.yaml, so set nats.%s.name (or scim.%s.name and sinks.%s.name)" .what .shared .own .own) }}
{{- end }}
{{- if eq .role "scim" }}{{ $scim }}{{ else }}{{ $sinks }}{{ end }}
{{- end }}

{{/* The Secret with a role's NATS credentials (.role: scim or sinks). */}}
{{- define "scimrelay.natsCredentialsSecret" -}}
{{- include "scimrelay.natsRoleSecret" (dict "root" .root "role" .role "own" "natsCredentialsSecret" "shared" "credentialsSecret" "what" "NATS credentials") }}
{{- end }}

{{/* The Secret with a role's NATS TLS files (.role: scim or sinks). */}}
{{- define "scimrelay.natsTLSSecret" -}}
{{- include "scimrelay.natsRoleSecret" (dict "root" .root "role" .role "own" "natsTLSSecret" "shared" "tlsSecret" "what" "NATS TLS files") }}
{{- end }}

{{/*
relay.yaml: .Values.config with the keys the chart owns set from the chart's
own values, so that ports, volume and NATS agree with the manifests.
*/}}
{{- define "scimrelay.relayYAML" -}}
{{- include "scimrelay.refuseLiteralSecrets" . }}
{{- $cfg := deepCopy (.Values.config | default dict) }}
{{- $listenerTLS := list (get $cfg "tls") }}
{{- $admin := get $cfg "admin" }}
{{- if kindIs "map" $admin }}{{ $listenerTLS = append $listenerTLS (get $admin "tls") }}{{ end }}
{{- $tlsOn := false }}
{{- range $listenerTLS }}{{ if and (kindIs "map" .) (or .cert_file .key_file) }}{{ $tlsOn = true }}{{ end }}{{ end }}
{{- if $tlsOn }}
{{- fail "config.tls and config.admin.tls are not for this chart: it mounts no certificate files, and its probes speak HTTP. Terminate TLS for the SCIM listener at your ingress, and keep the admin port inside the cluster (networkPolicy)" }}
{{- end }}
{{- $_ := set $cfg "listen" (printf "0.0.0.0:%d" (int .Values.ports.scim)) }}
{{- $_ = set $cfg "admin_listen" (printf "0.0.0.0:%d" (int .Values.ports.admin)) }}
{{- $_ = set $cfg "data_dir" (include "scimrelay.dataDir" .) }}
{{- $nats := get $cfg "nats" | default dict }}
{{- if or (get $nats "credentials") (get $nats "nkey") }}
{{- fail "config.nats.credentials and config.nats.nkey name files the chart does not mount: give the credentials file in a Secret named in nats.credentialsSecret.name instead, and the chart sets nats.credentials" }}
{{- end }}
{{- if has .Values.nats.credentialsSecret.key (list "." "..") }}
{{- fail (printf "nats.credentialsSecret.key %q is not a key a Secret can have" .Values.nats.credentialsSecret.key) }}
{{- end }}
{{- $_ = set $nats "url" (required "nats.url must name the NATS cluster's client URL(s)" .Values.nats.url) }}
{{- if include "scimrelay.natsCredentialsSecret" (dict "root" . "role" "scim") }}
{{- $_ = set $nats "credentials" (printf "%s/%s" (include "scimrelay.natsCredsDir" .) .Values.nats.credentialsSecret.key) }}
{{- end }}
{{- $natsTLS := get $nats "tls" }}
{{- if and (kindIs "map" $natsTLS) (or $natsTLS.ca_file $natsTLS.cert_file $natsTLS.key_file) }}
{{- fail "config.nats.tls names files the chart does not mount: give the CA and client certificate in a Secret named in nats.tlsSecret.name instead, and the chart sets nats.tls" }}
{{- end }}
{{- if include "scimrelay.natsTLSSecret" (dict "root" . "role" "scim") }}
{{- $t := .Values.nats.tlsSecret | default dict }}
{{- $dir := include "scimrelay.natsTLSDir" . }}
{{- $tls := dict }}
{{- with $t.caKey }}{{ $_ = set $tls "ca_file" (printf "%s/%s" $dir .) }}{{ end }}
{{- if and $t.certKey $t.keyKey }}
{{- $_ = set $tls "cert_file" (printf "%s/%s" $dir $t.certKey) }}
{{- $_ = set $tls "key_file" (printf "%s/%s" $dir $t.keyKey) }}
{{- else if or $t.certKey $t.keyKey }}
{{- fail "nats.tlsSecret.certKey and keyKey go together: both for a client certificate, or both empty for none" }}
{{- end }}
{{- if not $tls }}
{{- fail "the NATS TLS Secret is named but none of its keys: set nats.tlsSecret.caKey, or certKey and keyKey" }}
{{- end }}
{{- $_ = set $nats "tls" $tls }}
{{- end }}
{{- $_ = set $cfg "nats" $nats }}
{{- toYaml $cfg }}
{{- end }}

{{/* The pod spec both roles share; .role is scim or sinks. */}}
{{- define "scimrelay.podSpec" -}}
{{- $ := .root }}
{{- $values := index $.Values .role -}}
{{- $natsCredentials := include "scimrelay.natsCredentialsSecret" . -}}
{{- $natsTLS := include "scimrelay.natsTLSSecret" . -}}
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
    {{- if and (eq .role "scim") $values.maintenance }}
    # scim.maintenance: the relay is stopped; restore or compact run
    # beside this process through kubectl exec. No ports, so the Services
    # send nothing to the pod (an ingress answers 503, and Entra retries),
    # and no probes.
    args: ["maintenance"]
    {{- else }}
    args: ["serve", "--role", {{ .role | quote }}, "--config", "{{ include "scimrelay.configDir" $ }}/relay.yaml"]
    {{- end }}
    envFrom:
      - secretRef:
          name: {{ include "scimrelay.secretName" . }}
    {{- if ne .role "scim" }}
    env:
      # Each worker generates its own admin token: with the front end's,
      # a worker could mint SCIM tokens through the front end's admin API.
      # env wins over envFrom, so a SCIMRELAY_ADMIN_TOKEN in a Secret of
      # yours (secret.existingSecret, which the workers share unless
      # sinks.existingSecret is set) does not reach them.
      - name: SCIMRELAY_ADMIN_TOKEN
        value: ""
    {{- end }}
    {{- if not (and (eq .role "scim") $values.maintenance) }}
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
    {{- end }}
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
      {{- if $natsTLS }}
      - name: nats-tls
        mountPath: {{ include "scimrelay.natsTLSDir" $ }}
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
  {{- with $natsTLS }}
  # The CA that signed NATS's certificate and this role's client certificate.
  - name: nats-tls
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

{{/*
Annotations that roll the pods when relay.yaml or the role's Secret
change: a new scim token rolls the front end alone.
*/}}
{{- define "scimrelay.podAnnotations" -}}
{{- $ := .root -}}
checksum/config: {{ include (print $.Template.BasePath "/configmap.yaml") $ | sha256sum }}
{{- if not $.Values.secret.existingSecret }}
checksum/secret: {{ include "scimrelay.secretData" . | sha256sum }}
{{- end }}
{{- with (index $.Values .role).podAnnotations }}
{{ toYaml . }}
{{- end }}
{{- end }}
