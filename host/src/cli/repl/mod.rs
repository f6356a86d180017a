//! `wasmeca repl`: a prompt against a running host (its Seneca HTTP transport, or AMQP) or
//! plugins loaded in this process, with line editing, history, completion and dot commands;
//! or, when stdin is not a terminal, one message per line in and one JSON answer per line out.

mod command;
mod complete;
mod served;

use std::ffi::OsString;
use std::io::{BufRead, IsTerminal};
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, anyhow, bail};
use rustyline::error::ReadlineError;
use serde_json::{Map, Value, json};
use wasmeca::{ActError, Code, Message};

use self::command::{Command, Line};
use self::complete::Helper;
use self::served::Served;
use super::act::{Answered, Connect, Endpoint, NoQueue, answer_text};
use super::listing;
use crate::ReplArgs;

/// Runs `wasmeca repl`.
pub async fn repl(args: ReplArgs) -> anyhow::Result<ExitCode> {
    let endpoint = Endpoint::open(Connect {
        paths: &args.paths,
        reach: &args.reach,
        wait: true,
        host: &args.host,
    })
    .await?;
    let interactive = std::io::stdin().is_terminal();
    let session = Session {
        endpoint,
        version: None,
        trace: false,
        interactive,
        colour: interactive
            && std::io::stdout().is_terminal()
            && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty()),
        failed: false,
        served: None,
    };
    if interactive {
        session.interactive().await
    } else {
        session.piped().await
    }
}

/// What a session keeps from one line to the next.
struct Session {
    /// Where the messages go.
    endpoint: Endpoint,
    /// `.version`: the `$version` requirement put on every message that sets none itself.
    version: Option<String>,
    /// `.trace`: show who answered, where and how fast.
    trace: bool,
    /// A person is typing: a prompt, pretty answers with their time; else one line per answer.
    interactive: bool,
    /// ANSI colour on stdout (a terminal, and `NO_COLOR` unset).
    colour: bool,
    /// A message failed, or a command: the exit code of a script says so.
    failed: bool,
    /// The last listing of what is served (for `.plugins`, `.patterns` and completion), taken
    /// anew by each of those commands, since a host reloads.
    served: Option<Served>,
}

/// What comes after a line.
enum Next {
    /// The next line.
    Read,
    /// The end of the session.
    Quit,
}

impl Session {
    /// A person at a terminal: prompt, line editing, history, completion.
    async fn interactive(mut self) -> anyhow::Result<ExitCode> {
        let config = rustyline::Config::builder()
            .auto_add_history(true)
            .history_ignore_dups(true)?
            .history_ignore_space(true)
            .max_history_size(1000)?
            .completion_type(rustyline::CompletionType::List)
            .build();
        let mut editor: rustyline::Editor<Helper, rustyline::history::DefaultHistory> =
            rustyline::Editor::with_config(config)?;
        editor.set_helper(Some(Helper::default()));
        let history = history_file(|name| std::env::var_os(name));
        if let Some(path) = &history {
            // A first session has no file yet.
            let _ = editor.load_history(path);
        }
        let what = match self.refresh().await {
            Ok(served) => {
                let (plugins, patterns) = served.counts();
                format!("{plugins} plugins, {patterns} patterns")
            }
            Err(e) => self.paint("33", &format!("no listing: {e:#}")),
        };
        println!(
            "wasmeca repl → {} ({what}); .help for commands, Ctrl-D to leave",
            self.endpoint.describe()
        );
        loop {
            if let (Some(helper), Some(served)) = (editor.helper_mut(), &self.served) {
                helper.patterns = served.patterns().cloned().collect();
            }
            let prompt = match &self.version {
                Some(req) => format!("wasmeca $version:{req}> "),
                None => "wasmeca> ".to_owned(),
            };
            match tokio::task::block_in_place(|| editor.readline(&prompt)) {
                Ok(line) => match self.line(&line).await {
                    Ok(Next::Read) => {}
                    Ok(Next::Quit) => break,
                    // Not delivered (the host is down, say): it may be back for the next one.
                    Err(e) => self.complain(&e),
                },
                // Ctrl-C drops the line being typed, as a shell does.
                Err(ReadlineError::Interrupted) => {}
                Err(ReadlineError::Eof) => break,
                Err(e) => return Err(e.into()),
            }
        }
        if let Some(path) = &history {
            let saved = path
                .parent()
                .map_or(Ok(()), std::fs::create_dir_all)
                .map_err(anyhow::Error::from)
                .and_then(|()| Ok(editor.save_history(path)?));
            if let Err(e) = saved {
                eprintln!("warning: history not saved to {}: {e}", path.display());
            }
        }
        Ok(ExitCode::SUCCESS)
    }

    /// A script: every line of stdin, answers on stdout; exit 1 if anything failed, 2 (at once)
    /// if a message could not be delivered at all.
    async fn piped(mut self) -> anyhow::Result<ExitCode> {
        let mut lines = std::io::stdin().lock().lines();
        while let Some(line) = tokio::task::block_in_place(|| lines.next()) {
            let line = line.context("cannot read stdin")?;
            match self.line(&line).await {
                Ok(Next::Read) => {}
                Ok(Next::Quit) => break,
                Err(e) => {
                    eprintln!("error: {e:#}");
                    return Ok(ExitCode::from(2));
                }
            }
        }
        Ok(if self.failed {
            ExitCode::FAILURE
        } else {
            ExitCode::SUCCESS
        })
    }

    /// One line; an error only when a message could not be delivered at all.
    async fn line(&mut self, text: &str) -> anyhow::Result<Next> {
        match command::parse(text) {
            Line::Nothing => {}
            Line::Message(text) => self.message(text).await?,
            Line::Command(Command::Quit) => return Ok(Next::Quit),
            Line::Command(command) => {
                if let Err(e) = self.command(command).await {
                    self.complain(&e);
                }
            }
            Line::Wrong(why) => self.complain(&anyhow!(why)),
        }
        Ok(Next::Read)
    }

    /// Acts one message and shows its answer.
    async fn message(&mut self, text: &str) -> anyhow::Result<()> {
        let mut msg = match Message::parse(text) {
            Ok(msg) => msg,
            Err(e) => {
                let code = if e.too_deep {
                    Code::TooDeep
                } else {
                    Code::InvalidMessage
                };
                self.failed = true;
                let error = ActError::host(code, format!("the message does not parse: {e}"));
                if self.interactive {
                    self.complain(&anyhow!(error.message));
                } else {
                    println!("{}", error.to_seneca_json());
                }
                return Ok(());
            }
        };
        if let Some(req) = &self.version {
            msg.entry(wasmeca::message::VERSION)
                .or_insert_with(|| Value::String(req.clone()));
        }
        let started = std::time::Instant::now();
        let answered = match self.endpoint.send(text, msg, self.trace).await {
            Ok(Some(answered)) => answered,
            Ok(None) => return Ok(()),
            // The broker is there, but no listener serves the message: a failed message like
            // any other, not the end of the session.
            Err(e) => match e.downcast::<NoQueue>() {
                Ok(none) => Answered {
                    answer: Err(ActError::host(Code::ActNotFound, none.to_string())),
                    took: started.elapsed(),
                    host: None,
                    plugin: None,
                    via: format!("AMQP {}", none.exchange),
                },
                Err(e) => return Err(e),
            },
        };
        self.show(&answered)
    }

    /// Prints an answer: pretty with its time (and who gave it, with `.trace`) for a person;
    /// one JSON line for a script (`{"out"|"err": ..., "meta": ...}` with `.trace`).
    fn show(&mut self, answered: &Answered) -> anyhow::Result<()> {
        self.failed |= answered.answer.is_err();
        if !self.interactive {
            let text = answer_text(&answered.answer, false)?;
            if self.trace {
                let key = if answered.answer.is_ok() {
                    "out"
                } else {
                    "err"
                };
                println!("{{\"{key}\":{text},\"meta\":{}}}", meta(answered));
            } else {
                println!("{text}");
            }
            return Ok(());
        }
        if let Err(e) = &answered.answer {
            println!("{}", self.paint("1;31", &format!("✗ {}", e.code)));
        }
        println!("{}", answer_text(&answered.answer, true)?);
        let ms = format!("{:.1} ms", answered.took.as_secs_f64() * 1000.0);
        let mut said = vec![ms];
        if self.trace {
            said.push(answered.plugin.clone().unwrap_or_else(|| "plugin ?".into()));
            if let Some(host) = &answered.host {
                said.push(format!("host {host}"));
            }
            said.push(format!("via {}", answered.via));
        }
        println!("{}", self.paint("2", &format!("({})", said.join(" · "))));
        Ok(())
    }

    /// Carries out a dot command (not `.quit`).
    async fn command(&mut self, command: Command) -> anyhow::Result<()> {
        match command {
            Command::Plugins => {
                let lines = self.refresh().await?.plugin_lines();
                if lines.is_empty() && self.interactive {
                    println!("(no plugins)");
                }
                lines.iter().for_each(|l| println!("{l}"));
            }
            Command::Patterns(glob) => {
                let lines = self.refresh().await?.pattern_lines(glob.as_deref());
                if lines.is_empty() && self.interactive {
                    println!("(no pattern matches {})", glob.as_deref().unwrap_or("*"));
                }
                lines.iter().for_each(|l| println!("{l}"));
            }
            Command::Version(None) => {
                self.version = None;
                self.say("$version unpinned");
            }
            Command::Version(Some(req)) => {
                let mut probe = Map::new();
                probe.insert(wasmeca::message::VERSION.into(), json!(req));
                match Message::new(probe).version_req() {
                    Ok(Some(parsed)) => {
                        self.say(&format!("$version {parsed} on every message"));
                        self.version = Some(req);
                    }
                    Ok(None) => bail!(".version needs a requirement, like 1 or ^1.2"),
                    Err(e) => bail!("{}", e.message),
                }
            }
            Command::Trace => {
                self.trace = !self.trace;
                let on = if self.trace { "on" } else { "off" };
                self.say(&format!("trace {on}"));
            }
            Command::Help => println!("{}", command::HELP),
            Command::Quit => {}
        }
        Ok(())
    }

    /// Takes a fresh listing of what is served.
    async fn refresh(&mut self) -> anyhow::Result<&Served> {
        let listing = match &self.endpoint {
            Endpoint::Http(http) => listing::fetch(&http.url).await?,
            Endpoint::Amqp(amqp) => listing::fetch(&amqp.listing_url).await.with_context(
                || "over AMQP the listing comes from a host's Seneca HTTP transport (--url)",
            )?,
            Endpoint::Local(router) => listing::of_router(router),
        };
        Ok(self.served.insert(Served::from_listing(&listing)))
    }

    /// A confirmation, for a person only: a script's stdout holds answers.
    fn say(&self, text: &str) {
        if self.interactive {
            println!("{}", self.paint("2", text));
        }
    }

    /// A command that failed, or a message not delivered: on stderr, and it fails a script.
    fn complain(&mut self, e: &anyhow::Error) {
        self.failed = true;
        let text = format!("error: {e:#}");
        if self.colour {
            eprintln!("\x1b[31m{text}\x1b[0m");
        } else {
            eprintln!("{text}");
        }
    }

    /// `text` in an ANSI style, when colour is on.
    fn paint(&self, style: &str, text: &str) -> String {
        if self.colour {
            format!("\x1b[{style}m{text}\x1b[0m")
        } else {
            text.to_owned()
        }
    }
}

/// The `meta` of a traced answer in a script: time, plugin, host and way, as far as known.
fn meta(answered: &Answered) -> Value {
    let ms = (answered.took.as_secs_f64() * 10_000.0).round() / 10.0;
    let mut meta = json!({ "ms": ms, "via": answered.via });
    if let Some(plugin) = &answered.plugin {
        meta["plugin"] = json!(plugin);
    }
    if let Some(host) = &answered.host {
        meta["host"] = json!(host);
    }
    meta
}

/// Where the history is kept, given the environment `var`: `$WASMECA_HISTORY` (empty: none),
/// else `$XDG_STATE_HOME/wasmeca/repl_history`, else `~/.local/state/wasmeca/repl_history`
/// (the XDG place for history), else none.
fn history_file(var: impl Fn(&str) -> Option<OsString>) -> Option<PathBuf> {
    let set = |name: &str| var(name).filter(|v| !v.is_empty());
    if let Some(given) = var("WASMECA_HISTORY") {
        return (!given.is_empty()).then(|| given.into());
    }
    let state = set("XDG_STATE_HOME")
        .map(PathBuf::from)
        .or_else(|| set("HOME").map(|home| PathBuf::from(home).join(".local").join("state")))?;
    Some(state.join("wasmeca").join("repl_history"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(vars: &[(&str, &str)]) -> impl Fn(&str) -> Option<OsString> {
        let vars: Vec<(String, String)> = vars
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        move |name| vars.iter().find(|(k, _)| k == name).map(|(_, v)| v.into())
    }

    #[test]
    fn history_lives_in_the_xdg_state_folder_unless_told() {
        let file = |vars: &[(&str, &str)]| history_file(env(vars));
        assert_eq!(
            file(&[("HOME", "/home/a")]),
            Some("/home/a/.local/state/wasmeca/repl_history".into())
        );
        assert_eq!(
            file(&[("HOME", "/home/a"), ("XDG_STATE_HOME", "/s")]),
            Some("/s/wasmeca/repl_history".into())
        );
        assert_eq!(
            file(&[("HOME", "/home/a"), ("WASMECA_HISTORY", "/h")]),
            Some("/h".into())
        );
        assert_eq!(file(&[("HOME", "/home/a"), ("WASMECA_HISTORY", "")]), None);
        assert_eq!(file(&[]), None);
    }

    #[test]
    fn a_traced_answer_says_what_is_known() {
        let answered = Answered {
            answer: Err(ActError::host(Code::ActNotFound, "nope")),
            took: std::time::Duration::from_micros(3_140),
            host: None,
            plugin: Some("salute@2.0.0".into()),
            via: "in-process".into(),
        };
        assert_eq!(
            meta(&answered),
            json!({"ms": 3.1, "via": "in-process", "plugin": "salute@2.0.0"})
        );
    }
}
