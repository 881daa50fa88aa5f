"""OpenTelemetry tracing of the worker: a span per job, aiohttp client spans as children.

The enqueuer writes its W3C trace context (``traceparent``/``tracestate``) into the job
message; the worker starts the job's span as a child of it, so one trace shows "enqueued by
the scheduler" -> "job on worker-7" -> every HTTP request of the fetch (the aiohttp client
instrumentation creates those, and they nest under the job span because asyncio tasks copy
the context of the task that created them).

Off by default. ``exporter`` chooses where spans go: ``"none"`` (no provider: the API's no-op
tracer, nothing recorded), ``"console"`` (stdout, for a look), ``"otlp"`` (OTLP/HTTP to
``OTEL_EXPORTER_OTLP_ENDPOINT``, default ``http://localhost:4318``, batched). Tests pass their
own provider with the SDK's ``InMemorySpanExporter``. The standard ``OTEL_TRACES_EXPORTER``
and ``OTEL_SERVICE_NAME`` environment variables are honoured.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import TYPE_CHECKING, Literal

from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from scfeeds.exceptions import ConfigurationError

if TYPE_CHECKING:
    from opentelemetry.sdk.trace import TracerProvider

Exporter = Literal["none", "console", "otlp"]
EXPORTERS: tuple[Exporter, ...] = ("none", "console", "otlp")

_propagator = TraceContextTextMapPropagator()


def inject_current() -> dict[str, str]:
    """The current span's W3C trace context, to put in a job message (empty if none)."""
    carrier: dict[str, str] = {}
    _propagator.inject(carrier)
    return carrier


def extract(carrier: Mapping[str, str]) -> Context:
    """The parent context carried by a job message."""
    return _propagator.extract(dict(carrier))


class Tracing:
    """A tracer provider (or none) plus the aiohttp client instrumentation bound to it.

    Parameters
    ----------
    provider
        An SDK ``TracerProvider``; ``None`` turns tracing off (spans are no-ops).
    instrument_aiohttp
        Patch ``aiohttp.ClientSession`` so every client request gets a span (process-wide:
        use one ``Tracing`` per process).
    """

    def __init__(self, provider: TracerProvider | None = None, *, instrument_aiohttp: bool = True):
        self.provider = provider
        self._instrumented = False
        if provider is not None:
            self.tracer: trace.Tracer = provider.get_tracer("scfeeds.service")
            if instrument_aiohttp:
                from opentelemetry.instrumentation.aiohttp_client import (
                    AioHttpClientInstrumentor,
                )

                AioHttpClientInstrumentor().instrument(tracer_provider=provider)
                self._instrumented = True
        else:
            self.tracer = trace.NoOpTracer()

    @property
    def enabled(self) -> bool:
        return self.provider is not None

    @classmethod
    def configure(
        cls, exporter: str | None = None, *, service_name: str = "scfeeds-worker"
    ) -> Tracing:
        """Tracing as asked on the command line or by ``OTEL_TRACES_EXPORTER``."""
        choice = (exporter or os.environ.get("OTEL_TRACES_EXPORTER") or "none").lower()
        if choice not in EXPORTERS:
            raise ConfigurationError(
                f"trace exporter must be one of {', '.join(EXPORTERS)}, got {choice!r}"
            )
        if choice == "none":
            return cls(None)
        from opentelemetry.sdk.resources import Resource
        from opentelemetry.sdk.trace import SpanProcessor, TracerProvider
        from opentelemetry.sdk.trace.export import (
            BatchSpanProcessor,
            ConsoleSpanExporter,
            SimpleSpanProcessor,
        )

        attrs = {} if os.environ.get("OTEL_SERVICE_NAME") else {"service.name": service_name}
        provider = TracerProvider(resource=Resource.create(attrs))
        processor: SpanProcessor
        if choice == "console":
            processor = SimpleSpanProcessor(ConsoleSpanExporter())
        else:
            try:
                from opentelemetry.exporter.otlp.proto.http.trace_exporter import (
                    OTLPSpanExporter,
                )
            except ImportError:  # pragma: no cover - part of the service extra
                raise ConfigurationError(
                    "the OTLP exporter needs opentelemetry-exporter-otlp-proto-http: "
                    "pip install 'scfeeds[service]'"
                ) from None
            processor = BatchSpanProcessor(OTLPSpanExporter())
        provider.add_span_processor(processor)
        return cls(provider)

    def shutdown(self) -> None:
        """Flush pending spans and remove the instrumentation."""
        if self._instrumented:
            from opentelemetry.instrumentation.aiohttp_client import AioHttpClientInstrumentor

            AioHttpClientInstrumentor().uninstrument()
            self._instrumented = False
        if self.provider is not None:
            self.provider.force_flush(timeout_millis=5000)
            self.provider.shutdown()
