//! `legacy@1.0.0`: a plugin built straight against the previous contract,
//! `wasmeca:plugin@0.1.0` (`wit/v0.1.0/plugin.wit`), without the SDK, so the tests can check
//! that hosts serving 0.2.0 still serve it unchanged. `legacy:ping` answers `{"pong": true}`.

#![allow(missing_docs, unsafe_code)]

wit_bindgen::generate!({
    path: "../../../wit/v0.1.0",
    world: "plugin",
});

use exports::wasmeca::plugin::guest::Guest;
use wasmeca::plugin::types::{Action, Error, Manifest};

struct Legacy;

impl Guest for Legacy {
    fn init(_options: String) -> Result<Manifest, Error> {
        Ok(Manifest {
            name: "legacy".into(),
            version: "1.0.0".into(),
            actions: vec![Action {
                pattern: "legacy:ping".into(),
                example: None,
            }],
            routes: String::new(),
        })
    }

    fn handle(_action: u32, _msg: String) -> Result<String, Error> {
        Ok(r#"{"pong":true}"#.into())
    }
}

export!(Legacy);
