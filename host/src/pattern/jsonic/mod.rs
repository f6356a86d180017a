//! jsonic 2.x, the relaxed JSON Seneca writes patterns and messages in: braces optional, pairs
//! split by commas, spaces or newlines, quotes optional, numbers normalised, `#`, `//` and
//! `/* */` comments. Nesting is bounded, so no input can run the parser off the stack. Pure, no
//! I/O.

use serde_json::{Map, Value};

use crate::error::clip;

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

/// Parses Seneca's relaxed JSON ("jsonic" 2.x): top-level braces optional, pairs separated by
/// commas, spaces or newlines, `'`, `"` or `` ` `` quotes, bare text (`x-y/z.w`, `*`, `?x`),
/// numbers normalised (`01` → 1, `0x10` → 16, `1.0` → 1), `true`/`false`/`null`, `a:` meaning
/// null, `a:b:c` meaning `{a:{b:"c"}}`, the last of duplicate keys winning, and comments as
/// jsonic has them: `#` and `//` to the end of the line, `/* ... */` blocks, even straight after
/// bare text (`a:x#y` is `{a:"x"}`; quote a value that holds them).
///
/// Escapes are JSON's plus jsonic's `\xHH` and `\u{H...}`; a UTF-16 surrogate pair
/// (`"\ud83d\ude00"`) decodes to its character, and a lone surrogate, which no Rust (or JSON
/// text) string can hold, is refused with an error saying so.
pub fn parse_jsonic(input: &str) -> Result<Map<String, Value>, ParseError> {
    // Later duplicates win, as in jsonic.
    Ok(parse_jsonic_pairs(input)?.into_iter().collect())
}

/// Like [`parse_jsonic`], but keeps the top-level pairs in written order (duplicates too):
/// Seneca's AMQP queue names follow the order a pin was written in.
pub fn parse_jsonic_pairs(input: &str) -> Result<Vec<(String, Value)>, ParseError> {
    let mut p = Parser::new(input);
    p.skip_space()?;
    let braced = p.peek() == Some('{');
    if braced {
        p.bump();
    }
    let pairs = p.pairs(if braced { Some('}') } else { None })?;
    if braced {
        p.expect('}')?;
    }
    p.skip_space()?;
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

/// Characters that end bare text (a `//` or `/*` comment ends it too, see
/// [`Parser::at_comment`]).
fn ends_text(c: char) -> bool {
    c.is_whitespace() || matches!(c, ',' | ':' | '{' | '}' | '[' | ']' | '#')
}

/// Characters that open a quoted string.
fn is_quote(c: char) -> bool {
    matches!(c, '"' | '\'' | '`')
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

    /// Opens one level of nesting, refusing to reach [`MAX_DEPTH`] counting the top-level
    /// object as one, as serde_json counts (it refuses its 128th level): whatever parses here,
    /// sent on as JSON, parses in a peer's serde_json (or a plugin's) too.
    fn enter(&mut self) -> Result<(), ParseError> {
        self.depth += 1;
        if self.depth + 1 >= MAX_DEPTH {
            let mut error = self.error(format!("nested deeper than {MAX_DEPTH} levels"));
            error.too_deep = true;
            return Err(error);
        }
        Ok(())
    }

    fn peek(&self) -> Option<char> {
        self.chars.get(self.pos).copied()
    }

    /// True if a comment starts here: `#`, `//` or `/*`.
    fn at_comment(&self) -> bool {
        match self.peek() {
            Some('#') => true,
            Some('/') => matches!(self.chars.get(self.pos + 1), Some('/' | '*')),
            _ => false,
        }
    }

    /// True if bare text cannot go on here.
    fn ends_bare(&self) -> bool {
        self.peek().is_none_or(ends_text) || self.at_comment()
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
        self.skip_space()?;
        match self.peek() {
            Some(c) if c == want => {
                self.pos += 1;
                Ok(())
            }
            Some(c) => Err(self.error(format!("expected `{want}`, found `{c}`"))),
            None => Err(self.error(format!("expected `{want}`, found the end"))),
        }
    }

    /// Skips whitespace and comments; an unterminated `/*` is an error.
    fn skip_space(&mut self) -> Result<(), ParseError> {
        loop {
            match (self.peek(), self.chars.get(self.pos + 1)) {
                (Some(c), _) if c.is_whitespace() => self.pos += 1,
                (Some('#'), _) | (Some('/'), Some('/')) => {
                    while self.peek().is_some_and(|c| c != '\n') {
                        self.pos += 1;
                    }
                }
                (Some('/'), Some('*')) => {
                    let start = self.pos;
                    self.pos += 2;
                    loop {
                        match self.peek() {
                            Some('*') if self.chars.get(self.pos + 1) == Some(&'/') => {
                                self.pos += 2;
                                break;
                            }
                            Some(_) => self.pos += 1,
                            None => {
                                self.pos = start;
                                return Err(self.error("unterminated `/*` comment"));
                            }
                        }
                    }
                }
                _ => return Ok(()),
            }
        }
    }

    /// Skips whitespace, comments and at most one comma; true if anything separated the
    /// tokens.
    fn skip_separator(&mut self) -> Result<bool, ParseError> {
        let start = self.pos;
        self.skip_space()?;
        if self.peek() == Some(',') {
            self.pos += 1;
            self.skip_space()?;
        }
        Ok(self.pos > start)
    }

    /// `key:value` pairs up to `close` (or the end of input when `close` is `None`).
    fn pairs(&mut self, close: Option<char>) -> Result<Vec<(String, Value)>, ParseError> {
        let mut map = Vec::new();
        loop {
            self.skip_space()?;
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
            let separated = self.skip_separator()?;
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
            Some(q) if is_quote(q) => {
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
        self.skip_space()?;
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
        self.skip_space()?;
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
                    self.skip_space()?;
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
                    if !self.skip_separator()? && self.peek() != Some(']') {
                        let found = self
                            .peek()
                            .map_or("the end".to_owned(), |c| format!("`{c}`"));
                        return Err(self.error(format!("expected `,` or `]`, found {found}")));
                    }
                }
            }
            Some(q) if is_quote(q) => {
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
        while !self.ends_bare() {
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
                    Some('u') => out.push(self.unicode_escape()?),
                    Some('x') => {
                        let code = self.hex_digits(2)?;
                        // Two hex digits are always a valid char.
                        out.push(char::from_u32(code).unwrap_or(char::REPLACEMENT_CHARACTER));
                    }
                    Some(c) => out.push(c),
                    None => return Err(self.error("unterminated escape")),
                },
                Some(c) => out.push(c),
            }
        }
    }

    /// Exactly `n` hex digits at the cursor, as a number; the cursor moves past them.
    fn hex_digits(&mut self, n: usize) -> Result<u32, ParseError> {
        let mut code = 0u32;
        for i in 0..n {
            match self.chars.get(self.pos + i).and_then(|c| c.to_digit(16)) {
                Some(d) => code = code * 16 + d,
                None => {
                    self.pos += i;
                    return Err(self.error(format!("expected {n} hex digits in an escape")));
                }
            }
        }
        self.pos += n;
        Ok(code)
    }

    /// The character of a `\u` escape, the `u` consumed: `\uHHHH`, a surrogate pair
    /// `\uD83D\uDE00`, or jsonic's `\u{1F600}`. A lone surrogate is an error: a Rust string
    /// cannot hold one (serde_json refuses it too).
    fn unicode_escape(&mut self) -> Result<char, ParseError> {
        let start = self.pos - 2;
        if self.peek() == Some('{') {
            self.pos += 1;
            let mut code = 0u32;
            let mut digits = 0;
            while let Some(d) = self.peek().and_then(|c| c.to_digit(16)) {
                code = code.saturating_mul(16).saturating_add(d);
                digits += 1;
                self.pos += 1;
            }
            if digits == 0 || self.peek() != Some('}') {
                return Err(self.error("expected hex digits and `}` in a `\\u{...}` escape"));
            }
            self.pos += 1;
            return char::from_u32(code).ok_or_else(|| {
                let mut e = self.error(format!("`\\u{{{code:X}}}` is not a Unicode character"));
                e.column = start + 1;
                e
            });
        }
        let high = self.hex_digits(4)?;
        let lone = |p: &Self, code: u32| {
            let mut e = p.error(format!(
                "lone surrogate `\\u{code:04x}` in a string: a `\\uD800`-`\\uDBFF` escape must be \
                 followed by a `\\uDC00`-`\\uDFFF` one"
            ));
            e.column = start + 1;
            e
        };
        match high {
            0xD800..=0xDBFF => {
                if self.peek() != Some('\\') || self.chars.get(self.pos + 1) != Some(&'u') {
                    return Err(lone(self, high));
                }
                let save = self.pos;
                self.pos += 2;
                let low = self.hex_digits(4)?;
                if !(0xDC00..=0xDFFF).contains(&low) {
                    self.pos = save;
                    return Err(lone(self, high));
                }
                let code = 0x10000 + ((high - 0xD800) << 10) + (low - 0xDC00);
                Ok(char::from_u32(code).unwrap_or(char::REPLACEMENT_CHARACTER))
            }
            0xDC00..=0xDFFF => Err(lone(self, high)),
            code => Ok(char::from_u32(code).unwrap_or(char::REPLACEMENT_CHARACTER)),
        }
    }
}

/// What a pattern keeps of `text` read as a bare value: its `String(value)`, or `None` when it
/// reads as `null` (which drops the key). [`super::Pattern`]'s `Display` quotes a value unless
/// this gives the value back.
pub(super) fn bare_value_text(text: &str) -> Option<String> {
    match bare_value(text.to_owned()) {
        Value::Null => None,
        value => Some(super::match_string(Some(&value)).into_owned()),
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

#[cfg(test)]
mod tests;
