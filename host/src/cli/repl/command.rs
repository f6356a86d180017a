//! What one line typed into `wasmeca repl` asks for: nothing, a message, or a dot command.
//! Pure, no I/O.

/// One line of input.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Line<'a> {
    /// Blank, or a `#` comment (a script's).
    Nothing,
    /// A message, as jsonic or JSON.
    Message(&'a str),
    /// A dot command.
    Command(Command),
    /// A dot command that does not exist, or was given wrong arguments.
    Wrong(String),
}

/// A dot command.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Command {
    /// `.plugins`: the plugins served, with their files and pattern counts.
    Plugins,
    /// `.patterns [GLOB]`: the patterns served in precedence order, those matching GLOB.
    Patterns(Option<String>),
    /// `.version [REQ]`: pin `$version` on every message; without REQ, unpin.
    Version(Option<String>),
    /// `.trace`: turn showing who answered on or off.
    Trace,
    /// `.help`.
    Help,
    /// `.quit` or `.exit`.
    Quit,
}

/// Every dot command's name, for `.help` and completion.
pub(crate) const NAMES: [&str; 7] = [
    ".plugins",
    ".patterns",
    ".version",
    ".trace",
    ".help",
    ".quit",
    ".exit",
];

/// What `.help` prints.
pub(crate) const HELP: &str = "\
Type a message as jsonic (cmd:salute,name:World) or JSON; the answer is printed with its time.
  .plugins          the plugins served: name@version, file, how many patterns
  .patterns [GLOB]  the patterns served, in the order patrun prefers them; with GLOB, those
                    whose text or one of whose key:value pairs matches it (role:math, cmd:*)
  .version [REQ]    pin $version (a semver requirement: 1, ^1.2, =1.0.0) on every message
                    that does not set its own; alone, unpin
  .trace            show or hide who answered: the host, the plugin name@version, the time
  .help             this text
  .quit, .exit      leave (so does Ctrl-D)
Tab completes pattern keys, and after `key:` the values the served patterns have for it.";

/// Reads one line.
pub(crate) fn parse(line: &str) -> Line<'_> {
    let line = line.trim();
    if line.is_empty() || line.starts_with('#') {
        return Line::Nothing;
    }
    if !line.starts_with('.') {
        return Line::Message(line);
    }
    let (name, rest) = line
        .split_once(char::is_whitespace)
        .map_or((line, ""), |(n, r)| (n, r.trim()));
    let arg = (!rest.is_empty()).then(|| rest.to_owned());
    let none = |command: Command| match &arg {
        None => Line::Command(command),
        Some(_) => Line::Wrong(format!("{name} takes no argument")),
    };
    match name {
        ".plugins" => none(Command::Plugins),
        ".patterns" => Line::Command(Command::Patterns(arg)),
        ".version" => Line::Command(Command::Version(arg)),
        ".trace" => none(Command::Trace),
        ".help" => none(Command::Help),
        ".quit" | ".exit" => none(Command::Quit),
        other => Line::Wrong(format!("no command {other}; .help lists them")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_are_messages_commands_or_nothing() {
        assert_eq!(parse("  "), Line::Nothing);
        assert_eq!(parse("# a comment"), Line::Nothing);
        assert_eq!(
            parse(" cmd:salute,name:World "),
            Line::Message("cmd:salute,name:World")
        );
        assert_eq!(parse(r#"{"a":1}"#), Line::Message(r#"{"a":1}"#));
        assert_eq!(parse(".plugins"), Line::Command(Command::Plugins));
        assert_eq!(parse(".patterns"), Line::Command(Command::Patterns(None)));
        assert_eq!(
            parse(".patterns   cmd:* "),
            Line::Command(Command::Patterns(Some("cmd:*".into())))
        );
        assert_eq!(
            parse(".version ^1.2"),
            Line::Command(Command::Version(Some("^1.2".into())))
        );
        assert_eq!(parse(".version"), Line::Command(Command::Version(None)));
        assert_eq!(parse(".trace"), Line::Command(Command::Trace));
        assert_eq!(parse(".help"), Line::Command(Command::Help));
        assert_eq!(parse(".quit"), Line::Command(Command::Quit));
        assert_eq!(parse(".exit"), Line::Command(Command::Quit));
    }

    #[test]
    fn wrong_commands_say_why() {
        assert_eq!(
            parse(".nope"),
            Line::Wrong("no command .nope; .help lists them".into())
        );
        assert_eq!(
            parse(".trace on"),
            Line::Wrong(".trace takes no argument".into())
        );
        for name in NAMES {
            assert!(
                !matches!(parse(name), Line::Wrong(_)),
                "{name} is a command"
            );
            assert!(HELP.contains(name), "{name} is in the help");
        }
    }
}
