"""Ferry's admission webhooks: invalid configuration is refused before the API server stores it.

* :mod:`~ferry.webhooks.configurations` — the Validating- and MutatingWebhookConfiguration (one
  definition: registered by the operator, rendered into the repository's ``webhooks/``).
* :mod:`~ferry.webhooks.server` — the HTTPS endpoint (Kopf's ``WebhookServerProtocol``): whom it
  trusts (the API server's client certificate), how much it reads, denials instead of errors.
* :mod:`~ferry.webhooks.handlers` — the Kopf handlers, a few lines each over
  :mod:`ferry.domain.admission` (the checks the reconciler runs too).
* :mod:`~ferry.webhooks.registration` — start-up: configure Kopf, register the configurations,
  report ready once the API server demonstrably calls the webhook.

Certificates are made and read by :mod:`ferry.tls`. Decisions: docs/decisions/0005 and 0013.
"""
