//! wasmeca: a host runtime for Seneca-style message-pattern services written as WebAssembly
//! components. Plugins declare patterns (`cmd:salute`, `role:user,cmd:*`); the host matches
//! every message to the action whose pattern fits, exactly as Seneca's patrun does, and answers
//! it, whichever ingress it came from.
//!
//! # Layout
//!
//! Five layers; a module imports only from its own layer and the layers below, and no two
//! modules (nor two files of one module) import each other (`tests/architecture.rs` holds the
//! code to this list):
//!
//! 1. ground: [`error`] (Seneca-shaped errors and the one list of the host's codes),
//!    [`pattern`] (jsonic, `String(value)`, gex globs, the patrun trie), [`message`] (messages,
//!    meta keys, ids, answers), [`principal`] (who a message acts for, which the data store's
//!    rules read), [`metrics`] (Prometheus), [`shutdown`] (the signal that starts a drain),
//!    [`telemetry`] (OpenTelemetry spans, their export, and W3C trace context), [`tls`] (the
//!    CAs the host's HTTP clients trust).
//! 2. engine: [`runtime`] (the wasmtime engine, compile cache, instances and pools; the
//!    `Upcalls` and `Handler` traits through which guests call up, and the guests' imports).
//! 3. core: [`plugins`] (one plugin: manifest, backend), [`remote`] (the `Remote` and `Peers`
//!    traits), [`registry`] (the plugin set, its snapshots and life cycle), [`router`] (`act()`),
//!    [`ingress`] (the step every listener shares), [`events`] (publish and observe, the
//!    in-memory bus), [`builtins`] (Seneca's `role:seneca` actions, answered natively),
//!    [`readiness`] (the dependencies a readiness probe checks).
//! 4. settings: [`config`] (`wasmeca.toml`, validated; builds the core's types).
//! 5. adapters: [`server`] (the HTTP server both HTTP listeners run on, and `/health` and
//!    `/plugins`), [`gateway`] (REST routes, `/metrics`), [`transport`] (Seneca's HTTP and AMQP
//!    transports and the events bus over AMQP), [`discovery`] (Consul; implements `Peers`),
//!    [`data`] (the entity and cache stores, served as native actions), [`reload`] (the plugin
//!    folder watcher), [`authoring`] (`new`, `build`, `check`, `componentize`), [`host`] (a
//!    running `Host` wired from a configuration, one function per listener), and the CLI
//!    (`main.rs`).
//!
//! This file only declares the modules and re-exports what embedders use.
//!
//! # The path of a REST request
//!
//! 1. `server/mod.rs` takes the connection and reads the request and its body within the limits,
//! 2. `gateway/mod.rs` builds the seneca-web message, its route found by `gateway/table.rs` in
//!    the table it keeps for the current plugins,
//! 3. `ingress.rs` counts it and hands it to the router,
//! 4. `router.rs` gives it ids, a deadline and a depth, and resolves it,
//! 5. `registry/snapshot.rs` finds the action by patrun's walk and `$version`, and calls it,
//! 6. `runtime/pool.rs` leases an instance, and `runtime/instance.rs` runs the guest's `handle`;
//!
//! the answer goes back the same way and `gateway/mod.rs` writes it as JSON.
//!
//! # The path of an AMQP delivery
//!
//! 1. `transport/amqp/listener.rs` takes the delivery from the broker,
//! 2. `transport/amqp/wire.rs` decodes the envelope into a message,
//! 3. `ingress.rs` checks the loop, answers a repeated id from the history, counts it,
//! 4. `router.rs` resolves it,
//! 5. `registry/snapshot.rs` calls the action,
//! 6. `runtime/pool.rs` and `runtime/instance.rs` run the guest;
//!
//! `wire.rs` encodes the reply envelope and `listener.rs` publishes it, then acknowledges.

pub mod authoring;
pub mod builtins;
pub mod config;
pub mod data;
pub mod discovery;
pub mod error;
pub mod events;
pub mod gateway;
pub mod host;
pub mod ingress;
pub mod message;
pub mod metrics;
pub mod pattern;
pub mod plugins;
pub mod principal;
pub mod readiness;
pub mod registry;
pub mod reload;
pub mod remote;
pub mod router;
pub mod runtime;
pub mod server;
pub mod shutdown;
pub mod telemetry;
pub mod tls;
pub mod transport;

pub use config::Config;
pub use error::{ActError, Code};
pub use message::{Message, Reply};
pub use plugins::{Plugin, PluginSource};
pub use registry::Registry;
pub use router::Router;
pub use runtime::{LoadError, Runtime};
pub use shutdown::CancellationToken;

pub use host::{Host, ServeError, assemble, router, serve, start};
