{{/* Chart name, truncated to 63 characters (the DNS label limit). */}}
{{- define "kubehands.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Fully qualified app name; leaves room for the longest suffix ("-operator-scanning", 18). */}}
{{- define "kubehands.fullname" -}}
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

{{/* Chart name and version, for the helm.sh/chart label. */}}
{{- define "kubehands.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Common labels. */}}
{{- define "kubehands.labels" -}}
helm.sh/chart: {{ include "kubehands.chart" . }}
{{ include "kubehands.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: kubehands
{{- with .Values.commonLabels }}
{{ toYaml . }}
{{- end }}
{{- end }}

{{/* Selector labels: immutable, so only name and instance. */}}
{{- define "kubehands.selectorLabels" -}}
app.kubernetes.io/name: {{ include "kubehands.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{/* Labels and selector labels of one component: (dict "ctx" $ "component" "gateway"). */}}
{{- define "kubehands.componentLabels" -}}
{{ include "kubehands.labels" .ctx }}
app.kubernetes.io/component: {{ .component }}
{{- end }}
{{- define "kubehands.componentSelectorLabels" -}}
{{ include "kubehands.selectorLabels" .ctx }}
app.kubernetes.io/component: {{ .component }}
{{- end }}

{{/* ServiceAccount name of a component: (dict "ctx" $ "component" "operator"). */}}
{{- define "kubehands.serviceAccountName" -}}
{{- $values := index .ctx.Values (ternary "api" .component (eq .component "gateway")) }}
{{- default (printf "%s-%s" (include "kubehands.fullname" .ctx) .component) $values.serviceAccount.name }}
{{- end }}

{{/* The kubehands image; fails the render without a tag. */}}
{{- define "kubehands.image" -}}
{{- $tag := required "image.tag (or the chart's appVersion) is required" (default .Chart.AppVersion .Values.image.tag) }}
{{- printf "%s:%s" (required "image.repository is required" .Values.image.repository) $tag }}
{{- end }}

{{/* The namespace sandboxes run in. */}}
{{- define "kubehands.sandboxNamespace" -}}
{{- default (printf "%s-sandboxes" (include "kubehands.fullname" .)) .Values.sandbox.namespace }}
{{- end }}

{{/* Every namespace the operator reconciles in (namespaced mode), sandbox namespace first, no duplicates. */}}
{{- define "kubehands.operatorNamespaces" -}}
{{- $all := list (include "kubehands.sandboxNamespace" .) }}
{{- range .Values.operator.watchNamespaces }}{{ $all = append $all . }}{{ end }}
{{- join "," (uniq $all) }}
{{- end }}

{{/* Gateway (control API) Service name, and the Service serving sandbox URLs. */}}
{{- define "kubehands.gatewayServiceName" -}}
{{- printf "%s-gateway" (include "kubehands.fullname" .) }}
{{- end }}
{{- define "kubehands.routerServiceName" -}}
{{- if .Values.router.enabled }}{{ printf "%s-router" (include "kubehands.fullname" .) }}{{ else }}{{ include "kubehands.gatewayServiceName" . }}{{ end }}
{{- end }}
{{- define "kubehands.routerServicePort" -}}
{{- if .Values.router.enabled }}{{ .Values.router.service.port }}{{ else }}{{ .Values.api.service.port }}{{ end }}
{{- end }}

{{/* Path mode with a separate router, behind the chart's Ingress or HTTPRoute: one host serves both, so the
     paths of the control API go to the gateway (the router serves no control API) and the rest of the host, the
     sandbox URLs /<runtime id>/... (runtime ids are kh-<12 characters>), to the router. Matched by path segment
     (Ingress Prefix, HTTPRoute PathPrefix: "/start" matches /start and /start/..., never /kh-...), the only kind
     of match every controller offers; tests/unit/test_chart_routing.py checks that this list covers every route
     of the gateway's app and no sandbox path. */}}
{{- define "kubehands.controlApiPaths" -}}
{{- list "/start" "/stop" "/pause" "/resume" "/list" "/runtime" "/sessions" "/registry_prefix" "/image_exists"
      "/api/warm-runtime-configs" "/health" "/openapi.json" "/docs" "/redoc" | toJson }}
{{- end }}

{{/* Public base URL of sandbox URLs in path mode. */}}
{{- define "kubehands.publicUrl" -}}
{{- if .Values.routing.publicUrl }}
{{- .Values.routing.publicUrl }}
{{- else if and .Values.ingress.enabled .Values.ingress.host }}
{{- printf "%s://%s" (ternary "https" "http" (ne .Values.ingress.tlsSecretName "")) .Values.ingress.host }}
{{- else if and .Values.httpRoute.enabled .Values.httpRoute.hostname }}
{{- printf "%s://%s" (ternary "https" "http" .Values.httpRoute.https) .Values.httpRoute.hostname }}
{{- else }}
{{- printf "http://%s.%s.svc:%v" (include "kubehands.routerServiceName" .) .Release.Namespace (include "kubehands.routerServicePort" .) }}
{{- end }}
{{- end }}

{{/* Where the runtime API is reached from outside, for NOTES.txt. */}}
{{- define "kubehands.apiUrl" -}}
{{- if and .Values.ingress.enabled .Values.ingress.host }}
{{- printf "%s://%s" (ternary "https" "http" (ne .Values.ingress.tlsSecretName "")) .Values.ingress.host }}
{{- else if and .Values.httpRoute.enabled .Values.httpRoute.hostname }}
{{- printf "%s://%s" (ternary "https" "http" .Values.httpRoute.https) .Values.httpRoute.hostname }}
{{- else }}
{{- printf "http://%s.%s.svc:%v" (include "kubehands.gatewayServiceName" .) .Release.Namespace .Values.api.service.port }}
{{- end }}
{{- end }}

{{/* Sandbox settings shared by the operator and the gateway, as env entries. */}}
{{- define "kubehands.sharedSandboxEnv" -}}
- name: KUBEHANDS_BASE_RESOURCES
  value: {{ .Values.sandbox.baseResources | toJson | quote }}
{{- /* Runtime classes: the gateway refuses an unmapped or missing class at /start (requireRuntimeClass),
       the operator maps the class to a RuntimeClass; both must see the same settings. */}}
{{- $map := .Values.sandbox.runtimeClassMap | default dict }}
{{- with .Values.sandbox.defaultRuntimeClass }}
{{- if not (hasKey $map .) }}
{{- fail (printf "sandbox.defaultRuntimeClass %q is not a key of sandbox.runtimeClassMap" .) }}
{{- end }}
{{- end }}
- name: KUBEHANDS_RUNTIME_CLASS_MAP
  value: {{ $map | toJson | quote }}
{{- with .Values.sandbox.defaultRuntimeClass }}
- name: KUBEHANDS_DEFAULT_RUNTIME_CLASS
  value: {{ . | quote }}
{{- end }}
- name: KUBEHANDS_REQUIRE_RUNTIME_CLASS
  value: {{ .Values.sandbox.requireRuntimeClass | default false | quote }}
{{- end }}

{{/* The gateway's routing settings: they give the URL variables of every /start's spec. */}}
{{- define "kubehands.routingEnv" -}}
- name: KUBEHANDS_ROUTING_MODE
  value: {{ .Values.routing.mode | quote }}
{{- if eq .Values.routing.mode "subdomain" }}
- name: KUBEHANDS_DOMAIN
  value: {{ required "routing.domain is required in subdomain mode" .Values.routing.domain | quote }}
- name: KUBEHANDS_SUBDOMAIN_SCHEME
  value: {{ .Values.routing.subdomainScheme | quote }}
{{- else }}
- name: KUBEHANDS_PUBLIC_URL
  value: {{ include "kubehands.publicUrl" . | quote }}
{{- end }}
{{- end }}

{{/* The gateway's other settings that shape every /start's Sandbox spec. */}}
{{- define "kubehands.sandboxShapeEnv" -}}
- name: KUBEHANDS_RESOURCE_FACTORS
  value: {{ .Values.sandbox.resourceFactors | toJson | quote }}
- name: KUBEHANDS_WORKSPACE_SIZE
  value: {{ .Values.sandbox.workspace.size | quote }}
- name: KUBEHANDS_WORKSPACE_MOUNT_PATH
  value: {{ .Values.sandbox.workspace.mountPath | quote }}
{{- with .Values.sandbox.workspace.storageClassName }}
- name: KUBEHANDS_WORKSPACE_STORAGE_CLASS
  value: {{ . | quote }}
{{- end }}
{{- with .Values.sandbox.imagePullPolicy }}
- name: KUBEHANDS_IMAGE_PULL_POLICY
  value: {{ . | quote }}
{{- end }}
{{- end }}

{{/* Gateway/router environment (kubehands.api.settings.Settings). */}}
{{- define "kubehands.gatewayEnv" -}}
- name: KUBEHANDS_NAMESPACE
  value: {{ include "kubehands.sandboxNamespace" . | quote }}
- name: KUBEHANDS_KEYS_NAMESPACE
  value: {{ .Release.Namespace | quote }}
{{ include "kubehands.routingEnv" . }}
{{ include "kubehands.sharedSandboxEnv" . }}
{{ include "kubehands.sandboxShapeEnv" . }}
- name: KUBEHANDS_DEFAULT_MAX_RUNNING
  value: {{ .Values.api.defaultMaxRunning | quote }}
- name: KUBEHANDS_DEFAULT_MAX_LIFETIME_SECONDS
  value: {{ .Values.sandbox.maxLifetimeSeconds | default 0 | quote }}
- name: KUBEHANDS_REGISTRY_PREFIX
  value: {{ .Values.api.registryPrefix | quote }}
- name: KUBEHANDS_ASSUME_IMAGES_EXIST
  value: {{ .Values.api.assumeImagesExist | quote }}
- name: KUBEHANDS_POOL_INIT_TIMEOUT_SECONDS
  value: {{ .Values.api.poolInitTimeoutSeconds | quote }}
{{- end }}

{{/* /tmp as an emptyDir: the root filesystem is read-only. */}}
{{- define "kubehands.tmpVolume" -}}
- name: tmp
  emptyDir:
    medium: Memory
    sizeLimit: 64Mi
{{- end }}
{{- define "kubehands.tmpVolumeMount" -}}
- name: tmp
  mountPath: /tmp
{{- end }}

{{/* Operator environment (kubehands.operator.config.OperatorConfig). */}}
{{- define "kubehands.operatorEnv" -}}
- name: KUBEHANDS_NAMESPACES
  value: {{ ternary "" (include "kubehands.operatorNamespaces" .) .Values.operator.clusterWide | quote }}
{{ include "kubehands.sharedSandboxEnv" . }}
- name: KUBEHANDS_IDLE_TIMEOUT_SECONDS
  value: {{ .Values.sandbox.idleTimeoutSeconds | quote }}
- name: KUBEHANDS_START_TIMEOUT_SECONDS
  value: {{ .Values.sandbox.startTimeoutSeconds | quote }}
- name: KUBEHANDS_PAUSED_TTL_SECONDS
  value: {{ .Values.sandbox.pausedTTLSeconds | quote }}
- name: KUBEHANDS_NODE_SELECTOR
  value: {{ .Values.sandbox.nodeSelector | toJson | quote }}
- name: KUBEHANDS_TOLERATIONS
  value: {{ .Values.sandbox.tolerations | toJson | quote }}
- name: KUBEHANDS_ALLOWED_VOLUME_TYPES
  value: {{ .Values.sandbox.allowedVolumeTypes | toJson | quote }}
- name: KUBEHANDS_ALLOW_HOST_PATH
  value: {{ .Values.sandbox.allowHostPath | quote }}
- name: KUBEHANDS_RUN_AS_USER
  value: {{ .Values.sandbox.securityContext.runAsUser | quote }}
- name: KUBEHANDS_RUN_AS_GROUP
  value: {{ .Values.sandbox.securityContext.runAsGroup | quote }}
- name: KUBEHANDS_FS_GROUP
  value: {{ .Values.sandbox.securityContext.fsGroup | quote }}
- name: KUBEHANDS_WORKSPACE_CHOWN
  value: {{ .Values.sandbox.workspace.chown | quote }}
{{- /* The pool check (docs/pools.md "A pool no /start can match") derives specs as the gateway does: it reads
       the gateway's settings, from the same values, and the ones api.extraEnv overrides. */}}
- name: KUBEHANDS_POOL_MATCH_CHECK
  value: {{ .Values.operator.poolMatchCheck | quote }}
{{- if .Values.operator.poolMatchCheck }}
{{ include "kubehands.routingEnv" . }}
{{ include "kubehands.sandboxShapeEnv" . }}
{{- $shaping := append (include "kubehands.poolShapingSettings" . | fromJsonArray) "KUBEHANDS_INJECT_URL_ENV" }}
{{- range .Values.api.extraEnv }}
{{- if has .name $shaping }}
- {{ toJson . }}
{{- end }}
{{- end }}
{{- end }}
- name: KUBEHANDS_METRICS_PORT
  value: {{ include "kubehands.operatorMetricsPort" . | quote }}
{{- end }}

{{/* The metrics port of the gateway and the router (0: none); never their public port. */}}
{{- define "kubehands.gatewayMetricsPort" -}}
{{- $port := int .Values.api.metricsPort }}
{{- if and $port (eq $port (int .Values.api.port)) }}
{{- fail (printf "api.metricsPort %d is api.port: the metrics are never served on the public port" $port) }}
{{- end }}
{{- $port }}
{{- end }}

{{/* The operator's metrics port (0: none); never kopf's liveness port, which the same pod listens on. */}}
{{- define "kubehands.operatorMetricsPort" -}}
{{- $port := int .Values.operator.metricsPort }}
{{- if and $port (eq $port (int .Values.operator.livenessPort)) }}
{{- fail (printf "operator.metricsPort %d is operator.livenessPort: kopf's liveness endpoint listens there" $port) }}
{{- end }}
{{- $port }}
{{- end }}

{{/*
The initial admin key as JSON, computed once per render and memoised in .Values (so admin-key.yaml and
NOTES.txt agree):
  digest, hashSecretName, rawSecretName; raw (only with keepRawKey, else never known to the chart);
  renderHash: render the hash Secret; generated: raw was generated in this render;
  exists: a hash Secret of that name is already in the cluster.
The raw key only enters a manifest (and so the Helm release record, a Secret of the release namespace that
the gateway can list) when api.adminKey.keepRawKey asks for it. A hash Secret this release created earlier
is rendered again so that Helm keeps it; one created by `kubehands keys create` belongs to no release and is
left alone (rendering it would make Helm refuse to adopt it).
*/}}
{{- define "kubehands.adminKeyState" -}}
{{- $ak := .Values.api.adminKey }}
{{- if not (hasKey $ak "_state") }}
{{- $name := $ak.name }}
{{- $hashSecretName := printf "kh-apikey-%s" $name }}
{{- $rawSecretName := printf "%s-admin-key" (include "kubehands.fullname" .) }}
{{- $existingHash := lookup "v1" "Secret" .Release.Namespace $hashSecretName }}
{{- $own := false }}
{{- if $existingHash }}
  {{- $own = and (eq (dig "metadata" "annotations" "meta.helm.sh/release-name" "" $existingHash) .Release.Name) (eq (dig "metadata" "annotations" "meta.helm.sh/release-namespace" "" $existingHash) .Release.Namespace) }}
{{- end }}
{{- $digest := "" }}
{{- $raw := "" }}
{{- $renderHash := false }}
{{- $generated := false }}
{{- if and $existingHash (not $own) }}
  {{- if $ak.existingSecret }}
    {{- fail (printf "api.adminKey.existingSecret: Secret %s already exists and was not created by this release (kubehands keys create?); revoke it or set api.adminKey.name" $hashSecretName) }}
  {{- end }}
{{- else if $ak.existingSecret }}
  {{- $src := lookup "v1" "Secret" .Release.Namespace $ak.existingSecret }}
  {{- if $src }}
    {{- $digest = index $src.data $ak.existingSecretKey | required (printf "Secret %s has no key %s" $ak.existingSecret $ak.existingSecretKey) | b64dec | sha256sum }}
  {{- else if $own }}
    {{- $digest = index $existingHash.data "sha256" | b64dec }}
  {{- else }}
    {{- fail (printf "api.adminKey.existingSecret: Secret %s not found in namespace %s (create it before installing; `helm template` cannot read it)" $ak.existingSecret .Release.Namespace) }}
  {{- end }}
  {{- $renderHash = true }}
{{- else if $own }}
  {{- $digest = index $existingHash.data "sha256" | b64dec }}
  {{- $renderHash = true }}
  {{- if $ak.keepRawKey }}
    {{- $existingRaw := lookup "v1" "Secret" .Release.Namespace $rawSecretName }}
    {{- if $existingRaw }}{{ $raw = index $existingRaw.data "api-key" | b64dec }}{{ end }}
  {{- end }}
{{- else if $ak.keepRawKey }}
  {{- $raw = printf "khk_%s" (randAlphaNum 43) }}
  {{- $digest = sha256sum $raw }}
  {{- $renderHash = true }}
  {{- $generated = true }}
{{- end }}
{{- $_ := set $ak "_state" (dict "raw" $raw "digest" $digest "hashSecretName" $hashSecretName "rawSecretName" $rawSecretName "renderHash" $renderHash "generated" $generated "exists" (not (empty $existingHash))) }}
{{- end }}
{{- toJson $ak._state }}
{{- end }}

{{/* The images prePuller pulls, as a JSON list without duplicates: sandbox.image, each warm pool's own image,
     then prePuller.extraImages. */}}
{{- define "kubehands.prePulledImages" -}}
{{- $images := list }}
{{- with .Values.sandbox.image.repository }}
{{- $images = append $images (ternary (printf "%s:%s" . $.Values.sandbox.image.tag) . (ne (toString $.Values.sandbox.image.tag) "")) }}
{{- end }}
{{- range .Values.pools }}
{{- with (.template | default dict).image }}{{ $images = append $images . }}{{ end }}
{{- end }}
{{- range .Values.prePuller.extraImages }}{{ $images = append $images . }}{{ end }}
{{- if not $images }}
{{- fail "prePuller.enabled: no image to pull (set sandbox.image.repository, a pool image or prePuller.extraImages)" }}
{{- end }}
{{- toJson (uniq $images) }}
{{- end }}

{{/* securityContext of every pre-puller container: it only runs a no-op, then sleeps. */}}
{{- define "kubehands.prePullerContainerSecurity" -}}
allowPrivilegeEscalation: false
readOnlyRootFilesystem: true
capabilities:
  drop: ["ALL"]
{{- end }}
