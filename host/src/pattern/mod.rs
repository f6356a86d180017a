//! Seneca-compatible patterns: [`jsonic`] pattern strings, `String(value)` comparison, gex
//! [`glob`]s and the [`patrun`] trie with its greedy, alphabetical-key precedence walk
//! (SENECA.md §1); a pattern prints in a form that parses back to itself. Pure, no I/O.

mod glob;
mod jsonic;
mod patrun;

use std::borrow::Cow;
use std::fmt;

use serde_json::{Map, Value};

use crate::error::clip;

pub use glob::Glob;
pub use jsonic::{MAX_DEPTH, ParseError, parse_jsonic, parse_jsonic_pairs, parse_message};
pub use patrun::{Found, Lookup, Patrun};

/// A pattern that parses but cannot be used for matching.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PatternError {
    /// The text is not valid jsonic.
    #[error("pattern {0}")]
    Parse(#[from] ParseError),
    /// A value is an object; Seneca treats those as validation rules, wasmeca matches values only.
    #[error(
        "pattern `{}`: the value of `{key}` is an object; patterns match plain values \
         (Seneca would treat it as a validation rule, which wasmeca does not support)",
        clip(input)
    )]
    ObjectValue {
        /// The text, quoted in the message.
        input: String,
        /// The key whose value is an object.
        key: String,
    },
    /// A value is an array. patrun would store it as `String(array)` (`[x,y]` as `x,y`), which
    /// is not what its author meant and not what a Seneca pattern is, so it is refused.
    #[error(
        "pattern `{}`: the value of `{key}` is an array; a pattern value is a string, number, \
         boolean or glob (quote it to match the text `{text}`)",
        clip(input)
    )]
    ArrayValue {
        /// The text, quoted in the message.
        input: String,
        /// The key whose value is an array.
        key: String,
        /// What patrun would have compared against (`String(array)`), as a hint.
        text: String,
    },
}

/// Formats a number the way JavaScript's `String(n)` does (`1.0` → `1`, `1e21` → `1e+21`).
pub fn js_number(n: f64) -> String {
    if n.is_nan() {
        return "NaN".into();
    }
    if n.is_infinite() {
        return if n > 0.0 { "Infinity" } else { "-Infinity" }.into();
    }
    if n == 0.0 {
        return "0".into();
    }
    // Shortest round-trip digits and exponent, from Rust's `{:e}` ("1.2345e3").
    let sci = format!("{:e}", n.abs());
    let (mantissa, exp) = sci.split_once('e').unwrap_or((&sci, "0"));
    let exp: i32 = exp.parse().unwrap_or(0);
    let digits: String = mantissa.chars().filter(char::is_ascii_digit).collect();
    let k = digits.len() as i32;
    let n_exp = exp + 1; // position of the decimal point relative to the digits
    let sign = if n < 0.0 { "-" } else { "" };
    let body = if k <= n_exp && n_exp <= 21 {
        format!("{digits}{}", "0".repeat((n_exp - k) as usize))
    } else if 0 < n_exp && n_exp <= 21 {
        format!(
            "{}.{}",
            &digits[..n_exp as usize],
            &digits[n_exp as usize..]
        )
    } else if -6 < n_exp && n_exp <= 0 {
        format!("0.{}{digits}", "0".repeat((-n_exp) as usize))
    } else {
        let e = n_exp - 1;
        let esign = if e < 0 { '-' } else { '+' };
        let (first, rest) = digits.split_at(1);
        let frac = if rest.is_empty() {
            String::new()
        } else {
            format!(".{rest}")
        };
        format!("{first}{frac}e{esign}{}", e.abs())
    };
    format!("{sign}{body}")
}

/// A message value as patrun compares it: JavaScript's `String(value)`; a missing key is
/// `"undefined"`.
pub fn match_string(value: Option<&Value>) -> Cow<'_, str> {
    match value {
        None => Cow::Borrowed("undefined"),
        Some(Value::String(s)) => Cow::Borrowed(s),
        Some(Value::Null) => Cow::Borrowed("null"),
        Some(Value::Bool(b)) => Cow::Borrowed(if *b { "true" } else { "false" }),
        Some(Value::Number(n)) => Cow::Owned(match (n.as_i64(), n.as_u64()) {
            (Some(i), _) => i.to_string(),
            (_, Some(u)) => u.to_string(),
            _ => js_number(n.as_f64().unwrap_or(f64::NAN)),
        }),
        Some(Value::Object(_)) => Cow::Borrowed("[object Object]"),
        Some(Value::Array(items)) => Cow::Owned(
            items
                .iter()
                .map(|v| match v {
                    Value::Null => Cow::Borrowed(""),
                    v => match_string(Some(v)),
                })
                .collect::<Vec<_>>()
                .join(","),
        ),
    }
}

/// A normalised pattern: pairs sorted by key, values as strings, no null values and no
/// keys ending in `$`. Displays as Seneca's canonical string (`cmd:salute,role:user`).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct Pattern {
    /// Sorted `(key, String(value))` pairs.
    pairs: Vec<(String, String)>,
}

impl Pattern {
    /// Parses a jsonic pattern string (`role:user,cmd:*`); object and array values are refused.
    pub fn parse(text: &str) -> Result<Self, PatternError> {
        let map = parse_jsonic(text)?;
        Self::build(&map, || text.to_owned())
    }

    /// Builds a pattern from an object; an object or array value is refused (the error quotes
    /// the object as JSON).
    pub fn from_object(map: &Map<String, Value>) -> Result<Self, PatternError> {
        Self::build(map, || Value::Object(map.clone()).to_string())
    }

    /// Builds a pattern from parsed pairs; `input` renders the source for an error.
    fn build(
        map: &Map<String, Value>,
        input: impl FnOnce() -> String,
    ) -> Result<Self, PatternError> {
        let mut pairs = Vec::with_capacity(map.len());
        for (key, value) in map {
            if key.ends_with('$') || value.is_null() {
                continue;
            }
            match value {
                Value::Object(_) => {
                    return Err(PatternError::ObjectValue {
                        input: input(),
                        key: key.clone(),
                    });
                }
                Value::Array(_) => {
                    return Err(PatternError::ArrayValue {
                        input: input(),
                        key: key.clone(),
                        text: match_string(Some(value)).into_owned(),
                    });
                }
                _ => pairs.push((key.clone(), match_string(Some(value)).into_owned())),
            }
        }
        pairs.sort();
        Ok(Self { pairs })
    }

    /// The sorted pairs.
    pub fn pairs(&self) -> &[(String, String)] {
        &self.pairs
    }

    /// The value of `key`, if the pattern has it.
    pub fn get(&self, key: &str) -> Option<&str> {
        self.pairs
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }

    /// True for the empty pattern `{}`, which matches everything not matched otherwise.
    pub fn is_empty(&self) -> bool {
        self.pairs.is_empty()
    }
}

/// Seneca's canonical string (`cmd:salute,role:user`), with a key or value in double quotes
/// (JSON escapes) when jsonic would read it bare as something else: `cmd:"a b"`, `v:"01"`,
/// `x:"null"`, `"":1`. So whatever the host prints, logs or advertises for a pattern parses
/// back, here and in Node's jsonic, to the same pattern.
impl fmt::Display for Pattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, (k, v)) in self.pairs.iter().enumerate() {
            if i > 0 {
                f.write_str(",")?;
            }
            if bare_key_ok(k) {
                f.write_str(k)?;
            } else {
                write_quoted(f, k)?;
            }
            f.write_str(":")?;
            if bare_value_ok(v) {
                f.write_str(v)?;
            } else {
                write_quoted(f, v)?;
            }
        }
        Ok(())
    }
}

/// True if jsonic reads `text` written bare back as the same text: no separator, bracket,
/// quote, backslash or comment in it, and not starting like a quote or a comment.
fn bare_text_ok(text: &str) -> bool {
    !text.is_empty()
        && !text.contains("//")
        && !text.contains("/*")
        && !text.chars().any(|c| {
            c.is_whitespace()
                || c.is_control()
                || matches!(
                    c,
                    ',' | ':' | '{' | '}' | '[' | ']' | '#' | '"' | '\'' | '`' | '\\'
                )
        })
}

/// A key prints bare when it is safe text: jsonic keeps bare keys as written.
fn bare_key_ok(key: &str) -> bool {
    bare_text_ok(key)
}

/// A value prints bare when it is safe text that jsonic reads back as the same string
/// (`1` and `true` do, being `String(1)` and `String(true)`; `01`, `1.0`, `null` do not).
fn bare_value_ok(value: &str) -> bool {
    bare_text_ok(value) && jsonic::bare_value_text(value).as_deref() == Some(value)
}

/// `text` in double quotes with JSON's escapes, which jsonic reads too.
fn write_quoted(f: &mut fmt::Formatter<'_>, text: &str) -> fmt::Result {
    f.write_str("\"")?;
    for c in text.chars() {
        match c {
            '"' => f.write_str("\\\"")?,
            '\\' => f.write_str("\\\\")?,
            '\n' => f.write_str("\\n")?,
            '\r' => f.write_str("\\r")?,
            '\t' => f.write_str("\\t")?,
            c if c.is_control() => write!(f, "\\u{:04x}", u32::from(c))?,
            c => write!(f, "{c}")?,
        }
    }
    f.write_str("\"")
}

impl std::str::FromStr for Pattern {
    type Err = PatternError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn pat(s: &str) -> Pattern {
        Pattern::parse(s).unwrap_or_else(|e| panic!("{e}"))
    }

    #[test]
    fn values_compare_as_js_strings() {
        assert_eq!(match_string(Some(&json!(1))), "1");
        assert_eq!(match_string(Some(&json!(1.0))), "1");
        assert_eq!(match_string(Some(&json!(0.1))), "0.1");
        assert_eq!(match_string(Some(&json!(1e21))), "1e+21");
        assert_eq!(match_string(Some(&json!(1.5e-7))), "1.5e-7");
        assert_eq!(match_string(Some(&json!(123456.789))), "123456.789");
        assert_eq!(match_string(Some(&json!(true))), "true");
        assert_eq!(match_string(Some(&json!(["x"]))), "x");
        assert_eq!(match_string(Some(&json!([1, null, [2, 3]]))), "1,,2,3");
        assert_eq!(match_string(Some(&json!({"a":1}))), "[object Object]");
        assert_eq!(match_string(None), "undefined");
        assert_eq!(js_number(-0.000001), "-0.000001");
        assert_eq!(js_number(1e-7), "1e-7");
        assert_eq!(js_number(100.0), "100");
    }

    #[test]
    fn patterns_normalise() {
        assert_eq!(pat("role:user,cmd:*").to_string(), "cmd:*,role:user");
        assert_eq!(pat("c:null,d:1,x$:1").to_string(), "d:1");
        assert_eq!(pat("v:1.0").to_string(), "v:1");
        assert!(matches!(
            Pattern::parse("a:b:c"),
            Err(PatternError::ObjectValue { .. })
        ));
        assert!(matches!(
            Pattern::parse("a:1,,"),
            Err(PatternError::Parse(_))
        ));
        assert!(pat("").is_empty());
    }

    /// Issue 14 item 8: an array value is not a Seneca pattern; it used to be matched as
    /// `String(array)` (`a:[x]` as `a:x`).
    #[test]
    fn array_and_object_values_are_refused_with_the_key() {
        let e = Pattern::parse("cmd:[x,y]").unwrap_err();
        assert!(
            matches!(&e, PatternError::ArrayValue { key, text, .. } if key == "cmd" && text == "x,y"),
            "{e:?}"
        );
        assert!(e.to_string().contains("`cmd` is an array"), "{e}");
        assert!(matches!(
            Pattern::parse("a:{b:1}"),
            Err(PatternError::ObjectValue { .. })
        ));
        assert!(matches!(
            Pattern::from_object(&serde_json::from_value(json!({"a":[1]})).unwrap()),
            Err(PatternError::ArrayValue { .. })
        ));
        // Quoted, the same text is a plain value.
        assert_eq!(pat("cmd:'[x,y]'").get("cmd"), Some("[x,y]"));
    }

    /// Issue 14 item 7: `cmd:"a b"` used to print as `cmd:a b`, which does not parse back.
    #[test]
    fn awkward_keys_and_values_print_quoted_and_parse_back() {
        for (text, shown) in [
            (r#"cmd:"a b""#, r#"cmd:"a b""#),
            (r#"v:"01""#, r#"v:"01""#),
            (r#"v:"1.0""#, r#"v:"1.0""#),
            (r#"x:"null""#, r#"x:"null""#),
            (r#"x:"""#, r#"x:"""#),
            (r#""":1"#, r#""":1"#),
            (r#""a,b":'c:d'"#, r#""a,b":"c:d""#),
            (r#"u:"http://x""#, r#"u:"http://x""#),
            (r##"h:"#1""##, r##"h:"#1""##),
            (r#"q:'say "hi"\n'"#, r#"q:"say \"hi\"\n""#),
            (r#"b:"\\""#, r#"b:"\\""#),
            ("role:user,cmd:*", "cmd:*,role:user"),
            ("v:1,t:true,p:x-y/z.w,g:?x", "g:?x,p:x-y/z.w,t:true,v:1"),
            ("", ""),
        ] {
            let p = pat(text);
            assert_eq!(p.to_string(), shown, "{text}");
            assert_eq!(pat(&p.to_string()), p, "{text} → {p}");
        }
    }

    /// A small seeded generator of awkward strings, for the round-trip property.
    fn awkward(rng: &mut fastrand::Rng) -> String {
        const PIECES: &[&str] = &[
            "a",
            "cmd",
            "1",
            "01",
            "0x1",
            "1.0",
            "1e21",
            "-",
            "+1",
            ".5",
            "null",
            "true",
            "*",
            "?",
            " ",
            ",",
            ":",
            "{",
            "}",
            "[",
            "]",
            "'",
            "\"",
            "`",
            "\\",
            "#",
            "//",
            "/*",
            "*/",
            "/",
            "\n",
            "\t",
            "\u{0}",
            "\u{7f}",
            "é",
            "甲",
            "😀",
            "\u{2028}",
            "\u{a0}",
            "$",
            "_",
            "NaN",
            "Infinity",
            "undefined",
        ];
        (0..rng.usize(0..5))
            .map(|_| PIECES[rng.usize(..PIECES.len())])
            .collect()
    }

    /// Issue 14 item 7, as a property: for random patterns over awkward text, what `Display`
    /// prints parses back to the same pattern (seeded, so a failure reproduces).
    #[test]
    fn display_parses_back_to_the_same_pattern() {
        let mut rng = fastrand::Rng::with_seed(14_07);
        for case in 0..20_000 {
            let mut map = Map::new();
            for _ in 0..rng.usize(0..4) {
                let key = awkward(&mut rng);
                if key.ends_with('$') {
                    continue;
                }
                map.insert(key, Value::String(awkward(&mut rng)));
            }
            let p = Pattern::from_object(&map).expect("string values");
            let shown = p.to_string();
            let back = Pattern::parse(&shown)
                .unwrap_or_else(|e| panic!("case {case}: {map:?} shows as {shown:?}: {e}"));
            assert_eq!(back, p, "case {case}: {shown:?}");
        }
    }
}
