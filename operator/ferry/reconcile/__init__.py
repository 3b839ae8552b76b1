"""Level-triggered reconciliation: a work queue of object keys and the reconcilers that drain it.

Kopf watches and indexes the cluster; its handlers only enqueue keys (see ``ferry.handlers``). The
reconcilers read the indexed world, call the pure domain code, and write through the adapters.
Because a reconcile always starts from the whole desired state, repeating it after a crash or a
missed event is harmless.
"""
