"""Finding 3: a refused submission stores nothing, each key's stored bytes have a quota, and what is
stored is the decoded image re-encoded, not the upload's bytes."""
from __future__ import annotations

import numpy as np

from impress.contract import ErrorCode
from tests.hostile.conftest import TENANT_A, TENANT_B, bearer
from tests.support import png_bytes

NOISE = png_bytes(np.random.default_rng(0).integers(0, 256, (200, 300, 3), dtype=np.uint8))


def redis_bytes(store) -> int:
    """Serialized size of every key under the store's prefix."""
    return sum(len(store.r.dump(key) or b"") for key in store.r.scan_iter(f"{store.keys.prefix}:*"))


def submit(client, key: str, image: bytes = NOISE):
    return client.post("/v1/purify", headers=bearer(key), files={"images": ("noise.png", image)})


def test_refused_submissions_grow_redis_by_nothing(keyed_api):
    client, store, *_ = keyed_api(max_unfinished_jobs_per_key=2)
    assert len(NOISE) > 150_000
    for _ in range(2):
        assert submit(client, TENANT_A).status_code == 202
    before = redis_bytes(store)
    for _ in range(8):
        refused = submit(client, TENANT_A)
        assert refused.status_code == 429 and refused.json()["error"]["code"] == ErrorCode.too_many_unfinished_jobs
    # Bound: 8 refused uploads of 180 KB each add no more than the rate limiter's counters.
    assert redis_bytes(store) - before < 1024


def test_stored_bytes_quota_per_key(keyed_api):
    client, store, *_ = keyed_api(max_stored_bytes_per_key=len(NOISE) * 2)
    assert submit(client, TENANT_A).status_code == 202
    assert submit(client, TENANT_A).status_code == 202
    before = redis_bytes(store)
    refused = submit(client, TENANT_A, png_bytes(np.random.default_rng(1).integers(0, 256, (200, 300, 3),
                                                                                   dtype=np.uint8)))
    assert refused.status_code == 429 and refused.json()["error"]["code"] == ErrorCode.storage_quota_exceeded
    assert redis_bytes(store) - before < 1024
    assert store.stored_bytes(store.get(client.get("/v1/jobs", headers=bearer(TENANT_A)).json()["jobs"][0]["id"])
                              .owner) <= len(NOISE) * 2
    assert submit(client, TENANT_B).status_code == 202   # another key's quota is its own


def test_trailing_bytes_are_not_stored(keyed_api):
    client, store, *_ = keyed_api()
    tiny = png_bytes(np.zeros((1, 1, 3), dtype=np.uint8)) + b"\0" * 250_000
    accepted = submit(client, TENANT_A, tiny)
    assert accepted.status_code == 202, accepted.text
    blob = store.get_blob(store.get(accepted.json()["id"]).inputs[0].blob)
    # Bound: the stored input is the 1x1 image re-encoded, not the 250 KB sent.
    assert len(blob) < 1024
