"""``ferry history-api``: revisions and the audit trail as an aggregated Kubernetes API.

    server.py      the HTTPS server: discovery, list/get, Tables, selectors, RBAC per request
    frontproxy.py  whom it trusts: the API server's front proxy, verified by its certificate

The resources themselves (objects, names, Table columns, selectors) are pure and shared with
the CLI: ``ferry.history.resources``. Decision 0021; user guide docs/history-api.md.
"""
