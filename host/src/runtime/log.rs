//! A guest's log: its `log` lines and its stdout and stderr, as the host's log lines tagged with
//! the plugin, each capped in length.

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use wasmtime_wasi::cli::{IsTerminal, StdoutStream};

/// The longest log line a plugin writes (with `log`, or to stdout or stderr): the rest is cut,
/// with a marker saying how much, so a plugin cannot flood the host's log with one line.
pub const MAX_LOG_LINE: usize = 16 * 1024;

/// Cuts `text` to [`MAX_LOG_LINE`] bytes (at a character boundary) with a marker saying how
/// much was cut.
pub(super) fn cap_line(text: &mut String) {
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
