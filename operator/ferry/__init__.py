"""Ferry: validated, versioned, audited configuration for Kubernetes workloads."""

__version__ = "0.1.0"
