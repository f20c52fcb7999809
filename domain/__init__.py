"""The shared domain model: settings, the label/taint contract, catalog, versions, naming,
scheduling predicates, cost, image references, metric names. No Pulumi resources; imported by
components, policies and tools alike."""
