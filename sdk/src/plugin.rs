//! Building a plugin: [`Plugin`] with its actions, observers and routes, and the exports
//! ([`export!`](crate::export)) that hand messages and events to them.

use std::cell::RefCell;

use serde::Serialize;
use serde_json::Value;

use crate::__private::wasmeca::plugin::types;
use crate::{Error, Msg, Result, log};

/// A handler: gets the plugin state and the message, answers something serialisable.
type Handler<S> = Box<dyn FnMut(&mut S, &Msg) -> Result<String>>;

/// One declared action.
struct ActionDef<S> {
    /// The pattern, as written.
    pattern: String,
    /// Optional example message.
    example: Option<Value>,
    /// What answers it.
    handler: Handler<S>,
}

/// What an observer runs for an event.
type ObserverHandler<S> = Box<dyn FnMut(&mut S, &Msg) -> Result<()>>;

/// One registered observer.
struct ObserverDef<S> {
    /// The event pattern, as written.
    pattern: String,
    /// What handles the events.
    handler: ObserverHandler<S>,
}

/// A plugin: its name, version, state, actions, observers and routes. Build one in the function
/// given to [`export!`].
pub struct Plugin<S = ()> {
    /// Manifest name.
    name: String,
    /// Manifest version (semver).
    version: String,
    /// State shared by every handler, kept between calls.
    state: S,
    /// Actions in the order added (later ones override earlier ones on the same pattern).
    actions: Vec<ActionDef<S>>,
    /// seneca-web route sets.
    routes: Vec<Value>,
    /// Observers in the order added.
    observers: Vec<ObserverDef<S>>,
}

impl Plugin<()> {
    /// A stateless plugin.
    pub fn new(name: impl Into<String>, version: impl Into<String>) -> Self {
        Self::with_state(name, version, ())
    }
}

impl<S: 'static> Plugin<S> {
    /// A plugin whose handlers share `state` (`&mut S`), kept for the life of the instance.
    pub fn with_state(name: impl Into<String>, version: impl Into<String>, state: S) -> Self {
        Self {
            name: name.into(),
            version: version.into(),
            state,
            actions: Vec::new(),
            routes: Vec::new(),
            observers: Vec::new(),
        }
    }

    /// Adds an observer for an event pattern (`evt:user,cmd:created`): the handler gets the
    /// state and every event the pattern matches (with `event$`, its id, and `tx$`). An error
    /// means "not handled": the host delivers the event again, and dead-letters it after its
    /// attempts. An observer never answers anyone.
    pub fn observe<F>(mut self, pattern: &str, handler: F) -> Self
    where
        F: FnMut(&mut S, &Msg) -> Result<()> + 'static,
    {
        self.observers.push(ObserverDef {
            pattern: pattern.to_owned(),
            handler: Box::new(handler),
        });
        self
    }

    /// Adds an action for a pattern (`cmd:salute`, `role:user,cmd:*`). The handler gets the
    /// state and the message and answers any serialisable value that is an object, an array or
    /// null (`json!({...})`, a struct, a `Vec`).
    pub fn add<R, F>(mut self, pattern: &str, mut handler: F) -> Self
    where
        R: Serialize,
        F: FnMut(&mut S, &Msg) -> Result<R> + 'static,
    {
        let handler: Handler<S> = Box::new(move |state, msg| {
            let answer = handler(state, msg)?;
            serde_json::to_string(&answer).map_err(|e| Error::new("invalid_result", e.to_string()))
        });
        self.actions.push(ActionDef {
            pattern: pattern.to_owned(),
            example: None,
            handler,
        });
        self
    }

    /// Attaches an example message to the action added last (used by `wasmeca check`).
    pub fn example(mut self, example: Value) -> Self {
        if let Some(last) = self.actions.last_mut() {
            last.example = Some(example);
        }
        self
    }

    /// Declares seneca-web route sets (one object or an array):
    /// `json!({"prefix": "/user", "pin": "module:user,if:*", "map": {"list": {"GET": true, "name": ""}}})`.
    pub fn routes(mut self, routes: Value) -> Self {
        match routes {
            Value::Array(sets) => self.routes.extend(sets),
            set => self.routes.push(set),
        }
        self
    }
}

/// The plugin behind the exports, with its state type erased.
trait Dispatch {
    fn run_action(&mut self, action: u32, msg: &Msg) -> Result<String>;
    fn run_observer(&mut self, observer: u32, event: &Msg) -> Result<()>;
}

impl<S> Dispatch for Plugin<S> {
    fn run_action(&mut self, action: u32, msg: &Msg) -> Result<String> {
        let Some(def) = self.actions.get_mut(action as usize) else {
            return Err(Error::new(
                "invalid_action",
                format!("this plugin has no action {action}"),
            ));
        };
        (def.handler)(&mut self.state, msg)
    }

    fn run_observer(&mut self, observer: u32, event: &Msg) -> Result<()> {
        let Some(def) = self.observers.get_mut(observer as usize) else {
            return Err(Error::new(
                "invalid_observer",
                format!("this plugin has no observer {observer}"),
            ));
        };
        (def.handler)(&mut self.state, event)
    }
}

thread_local! {
    /// The plugin, set by `init`.
    static PLUGIN: RefCell<Option<Box<dyn Dispatch>>> = RefCell::new(None);
}

#[doc(hidden)]
pub fn dispatch_init<S: 'static>(
    options: String,
    setup: impl FnOnce(&Msg) -> Result<Plugin<S>>,
) -> std::result::Result<types::Manifest, types::Error> {
    std::panic::set_hook(Box::new(|info| log::error(info.to_string())));
    let options = Msg::from_text(options).unwrap_or_default();
    let plugin = setup(&options)?;
    let manifest = types::Manifest {
        name: plugin.name.clone(),
        version: plugin.version.clone(),
        actions: plugin
            .actions
            .iter()
            .map(|a| types::Action {
                pattern: a.pattern.clone(),
                example: a.example.as_ref().map(Value::to_string),
            })
            .collect(),
        routes: Value::Array(plugin.routes.clone()).to_string(),
        observers: plugin
            .observers
            .iter()
            .map(|o| types::Action {
                pattern: o.pattern.clone(),
                example: None,
            })
            .collect(),
    };
    PLUGIN.with(|slot| *slot.borrow_mut() = Some(Box::new(plugin)));
    Ok(manifest)
}

#[doc(hidden)]
pub fn dispatch_handle(action: u32, msg: String) -> std::result::Result<String, types::Error> {
    let Some(msg) = Msg::from_text(msg) else {
        return Err(Error::invalid_input("the message is not a JSON object").into());
    };
    PLUGIN.with(|slot| match slot.borrow_mut().as_mut() {
        Some(plugin) => plugin.run_action(action, &msg).map_err(types::Error::from),
        None => Err(Error::new("not_initialised", "handle called before init").into()),
    })
}

#[doc(hidden)]
pub fn dispatch_observe(observer: u32, event: String) -> std::result::Result<(), types::Error> {
    let Some(event) = Msg::from_text(event) else {
        return Err(Error::invalid_input("the event is not a JSON object").into());
    };
    PLUGIN.with(|slot| match slot.borrow_mut().as_mut() {
        Some(plugin) => plugin
            .run_observer(observer, &event)
            .map_err(types::Error::from),
        None => Err(Error::new("not_initialised", "observe called before init").into()),
    })
}

/// Exports a plugin: pass a function `fn(&Msg) -> Result<Plugin<S>>` that builds it from the
/// options in the host's configuration.
#[macro_export]
macro_rules! export {
    ($setup:expr) => {
        struct __WasmecaPlugin;

        impl $crate::__private::exports::wasmeca::plugin::guest::Guest for __WasmecaPlugin {
            fn init(
                options: ::std::string::String,
            ) -> ::std::result::Result<
                $crate::__private::wasmeca::plugin::types::Manifest,
                $crate::__private::wasmeca::plugin::types::Error,
            > {
                $crate::__private::init(options, $setup)
            }

            fn handle(
                action: u32,
                msg: ::std::string::String,
            ) -> ::std::result::Result<
                ::std::string::String,
                $crate::__private::wasmeca::plugin::types::Error,
            > {
                $crate::__private::handle(action, msg)
            }

            fn observe(
                observer: u32,
                event: ::std::string::String,
            ) -> ::std::result::Result<(), $crate::__private::wasmeca::plugin::types::Error> {
                $crate::__private::observe(observer, event)
            }
        }

        $crate::__private::__export_plugin!(__WasmecaPlugin);
    };
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn handlers_share_state() {
        let mut p = Plugin::with_state("counter", "1.0.0", 0u32)
            .add("cmd:inc", |n, _| {
                *n += 1;
                Ok(json!({ "n": *n }))
            })
            .example(json!({"cmd": "inc"}));
        assert_eq!(p.run_action(0, &Msg::default()).unwrap(), r#"{"n":1}"#);
        assert_eq!(p.run_action(0, &Msg::default()).unwrap(), r#"{"n":2}"#);
        assert_eq!(
            p.run_action(5, &Msg::default()).unwrap_err().code,
            "invalid_action"
        );
        assert_eq!(p.actions[0].example, Some(json!({"cmd": "inc"})));
    }

    #[test]
    fn observers_get_events_and_share_state() {
        let mut p = Plugin::with_state("audit", "1.0.0", 0u32)
            .observe("evt:user,cmd:created", |n, event| {
                *n += 1;
                assert_eq!(event.str("evt"), Some("user"));
                Ok(())
            })
            .add("role:audit,cmd:count", |n, _| Ok(json!({ "created": *n })));
        let event = Msg::new(
            json!({"evt": "user", "cmd": "created"})
                .as_object()
                .cloned()
                .unwrap_or_default(),
        );
        p.run_observer(0, &event).unwrap();
        p.run_observer(0, &event).unwrap();
        assert_eq!(
            p.run_action(0, &Msg::default()).unwrap(),
            r#"{"created":2}"#
        );
        assert_eq!(
            p.run_observer(3, &event).unwrap_err().code,
            "invalid_observer"
        );
    }
}
