"""Property test of the OpenAPI schema (schemathesis, bounded) and a bounded loopback load test."""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor

import pytest
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from schemathesis.checks import content_type_conformance, response_schema_conformance, status_code_conformance

from tests.conftest import make_folder
from tests.service.server import KEY, Server

EXAMPLES_PER_OPERATION = 25
CONFORMANCE = [status_code_conformance, content_type_conformance, response_schema_conformance]
AUTH = {"Authorization": f"Bearer {KEY}"}


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    root = tmp_path_factory.mktemp("fuzz")
    make_folder(root / "data" / "colors", {"blue": 10, "green": 10, "red": 10})
    server = Server(root / "home", root / "data").start()
    job = server.client.post("/extract", json={"dataset": "colors", "path": "colors", "backbone": "tiny",
                                               "weights": "random"}).json()
    assert server.wait_job(job["job_id"])["state"] == "succeeded"
    assert server.client.post("/heads", json={"name": "h", "dataset": "colors", "backbone": "tiny"}).status_code == 201
    yield server
    assert server.stop()


def test_schema_fuzz_never_gets_a_5xx(served):
    schema = schemathesis.openapi.from_url(f"{served.url}/openapi.json", headers=AUTH)
    operations = [result.ok() for result in schema.get_all_operations()]
    assert len(operations) >= 15
    server_errors, nonconforming, calls, started = [], [], [0], time.monotonic()
    for operation in operations:
        @given(case=operation.as_strategy())
        @settings(max_examples=EXAMPLES_PER_OPERATION, deadline=None, phases=[Phase.explicit, Phase.generate],
                  suppress_health_check=list(HealthCheck), database=None)
        def fuzz(case):
            if time.monotonic() - started > 150:  # bounded in time as well as in examples
                return
            response = case.call(base_url=served.url, headers=AUTH, timeout=30)
            calls[0] += 1
            if response.status_code >= 500:
                server_errors.append(f"{case.method} {case.formatted_path} -> {response.status_code} {response.text}")
            try:  # the answer is one the schema documents, with the documented type and body
                case.validate_response(response, checks=CONFORMANCE)
            except Exception as failure:  # noqa: BLE001 - schemathesis raises its own failure groups
                nonconforming.append(f"{case.method} {case.formatted_path} -> {response.status_code}: "
                                     f"{str(failure)[:300]}")

        fuzz()
    print(f"schema fuzz: {calls[0]} calls over {len(operations)} operations")
    assert calls[0] >= 200
    assert not server_errors, server_errors[:5]
    assert not nonconforming, nonconforming[:5]
    assert served.client.get("/healthz").status_code == 200


def test_bounded_load_on_loopback_has_no_errors(served):
    # its own head: the fuzz test may have deleted any other one (DELETE /heads/{name} is in the schema)
    head = {"name": "load-test-7f3a9c", "dataset": "colors", "backbone": "tiny"}
    assert served.client.post("/heads", json=head).status_code == 201
    image = next((served.data / "colors" / "green").iterdir()).read_bytes()
    total, clients, budget = 200, 8, 120.0
    deadline = time.monotonic() + budget

    def call(_: int) -> int:
        if time.monotonic() > deadline:
            return -1
        response = served.client.post("/predict", data={"head": head["name"]},
                                      files={"files": ("g.jpg", image, "image/jpeg")})
        return response.status_code

    with ThreadPoolExecutor(clients) as pool:
        codes = list(pool.map(call, range(total)))
    assert codes.count(200) == total, {c: codes.count(c) for c in set(codes)}
    metrics = served.client.get("/metrics").text
    assert "headstart_predict_batch_size_count" in metrics
