"""SIGTERM under load loses nothing: every request sent ends with an HTTP status.

Many keep-alive connections send back to back; SIGTERM comes mid-stream; each
worker stops at its first 503 (a real client would retry on another replica) or
when the port refuses its connection (nothing was sent, so nothing was lost).
Any other end (a reset, a disconnect before the status line) is a lost request.
The run is repeated so that a loss of about 1 in 5,000 would show.
"""

from __future__ import annotations

import asyncio
import signal
from collections import Counter
from pathlib import Path

import aiohttp

from tests.workloads.helpers import WAIT_S, ServerProcess, get, row, wait_until
from workloads.server.app import PREDICT_PATH

RUNS = 6
CONNECTIONS = 48
REQUESTS_BEFORE_SIGTERM = 1000  # per run; the drain adds about one per connection


async def _worker(session: aiohttp.ClientSession, url: str, seed: int, outcomes: Counter, lost: list[str]) -> None:
    payload = {"inputs": [row(seed)]}
    while True:
        try:
            async with session.post(url + PREDICT_PATH, json=payload) as resp:
                await resp.read()
                status = resp.status
        except aiohttp.ClientConnectorError:
            outcomes["refused"] += 1  # the connection never opened: the request was not sent
            return
        except (TimeoutError, aiohttp.ClientError) as exc:
            lost.append(repr(exc))
            return
        outcomes[status] += 1
        if status == 503:
            return


async def _one_run(server: ServerProcess) -> tuple[Counter, list[str]]:
    url = server.wait_listening()
    connector = aiohttp.TCPConnector(limit=CONNECTIONS)
    timeout = aiohttp.ClientTimeout(total=WAIT_S)
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:

        async def ready() -> bool:
            return (await get(session, url + "/readyz"))[0] == 200

        await wait_until(ready, "the model to load")
        outcomes: Counter = Counter()
        lost: list[str] = []
        workers = [asyncio.create_task(_worker(session, url, i, outcomes, lost)) for i in range(CONNECTIONS)]

        async def enough() -> bool:
            return sum(outcomes.values()) >= REQUESTS_BEFORE_SIGTERM or all(w.done() for w in workers)

        await wait_until(enough, f"{REQUESTS_BEFORE_SIGTERM} answers before SIGTERM")
        server.proc.send_signal(signal.SIGTERM)
        await asyncio.wait_for(asyncio.gather(*workers), WAIT_S)
    return outcomes, lost


def test_sigterm_under_load_answers_every_request_it_read(tmp_path: Path) -> None:
    total: Counter = Counter()
    for i in range(RUNS):
        server = ServerProcess(tmp_path / f"server-{i}.log", env={"MAX_BATCH_SIZE": "64", "TERM_GRACE_S": "0"})
        try:
            outcomes, lost = asyncio.run(_one_run(server))
            exit_code = server.proc.wait(WAIT_S)
        finally:
            server.stop()
        log = server.log()
        assert not lost, f"run {i}: {len(lost)} requests ended without an HTTP status: {lost[:5]}\n{outcomes}\n{log}"
        assert set(outcomes) <= {200, 503, "refused"}, f"run {i}: unexpected outcomes {outcomes}\n{log}"
        assert exit_code == 0, f"run {i}: exit {exit_code}\n{log}"
        total += outcomes
    sent = total[200] + total[503]
    assert sent >= RUNS * REQUESTS_BEFORE_SIGTERM, (
        f"expected at least {RUNS * REQUESTS_BEFORE_SIGTERM} answers: {total}"
    )
    assert total[503] > 0, f"no request reached the drain: the test did not exercise it ({total})"
