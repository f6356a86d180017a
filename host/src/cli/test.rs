//! `wasmeca test`: every message spec given (or found) run in-process, one fresh host each,
//! reported as text, TAP or JUnit; and `wasmeca check`: the conformance check of a built
//! plugin, then the spec beside it when it has one.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use wasmeca::authoring::spec::{self, Spec, SpecReport};

use wasmeca::authoring;

use crate::{CheckArgs, TestArgs, config_for};

/// How `wasmeca test` writes its results.
#[derive(Clone, Copy, clap::ValueEnum)]
pub enum Format {
    /// A readable report with the differences of each failing call.
    Text,
    /// TAP version 13.
    Tap,
    /// JUnit XML.
    Junit,
}

/// Runs `wasmeca test`.
pub async fn test(args: TestArgs) -> anyhow::Result<ExitCode> {
    let roots = if args.specs.is_empty() {
        vec![PathBuf::from(".")]
    } else {
        args.specs.clone()
    };
    let mut files = Vec::new();
    for root in &roots {
        files.extend(spec::find_specs(root)?);
    }
    if files.is_empty() {
        anyhow::bail!(
            "no specs under {}: a spec is a file named NAME.spec.jsonic or NAME.spec.json",
            roots
                .iter()
                .map(|r| r.display().to_string())
                .collect::<Vec<_>>()
                .join(", ")
        );
    }
    let mut reports = Vec::new();
    let mut used = HashSet::new();
    for file in files {
        let (report, swapped) = run_file(&file, &args).await;
        if matches!(args.format, Format::Text) {
            say(format_args!("{report}\n"))?;
        }
        used.extend(swapped);
        reports.push(report);
    }
    // A build that took no spec's plugin was not tested at all: say so, and fail.
    let unused: Vec<_> = args.plugins.iter().filter(|p| !used.contains(*p)).collect();
    for build in &unused {
        eprintln!(
            "--plugin {}: no spec here runs a plugin file named {}, so it was not tested",
            build.display(),
            build.file_name().map_or_else(
                || build.display().to_string(),
                |n| n.to_string_lossy().into()
            )
        );
    }
    match args.format {
        Format::Text if reports.len() > 1 => {
            let failed = reports.iter().filter(|r| !r.passed()).count();
            say(format_args!(
                "{} specs: {} passed, {failed} failed\n",
                reports.len(),
                reports.len() - failed
            ))?;
        }
        Format::Text => {}
        Format::Tap => say(format_args!("{}", spec::tap(&reports)))?,
        Format::Junit => say(format_args!("{}\n", spec::junit(&reports)))?,
    }
    Ok(
        if unused.is_empty() && reports.iter().all(SpecReport::passed) {
            ExitCode::SUCCESS
        } else {
            ExitCode::FAILURE
        },
    )
}

/// Runs `wasmeca check`: the contract, then the spec beside the plugin against this file.
pub async fn check(args: CheckArgs) -> anyhow::Result<ExitCode> {
    let config = config_for(std::slice::from_ref(&args.file), &args.host)?;
    let router = wasmeca::router(&config)?;
    say(format_args!("wasmeca check {}\n", args.file.display()))?;
    let report = authoring::check(&args.file, router).await;
    say(format_args!("{report}\n"))?;
    let spec_passed = match spec::spec_beside(&args.file) {
        Some(path) => {
            say(format_args!("\nwasmeca test {}\n", path.display()))?;
            let ran = match Spec::read(&path) {
                Ok(spec) => {
                    let build = [args.file.clone()];
                    run_spec(&spec, &build, true, |c| {
                        c.cache_dir = config.cache_dir.clone();
                        c.no_cache = config.no_cache;
                        c.limits = config.limits.clone();
                    })
                    .await
                    .0
                }
                Err(e) => SpecReport::unreadable(path, e.to_string()),
            };
            say(format_args!("{ran}\n"))?;
            ran.passed()
        }
        None => true,
    };
    Ok(if report.passed() && spec_passed {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

/// Writes to stdout, failing (instead of panicking, as `println!` does) when the reader has
/// gone, as `wasmeca test | head` does.
fn say(text: std::fmt::Arguments<'_>) -> std::io::Result<()> {
    use std::io::Write as _;
    let mut out = std::io::stdout().lock();
    out.write_fmt(text)?;
    out.flush()
}

/// Reads and runs one spec file; a spec that cannot be read or started is a failed report.
/// Answers the `--plugin` builds it ran too.
async fn run_file(file: &Path, args: &TestArgs) -> (SpecReport, Vec<PathBuf>) {
    let mut spec = match Spec::read(file) {
        Ok(spec) => spec,
        Err(e) => {
            return (
                SpecReport::unreadable(file.to_owned(), e.to_string()),
                Vec::new(),
            );
        }
    };
    spec.allow_missing |= args.allow_missing;
    spec.print |= args.print;
    run_spec(&spec, &args.plugins, false, |config| {
        args.engine.apply(config)
    })
    .await
}

/// Runs `spec` in a fresh in-process host, after `tweak` has set the command line's host
/// options on its configuration. `builds` take the place of the spec's plugins of the same
/// file name; with `alone`, a build that replaces none is run by itself instead. Answers the
/// report and the builds that ran.
pub async fn run_spec(
    spec: &Spec,
    builds: &[PathBuf],
    alone: bool,
    tweak: impl FnOnce(&mut wasmeca::Config),
) -> (SpecReport, Vec<PathBuf>) {
    let unreadable = |why: String| (SpecReport::unreadable(spec.path.clone(), why), Vec::new());
    let mut config = match spec.config() {
        Ok(config) => config,
        Err(e) => return unreadable(e.to_string()),
    };
    tweak(&mut config);
    // A spec counts on its plugins' state between steps: their instances must not move onto
    // optimised code midway, as quick start's would.
    config.no_quick_start = true;
    let mut sources = match config.plugin_sources() {
        Ok(sources) => sources,
        Err(e) => return unreadable(format!("its plugins: {e}")),
    };
    let mut ran: Vec<PathBuf> = spec::swap_in(&mut sources, builds)
        .into_iter()
        .cloned()
        .collect();
    if ran.is_empty() && alone {
        sources = builds
            .iter()
            .map(wasmeca::plugins::PluginSource::new)
            .collect();
        ran = builds.to_vec();
    }
    let router = match wasmeca::router(&config) {
        Ok(router) => router,
        Err(e) => return unreadable(format!("no host: {e}")),
    };
    (spec::run(spec, router, &sources).await, ran)
}
