//! Host bindings for both contracts a plugin may be built against, generated from `wit/` and
//! nothing else: `current` (`wasmeca:plugin@0.2.0`, `wit/plugin.wit`) and `v0_1`
//! (`wasmeca:plugin@0.1.0`, `wit/v0.1.0/plugin.wit`), and what the rest of the engine sees
//! of them: one [`Manifest`] and conversions of their error records.

#![allow(missing_docs)]

use serde_json::Value;

use crate::error::ActError;

/// `wasmeca:plugin@0.2.0`: events (`publish`, `observe`, observers in the manifest).
pub mod current {
    wasmtime::component::bindgen!({
        path: "../wit",
        world: "plugin",
        imports: { default: async },
        exports: { default: async },
    });
}

/// `wasmeca:plugin@0.1.0`, served unchanged for plugins built against it.
pub mod v0_1 {
    wasmtime::component::bindgen!({
        path: "../wit/v0.1.0",
        world: "plugin",
        imports: { default: async },
        exports: { default: async },
    });
}

/// The contract a component implements.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Contract {
    /// `wasmeca:plugin@0.2.0`.
    Current,
    /// `wasmeca:plugin@0.1.0`.
    V0_1,
}

impl Contract {
    /// Its package name and version, as `inspect` and `check` print it.
    pub fn name(self) -> &'static str {
        match self {
            Self::Current => "wasmeca:plugin@0.2.0",
            Self::V0_1 => "wasmeca:plugin@0.1.0",
        }
    }
}

/// One action or observer as a manifest declares it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ManifestAction {
    /// The pattern, jsonic.
    pub pattern: String,
    /// An example message (JSON text), if any.
    pub example: Option<String>,
}

/// What `init` answered, whichever contract the plugin implements.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Manifest {
    /// The plugin's name.
    pub name: String,
    /// Its semver version.
    pub version: String,
    /// The actions, in order.
    pub actions: Vec<ManifestAction>,
    /// seneca-web route maps (JSON text).
    pub routes: String,
    /// The observers, in order (none for 0.1.0 plugins).
    pub observers: Vec<ManifestAction>,
}

/// Conversions between one contract's records and the engine's types.
macro_rules! records {
    ($world:ident) => {
        impl From<$world::wasmeca::plugin::types::Action> for ManifestAction {
            fn from(a: $world::wasmeca::plugin::types::Action) -> Self {
                Self {
                    pattern: a.pattern,
                    example: a.example,
                }
            }
        }

        impl From<&ActError> for $world::wasmeca::plugin::types::Error {
            fn from(e: &ActError) -> Self {
                Self {
                    code: e.code.clone(),
                    message: e.message.clone(),
                    details: e.details.as_deref().map(Value::to_string),
                    status: e.status,
                }
            }
        }

        impl From<$world::wasmeca::plugin::types::Error> for ActError {
            /// A plugin's error record; details that are not JSON stay text.
            fn from(e: $world::wasmeca::plugin::types::Error) -> Self {
                let details = e
                    .details
                    .map(|d| Box::new(serde_json::from_str(&d).unwrap_or(Value::String(d))));
                ActError {
                    code: e.code,
                    message: e.message,
                    details,
                    status: e.status,
                }
            }
        }
    };
}

records!(current);
records!(v0_1);

impl From<current::wasmeca::plugin::types::Manifest> for Manifest {
    fn from(m: current::wasmeca::plugin::types::Manifest) -> Self {
        Self {
            name: m.name,
            version: m.version,
            actions: m.actions.into_iter().map(Into::into).collect(),
            routes: m.routes,
            observers: m.observers.into_iter().map(Into::into).collect(),
        }
    }
}

impl From<v0_1::wasmeca::plugin::types::Manifest> for Manifest {
    fn from(m: v0_1::wasmeca::plugin::types::Manifest) -> Self {
        Self {
            name: m.name,
            version: m.version,
            actions: m.actions.into_iter().map(Into::into).collect(),
            routes: m.routes,
            observers: Vec::new(),
        }
    }
}
