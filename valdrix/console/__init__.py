"""console: server-rendered pages for approvers and FinOps, signed in with an API key, no scripts needed."""
