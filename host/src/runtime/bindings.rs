//! Host bindings for the `wasmeca:plugin` world, generated from `wit/` and nothing else.

#![allow(missing_docs)]

wasmtime::component::bindgen!({
    path: "../wit",
    world: "plugin",
    imports: { default: async },
    exports: { default: async },
});
