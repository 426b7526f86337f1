"""Prometheus metrics of the service, served by ``GET /metrics`` (``SAM_METRICS=false`` turns them off).

Built on ``prometheus_client`` with one ``CollectorRegistry`` per app (tests build many apps in one
process; the library's global registry would refuse the second). Two kinds of metric:

- observed as things happen: HTTP requests (count and latency per route template, method and status, by
  :class:`MetricsMiddleware`; unknown methods and paths are one ``other`` label), and per model call the time spent waiting in the queue and holding the
  model lock (``ModelService.on_call``);
- read from the services' own state at scrape time by :class:`_StateCollector`, so the services keep no
  metrics code: queue depth, backbone runs, feature/text cache hits and misses, open sessions, frames
  propagated, model load time, and an info metric with device, precision and preset.

Names (all prefixed ``sam3_``): ``http_requests_total``, ``http_request_duration_seconds``,
``http_requests_in_flight``, ``model_queue_wait_seconds``, ``model_lock_hold_seconds``, ``model_queue_depth``,
``model_loaded``, ``model_load_seconds``, ``model_info``, ``backbone_runs_total``, ``cache_hits_total`` /
``cache_misses_total`` (label ``cache``: ``image`` | ``text``), ``image_cache_bytes``,
``tracking_sessions_open``, ``frames_propagated_total``.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from http import HTTPMethod
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, InfoMetricFamily, Metric
from prometheus_client.registry import Collector
from starlette.types import ASGIApp, Message, Receive, Scope, Send

# Seconds: a cached click on a GPU is milliseconds, a propagation on a CPU minutes.
LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0)
# Labels come from a closed set: the HTTP methods of RFC 9110 (+ PATCH) and the app's route templates; any
# other method or path is ``other``, so a scanner (or 20,000-character invented methods) cannot grow the scrape.
OTHER = "other"
KNOWN_METHODS = frozenset(method.value for method in HTTPMethod)


class ServiceMetrics:
    """The registry of one app and the metrics observed as things happen."""

    def __init__(self, state: Any):
        """``state`` is the app's ``app.state``; the services appear on it when the lifespan starts."""
        self.registry = CollectorRegistry()
        labels = ("method", "route", "status")
        self.requests = Counter("sam3_http_requests", "HTTP requests answered", labels, registry=self.registry)
        self.latency = Histogram(
            "sam3_http_request_duration_seconds",
            "time from request to the end of the response",
            labels,
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.in_flight = Gauge("sam3_http_requests_in_flight", "requests being served", registry=self.registry)
        self.queue_wait = Histogram(
            "sam3_model_queue_wait_seconds",
            "time a model call waited for the model lock",
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.lock_hold = Histogram(
            "sam3_model_lock_hold_seconds",
            "time a model call held the model lock",
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.registry.register(_StateCollector(state))

    def observe_model_call(self, wait_s: float, hold_s: float) -> None:
        """Hook for ``ModelService.on_call``: one model call waited ``wait_s`` and held the lock ``hold_s``."""
        self.queue_wait.observe(wait_s)
        self.lock_hold.observe(hold_s)

    def render(self) -> bytes:
        return generate_latest(self.registry)


def route_label(scope: Scope) -> str:
    """The route template (``/track/start``), never the raw path; ``other`` when no route matched."""
    route = scope.get("route")
    return getattr(route, "path", None) or OTHER


def method_label(scope: Scope) -> str:
    """The request method when it is a standard one, else ``other``."""
    method = scope.get("method", "")
    return method if method in KNOWN_METHODS else OTHER


class MetricsMiddleware:
    """Counts every HTTP request and times it, labelled by route template, method and status."""

    def __init__(self, app: ASGIApp, metrics: ServiceMetrics):
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        status = 500  # what the server sends when the app dies before answering
        started = time.perf_counter()

        async def recording_send(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        self.metrics.in_flight.inc()
        try:
            await self.app(scope, receive, recording_send)
        finally:
            self.metrics.in_flight.dec()
            labels = (method_label(scope), route_label(scope), str(status))
            self.metrics.requests.labels(*labels).inc()
            self.metrics.latency.labels(*labels).observe(time.perf_counter() - started)


class _StateCollector(Collector):
    """Reads the services' state at scrape time (nothing is kept twice)."""

    def __init__(self, state: Any):
        self.state = state

    def collect(self) -> Iterator[Metric]:
        models = getattr(self.state, "models", None)
        tracking = getattr(self.state, "tracking", None)
        settings = getattr(self.state, "settings", None)
        if models is None:  # before the lifespan started
            return
        yield _gauge("sam3_model_loaded", "1 when the image model is loaded", float(models.loaded))
        load_s = getattr(self.state, "model_load_seconds", None)
        if load_s is not None:
            yield _gauge("sam3_model_load_seconds", "time the last model load took", load_s)
        info = InfoMetricFamily("sam3_model", "the model in use")
        info.add_metric(
            [],
            {
                "device": str(models.device),
                "precision": model_precision(models),
                "preset": str(getattr(settings, "preset", "")),
                "random_weights": str(bool(getattr(settings, "random_weights", False))).lower(),
            },
        )
        yield info
        yield _gauge("sam3_model_queue_depth", "model calls waiting for the model lock", models.queue_depth)
        yield _counter("sam3_backbone_runs", "images encoded by the vision backbone", models.backbone_runs)
        stats = models.cache_stats() or {}
        hits = CounterMetricFamily("sam3_cache_hits", "feature cache hits", labels=["cache"])
        misses = CounterMetricFamily("sam3_cache_misses", "feature cache misses", labels=["cache"])
        for cache in ("image", "text"):
            hits.add_metric([cache], float(stats.get(f"{cache}_hits", 0)))
            misses.add_metric([cache], float(stats.get(f"{cache}_misses", 0)))
        yield hits
        yield misses
        yield _gauge("sam3_image_cache_bytes", "bytes held by the image feature cache", stats.get("image_bytes", 0))
        if tracking is not None:
            yield _gauge("sam3_tracking_sessions_open", "open tracking sessions", len(tracking.sessions))
            yield _counter(
                "sam3_frames_propagated", "video frames processed by propagations", tracking.frames_propagated
            )


def model_precision(models: Any) -> str:
    """The precision in use after ``auto`` (``SAM3_PRECISION``), as ``/health`` reports it; ``none`` before
    the model is loaded."""
    return models.precision.mode if models.precision is not None else "none"


def _gauge(name: str, doc: str, value: float) -> GaugeMetricFamily:
    return GaugeMetricFamily(name, doc, value=float(value))


def _counter(name: str, doc: str, value: float) -> CounterMetricFamily:
    return CounterMetricFamily(name, doc, value=float(value))
