"""integrations: third-party callers of the gate (HCP Terraform / Terraform Enterprise run tasks)."""
