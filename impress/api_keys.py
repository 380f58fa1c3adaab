"""API keys: parsed from the setting, compared by hash, never stored or logged in plain text.

A key's id is the hex SHA-256 of the key: jobs record it as their owner, so a deployment may list
hashes (`sha256:<hex>`) instead of keys in IMPRESS_API_KEYS and nothing in Redis reveals a key.
"""
from __future__ import annotations

import hashlib
import hmac
import secrets

HASH_PREFIX = "sha256:"


def api_key_id(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def parse_api_keys(setting: str) -> frozenset[str]:
    """The ids of the configured keys: plain keys are hashed, `sha256:<hex>` entries taken as they are."""
    ids = set()
    for entry in (e.strip() for e in setting.split(",")):
        if not entry:
            continue
        if entry.startswith(HASH_PREFIX):
            digest = entry[len(HASH_PREFIX):].lower()
            if len(digest) != 64 or any(c not in "0123456789abcdef" for c in digest):
                raise ValueError(f"IMPRESS_API_KEYS: {entry[:12]}... is not sha256:<64 hex digits>")
            ids.add(digest)
        else:
            ids.add(api_key_id(entry))
    return frozenset(ids)


def parse_key_secrets(setting: str) -> dict[str, str]:
    """IMPRESS_WEBHOOK_KEY_SECRETS: `<key or sha256:hex>=<whsec_...>` entries, comma-separated, as
    {key id: secret}."""
    secrets_by_id = {}
    for entry in (e.strip() for e in setting.split(",")):
        if not entry:
            continue
        key, sep, secret = entry.partition("=")
        if not sep or not secret.strip().startswith("whsec_"):
            raise ValueError("IMPRESS_WEBHOOK_KEY_SECRETS entries are <key or sha256:hex>=whsec_<base64>")
        (key_id,) = parse_api_keys(key.strip())
        secrets_by_id[key_id] = secret.strip()
    return secrets_by_id


def known_key_id(key: str, ids: frozenset[str]) -> str | None:
    """The id of `key` when it is one of `ids` (compared in constant time), else None."""
    candidate = api_key_id(key)
    return next((i for i in ids if hmac.compare_digest(i, candidate)), None)


def new_api_key() -> str:
    return "imp_" + secrets.token_urlsafe(24)
