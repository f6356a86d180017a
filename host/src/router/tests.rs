//! The router's unit tests: patrun precedence and load order, `prior` chains, `$version`
//! pins, Seneca's defaults, depth, peers and `$target`, on native fake actions.

use std::sync::Weak;

use serde_json::{Map, json};

use super::*;
use crate::pattern::Pattern;
use crate::plugins::Plugin;
use crate::runtime::Runtime;

/// A native action answering who it is and what it got, or acting its message again when
/// the message says `again`.
struct Fake {
    /// Who answers.
    name: &'static str,
    /// The router, for acting again (weak: the router holds this action).
    router: Weak<Inner>,
}

impl Handler for Fake {
    fn call(&self, msg: Message, ctx: CallCtx) -> BoxFuture<'_, Result<Reply, ActError>> {
        Box::pin(async move {
            if msg.get("again").is_some()
                && let Some(router) = self.router.upgrade()
            {
                return router.act(msg, &ctx).await;
            }
            Ok(Reply::from_value(&json!({
                "by": self.name,
                "depth": ctx.depth,
                "caller": ctx.principal.caller.as_ref().map(|c| c.name.clone()),
            })))
        })
    }

    fn describe(&self) -> String {
        self.name.to_owned()
    }
}

fn router() -> Router {
    let runtime = Runtime::new(None, 1 << 20).expect("an engine");
    let registry = Registry::new(
        runtime,
        Vec::new(),
        Arc::new(Metrics::default()),
        crate::registry::LoadLimits::default(),
    );
    let limits = ActLimits {
        timeout: Duration::from_secs(5),
        max_timeout: Duration::from_secs(10),
        max_depth: 4,
    };
    Router::new(registry, limits, "me".into())
}

/// A plugin `name@version` answering `patterns` with [`Fake`]s named `name@version`.
fn add(router: &Router, key: &'static str, patterns: &[&str]) {
    let (name, version) = key.split_once('@').expect("name@version");
    let handlers = patterns
        .iter()
        .map(|p| {
            let fake: Arc<dyn Handler> = Arc::new(Fake {
                name: key,
                router: Arc::downgrade(&router.0),
            });
            (Pattern::parse(p).expect("a pattern"), fake)
        })
        .collect();
    let version = semver::Version::parse(version).expect("a version");
    let plugin = Plugin::native(name, version, handlers);
    router.registry().install(Arc::new(plugin));
}

async fn act(router: &Router, msg: Value) -> Result<Value, ActError> {
    let Value::Object(map) = msg else {
        panic!("not an object")
    };
    router.act(Message::new(map)).await.map(|r| r.to_value())
}

async fn by(router: &Router, msg: Value) -> String {
    let answer = act(router, msg).await.unwrap_or_else(|e| panic!("{e}"));
    answer["by"].as_str().unwrap_or("?").to_owned()
}

/// A peer answering every message it is sent with `{"by": "peer"}`.
struct PeerHost;

impl crate::remote::Remote for PeerHost {
    fn act<'a>(
        &'a self,
        _msg: &'a Message,
        _call: crate::remote::RemoteCall<'a>,
    ) -> BoxFuture<'a, Result<Reply, ActError>> {
        Box::pin(async { Ok(Reply::from_value(&json!({ "by": "peer" }))) })
    }

    fn describe(&self) -> String {
        "peer".into()
    }
}

/// Peers serving only `cmd:remote`.
struct OnePeer;

impl Peers for OnePeer {
    fn service(&self) -> &str {
        "wasmeca"
    }

    fn for_message(
        &self,
        msg: &Message,
        _req: Option<&semver::VersionReq>,
        _track: &[String],
    ) -> PeerChoice {
        if msg.get("cmd").and_then(Value::as_str) == Some("remote") {
            PeerChoice::Peers(vec![Arc::new(PeerHost)])
        } else {
            PeerChoice::Nobody
        }
    }

    fn for_target<'a>(
        &'a self,
        _service: &'a str,
        _track: &'a [String],
        _wait: Duration,
    ) -> BoxFuture<'a, Result<Vec<Arc<dyn crate::remote::Remote>>, ActError>> {
        Box::pin(async { Ok(Vec::new()) })
    }

    fn describe(&self) -> Vec<String> {
        Vec::new()
    }
}

#[tokio::test]
async fn the_catch_all_answers_last_after_local_patterns_and_peers() {
    let r = router();
    add(&r, "any@1.0.0", &[""]);
    add(&r, "local@1.0.0", &["cmd:local"]);
    r.set_peers(Arc::new(OnePeer));
    assert_eq!(by(&r, json!({"cmd": "local"})).await, "local@1.0.0");
    assert_eq!(
        by(&r, json!({"cmd": "remote"})).await,
        "peer",
        "a peer's real pattern wins"
    );
    assert_eq!(by(&r, json!({"cmd": "other"})).await, "any@1.0.0");
    assert_eq!(by(&r, json!({"x": 1})).await, "any@1.0.0");
}

#[tokio::test]
async fn patrun_precedence_and_load_order_pick_the_action() {
    let r = router();
    add(&r, "wide@1.0.0", &["role:user"]);
    add(&r, "narrow@1.0.0", &["role:user,cmd:*"]);
    add(&r, "first@1.0.0", &["cmd:x"]);
    add(&r, "later@1.0.0", &["cmd:x"]);
    assert_eq!(
        by(&r, json!({"role": "user", "cmd": "a"})).await,
        "narrow@1.0.0"
    );
    assert_eq!(by(&r, json!({"role": "user"})).await, "wide@1.0.0");
    assert_eq!(
        by(&r, json!({"cmd": "x"})).await,
        "later@1.0.0",
        "later adds win"
    );
}

#[tokio::test]
async fn priors_chain_to_what_an_action_overrode() {
    let r = router();
    add(&r, "wide@1.0.0", &["role:user"]);
    add(&r, "first@1.0.0", &["role:user,cmd:x"]);
    add(&r, "later@1.0.0", &["role:user,cmd:x"]);
    let snapshot = r.registry().snapshot();
    let winner = snapshot
        .actions()
        .into_iter()
        .find(|a| &*a.pattern == "cmd:x,role:user")
        .cloned()
        .expect("the winner");
    assert_eq!(winner.plugin.key(), "later@1.0.0");
    let ctx = CallCtx::root("tx".into(), Instant::now() + Duration::from_secs(1));
    let call = |prior: Option<&Arc<dyn Handler>>| {
        let (r, ctx) = (r.clone(), ctx.clone());
        let prior = prior.cloned();
        async move {
            r.0.prior(prior.as_ref(), Message::new(Map::new()), &ctx)
                .await
                .map(|reply| reply.to_value())
        }
    };
    let first = call(winner.prior.as_ref()).await.expect("prior answers");
    assert_eq!(first["by"], "first@1.0.0");
    assert_eq!(first["depth"], 1, "a prior is one level deeper");
    // first's own prior is the wider pattern that matched it when it was added.
    let first_action = snapshot
        .actions()
        .into_iter()
        .find(|a| a.plugin.name == "first")
        .cloned()
        .expect("first");
    let wide = call(first_action.prior.as_ref())
        .await
        .expect("wide answers");
    assert_eq!(wide["by"], "wide@1.0.0");
    // With no prior: default$ or null.
    assert_eq!(call(None).await.expect("null"), Value::Null);
}

#[tokio::test]
async fn version_pins_pick_among_versions() {
    let r = router();
    add(&r, "s@1.0.0", &["cmd:s"]);
    add(&r, "s@2.1.0", &["cmd:s"]);
    assert_eq!(by(&r, json!({"cmd": "s"})).await, "s@2.1.0");
    assert_eq!(
        by(&r, json!({"cmd": "s", "$version": "1"})).await,
        "s@1.0.0"
    );
    assert_eq!(
        by(&r, json!({"cmd": "s", "$version": "^2.1"})).await,
        "s@2.1.0"
    );
    let missing = act(&r, json!({"cmd": "s", "$version": "3"}))
        .await
        .unwrap_err();
    assert!(missing.is(Code::VersionNotFound), "{missing}");
    assert!(missing.message.contains("2.1.0, 1.0.0"), "{missing}");
    let bad = act(&r, json!({"cmd": "s", "$version": "x.y"}))
        .await
        .unwrap_err();
    assert!(bad.is(Code::InvalidVersion), "{bad}");
}

#[tokio::test]
async fn unmatched_messages_get_default_or_act_not_found() {
    let r = router();
    let none = act(&r, json!({"cmd": "nope", "tx$": "t"}))
        .await
        .unwrap_err();
    assert!(none.is(Code::ActNotFound));
    assert!(none.message.contains(r#"{"cmd":"nope"}"#), "{none}");
    assert_eq!(
        act(&r, json!({"cmd": "nope", "default$": {"x": 1}}))
            .await
            .unwrap(),
        json!({"x": 1})
    );
    assert_eq!(
        act(&r, json!({"cmd": "nope", "default$": [2]}))
            .await
            .unwrap(),
        json!([2])
    );
    let bad = act(&r, json!({"cmd": "nope", "default$": 3}))
        .await
        .unwrap_err();
    assert!(bad.is(Code::ActDefaultBad), "{bad}");
}

#[tokio::test]
async fn nested_acts_stop_at_the_depth_limit_and_carry_the_caller() {
    let r = router();
    add(&r, "loop@1.0.0", &["cmd:loop"]);
    let e = act(&r, json!({"cmd": "loop", "again": true}))
        .await
        .unwrap_err();
    assert!(e.is(Code::ActDepthLimit), "{e}");
    assert_eq!(e.details.as_deref().unwrap()["limit"], 4);
    // A native action sees who asked (here an ingress: nobody), not itself: the data
    // store's access rules depend on it. (A guest's acts name its plugin: tests/data.rs.)
    add(&r, "echo@1.0.0", &["cmd:echo"]);
    let answer = act(&r, json!({"cmd": "echo"})).await.unwrap();
    assert_eq!(
        (answer["depth"].clone(), answer["caller"].clone()),
        (json!(0), Value::Null)
    );
}

#[tokio::test]
async fn a_target_without_discovery_is_an_error_not_ignored() {
    let r = router();
    add(&r, "a@1.0.0", &["cmd:a"]);
    let e = act(&r, json!({"cmd": "a", "$target": "elsewhere"}))
        .await
        .unwrap_err();
    assert!(e.is(Code::TargetUnavailable), "{e}");
    assert!(e.message.contains("no service discovery"), "{e}");
}

#[tokio::test]
async fn a_closing_router_refuses_new_acts() {
    let r = router();
    add(&r, "a@1.0.0", &["cmd:a"]);
    r.close();
    let e = act(&r, json!({"cmd": "a"})).await.unwrap_err();
    assert!(e.is(Code::Closed));
    r.drained().await;
    assert_eq!(r.in_flight(), 0);
}
