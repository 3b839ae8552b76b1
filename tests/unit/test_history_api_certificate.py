"""ferry.historyapi.server.follow_certificate: a renewed serving certificate is served from the
next TLS handshake on, without a restart (a real TLS server and client on loopback)."""

from __future__ import annotations

import asyncio
import ssl
from pathlib import Path

from cryptography import x509

from ferry.historyapi.server import follow_certificate
from ferry.tls import CertificateAuthority, server_context


async def served_serial(port: int, ca: Path) -> int:
    client = ssl.create_default_context(cafile=str(ca))
    client.check_hostname = False
    _, writer = await asyncio.open_connection("127.0.0.1", port, ssl=client)
    der = writer.get_extra_info("ssl_object").getpeercert(binary_form=True)
    writer.close()
    return int(x509.load_der_x509_certificate(der).serial_number)


async def test_a_renewed_certificate_is_served_without_a_restart(tmp_path: Path) -> None:
    authority = CertificateAuthority.create("test-ca")
    ca, cert, key = tmp_path / "ca.crt", tmp_path / "tls.crt", tmp_path / "tls.key"
    ca.write_bytes(authority.cert_pem)
    authority.issue("127.0.0.1", hosts=("127.0.0.1",)).write(cert, key)
    context = server_context(cert, key)

    async def nothing(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.close()

    server = await asyncio.start_server(nothing, "127.0.0.1", 0, ssl=context)
    port = server.sockets[0].getsockname()[1]
    follower = asyncio.create_task(follow_certificate(context, cert, key, every_seconds=0.05))
    try:
        first = await served_serial(port, ca)
        cert.write_text("-----BEGIN CERTIFICATE-----\ntruncated")  # caught half-written
        await asyncio.sleep(0.2)
        assert await served_serial(port, ca) == first  # the previous pair is still served
        authority.issue("127.0.0.1", hosts=("127.0.0.1",)).write(cert, key)
        for _ in range(100):
            if await served_serial(port, ca) != first:
                break
            await asyncio.sleep(0.05)
        else:
            raise AssertionError("the renewed certificate was not served")
    finally:
        follower.cancel()
        server.close()
        await server.wait_closed()
