"""The manifest of a purified or protected image, and its C2PA signature.

`ImageManifest` says what was done (method, parameters, schedule), by what (service version, model
and the sha256 of its weights, perceptual distance), to what (the sha256 of the uploaded bytes, their
size), with what effect (consistency error and detection score before and after, distance to the
input), and when. A worker embeds it in the result PNG as a C2PA manifest (c2pa-python, the
reference SDK): a custom assertion `org.impress.manifest` holding this JSON, a `c2pa.actions`
assertion, and the input as the `parentOf` ingredient, signed with ES256 by the certificate of
IMPRESS_SIGNING_CERT / IMPRESS_SIGNING_KEY, or else by a development certificate made once per
service (stored in Redis, shared by every worker) and marked as such. The JSON is also kept in the job
record, for GET /v1/jobs/{id}/results/{i}/manifest. `read_manifest` (`impress verify FILE`) checks a
file's signature and hard binding and returns the manifest.

The c2pa and cryptography packages are imported only where signing or verifying happens: the API
never imports them.
"""
from __future__ import annotations

import datetime
import hashlib
import io
import json
from dataclasses import dataclass
from importlib.metadata import PackageNotFoundError, version
from typing import Optional

from pydantic import BaseModel, Field

ASSERTION = "org.impress.manifest"
DEVELOPMENT_SIGNER = "IMPRESS development signer (not trusted)"
# A signature that only lacks a trust anchor (the development certificate, or a private CA that the
# verifier was not given) is still a valid binding of manifest and pixels.
UNTRUSTED = "signingCredential.untrusted"


def service_version() -> str:
    try:
        return version("impress-service")
    except PackageNotFoundError:
        return "unknown"


def sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


class ManifestMethod(BaseModel):
    kind: str = Field(description="purify or protect")
    name: str = Field(description="the method: impress, amortised or cascade (purification), or the protection's name")
    parameters: dict = Field(description="every parameter the method ran with")
    schedule: Optional[str] = Field(None, description="the optimiser schedule (purification)")
    tiles: Optional[int] = Field(None, description="overlapping tiles the image was purified in (large images)")


class ManifestSoftware(BaseModel):
    service: str = "impress"
    version: str = Field(default_factory=service_version)
    model: str = Field(description="the autoencoder's name")
    model_revision: str
    model_sha256: Optional[str] = Field(None, description="sha256 of its weights file (null: a hub model not on disk)")
    perceptual: str = Field(description="the perceptual distance")
    device: str


class ManifestInput(BaseModel):
    name: str
    sha256: str = Field(description="of the uploaded bytes")
    bytes: int
    width: int
    height: int
    format: str


class ManifestEffect(BaseModel):
    consistency_before: float = Field(description="mean((x - D(E(x)))^2) of the input, pixels in [-1, 1]")
    consistency_after: float = Field(description="the same of the result")
    detection_score_before: float = Field(description="the detection score of the input: POST /v1/detect's default score (latent-shift)")
    detection_score_after: float
    distance_to_input: float = Field(description="the perceptual distance between result and input")
    psnr_db: float
    linf_255: float = Field(description="largest change of a channel, in grey levels")


class ManifestSignature(BaseModel):
    format: str = "c2pa"
    alg: str = "es256"
    issuer: str
    common_name: str
    certificate_sha256: str
    development: bool = Field(description="signed by the service's self-made development certificate: "
                                          "it binds manifest and pixels, but vouches for nobody")


class ImageManifest(BaseModel):
    job_id: str
    index: int
    created_at: datetime.datetime
    method: ManifestMethod
    software: ManifestSoftware
    input: ManifestInput
    output: dict = Field(description="name, width, height of the result PNG")
    effect: ManifestEffect
    signature: Optional[ManifestSignature] = None


class VerifiedManifest(BaseModel):
    """What `read_manifest` found in a file."""

    valid: bool = Field(description="signature and hard binding hold (trust aside)")
    trusted: bool = Field(description="the signer chains to a trust anchor the verifier was given")
    status: list[str] = Field(description="C2PA validation codes beyond success")
    manifest: Optional[ImageManifest] = None


@dataclass(frozen=True)
class Credentials:
    """A PEM certificate chain (signer first) and its PEM private key."""

    chain: str
    key: str
    development: bool

    def certificate(self):
        from cryptography import x509

        return x509.load_pem_x509_certificates(self.chain.encode())[0]

    def signature(self) -> ManifestSignature:
        from cryptography.hazmat.primitives.serialization import Encoding
        from cryptography.x509.oid import NameOID

        cert = self.certificate()
        name = lambda n, oid: ", ".join(a.value for a in n.get_attributes_for_oid(oid))  # noqa: E731
        return ManifestSignature(issuer=name(cert.issuer, NameOID.ORGANIZATION_NAME) or name(cert.issuer, NameOID.COMMON_NAME),
                                 common_name=name(cert.subject, NameOID.COMMON_NAME),
                                 certificate_sha256=sha256_hex(cert.public_bytes(Encoding.DER)),
                                 development=self.development)


def development_credentials() -> Credentials:
    """A fresh CA and ES256 signing certificate that C2PA accepts (digitalSignature, emailProtection),
    both named as development and not trusted."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    now = datetime.datetime.now(datetime.timezone.utc)

    def name(common: str) -> x509.Name:
        return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common),
                          x509.NameAttribute(NameOID.ORGANIZATION_NAME, "IMPRESS development (not trusted)")])

    def usage(sign: bool) -> x509.KeyUsage:
        return x509.KeyUsage(digital_signature=sign, content_commitment=False, key_encipherment=False,
                             data_encipherment=False, key_agreement=False, key_cert_sign=not sign, crl_sign=not sign,
                             encipher_only=False, decipher_only=False)

    def certificate(subject, issuer, public_key, signing_key, days, ca: bool):
        builder = (x509.CertificateBuilder().subject_name(subject).issuer_name(issuer).public_key(public_key)
                   .serial_number(x509.random_serial_number()).not_valid_before(now - datetime.timedelta(days=1))
                   .not_valid_after(now + datetime.timedelta(days=days))
                   .add_extension(x509.BasicConstraints(ca=ca, path_length=0 if ca else None), critical=True)
                   .add_extension(usage(sign=not ca), critical=True))
        if ca:
            builder = builder.add_extension(x509.SubjectKeyIdentifier.from_public_key(public_key), critical=False)
        else:
            builder = (builder.add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.EMAIL_PROTECTION]), critical=False)
                       .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(signing_key.public_key()),
                                      critical=False))
        return builder.sign(signing_key, hashes.SHA256())

    ca_key, key = ec.generate_private_key(ec.SECP256R1()), ec.generate_private_key(ec.SECP256R1())
    ca_name = name("IMPRESS development CA (not trusted)")
    ca = certificate(ca_name, ca_name, ca_key.public_key(), ca_key, 3650, ca=True)
    leaf = certificate(name(DEVELOPMENT_SIGNER), ca_name, key.public_key(), ca_key, 365, ca=False)
    pem = lambda c: c.public_bytes(serialization.Encoding.PEM).decode()  # noqa: E731
    return Credentials(chain=pem(leaf) + pem(ca), development=True, key=key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()).decode())


def sign_png(png: bytes, manifest: ImageManifest, source: bytes, credentials: Credentials) -> bytes:
    """`png` with `manifest` embedded and signed (C2PA), the input as its parent ingredient: `source`, the
    upload as the service keeps it (decoded and re-encoded as PNG; the manifest's `input` names the
    uploaded bytes' sha256, size and format)."""
    import c2pa

    definition = {
        "claim_generator_info": [{"name": "impress", "version": manifest.software.version}],
        "title": manifest.output["name"], "format": "image/png",
        "assertions": [
            {"label": "c2pa.actions", "data": {"actions": [
                {"action": "c2pa.opened", "parameters": {"ingredientIds": ["input"]}},
                {"action": "c2pa.edited", "softwareAgent": {"name": "impress", "version": manifest.software.version},
                 "description": f"{manifest.method.kind}: {manifest.method.name}"}]}},
            {"label": ASSERTION, "data": json.loads(manifest.model_dump_json())}]}
    signer = c2pa.Signer.from_info(c2pa.C2paSignerInfo(c2pa.C2paSigningAlg.ES256, credentials.chain.encode(),
                                                       credentials.key.encode(), None))
    builder = c2pa.Builder(definition)
    builder.add_ingredient({"title": manifest.input.name, "relationship": "parentOf", "label": "input"},
                           "image/png", io.BytesIO(source))
    signed = io.BytesIO()
    builder.sign(signer, "image/png", io.BytesIO(png), signed)
    return signed.getvalue()


def read_manifest(data: bytes, trust_pem: Optional[str] = None) -> VerifiedManifest:
    """Check a PNG's C2PA manifest (signature, hard binding; trust against `trust_pem` anchors when given)
    and return the IMPRESS manifest it carries."""
    import c2pa

    context = None
    if trust_pem:
        context = c2pa.Context(c2pa.Settings.from_dict({"verify": {"verify_trust": True},
                                                       "trust": {"trust_anchors": trust_pem}}))
    try:
        reader = c2pa.Reader("image/png", io.BytesIO(data), context=context) if context else \
            c2pa.Reader("image/png", io.BytesIO(data))
        store = json.loads(reader.json())
    except c2pa.C2paError as exc:
        return VerifiedManifest(valid=False, trusted=False, status=[f"no readable C2PA manifest: {exc}"])
    status = [s["code"] for s in store.get("validation_status", [])]
    active = store["manifests"][store["active_manifest"]]
    data_json = next((a["data"] for a in active.get("assertions", []) if a["label"] == ASSERTION), None)
    manifest = ImageManifest.model_validate(data_json) if data_json is not None else None
    return VerifiedManifest(valid=all(code == UNTRUSTED for code in status) and manifest is not None,
                            trusted=not status and store.get("validation_state") == "Trusted",
                            status=status, manifest=manifest)
