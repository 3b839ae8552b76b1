"""Pure domain code: no I/O, no clock, no Kubernetes client.

Everything here takes plain data (dicts parsed from custom resources) and returns plain data, so the
operator, the admission webhook, the CLI and the read API share one implementation and unit tests
need nothing running.
"""
