"""What the HPA does with the scaling behaviour each ScaledObject renders.

KEDA turns a ScaledObject into an HPA and copies
`spec.advanced.horizontalPodAutoscalerConfig.behavior` into it unchanged; the
HPA controller then limits every change by that behaviour. `Hpa` below is a
small model of that controller's behaviour path, written from Kubernetes'
`pkg/controller/podautoscaler/horizontal.go` as of v1.28 (read from a source
snapshot of that release, github.com/kevinhehc/k8s-1.28 commit ffd718a, blob
858405fe; the functions named in the docstrings). The tests drive it, one sync
every 15 s (kube-controller-manager's --horizontal-pod-autoscaler-sync-period
default), with the metric's desired replicas, and assert on outcomes: how fast
a service reaches its maximum, when a scale-down may start and how steep it may
be. The bounds come from the stack settings or are literals, never from the
rendered object itself.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import pytest

from domain.settings import ScalingSettings
from tests.conftest import Plan

SYNC_S = 15
# Under full demand a service reaches its maximum within this long: a GPU node
# launch already takes minutes, the HPA must not add more to it.
SCALE_UP_BUDGET_S = 60
# KEDA's HPA minReplicas: the ScaledObject's minReplicaCount, but at least 1 (KEDA itself
# scales 0 <-> 1; kedacore/keda controllers/keda/hpa.go getHPAMinReplicas).
KEDA_HPA_MIN = 1


@dataclass(frozen=True)
class Policy:
    type: str  # Pods | Percent
    value: int
    period_s: int


@dataclass(frozen=True)
class Rules:
    """One direction of `behavior` (HPAScalingRules)."""

    window_s: int
    select: str  # Max | Min | Disabled
    policies: tuple[Policy, ...]

    @classmethod
    def of(cls, raw: dict[str, Any]) -> Rules:
        policies = tuple(Policy(p["type"], int(p["value"]), int(p["periodSeconds"])) for p in raw["policies"])
        return cls(int(raw["stabilizationWindowSeconds"]), raw.get("selectPolicy", "Max"), policies)


@dataclass
class Event:
    change: int
    at: float
    outdated: bool = False


@dataclass
class Hpa:
    up: Rules
    down: Rules
    min: int
    max: int
    replicas: int
    recommendations: list[tuple[float, int]] = field(default_factory=list)
    up_events: list[Event] = field(default_factory=list)
    down_events: list[Event] = field(default_factory=list)

    @classmethod
    def of(cls, scaled_object: dict[str, Any]) -> Hpa:
        spec = scaled_object["spec"]
        behavior = spec["advanced"]["horizontalPodAutoscalerConfig"]["behavior"]
        low = max(int(spec["minReplicaCount"]), KEDA_HPA_MIN)
        return cls(
            Rules.of(behavior["scaleUp"]), Rules.of(behavior["scaleDown"]), low, int(spec["maxReplicaCount"]), low
        )

    def sync(self, now: float, metric_desired: int) -> int:
        """One reconcileAutoscaler: the new replica count for the metric's desired count."""
        current = self.replicas
        if current == 0 and self.min != 0:
            return current  # "scaling is disabled since the replica count of the target is zero"
        if current > self.max:
            desired = self.max
        elif current < self.min:
            desired = self.min
        else:  # normalizeDesiredReplicasWithBehaviors: stabilize, then limit the rate
            desired = self._rate_limited(now, self._stabilized(now, metric_desired))
        if desired != current:
            self._store_event(now, current, desired)
            self.replicas = desired
        return self.replicas

    def _stabilized(self, now: float, desired: int) -> int:
        """stabilizeRecommendationWithBehaviors: the lowest recommendation of the scale-up window, the
        highest of the scale-down window, the current count kept between them; this one recorded."""
        up_cut, down_cut = now - self.up.window_s, now - self.down.window_s
        up_rec = down_rec = desired
        old = None
        for i, (at, rec) in enumerate(self.recommendations):
            if at > up_cut:
                up_rec = min(rec, up_rec)
            if at > down_cut:
                down_rec = max(rec, down_rec)
            if at < up_cut and at < down_cut:
                old = i
        if old is None:
            self.recommendations.append((now, desired))
        else:
            self.recommendations[old] = (now, desired)
        return min(max(self.replicas, up_rec), down_rec)

    def _rate_limited(self, now: float, desired: int) -> int:
        """convertDesiredReplicasWithBehaviorRate."""
        current = self.replicas
        if desired > current:
            limit = max(self._limit(now, self.up, up=True), current)
            return min(desired, self.max, limit)
        if desired < current:
            limit = min(self._limit(now, self.down, up=False), current)
            return max(desired, self.min, limit)
        return desired

    def _limit(self, now: float, rules: Rules, up: bool) -> int:
        """calculateScaleUpLimitWithScalingRules / calculateScaleDownLimitWithBehaviors."""
        if rules.select == "Disabled":
            return self.replicas
        # Up: Max picks the largest proposal; down: Max (the default) picks the lowest count.
        pick_largest = (rules.select != "Min") == up
        result = -math.inf if pick_largest else math.inf
        for p in rules.policies:
            start = (
                self.replicas - _changed(now, p.period_s, self.up_events) + _changed(now, p.period_s, self.down_events)
            )
            if up:
                proposed = start + p.value if p.type == "Pods" else math.ceil(start * (1 + p.value / 100))
            else:
                # Go's int32(float64) conversion truncates toward zero.
                proposed = start - p.value if p.type == "Pods" else int(start * (1 - p.value / 100))
            result = max(result, proposed) if pick_largest else min(result, proposed)
        return int(result)

    def _store_event(self, now: float, before: int, after: int) -> None:
        """storeScaleEvent: reuse an event older than the longest period, else append."""
        rules, events = (self.up, self.up_events) if after > before else (self.down, self.down_events)
        cutoff = now - max(p.period_s for p in rules.policies)
        for event in events:
            if event.at < cutoff:
                event.outdated = True
        reusable = [i for i, event in enumerate(events) if event.outdated]
        new = Event(abs(after - before), now)
        if reusable:
            events[reusable[-1]] = new
        else:
            events.append(new)


def _changed(now: float, period_s: int, events: list[Event]) -> int:
    """getReplicasChangePerPeriod: replicas changed by events strictly within the last period."""
    return sum(e.change for e in events if e.at > now - period_s)


def run(hpa: Hpa, demand: list[int], start: float = 0.0) -> list[tuple[float, int]]:
    """(time, replicas) after each sync, one sync per entry of `demand`."""
    return [(start + i * SYNC_S, hpa.sync(start + i * SYNC_S, d)) for i, d in enumerate(demand)]


def services(plan: Plan) -> list[tuple[str, dict[str, Any], ScalingSettings]]:
    found = [(name, so, plan.settings.inference[name].scaling) for name, so in plan.objects("ScaledObject").items()]
    assert found, "expected ScaledObjects in the plan"
    return found


# --- the model against Kubernetes' documented default behaviour ---------------------

# The HPA's default `behavior` (kubernetes.io/docs/tasks/run-application/horizontal-pod-autoscale/,
# "Default Behavior"): up by 4 pods or 100 % per 15 s, whichever is more, no window; down by
# up to 100 % per 15 s after a 300 s window.
K8S_DEFAULT = {
    "scaleUp": {
        "stabilizationWindowSeconds": 0,
        "selectPolicy": "Max",
        "policies": [
            {"type": "Percent", "value": 100, "periodSeconds": 15},
            {"type": "Pods", "value": 4, "periodSeconds": 15},
        ],
    },
    "scaleDown": {
        "stabilizationWindowSeconds": 300,
        "policies": [{"type": "Percent", "value": 100, "periodSeconds": 15}],
    },
}


def default_hpa(low: int, high: int) -> Hpa:
    return Hpa(Rules.of(K8S_DEFAULT["scaleUp"]), Rules.of(K8S_DEFAULT["scaleDown"]), low, high, low)


def test_model_scales_up_by_the_larger_policy_each_period() -> None:
    # 1 -> 1+4 (Pods beats 100 %) -> 10 (100 % beats +4) -> 20 -> capped at 30.
    assert [r for _, r in run(default_hpa(1, 30), [30] * 5)] == [5, 10, 20, 30, 30]


def test_model_counts_a_policy_period_from_the_change_it_made() -> None:
    # Pods 1 per 60 s: +1 at t=0; t=15..45 still inside that period; the next +1 at t=60.
    rules = Rules(0, "Max", (Policy("Pods", 1, 60),))
    hpa = Hpa(rules, Rules.of(K8S_DEFAULT["scaleDown"]), 1, 10, 1)
    assert [r for _, r in run(hpa, [10] * 6)] == [2, 2, 2, 2, 3, 3]


def test_model_holds_the_highest_recommendation_of_the_scale_down_window() -> None:
    hpa = default_hpa(1, 10)
    run(hpa, [10] * 3)  # t = 0, 15, 30: at 10
    after = run(hpa, [1] * 21, start=45)  # t = 45 ... 345
    # The last recommendation of 10 was at t=30; it leaves the window once 30 <= t - 300.
    assert [t for t, r in after if r == 10][-1] == 315
    assert dict(after)[330] == 1


# --- the stacks' ScaledObjects ------------------------------------------------------


def test_full_demand_reaches_max_replicas_within_the_budget(plan: Plan) -> None:
    for name, scaled_object, _ in services(plan):
        hpa = Hpa.of(scaled_object)
        trajectory = run(hpa, [hpa.max] * (SCALE_UP_BUDGET_S // SYNC_S))
        assert trajectory[-1][1] == hpa.max, (
            f"{name}: from {hpa.min} replicas under a demand of {hpa.max}, expected {hpa.max} within"
            f" {SCALE_UP_BUDGET_S}s of HPA syncs every {SYNC_S}s; got (time, replicas) {trajectory}"
        )


def test_the_first_sync_adds_the_configured_pods_not_only_a_doubling(plan: Plan) -> None:
    """From few replicas, the Pods policy (scaleUp.podsPerPeriod) is what makes a real step."""
    for name, scaled_object, scaling in services(plan):
        hpa = Hpa.of(scaled_object)
        start = hpa.replicas
        expected = min(hpa.max, max(start + scaling.scale_up.pods_per_period, 2 * start))
        assert hpa.sync(0, hpa.max) == expected, f"{name}: the first scale-up step from {start}"


def _after_a_peak(scaled_object: dict[str, Any], syncs_low: int) -> tuple[Hpa, float, list[tuple[float, int]]]:
    """At max for 10 minutes, then a demand at the minimum: (hpa, last high sync, low trajectory)."""
    hpa = Hpa.of(scaled_object)
    high = run(hpa, [hpa.max] * 40)
    assert high[-1][1] == hpa.max
    last_high = high[-1][0]
    return hpa, last_high, run(hpa, [hpa.min] * syncs_low, start=last_high + SYNC_S)


def test_scale_down_waits_out_the_stabilization_window(plan: Plan) -> None:
    for name, scaled_object, scaling in services(plan):
        window = scaling.scale_down.stabilization_seconds
        hpa, last_high, low = _after_a_peak(scaled_object, window // SYNC_S + 4)
        early = [(t, r) for t, r in low if t < last_high + window]
        assert all(r == hpa.max for _, r in early), (
            f"{name}: scaled down within {window}s of the last high recommendation (at {last_high}s): {early}"
        )
        first_after = next(r for t, r in low if t >= last_high + window)
        assert first_after < hpa.max, f"{name}: no scale-down once the {window}s window had passed: {low}"


def test_scale_down_never_drops_more_than_the_configured_percent_per_period(plan: Plan) -> None:
    for name, scaled_object, scaling in services(plan):
        down = scaling.scale_down
        hpa, _, low = _after_a_peak(scaled_object, 240)  # an hour
        assert low[-1][1] == hpa.min, f"{name}: never got back to {hpa.min} replicas: {low}"
        for j, (t_j, r_j) in enumerate(low):
            for t_i, r_i in low[j + 1 :]:
                if t_i - t_j >= down.period_seconds:
                    break
                floor = math.floor(r_j * (1 - down.percent_per_period / 100))
                assert r_i >= floor, (
                    f"{name}: {r_j} -> {r_i} replicas within {t_i - t_j:g}s, more than scaleDown.percentPerPeriod"
                    f" {down.percent_per_period}% per {down.period_seconds}s allows"
                )


@pytest.mark.parametrize("select", ["Max", "Min"])
def test_model_selects_the_policy_the_way_the_controller_does(select: str) -> None:
    # Down from 10 with Pods 1 and Percent 50 per 60 s: Max (most change) allows 5, Min (least) allows 9.
    down = Rules(0, select, (Policy("Pods", 1, 60), Policy("Percent", 50, 60)))
    hpa = Hpa(Rules.of(K8S_DEFAULT["scaleUp"]), down, 1, 10, 10)
    assert hpa.sync(0, 1) == {"Max": 5, "Min": 9}[select]
