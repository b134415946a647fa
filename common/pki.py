"""The cluster's PKI: root CA, node certificates and join tokens, as SwarmKit has them.

- Keys are ECDSA P-256. The root CA is self-signed and lives (key included) in the
  cluster object in etcd; only managers can read it.
- A node certificate has CN = node id, OU = its role (swarm-worker, swarm-manager, or
  swarm-admin for operators' client certificates), O = the cluster id. Every manager's
  server certificate also names SERVER_NAME, which clients verify, so any manager of the
  cluster can serve any node.
- A join token is `SWMTKN-1-<digest>-<secret>`: the digest (sha256 of the root CA
  certificate, base36, 50 characters) lets a new node check the CA it downloads; the
  secret (25 base36 characters) says which role it may join as.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import ipaddress
import os
import random
import secrets
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from common.ids import to_base36

ROLE_WORKER = "swarm-worker"
ROLE_MANAGER = "swarm-manager"
ROLE_ADMIN = "swarm-admin"
ROLES = (ROLE_WORKER, ROLE_MANAGER, ROLE_ADMIN)
# The name every manager certificate carries and every client verifies.
SERVER_NAME = "swarmlet-manager"
TOKEN_PREFIX = "SWMTKN-1-"
DIGEST_LENGTH = 50
SECRET_LENGTH = 25
DEFAULT_NODE_CERT_LIFETIME = 90 * 24 * 3600.0
# Certificates are valid from a little before they are issued, for clocks that lag.
BACKDATE = 60.0
ROOT_CA_LIFETIME = 20 * 365 * 24 * 3600.0


def ca_address(dispatcher_addr: str) -> str:
    """Where a manager serves certificates to joining nodes: the port after its dispatcher's.

    Joining nodes have no certificate yet, so they cannot reach the dispatcher, which
    accepts mutual TLS only; the CA's port is TLS with a server certificate only.
    """
    host, _, port = dispatcher_addr.rpartition(":")
    return f"{host}:{int(port) + 1}"


class PKIError(Exception):
    """A certificate, key or token that cannot be used; the message says why."""


def new_key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def load_key(pem: bytes) -> ec.EllipticCurvePrivateKey:
    key = serialization.load_pem_private_key(pem, password=None)
    if not isinstance(key, ec.EllipticCurvePrivateKey):
        raise PKIError("the key is not an ECDSA key")
    return key


def load_cert(pem: bytes) -> x509.Certificate:
    try:
        return x509.load_pem_x509_certificate(pem)
    except ValueError as exc:
        raise PKIError(f"not a PEM certificate: {exc}") from None


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


@dataclass(frozen=True)
class RootCA:
    """The cluster's root certificate authority."""

    cert_pem: bytes
    key_pem: bytes

    @classmethod
    def create(cls, lifetime: float = ROOT_CA_LIFETIME) -> RootCA:
        key = new_key()
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "swarmlet-root-ca")])
        now = _now()
        cert = (
            x509.CertificateBuilder()
            .subject_name(name)
            .issuer_name(name)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(minutes=5))
            .not_valid_after(now + dt.timedelta(seconds=lifetime))
            .add_extension(x509.BasicConstraints(ca=True, path_length=1), critical=True)
            .add_extension(
                x509.KeyUsage(
                    digital_signature=True,
                    key_cert_sign=True,
                    crl_sign=True,
                    content_commitment=False,
                    key_encipherment=False,
                    data_encipherment=False,
                    key_agreement=False,
                    encipher_only=False,
                    decipher_only=False,
                ),
                critical=True,
            )
            .sign(key, hashes.SHA256())
        )
        return cls(cert.public_bytes(serialization.Encoding.PEM), key_pem(key))

    @property
    def digest(self) -> str:
        return ca_digest(self.cert_pem)

    def sign(
        self,
        csr_pem: bytes,
        *,
        node_id: str,
        role: str,
        cluster_id: str,
        lifetime: float = DEFAULT_NODE_CERT_LIFETIME,
        server_names: list[str] | None = None,
    ) -> bytes:
        """A certificate for the key of `csr_pem`, naming the node, its role and cluster.

        The subject the CSR asks for is ignored: the CA decides who the node is.
        """
        if role not in ROLES:
            raise PKIError(f"unknown role {role!r}")
        try:
            csr = x509.load_pem_x509_csr(csr_pem)
        except ValueError as exc:
            raise PKIError(f"not a PEM certificate signing request: {exc}") from None
        if not csr.is_signature_valid:
            raise PKIError("the certificate signing request's signature is not valid")
        public_key = csr.public_key()
        if not isinstance(public_key, ec.EllipticCurvePublicKey) or not isinstance(
            public_key.curve, ec.SECP256R1
        ):
            raise PKIError("the certificate signing request must be for an ECDSA P-256 key")
        ca_cert = load_cert(self.cert_pem)
        ca_key = load_key(self.key_pem)
        now = _now()
        builder = (
            x509.CertificateBuilder()
            .subject_name(
                x509.Name(
                    [
                        x509.NameAttribute(NameOID.COMMON_NAME, node_id),
                        x509.NameAttribute(NameOID.ORGANIZATIONAL_UNIT_NAME, role),
                        x509.NameAttribute(NameOID.ORGANIZATION_NAME, cluster_id),
                    ]
                )
            )
            .issuer_name(ca_cert.subject)
            .public_key(public_key)
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(seconds=BACKDATE))
            .not_valid_after(min(now + dt.timedelta(seconds=lifetime), ca_cert.not_valid_after_utc))
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(
                x509.ExtendedKeyUsage(
                    [ExtendedKeyUsageOID.CLIENT_AUTH, ExtendedKeyUsageOID.SERVER_AUTH]
                ),
                critical=False,
            )
        )
        sans: list[x509.GeneralName] = [x509.DNSName(node_id)]
        for name in server_names or []:
            try:
                sans.append(x509.IPAddress(ipaddress.ip_address(name)))
            except ValueError:
                sans.append(x509.DNSName(name))
        builder = builder.add_extension(x509.SubjectAlternativeName(sans), critical=False)
        cert = builder.sign(ca_key, hashes.SHA256())
        return cert.public_bytes(serialization.Encoding.PEM)

    def issue(
        self,
        *,
        node_id: str,
        role: str,
        cluster_id: str,
        lifetime: float = DEFAULT_NODE_CERT_LIFETIME,
        server_names: list[str] | None = None,
    ) -> tuple[bytes, bytes]:
        """A new key and its certificate (for the manager's own and admin certificates)."""
        key = new_key()
        cert = self.sign(
            make_csr(key),
            node_id=node_id,
            role=role,
            cluster_id=cluster_id,
            lifetime=lifetime,
            server_names=server_names,
        )
        return key_pem(key), cert


def make_csr(key: ec.EllipticCurvePrivateKey) -> bytes:
    csr = (
        x509.CertificateSigningRequestBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "swarmlet-node")]))
        .sign(key, hashes.SHA256())
    )
    return csr.public_bytes(serialization.Encoding.PEM)


def ca_digest(cert_pem: bytes) -> str:
    """sha256 of the certificate (DER), base36, DIGEST_LENGTH characters."""
    der = load_cert(cert_pem).public_bytes(serialization.Encoding.DER)
    return to_base36(hashlib.sha256(der).digest(), DIGEST_LENGTH)


@dataclass(frozen=True)
class JoinToken:
    digest: str
    secret: str

    def __str__(self) -> str:
        return f"{TOKEN_PREFIX}{self.digest}-{self.secret}"

    @classmethod
    def new(cls, root_cert_pem: bytes) -> JoinToken:
        return cls(ca_digest(root_cert_pem), to_base36(secrets.token_bytes(16), SECRET_LENGTH))

    @classmethod
    def parse(cls, text: str) -> JoinToken:
        text = text.strip()
        if not text.startswith(TOKEN_PREFIX):
            raise PKIError(
                f"invalid join token {text[:20]!r}...: a token starts with {TOKEN_PREFIX} "
                "(get one with 'swarmctl join-token worker' on a manager)"
            )
        digest, sep, secret = text[len(TOKEN_PREFIX) :].partition("-")
        if (
            not sep
            or len(digest) != DIGEST_LENGTH
            or len(secret) != SECRET_LENGTH
            or not (digest + secret).isalnum()
        ):
            raise PKIError(
                "invalid join token: it should be SWMTKN-1-<50 characters>-<25 characters> "
                "(get one with 'swarmctl join-token worker' on a manager)"
            )
        return cls(digest.lower(), secret.lower())


@dataclass(frozen=True)
class Identity:
    """Who a certificate says its holder is."""

    node_id: str
    role: str
    cluster_id: str
    not_before: float
    not_after: float


def identity(cert_pem: bytes) -> Identity:
    cert = load_cert(cert_pem)

    def attr(oid: x509.ObjectIdentifier) -> str:
        values = cert.subject.get_attributes_for_oid(oid)
        return str(values[0].value) if values else ""

    return Identity(
        node_id=attr(NameOID.COMMON_NAME),
        role=attr(NameOID.ORGANIZATIONAL_UNIT_NAME),
        cluster_id=attr(NameOID.ORGANIZATION_NAME),
        not_before=cert.not_valid_before_utc.timestamp(),
        not_after=cert.not_valid_after_utc.timestamp(),
    )


def renewal_time(cert_pem: bytes, rng: random.Random | None = None) -> float:
    """When to renew: a random point between 50% and 80% of the certificate's lifetime."""
    ident = identity(cert_pem)
    issued = ident.not_before + BACKDATE
    share = (rng or random).uniform(0.5, 0.8)
    return issued + share * (ident.not_after - issued)


def write_private(path: Path, data: bytes) -> None:
    """Write `data` to `path` readable by the owner only, atomically."""
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(data)
    os.chmod(tmp, 0o600)
    tmp.replace(path)
