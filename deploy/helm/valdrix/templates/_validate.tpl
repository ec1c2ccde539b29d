{{/*
Template-side guardrails. They mirror values.schema.json so that `--skip-schema-validation` (or a
schema edited away) cannot render an unsafe fail-closed webhook. Rules:
  * 0 is a value: presence is tested with hasKey/kindIs, never with truthiness or `default`;
  * a missing key or a value of the wrong type fails the guardrail it belongs to;
  * guardrails apply whether or not the webhook is enabled (the values describe the intended profile).
*/}}

{{/* "true" when the argument is a number (YAML files give float64, --set gives int64). */}}
{{- define "valdrix.isNumber" -}}
{{- if or (kindIs "float64" .) (kindIs "int64" .) (kindIs "int" .) (kindIs "float32" .) (kindIs "int32" .) (kindIs "uint64" .) -}}true{{- end -}}
{{- end -}}

{{/* "true" when the argument is a whole number. */}}
{{- define "valdrix.isInteger" -}}
{{- if include "valdrix.isNumber" . -}}{{- if eq (float64 .) (floor (float64 .)) -}}true{{- end -}}{{- end -}}
{{- end -}}

{{/*
Integer value of an IntOrString quantity (integer or "N%"), or "invalid".
The percentage is returned as its number, which is all the guardrails need (0% == 0, >=1% >= 1).
*/}}
{{- define "valdrix.intOrPercent" -}}
{{- if include "valdrix.isInteger" . -}}
{{- int64 . -}}
{{- else if and (kindIs "string" .) (regexMatch "^[0-9]{1,3}%$" (toString .)) -}}
{{- atoi (trimSuffix "%" .) -}}
{{- else -}}
invalid
{{- end -}}
{{- end -}}

{{- define "valdrix.validate" -}}
{{- $v := .Values -}}
{{- $wh := $v.enforcementWebhook | default dict -}}
{{- $fp := get $wh "failurePolicy" -}}
{{- if not (has (toString $fp) (list "Ignore" "Fail")) -}}
{{- fail (printf "valdrix: enforcementWebhook.failurePolicy must be Ignore or Fail (got %v); set enforcementWebhook.failurePolicy: Ignore" $fp) -}}
{{- end -}}
{{- $failClosed := eq (toString $fp) "Fail" -}}

{{- /* ---- guardrail 1: Fail => timeoutSeconds <= 5 ---- */ -}}
{{- $to := get $wh "timeoutSeconds" -}}
{{- if $failClosed -}}
{{- if not (and (include "valdrix.isInteger" $to) (le (int64 $to) 5)) -}}
{{- fail (printf "valdrix guardrail 1: failurePolicy=Fail requires enforcementWebhook.timeoutSeconds <= 5 (got %v); set enforcementWebhook.timeoutSeconds: 2" $to) -}}
{{- end -}}
{{- end -}}

{{- /* ---- guardrail 2: Fail => API HA ---- */ -}}
{{- if $failClosed -}}
{{- $as := $v.autoscaling | default dict -}}
{{- if eq (toString (get $as "enabled")) "true" -}}
{{- $min := get $as "minReplicas" -}}
{{- if not (and (include "valdrix.isInteger" $min) (ge (int64 $min) 2)) -}}
{{- fail (printf "valdrix guardrail 2: failurePolicy=Fail requires API HA: autoscaling.minReplicas >= 2 when autoscaling.enabled=true (got %v); set autoscaling.minReplicas: 2" $min) -}}
{{- end -}}
{{- else -}}
{{- $rc := get $v "replicaCount" -}}
{{- if not (and (include "valdrix.isInteger" $rc) (ge (int64 $rc) 2)) -}}
{{- fail (printf "valdrix guardrail 2: failurePolicy=Fail requires API HA: replicaCount >= 2 when autoscaling.enabled=false (got %v); set replicaCount: 2" $rc) -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{- /* ---- guardrails 3 and 4: Fail => PDB enabled with maxUnavailable <= 1 ---- */ -}}
{{- $pdb := get $wh "podDisruptionBudget" | default dict -}}
{{- if $failClosed -}}
{{- $pe := get $pdb "enabled" -}}
{{- if not (and (kindIs "bool" $pe) $pe) -}}
{{- fail (printf "valdrix guardrail 3: failurePolicy=Fail requires enforcementWebhook.podDisruptionBudget.enabled=true (got %v); set enforcementWebhook.podDisruptionBudget.enabled: true" $pe) -}}
{{- end -}}
{{- $pmu := get $pdb "maxUnavailable" -}}
{{- if not (and (include "valdrix.isInteger" $pmu) (le (int64 $pmu) 1) (ge (int64 $pmu) 0)) -}}
{{- fail (printf "valdrix guardrail 4: failurePolicy=Fail requires enforcementWebhook.podDisruptionBudget.maxUnavailable <= 1 as an integer (got %v); set enforcementWebhook.podDisruptionBudget.maxUnavailable: 1" $pmu) -}}
{{- end -}}
{{- end -}}

{{- /* ---- guardrails 5 and 6: cert-manager ---- */ -}}
{{- $cm := get $wh "certManager" | default dict -}}
{{- if eq (toString (get $cm "enabled")) "true" -}}
{{- $inj := get $cm "injectorSecretName" -}}
{{- if not (and (kindIs "string" $inj) (regexMatch "^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$" $inj)) -}}
{{- fail (printf "valdrix guardrail 5: enforcementWebhook.certManager.enabled=true requires a non-empty enforcementWebhook.certManager.injectorSecretName (got %q); set enforcementWebhook.certManager.injectorSecretName: valdrix-webhook-tls" (toString $inj)) -}}
{{- end -}}
{{- if ne (toString (get $wh "caBundle" | default "")) "" -}}
{{- fail "valdrix guardrail 6: enforcementWebhook.caBundle must be empty when enforcementWebhook.certManager.enabled=true (single CA source); set enforcementWebhook.caBundle: \"\" (or enforcementWebhook.certManager.enabled: false with tls.secretName)" -}}
{{- end -}}
{{- end -}}

{{- /* ---- guardrail 7: namespaceSelector excludes the system namespaces ---- */ -}}
{{- $need := list "kube-system" "kube-public" "kube-node-lease" -}}
{{- $ok7 := false -}}
{{- $sel := get $wh "namespaceSelector" -}}
{{- if kindIs "map" $sel -}}
{{- range ((get $sel "matchExpressions") | default list) -}}
{{- if and (kindIs "map" .) (eq (toString (get . "key")) "kubernetes.io/metadata.name") (eq (toString (get . "operator")) "NotIn") (kindIs "slice" (get . "values")) -}}
{{- $vals := get . "values" -}}
{{- if and (has "kube-system" $vals) (has "kube-public" $vals) (has "kube-node-lease" $vals) -}}{{- $ok7 = true -}}{{- end -}}
{{- end -}}
{{- end -}}
{{- end -}}
{{- if not $ok7 -}}
{{- fail "valdrix guardrail 7: enforcementWebhook.namespaceSelector must exclude kube-system, kube-public and kube-node-lease via matchExpressions {key: kubernetes.io/metadata.name, operator: NotIn, values: [kube-system, kube-public, kube-node-lease]}; add that expression to enforcementWebhook.namespaceSelector.matchExpressions" -}}
{{- end -}}

{{- /* ---- guardrail 8: admissionReviewVersions includes v1 ---- */ -}}
{{- $arv := get $wh "admissionReviewVersions" -}}
{{- if not (and (kindIs "slice" $arv) (has "v1" $arv)) -}}
{{- fail (printf "valdrix guardrail 8: enforcementWebhook.admissionReviewVersions must include v1 (got %v); set enforcementWebhook.admissionReviewVersions: [\"v1\"]" $arv) -}}
{{- end -}}

{{- /* ---- guardrails 9-11: rollout strategy ---- */ -}}
{{- $ds := $v.deploymentStrategy | default dict -}}
{{- $ru := get $ds "rollingUpdate" | default dict -}}
{{- if $failClosed -}}
{{- if ne (toString (get $ds "type")) "RollingUpdate" -}}
{{- fail (printf "valdrix guardrail 9: failurePolicy=Fail requires deploymentStrategy.type=RollingUpdate (got %v); set deploymentStrategy.type: RollingUpdate" (get $ds "type")) -}}
{{- end -}}
{{- $mu := get $ru "maxUnavailable" -}}
{{- if ne (include "valdrix.intOrPercent" $mu) "0" -}}
{{- fail (printf "valdrix guardrail 10: failurePolicy=Fail requires deploymentStrategy.rollingUpdate.maxUnavailable=0 (got %v); set deploymentStrategy.rollingUpdate.maxUnavailable: 0" $mu) -}}
{{- end -}}
{{- $ms := get $ru "maxSurge" -}}
{{- $msi := include "valdrix.intOrPercent" $ms -}}
{{- if or (eq $msi "invalid") (lt (atoi $msi) 1) -}}
{{- fail (printf "valdrix guardrail 11: failurePolicy=Fail requires deploymentStrategy.rollingUpdate.maxSurge >= 1 (got %v); set deploymentStrategy.rollingUpdate.maxSurge: 1" $ms) -}}
{{- end -}}
{{- end -}}

{{- /* ---- guardrail 12: effective hard anti-affinity on kubernetes.io/hostname ---- */ -}}
{{- if $failClosed -}}
{{- $eff := include "valdrix.effectiveAffinity" . | fromYaml -}}
{{- $ok12 := false -}}
{{- range ((get ((get $eff "podAntiAffinity") | default dict) "requiredDuringSchedulingIgnoredDuringExecution") | default list) -}}
{{- if and (kindIs "map" .) (eq (toString (get . "topologyKey")) "kubernetes.io/hostname") -}}{{- $ok12 = true -}}{{- end -}}
{{- end -}}
{{- if not $ok12 -}}
{{- fail (printf "valdrix guardrail 12: failurePolicy=Fail requires hard pod anti-affinity across nodes (a requiredDuringSchedulingIgnoredDuringExecution term with topologyKey=kubernetes.io/hostname) in the effective API affinity (got antiAffinityPreset=%v and no such term in affinity.podAntiAffinity); set antiAffinityPreset: hard" $v.antiAffinityPreset) -}}
{{- end -}}
{{- end -}}

{{- /* ---- consistency checks (not numbered in the runbook) ---- */ -}}
{{- include "valdrix.validateConsistency" . -}}
{{- end -}}

{{- define "valdrix.validateConsistency" -}}
{{- $v := .Values -}}
{{- $wh := $v.enforcementWebhook -}}
{{- /* IntOrString sanity, independent of the failure policy. */ -}}
{{- $ds := $v.deploymentStrategy | default dict -}}
{{- if not (has (toString (get $ds "type")) (list "RollingUpdate" "Recreate")) -}}
{{- fail (printf "valdrix: deploymentStrategy.type must be RollingUpdate or Recreate (got %v)" (get $ds "type")) -}}
{{- end -}}
{{- if eq (toString (get $ds "type")) "RollingUpdate" -}}
{{- $ru := get $ds "rollingUpdate" | default dict -}}
{{- $mu := include "valdrix.intOrPercent" (get $ru "maxUnavailable") -}}
{{- $ms := include "valdrix.intOrPercent" (get $ru "maxSurge") -}}
{{- if or (eq $mu "invalid") (eq $ms "invalid") -}}
{{- fail (printf "valdrix: deploymentStrategy.rollingUpdate.maxUnavailable and maxSurge must be integers >= 0 or percentages like \"25%%\" (got %v / %v)" (get $ru "maxUnavailable") (get $ru "maxSurge")) -}}
{{- end -}}
{{- if and (eq $mu "0") (eq $ms "0") -}}
{{- fail "valdrix: deploymentStrategy.rollingUpdate.maxUnavailable and maxSurge cannot both be 0; set deploymentStrategy.rollingUpdate.maxSurge: 1" -}}
{{- end -}}
{{- end -}}
{{- if not (and (include "valdrix.isInteger" $v.replicaCount) (ge (int64 $v.replicaCount) 0)) -}}
{{- fail (printf "valdrix: replicaCount must be an integer >= 0 (got %v)" $v.replicaCount) -}}
{{- end -}}
{{- if eq (toString $v.autoscaling.enabled) "true" -}}
{{- $min := $v.autoscaling.minReplicas -}}
{{- $max := $v.autoscaling.maxReplicas -}}
{{- if not (and (include "valdrix.isInteger" $min) (include "valdrix.isInteger" $max) (ge (int64 $min) 1) (ge (int64 $max) (int64 $min))) -}}
{{- fail (printf "valdrix: autoscaling needs integers 1 <= minReplicas <= maxReplicas (got %v / %v)" $min $max) -}}
{{- end -}}
{{- end -}}
{{- if not (has (toString $v.antiAffinityPreset) (list "hard" "soft" "none")) -}}
{{- fail (printf "valdrix: antiAffinityPreset must be hard, soft or none (got %v)" $v.antiAffinityPreset) -}}
{{- end -}}
{{- /* The gate must answer before the API server gives up on the webhook. */ -}}
{{- $gt := $v.config.gateTimeoutSeconds -}}
{{- if not (include "valdrix.isNumber" $gt) -}}
{{- fail (printf "valdrix: config.gateTimeoutSeconds must be a number (got %v)" $gt) -}}
{{- end -}}
{{- if include "valdrix.webhookEnabled" . -}}
{{- if not (include "valdrix.isNumber" $wh.timeoutSeconds) -}}
{{- fail (printf "valdrix: enforcementWebhook.timeoutSeconds must be an integer between 1 and 30 (got %v)" $wh.timeoutSeconds) -}}
{{- end -}}
{{- if not (lt (float64 $gt) (float64 $wh.timeoutSeconds)) -}}
{{- fail (printf "valdrix: config.gateTimeoutSeconds (%v) must be lower than enforcementWebhook.timeoutSeconds (%v) so the gate answers with its own fail-safe before the API server times out; lower config.gateTimeoutSeconds" $gt $wh.timeoutSeconds) -}}
{{- end -}}
{{- $svc := $wh.service | default dict -}}
{{- if and $svc.namespace (ne (toString $svc.namespace) .Release.Namespace) -}}
{{- fail (printf "valdrix: enforcementWebhook.service.namespace (%v) must equal the release namespace (%s): the webhook must point at this chart's Service; install with --namespace %v or leave enforcementWebhook.service.namespace empty" $svc.namespace .Release.Namespace $svc.namespace) -}}
{{- end -}}
{{- if not (and (include "valdrix.isInteger" $svc.port) (ge (int64 $svc.port) 1) (le (int64 $svc.port) 65535)) -}}
{{- fail (printf "valdrix: enforcementWebhook.service.port must be an integer 1-65535 (got %v)" $svc.port) -}}
{{- end -}}
{{- if eq (int64 $svc.port) (int64 $v.service.httpPort) -}}
{{- fail (printf "valdrix: enforcementWebhook.service.port and service.httpPort must differ (both %v)" $svc.port) -}}
{{- end -}}
{{- if not (hasPrefix "/" (toString $wh.path)) -}}
{{- fail (printf "valdrix: enforcementWebhook.path must start with / (got %v)" $wh.path) -}}
{{- end -}}
{{- if not (include "valdrix.certManagerEnabled" .) -}}
{{- if not (and (($wh.tls | default dict).secretName) $wh.caBundle) -}}
{{- fail "valdrix: the webhook needs a serving certificate: set enforcementWebhook.certManager.enabled: true (cert-manager), or enforcementWebhook.tls.secretName and enforcementWebhook.caBundle" -}}
{{- end -}}
{{- end -}}
{{- $mode := include "valdrix.authMode" . -}}
{{- if not (has $mode (list "clusterTenant" "mtls" "apiKey")) -}}
{{- fail (printf "valdrix: enforcementWebhook.authentication.mode must be clusterTenant, mtls or apiKey (got %v)" $mode) -}}
{{- end -}}
{{- if and (ne $mode "apiKey") (not $wh.authentication.tenant) -}}
{{- fail (printf "valdrix: enforcementWebhook.authentication.mode=%s requires enforcementWebhook.authentication.tenant" $mode) -}}
{{- end -}}
{{- if and (eq $mode "mtls") (not (include "valdrix.clientCASecretName" .)) -}}
{{- fail "valdrix: enforcementWebhook.authentication.mode=mtls requires enforcementWebhook.authentication.mtls.clientCASecretName (or certManager.enabled: true to use the chart CA)" -}}
{{- end -}}
{{- end -}}
{{- if not (has (toString $v.networkPolicy.enabled) (list "auto" "true" "false")) -}}
{{- fail (printf "valdrix: networkPolicy.enabled must be auto, true or false (got %v)" $v.networkPolicy.enabled) -}}
{{- end -}}
{{- if and (eq (toString $v.networkPolicy.enabled) "true") (not $v.networkPolicy.webhookFrom) (include "valdrix.webhookEnabled" .) -}}
{{- fail "valdrix: networkPolicy.enabled=true requires networkPolicy.webhookFrom (the API server's source, e.g. [{ipBlock: {cidr: 10.0.0.0/24}}])" -}}
{{- end -}}
{{- if not (or $v.database.existingSecret $v.database.url) -}}
{{- fail "valdrix: set database.existingSecret (a Secret holding the postgresql+psycopg:// URL under database.secretKey) or, for development only, database.url" -}}
{{- end -}}
{{- if and (not $v.database.existingSecret) (not (regexMatch "^postgresql(\\+psycopg)?://" (toString $v.database.url))) -}}
{{- fail (printf "valdrix: database.url must be a PostgreSQL URL (postgresql+psycopg://user:password@host:5432/db)") -}}
{{- end -}}
{{- if not $v.signing.existingSecret -}}
{{- fail "valdrix: set signing.existingSecret (a Secret with <kid>.pem Ed25519 private keys)" -}}
{{- end -}}
{{- end -}}
