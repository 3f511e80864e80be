"""Counters and latency windows behind ``/stats`` (JSON) and ``/metrics`` (Prometheus).

Recorded from the event loop thread only. Latency percentiles come from a
window of the most recent plans; the Prometheus histogram counts every plan
since start-up (cumulative, as Prometheus expects).
"""

from __future__ import annotations

import math
import time
from collections import Counter, defaultdict, deque
from collections.abc import Iterable, Mapping
from typing import Any

import numpy as np

# Seconds; spans a tiny CPU model (~10 ms) to a DINO-WM-size GPU plan (~seconds).
LATENCY_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
_WINDOW = 2048


class Metrics:
    """What the server has done since start-up."""

    def __init__(self) -> None:
        self.started = time.monotonic()
        self.requests: Counter[str] = Counter()
        self.responses: Counter[tuple[str, int]] = Counter()
        self.errors: defaultdict[str, Counter[str]] = defaultdict(Counter)
        self.plan_latency_ms: defaultdict[str, deque[float]] = defaultdict(
            lambda: deque(maxlen=_WINDOW)
        )
        self.plan_count: Counter[str] = Counter()
        self.latency_buckets: defaultdict[str, list[int]] = defaultdict(
            lambda: [0] * len(LATENCY_BUCKETS)
        )
        self.latency_sum_s: Counter[str] = Counter()
        self.stop_reasons: Counter[str] = Counter()
        self.iterations_total = 0
        self.batches = 0
        self.batched_requests = 0

    def uptime_s(self) -> float:
        return time.monotonic() - self.started

    def record_response(self, endpoint: str, status: int) -> None:
        self.requests[endpoint] += 1
        self.responses[(endpoint, status)] += 1

    def record_error(self, endpoint: str, code: str) -> None:
        self.errors[endpoint][code] += 1

    def record_plan(
        self, endpoint: str, total_ms: float, iterations: int, stop_reason: str
    ) -> None:
        self.plan_latency_ms[endpoint].append(total_ms)
        self.plan_count[endpoint] += 1
        self.latency_sum_s[endpoint] += total_ms / 1000.0
        buckets = self.latency_buckets[endpoint]
        for i, bound in enumerate(LATENCY_BUCKETS):
            if total_ms / 1000.0 <= bound:
                buckets[i] += 1
        self.iterations_total += iterations
        self.stop_reasons[stop_reason] += 1

    def record_batch(self, size: int) -> None:
        self.batches += 1
        self.batched_requests += size

    # -- /stats ---------------------------------------------------------------

    def errors_by_code(self) -> dict[str, int]:
        total: Counter[str] = Counter()
        for codes in self.errors.values():
            total.update(codes)
        return dict(sorted(total.items()))

    def latency_summary(self) -> dict[str, dict[str, Any]]:
        out = {}
        for endpoint, window in sorted(self.plan_latency_ms.items()):
            values = np.fromiter(window, dtype=np.float64)
            p50, p95, p99 = (
                (round(float(v), 3) for v in np.percentile(values, [50, 95, 99]))
                if values.size
                else (None, None, None)
            )
            out[endpoint] = {"count": self.plan_count[endpoint], "p50": p50, "p95": p95, "p99": p99}
        return out

    def planner_summary(self) -> dict[str, Any]:
        plans = sum(self.stop_reasons.values())
        early = self.stop_reasons.get("converged", 0)
        return {
            "plans": plans,
            "mean_iterations": round(self.iterations_total / plans, 3) if plans else None,
            "early_stop_rate": round(early / plans, 4) if plans else None,
            "stop_reasons": dict(sorted(self.stop_reasons.items())),
            "batches": self.batches,
            "mean_batch_requests": round(self.batched_requests / self.batches, 3) if self.batches else None,
        }

    # -- /metrics -------------------------------------------------------------

    def prometheus(self, gauges: Mapping[str, tuple[str, float]], info: Mapping[str, str]) -> str:
        """Prometheus text exposition (format 0.0.4).

        Args:
            gauges: extra ``name -> (help, value)`` sampled by the caller.
            info: labels of the constant ``wm_model_info`` gauge.
        """
        out: list[str] = []
        _family(out, "wm_uptime_seconds", "gauge", "seconds since start-up",
                [({}, self.uptime_s())])
        _family(out, "wm_requests_total", "counter", "responses by endpoint and status",
                [({"endpoint": e, "status": str(s)}, n) for (e, s), n in sorted(self.responses.items())])
        _family(out, "wm_errors_total", "counter", "error responses by endpoint and code",
                [({"endpoint": e, "code": c}, n)
                 for e, codes in sorted(self.errors.items()) for c, n in sorted(codes.items())])
        _family(out, "wm_plans_total", "counter", "plans by stop reason",
                [({"stop_reason": r}, n) for r, n in sorted(self.stop_reasons.items())])
        _family(out, "wm_plan_iterations_total", "counter", "CEM iterations run",
                [({}, self.iterations_total)])
        _family(out, "wm_plan_batches_total", "counter", "planner calls (micro-batches)",
                [({}, self.batches)])
        _family(out, "wm_plan_batched_requests_total", "counter", "requests planned in those calls",
                [({}, self.batched_requests)])
        hist: list[tuple[dict[str, str], float]] = []
        for endpoint in sorted(self.plan_count):
            buckets = self.latency_buckets[endpoint]
            for bound, count in zip(LATENCY_BUCKETS, buckets, strict=True):
                hist.append(({"endpoint": endpoint, "le": _num(bound)}, count))
            hist.append(({"endpoint": endpoint, "le": "+Inf"}, self.plan_count[endpoint]))
        _family(out, "wm_plan_latency_seconds", "histogram",
                "server time of successful plans", hist, suffix="_bucket")
        for endpoint in sorted(self.plan_count):
            labels = _labels({"endpoint": endpoint})
            out.append(f"wm_plan_latency_seconds_sum{labels} {_num(self.latency_sum_s[endpoint])}")
            out.append(f"wm_plan_latency_seconds_count{labels} {self.plan_count[endpoint]}")
        for name, (help_text, value) in sorted(gauges.items()):
            _family(out, name, "gauge", help_text, [({}, value)])
        if info:
            _family(out, "wm_model_info", "gauge", "the loaded model (value is always 1)",
                    [(dict(info), 1)])
        return "\n".join(out) + "\n"


def _family(
    out: list[str],
    name: str,
    kind: str,
    help_text: str,
    samples: Iterable[tuple[Mapping[str, str], float]],
    suffix: str = "",
) -> None:
    out.append(f"# HELP {name} {help_text}")
    out.append(f"# TYPE {name} {kind}")
    for labels, value in samples:
        out.append(f"{name}{suffix}{_labels(labels)} {_num(value)}")


def _labels(labels: Mapping[str, str]) -> str:
    if not labels:
        return ""
    body = ",".join(f'{k}="{_escape(str(v))}"' for k, v in labels.items())
    return "{" + body + "}"


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _num(value: float) -> str:
    if isinstance(value, float) and not math.isfinite(value):
        return "NaN" if math.isnan(value) else ("+Inf" if value > 0 else "-Inf")
    if isinstance(value, float) and value.is_integer() and abs(value) < 1e15:
        return str(int(value))
    return repr(value) if isinstance(value, float) else str(value)
