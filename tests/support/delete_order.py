"""The order in which `pulumi destroy` deletes a recorded plan, computed as the engine does.

What the engine does (pulumi/pulumi v3.259.0, the newest tag on the public mirror; the
scheduling code is unchanged in the 3.2xx line we pin):

- `pkg/resource/deploy/deployment_executor.go` (`performPostSteps`): a destroy generates one
  delete step per resource (`GenerateDeletes`), splits them into waves with
  `stepGenerator.ScheduleDeletes`, and runs each wave in parallel to completion before the next
  one starts.
- `pkg/resource/deploy/step_generator.go` (`ScheduleDeletes`): repeatedly takes every condemned
  resource none of whose `DependenciesOf` is still condemned, then reverses the list of waves.
  So a resource is deleted only after everything that depends on it, and the waves are counted
  from the bottom of the graph (a resource nothing depends on is not necessarily deleted first).
- `pkg/resource/graph/dependency_graph.go` (`DependenciesOf`): the edges are the resource's
  `dependencies`, `propertyDependencies`, `deletedWith`, `replaceWith`, its provider reference and
  its parent; a dependency on a component (`custom` false) also counts every transitive child of
  that component registered before the resource (how remote components such as `eks:index:Cluster`
  stand for their children). Only resources earlier in the snapshot count: the snapshot is in
  registration order, which is the order the recording keeps.

What the Python SDK sends (pulumi 3.272, `pulumi/runtime/resource.py` `prepare_resource`, and
`pulumi/runtime/rpc.py` `_add_dependency`): `depends_on=[component]` of a local component is
expanded into the component's custom (and remote) descendants, not the component itself, and
every property dependency is also added to `dependencies`. So `Recorded.dependencies` already
holds both edge kinds, expanded; `Recorded.deleted_with` and `replace_with` hold the other two.

"Still alive while X is being deleted" is then everything X transitively depends on (`outlives`):
that is what any order the engine may choose guarantees. Two unrelated resources can still land
in different waves by accident of depth (`delete_waves`), which nothing guarantees once the graph
changes, so tests assert on `outlives`.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from tools.plan.mocks import Recorded


def provider_urn(reference: str) -> str:
    """`<urn>::<id>` -> `<urn>` (the engine's `providers.ParseReference`)."""
    return reference.rsplit("::", 1)[0] if reference else ""


@dataclass(frozen=True)
class DeleteGraph:
    resources: dict[str, Recorded]  # by URN, in registration (snapshot) order
    must_outlive: dict[str, frozenset[str]]  # URN -> its `DependenciesOf`: what is deleted after it

    def outlives(self, urn: str) -> set[str]:
        """Everything still alive while `urn` is being deleted: its dependencies, transitively."""
        seen: set[str] = set()
        todo = list(self.must_outlive[urn])
        while todo:
            dep = todo.pop()
            if dep not in seen:
                seen.add(dep)
                todo.extend(self.must_outlive[dep])
        return seen

    def delete_waves(self) -> list[list[str]]:
        """`ScheduleDeletes`: the waves a full destroy runs, first wave first (URNs sorted in each)."""
        condemned = set(self.resources)
        waves: list[list[str]] = []
        while condemned:
            wave = sorted(u for u in condemned if not self.must_outlive[u] & condemned)
            assert wave, f"dependency cycle among {sorted(condemned)}"
            condemned.difference_update(wave)
            waves.append(wave)
        return waves[::-1]


def delete_graph(recorded: Iterable[Recorded]) -> DeleteGraph:
    resources = {r.urn: r for r in recorded}
    position = {urn: i for i, urn in enumerate(resources)}
    children: dict[str, list[str]] = {}
    for r in resources.values():
        children.setdefault(r.parent, []).append(r.urn)

    def descendants(urn: str) -> list[str]:
        found, todo = [], list(children.get(urn, ()))
        while todo:
            child = todo.pop()
            found.append(child)
            todo.extend(children.get(child, ()))
        return found

    must_outlive: dict[str, frozenset[str]] = {}
    for urn, r in resources.items():
        listed = {*r.dependencies, *r.replace_with, r.deleted_with, provider_urn(r.provider)}
        edges = {d for d in listed if position.get(d, len(position)) < position[urn]}
        for dep in list(edges):
            if not resources[dep].custom:
                edges.update(c for c in descendants(dep) if position[c] < position[urn])
        if r.parent in position:  # a child is deleted before its parent (not widened to siblings)
            edges.add(r.parent)
        must_outlive[urn] = frozenset(edges)
    return DeleteGraph(resources, must_outlive)


def label(r: Recorded) -> str:
    return f"{r.type} {r.name}"
