"""TLS problems in words: swarmctl's own certificate files checked before any
connection, and a failed handshake with a manager explained from what gRPC said.

gRPC reports a failed handshake as UNAVAILABLE, like a manager that is not there, with
OpenSSL's words at the end ("certificate signature failure: OK"); a user needs to know
which certificate is wrong and where to get the right one.
"""

from __future__ import annotations

import re
import time

from common import pki

_ADMIN = "<state-dir>/admin/ on a manager"
_ADMIN_FILES = f"ca.pem, cert.pem and key.pem in {_ADMIN}"

# What OpenSSL/gRPC say, and what it means. The first pattern that matches wins.
_HANDSHAKE_PROBLEMS: list[tuple[re.Pattern[str], str]] = [
    (
        re.compile(r"certificate has expired|CERTIFICATE_EXPIRED", re.IGNORECASE),
        "the manager's certificate has expired (or this machine's clock is wrong)",
    ),
    (
        re.compile(
            r"BAD_SIGNATURE|certificate signature failure|CERTIFICATE_VERIFY_FAILED|"
            r"unable to get (local )?issuer|self[- ]signed",
            re.IGNORECASE,
        ),
        "the manager's certificate is not signed by the CA in --tlscacert: give this "
        f"cluster's CA (ca.pem in {_ADMIN})",
    ),
    (
        re.compile(r"Hostname Verification|No match found for server name", re.IGNORECASE),
        f"the server's certificate does not name {pki.SERVER_NAME}: it is no swarmlet "
        "manager's certificate; check the address",
    ),
    (
        re.compile(
            r"WRONG_VERSION_NUMBER|packet length too long|HTTP_REQUEST|record layer failure",
            re.IGNORECASE,
        ),
        "the server does not speak TLS there (a plain-text port, or another protocol); "
        "check the address",
    ),
    (
        re.compile(r"Socket closed|Connection reset|Broken pipe", re.IGNORECASE),
        "the manager closed the connection during the handshake: it did not accept the "
        "certificate in --tlscert (the control API takes an admin certificate of this "
        f"cluster: cert.pem and key.pem in {_ADMIN})",
    ),
    (
        re.compile(r"security handshaker", re.IGNORECASE),
        "the certificate or key given cannot be used: check --tlscert and --tlskey",
    ),
]
_OTHER_HANDSHAKE_FAILURE = re.compile(r"handshake|SSL_ERROR|TSI_|certificate", re.IGNORECASE)


def handshake_problem(details: str) -> str | None:
    """What a failed connection's gRPC details say went wrong in the TLS handshake, or
    None when they do not point at TLS (the connection itself failed)."""
    for pattern, problem in _HANDSHAKE_PROBLEMS:
        if pattern.search(details):
            return problem
    if _OTHER_HANDSHAKE_FAILURE.search(details):
        said = details.rsplit("last error: ", 1)[-1].strip()
        return f"{said} (check --tlscacert, --tlscert and --tlskey: {_ADMIN_FILES})"
    return None


def check_files(ca: bytes, cert: bytes, key: bytes, names: tuple[str, str, str]) -> None:
    """Refuse files that cannot make a TLS connection, naming the file and why (ValueError):
    not PEM, a key that is not the certificate's, a certificate out of its validity."""
    ca_flag, cert_flag, key_flag = names
    try:
        ca_cert = pki.load_cert(ca)
    except pki.PKIError:
        raise ValueError(f"{ca_flag} is not a PEM certificate (give {_ADMIN_FILES})") from None
    try:
        client_cert = pki.load_cert(cert)
    except pki.PKIError:
        raise ValueError(f"{cert_flag} is not a PEM certificate (give {_ADMIN_FILES})") from None
    try:
        private_key = pki.load_key(key)
    except (ValueError, TypeError, pki.PKIError):
        raise ValueError(
            f"{key_flag} is not an unencrypted PEM ECDSA key (give {_ADMIN_FILES})"
        ) from None
    if private_key.public_key() != client_cert.public_key():
        raise ValueError(
            f"{key_flag} is not the key of the certificate in {cert_flag} (give {_ADMIN_FILES})"
        )
    now = time.time()
    for flag, certificate in ((ca_flag, ca_cert), (cert_flag, client_cert)):
        if certificate.not_valid_after_utc.timestamp() < now:
            raise ValueError(
                f"the certificate in {flag} expired on "
                f"{certificate.not_valid_after_utc:%Y-%m-%d %H:%M} UTC: give a current one "
                f"({_ADMIN_FILES})"
            )
