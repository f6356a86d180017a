//! The query pipeline's unit tests: the captures' semantics on a small shop, and the bounds.

use super::*;
use serde_json::json;

fn q(v: Value) -> Query {
    Query::parse(Some(&v)).unwrap()
}

fn rec(v: Value) -> Record {
    v.as_object().unwrap().clone()
}

fn shop() -> Vec<Record> {
    [
        json!({"id": "12t8yc", "name": "apple", "price": 1.5, "color": "red", "tags": ["fruit", "red"], "info": {"origin": "NZ"}, "note": null}),
        json!({"id": "banana-1", "name": "banana", "price": 0.75, "color": "brown", "stock": 7}),
        json!({"id": "ld6vv9", "name": "cherry", "price": 3, "color": "red"}),
        json!({"id": 42, "name": "fig", "price": 2}),
        json!({"id": "8khaqd", "name": "grape", "color": "green"}),
        json!({"id": "t2gjwa", "name": "Zoë", "color": "ünïcode"}),
        json!({"id": "ghost-1", "name": "ghost"}),
    ]
    .into_iter()
    .map(rec)
    .collect()
}

fn names(query: Value) -> Vec<String> {
    let out = q(query).run(shop().into_iter());
    out.iter()
        .map(|r| r["name"].as_str().unwrap().to_string())
        .collect()
}

#[test]
fn equality_is_strict() {
    assert_eq!(names(json!({"color": "red"})), ["apple", "cherry"]); // E21
    assert_eq!(names(json!({"color": "red", "price": 1.5})), ["apple"]); // E22
    assert!(names(json!({"price": "1.5"})).is_empty()); // E23
    assert_eq!(names(json!({"note": null})), ["apple"]); // E31
    assert_eq!(names(json!({"id": 42})), ["fig"]); // E11
    assert!(names(json!({"id": "42"})).is_empty()); // E12
    assert_eq!(names(json!({"price": 3.0})), ["cherry"]); // 3 === 3.0
    assert!(names(json!({"tags": ["fruit"]})).is_empty()); // IN never matches an array value
}

#[test]
fn arrays_and_operators() {
    assert_eq!(
        names(json!({"name": ["apple", "fig", "nope"]})),
        ["apple", "fig"]
    ); // E24
    assert_eq!(
        names(json!({"price": {"$gte": 1, "$lt": 3}})),
        ["apple", "fig", "grape", "Zoë", "ghost"]
    ); // E27
    assert_eq!(
        names(json!({"price": {"gte$": 1, "lt$": 3}})),
        names(json!({"price": {"$gte": 1, "$lt": 3}}))
    );
    let e28 = json!({"color": {"$ne": "red"}, "name": {"$in": ["banana", "grape", "apple"]}});
    assert_eq!(names(e28), ["banana", "grape"]);
    assert_eq!(names(json!({"price": {"foo$": 1}})).len(), 7); // unknown operator
    assert_eq!(names(json!({"info": {"origin": "NZ"}})).len(), 7); // E30
    assert_eq!(
        names(json!({"color": {"$nin": ["red", "brown"]}})),
        ["fig", "grape", "Zoë", "ghost"]
    );
    assert_eq!(names(json!({"price": {"eq$": 2}})), ["fig"]);
    assert_eq!(names(json!({"name": {"$gt": "f", "$lt": "g"}})), ["fig"]); // strings by code point
    assert!(names(json!({"name": []})).is_empty());
    assert!(Query::parse(Some(&json!({"a": {"$in": 3}}))).is_err());
}

#[test]
fn a_query_holds_at_most_max_query_values() {
    let ids = |n: usize| Value::Array((0..n).map(|i| json!(i)).collect());
    let at = MAX_QUERY_VALUES;
    assert!(Query::parse(Some(&ids(at))).is_ok());
    assert!(Query::parse(Some(&json!({"id": {"$in": ids(at - 1)}, "name": "x"}))).is_ok());
    for too_many in [
        ids(at + 1),
        json!({"id": {"$in": ids(at)}, "name": "x"}),
        json!({"a": {"$in": ids(at / 2)}, "b": {"$nin": ids(at / 2 + 1)}}),
    ] {
        let e = Query::parse(Some(&too_many)).unwrap_err();
        assert_eq!((e.code(), e.status()), ("entity_invalid", 400));
        assert!(e.to_string().contains("split it"), "{e}");
    }
}

#[test]
fn sort_skip_limit_fields() {
    // E32: desc, missing first, skip 1, limit 2.
    assert_eq!(
        names(json!({"sort$": {"price": -1}, "limit$": 2, "skip$": 1})),
        ["Zoë", "ghost"]
    );
    // E33: asc, missing last in insertion order.
    let e33 = ["banana", "apple", "fig", "cherry", "grape", "Zoë", "ghost"];
    assert_eq!(names(json!({"sort$": {"price": 1}})), e33);
    // Every key is honoured (mem-store uses only the first: E34 differs here).
    let e34 = ["banana", "grape", "cherry", "apple", "Zoë", "ghost", "fig"];
    assert_eq!(names(json!({"sort$": {"color": 1, "price": -1}})), e34);
    assert_eq!(names(json!({"limit$": 0})).len(), 7); // E35
    let out = q(json!({"color": "red", "fields$": ["name"]})).run(shop().into_iter());
    let projected = project(out[0].clone(), &["name".to_string()]);
    assert_eq!(
        Value::Object(projected),
        json!({"id": "12t8yc", "name": "apple"})
    );
}

#[test]
fn query_shapes() {
    assert_eq!(q(json!(null)), Query::default());
    assert_eq!(
        q(json!(["a", 1, {"x": 1}])).select,
        Select::Ids(vec![json!("a"), json!(1)])
    );
    assert_eq!(
        q(json!("x")).filters(),
        [Filter {
            field: "id".into(),
            test: Test::Eq(json!("x"))
        }]
    );
    let parsed =
        q(json!({"all$": true, "load$": true, "color": "red", "skip$": "2", "limit$": -1}));
    assert_eq!(parsed.filters().len(), 1);
    assert_eq!((parsed.skip, parsed.limit), (2, None));
    let bad =
        json!([{"sort$": 1}, {"sort$": {"a": "up"}}, {"skip$": true}, {"fields$": "a"}, true]);
    for bad in bad.as_array().unwrap() {
        assert_eq!(
            Query::parse(Some(bad)).unwrap_err().code(),
            "entity_invalid",
            "{bad}"
        );
    }
}

#[test]
fn mixed_type_sort_order() {
    let mut vals = json!([null, {}, [1], true, "a", 2, false])
        .as_array()
        .unwrap()
        .clone();
    vals.sort_by(|a, b| sort_cmp(Some(a), Some(b)));
    assert_eq!(
        Value::Array(vals),
        json!([2, "a", false, true, [1], {}, null])
    );
    assert_eq!(sort_cmp(None, Some(&json!(null))), Ordering::Equal);
}
