{{/* Names and labels. */}}
{{- define "valdrix.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "valdrix.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- $name := default .Chart.Name .Values.nameOverride -}}
{{- if contains $name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{- define "valdrix.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "valdrix.selectorLabels" -}}
app.kubernetes.io/name: {{ include "valdrix.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "valdrix.labels" -}}
helm.sh/chart: {{ include "valdrix.chart" . }}
{{ include "valdrix.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: valdrix
{{- end -}}

{{- define "valdrix.apiSelectorLabels" -}}
{{ include "valdrix.selectorLabels" . }}
app.kubernetes.io/component: api
{{- end -}}

{{- define "valdrix.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (include "valdrix.fullname" .) .Values.serviceAccount.name -}}
{{- else -}}
{{- default "default" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{- define "valdrix.apiServiceName" -}}
{{- $svc := (.Values.enforcementWebhook.service | default dict) -}}
{{- default (printf "%s-api" (include "valdrix.fullname" .)) $svc.name | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "valdrix.image" -}}
{{- if .Values.image.digest -}}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest -}}
{{- else -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) -}}
{{- end -}}
{{- end -}}

{{- define "valdrix.webhookEnabled" -}}
{{- if eq (toString .Values.enforcementWebhook.enabled) "true" -}}true{{- end -}}
{{- end -}}

{{- define "valdrix.certManagerEnabled" -}}
{{- $cm := (.Values.enforcementWebhook.certManager | default dict) -}}
{{- if and (include "valdrix.webhookEnabled" .) (eq (toString $cm.enabled) "true") -}}true{{- end -}}
{{- end -}}

{{- define "valdrix.tlsSecretName" -}}
{{- if include "valdrix.certManagerEnabled" . -}}
{{- .Values.enforcementWebhook.certManager.injectorSecretName -}}
{{- else -}}
{{- (.Values.enforcementWebhook.tls | default dict).secretName -}}
{{- end -}}
{{- end -}}

{{- define "valdrix.caName" -}}
{{- printf "%s-webhook-ca" (include "valdrix.fullname" .) -}}
{{- end -}}

{{- define "valdrix.failClosed" -}}
{{- if eq (toString .Values.enforcementWebhook.failurePolicy) "Fail" -}}true{{- end -}}
{{- end -}}

{{- define "valdrix.readinessPath" -}}
{{- if .Values.probes.readiness.path -}}
{{- .Values.probes.readiness.path -}}
{{- else if include "valdrix.failClosed" . -}}
/readyz
{{- else -}}
/healthz
{{- end -}}
{{- end -}}

{{- define "valdrix.authMode" -}}
{{- ((.Values.enforcementWebhook.authentication | default dict).mode | default "clusterTenant") -}}
{{- end -}}

{{/* mTLS client CA secret: explicit, or the chart CA when cert-manager is on. */}}
{{- define "valdrix.clientCASecretName" -}}
{{- $m := ((.Values.enforcementWebhook.authentication | default dict).mtls | default dict) -}}
{{- if $m.clientCASecretName -}}
{{- $m.clientCASecretName -}}
{{- else if include "valdrix.certManagerEnabled" . -}}
{{- include "valdrix.caName" . -}}
{{- end -}}
{{- end -}}

{{- define "valdrix.mtlsTenantsJson" -}}
{{- $a := .Values.enforcementWebhook.authentication -}}
{{- $m := ($a.mtls | default dict) -}}
{{- if $m.tenants -}}
{{- toJson $m.tenants -}}
{{- else -}}
{{- toJson (dict $m.clientCommonName $a.tenant) -}}
{{- end -}}
{{- end -}}

{{/*
Effective API affinity: the user's `affinity` plus the preset anti-affinity term. Returned as YAML.
Guardrail 12 is checked against this, never against the raw values.
*/}}
{{- define "valdrix.effectiveAffinity" -}}
{{- $aff := deepCopy (.Values.affinity | default dict) -}}
{{- $paa := deepCopy ((get $aff "podAntiAffinity") | default dict) -}}
{{- $req := list -}}
{{- range ((get $paa "requiredDuringSchedulingIgnoredDuringExecution") | default list) }}{{ $req = append $req . }}{{ end -}}
{{- $pref := list -}}
{{- range ((get $paa "preferredDuringSchedulingIgnoredDuringExecution") | default list) }}{{ $pref = append $pref . }}{{ end -}}
{{- $term := dict "topologyKey" "kubernetes.io/hostname" "labelSelector" (dict "matchLabels" (include "valdrix.apiSelectorLabels" . | fromYaml)) -}}
{{- if eq (toString .Values.antiAffinityPreset) "hard" -}}
{{- $req = append $req $term -}}
{{- else if eq (toString .Values.antiAffinityPreset) "soft" -}}
{{- $pref = append $pref (dict "weight" 100 "podAffinityTerm" $term) -}}
{{- end -}}
{{- if $req }}{{ $_ := set $paa "requiredDuringSchedulingIgnoredDuringExecution" $req }}{{ end -}}
{{- if $pref }}{{ $_ := set $paa "preferredDuringSchedulingIgnoredDuringExecution" $pref }}{{ end -}}
{{- if $paa }}{{ $_ := set $aff "podAntiAffinity" $paa }}{{ end -}}
{{- if $aff }}{{ toYaml $aff }}{{ end -}}
{{- end -}}

{{/*
Effective namespaceSelector: the user's selector with the release namespace appended to the
kubernetes.io/metadata.name NotIn expression(s). Returned as YAML.
*/}}
{{- define "valdrix.effectiveNamespaceSelector" -}}
{{- $sel := deepCopy (.Values.enforcementWebhook.namespaceSelector | default dict) -}}
{{- $exprs := list -}}
{{- range ((get $sel "matchExpressions") | default list) -}}
{{- $e := deepCopy . -}}
{{- if and (eq (toString (get $e "key")) "kubernetes.io/metadata.name") (eq (toString (get $e "operator")) "NotIn") -}}
{{- $vals := (get $e "values") | default list -}}
{{- if not (has $.Release.Namespace $vals) -}}{{- $vals = append $vals $.Release.Namespace -}}{{- end -}}
{{- $_ := set $e "values" $vals -}}
{{- end -}}
{{- $exprs = append $exprs $e -}}
{{- end -}}
{{- if $exprs }}{{ $_ := set $sel "matchExpressions" $exprs }}{{ end -}}
{{- if $sel }}{{ toYaml $sel }}{{ end -}}
{{- end -}}

{{/* Container security context, pod security context and common env for every Valdrix container. */}}
{{- define "valdrix.podSecurity" -}}
securityContext:
  {{- toYaml .Values.podSecurityContext | nindent 2 }}
{{- with .Values.imagePullSecrets }}
imagePullSecrets:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- end -}}

{{- define "valdrix.databaseEnv" -}}
{{- if .Values.database.existingSecret }}
- name: VALDRIX_DATABASE_URL
  valueFrom:
    secretKeyRef:
      name: {{ .Values.database.existingSecret }}
      key: {{ .Values.database.secretKey | default "url" }}
{{- else }}
- name: VALDRIX_DATABASE_URL
  value: {{ .Values.database.url | quote }}
{{- end }}
{{- end -}}

{{- define "valdrix.commonEnvFrom" -}}
- configMapRef:
    name: {{ include "valdrix.fullname" . }}-settings
{{- end -}}

{{/*
Pod spec for the non-API workloads (migrations, reconcile CronJob, worker). They get their own
affinity/nodeSelector/tolerations from their values block and never inherit the API's affinity.
Call with (dict "root" $ "cfg" .Values.worker "args" (list "worker") "restartPolicy" "Never" "serviceAccount" true).
*/}}
{{- define "valdrix.auxPodSpec" -}}
{{- $root := .root -}}
{{- $cfg := .cfg -}}
{{- if .serviceAccount }}
serviceAccountName: {{ include "valdrix.serviceAccountName" $root }}
{{- end }}
automountServiceAccountToken: false
enableServiceLinks: false
{{- with .restartPolicy }}
restartPolicy: {{ . }}
{{- end }}
{{ include "valdrix.podSecurity" $root }}
containers:
  - name: {{ .name }}
    image: {{ include "valdrix.image" $root }}
    imagePullPolicy: {{ $root.Values.image.pullPolicy }}
    args:
      {{- toYaml .args | nindent 6 }}
    {{- if .settings }}
    envFrom:
      {{- include "valdrix.commonEnvFrom" $root | nindent 6 }}
    {{- end }}
    env:
      {{- include "valdrix.databaseEnv" $root | trim | nindent 6 }}
      {{- if not .settings }}
      - name: VALDRIX_LOG_LEVEL
        value: {{ $root.Values.config.logLevel | toString | quote }}
      {{- end }}
      {{- with .metricsPort }}
      - name: VALDRIX_WORKER_METRICS_PORT
        value: {{ . | quote }}
      {{- end }}
      {{- with $root.Values.config.extraEnv }}
      {{- toYaml . | nindent 6 }}
      {{- end }}
    {{- with .metricsPort }}
    ports:
      - name: metrics
        containerPort: {{ int64 . }}
        protocol: TCP
    {{- /* The metrics server runs in the worker process: it answers while the process lives. */}}
    livenessProbe:
      httpGet:
        path: /metrics
        port: metrics
      {{- toYaml $cfg.probes.liveness | nindent 6 }}
    readinessProbe:
      httpGet:
        path: /metrics
        port: metrics
      {{- toYaml $cfg.probes.readiness | nindent 6 }}
    {{- end }}
    resources:
      {{- toYaml $cfg.resources | nindent 6 }}
    securityContext:
      {{- toYaml $root.Values.securityContext | nindent 6 }}
    volumeMounts:
      - name: tmp
        mountPath: /tmp
      {{- if .signing }}
      - name: signing-keys
        mountPath: /var/run/valdrix/signing
        readOnly: true
      {{- end }}
      {{- if and .priceBook $root.Values.pricing.kubernetes }}
      - name: price-book
        mountPath: /etc/valdrix/price-book
        readOnly: true
      {{- end }}
volumes:
  - name: tmp
    emptyDir:
      sizeLimit: 64Mi
  {{- if .signing }}
  - name: signing-keys
    secret:
      secretName: {{ $root.Values.signing.existingSecret }}
      defaultMode: 0440
  {{- end }}
  {{- if and .priceBook $root.Values.pricing.kubernetes }}
  - name: price-book
    configMap:
      name: {{ include "valdrix.fullname" $root }}-price-book
  {{- end }}
{{- with $cfg.affinity }}
affinity:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with $cfg.nodeSelector }}
nodeSelector:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with $cfg.tolerations }}
tolerations:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- end -}}

{{/* "true" when the ingress NetworkPolicy renders: networkPolicy.enabled true, or auto with clusterTenant. */}}
{{- define "valdrix.networkPolicyEnabled" -}}
{{- $on := toString .Values.networkPolicy.enabled -}}
{{- if or (eq $on "true") (and (eq $on "auto") (eq (include "valdrix.authMode" .) "clusterTenant")) -}}true{{- end -}}
{{- end -}}

{{/* The fewest API replicas the chart runs: autoscaling.minReplicas when autoscaling, else replicaCount. */}}
{{- define "valdrix.minApiReplicas" -}}
{{- if .Values.autoscaling.enabled -}}{{ int64 .Values.autoscaling.minReplicas }}{{- else -}}{{ int64 .Values.replicaCount }}{{- end -}}
{{- end -}}

{{/* "true" when the API PodDisruptionBudget renders: asked for, or 2 or more replicas. */}}
{{- define "valdrix.pdbEnabled" -}}
{{- $pdb := .Values.enforcementWebhook.podDisruptionBudget | default dict -}}
{{- if or (eq (toString $pdb.enabled) "true") (ge (int64 (include "valdrix.minApiReplicas" .)) 2) -}}true{{- end -}}
{{- end -}}

{{/* "true" when monitoring part `.part` (serviceMonitor, prometheusRule, grafanaDashboard) renders. */}}
{{- define "valdrix.monitoring" -}}
{{- $m := .root.Values.monitoring -}}
{{- if and (eq (toString $m.enabled) "true") (eq (toString (get (get $m .part) "enabled")) "true") -}}true{{- end -}}
{{- end -}}

{{/*
The webhook's matchConditions: skip the chart's own service account and the configured identities, then
the operator's own conditions. Identity lists are rendered as JSON arrays, which are CEL list literals.
*/}}
{{- define "valdrix.matchConditions" -}}
{{- $wh := .Values.enforcementWebhook -}}
- name: not-valdrix-service-account
  expression: {{ printf "request.userInfo.username != %s" (printf "system:serviceaccount:%s:%s" .Release.Namespace (include "valdrix.serviceAccountName" .) | toJson) | quote }}
{{- with $wh.excludedUsernames }}
- name: not-excluded-usernames
  expression: {{ printf "!(request.userInfo.username in %s)" (toJson .) | quote }}
{{- end }}
{{- with $wh.excludedGroups }}
- name: not-excluded-groups
  expression: {{ printf "!(has(request.userInfo.groups) && request.userInfo.groups.exists(g, g in %s))" (toJson .) | quote }}
{{- end }}
{{- with $wh.matchConditions }}
{{ toYaml . }}
{{- end }}
{{- end -}}
