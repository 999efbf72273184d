{{/*
Warm pools (templates/sandbox-pools.yaml, docs/pools.md). A pool's template must be the Sandbox spec the gateway
derives for the /start it is meant to serve (kubehands.spec.objects.build_sandbox, compared by
kubehands.spec.pools.difference), so the parts the gateway takes from its own settings are filled in here exactly
as it fills them in: tests/unit/test_chart.py checks every rendered pool against the gateway's own code.
*/}}

{{/* The operator's own variables: a spec's env cannot set them, the gateway drops them from a /start's
     environment (kubehands.crd.constants.MANAGED_ENV), and so does a pool. */}}
{{- define "kubehands.managedEnv" -}}
{{- toJson (list "OH_SESSION_API_KEYS_0" "SESSION_API_KEY" "OH_SECRET_KEY" "RUNTIME_ID" "VSCODE_PORT" "OH_VSCODE_PORT" "WORKER_1" "WORKER_2" "LITELLM_LOCAL_MODEL_COST_MAP") }}
{{- end }}

{{/* The gateway settings a pool template is derived from. Set through api.extraEnv they would reach the
     gateway but not the pools, which would then never match: refused while pools are declared. */}}
{{- define "kubehands.poolShapingSettings" -}}
{{- toJson (list "KUBEHANDS_PUBLIC_URL" "KUBEHANDS_ROUTING_MODE" "KUBEHANDS_DOMAIN" "KUBEHANDS_SUBDOMAIN_SCHEME" "KUBEHANDS_BASE_RESOURCES" "KUBEHANDS_RESOURCE_FACTORS" "KUBEHANDS_WORKSPACE_SIZE" "KUBEHANDS_WORKSPACE_STORAGE_CLASS" "KUBEHANDS_WORKSPACE_MOUNT_PATH" "KUBEHANDS_IMAGE_PULL_POLICY" "KUBEHANDS_RUNTIME_CLASS_MAP" "KUBEHANDS_DEFAULT_RUNTIME_CLASS" "KUBEHANDS_REQUIRE_RUNTIME_CLASS") }}
{{- end }}

{{/*
A quantity times an integer factor, keeping its suffix, in exact decimal arithmetic like
kubehands.crd.resources.scale_quantity ("3Gi" x 2 = "6Gi", "0.25" x 2 = "0.5", "1e3" x 2 = "2e3"):
(dict "quantity" q "factor" f "where" "pools[0]...").
*/}}
{{- define "kubehands.scaleQuantity" -}}
{{- $q := toString .quantity }}
{{- $number := regexFind "^(([0-9]+(\\.[0-9]*)?)|(\\.[0-9]+))" $q }}
{{- if not $number }}{{ fail (printf "%s: %q is not a Kubernetes quantity" .where $q) }}{{ end }}
{{- $suffix := trimPrefix $number $q }}
{{- if not (regexMatch "^(([KMGTPE]i)|[numkMGTPE]|([eE][-+]?(([0-9]+(\\.[0-9]*)?)|(\\.[0-9]+))))?$" $suffix) }}
{{- fail (printf "%s: %q is not a Kubernetes quantity" .where $q) }}
{{- end }}
{{- $parts := splitList "." $number }}
{{- $fraction := "" }}
{{- if gt (len $parts) 1 }}{{ $fraction = index $parts 1 }}{{ end }}
{{- $scale := len $fraction }}
{{- $product := mul (atoi (printf "%s%s" (index $parts 0) $fraction)) (int .factor) }}
{{- $digits := printf "%0*d" (add $scale 1) $product }}
{{- $cut := int (sub (len $digits) $scale) }}
{{- $whole := substr 0 $cut $digits }}
{{- $decimals := regexReplaceAll "0+$" (substr $cut (len $digits) $digits) "" }}
{{- if $decimals }}{{ printf "%s.%s%s" $whole $decimals $suffix }}{{ else }}{{ printf "%s%s" $whole $suffix }}{{ end }}
{{- end }}

{{/*
The spec.template of one pool, as YAML: (dict "ctx" $ "pool" <pools entry> "where" "pools[0]").
Mirrors objects.build_sandbox / build_environment / start_request.resources_for / runtime_class_for.
*/}}
{{- define "kubehands.poolTemplate" -}}
{{- $ctx := .ctx }}
{{- $v := $ctx.Values }}
{{- $where := .where }}
{{- $t := .pool.template | default dict }}
{{- $out := dict }}

{{- /* image: the pool's, else sandbox.image. */}}
{{- $image := $t.image }}
{{- if not $image }}
{{- $repository := required (printf "%s.template.image: no image; set it or sandbox.image.repository" $where) $v.sandbox.image.repository }}
{{- $image = ternary (printf "%s:%s" $repository $v.sandbox.image.tag) $repository (ne (toString $v.sandbox.image.tag) "") }}
{{- end }}
{{- $_ := set $out "image" $image }}

{{- /* command and workingDir: as the /start sends them (an empty command is the image's entrypoint). */}}
{{- with $t.command }}{{ $_ := set $out "command" (toStrings .) }}{{ end }}
{{- with $t.workingDir }}{{ $_ := set $out "workingDir" . }}{{ end }}

{{- /* resources: sandbox.baseResources x resourceFactor (resources_for), or the pool's own. */}}
{{- if $t.resources }}
{{- if hasKey $t "resourceFactor" }}
{{- fail (printf "%s.template: set resourceFactor or resources, not both" $where) }}
{{- end }}
{{- $resources := dict }}
{{- range $section, $entries := $t.resources }}
{{- if $entries }}
{{- $scaled := dict }}
{{- range $name, $q := $entries }}
{{- $_ := set $scaled $name (include "kubehands.scaleQuantity" (dict "quantity" $q "factor" 1 "where" (printf "%s.template.resources.%s.%s" $where $section $name))) }}
{{- end }}
{{- $_ := set $resources $section $scaled }}
{{- end }}
{{- end }}
{{- if $resources }}{{ $_ := set $out "resources" $resources }}{{ end }}
{{- else }}
{{- $factor := int (default 1 $t.resourceFactor) }}
{{- $factors := list }}
{{- range $v.sandbox.resourceFactors }}{{ $factors = append $factors (int .) }}{{ end }}
{{- if not (has $factor $factors) }}
{{- fail (printf "%s.template.resourceFactor %d is not one of sandbox.resourceFactors %v: the gateway refuses such a /start" $where $factor $factors) }}
{{- end }}
{{- $resources := dict }}
{{- range $section, $entries := $v.sandbox.baseResources }}
{{- if $entries }}
{{- $scaled := dict }}
{{- range $name, $q := $entries }}
{{- $_ := set $scaled $name (include "kubehands.scaleQuantity" (dict "quantity" $q "factor" $factor "where" (printf "sandbox.baseResources.%s.%s" $section $name))) }}
{{- end }}
{{- $_ := set $resources $section $scaled }}
{{- end }}
{{- end }}
{{- if $resources }}{{ $_ := set $out "resources" $resources }}{{ end }}
{{- end }}

{{- /* runtimeClassName: the pool's class, else sandbox.defaultRuntimeClass (runtime_class_for). */}}
{{- $map := $v.sandbox.runtimeClassMap | default dict }}
{{- $class := $t.runtimeClassName | default $v.sandbox.defaultRuntimeClass }}
{{- if $class }}
{{- if and $map (not (hasKey $map $class)) }}
{{- fail (printf "%s.template.runtimeClassName %q is not a key of sandbox.runtimeClassMap: the gateway refuses such a /start" $where $class) }}
{{- end }}
{{- $_ := set $out "runtimeClassName" $class }}
{{- else if $v.sandbox.requireRuntimeClass }}
{{- fail (printf "%s.template.runtimeClassName: sandbox.requireRuntimeClass refuses a /start without a runtime class" $where) }}
{{- end }}

{{- /* securityContext: the run_as_user / run_as_group / fs_group the /start sends. */}}
{{- with $t.securityContext }}{{ $_ := set $out "securityContext" . }}{{ end }}

{{- /* imagePullPolicy: the pool's (the /start's image_pull_policy), else sandbox.imagePullPolicy. */}}
{{- with ($t.imagePullPolicy | default $v.sandbox.imagePullPolicy) }}{{ $_ := set $out "imagePullPolicy" . }}{{ end }}

{{- /* workspace: the gateway's settings. */}}
{{- $workspace := dict "size" (toString $v.sandbox.workspace.size) "mountPath" $v.sandbox.workspace.mountPath }}
{{- with $v.sandbox.workspace.storageClassName }}{{ $_ := set $workspace "storageClassName" . }}{{ end }}
{{- $_ := set $out "workspace" $workspace }}

{{- /* nodeSelector and tolerations: what the keys this pool serves get from their profile. */}}
{{- with $t.nodeSelector }}{{ $_ := set $out "nodeSelector" . }}{{ end }}
{{- with $t.tolerations }}{{ $_ := set $out "tolerations" . }}{{ end }}

{{- /* env: the gateway's own variables (build_environment), then the pool's, which win; the operator's
       variables are dropped. */}}
{{- $inject := true }}
{{- range $v.api.extraEnv }}
{{- if eq .name "KUBEHANDS_INJECT_URL_ENV" }}
{{- $inject = has (lower (trim (toString .value))) (list "1" "on" "t" "true" "y" "yes") }}
{{- end }}
{{- end }}
{{- $derived := list }}
{{- if $inject }}
{{- if eq $v.routing.mode "subdomain" }}
{{- $domain := $v.routing.domain | trimAll "." | lower }}
{{- $derived = append $derived (dict "name" "RUNTIME_URL" "value" (printf "%s://$(RUNTIME_ID).%s" $v.routing.subdomainScheme $domain)) }}
{{- else }}
{{- $public := regexReplaceAll "/+$" (include "kubehands.publicUrl" $ctx) "" }}
{{- $derived = append $derived (dict "name" "RUNTIME_URL" "value" (printf "%s/$(RUNTIME_ID)" $public)) }}
{{- $derived = append $derived (dict "name" "OH_VSCODE_BASE_PATH" "value" "/$(RUNTIME_ID)/vscode") }}
{{- $derived = append $derived (dict "name" "OPENVSCODE_SERVER_BASE_PATH" "value" "/$(RUNTIME_ID)/vscode") }}
{{- end }}
{{- end }}
{{- $own := list }}
{{- if kindIs "map" $t.env }}
{{- range $name, $value := $t.env }}{{ $own = append $own (dict "name" $name "value" (toString $value)) }}{{ end }}
{{- else }}
{{- range $t.env }}{{ $own = append $own (dict "name" .name "value" (toString (default "" .value))) }}{{ end }}
{{- end }}
{{- $managed := include "kubehands.managedEnv" $ctx | fromJsonArray }}
{{- $ownNames := list }}
{{- range $own }}
{{- if has .name $ownNames }}{{ fail (printf "%s.template.env: %s is set twice" $where .name) }}{{ end }}
{{- $ownNames = append $ownNames .name }}
{{- end }}
{{- $env := list }}
{{- range $derived }}{{ if not (has .name $ownNames) }}{{ $env = append $env . }}{{ end }}{{ end }}
{{- range $own }}{{ if not (has .name $managed) }}{{ $env = append $env . }}{{ end }}{{ end }}
{{- if $env }}{{ $_ := set $out "env" $env }}{{ end }}
{{- toYaml $out }}
{{- end }}
