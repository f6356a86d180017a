//! Traces: one request followed across every hop. The host's spans are made by the
//! OpenTelemetry API directly ([`Span`]), and an act's span is the current OpenTelemetry
//! context while its work is polled ([`inside!`]), so nested acts, store calls, publishes and
//! log lines land under it. With telemetry off (the default) no span is made: one check of a
//! static ([`on`]). A batch processor exports the spans by OTLP/HTTP without ever holding an
//! act: a full queue or a collector that is away drops spans and counts them
//! ([`dropped_spans`]). W3C `traceparent`/`tracestate` are read from and written to whatever
//! carries a message ([`remote`], [`Span::carry`]); a message that carries Seneca's `tx$` and
//! no traceparent (from a Node Seneca peer) joins the trace derived from its `tx$`, so every
//! hop of one Seneca transaction lands in one trace. Log lines written inside a span become
//! its events ([`layer`]).

use std::borrow::Cow;
use std::future::Future;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, LazyLock, Mutex, OnceLock, PoisonError};
use std::task::{Context as TaskContext, Poll};
use std::time::Duration;

use opentelemetry::propagation::{Extractor, Injector, TextMapPropagator};
use opentelemetry::trace::{
    Span as _, SpanContext, SpanId, SpanKind, Status, TraceContextExt, TraceFlags, TraceId,
    TraceState, Tracer as _, TracerProvider,
};
use opentelemetry::{Context, KeyValue};
use opentelemetry_otlp::{WithExportConfig, WithHttpConfig};
use opentelemetry_sdk::error::OTelSdkResult;
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::{
    BatchConfigBuilder, BatchSpanProcessor, Sampler, SdkTracer, SdkTracerProvider, SpanData,
    SpanExporter, SpanProcessor,
};
use prometheus_client::metrics::counter::Counter;

use crate::error::ActError;
use tracing::Event;
use tracing::Subscriber;
use tracing::field::{Field, Visit};
use tracing_subscriber::EnvFilter;
use tracing_subscriber::Layer;
use tracing_subscriber::fmt::format::{Format, Json, Writer};
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields};
use tracing_subscriber::registry::LookupSpan;

/// The tracer every span of the host's is made by, set when telemetry starts ([`layer`]):
/// unset, no span is made.
static TRACER: OnceLock<SdkTracer> = OnceLock::new();

/// True when telemetry is on: spans are made (where the trace they would join is sampled,
/// see [`recording`]). One load of a static, so a host with telemetry off pays nothing more.
#[inline]
pub fn on() -> bool {
    TRACER.get().is_some()
}

/// True when a span made here would be recorded: telemetry is on, and the span current here
/// (if any) belongs to a sampled trace. Where no span is current (an ingress, a delivery),
/// the new span starts or continues a trace, and the sampler decides.
#[inline]
pub fn recording() -> bool {
    on() && Context::map_current(|current| {
        let span = current.span();
        let context = span.span_context();
        !context.is_valid() || context.is_sampled()
    })
}

/// True when a span made under `parent` would be recorded: the parent is none or remote (the
/// sampler decides, and a span it leaves out carries that decision on), or a local span of a
/// sampled trace. Telemetry must be on ([`on`]).
#[inline]
pub fn recorded_under(parent: &Context) -> bool {
    let span = parent.span();
    let context = span.span_context();
    !context.is_valid() || context.is_remote() || context.is_sampled()
}

/// A span of the host's: `span!(NAME, KIND, ATTRIBUTES...)` under the current span, or
/// `span!(parent: &CONTEXT, NAME, KIND, ATTRIBUTES...)` under `CONTEXT` (a remote one from
/// [`remote`] at an ingress, or a span's [`Span::context`]). NAME is a `&'static str` or a
/// `String`, KIND a [`SpanKind`] variant, each attribute a `KeyValue`. Nothing is evaluated
/// and no span made when telemetry is off, or inside a trace the sampler left out (a
/// sampled-out request costs its first span only).
macro_rules! span {
    (@start $parent:expr, $name:expr, $kind:ident $(, $attribute:expr)*) => {{
        let mut attributes = $crate::telemetry::attributes();
        $(attributes.push($attribute);)*
        $crate::telemetry::Span::start(
            $name,
            ::opentelemetry::trace::SpanKind::$kind,
            attributes,
            $parent,
        )
    }};
    (parent: $parent:expr, $name:expr, $kind:ident $(, $attribute:expr)* $(,)?) => {
        if $crate::telemetry::on() {
            let parent: &::opentelemetry::Context = $parent;
            if $crate::telemetry::recorded_under(parent) {
                $crate::telemetry::span!(@start Some(parent), $name, $kind $(, $attribute)*)
            } else {
                $crate::telemetry::Span::none()
            }
        } else {
            $crate::telemetry::Span::none()
        }
    };
    ($name:expr, $kind:ident $(, $attribute:expr)* $(,)?) => {
        if $crate::telemetry::recording() {
            $crate::telemetry::span!(@start None, $name, $kind $(, $attribute)*)
        } else {
            $crate::telemetry::Span::none()
        }
    };
}
pub(crate) use span;

/// Room for a span's attributes, those it is made with and those learnt later (what answered an
/// ingress's act, [`Span::tag_all`]; a status code; `error.type`): the span keeps this vector,
/// so what is set later is pushed without growing it (growing it cost ~1.2k instructions per
/// span that learnt its name and attributes late).
pub fn attributes() -> Vec<KeyValue> {
    Vec::with_capacity(8)
}

/// One span of the host's: the OpenTelemetry context holding it, which the work inside it
/// runs in ([`inside!`]); none when telemetry is off or inside a trace the sampler left out
/// (a first span the sampler leaves out is kept, not recorded: it carries the decision). Ends
/// when dropped (not when the last copy of its context goes, which a delivery queued for
/// later may hold).
pub struct Span(
    /// The context whose span this is: `None` makes every method a no-op.
    Option<Context>,
);

impl Span {
    /// No span: what is made when spans are not recorded.
    pub const fn none() -> Self {
        Self(None)
    }

    /// Starts a span named `name` of `kind` with `attributes`, under `parent`, else under the
    /// current span; use [`span!`], which calls this only when the span would be recorded.
    pub fn start(
        name: impl Into<Cow<'static, str>>,
        kind: SpanKind,
        attributes: Vec<KeyValue>,
        parent: Option<&Context>,
    ) -> Self {
        let Some(tracer) = TRACER.get() else {
            return Self::none();
        };
        let builder = tracer
            .span_builder(name)
            .with_kind(kind)
            .with_attributes(attributes);
        let under = |parent: &Context| parent.with_span(tracer.build_with_context(builder, parent));
        Self(Some(match parent {
            Some(parent) => under(parent),
            None => Context::map_current(under),
        }))
    }

    /// True when the span is recorded: made, and not the first span of a trace the sampler
    /// left out (which is kept only to carry that decision). What it would learn is worth
    /// working out only then.
    pub fn is_recording(&self) -> bool {
        self.0.as_ref().is_some_and(|cx| cx.span().is_recording())
    }

    /// The context holding the span, to start a span under it later (a delivery's, queued).
    pub fn context(&self) -> Option<&Context> {
        self.0.as_ref()
    }

    /// Sets one attribute known only after the span was made (a response's status).
    pub fn tag(&self, attribute: KeyValue) {
        if let Some(cx) = &self.0 {
            cx.span().set_attribute(attribute);
        }
    }

    /// Sets attributes known only after the span was made (what answered its act).
    pub fn tag_all(&self, attributes: impl IntoIterator<Item = KeyValue>) {
        if let Some(cx) = &self.0 {
            cx.span().set_attributes(attributes);
        }
    }

    /// Marks the span failed with the error's code (`error.type`) and message.
    pub fn fail(&self, error: &ActError) {
        if let Some(cx) = &self.0 {
            let (kind, status) = failure(error);
            let span = cx.span();
            span.set_attribute(kind);
            span.set_status(status);
        }
    }

    /// Marks the span failed when `outcome` is an error ([`traced!`]).
    pub fn fail_on<T, E: AsRef<ActError>>(&self, outcome: &Result<T, E>) {
        if let Err(e) = outcome {
            self.fail(e.as_ref());
        }
    }

    /// The trace context to send with a message leaving from inside this span
    /// (`traceparent` and, when there is one, `tracestate`); when no span was made, the
    /// current one's ([`carry_current`]), so a trace the sampler left out goes on unsampled.
    pub fn carry(&self) -> Vec<(&'static str, String)> {
        match &self.0 {
            Some(cx) => carried(cx),
            None => carry_current(),
        }
    }
}

impl Drop for Span {
    fn drop(&mut self) {
        if let Some(cx) = &self.0 {
            cx.span().end();
        }
    }
}

/// The trace context to send with a message leaving from here: the current span's, when
/// spans are recorded ([`Span::carry`]).
pub fn carry_current() -> Vec<(&'static str, String)> {
    if on() {
        Context::map_current(carried)
    } else {
        Vec::new()
    }
}

/// Sets one attribute of the current span (an act's, which learns late which peer answered).
pub fn tag_current(attribute: KeyValue) {
    if on() {
        Context::map_current(|cx| cx.span().set_attribute(attribute));
    }
}

/// A future run inside a span: the span's context is the current one while the future is
/// polled (and while it is dropped, if it is dropped before it is done). The work is boxed,
/// so that the wrapper is small whatever it runs.
pub struct InSpan<F: Future> {
    /// The work, until it is done.
    work: Option<Pin<Box<F>>>,
    /// The span's context, attached around each poll.
    context: Context,
}

impl<F: Future> InSpan<F> {
    /// Runs `work` in the span held by `context`. Not an `async fn`: an `async fn` wrapper
    /// holds its future twice, and the act path's futures are moved whole a few times on
    /// their way into the executor (callgrind counted 3.2 times the act's instructions that
    /// way, most of it `memcpy`). Awaited through [`inside!`], which skips it when there is
    /// no span.
    pub fn new(context: &Context, work: F) -> Self {
        Self {
            work: Some(Box::pin(work)),
            context: context.clone(),
        }
    }
}

impl<F: Future> Future for InSpan<F> {
    type Output = F::Output;

    fn poll(mut self: Pin<&mut Self>, cx: &mut TaskContext<'_>) -> Poll<F::Output> {
        let this = &mut *self;
        let _attached = this.context.clone().attach();
        let Some(work) = this.work.as_mut() else {
            panic!("an InSpan future was polled after it was done");
        };
        let output = std::task::ready!(work.as_mut().poll(cx));
        this.work = None;
        Poll::Ready(output)
    }
}

impl<F: Future> Drop for InSpan<F> {
    fn drop(&mut self) {
        if let Some(work) = self.work.take() {
            let _attached = self.context.clone().attach();
            drop(work);
        }
    }
}

/// Awaits `work` inside `span` (a [`Span`]) when there is one, and as it is when not: no
/// wrapper is made then, and the one made when on boxes the work and is small itself, so the
/// caller's future is the size it is without tracing (the act path's futures are moved whole
/// on their way into the executor; a wrapper holding the work inline on each await made
/// callgrind count 15 % more instructions per act, all of it `memcpy`, and an inline one in
/// the branch taken when on still 3 %).
macro_rules! inside {
    ($span:expr, $work:expr) => {{
        let span: &$crate::telemetry::Span = $span;
        match span.context() {
            None => $work.await,
            Some(context) => $crate::telemetry::InSpan::new(context, $work).await,
        }
    }};
}
pub(crate) use inside;

/// Awaits `work` [`inside!`] `span` and marks the span failed with the error's code when it
/// fails.
macro_rules! traced {
    ($span:expr, $work:expr) => {{
        let span: &$crate::telemetry::Span = $span;
        let outcome = $crate::telemetry::inside!(span, $work);
        span.fail_on(&outcome);
        outcome
    }};
}
pub(crate) use traced;

/// What `[telemetry]` and the standard `OTEL_*` variables ask for. Made by
/// [`TelemetrySettings::new`] outside this crate, so that a setting added later breaks no
/// caller.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
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
    /// `service.instance.id`: the host's Seneca instance id, so that a span says which of a
    /// service's hosts made it, by the id `/health` and Consul show; `None` leaves it out.
    pub instance: Option<Arc<str>>,
    /// A PEM file of CAs an `https` collector is also trusted by (beside the system's): a
    /// collector whose certificate a company's own CA signed.
    pub certificate: Option<PathBuf>,
    /// The PEM certificate and private key files this host shows a collector that asks for
    /// a client certificate (mutual TLS).
    pub identity: Option<(PathBuf, PathBuf)>,
    /// Exports gzipped: smaller on the wire to a hosted backend, a little more CPU here.
    pub gzip: bool,
}

impl TelemetrySettings {
    /// Export as `service_name`, everything else as the OpenTelemetry spec's defaults leave it
    /// (the endpoint and sampler left to the `OTEL_*` variables, a queue of 2,048, exports of
    /// up to 10 s, the system's CAs).
    pub fn new(service_name: impl Into<String>) -> Self {
        Self {
            endpoint: None,
            service_name: service_name.into(),
            ratio: None,
            queue_size: 2048,
            export_timeout: Duration::from_secs(10),
            instance: None,
            certificate: None,
            identity: None,
            gzip: false,
        }
    }
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

/// A span of a call that opens no span under it (a store's): never made current, so it
/// costs the span alone, not a context (~3k instructions against a [`Span`]'s more,
/// BENCHMARKS.md, "Traces"). Ended with the call's outcome ([`Leaf::end`]); dropped before
/// that, the call was cut short (its act's deadline passed, or whoever waited went away), and
/// the span ends failed, saying so. Nothing is made when spans are not recorded. Log lines
/// written during the call land in the span around it.
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
        let Some(tracer) = TRACER.get() else {
            return Self(None);
        };
        let mut room = self::attributes();
        room.extend(attributes);
        let builder = tracer
            .span_builder(name)
            .with_kind(SpanKind::Client)
            .with_attributes(room);
        let span = Context::map_current(|current| builder.start_with_context(tracer, current));
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

    /// Ends the span with the call's `outcome`: failed with the error's code (`error.type`)
    /// and message when it failed.
    pub fn end<T>(mut self, outcome: &Result<T, ActError>) {
        if let (Some(mut span), Err(error)) = (self.0.take(), outcome) {
            let (kind, status) = failure(error);
            span.set_attribute(kind);
            span.set_status(status);
        }
    }
}

impl Drop for Leaf {
    fn drop(&mut self) {
        // Not ended with an outcome: the call's future was dropped while it ran.
        if let Some(span) = &mut self.0 {
            span.set_attribute(KeyValue::new("error.type", "cancelled"));
            span.set_status(Status::error(
                "cut short: the act's deadline passed, or whoever waited for it went away",
            ));
        }
    }
}

/// Spans dropped: the export queue was full, or an export failed (the collector away).
static DROPPED: LazyLock<Counter> = LazyLock::new(Counter::default);

/// The counter of dropped spans, for `/metrics` (shared: every clone counts the same).
pub fn dropped_spans() -> Counter {
    DROPPED.clone()
}

/// Starts telemetry: the host's spans are made from now on and exported by OTLP/HTTP
/// ([`Exporting`] keeps the export running). The layer returned turns the log lines written
/// inside a span (a plugin's among them) into events of that span; `logs` is the log filter
/// (`RUST_LOG`'s syntax) of the lines it takes.
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
    if settings.gzip {
        exporter = exporter.with_compression(opentelemetry_otlp::Compression::Gzip);
    }
    let failure = Arc::default();
    let exporter = exporter
        .with_http_client(ToCollector {
            client: http_client(settings)?,
            failure: Arc::clone(&failure),
        })
        .build()
        .map_err(|e| TelemetryError(e.to_string()))?;
    let pending = std::sync::Arc::new(AtomicUsize::new(0));
    let batch = BatchSpanProcessor::builder(Counted {
        inner: exporter,
        pending: pending.clone(),
        failing: AtomicBool::new(false),
        failure,
    })
    .with_batch_config(
        BatchConfigBuilder::default()
            .with_max_queue_size(settings.queue_size)
            .build(),
    )
    .build();
    let resource = resource(
        settings,
        std::fs::read_to_string("/proc/sys/kernel/hostname").ok(),
        &opentelemetry_sdk::Resource::builder().build(),
    );
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
    let filter = EnvFilter::try_new(logs)
        .map_err(|e| TelemetryError(format!("the log filter {logs:?}: {e}")))?;
    // A process exports through one provider: the spans' tracer is set once.
    if TRACER.set(provider.tracer("wasmeca")).is_err() {
        return Err(TelemetryError(
            "telemetry was started already in this process".to_owned(),
        ));
    }
    Ok((SpanEvents.with_filter(filter), Exporting { provider }))
}

/// The exporter's HTTP client: reqwest's, which trusts the system's CAs and also those of
/// `settings.certificate`, and shows `settings.identity` to a collector that asks for a client
/// certificate. A file that cannot be read or holds no PEM is an error at start, not a silent
/// export failure later.
fn http_client(settings: &TelemetrySettings) -> Result<reqwest::blocking::Client, TelemetryError> {
    let read = |what: &str, path: &PathBuf| {
        std::fs::read(path).map_err(|e| TelemetryError(format!("{what} {}: {e}", path.display())))
    };
    let mut client = crate::tls::blocking_client().timeout(settings.export_timeout);
    if let Some(path) = &settings.certificate {
        let pem = read("the CA certificate", path)?;
        let cas = reqwest::Certificate::from_pem_bundle(&pem)
            .ok()
            .filter(|cas| !cas.is_empty())
            .ok_or_else(|| {
                TelemetryError(format!(
                    "the CA certificate {} holds no PEM certificate",
                    path.display()
                ))
            })?;
        client = client.tls_certs_merge(cas);
    }
    if let Some((certificate, key)) = &settings.identity {
        let mut pem = read("the client certificate", certificate)?;
        pem.push(b'\n');
        pem.extend(read("the client key", key)?);
        let identity = reqwest::Identity::from_pem(&pem).map_err(|e| {
            TelemetryError(format!(
                "the client certificate {} and key {}: {}",
                certificate.display(),
                key.display(),
                crate::error::chain(&e)
            ))
        })?;
        client = client.identity(identity);
    }
    // The blocking client runs a runtime of its own, which must not be made inside another:
    // built on a thread of its own, as the exporter builds its default client.
    std::thread::spawn(move || client.build())
        .join()
        .map_err(|_| TelemetryError("building the HTTP client panicked".to_owned()))?
        .map_err(|e| {
            TelemetryError(format!(
                "the collector's HTTP client: {}",
                crate::error::chain(&e)
            ))
        })
}

/// The exporter's way to the collector, keeping why its last request failed: the SDK reduces
/// every failure to send to "network error", and the operator needs the cause (the connection
/// refused, a certificate no trusted CA signed, no such host).
#[derive(Debug)]
struct ToCollector {
    /// The HTTP client ([`http_client`]).
    client: reqwest::blocking::Client,
    /// Why the last request failed, taken by [`Counted`] for its log line.
    failure: Arc<Mutex<Option<String>>>,
}

impl opentelemetry_http::HttpClient for ToCollector {
    // The trait is an `async_trait`; this is the signature that macro gives its method.
    fn send_bytes<'client, 'call>(
        &'client self,
        request: opentelemetry_http::Request<opentelemetry_http::Bytes>,
    ) -> Pin<
        Box<
            dyn Future<
                    Output = Result<
                        opentelemetry_http::Response<opentelemetry_http::Bytes>,
                        opentelemetry_http::HttpError,
                    >,
                > + Send
                + 'call,
        >,
    >
    where
        'client: 'call,
        Self: 'call,
    {
        Box::pin(async move {
            let outcome = self.client.send_bytes(request).await;
            // Every try sets it: the exporter retries within one export, and what is said is
            // why its last try failed (a refusal then a 503 is the 503's story).
            let why = outcome
                .as_ref()
                .err()
                .map(|e| crate::error::chain(e.as_ref()));
            *self.failure.lock().unwrap_or_else(PoisonError::into_inner) = why;
            outcome
        })
    }
}

/// Where every span of this process comes from: `service.name`, `service.version`,
/// `service.instance.id` (the host's Seneca instance id) and `host.name` (`hostname`, the
/// machine's or the container's: a pod's name), over what the SDK `detected` (its own
/// attributes and those of `OTEL_RESOURCE_ATTRIBUTES`), whose `service.instance.id` and
/// `host.name` win over the host's (an operator naming instances by a scheme of their own).
fn resource(
    settings: &TelemetrySettings,
    hostname: Option<String>,
    detected: &opentelemetry_sdk::Resource,
) -> opentelemetry_sdk::Resource {
    let hostname = hostname
        .map(|name| name.trim().to_owned())
        .filter(|name| !name.is_empty());
    let own = [
        settings
            .instance
            .clone()
            .map(|id| KeyValue::new("service.instance.id", id)),
        hostname.map(|name| KeyValue::new("host.name", name)),
    ];
    let detected_attributes = detected
        .iter()
        .map(|(key, value)| KeyValue::new(key.clone(), value.clone()));
    opentelemetry_sdk::Resource::builder_empty()
        .with_attributes(detected_attributes)
        .with_service_name(settings.service_name.clone())
        .with_attribute(KeyValue::new("service.version", env!("CARGO_PKG_VERSION")))
        .with_attributes(
            own.into_iter()
                .flatten()
                .filter(|attribute| detected.get(&attribute.key).is_none()),
        )
        .build()
}

/// Log lines as events of the span they were written in (the current OpenTelemetry span),
/// named by their message, with their other fields, level and target as attributes; an
/// error-level line marks the span failed.
struct SpanEvents;

impl<S: Subscriber> Layer<S> for SpanEvents {
    fn on_event(&self, event: &Event<'_>, _: tracing_subscriber::layer::Context<'_, S>) {
        Context::map_current(|cx| {
            let span = cx.span();
            if !span.is_recording() {
                return;
            }
            let metadata = event.metadata();
            let mut fields = EventFields {
                message: String::new(),
                attributes: vec![
                    KeyValue::new("level", metadata.level().as_str()),
                    KeyValue::new("target", metadata.target()),
                ],
            };
            event.record(&mut fields);
            // As `tracing-opentelemetry` did: an error logged inside a span marks it failed.
            if *metadata.level() == tracing::Level::ERROR {
                span.set_status(Status::error(fields.message.clone()));
            }
            span.add_event(fields.message, fields.attributes);
        });
    }
}

/// What a log line's fields become in its span event.
struct EventFields {
    /// The line's message: the event's name.
    message: String,
    /// Its other fields.
    attributes: Vec<KeyValue>,
}

impl Visit for EventFields {
    fn record_str(&mut self, field: &Field, value: &str) {
        if field.name() == "message" {
            value.clone_into(&mut self.message);
        } else {
            self.attributes
                .push(KeyValue::new(field.name(), value.to_owned()));
        }
    }

    fn record_i64(&mut self, field: &Field, value: i64) {
        self.attributes.push(KeyValue::new(field.name(), value));
    }

    fn record_u64(&mut self, field: &Field, value: u64) {
        let value: opentelemetry::Value = match i64::try_from(value) {
            Ok(value) => value.into(),
            Err(_) => value.to_string().into(),
        };
        self.attributes.push(KeyValue::new(field.name(), value));
    }

    fn record_bool(&mut self, field: &Field, value: bool) {
        self.attributes.push(KeyValue::new(field.name(), value));
    }

    fn record_f64(&mut self, field: &Field, value: f64) {
        self.attributes.push(KeyValue::new(field.name(), value));
    }

    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        if field.name() == "message" {
            self.message = format!("{value:?}");
        } else {
            self.attributes
                .push(KeyValue::new(field.name(), format!("{value:?}")));
        }
    }
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
    /// The last export failed: the next failure says nothing new, the next success is news.
    failing: AtomicBool,
    /// Why the HTTP client's last request failed ([`ToCollector`]), more than the SDK says.
    failure: Arc<Mutex<Option<String>>>,
}

impl<E: SpanExporter> SpanExporter for Counted<E> {
    async fn export(&self, batch: Vec<SpanData>) -> OTelSdkResult {
        let size = batch.len();
        self.pending.fetch_sub(size, Ordering::Relaxed);
        let outcome = self.inner.export(batch).await;
        // An operator learns why spans stop arriving, once per outage, not once per batch.
        let why = self
            .failure
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        match &outcome {
            Err(e) => {
                DROPPED.inc_by(size as u64);
                if !self.failing.swap(true, Ordering::Relaxed) {
                    let why = why.unwrap_or_else(|| e.to_string());
                    tracing::warn!(
                        "exporting spans failed: {why}; spans are dropped (counted in \
                         wasmeca_telemetry_spans_dropped_total) until an export succeeds"
                    );
                }
            }
            Ok(()) => {
                if self.failing.swap(false, Ordering::Relaxed) {
                    tracing::info!("exporting spans succeeds again");
                }
            }
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

/// The parent of an ingress's span: the trace a message came with, by its `traceparent`
/// (read by `header`), else the trace derived from its Seneca `tx$`, else none (a new trace).
pub fn remote<'a>(header: impl Fn(&str) -> Option<&'a str>, tx: Option<&str>) -> Context {
    let extracted = TraceContextPropagator::new()
        .extract_with_context(&Context::new(), &Headers(header, std::marker::PhantomData));
    if extracted.span().span_context().is_valid() {
        extracted
    } else if let Some(tx) = tx {
        Context::new().with_remote_span_context(from_tx(tx))
    } else {
        Context::new()
    }
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

/// The W3C trace context (`traceparent` and, when there is one, `tracestate`) of the span
/// `cx` holds.
fn carried(cx: &Context) -> Vec<(&'static str, String)> {
    let mut written = Written::default();
    TraceContextPropagator::new().inject_context(cx, &mut written);
    written.0
}

/// What a failed span says, whichever way it was made: `error.type` and the error status.
fn failure(error: &ActError) -> (KeyValue, Status) {
    (
        KeyValue::new("error.type", error.code.clone()),
        Status::error(format!("{}: {}", error.code, error.message)),
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
    fn spans_name_the_service_its_instance_and_the_host_unless_the_environment_does() {
        let settings = TelemetrySettings {
            instance: Some("abc/1/2/0.1.0/wasmeca".into()),
            ..TelemetrySettings::new("billing")
        };
        let said = |resource: &opentelemetry_sdk::Resource, key: &'static str| {
            resource.get(&key.into()).map(|v| v.to_string())
        };
        let nothing = opentelemetry_sdk::Resource::builder_empty().build();
        let ours = resource(&settings, Some("box-1\n".to_owned()), &nothing);
        assert_eq!(said(&ours, "service.name").as_deref(), Some("billing"));
        assert_eq!(
            said(&ours, "service.instance.id").as_deref(),
            Some("abc/1/2/0.1.0/wasmeca")
        );
        assert_eq!(said(&ours, "host.name").as_deref(), Some("box-1"));

        // `OTEL_RESOURCE_ATTRIBUTES`, as the SDK detected it, names the instance and the host.
        let operator = opentelemetry_sdk::Resource::builder_empty()
            .with_attributes([
                KeyValue::new("service.instance.id", "billing-7"),
                KeyValue::new("host.name", "pod-7"),
                KeyValue::new("deployment.environment.name", "ci"),
            ])
            .build();
        let theirs = resource(&settings, Some("box-1".to_owned()), &operator);
        assert_eq!(
            said(&theirs, "service.instance.id").as_deref(),
            Some("billing-7")
        );
        assert_eq!(said(&theirs, "host.name").as_deref(), Some("pod-7"));
        assert_eq!(
            said(&theirs, "deployment.environment.name").as_deref(),
            Some("ci")
        );
        assert_eq!(said(&theirs, "service.name").as_deref(), Some("billing"));

        let nameless = resource(
            &TelemetrySettings {
                instance: None,
                ..settings
            },
            Some(" \n".to_owned()),
            &nothing,
        );
        assert_eq!(said(&nameless, "host.name"), None);
        assert_eq!(said(&nameless, "service.instance.id"), None);
    }

    #[test]
    fn a_seneca_transaction_stands_for_one_trace() {
        let (a, b) = (from_tx("abcdefghijkl"), from_tx("abcdefghijkl"));
        assert_eq!(a.trace_id(), b.trace_id());
        assert!(a.is_valid() && a.is_remote() && a.is_sampled());
        assert_ne!(a.trace_id(), from_tx("abcdefghijkm").trace_id());
    }

    #[test]
    fn nothing_is_carried_or_recorded_when_telemetry_is_off() {
        let span = span!("act", Internal, KeyValue::new("seneca.tx", "t"));
        assert!(span.context().is_none() && !span.is_recording());
        assert!(span.carry().is_empty() && carry_current().is_empty());
        span.fail(&ActError::host(crate::error::Code::NotFound, "y"));
    }

    #[test]
    fn under_a_local_span_the_sampler_left_out_no_span_is_recorded() {
        let context = |remote, flags| {
            SpanContext::new(
                TraceId::from_bytes([1; 16]),
                SpanId::from_bytes([2; 8]),
                flags,
                remote,
                TraceState::default(),
            )
        };
        let under = |remote, flags| {
            recorded_under(&Context::new().with_remote_span_context(context(remote, flags)))
        };
        assert!(recorded_under(&Context::new()));
        assert!(
            under(true, TraceFlags::default()),
            "a remote parent: the sampler decides"
        );
        assert!(under(false, TraceFlags::SAMPLED));
        assert!(!under(false, TraceFlags::default()));
    }

    #[test]
    fn an_ingress_continues_the_traceparent_else_the_transaction_else_starts_a_trace() {
        let parent = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01";
        let given = remote(
            |name| (name == "traceparent").then_some(parent),
            Some("tx1"),
        );
        let given = given.span().span_context().clone();
        assert_eq!(
            given.trace_id().to_string(),
            "0af7651916cd43dd8448eb211c80319c"
        );
        assert_eq!(given.span_id().to_string(), "b7ad6b7169203331");
        let from_seneca = remote(|_| None, Some("tx1"));
        assert_eq!(
            from_seneca.span().span_context().trace_id(),
            from_tx("tx1").trace_id()
        );
        assert!(!remote(|_| Some("junk"), None).has_active_span());
    }
}
