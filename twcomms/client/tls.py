"""
TLS options for a client: certificate verification on, the hostname
checked, trust roots from a PEM file or Twisted's objects.

Thread: any (it only builds options).
"""

from __future__ import annotations

from typing import Any

__all__ = ["client_tls_options"]


def client_tls_options(
    hostname: str, *, trust_root: Any = None, client_certificate: Any = None
) -> Any:
    """
    TLS options for a client: certificate verification on, hostname checked.

    @param trust_root: see L{CommsClientFactory.connectSSL}.
    """
    try:
        from twisted.internet import ssl
    except ImportError as e:  # pragma: no cover - depends on the install
        raise ImportError(
            "TLS needs pyOpenSSL and service_identity: pip install 'twcomms[tls]'"
        ) from e
    if isinstance(trust_root, str):
        with open(trust_root, "rb") as f:
            pem = f.read()
        marker = b"-----BEGIN CERTIFICATE-----"
        certificates = [
            ssl.Certificate.loadPEM(marker + block) for block in pem.split(marker)[1:]
        ]
        if not certificates:
            raise ValueError(f"no PEM certificate in trust_root {trust_root!r}")
        trust_root = ssl.trustRootFromCertificates(certificates)
    if trust_root is None:
        trust_root = ssl.platformTrust()
    return ssl.optionsForClientTLS(
        hostname, trustRoot=trust_root, clientCertificate=client_certificate
    )
