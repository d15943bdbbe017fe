"""
TLS material for tests, made offline with C{trustme}: a throwaway CA and a
server certificate for C{localhost} and C{127.0.0.1} (subjectAltName DNS and
IP, so hostname verification passes either way).
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import trustme
from twisted.internet.endpoints import quoteStringArgument


@dataclass(frozen=True)
class TLSFiles:
    """
    PEM files for one CA and one server certificate it signed.

    @ivar ca: the C{trustme.CA}.
    @ivar ca_pem: path to the CA certificate (what a client trusts).
    @ivar server_pem: path to the server's private key and certificate
        chain, in one file.
    """

    ca: trustme.CA
    ca_pem: str
    server_pem: str

    def ssl_description(self, port: int = 0, interface: str = "127.0.0.1") -> str:
        """
        A Twisted C{ssl:} server endpoint description serving this
        certificate (the key and the certificate come from the same file).
        """
        pem = quoteStringArgument(self.server_pem)
        return f"ssl:{port}:interface={interface}:privateKey={pem}:certKey={pem}"


def make_tls_files(directory: str, name: str = "tls") -> TLSFiles:
    """
    Make a new CA and a server certificate for C{localhost} / C{127.0.0.1}
    and write them as PEM files under C{directory}.
    """
    ca = trustme.CA()
    server_cert = ca.issue_cert("localhost", "127.0.0.1")
    ca_pem = os.path.join(directory, f"{name}-ca.pem")
    server_pem = os.path.join(directory, f"{name}-server.pem")
    ca.cert_pem.write_to_path(ca_pem)
    server_cert.private_key_and_cert_chain_pem.write_to_path(server_pem)
    return TLSFiles(ca=ca, ca_pem=ca_pem, server_pem=server_pem)
