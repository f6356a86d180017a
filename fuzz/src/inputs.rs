//! Seeded input generators for the fuzz targets: structured jsonic texts, JSON values and route
//! paths that reach deep into each parser, and a byte mutator that breaks them in the ways
//! outside input breaks (flipped bits, cut strings, repeated openers, stray escapes).

use fastrand::Rng;
use serde_json::{Map, Value};

/// Picks one item.
pub fn pick<'a, T: ?Sized>(rng: &mut Rng, items: &[&'a T]) -> &'a T {
    items[rng.usize(..items.len())]
}

/// Words that keys and bare values are made of, including the ones jsonic reads specially.
const WORDS: &[&str] = &[
    "a",
    "b",
    "cmd",
    "role",
    "user",
    "x-y/z.w",
    "salute",
    "1",
    "01",
    "0x10",
    "0o7",
    "0b1",
    "1.0",
    "-2.5",
    "1e21",
    "1e308",
    "1_000",
    ".5",
    "+1",
    "-",
    "true",
    "false",
    "null",
    "undefined",
    "NaN",
    "*",
    "?",
    "x*",
    "a?c",
    "a**",
    "a*?",
    "é",
    "甲",
    "😀",
    "$",
    "x$",
    "$version",
    "timeout$",
];

/// Pieces of quoted strings: text, JSON and jsonic escapes (good and bad), comment lookalikes.
const STRING_PIECES: &[&str] = &[
    "a",
    " ",
    "a b",
    ",",
    ":",
    "{",
    "}",
    "[",
    "]",
    "#",
    "//",
    "/*",
    "*/",
    "\\n",
    "\\t",
    "\\\\",
    "\\\"",
    "\\'",
    "\\/",
    "\\u00e9",
    "\\ud83d\\ude00",
    "\\ud83d",
    "\\ude00",
    "\\uD83D\\uDE00",
    "\\u{1F600}",
    "\\u{110000}",
    "\\u{}",
    "\\x41",
    "\\xZZ",
    "\\u12",
    "\\u+041",
    "\\",
    "😀",
    "\u{0}",
    "\u{2028}",
    "null",
    "01",
];

/// Separators between pairs, with jsonic's comments.
const SEPARATORS: &[&str] = &[
    ",",
    " ",
    "\n",
    ", ",
    ",\n",
    " # note\n",
    " // note\n",
    "/* note */",
    ",/**/",
    "\t",
];

/// A quoted jsonic string.
pub fn quoted(rng: &mut Rng) -> String {
    let quote = pick(rng, &["\"", "'", "`"]);
    let mut out = quote.to_owned();
    for _ in 0..rng.usize(0..5) {
        let piece = pick(rng, STRING_PIECES);
        if piece == quote {
            out.push('\\');
        }
        out.push_str(piece);
    }
    out.push_str(quote);
    out
}

/// A key: a bare word or a quoted string.
fn key(rng: &mut Rng) -> String {
    if rng.u8(..4) == 0 {
        quoted(rng)
    } else {
        pick(rng, WORDS).to_owned()
    }
}

/// A jsonic value nested at most `depth` more levels.
fn value(rng: &mut Rng, depth: usize) -> String {
    match rng.u8(..12) {
        0..=3 => pick(rng, WORDS).to_owned(),
        4 | 5 => quoted(rng),
        6 if depth > 0 => format!("{{{}}}", pairs(rng, depth - 1)),
        7 if depth > 0 => {
            let items: Vec<String> = (0..rng.usize(0..4))
                .map(|_| value(rng, depth - 1))
                .collect();
            format!("[{}]", items.join(pick(rng, SEPARATORS)))
        }
        8 if depth > 0 => format!("{}:{}", key(rng), value(rng, depth - 1)),
        9 => String::new(),
        10 => format!(
            "{}{}",
            pick(rng, WORDS),
            pick(rng, &["#c", "//c", "/*c*/", "/x"])
        ),
        _ => rng.i64(..).to_string(),
    }
}

/// `key:value` pairs with random separators.
fn pairs(rng: &mut Rng, depth: usize) -> String {
    let mut out = String::new();
    for i in 0..rng.usize(0..5) {
        if i > 0 {
            out.push_str(pick(rng, SEPARATORS));
        }
        out.push_str(&key(rng));
        out.push(':');
        if rng.bool() && rng.bool() {
            out.push(' ');
        }
        out.push_str(&value(rng, depth));
    }
    out
}

/// A jsonic text (a pattern or a message): pairs, braced or not, sometimes nested far past the
/// parser's depth limit.
pub fn jsonic(rng: &mut Rng) -> String {
    if rng.u8(..40) == 0 {
        // Deep nesting of every kind the parser bounds.
        let n = rng.usize(100..300);
        return match rng.u8(..4) {
            0 => "a:{".repeat(n),
            1 => format!("a:{}1{}", "[".repeat(n), "]".repeat(n)),
            2 => "a:".repeat(n) + "x",
            _ => format!("{}{}", "{a:".repeat(n), "}".repeat(n)),
        };
    }
    let body = pairs(rng, 3);
    if rng.bool() {
        format!("{{{body}}}")
    } else {
        body
    }
}

/// A random JSON value nested at most `depth` levels.
pub fn json(rng: &mut Rng, depth: usize) -> Value {
    match rng.u8(..10) {
        0 => Value::Null,
        1 => Value::Bool(rng.bool()),
        2 => Value::from(rng.i64(..)),
        3 => serde_json::Number::from_f64(f64::from_bits(rng.u64(..)))
            .map_or(Value::from(0.5), Value::Number),
        4 => Value::from(*pick(rng, &[&0u64, &1, &22_222, &u64::MAX])),
        5 | 6 => Value::String(unquoted_string(rng)),
        7 if depth > 0 => {
            Value::Array((0..rng.usize(0..4)).map(|_| json(rng, depth - 1)).collect())
        }
        8 | 9 if depth > 0 => Value::Object(object(rng, depth - 1)),
        _ => Value::String(pick(rng, WORDS).to_owned()),
    }
}

/// A JSON object with random keys (meta keys among them).
pub fn object(rng: &mut Rng, depth: usize) -> Map<String, Value> {
    (0..rng.usize(0..5))
        .map(|_| (pick(rng, WORDS).to_owned(), json(rng, depth)))
        .collect()
}

/// A string value, not jsonic-escaped (used inside JSON, which escapes it itself).
pub fn unquoted_string(rng: &mut Rng) -> String {
    (0..rng.usize(0..4))
        .map(|_| {
            pick(
                rng,
                &[
                    "a", " ", "x:y", "*", "é", "😀", "\u{0}", ".", "/", "#", "\"", "\\",
                ],
            )
        })
        .collect()
}

/// A path segment or template piece for route maps.
pub fn segment(rng: &mut Rng) -> String {
    pick(
        rng,
        &[
            "", "/", "user", ":id", ":", "::x", "*", "{x}", "{*x}", ":*", "..", ".", "//", "%2F",
            "a b", "é", "/api", "/v1", "/:a/:a", "{", "}", ":{x}", "*x", ":id*",
        ],
    )
    .to_owned()
}

/// Tokens the mutator inserts: the characters and escapes each parser treats specially.
const TOKENS: &[&[u8]] = &[
    b"{",
    b"}",
    b"[",
    b"]",
    b"\"",
    b"'",
    b"`",
    b":",
    b",",
    b" ",
    b"\n",
    b"#",
    b"//",
    b"/*",
    b"*/",
    b"\\",
    b"\\u",
    b"\\ud83d",
    b"\\ude00",
    b"\\u{",
    b"null",
    b"true",
    b"1e308",
    b"-0",
    b"0x",
    b"$",
    b"act",
    b"kind",
    b"\"act\":",
    b"\"kind\":\"act\"",
    b"\xff",
    b"\xc3",
    b"\xf0\x9f\x98",
    b"\x00",
    b":*",
    b"/:id",
    b"..",
    b"GET",
    b"pin",
];

/// Breaks `data` with 1 to 8 random edits.
pub fn mutate(rng: &mut Rng, data: &mut Vec<u8>) {
    for _ in 0..rng.usize(1..=8) {
        let len = data.len();
        match rng.u8(..7) {
            0 if len > 0 => {
                let at = rng.usize(..len);
                data[at] ^= 1 << rng.u8(..8);
            }
            1 | 2 => {
                let at = rng.usize(..=len);
                let token = TOKENS[rng.usize(..TOKENS.len())];
                data.splice(at..at, token.iter().copied());
            }
            3 if len > 0 => {
                let from = rng.usize(..len);
                let to = (from + rng.usize(1..=16)).min(len);
                data.drain(from..to);
            }
            4 if len > 0 => {
                // Repeat a short run many times: deep nesting from a `{` or `[`, long runs.
                let from = rng.usize(..len);
                let to = (from + rng.usize(1..=4)).min(len);
                let run = data[from..to].to_vec();
                let times = rng.usize(1..=200);
                let repeated: Vec<u8> = run
                    .iter()
                    .copied()
                    .cycle()
                    .take(run.len() * times)
                    .collect();
                data.splice(to..to, repeated);
            }
            5 if len > 0 => data.truncate(rng.usize(..len)),
            _ => {
                let at = rng.usize(..=len);
                data.insert(at, rng.u8(..));
            }
        }
    }
}
