"""The app against its own OpenAPI document (Schemathesis, property-based): no 5xx, and every status
code, header and body is one the document declares. In-process on fakeredis with a recording queue
(as the fast_api fixture); examples are bounded so the run stays short.

Every check runs but positive_data_acceptance (a schema-valid request must be accepted): generated
file parts are random bytes, never decodable images, and a job needs at least one image, which the
schema cannot say of two optional fields (uploads or image_url); those refusals are documented 4xx."""
from __future__ import annotations

import fakeredis
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis.checks import positive_data_acceptance

from app.main import create_app
from impress.contract import ModelReport, WorkerBeat
from impress.settings import Settings
from impress.store import JobStore
from tests.support import MAX_BYTES, MAX_PIXELS, RecordingQueue

STORE = JobStore(fakeredis.FakeRedis(), "impress-schema", 3600)
STORE.beat(WorkerBeat(name="worker@test", queues=["impress"], models=ModelReport(present=["vae taef2"])),
           24 * 3600)   # a ready service
APP = create_app(Settings(_env_file=None, key_prefix="impress-schema", max_upload_bytes=MAX_BYTES,
                          max_pixels=MAX_PIXELS, max_images_per_job=4, detect_sync_timeout_s=0.05),
                 store=STORE, queue=RecordingQueue())
schema = schemathesis.openapi.from_asgi("/openapi.json", APP)


@schema.parametrize()
@settings(max_examples=10, deadline=None, derandomize=True, suppress_health_check=list(HealthCheck))
def test_the_app_keeps_its_openapi_contract(case):
    case.call_and_validate(excluded_checks=[positive_data_acceptance])
