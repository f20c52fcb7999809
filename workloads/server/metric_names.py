"""The inference server's metric names: a contract with the KEDA ScaledObject (which
scales on IN_FLIGHT), the dashboards and the alert rules. Import them from here
rather than spelling them again; this module has no dependencies.
"""

REQUESTS_TOTAL = "inference_requests_total"  # counter, label `status` (HTTP code as a string)
REQUEST_DURATION = "inference_request_duration_seconds"  # histogram, answered predictions (200) only
BATCH_SIZE = "inference_batch_size"  # histogram, input rows per model call
IN_FLIGHT = "inference_requests_in_flight"  # gauge, accepted and not yet answered (queued + running)
QUEUE_DEPTH = "inference_queue_depth"  # gauge, waiting for a batch
# gauge, headers in and body still arriving: NOT a scale signal (a client that stalls its
# upload must not be able to scale the Deployment out); bounded by BODY_TIMEOUT_S.
RECEIVING = "inference_requests_receiving"

ALL = (REQUESTS_TOTAL, REQUEST_DURATION, BATCH_SIZE, IN_FLIGHT, QUEUE_DEPTH, RECEIVING)
