"""Policy portability (runbook §4, CEL profile): the database-free part of a policy, enforced by the API server."""
