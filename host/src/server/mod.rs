//! The HTTP server both HTTP listeners run on (the REST gateway and Seneca's HTTP transport), and
//! what both say about this host ([`status`]):
//! HTTP/1.1 where each phase of a connection has a clock of its own — a request's headers
//! (`header_timeout`: slowloris), its body (`body_timeout`, answered 408: slow POST), its act
//! (bounded by the act's own deadline) and the wait for the next request on a kept-alive
//! connection (`idle_timeout`) — a body limit (413), a connection limit, and a graceful
//! shutdown that finishes the requests in flight; and the JSON response both write.

use std::sync::Arc;
use std::sync::atomic::{AtomicU8, AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::http::{Request, StatusCode, header};
use axum::response::{IntoResponse, Response};
use http_body_util::BodyExt;
use hyper::body::{Body as _, Incoming};
use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::error::{ActError, Code};

pub mod status;

/// What an HTTP listener allows its clients.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HttpLimits {
    /// How long a client may take to send a request's headers, from its first byte (or from
    /// the connection's opening, for the first request), before its connection is closed: a
    /// slowloris client sends them a byte at a time.
    pub header_timeout: Duration,
    /// How long a client may take to send a request's body once its headers are in, before it
    /// is answered 408 and its connection closed: a slow-POST client announces a large body
    /// and sends it a byte at a time, or never.
    pub body_timeout: Duration,
    /// How long a kept-alive connection may wait for its next request, with no bytes moving,
    /// before it is closed.
    pub idle_timeout: Duration,
    /// The largest request body read; a larger one is answered 413 without being read.
    pub body_limit: usize,
    /// How many connections may be open at once; one more is closed as soon as it is accepted.
    pub max_connections: usize,
}

impl Default for HttpLimits {
    fn default() -> Self {
        Self {
            header_timeout: Duration::from_secs(10),
            body_timeout: Duration::from_secs(20),
            idle_timeout: Duration::from_secs(60),
            body_limit: 1 << 20,
            max_connections: 10_000,
        }
    }
}

/// How a listener writes an error the server answers itself (a body too slow or too large),
/// in the listener's own error shape.
pub type ErrorPage = Arc<dyn Fn(ActError) -> Response + Send + Sync>;

/// Serves `app` on `listener` until `shutdown`, then stops accepting and finishes the requests
/// in flight (idle connections are closed at once). `app` gets each request with its whole
/// body already read, within `limits`; the errors of reading it are written by `error_page`.
pub async fn serve(
    listener: TcpListener,
    app: axum::Router,
    limits: HttpLimits,
    error_page: ErrorPage,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    let connections = Arc::new(Semaphore::new(limits.max_connections));
    let graceful = GracefulShutdown::new();
    let mut http = http1::Builder::new();
    // No `header_read_timeout`: hyper starts it whenever it waits for a request head, so it
    // would also close kept-alive connections that are merely idle. `Phases` keeps the clocks.
    http.timer(TokioTimer::new()).keep_alive(true);
    let service = TowerToHyperService::new(app);
    loop {
        let stream = tokio::select! {
            () = shutdown.cancelled() => break,
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(e) => {
                    // Out of file descriptors, say: wait a little rather than spin.
                    tracing::warn!("HTTP accept failed: {e}");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let Ok(permit) = connections.clone().try_acquire_owned() else {
            tracing::debug!("HTTP connection limit reached; closing a new connection");
            continue;
        };
        let _ = stream.set_nodelay(true);
        let phases = Phases::new();
        let io = TokioIo::new(Tracked {
            stream,
            phases: phases.clone(),
        });
        let (service, tracking, error_page) = (service.clone(), phases.clone(), error_page.clone());
        let whole = hyper::service::service_fn(move |request: Request<Incoming>| {
            let (service, phases) = (service.clone(), tracking.clone());
            let error_page = error_page.clone();
            async move {
                // The headers are in: from here the body's clock, then the act's, apply.
                let request_phase = phases.request();
                let (parts, body) = request.into_parts();
                let body = match read_body(body, &limits).await {
                    Ok(body) => body,
                    Err(e) => return Ok(error_page(e)),
                };
                let large = body.len() >= crate::runtime::LARGE_BODY;
                let answer = hyper::service::Service::call(
                    &service,
                    Request::from_parts(parts, Body::from(body)),
                )
                .await;
                drop(request_phase);
                if large {
                    crate::runtime::give_back_large();
                }
                answer
            }
        });
        let connection = graceful.watch(http.serve_connection(io, whole));
        tokio::spawn(async move {
            let _permit = permit;
            tokio::select! {
                _ = connection => {}
                // Dropping the connection closes the socket.
                () = phases.expired(&limits) => {}
            }
        });
    }
    drop(listener);
    graceful.shutdown().await;
    Ok(())
}

/// The whole body of a request, if it arrives within `limits.body_timeout` and is no larger
/// than `limits.body_limit`.
async fn read_body(body: Incoming, limits: &HttpLimits) -> Result<Bytes, ActError> {
    let limit = limits.body_limit;
    let too_large = || {
        ActError::host(
            Code::BodyTooLarge,
            format!("the body is over the {limit}-byte limit"),
        )
    };
    // A `Content-Length` over the limit is refused before a byte of the body is read.
    if body.size_hint().lower() > limit as u64 {
        return Err(too_large());
    }
    let read = http_body_util::Limited::new(body, limit).collect();
    match tokio::time::timeout(limits.body_timeout, read).await {
        Ok(Ok(collected)) => Ok(collected.to_bytes()),
        Ok(Err(e)) if e.is::<http_body_util::LengthLimitError>() => Err(too_large()),
        Ok(Err(e)) => Err(ActError::host(
            Code::InvalidBody,
            format!("the body could not be read: {e}"),
        )),
        Err(_) => Err(ActError::host(
            Code::BodyTimeout,
            format!(
                "the body did not arrive within {} ms of the headers",
                limits.body_timeout.as_millis()
            ),
        )),
    }
}

/// Where a connection is, for the clock that closes it: waiting for a request, reading one's
/// headers, or busy with a request (whose body and act have clocks of their own).
#[derive(Clone)]
struct Phases(Arc<PhaseState>);

/// [`Phases`]' state.
struct PhaseState {
    /// [`WAITING`], [`HEADERS`] or [`REQUEST`].
    phase: AtomicU8,
    /// When the phase began, in ms since `START`; while waiting, when bytes last moved (a
    /// response still being written is not idleness).
    since: AtomicU64,
}

/// Waiting for the next request's first byte (the idle timeout runs).
const WAITING: u8 = 0;
/// Reading a request's headers (the header timeout runs).
const HEADERS: u8 = 1;
/// A request's headers are in: its body and act are bounded by their own clocks.
const REQUEST: u8 = 2;

/// The clock `since` counts from.
static START: std::sync::LazyLock<Instant> = std::sync::LazyLock::new(Instant::now);

fn now_ms() -> u64 {
    START.elapsed().as_millis() as u64
}

impl Phases {
    /// A new connection: its first request's headers are due within the header timeout.
    fn new() -> Self {
        Self(Arc::new(PhaseState {
            phase: AtomicU8::new(HEADERS),
            since: AtomicU64::new(now_ms()),
        }))
    }

    /// Bytes came in: while waiting, they are the next request's first.
    fn read(&self) {
        let state = &self.0;
        if state
            .phase
            .compare_exchange(WAITING, HEADERS, Ordering::Relaxed, Ordering::Relaxed)
            .is_ok()
        {
            state.since.store(now_ms(), Ordering::Relaxed);
        }
    }

    /// Bytes went out: while waiting, a response is still being written.
    fn wrote(&self) {
        if self.0.phase.load(Ordering::Relaxed) == WAITING {
            self.0.since.store(now_ms(), Ordering::Relaxed);
        }
    }

    /// A request's headers are in; the connection waits again once the guard is dropped.
    fn request(&self) -> RequestPhase {
        self.0.phase.store(REQUEST, Ordering::Relaxed);
        RequestPhase(self.clone())
    }

    /// Resolves once the connection has waited for a request longer than the idle timeout, or
    /// for a request's headers longer than the header timeout.
    async fn expired(&self, limits: &HttpLimits) {
        loop {
            let phase = self.0.phase.load(Ordering::Relaxed);
            let since = self.0.since.load(Ordering::Relaxed);
            let limit = match phase {
                WAITING => limits.idle_timeout,
                HEADERS => limits.header_timeout,
                // A request's own clocks bound it; look again later.
                _ => {
                    tokio::time::sleep(limits.header_timeout.min(limits.idle_timeout)).await;
                    continue;
                }
            };
            let elapsed = Duration::from_millis(now_ms().saturating_sub(since));
            if elapsed >= limit {
                return;
            }
            tokio::time::sleep((limit - elapsed).max(Duration::from_millis(10))).await;
        }
    }
}

/// A request in flight on a connection.
struct RequestPhase(Phases);

impl Drop for RequestPhase {
    fn drop(&mut self) {
        let state = &self.0.0;
        state.since.store(now_ms(), Ordering::Relaxed);
        state.phase.store(WAITING, Ordering::Relaxed);
    }
}

/// A TCP stream that tells its [`Phases`] when bytes move.
struct Tracked {
    /// The connection.
    stream: TcpStream,
    /// Where the moments go.
    phases: Phases,
}

impl AsyncRead for Tracked {
    fn poll_read(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let polled = std::pin::Pin::new(&mut self.stream).poll_read(cx, buf);
        if buf.filled().len() > before {
            self.phases.read();
        }
        polled
    }
}

impl AsyncWrite for Tracked {
    fn poll_write(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let polled = std::pin::Pin::new(&mut self.stream).poll_write(cx, buf);
        if matches!(polled, Poll::Ready(Ok(n)) if n > 0) {
            self.phases.wrote();
        }
        polled
    }

    fn poll_flush(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.stream).poll_flush(cx)
    }

    fn poll_shutdown(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.stream).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        let polled = std::pin::Pin::new(&mut self.stream).poll_write_vectored(cx, bufs);
        if matches!(polled, Poll::Ready(Ok(n)) if n > 0) {
            self.phases.wrote();
        }
        polled
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }
}

/// The parent of a request's span: the trace its W3C `traceparent` header names, else the one
/// its Seneca `tx` stands for, else none (a new trace).
pub fn remote_parent(headers: &axum::http::HeaderMap, tx: Option<&str>) -> opentelemetry::Context {
    let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
    crate::telemetry::remote(header, tx)
}

/// A response with `status` and the JSON text `body`.
pub fn json(status: StatusCode, body: String) -> Response {
    (status, [(header::CONTENT_TYPE, "application/json")], body).into_response()
}
