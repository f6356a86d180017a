//! The peer table cross-host acts read: every passing instance of the watched services, what
//! each wasmeca peer serves in which versions, and the balancer that orders the candidates.
//! Pure: the Consul side ([`super::consul`]) fills it.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use semver::{Version, VersionReq};
use serde_json::{Map, Value};

use crate::config::Balance;
use crate::error::ActError;
use crate::message::{Message, Reply};
use crate::pattern::Patrun;
use crate::remote::{PeerChoice, Remote, RemoteCall};
use crate::runtime::BoxFuture;

/// What a wasmeca peer serves: pattern → the `(plugin, version)`s serving it.
pub type Served = Patrun<Vec<(String, Version)>>;

/// One passing instance of a watched service.
pub struct Peer {
    /// Its Consul service ID.
    pub id: String,
    /// Its Consul service name.
    pub service: String,
    /// Its Seneca instance id (`Meta.instance`), empty for services that are not wasmeca.
    pub instance: String,
    /// `http://address:port/act`.
    pub url: String,
    /// `Weights.Passing`, for weighted balancing.
    pub weight: u32,
    /// What reaches it (a Seneca HTTP client with kept-alive connections).
    pub client: Arc<dyn Remote>,
    /// What it serves: pattern → `(plugin, version)`s, from its own description; `None` for
    /// services that are not wasmeca (reached only by `$target`).
    pub serves: Option<Arc<Served>>,
}

impl Remote for Peer {
    fn act<'a>(
        &'a self,
        msg: &'a Message,
        call: RemoteCall<'a>,
    ) -> BoxFuture<'a, Result<Reply, ActError>> {
        self.client.act(msg, call)
    }

    fn describe(&self) -> String {
        format!("{} {}", self.id, self.url)
    }
}

impl std::fmt::Debug for Peer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} ({})", self.id, self.url)
    }
}

impl Peer {
    /// The best version this peer has for `msg` under `req` (any version when `None`), and all
    /// it has for the pattern.
    fn offer(
        &self,
        msg: &Map<String, Value>,
        req: Option<&VersionReq>,
    ) -> Option<(Option<Version>, Vec<Version>)> {
        let entries = self.serves.as_ref()?.find(msg)?;
        let versions: Vec<Version> = entries.iter().map(|(_, v)| v.clone()).collect();
        let best = versions
            .iter()
            .filter(|v| req.is_none_or(|r| r.matches(v)))
            .max()
            .cloned();
        Some((best, versions))
    }
}

/// The passing instances of every watched service; replaced whole on each change.
#[derive(Default)]
pub struct PeerTable {
    /// By service name.
    pub services: HashMap<String, Vec<Arc<Peer>>>,
}

impl PeerTable {
    /// The peers able to answer `msg` (none whose instance is in `track`): with a pin, those
    /// with a satisfying version; without, those with the highest version any peer has.
    pub fn for_message(
        &self,
        msg: &Map<String, Value>,
        req: Option<&VersionReq>,
        track: &[String],
        balance: &Balancer,
    ) -> PeerChoice {
        let choice = |peers: Vec<Arc<Peer>>| {
            PeerChoice::Peers(peers.into_iter().map(|p| p as Arc<dyn Remote>).collect())
        };
        let mut offers = Vec::new();
        let mut versions = Vec::new();
        for peer in self.services.values().flatten() {
            if track.contains(&peer.instance) {
                continue;
            }
            if let Some((best, all)) = peer.offer(msg, req) {
                versions.extend(all);
                if let Some(best) = best {
                    offers.push((best, peer.clone()));
                }
            }
        }
        if offers.is_empty() {
            versions.sort();
            versions.dedup();
            return if versions.is_empty() {
                PeerChoice::Nobody
            } else {
                PeerChoice::NoVersion(versions)
            };
        }
        let top = offers.iter().map(|(v, _)| v.clone()).max();
        let peers: Vec<Arc<Peer>> = offers
            .into_iter()
            .filter(|(v, _)| Some(v) == top.as_ref())
            .map(|(_, p)| p)
            .collect();
        choice(balance.order(peers))
    }

    /// Every passing instance of `service` (none whose instance is in `track`), in balance order.
    pub fn for_service(
        &self,
        service: &str,
        track: &[String],
        balance: &Balancer,
    ) -> Option<Vec<Arc<Peer>>> {
        let peers = self.services.get(service)?;
        Some(
            balance.order(
                peers
                    .iter()
                    .filter(|p| !track.contains(&p.instance))
                    .cloned()
                    .collect(),
            ),
        )
    }

    /// True if `service` is watched.
    pub fn knows(&self, service: &str) -> bool {
        self.services.contains_key(service)
    }

    /// Every peer, for `/health` and tests.
    pub fn all(&self) -> Vec<Arc<Peer>> {
        self.services.values().flatten().cloned().collect()
    }
}

/// Orders candidate peers by the configured policy.
pub struct Balancer {
    /// The policy.
    policy: Balance,
    /// Round-robin position.
    next: AtomicUsize,
}

impl Balancer {
    /// A balancer with `policy`.
    pub fn new(policy: Balance) -> Self {
        Self {
            policy,
            next: AtomicUsize::new(0),
        }
    }

    /// The peers in the order to try them.
    pub fn order(&self, mut peers: Vec<Arc<Peer>>) -> Vec<Arc<Peer>> {
        if peers.len() < 2 {
            return peers;
        }
        peers.sort_by(|a, b| a.id.cmp(&b.id));
        match self.policy {
            Balance::RoundRobin => {
                let start = self.next.fetch_add(1, Ordering::Relaxed) % peers.len();
                peers.rotate_left(start);
            }
            Balance::Random => fastrand::shuffle(&mut peers),
            Balance::Weighted => {
                let total: u64 = peers.iter().map(|p| u64::from(p.weight.max(1))).sum();
                let mut pick = fastrand::u64(..total);
                let index = peers
                    .iter()
                    .position(|p| {
                        let w = u64::from(p.weight.max(1));
                        if pick < w {
                            true
                        } else {
                            pick -= w;
                            false
                        }
                    })
                    .unwrap_or(0);
                peers.swap(0, index);
            }
        }
        peers
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pattern::Pattern;
    use serde_json::json;

    /// A peer's client these tests never call.
    struct Unused;

    impl Remote for Unused {
        fn act<'a>(
            &'a self,
            _: &'a Message,
            _: RemoteCall<'a>,
        ) -> BoxFuture<'a, Result<Reply, ActError>> {
            unreachable!("the tests pick peers, they do not call them")
        }

        fn describe(&self) -> String {
            "unused".into()
        }
    }

    fn peer(id: &str, instance: &str, weight: u32, serves: &[(&str, &str, &str)]) -> Arc<Peer> {
        let mut trie: Served = Patrun::new();
        for (pattern, name, version) in serves {
            let p = Pattern::parse(pattern).unwrap();
            trie.slot(&p)
                .get_or_insert_with(Vec::new)
                .push(((*name).into(), Version::parse(version).unwrap()));
        }
        Arc::new(Peer {
            id: id.into(),
            service: "wasmeca".into(),
            instance: instance.into(),
            url: format!("http://{id}/act"),
            weight,
            client: Arc::new(Unused),
            serves: Some(Arc::new(trie)),
        })
    }

    fn table(peers: Vec<Arc<Peer>>) -> PeerTable {
        PeerTable {
            services: HashMap::from([("wasmeca".to_owned(), peers)]),
        }
    }

    fn msg(v: Value) -> Map<String, Value> {
        v.as_object().cloned().unwrap()
    }

    fn ids(choice: PeerChoice) -> Vec<String> {
        match choice {
            PeerChoice::Peers(p) => p
                .iter()
                .map(|p| p.describe().split(' ').next().unwrap_or("").to_owned())
                .collect(),
            PeerChoice::NoVersion(v) => vec![format!(
                "no version: {}",
                v.iter()
                    .map(ToString::to_string)
                    .collect::<Vec<_>>()
                    .join(" ")
            )],
            PeerChoice::Nobody => vec!["nobody".into()],
        }
    }

    #[test]
    fn pins_pick_peers_by_version_and_no_pin_picks_the_highest() {
        let t = table(vec![
            peer("a", "A", 1, &[("cmd:salute", "salute", "1.0.0")]),
            peer("b", "B", 1, &[("cmd:salute", "salute", "2.0.0")]),
        ]);
        let b = Balancer::new(Balance::RoundRobin);
        let salute = msg(json!({"cmd": "salute"}));
        let one = VersionReq::parse("1").unwrap();
        let three = VersionReq::parse("3").unwrap();
        assert_eq!(ids(t.for_message(&salute, Some(&one), &[], &b)), ["a"]);
        assert_eq!(ids(t.for_message(&salute, None, &[], &b)), ["b"]);
        assert_eq!(
            ids(t.for_message(&salute, Some(&three), &[], &b)),
            ["no version: 1.0.0 2.0.0"]
        );
        assert_eq!(
            ids(t.for_message(&msg(json!({"cmd": "other"})), None, &[], &b)),
            ["nobody"]
        );
        // A peer already on the message's track is never chosen again.
        assert_eq!(ids(t.for_message(&salute, None, &["B".into()], &b)), ["a"]);
    }

    #[test]
    fn round_robin_rotates_and_weighted_favours_heavy_peers() {
        let peers = vec![
            peer("a", "A", 1, &[("cmd:x", "x", "1.0.0")]),
            peer("b", "B", 1, &[("cmd:x", "x", "1.0.0")]),
        ];
        let t = table(peers.clone());
        let rr = Balancer::new(Balance::RoundRobin);
        let x = msg(json!({"cmd": "x"}));
        let firsts: Vec<String> = (0..4)
            .map(|_| ids(t.for_message(&x, None, &[], &rr))[0].clone())
            .collect();
        assert_eq!(firsts, ["a", "b", "a", "b"]);
        let heavy = table(vec![
            peer("a", "A", 1, &[("cmd:x", "x", "1.0.0")]),
            peer("b", "B", 99, &[("cmd:x", "x", "1.0.0")]),
        ]);
        let w = Balancer::new(Balance::Weighted);
        let b_first = (0..200)
            .filter(|_| ids(heavy.for_message(&x, None, &[], &w))[0] == "b")
            .count();
        assert!(b_first > 170, "{b_first}");
    }
}
