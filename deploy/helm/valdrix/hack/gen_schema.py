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

resources = {"type": "object"}
aux = {
    "type": "object",
    "properties": {
        "resources": resources,
        "affinity": {"type": "object"},
        "nodeSelector": {"type": "object"},
        "tolerations": {"type": "array"},
    },
}

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
        "imagePullSecrets": {"type": "array"},
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
            "properties": {
                "podAntiAffinity": {
                    "type": "object",
                    "properties": {
                        "requiredDuringSchedulingIgnoredDuringExecution": {
                            "type": "array",
                            "items": {
                                "type": "object",
                                "required": ["topologyKey"],
                                "properties": {"topologyKey": {"type": "string", "minLength": 1}},
                            },
                        },
                        "preferredDuringSchedulingIgnoredDuringExecution": {"type": "array"},
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
        "topologySpreadConstraints": {"type": "array"},
        "nodeSelector": {"type": "object"},
        "tolerations": {"type": "array"},
        "resources": resources,
        "service": {
            "type": "object",
            "required": ["httpPort"],
            "properties": {
                "type": {"enum": ["ClusterIP", "NodePort", "LoadBalancer"]},
                "httpPort": {"type": "integer", "minimum": 1, "maximum": 65535},
            },
        },
        "probes": {
            "type": "object",
            "properties": {
                "readiness": {
                    "type": "object",
                    "properties": {"path": {"type": "string", "pattern": "^(/.*)?$"}},
                }
            },
        },
        "config": {
            "type": "object",
            "required": ["gateTimeoutSeconds"],
            "properties": {
                "clusterName": {"type": "string", "minLength": 1},
                "workers": {"type": "integer", "minimum": 1, "maximum": 64},
                "gateTimeoutSeconds": {"type": "number", "exclusiveMinimum": 0, "maximum": 30},
                "publicUrl": {"type": "string"},
                "logLevel": {"enum": ["debug", "info", "warning", "error", "critical"]},
                "extraEnv": {"type": "array"},
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
        "pricing": {"type": "object", "properties": {"kubernetes": {"type": "object"}}},
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
                        "port": {"type": "integer", "minimum": 1, "maximum": 65535},
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
                "matchConditions": {
                    "type": "array",
                    "maxItems": 64,
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
        "networkPolicy": {
            "type": "object",
            "properties": {
                "enabled": {"type": "boolean"},
                "webhookFrom": {"type": "array"},
                "httpFrom": {"type": "array"},
            },
        },
        "migrations": aux,
        "reconcile": aux,
        "worker": aux,
        "monitoring": {"type": "object"},
    },
    "allOf": guardrails,
}

print(json.dumps(schema, indent=2))
