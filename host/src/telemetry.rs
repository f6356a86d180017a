//! Traces: one request followed across every hop. Every span the host makes has the target
//! [`TARGET`] at trace level, so with telemetry off (the default) none is created (a callsite
//! check, see [`on`]); with it on, a `tracing-opentelemetry` layer turns them into OpenTelemetry
//! spans and a batch processor exports them by OTLP/HTTP without ever holding an act: a full
//! queue or a collector that is away drops spans and counts them ([`dropped_spans`]).
//! W3C `traceparent`/`tracestate` are read from and written to whatever carries a message
//! ([`continue_remote`], [`carry`]); a message that carries Seneca's `tx$` and no traceparent
//! (from a Node Seneca peer) joins the trace derived from its `tx$`, so every hop of one Seneca
//! transaction lands in one trace.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{LazyLock, OnceLock};
use std::task::{Context as TaskContext, Poll};
use std::time::Duration;

use opentelemetry::propagation::{Extractor, Injector, TextMapPropagator};
use opentelemetry::trace::{
    Span as _, SpanContext, SpanId, SpanKind, Status, TraceContextExt, TraceFlags, TraceId,
    TraceState, Tracer as _, TracerProvider,
};
use opentelemetry::{Context, KeyValue};
use opentelemetry_otlp::WithExportConfig;
use opentelemetry_sdk::error::OTelSdkResult;
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::{
    BatchConfigBuilder, BatchSpanProcessor, Sampler, SdkTracer, SdkTracerProvider, SpanData,
    SpanExporter, SpanProcessor,
};
use prometheus_client::metrics::counter::Counter;

use crate::error::ActError;
use tracing::Subscriber;
use tracing::{Event, Span};
use tracing_opentelemetry::OpenTelemetrySpanExt;
use tracing_subscriber::EnvFilter;
use tracing_subscriber::Layer;
use tracing_subscriber::fmt::format::{Format, Json, Writer};
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields};
use tracing_subscriber::registry::LookupSpan;

/// The target of every span the host makes (and only of spans: logs keep their own targets).
pub const TARGET: &str = "wasmeca::trace";

/// True when spans are recorded: telemetry is on (or a log filter asks for trace level there).
/// Checked before a span is made, so a host with telemetry off pays one callsite check.
#[inline]
pub fn on() -> bool {
    tracing::enabled!(target: "wasmeca::trace", tracing::Level::TRACE)
}

/// A span of the host's: `trace_span!` with the target [`TARGET`], made only when telemetry is
/// on and the trace it would join is recorded ([`recording`]): inside a trace the sampler
/// left out, no span is made at all, so a sampled-out request costs its first span only.
macro_rules! span {
    ($($rest:tt)+) => {
        if $crate::telemetry::recording() {
            ::tracing::trace_span!(target: "wasmeca::trace", $($rest)+)
        } else {
            ::tracing::Span::none()
        }
    };
}
pub(crate) use span;

/// True when a span made here would be recorded: telemetry is on, and the span current here
/// (if any) belongs to a sampled trace. Where no span is current (an ingress, a delivery),
/// the new span starts or continues a trace, and the sampler decides.
#[inline]
pub fn recording() -> bool {
    on() && {
        let current = Context::current();
        let span = current.span();
        let context = span.span_context();
        !context.is_valid() || context.is_sampled()
    }
}

/// A future run inside a span: the span is entered while the future is polled, and the
/// future is dropped inside it as soon as it is done. `tracing`'s `Instrumented` enters the
/// span once more to drop a future that finished long before: with telemetry on, that was an
/// enter and an exit through every layer per span, 9 % of what the spans cost an act.
/// Here only a future dropped before it is done (cancelled) is dropped inside its span. The
/// work is boxed, so that the wrapper is small whatever it runs.
pub struct InSpan<F: Future> {
    /// The work, until it is done.
    work: Option<Pin<Box<F>>>,
    /// The span it runs in.
    span: Span,
    /// What the span learns from the work's output ([`wrap_traced`]: whether it failed).
    on_done: Option<fn(&Span, &F::Output)>,
}

impl<F: Future> Future for InSpan<F> {
    type Output = F::Output;

    fn poll(mut self: Pin<&mut Self>, cx: &mut TaskContext<'_>) -> Poll<F::Output> {
        let this = &mut *self;
        let _entered = this.span.enter();
        let Some(work) = this.work.as_mut() else {
            panic!("an InSpan future was polled after it was done");
        };
        let output = std::task::ready!(work.as_mut().poll(cx));
        this.work = None;
        if let Some(on_done) = this.on_done {
            on_done(&this.span, &output);
        }
        Poll::Ready(output)
    }
}

impl<F: Future> Drop for InSpan<F> {
    fn drop(&mut self) {
        if let Some(work) = self.work.take() {
            let _entered = self.span.enter();
            drop(work);
        }
    }
}

/// Runs `work` inside `span`. Not an `async fn`: an `async fn` wrapper holds its future
/// twice, and the act path's futures are moved whole a few times on their way into the
/// executor (callgrind counted 3.2 times the act's instructions that way, most of it
/// `memcpy`). Awaited through [`inside!`], which skips it when telemetry is off.
pub fn wrap<F: Future>(span: &Span, work: F) -> InSpan<F> {
    InSpan {
        work: Some(Box::pin(work)),
        span: span.clone(),
        on_done: None,
    }
}

/// Runs `work` [`wrap`]ped in `span` and marks the span failed with the error's code when it fails.
pub fn wrap_traced<T, E, F>(span: &Span, work: F) -> InSpan<F>
where
    E: AsRef<ActError>,
    F: Future<Output = Result<T, E>>,
{
    let mut wrapped = wrap(span, work);
    wrapped.on_done = Some(mark_failed::<T, E>);
    wrapped
}

/// Marks `span` failed when `outcome` is an error.
fn mark_failed<T, E: AsRef<ActError>>(span: &Span, outcome: &Result<T, E>) {
    if let Err(e) = outcome {
        let e = e.as_ref();
        fail(span, &e.code, &e.message);
    }
}

/// Awaits `work` [`wrap`]ped in `span` when telemetry is on, and as it is when off: no
/// wrapper is made then, and the one made when on boxes the work and is small itself, so the
/// caller's future is the size it is without tracing (the act path's futures are moved whole
/// on their way into the executor; a wrapper holding the work inline on each await made
/// callgrind count 15 % more instructions per act, all of it `memcpy`, and an inline one in
/// the branch taken when on still 3 %).
macro_rules! inside {
    ($span:expr, $work:expr) => {{
        let span: &::tracing::Span = $span;
        if span.is_disabled() {
            $work.await
        } else {
            $crate::telemetry::wrap(span, $work).await
        }
    }};
}
pub(crate) use inside;

/// Awaits `work` [`wrap_traced`] in `span` when telemetry is on, as it is when off (see
/// [`inside!`]).
macro_rules! traced {
    ($span:expr, $work:expr) => {{
        let span: &::tracing::Span = $span;
        if span.is_disabled() {
            $work.await
        } else {
            $crate::telemetry::wrap_traced(span, $work).await
        }
    }};
}
pub(crate) use traced;

/// What `[telemetry]` and the standard `OTEL_*` variables ask for.
#[derive(Debug, Clone, PartialEq)]
pub struct TelemetrySettings {
    /// The collector's base URL (`/v1/traces` is added); `None` leaves it to
    /// `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT` / `OTEL_EXPORTER_OTLP_ENDPOINT`.
    pub endpoint: Option<String>,
    /// `service.name` on every span.
    pub service_name: String,
    /// The share of new traces sampled (0..=1), a message's own trace deciding for itself;
    /// `None` leaves it to `OTEL_TRACES_SAMPLER(_ARG)`, else every trace.
    pub ratio: Option<f64>,
    /// Spans waiting for export at most; more are dropped, and counted.
    pub queue_size: usize,
    /// How long one export may take before it is given up (its spans dropped and counted).
    pub export_timeout: Duration,
}

/// Why telemetry could not start.
#[derive(Debug, thiserror::Error)]
#[error("telemetry: {0}")]
pub struct TelemetryError(String);

/// The running export: flushed and shut down when dropped (at the end of `serve`).
pub struct Exporting {
    /// The provider whose batch processor exports.
    provider: SdkTracerProvider,
}

impl Drop for Exporting {
    fn drop(&mut self) {
        let _ = self.provider.shutdown_with_timeout(Duration::from_secs(2));
    }
}

/// The tracer [`Leaf`] spans are made by: the one the layer exports through.
static LEAF_TRACER: OnceLock<SdkTracer> = OnceLock::new();

/// A span of a call that opens no span under it (a store's), made by OpenTelemetry directly
/// under the current span instead of through `tracing`'s layers, where a span cost ~14k
/// instructions before its export (BENCHMARKS.md, "Traces"). Ends when dropped; nothing is
/// made when spans are not recorded. Log lines written during the call land in the span
/// around it.
pub struct Leaf(
    /// The span, when spans are recorded: `None` makes every method a no-op.
    Option<opentelemetry_sdk::trace::Span>,
);

impl Leaf {
    /// A client span named `name` with `attributes`, under the current span, when spans are
    /// recorded ([`recording`]).
    pub fn client(name: &'static str, attributes: impl IntoIterator<Item = KeyValue>) -> Self {
        if !recording() {
            return Self(None);
        }
        let Some(tracer) = LEAF_TRACER.get() else {
            return Self(None);
        };
        let span = tracer
            .span_builder(name)
            .with_kind(SpanKind::Client)
            .with_attributes(attributes)
            .start_with_context(tracer, &Context::current());
        Self(Some(span))
    }

    /// True when the span is recorded (what it learns is worth working out).
    pub fn is_recording(&self) -> bool {
        self.0.is_some()
    }

    /// Names the span once what it stands for is known, with the `attributes` known with it.
    pub fn rename(&mut self, name: String, attributes: impl IntoIterator<Item = KeyValue>) {
        if let Some(span) = &mut self.0 {
            span.update_name(name);
            span.set_attributes(attributes);
        }
    }

    /// Marks the span failed with the error's code (`error.type`) and message.
    pub fn fail(&mut self, error: &ActError) {
        if let Some(span) = &mut self.0 {
            let (kind, status) = failure(&error.code, &error.message);
            span.set_attribute(kind);
            span.set_status(status);
        }
    }
}

/// Spans dropped: the export queue was full, or an export failed (the collector away).
static DROPPED: LazyLock<Counter> = LazyLock::new(Counter::default);

/// The counter of dropped spans, for `/metrics` (shared: every clone counts the same).
pub fn dropped_spans() -> Counter {
    DROPPED.clone()
}

/// The layer that turns the host's spans (and the plugins' log lines inside them, as span
/// events) into OpenTelemetry spans exported by OTLP/HTTP, and what keeps the export running.
/// `logs` is the log filter (`RUST_LOG`'s syntax): the log lines it lets through become span
/// events, and every span of the host is exported.
pub fn layer<S>(
    settings: &TelemetrySettings,
    logs: &str,
) -> Result<(impl Layer<S>, Exporting), TelemetryError>
where
    S: Subscriber + for<'a> LookupSpan<'a>,
{
    if let Ok(protocol) = std::env::var("OTEL_EXPORTER_OTLP_PROTOCOL")
        && protocol != "http/protobuf"
    {
        return Err(TelemetryError(format!(
            "OTEL_EXPORTER_OTLP_PROTOCOL={protocol}: this host exports OTLP over HTTP/protobuf \
             (the collector's port 4318); unset it or set it to http/protobuf"
        )));
    }
    let mut exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_http()
        .with_timeout(settings.export_timeout);
    if let Some(endpoint) = &settings.endpoint {
        exporter = exporter.with_endpoint(format!("{}/v1/traces", endpoint.trim_end_matches('/')));
    }
    let exporter = exporter
        .build()
        .map_err(|e| TelemetryError(e.to_string()))?;
    let pending = std::sync::Arc::new(AtomicUsize::new(0));
    let batch = BatchSpanProcessor::builder(Counted {
        inner: exporter,
        pending: pending.clone(),
    })
    .with_batch_config(
        BatchConfigBuilder::default()
            .with_max_queue_size(settings.queue_size)
            .build(),
    )
    .build();
    let resource = opentelemetry_sdk::Resource::builder()
        .with_service_name(settings.service_name.clone())
        .with_attribute(KeyValue::new("service.version", env!("CARGO_PKG_VERSION")))
        .build();
    let mut provider = SdkTracerProvider::builder()
        .with_span_processor(Bounded {
            inner: batch,
            pending,
            max: settings.queue_size,
        })
        .with_resource(resource);
    if let Some(ratio) = settings.ratio {
        provider = provider.with_sampler(Sampler::ParentBased(Box::new(
            Sampler::TraceIdRatioBased(ratio),
        )));
    }
    let provider = provider.build();
    let tracer = provider.tracer("wasmeca");
    // A process has one subscriber, so one layer: the first tracer is the one leaves use.
    let _ = LEAF_TRACER.set(tracer.clone());
    let filter = EnvFilter::try_new(format!("{logs},{TARGET}=trace"))
        .map_err(|e| TelemetryError(format!("the log filter {logs:?}: {e}")))?;
    // The spans carry what the conventions name, not the host's source lines, threads or
    // timings of its own.
    let layer = tracing_opentelemetry::layer()
        .with_location(false)
        .with_threads(false)
        .with_target(false)
        .with_tracked_inactivity(false)
        .with_tracer(tracer)
        .with_filter(filter);
    Ok((layer, Exporting { provider }))
}

/// The batch processor, refusing (and counting) a span when its queue is full: the processor
/// would drop it too, but without telling.
#[derive(Debug)]
struct Bounded {
    /// The SDK's batch processor.
    inner: BatchSpanProcessor,
    /// Spans handed to it and not yet taken by the exporter.
    pending: std::sync::Arc<AtomicUsize>,
    /// Its queue's size.
    max: usize,
}

impl SpanProcessor for Bounded {
    fn on_start(&self, span: &mut opentelemetry_sdk::trace::Span, cx: &Context) {
        self.inner.on_start(span, cx);
    }

    fn on_end(&self, span: SpanData) {
        if self.pending.fetch_add(1, Ordering::Relaxed) >= self.max {
            self.pending.fetch_sub(1, Ordering::Relaxed);
            DROPPED.inc();
            return;
        }
        self.inner.on_end(span);
    }

    fn force_flush(&self) -> OTelSdkResult {
        self.inner.force_flush()
    }

    fn set_resource(&mut self, resource: &opentelemetry_sdk::Resource) {
        self.inner.set_resource(resource);
    }

    fn shutdown_with_timeout(&self, timeout: Duration) -> OTelSdkResult {
        self.inner.shutdown_with_timeout(timeout)
    }
}

/// The OTLP exporter, counting what it takes off the queue and what it could not deliver.
#[derive(Debug)]
struct Counted<E> {
    /// The OTLP exporter.
    inner: E,
    /// Spans handed to the batch processor and not yet taken.
    pending: std::sync::Arc<AtomicUsize>,
}

impl<E: SpanExporter> SpanExporter for Counted<E> {
    async fn export(&self, batch: Vec<SpanData>) -> OTelSdkResult {
        let size = batch.len();
        self.pending.fetch_sub(size, Ordering::Relaxed);
        let outcome = self.inner.export(batch).await;
        if outcome.is_err() {
            DROPPED.inc_by(size as u64);
        }
        outcome
    }

    fn shutdown_with_timeout(&self, timeout: Duration) -> OTelSdkResult {
        self.inner.shutdown_with_timeout(timeout)
    }

    fn set_resource(&mut self, resource: &opentelemetry_sdk::Resource) {
        self.inner.set_resource(resource);
    }
}

/// Reads W3C trace context from a message's headers.
struct Headers<'a, F: Fn(&str) -> Option<&'a str>>(F, std::marker::PhantomData<&'a ()>);

impl<'a, F: Fn(&str) -> Option<&'a str>> Extractor for Headers<'a, F> {
    fn get(&self, key: &str) -> Option<&str> {
        (self.0)(key)
    }

    fn keys(&self) -> Vec<&str> {
        vec!["traceparent", "tracestate"]
    }
}

/// Collects W3C trace context to write into a message's headers.
#[derive(Default)]
struct Written(Vec<(&'static str, String)>);

impl Injector for Written {
    fn set(&mut self, key: &str, value: String) {
        let key = match key {
            "traceparent" => "traceparent",
            "tracestate" => "tracestate",
            _ => return,
        };
        self.0.push((key, value));
    }
}

/// Makes `span` continue the trace a message came with: its `traceparent` (read by `header`),
/// else the trace derived from its Seneca `tx$`, else a new trace.
pub fn continue_remote<'a>(
    span: &Span,
    header: impl Fn(&str) -> Option<&'a str>,
    tx: Option<&str>,
) {
    if span.is_disabled() {
        return;
    }
    let extracted =
        TraceContextPropagator::new().extract(&Headers(header, std::marker::PhantomData));
    let parent = if extracted.span().span_context().is_valid() {
        extracted
    } else if let Some(tx) = tx {
        Context::new().with_remote_span_context(from_tx(tx))
    } else {
        return;
    };
    let _ = span.set_parent(parent);
}

/// The remote span context a Seneca transaction id stands for: the trace id and a span id
/// taken from its hash, so every host that sees the same `tx$` without a traceparent lands in
/// one trace.
fn from_tx(tx: &str) -> SpanContext {
    let hash = blake3::hash(tx.as_bytes());
    let bytes = hash.as_bytes();
    let mut trace = [0u8; 16];
    trace.copy_from_slice(&bytes[..16]);
    let mut span = [0u8; 8];
    span.copy_from_slice(&bytes[16..24]);
    SpanContext::new(
        TraceId::from_bytes(trace),
        SpanId::from_bytes(span),
        TraceFlags::SAMPLED,
        true,
        TraceState::default(),
    )
}

/// The trace context to send with a message leaving from inside `span` (`traceparent` and,
/// when there is one, `tracestate`); nothing when telemetry is off.
pub fn carry(span: &Span) -> Vec<(&'static str, String)> {
    if span.is_disabled() {
        return Vec::new();
    }
    let mut written = Written::default();
    TraceContextPropagator::new().inject_context(&span.context(), &mut written);
    written.0
}

/// Names `span` once what it stands for is known (`otel.name` recorded after the span was
/// entered would be too late), and sets the `attributes` known with it. One update of the
/// OpenTelemetry span: a `tracing` field recorded after the span was made goes through every
/// layer and its field visitor, which cost about three times as much per attribute.
pub fn rename(span: &Span, name: String, attributes: impl IntoIterator<Item = KeyValue>) {
    if !span.is_disabled() {
        let cx = span.context();
        let otel = cx.span();
        otel.update_name(name);
        otel.set_attributes(attributes);
    }
}

/// Sets one attribute of `span` known only after it was made (see [`rename`]).
pub fn tag(span: &Span, attribute: KeyValue) {
    if !span.is_disabled() {
        span.set_attribute(attribute.key, attribute.value);
    }
}

/// Marks `span` failed with the error's code (`error.type`) and message.
pub fn fail(span: &Span, code: &str, message: &str) {
    if span.is_disabled() {
        return;
    }
    let (kind, status) = failure(code, message);
    span.set_attribute(kind.key, kind.value);
    span.set_status(status);
}

/// What a failed span says, whichever way it was made: `error.type` and the error status.
fn failure(code: &str, message: &str) -> (KeyValue, Status) {
    (
        KeyValue::new("error.type", code.to_owned()),
        Status::error(format!("{code}: {message}")),
    )
}

/// JSON log lines (one object a line, the event's fields at the top) that carry the
/// `trace_id` and `span_id` of the span they were written in, when there is one.
pub struct JsonLines(Format<Json>);

impl Default for JsonLines {
    fn default() -> Self {
        Self(tracing_subscriber::fmt::format().json().flatten_event(true))
    }
}

impl<S, N> FormatEvent<S, N> for JsonLines
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'w> FormatFields<'w> + 'static,
{
    fn format_event(
        &self,
        ctx: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &Event<'_>,
    ) -> std::fmt::Result {
        // The span entered here is the OpenTelemetry context's current one.
        let cx = Context::current();
        let ids = cx.span().span_context().clone();
        if !ids.is_valid() {
            return self.0.format_event(ctx, writer, event);
        }
        let mut line = String::new();
        self.0.format_event(ctx, Writer::new(&mut line), event)?;
        let Some(rest) = line.strip_prefix('{') else {
            return writer.write_str(&line);
        };
        let comma = if rest.starts_with('}') { "" } else { "," };
        write!(
            writer,
            "{{\"trace_id\":\"{}\",\"span_id\":\"{}\"{comma}{rest}",
            ids.trace_id(),
            ids.span_id()
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_seneca_transaction_stands_for_one_trace() {
        let (a, b) = (from_tx("abcdefghijkl"), from_tx("abcdefghijkl"));
        assert_eq!(a.trace_id(), b.trace_id());
        assert!(a.is_valid() && a.is_remote() && a.is_sampled());
        assert_ne!(a.trace_id(), from_tx("abcdefghijkm").trace_id());
    }

    #[test]
    fn nothing_is_carried_or_recorded_when_telemetry_is_off() {
        let span = Span::none();
        assert!(carry(&span).is_empty());
        continue_remote(
            &span,
            |_| Some("00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"),
            None,
        );
        fail(&span, "x", "y");
    }
}
