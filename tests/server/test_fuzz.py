"""A bounded schema-driven fuzz run: schemathesis reads the service's own ``/openapi.json`` from a real uvicorn
process and sends generated requests (valid and invalid) to every operation.

Pass: no 5xx, every status code documented, every body matching the documented schema and content type.
Fixed seed and a fixed number of examples per operation, so the run is repeatable and bounded.
"""

from __future__ import annotations

from collections import Counter

import httpx
import hypothesis
import pytest
import schemathesis
from schemathesis.checks import (
    content_type_conformance,
    not_a_server_error,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from tests.server.live import start_app, stop_server

EXAMPLES_PER_OPERATION = 20
SEED = 20261201
CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
    response_headers_conformance,
]


@pytest.fixture(scope="module")
def fuzz_server(tmp_path_factory):
    server = start_app(tmp_path_factory.mktemp("fuzz"), {"SAM_MAX_SESSIONS": "2"})
    yield server
    stop_server(server)


def _served_schema() -> dict:
    """The document ``GET /openapi.json`` serves, built at collection time (no process needed yet); the test
    checks that the live process serves exactly this document."""
    from server.main import create_app
    from server.settings import Settings

    return create_app(Settings(preset="tiny", random_weights=True, auto_download=False)).openapi()


SERVED = _served_schema()
schema = schemathesis.openapi.from_dict(SERVED)
SERVED_OPERATIONS = {f"{method.upper()} {path}" for path, item in SERVED["paths"].items() for method in item}


def test_openapi_fuzz(fuzz_server):
    """Every operation, a bounded number of generated requests each; then the run's size and the process's
    health are checked in the same test (it depends on no other test and no order)."""
    sent: Counter = Counter()  # (operation, status) -> requests made by the run
    for result in schema.get_all_operations():
        operation = result.ok()

        @hypothesis.given(case=operation.as_strategy())
        @hypothesis.seed(SEED)
        @hypothesis.settings(
            max_examples=EXAMPLES_PER_OPERATION,
            deadline=None,
            database=None,
            suppress_health_check=list(hypothesis.HealthCheck),
            phases=[hypothesis.Phase.explicit, hypothesis.Phase.generate],
        )
        def one(case):
            response = case.call(base_url=fuzz_server.url, timeout=30)
            sent[(f"{case.method} {case.path}", response.status_code)] += 1
            case.validate_response(response, checks=CHECKS)

        one()
    total = sum(sent.values())
    operations = {op for op, _ in sent}
    print(
        f"\nfuzz: {total} requests over {len(operations)} operations; statuses {dict(Counter(s for _, s in sent.elements()))}"
    )
    for op in sorted(operations):
        print(f"  {op}: {dict(sorted((s, n) for (o, s), n in sent.items() if o == op))}")
    assert len(operations) == len(SERVED_OPERATIONS), sorted(SERVED_OPERATIONS - operations)
    assert total >= 200, sent
    assert not [key for key in sent if key[1] >= 500], sent
    assert fuzz_server.process.poll() is None
    assert httpx.get(f"{fuzz_server.url}/health").json()["model_loaded"] is True
    assert httpx.get(f"{fuzz_server.url}/openapi.json").json() == SERVED
