//! Whether this host can do its work now, as a scheduler's readiness probe asks
//! (`GET /health/ready`): every dependency it was configured with says so. Adapters that keep
//! a connection (an AMQP listener, the events consumer, the Consul registration) hold a
//! [`Flag`] they raise and lower as it comes and goes; those that can be asked (a store) give
//! a probe run on each check. Pure but for the probes it runs.

use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use crate::runtime::BoxFuture;

/// A check run on each probe: `Err` says why the dependency is not usable now.
pub type Probe = Arc<dyn Fn() -> BoxFuture<'static, Result<(), String>> + Send + Sync>;

/// One dependency's check.
enum Check {
    /// Raised and lowered by the adapter that keeps the connection.
    Flag(Flag),
    /// Asked on each check.
    Probe(Probe),
}

/// The host's dependencies, each with how to tell whether it is usable now.
#[derive(Default)]
pub struct Readiness {
    /// What is checked, by name (`AMQP listener test.q on amqp://...`, `entity store`).
    checks: Mutex<Vec<(String, Check)>>,
}

/// What an adapter says about the connection it keeps: down (with why) until it is up.
#[derive(Clone)]
pub struct Flag(Arc<Mutex<Option<String>>>);

impl Flag {
    /// The connection is up and doing its work.
    pub fn up(&self) {
        *self.0.lock().unwrap_or_else(PoisonError::into_inner) = None;
    }

    /// The connection is down, for this reason.
    pub fn down(&self, why: impl Into<String>) {
        *self.0.lock().unwrap_or_else(PoisonError::into_inner) = Some(why.into());
    }

    /// Why it is down, if it is.
    fn problem(&self) -> Option<String> {
        self.0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }
}

impl Readiness {
    /// A flag for `what`, down (`not connected yet`) until its adapter raises it.
    pub fn flag(&self, what: impl Into<String>) -> Flag {
        let flag = Flag(Arc::new(Mutex::new(Some("not connected yet".into()))));
        self.lock().push((what.into(), Check::Flag(flag.clone())));
        flag
    }

    /// Checks `what` with `probe` on each readiness check.
    pub fn probe(&self, what: impl Into<String>, probe: Probe) {
        self.lock().push((what.into(), Check::Probe(probe)));
    }

    /// What is not usable now, each as `what: why`; probes that do not answer within
    /// `timeout` count as not usable. Empty when the host is ready.
    pub async fn problems(&self, timeout: Duration) -> Vec<String> {
        let checks: Vec<(String, Result<Option<String>, Probe>)> = self
            .lock()
            .iter()
            .map(|(what, check)| match check {
                Check::Flag(flag) => (what.clone(), Ok(flag.problem())),
                Check::Probe(probe) => (what.clone(), Err(probe.clone())),
            })
            .collect();
        let mut problems = Vec::new();
        let mut asked = Vec::new();
        for (what, check) in checks {
            match check {
                Ok(None) => {}
                Ok(Some(why)) => problems.push(format!("{what}: {why}")),
                Err(probe) => asked.push(async move {
                    match tokio::time::timeout(timeout, probe()).await {
                        Ok(Ok(())) => None,
                        Ok(Err(why)) => Some(format!("{what}: {why}")),
                        Err(_) => Some(format!("{what}: no answer within {timeout:?}")),
                    }
                }),
            }
        }
        problems.extend(
            futures_util::future::join_all(asked)
                .await
                .into_iter()
                .flatten(),
        );
        problems
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<(String, Check)>> {
        self.checks.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn ready_when_every_flag_is_up_and_every_probe_answers() {
        let readiness = Readiness::default();
        assert!(
            readiness
                .problems(Duration::from_millis(50))
                .await
                .is_empty()
        );
        let flag = readiness.flag("listener");
        assert_eq!(
            readiness.problems(Duration::from_millis(50)).await,
            ["listener: not connected yet"]
        );
        flag.up();
        let answer: Probe = Arc::new(|| Box::pin(async { Err("refused".to_owned()) }));
        readiness.probe("store", answer);
        let silent: Probe = Arc::new(|| Box::pin(std::future::pending()));
        readiness.probe("cache", silent);
        let mut problems = readiness.problems(Duration::from_millis(50)).await;
        problems.sort();
        assert_eq!(problems, ["cache: no answer within 50ms", "store: refused"]);
        flag.down("broker lost");
        assert!(
            readiness
                .problems(Duration::from_millis(50))
                .await
                .contains(&"listener: broker lost".to_owned())
        );
    }
}
