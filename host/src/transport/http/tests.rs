//! Unit tests of the Seneca HTTP transport: the messages its listener builds and the headers of
//! its responses.

use super::*;

#[test]
fn messages_merge_body_query_and_headers_like_seneca() {
    let uri: Uri = "/act?msg$=a:1,b:x&cmd=config&x=1&args$=c:true"
        .parse()
        .unwrap();
    let mut headers = HeaderMap::new();
    headers.insert(TIME_CLIENT_SENT, HeaderValue::from_static("123"));
    let track = vec!["t1".to_owned()];
    let msg = message(
        &uri,
        &headers,
        br#"{"cmd":"sum","left":1}"#,
        Some("m/t"),
        Some("o"),
        &track,
    )
    .unwrap();
    let msg = Value::Object(msg.into_map());
    assert_eq!(msg["cmd"], "config", "query values win over the body");
    assert_eq!(msg["x"], "1", "query values are strings");
    assert_eq!(
        (msg["a"].clone(), msg["b"].clone(), msg["c"].clone()),
        (json!(1), json!("x"), json!(true))
    );
    assert_eq!(msg["left"], 1);
    assert_eq!(msg["id$"], "m/t");
    assert_eq!(
        msg["transport$"],
        json!({"track": ["t1"], "origin": "o", "time": {"client_sent": "123"}})
    );
    assert!(msg.get("msg$").is_none());

    let empty = message(
        &"/act".parse().unwrap(),
        &HeaderMap::new(),
        b"  ",
        None,
        None,
        &[],
    )
    .unwrap();
    assert_eq!(
        Value::Object(empty.into_map())["transport$"]["origin"],
        "UNKNOWN"
    );
    let bad = message(
        &"/act".parse().unwrap(),
        &HeaderMap::new(),
        b"{oops",
        None,
        None,
        &[],
    )
    .unwrap_err();
    assert!(bad.is(Code::InvalidJson));
}

#[test]
fn responses_carry_senecas_headers() {
    let ok = respond(
        Ok(Reply::from_value(&json!({"answer": 3}))),
        Some("m/t"),
        Some("o"),
        &["a".into(), "b".into()],
        "me",
        None,
    );
    assert_eq!(ok.status(), 200);
    let h = ok.headers();
    assert_eq!(h[SENECA_ID], "m/t");
    assert_eq!(h[SENECA_KIND], "res");
    assert_eq!(h[SENECA_ORIGIN], "o");
    assert_eq!(h[SENECA_ACCEPT], "me");
    assert_eq!(h[SENECA_TRACK], "a,b");
    assert_eq!(h[TIME_LISTEN_SENT], "0");
    assert_eq!(h["cache-control"], "private, max-age=0, no-cache, no-store");
    assert!(h.get(PLUGIN).is_none(), "named only when a trace was asked");
    let not_found = respond(
        Err(ActError::host(Code::ActNotFound, "nope")),
        None,
        None,
        &[],
        "me",
        None,
    );
    assert_eq!(
        not_found.status(),
        500,
        "Seneca answers act_not_found with 500"
    );
    assert_eq!(not_found.headers()[SENECA_ORIGIN], "UNKNOWN");
    let teapot = respond(
        Err(ActError::new("x", "y").with_status(418)),
        None,
        None,
        &[],
        "me",
        None,
    );
    assert_eq!(teapot.status(), 418);
    let traced = respond(
        Ok(Reply::from_value(&json!({}))),
        None,
        None,
        &[],
        "me",
        Some("salute@2.0.0"),
    );
    assert_eq!(traced.headers()[PLUGIN], "salute@2.0.0");
}
