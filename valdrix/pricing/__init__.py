"""Pure cost estimators for Terraform plans, Infracost output and Kubernetes workloads, priced from data files."""
