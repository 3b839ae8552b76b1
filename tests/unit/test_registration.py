"""The webhooks' certificate follower (ferry.webhooks.registration) must not die quietly: a pod
that goes on serving a certificate nobody renews any more is refused by the API server once the
leader rotates it. Its end ends registration, which stops the process (decision 0035)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pytest

from ferry.settings import WebhookSettings
from ferry.webhooks import registration


class Serving:
    """A webhook server already listening: it announces its client config once, then serves."""

    certificate = None

    async def client_configs(self) -> AsyncIterator[dict[str, Any]]:
        yield {"url": "https://127.0.0.1:9443"}
        await asyncio.Event().wait()


class Client:
    closed = False

    async def close(self) -> None:
        self.closed = True


@pytest.mark.parametrize(
    ("ending", "raised"),
    [
        (OSError("No space left on device"), "No space left"),  # writing the files failed
        (None, "stopped following the webhook certificate Secret"),  # it never returns if well
    ],
)
async def test_when_following_the_certificate_secret_ends_registration_fails(
    monkeypatch: pytest.MonkeyPatch, ending: Exception | None, raised: str
) -> None:
    client = Client()

    async def follow(*_: Any) -> None:
        await asyncio.sleep(0.05)
        if ending is not None:
            raise ending

    monkeypatch.setattr(registration, "make_client", lambda _: client)
    monkeypatch.setattr(registration, "follow", follow)
    ready = asyncio.Event()
    settings = WebhookSettings(port=9443, cert_secret="ferry-system/ferry-webhook-tls")
    with pytest.raises(Exception, match=raised):
        await asyncio.wait_for(
            registration.register(Serving(), settings, None, ready),  # type: ignore[arg-type]
            timeout=5,
        )
    assert ready.is_set()  # it had served meanwhile
    assert client.closed
