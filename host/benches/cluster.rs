//! The fleet under faults, in full (not a criterion bench): `tests/cluster/scenario.rs`'s three
//! hosts on a 3-node RabbitMQ cluster (quorum queues) and a 3-server Consul cluster, under a
//! Node Seneca client's AMQP commands, REST reads and an event flood at once, while the RabbitMQ
//! node holding the queue leaders, the Consul leader and one host are killed (SIGKILL) in turn,
//! each down for a while and then started again. Prints what was sent, answered, lost and
//! duplicated, second by second what each load saw, and the time from each kill to full service.
//!
//! Run: `cargo bench -p wasmeca --bench cluster` (`DOWN_SECONDS`, how long each killed node
//! stays down, default 20; `COMMAND_RATE`, default 200/s; `EVENT_RATE`, default 100/s). It
//! starts its cluster in `target/cluster-bench` on AMQP ports 5851.. and Consul 8851..; the
//! test suite's short form (`tests/cluster.rs`) uses 5801.. and 8801... Figures go in
//! BENCHMARKS.md.

#[allow(dead_code)]
#[path = "../../tests/cluster/scenario.rs"]
mod scenario;

use std::time::Duration;

use scenario::{Fleet, Timing};

fn env(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

#[tokio::main]
async fn main() {
    let bin = std::path::PathBuf::from(env!("CARGO_BIN_EXE_wasmeca"));
    let down = Duration::from_secs(env("DOWN_SECONDS", 20));
    let timing = Timing {
        warm: Duration::from_secs(20),
        down,
        after: Duration::from_secs(20),
        command_rate: env("COMMAND_RATE", 200) as u32,
        event_rate: env("EVENT_RATE", 100) as u32,
        rest_callers: 8,
    };
    let mut fleet = Fleet::start("cluster-bench", 5851, 8851, &bin).await;
    let report = fleet.run(timing, &["rabbit", "consul", "host"]).await;
    println!("{timing:?}\n{report}");
}
