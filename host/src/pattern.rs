//! Seneca-compatible patterns: jsonic pattern strings, `String(value)` comparison, gex globs and
//! the patrun 7 trie with its greedy, alphabetical-key precedence walk (SENECA.md §1). Pure, no I/O.

use std::borrow::Cow;
use std::collections::HashMap;
use std::fmt;

use serde_json::{Map, Value};

/// How deep objects and arrays may nest in a jsonic text: serde_json's own limit, so nothing a
/// caller sends can run the parser (or anything that walks its output) off the stack.
pub const MAX_DEPTH: usize = 128;

/// A jsonic text that does not parse, with the place where it went wrong.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("`{}` does not parse at column {column}: {reason}", clip(input))]
pub struct ParseError {
    /// The whole text, so the message can quote it (clipped when shown).
    pub input: String,
    /// 1-based character column of the offending character.
    pub column: usize,
    /// What was expected or found there.
    pub reason: String,
    /// True when the text nests deeper than [`MAX_DEPTH`]: the input is too big rather than
    /// malformed, which callers answer differently (400 instead of Seneca's 500).
    pub too_deep: bool,
}

/// A text quoted in an error message, cut after 120 characters so an error never echoes an
/// unbounded input.
fn clip(text: &str) -> Cow<'_, str> {
    const SHOWN: usize = 120;
    match text.char_indices().nth(SHOWN) {
        None => Cow::Borrowed(text),
        Some((at, _)) => Cow::Owned(format!("{}… ({} more bytes)", &text[..at], text.len() - at)),
    }
}

/// A pattern that parses but cannot be used for matching.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PatternError {
    /// The text is not valid jsonic.
    #[error("pattern {0}")]
    Parse(#[from] ParseError),
    /// The text parsed to something other than an object of pairs.
    #[error("pattern `{input}` is not a set of `key:value` pairs")]
    NotPairs {
        /// The text, quoted in the message.
        input: String,
    },
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

// ---------------------------------------------------------------------------------------------
// jsonic
// ---------------------------------------------------------------------------------------------

/// Parses Seneca's relaxed JSON ("jsonic" 2.x): top-level braces optional, pairs separated by
/// commas, spaces or newlines, `'` or `"` quotes, bare text (`x-y/z.w`, `*`, `?x`), numbers
/// normalised (`01` → 1, `0x10` → 16, `1.0` → 1), `true`/`false`/`null`, `a:` meaning null,
/// `a:b:c` meaning `{a:{b:"c"}}`, and the last of duplicate keys winning.
pub fn parse_jsonic(input: &str) -> Result<Map<String, Value>, ParseError> {
    // Later duplicates win, as in jsonic.
    Ok(parse_jsonic_pairs(input)?.into_iter().collect())
}

/// Like [`parse_jsonic`], but keeps the top-level pairs in written order (duplicates too):
/// Seneca's AMQP queue names follow the order a pin was written in.
pub fn parse_jsonic_pairs(input: &str) -> Result<Vec<(String, Value)>, ParseError> {
    let mut p = Parser::new(input);
    p.skip_space();
    let braced = p.peek() == Some('{');
    if braced {
        p.bump();
    }
    let pairs = p.pairs(if braced { Some('}') } else { None })?;
    if braced {
        p.expect('}')?;
    }
    p.skip_space();
    if let Some(c) = p.peek() {
        return Err(p.error(format!("unexpected `{c}` after the end")));
    }
    Ok(pairs)
}

/// Parses a message given on a command line or in a query: JSON when it is a JSON object,
/// jsonic pairs otherwise (`cmd:salute,name:World`).
pub fn parse_message(input: &str) -> Result<Map<String, Value>, ParseError> {
    if input.trim_start().starts_with('{')
        && let Ok(Value::Object(map)) = serde_json::from_str(input)
    {
        return Ok(map);
    }
    parse_jsonic(input)
}

/// Characters that end bare text.
fn ends_text(c: char) -> bool {
    c.is_whitespace() || matches!(c, ',' | ':' | '{' | '}' | '[' | ']')
}

/// A small recursive-descent parser over the characters of one jsonic text.
struct Parser<'a> {
    /// The text, for error messages.
    input: &'a str,
    /// The characters, indexable by position.
    chars: Vec<char>,
    /// Index of the next character.
    pos: usize,
    /// How many objects, arrays and `a:b:c` nestings are open here.
    depth: usize,
}

impl<'a> Parser<'a> {
    fn new(input: &'a str) -> Self {
        Self {
            input,
            chars: input.chars().collect(),
            pos: 0,
            depth: 0,
        }
    }

    /// Opens one level of nesting, refusing to go past [`MAX_DEPTH`].
    fn enter(&mut self) -> Result<(), ParseError> {
        self.depth += 1;
        if self.depth > MAX_DEPTH {
            let mut error = self.error(format!("nested deeper than {MAX_DEPTH} levels"));
            error.too_deep = true;
            return Err(error);
        }
        Ok(())
    }

    fn peek(&self) -> Option<char> {
        self.chars.get(self.pos).copied()
    }

    fn bump(&mut self) -> Option<char> {
        let c = self.peek();
        self.pos += 1;
        c
    }

    fn error(&self, reason: impl Into<String>) -> ParseError {
        ParseError {
            input: self.input.to_owned(),
            column: self.pos + 1,
            reason: reason.into(),
            too_deep: false,
        }
    }

    fn expect(&mut self, want: char) -> Result<(), ParseError> {
        self.skip_space();
        match self.peek() {
            Some(c) if c == want => {
                self.pos += 1;
                Ok(())
            }
            Some(c) => Err(self.error(format!("expected `{want}`, found `{c}`"))),
            None => Err(self.error(format!("expected `{want}`, found the end"))),
        }
    }

    fn skip_space(&mut self) {
        while self.peek().is_some_and(char::is_whitespace) {
            self.pos += 1;
        }
    }

    /// Skips whitespace and at most one comma; true if anything separated the tokens.
    fn skip_separator(&mut self) -> bool {
        let start = self.pos;
        self.skip_space();
        if self.peek() == Some(',') {
            self.pos += 1;
            self.skip_space();
        }
        self.pos > start
    }

    /// `key:value` pairs up to `close` (or the end of input when `close` is `None`).
    fn pairs(&mut self, close: Option<char>) -> Result<Vec<(String, Value)>, ParseError> {
        let mut map = Vec::new();
        self.skip_space();
        loop {
            self.skip_space();
            match (self.peek(), close) {
                (None, None) => return Ok(map),
                (None, Some(c)) => return Err(self.error(format!("expected `{c}`, found the end"))),
                (Some(c), Some(want)) if c == want => return Ok(map),
                _ => {}
            }
            let key = self.key()?;
            self.expect(':')?;
            let value = self.value_after_colon(close)?;
            map.push((key, value));
            let separated = self.skip_separator();
            match (self.peek(), close) {
                (None, _) => {}
                (Some(c), Some(want)) if c == want => {}
                (Some(c), _) if !separated => {
                    return Err(self.error(format!("expected `,` or a space before `{c}`")));
                }
                _ => {}
            }
        }
    }

    fn key(&mut self) -> Result<String, ParseError> {
        match self.peek() {
            Some(q @ ('"' | '\'')) => {
                self.pos += 1;
                self.quoted(q)
            }
            Some(c) if !ends_text(c) => Ok(self.bare()),
            Some(c) => Err(self.error(format!("expected a key, found `{c}`"))),
            None => Err(self.error("expected a key, found the end")),
        }
    }

    /// The value after `key:`; nothing (a separator or the closer) means null.
    fn value_after_colon(&mut self, close: Option<char>) -> Result<Value, ParseError> {
        // `a: 1` is allowed, but `a:,b:1` and `a:` at the end mean null.
        let save = self.pos;
        self.skip_space();
        match self.peek() {
            None | Some(',') => {
                self.pos = save;
                return Ok(Value::Null);
            }
            Some(c) if Some(c) == close || c == ']' => {
                self.pos = save;
                return Ok(Value::Null);
            }
            _ => {}
        }
        let value = self.value()?;
        // `a:b:c` nests: the value just read is the key of an implicit object.
        let after = self.pos;
        if self.peek() == Some(':') {
            let key = match value {
                Value::String(s) => s,
                Value::Number(n) => n.to_string(),
                Value::Bool(b) => b.to_string(),
                Value::Null => "null".to_owned(),
                _ => return Err(self.error("a `:` cannot follow an object or array")),
            };
            self.pos = after + 1;
            self.enter()?;
            let inner = self.value_after_colon(close)?;
            self.depth -= 1;
            let mut map = Map::new();
            map.insert(key, inner);
            return Ok(Value::Object(map));
        }
        Ok(value)
    }

    fn value(&mut self) -> Result<Value, ParseError> {
        self.skip_space();
        match self.peek() {
            Some('{') => {
                self.enter()?;
                self.pos += 1;
                let pairs = self.pairs(Some('}'))?;
                self.expect('}')?;
                self.depth -= 1;
                Ok(Value::Object(pairs.into_iter().collect()))
            }
            Some('[') => {
                self.enter()?;
                self.pos += 1;
                let mut items = Vec::new();
                loop {
                    self.skip_space();
                    match self.peek() {
                        Some(']') => {
                            self.pos += 1;
                            self.depth -= 1;
                            return Ok(Value::Array(items));
                        }
                        None => return Err(self.error("expected `]`, found the end")),
                        _ => {}
                    }
                    items.push(self.value()?);
                    if !self.skip_separator() && self.peek() != Some(']') {
                        let found = self
                            .peek()
                            .map_or("the end".to_owned(), |c| format!("`{c}`"));
                        return Err(self.error(format!("expected `,` or `]`, found {found}")));
                    }
                }
            }
            Some(q @ ('"' | '\'')) => {
                self.pos += 1;
                Ok(Value::String(self.quoted(q)?))
            }
            Some(c) if !ends_text(c) => Ok(bare_value(self.bare())),
            Some(c) => Err(self.error(format!("expected a value, found `{c}`"))),
            None => Err(self.error("expected a value, found the end")),
        }
    }

    fn bare(&mut self) -> String {
        let start = self.pos;
        while self.peek().is_some_and(|c| !ends_text(c)) {
            self.pos += 1;
        }
        self.chars[start..self.pos].iter().collect()
    }

    /// A quoted string; the opening quote has been consumed.
    fn quoted(&mut self, quote: char) -> Result<String, ParseError> {
        let mut out = String::new();
        loop {
            match self.bump() {
                None => {
                    self.pos -= 1;
                    return Err(self.error(format!("unterminated string, expected `{quote}`")));
                }
                Some(c) if c == quote => return Ok(out),
                Some('\\') => match self.bump() {
                    Some('n') => out.push('\n'),
                    Some('t') => out.push('\t'),
                    Some('r') => out.push('\r'),
                    Some('b') => out.push('\u{8}'),
                    Some('f') => out.push('\u{c}'),
                    Some('u') => {
                        let hex: String = self.chars.iter().skip(self.pos).take(4).collect();
                        let code = u32::from_str_radix(&hex, 16)
                            .ok()
                            .and_then(char::from_u32)
                            .ok_or_else(|| self.error("bad `\\u` escape"))?;
                        self.pos += 4;
                        out.push(code);
                    }
                    Some(c) => out.push(c),
                    None => return Err(self.error("unterminated escape")),
                },
                Some(c) => out.push(c),
            }
        }
    }
}

/// Bare text becomes a literal, a number, or stays text.
fn bare_value(text: String) -> Value {
    match text.as_str() {
        "true" => Value::Bool(true),
        "false" => Value::Bool(false),
        "null" => Value::Null,
        _ => parse_number(&text).map_or(Value::String(text), number_value),
    }
}

/// jsonic's number forms: decimal with optional sign, fraction and exponent, `_` separators,
/// and `0x`/`0o`/`0b` integers.
fn parse_number(text: &str) -> Option<f64> {
    let (sign, body) = match text.as_bytes().first()? {
        b'-' => (-1.0, &text[1..]),
        b'+' => (1.0, &text[1..]),
        _ => (1.0, text),
    };
    if !body.as_bytes().first()?.is_ascii_digit() && !body.starts_with('.') {
        return None;
    }
    let body = body.replace('_', "");
    let radix = |prefix: &str, radix| {
        body.strip_prefix(prefix)
            .and_then(|digits| u64::from_str_radix(digits, radix).ok())
            .map(|n| n as f64)
    };
    let n = radix("0x", 16)
        .or_else(|| radix("0X", 16))
        .or_else(|| radix("0o", 8))
        .or_else(|| radix("0b", 2))
        .or_else(|| {
            let ok = body
                .bytes()
                .all(|b| b.is_ascii_digit() || matches!(b, b'.' | b'e' | b'E' | b'-' | b'+'));
            if ok { body.parse::<f64>().ok() } else { None }
        })?;
    n.is_finite().then_some(sign * n)
}

/// A JS number as a JSON value: integral values within 2^53 become integers, as JS prints them.
fn number_value(n: f64) -> Value {
    const SAFE: f64 = 9_007_199_254_740_992.0;
    if n.fract() == 0.0 && n.abs() < SAFE {
        Value::from(n as i64)
    } else {
        serde_json::Number::from_f64(n).map_or(Value::Null, Value::Number)
    }
}

// ---------------------------------------------------------------------------------------------
// String(value)
// ---------------------------------------------------------------------------------------------

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

// ---------------------------------------------------------------------------------------------
// gex globs
// ---------------------------------------------------------------------------------------------

/// One element of a compiled glob.
#[derive(Debug, Clone, PartialEq, Eq)]
enum GlobPart {
    /// `*`: any sequence of characters, including none.
    Any,
    /// `?`: exactly one character.
    One,
    /// A literal character (`**` is a literal `*`, `*?` a literal `?`).
    Lit(char),
}

/// A gex glob: anchored, `*` and `?` wildcards.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Glob {
    /// The glob as written, used to recognise the same glob added twice.
    source: String,
    /// The compiled form.
    parts: Vec<GlobPart>,
}

impl Glob {
    /// True if `value` is a glob in Seneca's sense: a string containing `*` or `?`.
    pub fn is_glob(value: &str) -> bool {
        value.contains(['*', '?'])
    }

    /// Compiles a glob.
    pub fn new(source: &str) -> Self {
        let mut parts = Vec::new();
        let mut chars = source.chars().peekable();
        while let Some(c) = chars.next() {
            parts.push(match c {
                '*' => match chars.peek() {
                    Some('*') => {
                        chars.next();
                        GlobPart::Lit('*')
                    }
                    Some('?') => {
                        chars.next();
                        GlobPart::Lit('?')
                    }
                    _ => GlobPart::Any,
                },
                '?' => GlobPart::One,
                c => GlobPart::Lit(c),
            });
        }
        Self {
            source: source.to_owned(),
            parts,
        }
    }

    /// Matches a whole string.
    pub fn matches(&self, text: &str) -> bool {
        let text: Vec<char> = text.chars().collect();
        // Classic two-pointer wildcard match with backtracking to the last `*`.
        let (mut p, mut t) = (0, 0);
        let mut star: Option<(usize, usize)> = None;
        while t < text.len() {
            match self.parts.get(p) {
                Some(GlobPart::Any) => {
                    star = Some((p, t));
                    p += 1;
                }
                Some(GlobPart::One) => {
                    p += 1;
                    t += 1;
                }
                Some(GlobPart::Lit(c)) if *c == text[t] => {
                    p += 1;
                    t += 1;
                }
                _ => match star {
                    Some((sp, st)) => {
                        p = sp + 1;
                        t = st + 1;
                        star = Some((sp, st + 1));
                    }
                    None => return false,
                },
            }
        }
        self.parts[p..].iter().all(|part| *part == GlobPart::Any)
    }

    /// Matches a message value: missing and null never match, objects and arrays always do
    /// (gex's quirk), everything else by its `String(value)`.
    pub fn matches_value(&self, value: Option<&Value>) -> bool {
        match value {
            None | Some(Value::Null) => false,
            Some(Value::Object(_) | Value::Array(_)) => true,
            Some(v) => self.matches(&match_string(Some(v))),
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Pattern
// ---------------------------------------------------------------------------------------------

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

    /// True if any value is a glob.
    pub fn has_glob(&self) -> bool {
        self.pairs.iter().any(|(_, v)| Glob::is_glob(v))
    }

    /// The pattern as a JSON object (values as strings), to use it as a message.
    pub fn to_object(&self) -> Map<String, Value> {
        self.pairs
            .iter()
            .map(|(k, v)| (k.clone(), Value::String(v.clone())))
            .collect()
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

// ---------------------------------------------------------------------------------------------
// patrun
// ---------------------------------------------------------------------------------------------

/// Index of a node in the trie arena.
type NodeId = usize;

/// A trie node: tests one key, with exact children by value, glob children in insertion order,
/// a "skip" child for patterns without this key, and optional data.
#[derive(Debug, Clone)]
struct Node<D> {
    /// The key tested here; `None` for a leaf that has not been extended yet.
    key: Option<String>,
    /// Children by exact value.
    exact: HashMap<String, NodeId>,
    /// Children by glob, tried in insertion order after an exact miss.
    globs: Vec<(Glob, NodeId)>,
    /// Patterns that do not have `key`.
    skip: Option<NodeId>,
    /// The data of the pattern that ends here.
    data: Option<D>,
}

impl<D> Default for Node<D> {
    fn default() -> Self {
        Self {
            key: None,
            exact: HashMap::new(),
            globs: Vec::new(),
            skip: None,
            data: None,
        }
    }
}

/// How a message looks up a key: a JSON object, or a pattern used as a message.
pub trait Lookup {
    /// The value under `key` as a JSON value, when the message has it.
    fn value(&self, key: &str) -> Option<Cow<'_, Value>>;
    /// How many keys the message has (for exact finds).
    fn len(&self) -> usize;
    /// True if the message has no keys.
    fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl Lookup for Map<String, Value> {
    fn value(&self, key: &str) -> Option<Cow<'_, Value>> {
        self.get(key).map(Cow::Borrowed)
    }
    fn len(&self) -> usize {
        Map::len(self)
    }
}

impl Lookup for Pattern {
    fn value(&self, key: &str) -> Option<Cow<'_, Value>> {
        self.get(key)
            .map(|v| Cow::Owned(Value::String(v.to_owned())))
    }
    fn len(&self) -> usize {
        self.pairs.len()
    }
}

/// patrun 7 with globs on: stores data under patterns and finds the data for a message by the
/// greedy, alphabetical-key walk of SENECA.md §1.
#[derive(Debug, Clone)]
pub struct Patrun<D> {
    /// Node arena; index 0 is the root.
    nodes: Vec<Node<D>>,
}

impl<D> Default for Patrun<D> {
    fn default() -> Self {
        Self {
            nodes: vec![Node::default()],
        }
    }
}

impl<D> Patrun<D> {
    /// An empty router.
    pub fn new() -> Self {
        Self::default()
    }

    fn push(&mut self, node: Node<D>) -> NodeId {
        self.nodes.push(node);
        self.nodes.len() - 1
    }

    /// The child for `value` at node `at` (which tests the key), created if missing.
    fn child(&mut self, at: NodeId, value: &str) -> NodeId {
        if Glob::is_glob(value) {
            if let Some((_, id)) = self.nodes[at].globs.iter().find(|(g, _)| g.source == value) {
                return *id;
            }
            let id = self.push(Node::default());
            self.nodes[at].globs.push((Glob::new(value), id));
            id
        } else {
            if let Some(id) = self.nodes[at].exact.get(value) {
                return *id;
            }
            let id = self.push(Node::default());
            self.nodes[at].exact.insert(value.to_owned(), id);
            id
        }
    }

    /// The data slot of `pattern`, creating its path (patrun's `add` without the assignment).
    pub fn slot(&mut self, pattern: &Pattern) -> &mut Option<D> {
        let mut at = 0;
        let mut pairs = pattern.pairs.iter().peekable();
        while let Some((key, value)) = pairs.peek() {
            let node_key = self.nodes[at].key.clone();
            match node_key {
                Some(k) if k == *key => {
                    at = self.child(at, value);
                    pairs.next();
                }
                None => {
                    self.nodes[at].key = Some(key.clone());
                    at = self.child(at, value);
                    pairs.next();
                }
                Some(k) if key.as_str() < k.as_str() => {
                    // Insert this key before the node's: the node's tests move to a skip child.
                    let node = &mut self.nodes[at];
                    let moved = Node {
                        key: node.key.take(),
                        exact: std::mem::take(&mut node.exact),
                        globs: std::mem::take(&mut node.globs),
                        skip: node.skip.take(),
                        data: None,
                    };
                    let moved = self.push(moved);
                    self.nodes[at].skip = Some(moved);
                    self.nodes[at].key = Some(key.clone());
                    at = self.child(at, value);
                    pairs.next();
                }
                Some(_) => {
                    at = match self.nodes[at].skip {
                        Some(s) => s,
                        None => {
                            let s = self.push(Node::default());
                            self.nodes[at].skip = Some(s);
                            s
                        }
                    };
                }
            }
        }
        &mut self.nodes[at].data
    }

    /// Stores `data` under `pattern`; returns the data it replaced (the same pattern added again).
    pub fn add(&mut self, pattern: &Pattern, data: D) -> Option<D> {
        self.slot(pattern).replace(data)
    }

    /// Finds the data for a message (patrun's non-exact `find`, used for dispatch).
    pub fn find<M: Lookup + ?Sized>(&self, msg: &M) -> Option<&D> {
        self.walk(msg, false)
    }

    /// Finds data only for a pattern that uses every key of the message (seneca's `has`).
    pub fn find_exact<M: Lookup + ?Sized>(&self, msg: &M) -> Option<&D> {
        self.walk(msg, true)
    }

    fn walk<M: Lookup + ?Sized>(&self, msg: &M, exact: bool) -> Option<&D> {
        let root = &self.nodes[0];
        let mut data: Option<&D> = root.data.as_ref();
        let mut at = Some(0);
        let mut stars: Vec<NodeId> = Vec::new();
        let mut found_keys = 0usize;
        while let Some(id) = at {
            let node = &self.nodes[id];
            at = match &node.key {
                Some(key) => {
                    let value = msg.value(key);
                    let value = value.as_deref();
                    let text = match_string(value);
                    let next = node.exact.get(text.as_ref()).copied().or_else(|| {
                        node.globs
                            .iter()
                            .find(|(g, _)| g.matches_value(value))
                            .map(|(_, id)| *id)
                    });
                    match next {
                        Some(next) => {
                            found_keys += 1;
                            if let Some(s) = node.skip {
                                stars.push(s);
                            }
                            match &self.nodes[next].data {
                                Some(d) => data = Some(d),
                                None if exact => data = None,
                                None => {}
                            }
                            Some(next)
                        }
                        None => node.skip,
                    }
                }
                None => None,
            };
            if at.is_none() && data.is_none() {
                at = stars.pop();
            }
        }
        if exact {
            return if found_keys == msg.len() { data } else { None };
        }
        data.or(root.data.as_ref())
    }

    /// Removes the data stored under exactly `pattern` (a glob value matches only the same
    /// glob); finds then fall back to wider patterns.
    pub fn remove(&mut self, pattern: &Pattern) -> Option<D> {
        let mut at = 0;
        let mut last: Option<NodeId> = None;
        loop {
            let node = &self.nodes[at];
            let Some(key) = &node.key else { break };
            let value = pattern.get(key);
            let next = value.and_then(|v| {
                node.exact.get(v).copied().or_else(|| {
                    node.globs
                        .iter()
                        .find(|(g, _)| g.source == v)
                        .map(|(_, id)| *id)
                })
            });
            match next.or(node.skip) {
                Some(n) => {
                    if next.is_some() {
                        last = Some(n);
                    }
                    at = n;
                }
                None => break,
            }
        }
        if pattern.is_empty() {
            return self.nodes[0].data.take();
        }
        last.and_then(|n| self.nodes[n].data.take())
    }

    /// Every stored pattern with its data, in trie order (globs included).
    pub fn list(&self) -> Vec<(Pattern, &D)> {
        let mut out = Vec::new();
        self.collect(0, &mut Vec::new(), &mut out);
        out
    }

    fn collect<'s>(
        &'s self,
        at: NodeId,
        path: &mut Vec<(String, String)>,
        out: &mut Vec<(Pattern, &'s D)>,
    ) {
        let node = &self.nodes[at];
        if let Some(d) = &node.data {
            let mut pairs = path.clone();
            pairs.sort();
            out.push((Pattern { pairs }, d));
        }
        if let Some(key) = &node.key {
            let mut exact: Vec<_> = node.exact.iter().collect();
            exact.sort();
            let children = exact.into_iter().map(|(v, id)| (v.as_str(), *id));
            let globs = node.globs.iter().map(|(g, id)| (g.source.as_str(), *id));
            for (value, id) in children.chain(globs) {
                path.push((key.clone(), value.to_owned()));
                self.collect(id, path, out);
                path.pop();
            }
        }
        if let Some(s) = node.skip {
            self.collect(s, path, out);
        }
    }

    /// Mutable access to every stored data, for bulk updates.
    pub fn values_mut(&mut self) -> impl Iterator<Item = &mut D> {
        self.nodes.iter_mut().filter_map(|n| n.data.as_mut())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn pat(s: &str) -> Pattern {
        Pattern::parse(s).unwrap_or_else(|e| panic!("{e}"))
    }

    fn msg(v: Value) -> Map<String, Value> {
        match v {
            Value::Object(m) => m,
            _ => panic!("not an object"),
        }
    }

    fn router(entries: &[(&str, &'static str)]) -> Patrun<&'static str> {
        let mut r = Patrun::new();
        for (p, d) in entries {
            r.add(&pat(p), *d);
        }
        r
    }

    fn find(r: &Patrun<&'static str>, m: Value) -> Option<&'static str> {
        r.find(&msg(m)).copied()
    }

    // --- jsonic ---

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
        assert!(Pattern::parse(&deep).is_err());
        // 128 levels still parse.
        let ok = format!("a:{}1{}", "[".repeat(128), "]".repeat(128));
        assert!(parse_jsonic(&ok).is_ok());
        let over = format!("a:{}1{}", "[".repeat(129), "]".repeat(129));
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

    // --- String(value) ---

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

    // --- globs ---

    #[test]
    fn gex_globs() {
        let g = Glob::new("x*");
        assert!(g.matches("x") && g.matches("xabc") && !g.matches("yx"));
        assert!(Glob::new("*").matches("") && Glob::new("*").matches("a\nb"));
        assert!(Glob::new("a?c").matches("abc") && !Glob::new("a?c").matches("ac"));
        assert!(Glob::new("a**").matches("a*") && !Glob::new("a**").matches("ab"));
        assert!(Glob::new("a*?").matches("a?") && !Glob::new("a*?").matches("ab"));
        assert!(Glob::new("*b*c").matches("abxbc"));
        assert!(
            !Glob::new("*").matches_value(None)
                && !Glob::new("*").matches_value(Some(&Value::Null))
        );
        assert!(
            Glob::new("zz").matches_value(Some(&json!({"a":1}))),
            "objects always match (gex quirk)"
        );
        assert!(Glob::new("1*").matches_value(Some(&json!(12))));
    }

    // --- patterns ---

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

    // --- patrun: every row of SENECA.md §1's worked examples ---

    #[test]
    fn row_exact_beats_shorter() {
        let r = router(&[("a:1", "A"), ("a:1,b:1", "AB"), ("a:1,b:2", "AB2")]);
        assert_eq!(find(&r, json!({"a":1,"b":1})), Some("AB"));
    }

    #[test]
    fn row_partial_falls_back_to_wider() {
        let r = router(&[("a:1", "A"), ("a:1,b:1", "AB"), ("a:1,b:2", "AB2")]);
        assert_eq!(find(&r, json!({"a":1,"b":3})), Some("A"));
        assert_eq!(find(&r, json!({"a":1,"z":9})), Some("A"));
        assert_eq!(find(&r, json!({"a":"1"})), Some("A"));
    }

    #[test]
    fn row_no_match() {
        let r = router(&[("a:1", "A"), ("a:1,b:1", "AB"), ("a:1,b:2", "AB2")]);
        assert_eq!(find(&r, json!({"b":1})), None);
    }

    #[test]
    fn row_alphabetical_keys_decide() {
        let r = router(&[("a:0", "A"), ("b:1", "B"), ("c:2", "C"), ("a:0,b:1", "AB")]);
        assert_eq!(find(&r, json!({"a":0,"c":2})), Some("A"));
        assert_eq!(find(&r, json!({"a":1,"b":1})), Some("B"));
    }

    #[test]
    fn row_one_key_beats_two() {
        let r = router(&[("a:1", "A"), ("b:2,c:3", "BC")]);
        assert_eq!(find(&r, json!({"a":1,"b":2,"c":3})), Some("A"));
    }

    #[test]
    fn row_skip_then_match() {
        let r = router(&[("b:1", "B"), ("a:1,c:1", "AC")]);
        assert_eq!(find(&r, json!({"a":1,"b":1,"c":1})), Some("AC"));
    }

    #[test]
    fn row_no_backtrack_once_found() {
        let r = router(&[("a:1", "A"), ("a:1,b:2,c:3", "ABC"), ("a:1,d:4", "AD")]);
        assert_eq!(find(&r, json!({"a":1,"b":2,"d":4})), Some("A"));
        // ... while an exact find backtracks to AD, as patrun 1.x did.
        let exact = router(&[("a:1", "A"), ("a:1,b:2,c:3", "ABC"), ("a:1,d:4", "AD")]);
        assert_eq!(
            exact.find_exact(&msg(json!({"a":1,"d":4}))).copied(),
            Some("AD")
        );
    }

    #[test]
    fn row_backtrack_when_nothing_found() {
        let r = router(&[("a:1,b:2,c:3", "ABC"), ("a:1,d:4", "AD")]);
        assert_eq!(find(&r, json!({"a":1,"b":2,"d":4})), Some("AD"));
    }

    #[test]
    fn row_globs_exact_first_then_insertion_order() {
        let r = router(&[("a:'*'", "S"), ("a:x", "X"), ("a:'x*'", "XS")]);
        assert_eq!(find(&r, json!({"a":"x"})), Some("X"));
        assert_eq!(find(&r, json!({"a":"xa"})), Some("S"));
        assert_eq!(find(&r, json!({"a":1})), Some("S"));
    }

    #[test]
    fn row_star_requires_the_key() {
        let r = router(&[("a:'*'", "S")]);
        assert_eq!(find(&r, json!({})), None);
        assert_eq!(find(&r, json!({"b":1})), None);
    }

    #[test]
    fn row_null_key_dropped() {
        let mut r = Patrun::new();
        r.add(
            &Pattern::from_object(&msg(json!({"c":null,"d":1}))).unwrap(),
            "CD",
        );
        assert_eq!(find(&r, json!({"d":1})), Some("CD"));
    }

    #[test]
    fn row_root_catch_all() {
        let r = router(&[("", "ROOT"), ("a:1", "A")]);
        assert_eq!(find(&r, json!({"a":2})), Some("ROOT"));
        assert_eq!(find(&r, json!({"a":1})), Some("A"));
    }

    #[test]
    fn local_exact_beats_client_glob() {
        let r = router(&[
            ("role:math,cmd:*", "CLIENT"),
            ("role:math,cmd:sum", "LOCAL"),
        ]);
        assert_eq!(find(&r, json!({"role":"math","cmd":"sum"})), Some("LOCAL"));
        assert_eq!(find(&r, json!({"role":"math","cmd":"mul"})), Some("CLIENT"));
    }

    #[test]
    fn meta_keys_never_match() {
        let r = router(&[("cmd:x", "X")]);
        assert_eq!(
            find(&r, json!({"cmd":"x","timeout$":5,"$version":"1"})),
            Some("X")
        );
    }

    #[test]
    fn same_pattern_replaces() {
        let mut r = router(&[("a:1,b:2", "first")]);
        assert_eq!(r.add(&pat("b:2 a:1"), "second"), Some("first"));
        assert_eq!(find(&r, json!({"a":1,"b":2})), Some("second"));
    }

    #[test]
    fn remove_falls_back() {
        let mut r = router(&[("a:1", "A"), ("a:1,b:2", "AB"), ("a:*", "S")]);
        assert_eq!(r.remove(&pat("a:1,b:2")), Some("AB"));
        assert_eq!(find(&r, json!({"a":1,"b":2})), Some("A"));
        assert_eq!(r.remove(&pat("a:'*'")), Some("S"));
        assert_eq!(find(&r, json!({"a":3})), None);
        assert_eq!(r.remove(&pat("a:9")), None);
    }

    #[test]
    fn list_includes_globs() {
        let r = router(&[("b:1", "B"), ("a:1,c:*", "AC"), ("", "ROOT")]);
        let listed: Vec<String> = r
            .list()
            .into_iter()
            .map(|(p, d)| format!("{p}={d}"))
            .collect();
        assert_eq!(listed, ["=ROOT", "a:1,c:*=AC", "b:1=B"]);
    }

    #[test]
    fn pattern_as_message_finds_itself_or_wider() {
        let r = router(&[("role:user", "U"), ("role:user,cmd:*", "UC")]);
        assert_eq!(r.find(&pat("role:user,cmd:*")).copied(), Some("UC"));
        assert_eq!(r.find(&pat("role:user,cmd:x,z:1")).copied(), Some("UC"));
        assert_eq!(r.find(&pat("role:user,z:1")).copied(), Some("U"));
    }
}
