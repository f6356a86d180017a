//! Tab completion for `wasmeca repl`: dot commands, pattern keys, and after `key:` the values
//! the served patterns have for that key, narrowed by the pairs already typed. The candidates
//! are pure; [`Helper`] hands them to rustyline.

use wasmeca::pattern::{Glob, Pattern};

use super::command::NAMES;

/// Characters that end a key or value while typing jsonic.
const SEPARATORS: [char; 5] = [',', ' ', '\t', '{', '}'];

/// Where the word being completed starts in `line` (the text before the cursor), and its
/// candidates, sorted.
pub(crate) fn candidates<'p>(
    patterns: impl Iterator<Item = &'p Pattern> + Clone,
    line: &str,
) -> (usize, Vec<String>) {
    if line.trim_start().starts_with('.') {
        // A dot command's name; its argument is not completed.
        if line.contains(char::is_whitespace) {
            return (line.len(), Vec::new());
        }
        let names = NAMES.iter().filter(|n| n.starts_with(line));
        return (0, names.map(|n| (*n).to_owned()).collect());
    }
    let start = line.rfind(SEPARATORS).map_or(0, |i| i + 1);
    let word = &line[start..];
    let typed = typed_pairs(&line[..start]);
    // The patterns that have every pair typed so far (a glob value matching it); if none
    // does, all of them.
    let fits = |p: &Pattern| {
        typed.iter().all(|(k, v)| match p.get(k) {
            None => false,
            Some(value) if Glob::is_glob(value) => Glob::new(value).matches(v),
            Some(value) => value == v,
        })
    };
    let fitting: Vec<&Pattern> = match patterns.clone().filter(|p| fits(p)).collect::<Vec<_>>() {
        none if none.is_empty() => patterns.collect(),
        some => some,
    };
    let mut out: Vec<String> = match word.split_once(':') {
        // A value: the key's values, globs left out (they are not something to type).
        Some((key, prefix)) => {
            let key = unquote(key);
            let values = fitting
                .iter()
                .filter_map(|p| p.get(key))
                .filter(|v| !Glob::is_glob(v) && v.starts_with(prefix))
                .map(str::to_owned);
            return (start + word.len() - prefix.len(), sorted(values.collect()));
        }
        // A key not typed yet.
        None => fitting
            .iter()
            .flat_map(|p| p.pairs().iter().map(|(k, _)| k))
            .filter(|k| k.starts_with(word) && !typed.iter().any(|(t, _)| t == *k))
            .map(|k| format!("{k}:"))
            .collect(),
    };
    out = sorted(out);
    (start, out)
}

/// The `key:value` pairs written before the word being completed.
fn typed_pairs(before: &str) -> Vec<(String, String)> {
    before
        .split(SEPARATORS)
        .filter_map(|pair| pair.split_once(':'))
        .map(|(k, v)| (unquote(k).to_owned(), unquote(v).to_owned()))
        .collect()
}

/// A key or value without the quotes JSON or jsonic may put around it.
fn unquote(text: &str) -> &str {
    text.trim().trim_matches(['"', '\''])
}

/// Sorted, without repeats.
fn sorted(mut items: Vec<String>) -> Vec<String> {
    items.sort();
    items.dedup();
    items
}

/// rustyline's helper: completes from the patterns served when it was last told them.
#[derive(Default)]
pub(crate) struct Helper {
    /// The patterns served, from the last listing.
    pub patterns: Vec<Pattern>,
}

impl rustyline::completion::Completer for Helper {
    type Candidate = String;

    fn complete(
        &self,
        line: &str,
        pos: usize,
        _: &rustyline::Context<'_>,
    ) -> rustyline::Result<(usize, Vec<String>)> {
        Ok(candidates(self.patterns.iter(), &line[..pos]))
    }
}

impl rustyline::hint::Hinter for Helper {
    type Hint = String;
}

impl rustyline::highlight::Highlighter for Helper {}

impl rustyline::validate::Validator for Helper {}

impl rustyline::Helper for Helper {}

#[cfg(test)]
mod tests {
    use super::*;

    fn served() -> Vec<Pattern> {
        [
            "role:math,cmd:sum",
            "role:math,cmd:product",
            "role:math,cmd:*",
            "role:user,cmd:load",
            "cmd:salute",
            "module:user,if:load",
        ]
        .iter()
        .map(|p| p.parse().expect("a pattern"))
        .collect()
    }

    fn complete(line: &str) -> (usize, Vec<String>) {
        candidates(served().iter(), line)
    }

    #[test]
    fn keys_complete_at_a_key_position() {
        assert_eq!(
            complete(""),
            (
                0,
                vec![
                    "cmd:".into(),
                    "if:".into(),
                    "module:".into(),
                    "role:".into()
                ]
            )
        );
        assert_eq!(complete("ro"), (0, vec!["role:".into()]));
        assert_eq!(
            complete("role:math,"),
            (10, vec!["cmd:".into()]),
            "keys already typed are not offered again"
        );
        assert_eq!(complete("module:user "), (12, vec!["if:".into()]));
    }

    #[test]
    fn values_complete_after_a_key_narrowed_by_what_is_typed() {
        assert_eq!(complete("role:"), (5, vec!["math".into(), "user".into()]));
        assert_eq!(complete("cmd:salute,role:m"), (16, vec!["math".into()]));
        assert_eq!(
            complete("role:math,cmd:"),
            (14, vec!["product".into(), "sum".into()]),
            "globs are not offered"
        );
        assert_eq!(complete("role:user,cmd:"), (14, vec!["load".into()]));
        assert_eq!(
            complete("role:nope,cmd:s"),
            (14, vec!["salute".into(), "sum".into()]),
            "nothing fits: every pattern's values"
        );
        assert_eq!(
            complete(r#"{"role":"math","cmd":"#),
            (21, vec!["product".into(), "sum".into()]),
            "JSON's quotes are read through"
        );
    }

    #[test]
    fn dot_commands_complete_by_name() {
        assert_eq!(
            complete(".p"),
            (0, vec![".plugins".into(), ".patterns".into()])
        );
        assert_eq!(complete(".q"), (0, vec![".quit".into()]));
        assert_eq!(complete(".patterns c"), (11, vec![]));
    }
}
