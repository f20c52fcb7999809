"""Hostile and unlucky request bodies: every one gets a 4xx with a message (never a 500 with
a traceback), every response is counted by status, and no body ever holds NaN or Infinity.
"""

from __future__ import annotations

import json

import aiohttp
import pytest

from tests.workloads.helpers import ThreadServer, config, get, post, row, run, sample, scrape
from workloads.model import Model, load_model
from workloads.server.app import PREDICT_PATH
from workloads.server.metric_names import REQUESTS_TOTAL

DEEP = 100_000
HUGE_INT = "9" * 5000  # over Python's 4300-digit limit for int <-> str
BIG_INT = "9" * 4000  # under it, but far past float32 (and float64)


@pytest.fixture(scope="module")
def model() -> Model:
    return load_model()


@pytest.fixture(scope="module")
def server(model: Model):
    with ThreadServer(config(), model=model) as srv:
        yield srv


def strict_json(text: str) -> object:
    """Parse as a strict JSON parser does: NaN, Infinity and -Infinity are not JSON."""

    def refuse(constant: str) -> object:
        raise ValueError(f"{constant} is not JSON")

    return json.loads(text, parse_constant=refuse)


async def count(session: aiohttp.ClientSession, url: str, status: str) -> float:
    return sample(await scrape(session, url), REQUESTS_TOTAL, status=status) or 0


@pytest.mark.parametrize(
    ("body", "message"),
    [
        pytest.param(b"[" * DEEP, "nested too deeply", id="deep-top-level"),
        pytest.param(b'{"inputs": ' + b"[" * DEEP, "nested too deeply", id="deep-in-inputs"),
        pytest.param(b'{"inputs": [' + b"[" * DEEP + b"]" * DEEP + b"]}", "nested too deeply", id="deep-closed"),
        pytest.param(f'{{"inputs": [[{HUGE_INT}]]}}'.encode(), "integer", id="5000-digit-int"),
        pytest.param(f'{{"inputs": {HUGE_INT}}}'.encode(), "integer", id="5000-digit-int-as-inputs"),
        pytest.param(
            json.dumps({"inputs": [[0.0] * 15]})[:-3].encode() + f", {BIG_INT}]]}}".encode(),
            "fit in float32",
            id="4000-digit-int",
        ),
    ],
)
def test_malformed_bodies_get_400_with_a_message_and_are_counted(
    server: ThreadServer, body: bytes, message: str
) -> None:
    async def scenario(session: aiohttp.ClientSession):
        before = await count(session, server.url, "400")
        answer = await post(session, server.url + PREDICT_PATH, data=body)
        return answer, await count(session, server.url, "400") - before, await count(session, server.url, "500")

    (status, headers, answer), counted, errors = run(scenario)
    assert status == 400, f"expected 400, got {status}: {str(answer)[:300]}"
    assert headers["Content-Type"].startswith("application/json")
    assert message in answer["error"], f"expected {message!r} in {answer['error']!r}"
    assert counted == 1, f"the 400 must be counted in {REQUESTS_TOTAL}{{status='400'}} (counted {counted})"
    assert errors == 0, "no request of this module may end in a 500"


def test_every_prediction_response_is_counted_whatever_its_status(server: ThreadServer) -> None:
    """A status the framework answers itself (405 on GET) is counted like the handler's own."""

    async def scenario(session: aiohttp.ClientSession):
        before = await count(session, server.url, "405")
        status, _ = await get(session, server.url + PREDICT_PATH)
        return status, await count(session, server.url, "405") - before

    status, counted = run(scenario)
    assert status == 405
    assert counted == 1, f"the 405 must be counted in {REQUESTS_TOTAL}{{status='405'}} (counted {counted})"


@pytest.mark.parametrize(
    "inputs",
    [
        pytest.param([[3e38] * 16], id="all-3e38"),
        pytest.param([row(1), [3e38] * 16], id="one-bad-row-of-two"),
        pytest.param([[-3.4e38] * 16], id="all-minus-3.4e38"),
    ],
)
def test_inputs_whose_outputs_overflow_get_422_never_nan(server: ThreadServer, inputs: list) -> None:
    """Finite float32 inputs can overflow the model; the answer is a refusal, never NaN in the body."""

    async def scenario(session: aiohttp.ClientSession):
        before = await count(session, server.url, "422")
        async with session.post(server.url + PREDICT_PATH, json={"inputs": inputs}) as resp:
            answer = resp.status, await resp.text()
        return answer, await count(session, server.url, "422") - before

    (status, text), counted = run(scenario)
    body = strict_json(text)  # raises on NaN / Infinity
    assert status == 422, f"expected 422, got {status}: {text[:300]}"
    assert "finite" in body["error"], body
    assert counted == 1


def test_large_finite_inputs_with_finite_outputs_are_still_answered(server: ThreadServer) -> None:
    status, _, body = run(lambda s: post(s, server.url + PREDICT_PATH, {"inputs": [[1e4] * 16]}))
    assert status == 200, body
