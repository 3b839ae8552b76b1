"""A local Ferry stack made of real servers running as plain processes on loopback.

Docker and kind do not run on the machines Ferry is built on, so — like controller-runtime's
envtest — the control plane (etcd + kube-apiserver), PostgreSQL, Redis and a Vault dev server run
as local processes with their state in a directory of their own. The test fixtures and
`ferry dev up` both use this package, so what a developer runs by hand is what the tests run.
"""

from ferry.devenv.process import StartupError

__all__ = ["StartupError"]
