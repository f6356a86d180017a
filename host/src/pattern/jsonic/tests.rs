//! The jsonic parser's unit tests: Seneca's pattern strings, values, depth and errors.

use super::*;
use serde_json::json;

fn msg(v: Value) -> Map<String, Value> {
    match v {
        Value::Object(m) => m,
        _ => panic!("not an object"),
    }
}

#[test]
fn jsonic_pairs_and_separators() {
    assert_eq!(
        parse_jsonic("role:user,cmd:*").unwrap(),
        msg(json!({"role":"user","cmd":"*"}))
    );
    assert_eq!(
        parse_jsonic("a:1 b:2\nc:x").unwrap(),
        msg(json!({"a":1,"b":2,"c":"x"}))
    );
    assert_eq!(
        parse_jsonic("{a: 1, b: 'two words'}").unwrap(),
        msg(json!({"a":1,"b":"two words"}))
    );
    assert_eq!(
        parse_jsonic("path:x-y/z.w,q:?x").unwrap(),
        msg(json!({"path":"x-y/z.w","q":"?x"}))
    );
    assert_eq!(parse_jsonic("").unwrap(), Map::new());
    assert_eq!(parse_jsonic("  {}  ").unwrap(), Map::new());
}

#[test]
fn jsonic_values() {
    assert_eq!(
        parse_jsonic("a:01,b:0x10,c:1.0,d:-2.5,e:1e2,f:true,g:null,h:,i:\"q\\\"\"").unwrap(),
        msg(json!({"a":1,"b":16,"c":1,"d":-2.5,"e":100,"f":true,"g":null,"h":null,"i":"q\""}))
    );
    assert_eq!(parse_jsonic("a:1a").unwrap(), msg(json!({"a":"1a"})));
    assert_eq!(
        parse_jsonic("a:b:c,d:e").unwrap(),
        msg(json!({"a":{"b":"c"},"d":"e"}))
    );
    assert_eq!(
        parse_jsonic("a:[1,x 'y'],b:{c:2}").unwrap(),
        msg(json!({"a":[1,"x","y"],"b":{"c":2}}))
    );
    assert_eq!(parse_jsonic("a:1,a:2").unwrap(), msg(json!({"a":2})));
    assert_eq!(parse_jsonic("name:甲").unwrap(), msg(json!({"name":"甲"})));
}

#[test]
fn jsonic_errors_say_where() {
    let e = parse_jsonic("a:1,,b:2").unwrap_err();
    assert_eq!(e.column, 5, "{e}");
    let e = parse_jsonic("cmd").unwrap_err();
    assert_eq!(
        (e.column, e.reason.as_str()),
        (4, "expected `:`, found the end")
    );
    let e = parse_jsonic("a:'open").unwrap_err();
    assert!(e.reason.contains("unterminated"), "{e}");
    let e = parse_jsonic("{a:1").unwrap_err();
    assert!(e.to_string().contains("expected `}`"), "{e}");
    let e = parse_jsonic("a:1 }").unwrap_err();
    assert_eq!(e.column, 5);
}

#[test]
fn nesting_is_bounded_and_says_so() {
    let deep = "a:{".repeat(3000);
    let e = parse_jsonic(&deep).unwrap_err();
    assert!(e.too_deep, "{e}");
    assert!(e.reason.contains("deeper than 128"), "{e}");
    assert!(
        e.to_string().len() < 300,
        "the error quotes a clipped input: {e}"
    );
    let chain = "a:".repeat(3000) + "x";
    assert!(parse_jsonic(&chain).unwrap_err().too_deep);
    let arrays = format!("a:{}", "[".repeat(3000));
    assert!(parse_jsonic(&arrays).unwrap_err().too_deep);
    assert!(crate::pattern::Pattern::parse(&deep).is_err());
    // 127 levels, the top-level object included, still parse: as deep as serde_json goes,
    // so the JSON of anything parsed here reads back in serde_json (found by fuzzing: 128
    // arrays inside the object made JSON that serde_json refused).
    let ok = format!("a:{}1{}", "[".repeat(126), "]".repeat(126));
    let parsed = parse_jsonic(&ok).unwrap();
    let json = serde_json::to_string(&parsed).unwrap();
    assert!(serde_json::from_str::<Value>(&json).is_ok());
    let over = format!("a:{}1{}", "[".repeat(127), "]".repeat(127));
    assert!(parse_jsonic(&over).unwrap_err().too_deep);
    let ok = format!("{}1{}", "{a:".repeat(127), "}".repeat(127));
    let json = serde_json::to_string(&parse_jsonic(&ok).unwrap()).unwrap();
    assert!(serde_json::from_str::<Value>(&json).is_ok());
    let over = format!("{}1{}", "{a:".repeat(128), "}".repeat(128));
    assert!(parse_jsonic(&over).unwrap_err().too_deep);
}

#[test]
fn pairs_keep_the_written_order() {
    let pairs = parse_jsonic_pairs("role:user,cmd:*,a:1").unwrap();
    let keys: Vec<&str> = pairs.iter().map(|(k, _)| k.as_str()).collect();
    assert_eq!(keys, ["role", "cmd", "a"]);
}

#[test]
fn message_accepts_json_or_jsonic() {
    assert_eq!(
        parse_message(r#"{"a":[1]}"#).unwrap(),
        msg(json!({"a":[1]}))
    );
    assert_eq!(parse_message("{a:1}").unwrap(), msg(json!({"a":1})));
    assert_eq!(
        parse_message("cmd:salute,name:World").unwrap(),
        msg(json!({"cmd":"salute","name":"World"}))
    );
}

/// Issue 14 item 8: jsonic 2.16 reads `#` and `//` as line comments and `/* */` as block
/// comments, even straight after bare text (expected values from jsonic 2.16 itself).
#[test]
fn comments_as_jsonic_reads_them() {
    for (text, want) in [
        ("a:1 # c\nb:2", json!({"a":1,"b":2})),
        ("a:x#y", json!({"a":"x"})),
        ("a:1 //c\nb:2", json!({"a":1,"b":2})),
        ("a:1/*c*/b:2", json!({"a":1,"b":2})),
        ("a:/*c*/1", json!({"a":1})),
        ("#c\na:1", json!({"a":1})),
        ("/*a*/a:1 b:/* x */2", json!({"a":1,"b":2})),
        ("a:x//y", json!({"a":"x"})),
        ("a:x/*y*/", json!({"a":"x"})),
        ("{a:1}#x", json!({"a":1})),
        ("a:1,#x\nb:2", json!({"a":1,"b":2})),
        ("a:[1,#x\n2]", json!({"a":[1,2]})),
        ("a:#", json!({"a":null})),
        ("a:b:#c", json!({"a":{"b":null}})),
        ("a:http://x/y", json!({"a":{"http":null}})),
        // Not comments: a lone `/`, `*/`, and anything quoted.
        ("a:x/y,b:/x,c:*/", json!({"a":"x/y","b":"/x","c":"*/"})),
        ("a:'#',b:\"//\",c:`/*`", json!({"a":"#","b":"//","c":"/*"})),
    ] {
        assert_eq!(parse_jsonic(text).unwrap(), msg(want), "{text:?}");
    }
    let e = parse_jsonic("a:1 /* open").unwrap_err();
    assert!(e.reason.contains("unterminated `/*`"), "{e}");
    assert_eq!(e.column, 5);
    let p = crate::pattern::Pattern::parse("role:user # the users\ncmd:*").unwrap();
    assert_eq!(p.to_string(), "cmd:*,role:user");
}

/// Issue 14 item 8: JSON surrogate-pair escapes decode (they were refused); a lone
/// surrogate is refused with an error that says so, as serde_json does.
#[test]
fn surrogate_pairs_decode_and_lone_ones_are_refused() {
    assert_eq!(
        parse_jsonic(r#"a:"\ud83d\ude00",b:'\uD83D\uDE00x'"#).unwrap(),
        msg(json!({"a":"😀","b":"😀x"}))
    );
    assert_eq!(
        parse_message(r#"{a:"\ud83d\ude00"}"#).unwrap(),
        msg(json!({"a":"😀"}))
    );
    for lone in [
        r#"a:"\ud83d""#,
        r#"a:"\ud83dx""#,
        r#"a:"\ude00""#,
        r#"a:"\ud83d\u0041""#,
    ] {
        let e = parse_jsonic(lone).unwrap_err();
        assert!(e.reason.contains("lone surrogate"), "{lone}: {e}");
        assert_eq!(e.column, 4, "{lone}: points at the escape");
    }
    // jsonic's other escapes.
    assert_eq!(
        parse_jsonic(r#"a:'\u{1F600}',b:"\x41",c:"\u00e9""#).unwrap(),
        msg(json!({"a":"😀","b":"A","c":"é"}))
    );
    for bad in [
        r#"a:"\u+041""#,
        r#"a:"\u12""#,
        r#"a:"\u{110000}""#,
        r#"a:"\u{}""#,
        r#"a:"\xg1""#,
    ] {
        assert!(parse_jsonic(bad).is_err(), "{bad}");
    }
}

#[test]
fn backtick_quotes() {
    assert_eq!(
        parse_jsonic("`k k`:`x, y`").unwrap(),
        msg(json!({"k k":"x, y"}))
    );
}
