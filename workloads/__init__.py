"""Workloads that run on the cluster (inference services, batch jobs).

Nothing lives here yet: the autoscaled inference workloads arrive with their own
issue. Whatever lands here takes its tolerations and node selectors from
`infra.contract.PoolContract`, never from hand-written labels.
"""
