//! A fixed workload for instruction counting, steadier than wall time on a shared machine:
//! 20,000 acts through the salute plugin (`MODE=act`), 20,000 raw component calls with the same
//! payload (`MODE=raw`), or only the setup (`MODE=none`). Run it under
//! `valgrind --tool=callgrind`; BENCHMARKS.md has the command and the figures.

use serde_json::{Value, json};
use wasmeca::config::Limits;
use wasmeca::runtime::RawInstance;
use wasmeca::{Message, PluginSource, Runtime};

const CALLS: usize = 20_000;

fn main() {
    let mode = std::env::var("MODE").unwrap_or_default();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("tokio");
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
                for _ in 0..CALLS {
                    router
                        .act(Message::new(msg.clone()))
                        .await
                        .expect("answers");
                }
            }
            "raw" => {
                for _ in 0..CALLS {
                    raw.handle(0, &payload).await.expect("answers");
                }
            }
            _ => {}
        }
    });
}
