"""Pure cost estimators: Terraform plans, Infracost output and Kubernetes workloads, priced from data files."""
