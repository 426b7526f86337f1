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
SENT: Counter = Counter()  # (operation, status) -> requests made by the run


@pytest.fixture(scope="module")
def fuzz_server(tmp_path_factory):
    server = start_app(tmp_path_factory.mktemp("fuzz"), {"SAM_MAX_SESSIONS": "2"})
    yield server
    stop_server(server)


def _served_schema() -> dict:
    """The document ``GET /openapi.json`` serves, built at collection time (no process needed yet); the last
    test checks that the live process serves exactly this document."""
    from server.main import create_app
    from server.settings import Settings

    return create_app(Settings(preset="tiny", random_weights=True, auto_download=False)).openapi()


SERVED = _served_schema()
schema = schemathesis.openapi.from_dict(SERVED)


@schema.parametrize()
@hypothesis.seed(SEED)
@hypothesis.settings(
    max_examples=EXAMPLES_PER_OPERATION,
    deadline=None,
    database=None,
    suppress_health_check=list(hypothesis.HealthCheck),
    phases=[hypothesis.Phase.explicit, hypothesis.Phase.generate],
)
def test_openapi_fuzz(case, fuzz_server):
    response = case.call(base_url=fuzz_server.url, timeout=30)
    SENT[(f"{case.method} {case.path}", response.status_code)] += 1
    case.validate_response(response, checks=CHECKS)


def test_fuzz_run_was_sizeable_and_served_by_a_live_process(fuzz_server):
    """Runs after the fuzz test: the run really sent a few hundred requests, and the server survived them."""
    total = sum(SENT.values())
    operations = {op for op, _ in SENT}
    print(
        f"\nfuzz: {total} requests over {len(operations)} operations; statuses {dict(Counter(s for _, s in SENT.elements()))}"
    )
    for op in sorted(operations):
        statuses = dict(sorted((s, n) for (o, s), n in SENT.items() if o == op))
        if statuses != {405: 1}:  # schemathesis also probes each path once with every undeclared method
            print(f"  {op}: {statuses}")
    assert total >= 200, SENT
    assert not [key for key in SENT if key[1] >= 500], SENT
    assert fuzz_server.process.poll() is None
    assert httpx.get(f"{fuzz_server.url}/health").json()["model_loaded"] is True
    assert httpx.get(f"{fuzz_server.url}/openapi.json").json() == SERVED
