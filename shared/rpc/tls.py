"""TLS and mutual TLS for servers and for the SessionService -> ConfigService channel.

Certificates and keys are read from files named in settings, at start-up.
"""

from __future__ import annotations

from pathlib import Path

import grpc


def _read(path: str) -> bytes:
    return Path(path).read_bytes()


def server_credentials(
    cert_file: str, key_file: str, client_ca_file: str = ""
) -> grpc.ServerCredentials:
    """TLS with cert/key; with client_ca_file, clients must present a certificate it signed."""
    return grpc.ssl_server_credentials(
        [(_read(key_file), _read(cert_file))],
        root_certificates=_read(client_ca_file) if client_ca_file else None,
        require_client_auth=bool(client_ca_file),
    )


def channel_credentials(
    ca_file: str = "", cert_file: str = "", key_file: str = ""
) -> grpc.ChannelCredentials:
    """Trusts ca_file (or the system roots) and, with cert and key, presents a client cert."""
    return grpc.ssl_channel_credentials(
        root_certificates=_read(ca_file) if ca_file else None,
        private_key=_read(key_file) if key_file else None,
        certificate_chain=_read(cert_file) if cert_file else None,
    )
