{{/*
Names and labels. `fullname` is `<release>-<chart>` (or the release name alone when it already
starts with the chart name), at most 63 characters, as in the gitlab-runner chart.
*/}}
{{- define "oar.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "oar.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- $name := default .Chart.Name .Values.nameOverride -}}
{{- if hasPrefix $name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{- define "oar.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* The selector: stable across upgrades (a Deployment's selector cannot change). */}}
{{- define "oar.selectorLabels" -}}
app.kubernetes.io/name: {{ include "oar.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{/*
Every object's labels: the recommended app.kubernetes.io set, plus the gitlab-runner chart's
`app`/`release` so that selectors written for that chart keep matching.
*/}}
{{- define "oar.labels" -}}
{{ include "oar.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ include "oar.chart" . }}
app: {{ include "oar.fullname" . }}
release: {{ .Release.Name }}
{{- end -}}

{{/* The namespace job pods run in (the Role lives there). */}}
{{- define "oar.jobNamespace" -}}
{{- default .Release.Namespace .Values.runners.jobNamespace -}}
{{- end -}}

{{/* The Role's (or ClusterRole's) name and its binding's. */}}
{{- define "oar.rbacName" -}}
{{- if .Values.rbac.clusterWideAccess -}}
{{- printf "%s-%s" .Release.Namespace (include "oar.fullname" .) -}}
{{- else -}}
{{- include "oar.fullname" . -}}
{{- end -}}
{{- end -}}

{{/* The ServiceAccount the manager runs as. */}}
{{- define "oar.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (include "oar.fullname" .) .Values.serviceAccount.name -}}
{{- else -}}
{{- default "default" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{/* The Secret holding runner-token / runner-registration-token. */}}
{{- define "oar.secretName" -}}
{{- if .Values.runners.secret -}}
{{- tpl .Values.runners.secret . -}}
{{- else -}}
{{- include "oar.fullname" . -}}
{{- end -}}
{{- end -}}

{{/* Whether the chart renders the token Secret itself. */}}
{{- define "oar.createSecret" -}}
{{- if or .Values.runnerToken .Values.runnerRegistrationToken -}}true{{- end -}}
{{- end -}}

{{/* `registry/image:tag` of an image map; an empty registry drops the slash. */}}
{{- define "oar.imageRef" -}}
{{- $img := index . 0 -}}
{{- $ctx := index . 1 -}}
{{- $tag := default (printf "v%s" $ctx.Chart.AppVersion) $img.tag -}}
{{- if $img.registry -}}
{{- printf "%s/%s:%s" $img.registry $img.image $tag -}}
{{- else -}}
{{- printf "%s:%s" $img.image $tag -}}
{{- end -}}
{{- end -}}

{{- define "oar.image" -}}
{{- include "oar.imageRef" (list .Values.image .) -}}
{{- end -}}

{{- define "oar.helperImage" -}}
{{- include "oar.imageRef" (list .Values.helperImage .) -}}
{{- end -}}

{{/*
The RBAC rules of the manager when `rbac.rules` is empty: exactly what oar-kube uses
(`oar_kube::rbac::RULES`; crates/oar-kube/tests/chart.rs proves the two are equal). Unlike
the gitlab-runner chart there is no wildcard fallback.
*/}}
{{- define "oar.defaultRules" -}}
- apiGroups: [""]
  resources: ["pods"]
  verbs: ["create", "get", "list", "watch", "delete"]
- apiGroups: [""]
  resources: ["secrets"]
  verbs: ["create", "get"]
{{- end -}}

{{/* The rules rendered into the Role: `rbac.rules` when set, else the default list. */}}
{{- define "oar.rules" -}}
{{- if .Values.rbac.rules -}}
{{- range .Values.rbac.rules }}
- apiGroups: {{ default (list "") .apiGroups | toJson }}
  resources: {{ .resources | toJson }}
  verbs: {{ .verbs | toJson }}
  {{- with .resourceNames }}
  resourceNames: {{ toJson . }}
  {{- end }}
{{- end }}
{{- else -}}
{{ include "oar.defaultRules" . }}
{{- end -}}
{{- end -}}

{{/* Checks that the schema cannot express; each message names the key. */}}
{{- define "oar.validate" -}}
{{- if not (or .Values.runnerToken .Values.runnerRegistrationToken .Values.runners.secret) -}}
{{- fail "runnerToken: set runnerToken (a glrt- runner authentication token), runnerRegistrationToken (legacy) or runners.secret (an existing Secret with the key runner-token or runner-registration-token)" -}}
{{- end -}}
{{- if .Values.runnerToken -}}
{{- range $key := list "tags" "locked" "runUntagged" "protected" "maximumTimeout" -}}
{{- if hasKey $.Values.runners $key -}}
{{- fail (printf "runners.%s: only a legacy runnerRegistrationToken registers with this setting; with runnerToken (glrt-) it is set on the runner in GitLab" $key) -}}
{{- end -}}
{{- end -}}
{{- end -}}
{{- if and .Values.metrics.serviceMonitor.enabled (not (and .Values.metrics.enabled .Values.service.enabled)) -}}
{{- fail "metrics.serviceMonitor.enabled: needs metrics.enabled and service.enabled (the ServiceMonitor scrapes the metrics Service)" -}}
{{- end -}}
{{- if and .Values.metrics.podMonitor.enabled (not .Values.metrics.enabled) -}}
{{- fail "metrics.podMonitor.enabled: needs metrics.enabled" -}}
{{- end -}}
{{- if and .Values.service.enabled (not .Values.metrics.enabled) -}}
{{- fail "service.enabled: the Service only exposes the metrics port; it needs metrics.enabled" -}}
{{- end -}}
{{- if and .Values.podDisruptionBudget.enabled (hasKey .Values.podDisruptionBudget "minAvailable") (hasKey .Values.podDisruptionBudget "maxUnavailable") -}}
{{- fail "podDisruptionBudget: set minAvailable or maxUnavailable, not both" -}}
{{- end -}}
{{- end -}}

{{/* Volume mounts of both containers (the register init container also mounts /secrets and /configmaps). */}}
{{- define "oar.volumeMounts" -}}
- name: config
  mountPath: /etc/oar
- name: tmp
  mountPath: /tmp
{{- if .Values.certsSecretName }}
- name: custom-certs
  mountPath: /certs
  readOnly: true
{{- end }}
{{- with .Values.volumeMounts }}
{{ toYaml . }}
{{- end }}
{{- end -}}

{{/* Environment shared by both containers: logging and the user's envVars. No secrets. */}}
{{- define "oar.env" -}}
- name: LOG_LEVEL
  value: {{ .Values.logLevel | quote }}
{{- if .Values.logFormat }}
- name: LOG_FORMAT
  value: {{ .Values.logFormat | quote }}
{{- end }}
{{- with .Values.envVars }}
{{ toYaml . }}
{{- end }}
{{- end -}}

{{/*
The chart's labels with extra ones (`list $ctx $extra`), as one map so no key repeats: the
extra labels win over the chart's, except the selector labels, which nothing overrides.
*/}}
{{- define "oar.labelsWith" -}}
{{- $ctx := index . 0 -}}
{{- $extra := index . 1 | default dict -}}
{{- $labels := merge (include "oar.selectorLabels" $ctx | fromYaml) (deepCopy $extra) (include "oar.labels" $ctx | fromYaml) -}}
{{- toYaml $labels -}}
{{- end -}}

{{/* The namespaces the manager creates job pods in: the job namespace and those of the
identity rules. */}}
{{- define "oar.podNamespaces" -}}
{{- $out := list (include "oar.jobNamespace" .) -}}
{{- range .Values.jobIdentity.rules -}}
{{- with .namespace -}}
{{- $out = append $out . -}}
{{- end -}}
{{- end -}}
{{- $out | uniq | toJson -}}
{{- end -}}

{{/* A map of environment variables as a TOML array of "KEY=VALUE" strings, sorted. */}}
{{- define "oar.envList" -}}
{{- $env := . -}}
{{- $items := list -}}
{{- range $k := keys $env | sortAlpha -}}
{{- $items = append $items (printf "%s=%s" $k (toString (get $env $k))) -}}
{{- end -}}
{{- $items | toJson -}}
{{- end -}}

{{/* A projected_token table's keys. */}}
{{- define "oar.projectedTokenToml" -}}
audience = {{ .audience | toJson }}
path = {{ .path | toJson }}
{{- with .expirationSeconds }}
expiration_seconds = {{ int . }}
{{- end }}
{{- with .environment }}
environment = {{ include "oar.envList" . }}
{{- end }}
{{- end -}}

{{/* jobIdentity as [runners.kubernetes] TOML, appended to runners.config. */}}
{{- define "oar.identityToml" -}}
{{- $ji := .Values.jobIdentity -}}
{{- range $ji.rules }}
[[runners.kubernetes.identity]]
  service_account = {{ .serviceAccount | toJson }}
  projects = {{ .projects | toJson }}
  {{- with .refs }}
  refs = {{ toJson . }}
  {{- end }}
  {{- with .refType }}
  ref_type = {{ toJson . }}
  {{- end }}
  {{- if .protectedRef }}
  protected_ref = true
  {{- end }}
  {{- with .environments }}
  environments = {{ toJson . }}
  {{- end }}
  {{- with .namespace }}
  namespace = {{ toJson . }}
  {{- end }}
  {{- with .requireIdToken }}
  require_id_token = {{ toJson . }}
  {{- end }}
  {{- with .environment }}
  environment = {{ include "oar.envList" . }}
  {{- end }}
  {{- with .projectedToken }}
  [runners.kubernetes.identity.projected_token]
    {{- include "oar.projectedTokenToml" . | nindent 4 }}
  {{- end }}
{{- end }}
{{- with $ji.idToken }}
[runners.kubernetes.id_token]
  {{- with .audience }}
  audience = {{ toJson . }}
  {{- end }}
  {{- with .issuer }}
  issuer = {{ toJson . }}
  {{- end }}
  {{- with .jwksUrl }}
  jwks_url = {{ toJson . }}
  {{- end }}
{{- end }}
{{- with $ji.projectedToken }}
[runners.kubernetes.projected_token]
  {{- include "oar.projectedTokenToml" . | nindent 2 }}
{{- end }}
{{- end -}}
