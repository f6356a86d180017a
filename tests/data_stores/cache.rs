//! The cache protocol on memory and Redis: the captures C01–C24 with the recommended replies,
//! @seneca/redis-cache's key layout, expiry, atomic incr/add, and Redis going down and back.

use std::time::Duration;

use serde_json::{Map, Value, json};
use wasmeca::data::{CacheStore, cache, open_cache};

use super::support::{Proxy, REDIS, redis_conn, unique};

fn obj(v: Value) -> Map<String, Value> {
    v.as_object().expect("an object").clone()
}

async fn cache_script(c: &dyn CacheStore, p: &str) {
    let k = |s: &str| format!("{p}{s}");
    let steps: Vec<(Value, Result<Value, &str>)> = vec![
        (
            json!({"cmd": "set", "key": k("k1"), "val": "hello ✓"}),
            Ok(json!({"key": k("k1")})),
        ), // C01
        (
            json!({"cmd": "get", "key": k("k1")}),
            Ok(json!({"value": "hello ✓"})),
        ),
        (
            json!({"cmd": "set", "key": k("k2"), "val": {"a": 1, "b": [true, null]}}),
            Ok(json!({"key": k("k2")})),
        ),
        (
            json!({"cmd": "get", "key": k("k2")}),
            Ok(json!({"value": {"a": 1, "b": [true, null]}})),
        ),
        (
            json!({"cmd": "get", "key": k("missing")}),
            Ok(json!({"value": null})),
        ), // C05-B
        (
            json!({"cmd": "add", "key": k("k1"), "val": "x"}),
            Err("key_exists"),
        ), // C06
        (
            json!({"cmd": "get", "key": k("k1")}),
            Ok(json!({"value": "hello ✓"})),
        ),
        (
            json!({"cmd": "add", "key": k("k3"), "val": "new"}),
            Ok(json!({"key": k("k3")})),
        ),
        (
            json!({"cmd": "set", "key": k("n"), "val": 10}),
            Ok(json!({"key": k("n")})),
        ),
        (
            json!({"cmd": "incr", "key": k("n"), "val": 1}),
            Ok(json!({"value": 11})),
        ), // C09
        (
            json!({"cmd": "incr", "key": k("n"), "val": 5}),
            Ok(json!({"value": 16})),
        ),
        (
            json!({"cmd": "decr", "key": k("n"), "val": 2}),
            Ok(json!({"value": 14})),
        ),
        (
            json!({"cmd": "incr", "key": k("n")}),
            Ok(json!({"value": 15})),
        ), // C13-B: val defaults to 1
        (
            json!({"cmd": "decr", "key": k("n")}),
            Ok(json!({"value": 14})),
        ),
        (
            json!({"cmd": "incr", "key": k("n"), "val": 0.5}),
            Ok(json!({"value": 14.5})),
        ),
        (
            json!({"cmd": "incr", "key": k("n"), "val": "x"}),
            Err("op_failed_nan"),
        ),
        (
            json!({"cmd": "incr", "key": k("nc"), "val": 1}),
            Ok(json!({"value": false})),
        ), // C14
        (
            json!({"cmd": "get", "key": k("nc")}),
            Ok(json!({"value": null})),
        ), // C15: not created
        (
            json!({"cmd": "incr", "key": k("k1"), "val": 1}),
            Err("op_failed_nan"),
        ), // C16
        (
            json!({"cmd": "delete", "key": k("k1")}),
            Ok(json!({"key": k("k1")})),
        ),
        (
            json!({"cmd": "get", "key": k("k1")}),
            Ok(json!({"value": null})),
        ),
        (
            json!({"cmd": "delete", "key": k("missing")}),
            Ok(json!({"key": k("missing")})),
        ), // C19
        (
            json!({"cmd": "set", "key": k("ttl"), "val": 1, "expire": 1, "ttl": 1}),
            Ok(json!({"key": k("ttl")})),
        ), // C20
        (
            json!({"cmd": "set", "key": k("raw"), "val": [1, 2]}),
            Ok(json!({"key": k("raw")})),
        ),
        (
            json!({"cmd": "get", "key": k("raw")}),
            Ok(json!({"value": [1, 2]})),
        ),
        (json!({"cmd": "clear"}), Err("act_not_found")), // never FLUSHALL
        (json!({"cmd": "get"}), Err("cache_invalid")),
    ];
    for (req, expected) in steps {
        let m = obj(req.clone());
        let got = cache(c, m["cmd"].as_str().expect("cmd"), &m).await;
        match (expected, got) {
            (Ok(v), Ok(g)) => assert_eq!(g, v, "{req} on {}", c.backend()),
            (Err(code), Err(e)) => assert_eq!(e.code(), code, "{req}: {e}"),
            (e, g) => panic!("{req} on {}: expected {e:?}, got {g:?}", c.backend()),
        }
    }
}

#[tokio::test]
async fn cache_memory_and_redis() {
    let mem = open_cache("memory://?max=100", Duration::from_secs(3600))
        .await
        .unwrap();
    cache_script(&*mem, "").await;
    let prefix = format!("{}:", unique("wasmeca-test"));
    let redis = open_cache(REDIS, Duration::from_secs(60)).await.unwrap();
    cache_script(&*redis, &prefix).await;

    // The layout @seneca/redis-cache uses: raw key, JSON text, EX.
    let mut conn = redis_conn().await;
    let raw: String = redis::cmd("GET")
        .arg(format!("{prefix}k2"))
        .query_async(&mut conn)
        .await
        .unwrap();
    assert_eq!(raw, r#"{"a":1,"b":[true,null]}"#);
    let ttl: i64 = redis::cmd("TTL")
        .arg(format!("{prefix}n"))
        .query_async(&mut conn)
        .await
        .unwrap();
    assert!((1..=60).contains(&ttl), "incr keeps the TTL: {ttl}");
    let _: () = redis::cmd("SET")
        .arg(format!("{prefix}bad"))
        .arg("not json")
        .query_async(&mut conn)
        .await
        .unwrap();
    let m = obj(json!({"key": format!("{prefix}bad")}));
    assert_eq!(
        cache(&*redis, "get", &m).await.unwrap_err().code(),
        "not_json"
    );

    // Expiry, on both backends (read back well within the expiry, then gone after it).
    for c in [
        open_cache("memory://", Duration::from_secs(2))
            .await
            .unwrap(),
        open_cache(REDIS, Duration::from_secs(2)).await.unwrap(),
    ] {
        let m = obj(json!({"key": format!("{prefix}short"), "val": 1}));
        cache(&*c, "set", &m).await.unwrap();
        assert_eq!(cache(&*c, "get", &m).await.unwrap(), json!({"value": 1}));
        tokio::time::sleep(Duration::from_secs(2)).await;
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        while cache(&*c, "get", &m).await.unwrap() != json!({"value": null}) {
            assert!(
                std::time::Instant::now() < deadline,
                "{}: the value outlived its expiry",
                c.backend()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    let keys: Vec<String> = redis::cmd("KEYS")
        .arg(format!("{prefix}*"))
        .query_async(&mut conn)
        .await
        .unwrap();
    if !keys.is_empty() {
        let _: () = redis::cmd("DEL")
            .arg(keys)
            .query_async(&mut conn)
            .await
            .unwrap();
    }
}

/// Concurrent incr on Redis loses no update (compare-and-set), concurrent add admits one winner.
#[tokio::test]
async fn redis_incr_and_add_are_atomic() {
    let prefix = format!("{}:", unique("wasmeca-test"));
    let c = open_cache(REDIS, Duration::from_secs(60)).await.unwrap();
    let key = format!("{prefix}ctr");
    cache(&*c, "set", &obj(json!({"key": key, "val": 0})))
        .await
        .unwrap();
    let tasks: Vec<_> = (0..8)
        .map(|_| {
            let (c, key) = (c.clone(), key.clone());
            tokio::spawn(async move {
                for _ in 0..25 {
                    cache(&*c, "incr", &obj(json!({"key": key}))).await.unwrap();
                }
            })
        })
        .collect();
    for t in tasks {
        t.await.unwrap();
    }
    assert_eq!(
        cache(&*c, "get", &obj(json!({"key": key}))).await.unwrap(),
        json!({"value": 200})
    );
    let adds: Vec<_> = (0..8)
        .map(|i| {
            let (c, key) = (c.clone(), format!("{prefix}once"));
            tokio::spawn(async move {
                cache(&*c, "add", &obj(json!({"key": key, "val": i})))
                    .await
                    .is_ok()
            })
        })
        .collect();
    let mut winners = 0;
    for a in adds {
        winners += usize::from(a.await.unwrap());
    }
    assert_eq!(winners, 1);
    let mut conn = redis_conn().await;
    let _: () = redis::cmd("DEL")
        .arg(format!("{prefix}ctr"))
        .arg(format!("{prefix}once"))
        .query_async(&mut conn)
        .await
        .unwrap();
}

/// A Redis that is down answers store_unavailable; the cache recovers when it is back.
#[tokio::test]
async fn redis_down_then_back() {
    let proxy = Proxy::start("127.0.0.1:6379").await;
    let key = format!("{}:k", unique("wasmeca-test"));
    let c = open_cache(
        &format!("redis://127.0.0.1:{}/", proxy.port),
        Duration::from_secs(60),
    )
    .await
    .unwrap();
    let set = obj(json!({"key": key, "val": 1}));
    cache(&*c, "set", &set).await.unwrap();
    proxy.cut();
    let e = cache(&*c, "get", &set).await.unwrap_err();
    assert_eq!((e.code(), e.status()), ("store_unavailable", 503), "{e}");
    proxy.restore().await;
    let mut back = None;
    for _ in 0..50 {
        match cache(&*c, "get", &set).await {
            Ok(v) => {
                back = Some(v);
                break;
            }
            Err(e) => assert_eq!(e.code(), "store_unavailable"),
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(back, Some(json!({"value": 1})));
    cache(&*c, "delete", &set).await.unwrap();
    let never = open_cache("redis://127.0.0.1:1/", Duration::from_secs(1))
        .await
        .unwrap();
    assert_eq!(
        cache(&*never, "get", &set).await.unwrap_err().code(),
        "store_unavailable"
    );
}
