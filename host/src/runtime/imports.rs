//! The `wasmeca:plugin/host` imports a guest calls (`act`, `prior`, `publish`, `log`), for both
//! contract versions, on the instance's state: each goes up through [`Upcalls`] under the
//! running call's frame.

use serde_json::{Map, Value};

use super::bindings::{current, v0_1};
use super::instance::State;
use super::log::cap_line;
use crate::error::{ActError, Code};
use crate::message::{Message, Reply, json_kind};

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
        // Waiting is not running long: a nested call of this plugin may need the turn.
        self.turn.release();
        let result = host.act(msg, &parent).await;
        result.map(Reply::into_string)
    }

    /// `prior(msg)`: what the running action overrode.
    async fn prior_import(&mut self, msg: String) -> Result<String, ActError> {
        let host = self.host.upgrade().ok_or_else(closed)?;
        let msg = parse_object(&msg)?;
        let frame = self.frame.as_ref().ok_or_else(|| outside("prior"))?;
        let (ctx, prior) = (frame.ctx.clone(), frame.prior.clone());
        self.turn.release();
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
        self.turn.release();
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
    // An object (every SDK sends one) is read straight into the message's map; anything else
    // is read again only to say what it is.
    if let Ok(map) = serde_json::from_str::<Map<String, Value>>(text) {
        return Ok(Message::new(map));
    }
    match serde_json::from_str::<Value>(text) {
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
