"""Finding 15, evaluate's half: the method lists of one evaluation are bounded by
IMPRESS_MAX_EVALUATE_METHODS (the matrix runs their product). The other half (every kind's step count
under IMPRESS_MAX_ITERATIONS) is the job spec's one limit check (issue 20)."""
from __future__ import annotations

from impress.contract import ErrorCode
from tests.hostile.conftest import IMAGE, TENANT_A, bearer


def test_evaluate_method_lists_are_bounded(keyed_api):
    client, _, queue, _ = keyed_api(max_evaluate_methods=3)

    def evaluate(protections: int, purifiers: int):
        return client.post("/v1/evaluate", headers=bearer(TENANT_A), files={"clean": ("c.png", IMAGE)},
                           data={"protections": ["mist-16:steps=5"] * protections,
                                 "purifiers": ["jpeg-75"] * purifiers})

    assert evaluate(1000, 1000).status_code == 400   # past the form parser's own field limit
    for protections, purifiers in ((4, 1), (1, 4), (100, 100)):
        refused = evaluate(protections, purifiers)
        assert refused.status_code == 422 and refused.json()["error"]["code"] == ErrorCode.invalid_parameter
        assert "IMPRESS_MAX_EVALUATE_METHODS" in refused.json()["error"]["message"]
    assert queue.sent == []
    assert evaluate(3, 3).status_code == 202
