"""Valdrix Gate: pre-provision cloud-cost enforcement control plane."""

__version__ = "0.1.0"
