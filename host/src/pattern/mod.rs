//! Seneca-compatible patterns: [`jsonic`] pattern strings, `String(value)` comparison, gex
//! [`glob`]s and the [`patrun`] trie with its greedy, alphabetical-key precedence walk
//! (SENECA.md §1). Pure, no I/O.

mod glob;
mod jsonic;
mod patrun;

use std::borrow::Cow;
use std::fmt;

use serde_json::{Map, Value};

pub use glob::Glob;
pub use jsonic::{MAX_DEPTH, ParseError, parse_jsonic, parse_jsonic_pairs, parse_message};
pub use patrun::{Lookup, Patrun};

/// A pattern that parses but cannot be used for matching.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PatternError {
    /// The text is not valid jsonic.
    #[error("pattern {0}")]
    Parse(#[from] ParseError),
    /// A value is an object; Seneca treats those as validation rules, wasmeca matches values only.
    #[error(
        "pattern `{input}`: the value of `{key}` is an object; patterns match plain values \
         (Seneca would treat it as a validation rule, which wasmeca does not support)"
    )]
    ObjectValue {
        /// The text, quoted in the message.
        input: String,
        /// The key whose value is an object.
        key: String,
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
    /// Parses a jsonic pattern string (`role:user,cmd:*`).
    pub fn parse(text: &str) -> Result<Self, PatternError> {
        let map = parse_jsonic(text)?;
        Self::from_object(&map).map_err(|key| PatternError::ObjectValue {
            input: text.to_owned(),
            key,
        })
    }

    /// Builds a pattern from an object; `Err(key)` names a key whose value is an object.
    pub fn from_object(map: &Map<String, Value>) -> Result<Self, String> {
        let mut pairs = Vec::with_capacity(map.len());
        for (key, value) in map {
            if key.ends_with('$') || value.is_null() {
                continue;
            }
            if value.is_object() {
                return Err(key.clone());
            }
            pairs.push((key.clone(), match_string(Some(value)).into_owned()));
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

impl fmt::Display for Pattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, (k, v)) in self.pairs.iter().enumerate() {
            if i > 0 {
                f.write_str(",")?;
            }
            write!(f, "{k}:{v}")?;
        }
        Ok(())
    }
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
        assert_eq!(pat("a:[x]").to_string(), "a:x");
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
}
