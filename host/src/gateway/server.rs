//! The HTTP server both HTTP listeners run on (the REST gateway and Seneca's HTTP transport):
//! HTTP/1.1 with a header-read timeout (slowloris), an idle keep-alive timeout, a connection
//! limit, and a graceful shutdown that finishes the requests in flight; and the JSON response
//! both write.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

/// What an HTTP listener allows its clients.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HttpLimits {
    /// How long a client may take to send a request's headers before its connection is closed
    /// (a slowloris client sends them a byte at a time).
    pub header_timeout: Duration,
    /// How long a kept-alive connection may stay with no request in flight and no bytes moving
    /// before it is closed.
    pub idle_timeout: Duration,
    /// How many connections may be open at once; one more is closed as soon as it is accepted.
    pub max_connections: usize,
}

impl Default for HttpLimits {
    fn default() -> Self {
        Self {
            header_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(60),
            max_connections: 10_000,
        }
    }
}

/// Serves `app` on `listener` until `shutdown`, then stops accepting and finishes the requests
/// in flight (idle connections are closed at once).
pub async fn serve(
    listener: TcpListener,
    app: axum::Router,
    limits: HttpLimits,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    let connections = Arc::new(Semaphore::new(limits.max_connections));
    let graceful = GracefulShutdown::new();
    let mut http = http1::Builder::new();
    http.timer(TokioTimer::new())
        .header_read_timeout(limits.header_timeout)
        .keep_alive(true);
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
        let activity = Activity::default();
        let io = TokioIo::new(Tracked {
            stream,
            activity: activity.clone(),
        });
        let (service, counting) = (service.clone(), activity.clone());
        let counted = hyper::service::service_fn(move |request| {
            let busy = counting.begin();
            let service = service.clone();
            async move {
                let _busy = busy;
                hyper::service::Service::call(&service, request).await
            }
        });
        let connection = graceful.watch(http.serve_connection(io, counted));
        let idle = limits.idle_timeout;
        tokio::spawn(async move {
            let _permit = permit;
            tokio::select! {
                _ = connection => {}
                // Dropping the connection closes the socket.
                () = activity.idle_for(idle) => {}
            }
        });
    }
    drop(listener);
    graceful.shutdown().await;
    Ok(())
}

/// What a connection is doing, for its idle timeout.
#[derive(Clone, Default)]
struct Activity(Arc<ActivityState>);

/// [`Activity`]'s counters.
#[derive(Default)]
struct ActivityState {
    /// When bytes last moved, in ms since `START`.
    last: AtomicU64,
    /// Requests in flight on the connection (an act may take long without moving a byte).
    busy: AtomicUsize,
}

/// The clock `last` counts from.
static START: std::sync::LazyLock<Instant> = std::sync::LazyLock::new(Instant::now);

impl Activity {
    fn now() -> u64 {
        START.elapsed().as_millis() as u64
    }

    /// Bytes moved.
    fn touch(&self) {
        self.0.last.store(Self::now(), Ordering::Relaxed);
    }

    /// A request started; it counts until the guard is dropped.
    fn begin(&self) -> Busy {
        self.0.busy.fetch_add(1, Ordering::Relaxed);
        self.touch();
        Busy(self.clone())
    }

    /// Resolves once the connection has had no request in flight and no bytes moving for
    /// `timeout`.
    async fn idle_for(&self, timeout: Duration) {
        self.touch();
        loop {
            let last = self.0.last.load(Ordering::Relaxed);
            let quiet = Duration::from_millis(Self::now().saturating_sub(last));
            if quiet >= timeout && self.0.busy.load(Ordering::Relaxed) == 0 {
                return;
            }
            let wait = timeout.saturating_sub(quiet).max(Duration::from_millis(10));
            tokio::time::sleep(wait).await;
        }
    }
}

/// A request in flight on a connection.
struct Busy(Activity);

impl Drop for Busy {
    fn drop(&mut self) {
        self.0.touch();
        self.0.0.busy.fetch_sub(1, Ordering::Relaxed);
    }
}

/// A TCP stream that records when bytes move.
struct Tracked {
    /// The connection.
    stream: TcpStream,
    /// Where the moments go.
    activity: Activity,
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
            self.activity.touch();
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
            self.activity.touch();
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
            self.activity.touch();
        }
        polled
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }
}

/// A response with `status` and the JSON text `body`.
pub fn json(status: StatusCode, body: String) -> Response {
    (status, [(header::CONTENT_TYPE, "application/json")], body).into_response()
}
