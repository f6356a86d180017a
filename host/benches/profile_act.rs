//! A fixed workload for instruction counting, steadier than wall time on a shared machine:
//! 20,000 (`CALLS`) acts through the salute plugin (`MODE=act`), 20,000 raw component calls
//! with the same payload (`MODE=raw`; on Winch's code, as quick start serves a plugin before
//! Cranelift's is ready, `MODE=raw-baseline`), 20,000 entity loads by id in `q` as a seneca-entity
//! client sends them (`MODE=load-memory`, `MODE=load-sqlite`), 20,000 `GET /user/1` messages
//! through the user seed and its nested load from the memory store, as the REST gateway builds
//! them (`MODE=user`), or only the setup (`MODE=none`). `TRACES=1` records every act's spans
//! as `wasmeca serve` does with telemetry on (every trace sampled, exported by OTLP/HTTP to a
//! port nobody listens on, so each batch is encoded and its send refused). Run it under
//! `valgrind --tool=callgrind`; BENCHMARKS.md has the command and the figures.

use serde_json::{Value, json};
use wasmeca::config::Limits;
use wasmeca::runtime::{Compiling, InstanceLimits, RawInstance};
use wasmeca::{Message, PluginSource, Runtime};

/// Records spans as `wasmeca serve` does with telemetry on and every trace sampled.
fn traced() -> wasmeca::telemetry::Exporting {
    use tracing_subscriber::layer::SubscriberExt as _;
    use tracing_subscriber::util::SubscriberInitExt as _;
    let mut settings = wasmeca::telemetry::TelemetrySettings::new("profile_act");
    settings.endpoint = Some("http://127.0.0.1:9".into());
    settings.ratio = Some(1.0);
    settings.export_timeout = std::time::Duration::from_secs(1);
    let (layer, exporting) = wasmeca::telemetry::layer(&settings, "warn").expect("telemetry");
    tracing_subscriber::registry().with(layer).init();
    exporting
}

/// The start of every host's configuration here: no listener, and every plugin on Cranelift's
/// code from its first call (with quick start, calls would run on Winch's code until a compile
/// behind them, which a run may or may not see finish, replaced it: the count would move).
const OPTIMISED: &str = "listen = []\nno_quick_start = true\n";

fn main() {
    let mode = std::env::var("MODE").unwrap_or_default();
    // How many of each (`CALLS`, default 20,000): two counts of one mode give the cost of one
    // call without the setup's.
    let calls: usize = std::env::var("CALLS")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(20_000);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("tokio");
    let _exporting = (std::env::var("TRACES").as_deref() == Ok("1")).then(traced);
    let salute = wasmeca_tests::plugin("salute");
    let runtime = Runtime::new(
        Some(std::env::temp_dir().join("wasmeca-bench-cache")),
        64 << 20,
    )
    .expect("runtime");
    let router = wasmeca::assemble(
        runtime.clone(),
        &Limits::default(),
        Vec::new(),
        wasmeca::message::instance_id(),
    );
    rt.block_on(router.registry().load_all(&[PluginSource::new(&salute)]))
        .expect("salute loads");
    let compiled = runtime.compile_file(&salute).expect("compiles");
    let (mut raw, _) = rt
        .block_on(RawInstance::new(&runtime, &compiled, &"{}".to_owned()))
        .expect("instance");
    let Value::Object(msg) = json!({"cmd": "salute", "name": "World"}) else {
        unreachable!()
    };
    let payload = r#"{"cmd":"salute","name":"World","tx$":"abcdefghijkl"}"#.to_owned();
    rt.block_on(async {
        match mode.as_str() {
            "act" => {
                for _ in 0..calls {
                    router
                        .act(Message::new(msg.clone()))
                        .await
                        .expect("answers");
                }
            }
            "raw" => {
                for _ in 0..calls {
                    raw.handle(0, &payload).await.expect("answers");
                }
            }
            "raw-baseline" => {
                let quick = Runtime::with_limits(
                    None,
                    InstanceLimits::with_memory(64 << 20),
                    false,
                    Compiling {
                        quick_start: true,
                        compiler: None,
                    },
                )
                .expect("runtime");
                let compiled = quick.compile_to_serve(&salute, None).expect("compiles");
                assert!(compiled.is_quick(), "Winch's code");
                let (mut raw, _) = RawInstance::new(&quick, &compiled, &"{}".to_owned())
                    .await
                    .expect("instance");
                for _ in 0..calls {
                    raw.handle(0, &payload).await.expect("answers");
                }
            }
            "load-memory" | "load-sqlite" => {
                let dir =
                    std::env::temp_dir().join(format!("wasmeca-profile-{}", std::process::id()));
                let url = if mode == "load-memory" {
                    "memory://".to_owned()
                } else {
                    format!("sqlite://{}", dir.join("data.sqlite").display())
                };
                let _ = std::fs::create_dir_all(&dir);
                let config =
                    wasmeca::Config::from_toml(&format!("{OPTIMISED}[data]\nurl = {url:?}\n"))
                        .expect("config");
                let store = wasmeca::router(&config).expect("router");
                let Value::Object(save) = json!({"sys": "entity", "cmd": "save", "name": "user",
                    "ent": {"id$": 1, "name": "Ann"}})
                else {
                    unreachable!()
                };
                store.act(Message::new(save)).await.expect("saved");
                let Value::Object(load) = json!({"sys": "entity", "cmd": "load", "name": "user",
                    "q": {"id": 1}})
                else {
                    unreachable!()
                };
                for _ in 0..calls {
                    store.act(Message::new(load.clone())).await.expect("loads");
                }
                let _ = std::fs::remove_dir_all(&dir);
            }
            "user" => {
                let config = wasmeca::Config::from_toml(&format!(
                    "{OPTIMISED}[data]\nurl = \"memory://\"\n"
                ))
                .expect("config");
                let host = wasmeca::router(&config).expect("router");
                let user = wasmeca_tests::plugin("user");
                host.registry()
                    .load_all(&[PluginSource::new(&user)])
                    .await
                    .expect("user loads");
                let Value::Object(get) = json!({"args": {"params": {"id": "1"}, "query": {},
                    "body": {}}, "module": "user", "if": "load"})
                else {
                    unreachable!()
                };
                for _ in 0..calls {
                    host.act(Message::new(get.clone())).await.expect("loads");
                }
            }
            _ => {}
        }
    });
}
