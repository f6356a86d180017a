//! `[limits]`: what every act and instance runs under, and the core types built from them.
//! Pure.

use std::time::Duration;

use serde::Deserialize;

use crate::router::ActLimits;
use crate::runtime::InstanceLimits;

/// Limits every act and instance runs under.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Limits {
    /// Default act timeout when a message has no `timeout$` (Seneca's 22222 ms).
    pub timeout_ms: u64,
    /// Linear memory cap per plugin instance, in MiB.
    pub memory_mib: usize,
    /// How deep acts may nest (an action acting an action ...) before `act_depth_limit`.
    pub max_depth: u32,
    /// Deadline for a plugin's `init`, in ms.
    pub init_timeout_ms: u64,
    /// The longest `timeout$` a message may ask for, in ms; longer ones are cut to it.
    pub max_timeout_ms: u64,
    /// How long shutdown waits for calls in flight before it interrupts the guests still
    /// running (their callers get `closed`; AMQP commands go back to the broker), in ms.
    pub drain_timeout_ms: u64,
    /// How long, on SIGTERM, the host keeps serving after it said it is going (health 503,
    /// deregistered from Consul) and before it stops listening, in ms, so peers and load
    /// balancers stop sending first; default 1000 when it registers in Consul (peers see the
    /// deregistration within milliseconds), else 0.
    pub drain_delay_ms: Option<u64>,
    /// The largest answer a plugin may return, in bytes; larger ones are `result_too_large`.
    pub max_result_bytes: usize,
    /// An instance whose memory grew by more than this many MiB during one call is replaced
    /// once it has answered (its in-memory state with it), since WebAssembly memory never
    /// shrinks: one large message must not leave the host larger for good. `0` keeps every
    /// instance whatever it grows.
    pub replace_after_growth_mib: usize,
    /// The sum of every instance's memory cap the host may commit to, in MiB: a plugin that
    /// would go over it is refused at load. Default: the machine's memory.
    pub memory_budget_mib: Option<usize>,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            timeout_ms: crate::message::DEFAULT_TIMEOUT_MS,
            memory_mib: 64,
            max_depth: 32,
            init_timeout_ms: 10_000,
            max_timeout_ms: crate::message::MAX_TIMEOUT_MS,
            drain_timeout_ms: 10_000,
            drain_delay_ms: None,
            max_result_bytes: crate::runtime::MAX_RESULT_BYTES,
            replace_after_growth_mib: crate::runtime::REPLACE_AFTER_GROWTH >> 20,
            memory_budget_mib: None,
        }
    }
}

impl Limits {
    /// The default act timeout.
    pub fn timeout(&self) -> Duration {
        Duration::from_millis(self.timeout_ms)
    }

    /// The limits the router applies to every act.
    pub fn act(&self) -> ActLimits {
        ActLimits {
            timeout: self.timeout(),
            max_timeout: Duration::from_millis(self.max_timeout_ms.max(self.timeout_ms)),
            max_depth: self.max_depth,
        }
    }

    /// How long shutdown waits before interrupting the calls still running.
    pub fn drain_timeout(&self) -> Duration {
        Duration::from_millis(self.drain_timeout_ms)
    }

    /// The init deadline.
    pub fn init_timeout(&self) -> Duration {
        Duration::from_millis(self.init_timeout_ms)
    }

    /// The memory cap in bytes.
    pub fn memory_bytes(&self) -> usize {
        self.memory_mib.saturating_mul(1024 * 1024)
    }

    /// The limits every plugin instance runs under.
    pub fn instance(&self) -> InstanceLimits {
        InstanceLimits {
            memory: self.memory_bytes(),
            max_result: self.max_result_bytes,
            replace_after_growth: self.replace_after_growth_mib.saturating_mul(1024 * 1024),
        }
    }

    /// The host-wide budget of instance memory, in bytes: the configured one, else the
    /// machine's memory (`/proc/meminfo`), else none.
    pub fn memory_budget(&self) -> Option<usize> {
        let mib = self.memory_budget_mib.or_else(|| {
            let meminfo = std::fs::read_to_string("/proc/meminfo").ok()?;
            let kib: usize = meminfo
                .lines()
                .find_map(|l| l.strip_prefix("MemTotal:"))?
                .trim()
                .trim_end_matches("kB")
                .trim()
                .parse()
                .ok()?;
            Some(kib / 1024)
        })?;
        Some(mib.saturating_mul(1024 * 1024))
    }
}
