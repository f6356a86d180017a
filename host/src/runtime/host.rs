//! What a guest may call on the host, and how the engine calls up without knowing who answers:
//! the [`Host`] trait (a guest's nested `act` and `prior`), the [`Handler`] trait (anything a
//! message can be sent to), the [`CallCtx`] a call carries down its chain, and the
//! `wasmeca:plugin/host` imports (`act`, `prior`, `log`) built on them, and the guest's stdout
//! and stderr as log lines.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use serde_json::Value;
use smallvec::SmallVec;
use tokio::time::Instant;
use wasmtime_wasi::cli::{IsTerminal, StdoutStream};

use super::bindings::{current, v0_1};
use super::instance::State;
use crate::error::{ActError, Code};
use crate::message::{Message, Reply, json_kind};
use crate::principal::Principal;

/// A boxed, sendable future, as trait objects return them.
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// What an act carries down its call chain.
#[derive(Debug, Clone)]
pub struct CallCtx {
    /// The transaction id, shared by every act one request causes.
    pub tx: Arc<str>,
    /// 0 for an act from an ingress, +1 per nesting.
    pub depth: u32,
    /// When the act must have answered.
    pub deadline: Instant,
    /// The timeout the deadline came from, for `action_timeout` messages.
    pub timeout: Duration,
    /// Pools whose instances are held by calls further up the chain (re-entry detection);
    /// inline up to four levels, so a call allocates nothing for it.
    pub held: SmallVec<[u64; 4]>,
    /// Who the message acts for (the data store's access rules read it): carried down the
    /// chain, never read here.
    pub principal: Principal,
}

impl CallCtx {
    /// A context for work that no act started (init, replacements), due by `deadline`.
    pub fn root(tx: Arc<str>, deadline: Instant) -> Self {
        let timeout = deadline.saturating_duration_since(Instant::now());
        Self {
            tx,
            depth: 0,
            deadline,
            timeout,
            held: SmallVec::new(),
            principal: Principal::default(),
        }
    }

    /// The act's timeout.
    pub fn timeout(&self) -> Duration {
        self.timeout
    }
}

/// Anything a message can be sent to under a call context: a plugin action, a native action,
/// a remote service. The engine holds the one a running action overrode, for its `prior`.
pub trait Handler: Send + Sync {
    /// Answers `msg` within `ctx.deadline`.
    fn call(&self, msg: Message, ctx: CallCtx) -> BoxFuture<'_, Result<Reply, ActError>>;

    /// What it is, for logs (`cmd:salute (salute@1.0.0)`).
    fn describe(&self) -> String;
}

/// The host side of a guest's imports, implemented by the router: the engine calls up through
/// it and never names what answers.
pub trait Host: Send + Sync {
    /// A nested act from a guest whose call runs under `parent`.
    fn act<'a>(
        &'a self,
        msg: Message,
        parent: &'a CallCtx,
    ) -> BoxFuture<'a, Result<Reply, ActError>>;

    /// `prior(msg)` from a guest whose call runs under `parent`: `prior` is what its action
    /// overrode, if anything.
    fn prior<'a>(
        &'a self,
        prior: Option<&'a Arc<dyn Handler>>,
        msg: Message,
        parent: &'a CallCtx,
    ) -> BoxFuture<'a, Result<Reply, ActError>>;

    /// `publish(event)` from a guest whose call runs under `parent`: resolves once the event
    /// is accepted.
    fn publish<'a>(
        &'a self,
        event: Message,
        parent: &'a CallCtx,
    ) -> BoxFuture<'a, Result<(), ActError>>;
}

/// The frame of the call an instance is running: where nested acts and `prior` come from.
pub(crate) struct Frame {
    /// The caller's context with this instance's pool added to `held`.
    pub ctx: CallCtx,
    /// The action the running action overrode, for `prior`.
    pub prior: Option<Arc<dyn Handler>>,
}

/// A log line's level, whichever contract it came through.
#[derive(Debug, Clone, Copy)]
enum Level {
    /// Very fine detail.
    Trace,
    /// Development detail.
    Debug,
    /// Normal operation.
    Info,
    /// Something unexpected the plugin handled.
    Warn,
    /// Something failed.
    Error,
}

impl State {
    /// `act(msg)`: a nested act under the running call's context.
    async fn act_import(&mut self, msg: String) -> Result<String, ActError> {
        let host = self.host.upgrade().ok_or_else(closed)?;
        let msg = parse_object(&msg)?;
        let parent = self
            .frame
            .as_ref()
            .ok_or_else(|| outside("act"))?
            .ctx
            .clone();
        let result = host.act(msg, &parent).await;
        result.map(Reply::into_string)
    }

    /// `prior(msg)`: what the running action overrode.
    async fn prior_import(&mut self, msg: String) -> Result<String, ActError> {
        let host = self.host.upgrade().ok_or_else(closed)?;
        let msg = parse_object(&msg)?;
        let frame = self.frame.as_ref().ok_or_else(|| outside("prior"))?;
        let (ctx, prior) = (frame.ctx.clone(), frame.prior.clone());
        let result = host.prior(prior.as_ref(), msg, &ctx).await;
        result.map(Reply::into_string)
    }

    /// `publish(event)`: an event from the running call.
    async fn publish_import(&mut self, event: String) -> Result<(), ActError> {
        let host = self.host.upgrade().ok_or_else(closed)?;
        let event = parse_object(&event)?;
        let parent = self
            .frame
            .as_ref()
            .ok_or_else(|| outside("publish"))?
            .ctx
            .clone();
        host.publish(event, &parent).await
    }

    /// `log(level, text)`, tagged with the plugin and the transaction.
    fn log_import(&mut self, level: Level, mut text: String) {
        cap_line(&mut text);
        let plugin = &*self.ident;
        let tx = self.frame.as_ref().map_or("-", |f| &*f.ctx.tx);
        match level {
            Level::Trace => tracing::trace!(target: "wasmeca::plugin", plugin, tx, "{text}"),
            Level::Debug => tracing::debug!(target: "wasmeca::plugin", plugin, tx, "{text}"),
            Level::Info => tracing::info!(target: "wasmeca::plugin", plugin, tx, "{text}"),
            Level::Warn => tracing::warn!(target: "wasmeca::plugin", plugin, tx, "{text}"),
            Level::Error => {
                tracing::error!(target: "wasmeca::plugin", plugin, tx, "{text}");
                if text.starts_with("panicked at") {
                    self.panic = Some(text);
                }
            }
        }
    }
}

/// The host imports of one contract, on the shared implementations above.
macro_rules! imports {
    ($world:ident $(, $publish:ident)?) => {
        impl $world::wasmeca::plugin::types::Host for State {}

        impl $world::wasmeca::plugin::host::Host for State {
            async fn act(
                &mut self,
                msg: String,
            ) -> Result<String, $world::wasmeca::plugin::types::Error> {
                self.act_import(msg).await.map_err(|e| (&e).into())
            }

            async fn prior(
                &mut self,
                msg: String,
            ) -> Result<String, $world::wasmeca::plugin::types::Error> {
                self.prior_import(msg).await.map_err(|e| (&e).into())
            }

            async fn log(&mut self, level: $world::wasmeca::plugin::types::Level, text: String) {
                use $world::wasmeca::plugin::types::Level as L;
                let level = match level {
                    L::Trace => Level::Trace,
                    L::Debug => Level::Debug,
                    L::Info => Level::Info,
                    L::Warn => Level::Warn,
                    L::Error => Level::Error,
                };
                self.log_import(level, text);
            }

            $(
                async fn $publish(
                    &mut self,
                    event: String,
                ) -> Result<(), $world::wasmeca::plugin::types::Error> {
                    self.publish_import(event).await.map_err(|e| (&e).into())
                }
            )?
        }
    };
}

imports!(current, publish);
imports!(v0_1);

/// The answer to an import called when the host is gone.
fn closed() -> ActError {
    ActError::host(Code::Closed, "the host is shutting down")
}

/// The answer to `act` or `prior` called outside `handle` (in a guest's `init`, there is a
/// frame too, so this is a guest calling from nowhere the host knows).
fn outside(import: &str) -> ActError {
    ActError::host(
        Code::InvalidMessage,
        format!("{import} called outside of init and handle"),
    )
}

/// Parses a JSON text that must be an object.
fn parse_object(text: &str) -> Result<Message, ActError> {
    match serde_json::from_str::<Value>(text) {
        Ok(Value::Object(map)) => Ok(Message::new(map)),
        Ok(other) => Err(ActError::host(
            Code::InvalidMessage,
            format!("a message must be a JSON object, not {}", json_kind(&other)),
        )),
        Err(e) => Err(ActError::host(
            Code::InvalidMessage,
            format!("the message is not JSON: {e}"),
        )),
    }
}

/// The longest log line a plugin writes (with `log`, or to stdout or stderr): the rest is cut,
/// with a marker saying how much, so a plugin cannot flood the host's log with one line.
pub const MAX_LOG_LINE: usize = 16 * 1024;

/// Cuts `text` to [`MAX_LOG_LINE`] bytes (at a character boundary) with a marker saying how
/// much was cut.
fn cap_line(text: &mut String) {
    if text.len() <= MAX_LOG_LINE {
        return;
    }
    let mut at = MAX_LOG_LINE;
    while !text.is_char_boundary(at) {
        at -= 1;
    }
    let cut = text.len() - at;
    text.truncate(at);
    text.push_str(&format!("… ({cut} bytes cut)"));
}

/// Plugin output (stdout at info, stderr at warn) as log lines tagged with the plugin.
#[derive(Clone)]
pub(crate) struct LogStream {
    /// `name@version` or file name.
    pub ident: Arc<str>,
    /// True for stderr.
    pub stderr: bool,
}

impl IsTerminal for LogStream {
    fn is_terminal(&self) -> bool {
        false
    }
}

impl StdoutStream for LogStream {
    fn async_stream(&self) -> Box<dyn tokio::io::AsyncWrite + Send + Sync> {
        Box::new(LineWriter {
            stream: self.clone(),
            line: Vec::new(),
            cut: 0,
        })
    }
}

/// Buffers bytes until a newline, then logs the line (the first [`MAX_LOG_LINE`] bytes of it).
struct LineWriter {
    /// Where lines go.
    stream: LogStream,
    /// The incomplete last line.
    line: Vec<u8>,
    /// Bytes of the current line beyond the cap, reported at its end instead of logged.
    cut: usize,
}

impl LineWriter {
    fn emit(&mut self) {
        let mut text = String::from_utf8_lossy(&self.line).trim_end().to_owned();
        if self.cut > 0 {
            text.push_str(&format!("… ({} bytes cut)", self.cut));
            self.cut = 0;
        }
        if !text.is_empty() {
            let plugin = &*self.stream.ident;
            if self.stream.stderr {
                tracing::warn!(target: "wasmeca::plugin", plugin, stream = "stderr", "{text}");
            } else {
                tracing::info!(target: "wasmeca::plugin", plugin, stream = "stdout", "{text}");
            }
        }
        self.line.clear();
    }
}

impl tokio::io::AsyncWrite for LineWriter {
    fn poll_write(
        mut self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        for &b in buf {
            if b == b'\n' {
                self.emit();
            } else if self.line.len() < MAX_LOG_LINE {
                self.line.push(b);
            } else {
                self.cut += 1;
            }
        }
        Poll::Ready(Ok(buf.len()))
    }

    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        self.emit();
        Poll::Ready(Ok(()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncWriteExt;

    #[test]
    fn log_lines_are_capped_with_a_marker() {
        let mut short = "fine".to_owned();
        cap_line(&mut short);
        assert_eq!(short, "fine");
        let mut long = "é".repeat(MAX_LOG_LINE);
        cap_line(&mut long);
        assert!(long.len() < MAX_LOG_LINE + 40, "{}", long.len());
        assert!(
            long.ends_with(&format!("… ({} bytes cut)", MAX_LOG_LINE)),
            "{}",
            &long[long.len() - 30..]
        );
    }

    #[tokio::test]
    async fn output_lines_are_capped_with_a_marker() {
        let stream = LogStream {
            ident: "p@1.0.0".into(),
            stderr: false,
        };
        let mut writer = LineWriter {
            stream,
            line: Vec::new(),
            cut: 0,
        };
        let huge = vec![b'x'; MAX_LOG_LINE + 100];
        writer.write_all(&huge).await.expect("writes");
        assert_eq!((writer.line.len(), writer.cut), (MAX_LOG_LINE, 100));
        writer.write_all(b"\nnext").await.expect("writes");
        assert_eq!((writer.line.as_slice(), writer.cut), (&b"next"[..], 0));
    }
}
