//! gex globs as Seneca's patrun uses them: anchored, `*` any run of characters, `?` one,
//! `**` and `*?` literal. Pure, no I/O.

use serde_json::Value;

use super::match_string;

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
    pub(super) source: String,
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

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

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
}
