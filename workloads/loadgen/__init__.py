"""Open-loop load generator for the inference server.

    python -m workloads.loadgen --url http://127.0.0.1:8080 --rps 200 --duration 10 [--concurrency 64] [--json]

Open loop: request i is due at a time fixed in advance whether or not earlier
ones were answered, so a slow server meets the same offered load (a closed loop
would slow down with it and hide the queueing). Arrivals are random by default
(`--arrivals poisson`: exponential gaps of mean 1 / rps, as independent clients
make them); `--arrivals uniform` sends at exactly `start + i / rps`, which a
batching server answers in lockstep: the clients' sends phase-lock onto its
batch cycle and it sees bursts that fill whole batches, flattering its latency
at a given rate. Bounded: at most `--concurrency`
requests are outstanding; a request that comes due while that many are still
waiting is not sent and is counted as `dropped`, so neither the client nor the
server can be buried. The total is `rps * duration` requests, known up front.

The report: requests sent, dropped, answered per status, connection errors by
kind, the achieved send rate and the answered-OK throughput, and latency
percentiles of the OK answers. The exit code is 0 whatever the server said (an
overloaded server is a result, not a failure); 2 for bad arguments.
"""

from workloads.loadgen.core import LoadReport, LoadSpec, run_load

__all__ = ["LoadReport", "LoadSpec", "run_load"]
