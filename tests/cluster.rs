//! Issue 18's acceptance in its short form: the fleet of `cluster/scenario.rs` (3 RabbitMQ
//! nodes with quorum queues, 3 Consul servers, 3 wasmeca hosts on one PostgreSQL and Redis)
//! under a Node Seneca client's AMQP commands, REST reads and an event flood, while the
//! RabbitMQ node holding the queue leaders, the Consul leader and one host are killed in turn:
//! no command and no event is lost, no REST request fails but those in flight on the killed
//! host, and service is back within the bounds. `cargo bench -p wasmeca --bench
//! cluster` runs the long form (BENCHMARKS.md has its figures).

#[path = "cluster/scenario.rs"]
mod scenario;

use std::time::Duration;

use scenario::{Fleet, Timing};

#[tokio::test(flavor = "multi_thread")]
async fn the_fleet_loses_nothing_when_a_broker_node_the_consul_leader_or_a_host_dies() {
    let bin = std::path::PathBuf::from(env!("CARGO_BIN_EXE_wasmeca"));
    let mut fleet = Fleet::start("cluster-test", 5801, 8801, &bin).await;
    let timing = Timing {
        warm: Duration::from_secs(5),
        down: Duration::from_secs(5),
        after: Duration::from_secs(5),
        command_rate: 100,
        event_rate: 50,
        rest_callers: 4,
    };
    let report = fleet.run(timing, &["rabbit", "consul", "host"]).await;
    eprintln!("{report}");
    assert!(report.commands_sent > 1_000, "{report}");
    assert_eq!(report.commands_lost, 0, "{report}");
    assert_eq!(report.commands_answered, report.commands_sent, "{report}");
    assert!(report.events_published > 500, "{report}");
    for (group, lost) in &report.events_lost {
        assert_eq!(*lost, 0, "group {group}: {report}");
    }
    assert_eq!(report.events_dead, 0, "{report}");
    assert_eq!(report.rest_failed, 0, "{report}");
    for scenario::Recovery { what, ms, .. } in &report.recovery {
        let bound = if what.starts_with("Consul") {
            10_000
        } else {
            5_000
        };
        assert!(*ms <= bound, "{what}: {ms} ms to full service\n{report}");
    }
}
