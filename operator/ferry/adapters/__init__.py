"""Adapters: the only modules that talk to the outside (Kubernetes, PostgreSQL, Redis, Vault)."""
