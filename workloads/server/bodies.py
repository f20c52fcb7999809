"""Prediction request bodies: `{"inputs": [[f, ...], ...]}` checked and turned into a float32
array (a fast path for well-formed bodies, a strict one that words every 400), and the answers
to a batch that fails; shared by the aiohttp handlers (app.py, oip.py) and the lean /v1/predict
path (fast.py), so both word every error alike."""

from __future__ import annotations

import json
import logging
import sys

import numpy as np
import orjson

from workloads.server.batcher import BatcherStoppedError, BatchResult, QueueFullError

log = logging.getLogger(__name__)

RETRY_AFTER_S = 1


class BadRequestError(ValueError):
    """The request body is not a valid prediction request; the message is shown to the client."""


def parse_inputs(body: bytes, input_size: int) -> np.ndarray:
    """Validate a request body and return its inputs as a float32 `[rows, input_size]` array.

    A well-formed request takes the fast path (orjson, one numpy conversion); anything else
    is parsed again by the strict path below, whose checks and messages decide its 400.
    """
    fast = _parse_fast(body, input_size)
    return fast if fast is not None else _parse_strict(body, input_size)


def _parse_fast(body: bytes, input_size: int) -> np.ndarray | None:
    """The inputs of a well-formed request, or None: then `_parse_strict` decides (and words the 400).

    Returns an array only where the strict path would return the same one: numbers only
    (numpy would take JSON true/false as 1/0, hence the byte scan: any `true`/`false` in the
    body, even inside a string, goes the strict way), `[rows, input_size]` of int or float
    (strings, nulls, objects, ragged or deeper rows give another dtype or shape), finite in
    float32. orjson is strict RFC 8259 JSON (no NaN literals, UTF-8 only, at most 1024 levels
    deep); what it refuses, the strict path parses again and refuses with its own message.
    """
    if b"true" in body or b"false" in body:
        return None
    try:
        payload = orjson.loads(body)
    except orjson.JSONDecodeError:
        return None
    rows = payload.get("inputs") if type(payload) is dict else None
    if type(rows) is not list or not rows:
        return None
    try:
        parsed = np.array(rows)
    except (ValueError, TypeError, OverflowError):  # ragged rows, integers past 64 bits ...
        return None
    if parsed.ndim != 2 or parsed.shape[1] != input_size or parsed.dtype.kind not in "if":
        return None
    with np.errstate(over="ignore"):
        array = parsed.astype(np.float32)
    return array if np.isfinite(array).all() else None


def _parse_strict(body: bytes, input_size: int) -> np.ndarray:
    try:
        payload = json.loads(body)
    except RecursionError:  # `[[[[...` deeper than the interpreter's recursion limit
        raise BadRequestError("body is nested too deeply to be a prediction request") from None
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise BadRequestError(f"body is not valid JSON: {exc}") from None
    except ValueError:  # what else json raises: an integer past sys.get_int_max_str_digits()
        raise BadRequestError(
            f"body holds an integer longer than {sys.get_int_max_str_digits()} digits; send float32 values"
        ) from None
    if not isinstance(payload, dict) or "inputs" not in payload:
        raise BadRequestError('body must be a JSON object with an "inputs" key')
    rows = payload["inputs"]
    if not isinstance(rows, list) or not rows:
        raise BadRequestError(f'"inputs" must be a non-empty list of rows of {input_size} numbers')
    for i, row in enumerate(rows):
        if not isinstance(row, list) or len(row) != input_size:
            got = f"{len(row)} items" if isinstance(row, list) else type(row).__name__
            raise BadRequestError(f"inputs[{i}] must be a list of {input_size} numbers (got {got})")
        for j, value in enumerate(row):
            # bool is an int subclass; JSON true/false is not a feature value.
            if type(value) not in (int, float):
                raise BadRequestError(f"inputs[{i}][{j}] must be a number (got {json.dumps(value)})")
    with np.errstate(over="ignore"):  # too large for float32 becomes inf, refused just below
        try:
            array = np.asarray(rows, dtype=np.float32)
        except OverflowError:  # an integer past float64 (a few hundred digits)
            array = np.array([np.inf], dtype=np.float32)
    if not np.isfinite(array).all():
        raise BadRequestError("inputs must be finite numbers that fit in float32 (no NaN or Infinity)")
    return array


def batch_refusal(
    exc: BaseException | None, max_queue: int, result: BatchResult | None = None
) -> tuple[int, str, dict[str, str] | None] | None:
    """(status, message, headers) that answer a request whose batch raised `exc` (or returned
    `result` with outputs that are not finite) instead of its outputs; None when they are fine."""
    if isinstance(exc, QueueFullError):
        return 429, f"queue is full ({max_queue} requests waiting); retry later", {"Retry-After": str(RETRY_AFTER_S)}
    if isinstance(exc, BatcherStoppedError):  # the drain timed out
        return 503, f"{exc}; retry on another replica", {"Connection": "close"}
    if exc is not None:
        log.error("prediction failed", exc_info=exc)
        return 500, "model failed on this batch", None
    if result is not None and not np.isfinite(result.outputs).all():
        # 422, not 500: the request is well-formed and the server healthy; these finite
        # inputs drive the model past float32, and would again on any replica. A 5xx would
        # let any client fire the error-rate alert; NaN in the body breaks strict parsers.
        return (
            422,
            "the model's outputs for these inputs are not finite (they overflow float32); "
            "send inputs of smaller magnitude",
            None,
        )
    return None
