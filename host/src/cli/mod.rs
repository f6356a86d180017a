//! The commands of the `wasmeca` binary that do more than hand a configuration to the library:
//! [`act`] one message, [`publish`] one event, the [`listing`]s of plugins, message specs
//! ([`test`]), and the [`repl`].

pub mod act;
pub mod listing;
pub mod publish;
pub mod repl;
pub mod test;
