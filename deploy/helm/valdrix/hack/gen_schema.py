# ruff: noqa: E501
"""Generate values.schema.json (JSON Schema draft-07). Run: python hack/gen_schema.py > values.schema.json

Kept as code so the twelve guardrails stay readable; the committed values.schema.json is the output.
"""

import json

INT_OR_PERCENT = {
    "oneOf": [
        {"type": "integer", "minimum": 0},
        {"type": "string", "pattern": "^(100|[1-9]?[0-9])%$"},
    ]
}
DNS_NAME = "^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$"
FAIL = {
    "required": ["enforcementWebhook"],
    "properties": {
        "enforcementWebhook": {
            "required": ["failurePolicy"],
            "properties": {"failurePolicy": {"const": "Fail"}},
        }
    },
}
CERT_MANAGER_ON = {
    "required": ["enforcementWebhook"],
    "properties": {
        "enforcementWebhook": {
            "required": ["certManager"],
            "properties": {
                "certManager": {"required": ["enabled"], "properties": {"enabled": {"const": True}}}
            },
        }
    },
}


def webhook(props: dict, required: list[str] | None = None) -> dict:
    inner: dict = {"properties": props}
    if required:
        inner["required"] = required
    return {"required": ["enforcementWebhook"], "properties": {"enforcementWebhook": inner}}


def rolling(props: dict, required: list[str]) -> dict:
    return {
        "required": ["deploymentStrategy"],
        "properties": {
            "deploymentStrategy": {
                "required": ["rollingUpdate"],
                "properties": {
                    "rollingUpdate": {"type": "object", "required": required, "properties": props}
                },
            }
        },
    }


HOSTNAME_TERM = {
    "type": "object",
    "required": ["topologyKey"],
    "properties": {"topologyKey": {"const": "kubernetes.io/hostname"}},
}

guardrails = [
    {
        "$comment": "guardrail 1: failurePolicy Fail requires timeoutSeconds <= 5",
        "if": FAIL,
        "then": webhook({"timeoutSeconds": {"maximum": 5}}, ["timeoutSeconds"]),
    },
    {
        "$comment": "guardrail 2: failurePolicy Fail requires API HA (HPA minReplicas >= 2 or replicaCount >= 2)",
        "if": FAIL,
        "then": {
            "if": {
                "required": ["autoscaling"],
                "properties": {
                    "autoscaling": {"required": ["enabled"], "properties": {"enabled": {"const": True}}}
                },
            },
            "then": {
                "required": ["autoscaling"],
                "properties": {
                    "autoscaling": {
                        "required": ["minReplicas"],
                        "properties": {"minReplicas": {"type": "integer", "minimum": 2}},
                    }
                },
            },
            "else": {
                "required": ["replicaCount"],
                "properties": {"replicaCount": {"type": "integer", "minimum": 2}},
            },
        },
    },
    {
        "$comment": "guardrail 3: failurePolicy Fail requires podDisruptionBudget.enabled=true",
        "if": FAIL,
        "then": webhook(
            {"podDisruptionBudget": {"required": ["enabled"], "properties": {"enabled": {"const": True}}}},
            ["podDisruptionBudget"],
        ),
    },
    {
        "$comment": "guardrail 4: failurePolicy Fail requires podDisruptionBudget.maxUnavailable <= 1",
        "if": FAIL,
        "then": webhook(
            {
                "podDisruptionBudget": {
                    "required": ["maxUnavailable"],
                    "properties": {"maxUnavailable": {"type": "integer", "maximum": 1}},
                }
            },
            ["podDisruptionBudget"],
        ),
    },
    {
        "$comment": "guardrail 5: certManager.enabled=true requires a non-empty certManager.injectorSecretName",
        "if": CERT_MANAGER_ON,
        "then": webhook(
            {
                "certManager": {
                    "required": ["injectorSecretName"],
                    "properties": {
                        "injectorSecretName": {"type": "string", "minLength": 1, "pattern": DNS_NAME}
                    },
                }
            }
        ),
    },
    {
        "$comment": "guardrail 6: no caBundle when certManager.enabled=true (single CA source)",
        "if": CERT_MANAGER_ON,
        "then": webhook({"caBundle": {"type": "string", "maxLength": 0}}),
    },
    {
        "$comment": "guardrail 9: failurePolicy Fail requires deploymentStrategy.type=RollingUpdate",
        "if": FAIL,
        "then": {
            "required": ["deploymentStrategy"],
            "properties": {
                "deploymentStrategy": {
                    "required": ["type"],
                    "properties": {"type": {"const": "RollingUpdate"}},
                }
            },
        },
    },
    {
        "$comment": 'guardrail 10: failurePolicy Fail requires rollingUpdate.maxUnavailable=0 (0 or "0%")',
        "if": FAIL,
        "then": rolling({"maxUnavailable": {"enum": [0, "0%"]}}, ["maxUnavailable"]),
    },
    {
        "$comment": 'guardrail 11: failurePolicy Fail requires rollingUpdate.maxSurge >= 1 (integer >= 1 or >= "1%")',
        "if": FAIL,
        "then": rolling(
            {
                "maxSurge": {
                    "oneOf": [
                        {"type": "integer", "minimum": 1},
                        {"type": "string", "pattern": "^(100|[1-9][0-9]?)%$"},
                    ]
                }
            },
            ["maxSurge"],
        ),
    },
    {
        "$comment": "guardrail 12: failurePolicy Fail requires hard pod anti-affinity on kubernetes.io/hostname in the "
        "effective affinity: antiAffinityPreset=hard, or an own required hostname term in affinity",
        "if": FAIL,
        "then": {
            "if": {
                "required": ["affinity"],
                "properties": {
                    "affinity": {
                        "required": ["podAntiAffinity"],
                        "properties": {
                            "podAntiAffinity": {
                                "required": ["requiredDuringSchedulingIgnoredDuringExecution"],
                                "properties": {
                                    "requiredDuringSchedulingIgnoredDuringExecution": {
                                        "type": "array",
                                        "contains": HOSTNAME_TERM,
                                    }
                                },
                            }
                        },
                    }
                },
            },
            "then": {},
            "else": {
                "required": ["antiAffinityPreset"],
                "properties": {"antiAffinityPreset": {"const": "hard"}},
            },
        },
    },
    {
        "$comment": "Kubernetes rejects maxUnavailable=0 together with maxSurge=0",
        "if": {"properties": {"deploymentStrategy": {"properties": {"type": {"const": "RollingUpdate"}}}}},
        "then": {
            "not": rolling(
                {"maxUnavailable": {"enum": [0, "0%"]}, "maxSurge": {"enum": [0, "0%"]}},
                ["maxUnavailable", "maxSurge"],
            )
        },
    },
    {
        "$comment": "deploymentStrategy RollingUpdate needs both rollingUpdate values",
        "if": {"properties": {"deploymentStrategy": {"properties": {"type": {"const": "RollingUpdate"}}}}},
        "then": rolling({}, ["maxUnavailable", "maxSurge"]),
    },
]

label_selector = {
    "type": "object",
    "properties": {
        "matchLabels": {"type": "object", "additionalProperties": {"type": "string"}},
        "matchExpressions": {
            "type": "array",
            "items": {
                "type": "object",
                "required": ["key", "operator"],
                "properties": {
                    "key": {"type": "string", "minLength": 1},
                    "operator": {"enum": ["In", "NotIn", "Exists", "DoesNotExist"]},
                    "values": {"type": "array", "items": {"type": "string"}},
                },
            },
        },
    },
}

namespace_selector = json.loads(json.dumps(label_selector))
namespace_selector["$comment"] = (
    "guardrail 7: must exclude kube-system, kube-public and kube-node-lease "
    "(kubernetes.io/metadata.name NotIn)"
)
namespace_selector["required"] = ["matchExpressions"]
namespace_selector["properties"]["matchExpressions"]["contains"] = {
    "type": "object",
    "required": ["key", "operator", "values"],
    "properties": {
        "key": {"const": "kubernetes.io/metadata.name"},
        "operator": {"const": "NotIn"},
        "values": {
            "type": "array",
            "allOf": [
                {"contains": {"const": ns}} for ns in ("kube-system", "kube-public", "kube-node-lease")
            ],
        },
    },
}

# Kubernetes objects passed through verbatim (affinity terms, tolerations, env, security contexts, ...):
# their own API server validates them, so the schema leaves their keys open. Everything else is closed
# by `closed()` below: an unknown key at any level of the chart's own values fails the install.
K8S_OBJECT = {"type": "object", "additionalProperties": True}
K8S_LIST = {"type": "array"}
STRING_MAP = {"type": "object", "additionalProperties": {"type": "string"}}
resources = {
    "type": "object",
    "properties": {"requests": STRING_MAP | {"additionalProperties": True},
                   "limits": STRING_MAP | {"additionalProperties": True}, "claims": K8S_LIST},
}
aux = {
    "type": "object",
    "properties": {
        "enabled": {"type": "boolean"},
        "resources": resources,
        "affinity": K8S_OBJECT,
        "nodeSelector": STRING_MAP,
        "tolerations": K8S_LIST,
    },
}
PROBE = {
    "type": "object",
    "properties": {
        "path": {"type": "string", "pattern": "^(/.*)?$"},
        "initialDelaySeconds": {"type": "integer", "minimum": 0},
        "periodSeconds": {"type": "integer", "minimum": 1},
        "timeoutSeconds": {"type": "integer", "minimum": 1},
        "failureThreshold": {"type": "integer", "minimum": 1},
    },
}
PROBE_TIMING = {"type": "object", "properties": {k: v for k, v in PROBE["properties"].items() if k != "path"}}
PORT = {"type": "integer", "minimum": 1, "maximum": 65535}
DURATION = {"type": "string", "pattern": "^[0-9]+(ms|s|m|h)$"}


def with_props(base: dict, **props: dict) -> dict:
    out = json.loads(json.dumps(base))
    out["properties"].update(props)
    return out


def closed(node: object) -> None:
    """Forbid unknown keys in every object schema that lists properties and does not say otherwise."""
    if not isinstance(node, dict):
        return
    if "properties" in node and "additionalProperties" not in node:
        node["additionalProperties"] = False
    for child in node.get("properties", {}).values():
        closed(child)
    for key in ("items", "additionalProperties"):
        if isinstance(node.get(key), dict):
            closed(node[key])


schema = {
    "$schema": "http://json-schema.org/draft-07/schema#",
    "title": "Valdrix Gate Helm chart values",
    "type": "object",
    "required": [
        "image",
        "replicaCount",
        "autoscaling",
        "deploymentStrategy",
        "antiAffinityPreset",
        "affinity",
        "service",
        "config",
        "database",
        "signing",
        "enforcementWebhook",
    ],
    "properties": {
        "global": K8S_OBJECT,
        "nameOverride": {"type": "string"},
        "fullnameOverride": {"type": "string"},
        "image": {
            "type": "object",
            "required": ["repository"],
            "properties": {
                "repository": {"type": "string", "minLength": 1},
                "tag": {"type": "string"},
                "digest": {"type": "string", "pattern": "^(sha256:[a-f0-9]{64})?$"},
                "pullPolicy": {"enum": ["Always", "IfNotPresent", "Never"]},
            },
        },
        "imagePullSecrets": K8S_LIST,
        "replicaCount": {"type": "integer", "minimum": 0},
        "autoscaling": {
            "type": "object",
            "required": ["enabled", "minReplicas", "maxReplicas"],
            "properties": {
                "enabled": {"type": "boolean"},
                "minReplicas": {"type": "integer", "minimum": 1},
                "maxReplicas": {"type": "integer", "minimum": 1},
                "targetCPUUtilizationPercentage": {"type": "integer", "minimum": 1, "maximum": 100},
            },
        },
        "deploymentStrategy": {
            "type": "object",
            "required": ["type"],
            "additionalProperties": False,
            "properties": {
                "type": {"enum": ["RollingUpdate", "Recreate"]},
                "rollingUpdate": {
                    "type": "object",
                    "additionalProperties": False,
                    "properties": {"maxUnavailable": INT_OR_PERCENT, "maxSurge": INT_OR_PERCENT},
                },
            },
        },
        "antiAffinityPreset": {"enum": ["hard", "soft", "none"]},
        "affinity": {
            "type": "object",
            "additionalProperties": True,
            "properties": {
                "podAntiAffinity": {
                    "type": "object",
                    "additionalProperties": True,
                    "properties": {
                        "requiredDuringSchedulingIgnoredDuringExecution": {
                            "type": "array",
                            "items": {
                                "type": "object",
                                "additionalProperties": True,
                                "required": ["topologyKey"],
                                "properties": {"topologyKey": {"type": "string", "minLength": 1}},
                            },
                        },
                        "preferredDuringSchedulingIgnoredDuringExecution": K8S_LIST,
                    },
                }
            },
        },
        "zoneSpread": {
            "type": "object",
            "properties": {
                "enabled": {"type": "boolean"},
                "maxSkew": {"type": "integer", "minimum": 1},
                "whenUnsatisfiable": {"enum": ["ScheduleAnyway", "DoNotSchedule"]},
            },
        },
        "topologySpreadConstraints": K8S_LIST,
        "nodeSelector": STRING_MAP,
        "tolerations": K8S_LIST,
        "priorityClassName": {"type": "string"},
        "terminationGracePeriodSeconds": {"type": "integer", "minimum": 0},
        "podAnnotations": STRING_MAP,
        "podLabels": STRING_MAP,
        "serviceAccount": {
            "type": "object",
            "properties": {
                "create": {"type": "boolean"},
                "name": {"type": "string"},
                "annotations": STRING_MAP,
                "automountServiceAccountToken": {"type": "boolean"},
            },
        },
        "podSecurityContext": K8S_OBJECT,
        "securityContext": K8S_OBJECT,
        "resources": resources,
        "service": {
            "type": "object",
            "required": ["httpPort"],
            "properties": {
                "type": {"enum": ["ClusterIP", "NodePort", "LoadBalancer"]},
                "httpPort": PORT,
                "annotations": STRING_MAP,
            },
        },
        "probes": {
            "type": "object",
            "properties": {"liveness": PROBE, "readiness": PROBE, "startup": PROBE},
        },
        "config": {
            "type": "object",
            "required": ["gateTimeoutSeconds"],
            "properties": {
                "clusterName": {"type": "string", "minLength": 1},
                "workers": {"type": "integer", "minimum": 1, "maximum": 64},
                "gateConcurrency": {"type": "integer", "minimum": 1, "maximum": 200},
                "gateTimeoutSeconds": {"type": "number", "exclusiveMinimum": 0, "maximum": 30},
                "publicUrl": {"type": "string"},
                "logLevel": {"enum": ["debug", "info", "warning", "error", "critical"]},
                "extraEnv": K8S_LIST,
            },
        },
        "database": {
            "type": "object",
            "properties": {
                "existingSecret": {"type": "string"},
                "secretKey": {"type": "string", "minLength": 1},
                "url": {"type": "string", "pattern": "^(postgresql(\\+psycopg)?://.+)?$"},
            },
            "anyOf": [
                {"required": ["existingSecret"], "properties": {"existingSecret": {"minLength": 1}}},
                {"required": ["url"], "properties": {"url": {"minLength": 1}}},
            ],
        },
        "signing": {
            "type": "object",
            "required": ["existingSecret"],
            "properties": {
                "existingSecret": {"type": "string", "minLength": 1},
                "activeKid": {"type": "string"},
            },
        },
        # The price book's own format is validated by the server at start-up (docs/kubernetes-pricing.md).
        "pricing": {"type": "object", "properties": {"kubernetes": K8S_OBJECT}},
        "enforcementWebhook": {
            "type": "object",
            "required": [
                "enabled",
                "failurePolicy",
                "timeoutSeconds",
                "service",
                "path",
                "podDisruptionBudget",
                "certManager",
                "namespaceSelector",
                "admissionReviewVersions",
                "rules",
            ],
            "properties": {
                "enabled": {"type": "boolean"},
                "failurePolicy": {"enum": ["Ignore", "Fail"]},
                "timeoutSeconds": {"type": "integer", "minimum": 1, "maximum": 30},
                "service": {
                    "type": "object",
                    "required": ["port"],
                    "properties": {
                        "namespace": {"type": "string"},
                        "name": {
                            "type": "string",
                            "pattern": "^([a-z]([-a-z0-9]*[a-z0-9])?)?$",
                            "maxLength": 63,
                        },
                        "port": PORT,
                    },
                },
                "path": {"type": "string", "pattern": "^/"},
                "podDisruptionBudget": {
                    "type": "object",
                    "required": ["enabled", "maxUnavailable"],
                    "properties": {"enabled": {"type": "boolean"}, "maxUnavailable": INT_OR_PERCENT},
                },
                "certManager": {
                    "type": "object",
                    "required": ["enabled"],
                    "properties": {"enabled": {"type": "boolean"}, "injectorSecretName": {"type": "string"}},
                },
                "caBundle": {"type": "string"},
                "tls": {"type": "object", "properties": {"secretName": {"type": "string"}}},
                "namespaceSelector": namespace_selector,
                "objectSelector": label_selector,
                "excludedUsernames": {"type": "array", "items": {"type": "string", "minLength": 1}},
                "excludedGroups": {"type": "array", "items": {"type": "string", "minLength": 1}},
                "matchConditions": {
                    "type": "array",
                    "maxItems": 61,
                    "items": {
                        "type": "object",
                        "required": ["name", "expression"],
                        "properties": {
                            "name": {"type": "string", "minLength": 1, "maxLength": 63},
                            "expression": {"type": "string", "minLength": 1},
                        },
                    },
                },
                "admissionReviewVersions": {
                    "$comment": "guardrail 8: must include v1",
                    "type": "array",
                    "minItems": 1,
                    "uniqueItems": True,
                    "items": {"enum": ["v1", "v1beta1"]},
                    "contains": {"const": "v1"},
                },
                "rules": {
                    "type": "array",
                    "minItems": 1,
                    "items": {
                        "type": "object",
                        "required": ["apiGroups", "apiVersions", "operations", "resources"],
                        "properties": {
                            "apiGroups": {"type": "array", "minItems": 1, "items": {"type": "string"}},
                            "apiVersions": {"type": "array", "minItems": 1, "items": {"type": "string"}},
                            "resources": {"type": "array", "minItems": 1,
                                          "items": {"type": "string", "minLength": 1}},
                            "operations": {
                                "type": "array",
                                "minItems": 1,
                                "items": {"enum": ["CREATE", "UPDATE", "DELETE", "CONNECT", "*"]},
                            },
                            "scope": {"enum": ["Cluster", "Namespaced", "*"]},
                        },
                    },
                },
                "authentication": {
                    "type": "object",
                    "properties": {
                        "mode": {"enum": ["clusterTenant", "mtls", "apiKey"]},
                        "tenant": {"type": "string"},
                        "mtls": {
                            "type": "object",
                            "properties": {
                                "clientCASecretName": {"type": "string"},
                                "clientCommonName": {"type": "string", "minLength": 1},
                                "tenants": {
                                    "type": "object",
                                    "additionalProperties": {"type": "string", "minLength": 1},
                                },
                            },
                        },
                    },
                },
            },
        },
        "validatingAdmissionPolicy": {
            "type": "object",
            "properties": {"enabled": {"type": "boolean"}, "manifests": {"type": "string"}},
        },
        "networkPolicy": {
            "type": "object",
            "properties": {
                "enabled": {"enum": ["auto", True, False]},
                "webhookFrom": K8S_LIST,
                "httpFrom": K8S_LIST,
            },
        },
        "migrations": with_props(aux, backoffLimit={"type": "integer", "minimum": 0},
                                 activeDeadlineSeconds={"type": "integer", "minimum": 1}),
        "reconcile": with_props(
            aux,
            schedule={"type": "string", "minLength": 1},
            concurrencyPolicy={"enum": ["Allow", "Forbid", "Replace"]},
            startingDeadlineSeconds={"type": "integer", "minimum": 0},
            successfulJobsHistoryLimit={"type": "integer", "minimum": 0},
            failedJobsHistoryLimit={"type": "integer", "minimum": 0},
            backoffLimit={"type": "integer", "minimum": 0},
            activeDeadlineSeconds={"type": "integer", "minimum": 1},
        ),
        "worker": with_props(
            aux,
            replicaCount={"type": "integer", "minimum": 0},
            metricsPort=PORT,
            probes={"type": "object", "properties": {"liveness": PROBE_TIMING, "readiness": PROBE_TIMING}},
        ),
        "monitoring": {
            "type": "object",
            "properties": {
                "enabled": {"type": "boolean"},
                "podAnnotations": {"type": "boolean"},
                "serviceMonitor": {
                    "type": "object",
                    "properties": {
                        "enabled": {"type": "boolean"},
                        "interval": DURATION,
                        "scrapeTimeout": DURATION,
                        "labels": STRING_MAP,
                    },
                },
                "prometheusRule": {
                    "type": "object",
                    "properties": {
                        "enabled": {"type": "boolean"},
                        "labels": STRING_MAP,
                        "runbookBaseUrl": {"type": "string", "pattern": "^https?://"},
                        "gateFailuresPer10m": {"type": "number", "minimum": 0},
                        "lockEventsPer10m": {"type": "number", "minimum": 0},
                        "latencyP95Seconds": {"type": "number", "exclusiveMinimum": 0},
                        "approvalBacklog": {"type": "number", "minimum": 0},
                        "approvalOldestPendingSeconds": {"type": "number", "minimum": 0},
                        "budgetUtilisationRatio": {"type": "number", "exclusiveMinimum": 0},
                        "sweepFailuresPer1h": {"type": "number", "minimum": 0},
                        "exportErrorsPer1h": {"type": "number", "minimum": 0},
                    },
                },
                "grafanaDashboard": {
                    "type": "object",
                    "properties": {
                        "enabled": {"type": "boolean"},
                        "label": {"type": "string", "minLength": 1},
                        "labelValue": {"type": "string"},
                        "folder": {"type": "string"},
                        "namespace": {"type": "string"},
                    },
                },
            },
        },
    },
    "allOf": guardrails,
}

closed(schema)
print(json.dumps(schema, indent=2))
