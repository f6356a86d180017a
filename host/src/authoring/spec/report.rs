//! What a spec run found, written three ways: a readable report with the differences of each
//! failing call, TAP, and JUnit XML for CI. Pure, no I/O.

use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

use super::Spec;

/// How one call went.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    /// The answer was as expected; `answer` is kept when the spec asked to print it.
    Passed {
        /// The answer, when printed.
        answer: Option<String>,
    },
    /// `run: false`.
    Skipped,
    /// Something differed.
    Failed {
        /// Each difference or problem, one line each (`out.name: expected ..., got ...`).
        problems: Vec<String>,
        /// The whole answer (or error JSON), so the reader sees it all.
        answer: Option<String>,
    },
}

impl Outcome {
    pub(super) fn failed(problems: Vec<String>, answer: Option<String>) -> Self {
        Self::Failed { problems, answer }
    }
}

/// One call's line in the report.
#[derive(Debug, Clone, PartialEq)]
pub struct CallReport {
    /// The call's name, or its place (`#3`).
    pub label: String,
    /// The message acted, as JSON.
    pub message: String,
    /// How long the act took.
    pub time: Duration,
    /// How it went.
    pub outcome: Outcome,
}

/// Everything one spec run found.
#[derive(Debug, Clone, PartialEq)]
pub struct SpecReport {
    /// The spec file.
    pub spec: PathBuf,
    /// The plugins it ran against (`name@version`).
    pub plugins: Vec<String>,
    /// Why nothing ran, when the store could not be seeded or the plugins not loaded.
    pub setup: Option<String>,
    /// The calls, in order.
    pub calls: Vec<CallReport>,
    /// The patterns no call reached (`pattern (plugin@version)`).
    pub missing: Vec<String>,
    /// True when missing patterns do not fail the spec.
    pub allow_missing: bool,
    /// How long the whole run took.
    pub time: Duration,
}

impl SpecReport {
    pub(super) fn new(spec: &Spec) -> Self {
        Self {
            spec: spec.path.clone(),
            plugins: Vec::new(),
            setup: None,
            calls: Vec::new(),
            missing: Vec::new(),
            allow_missing: spec.allow_missing,
            time: Duration::ZERO,
        }
    }

    /// A report for a spec that could not even be read.
    pub fn unreadable(spec: PathBuf, why: String) -> Self {
        Self {
            spec,
            plugins: Vec::new(),
            setup: Some(why),
            calls: Vec::new(),
            missing: Vec::new(),
            allow_missing: false,
            time: Duration::ZERO,
        }
    }

    /// True when everything ran and held.
    pub fn passed(&self) -> bool {
        self.setup.is_none()
            && (self.allow_missing || self.missing.is_empty())
            && self
                .calls
                .iter()
                .all(|c| !matches!(c.outcome, Outcome::Failed { .. }))
    }

    /// How many calls failed.
    pub fn failures(&self) -> usize {
        self.calls
            .iter()
            .filter(|c| matches!(c.outcome, Outcome::Failed { .. }))
            .count()
    }

    /// The missing patterns as one failure text, when they fail the spec.
    fn missing_failure(&self) -> Option<String> {
        (!self.allow_missing && !self.missing.is_empty()).then(|| {
            format!(
                "no call for {} (add calls, or set `allow: {{missing: true}}`)",
                self.missing.join("; ")
            )
        })
    }
}

fn ms(time: Duration) -> String {
    format!("{:.1} ms", time.as_secs_f64() * 1000.0)
}

impl fmt::Display for SpecReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.spec.display())?;
        if !self.plugins.is_empty() {
            write!(f, "  ({})", self.plugins.join(", "))?;
        }
        writeln!(f)?;
        if let Some(setup) = &self.setup {
            writeln!(f, "  FAIL {setup}")?;
        }
        for call in &self.calls {
            match &call.outcome {
                Outcome::Passed { answer } => {
                    writeln!(
                        f,
                        "  ok   {}  {}  ({})",
                        call.label,
                        call.message,
                        ms(call.time)
                    )?;
                    if let Some(answer) = answer {
                        writeln!(f, "         -> {answer}")?;
                    }
                }
                Outcome::Skipped => writeln!(f, "  skip {}  {}", call.label, call.message)?,
                Outcome::Failed { problems, answer } => {
                    writeln!(
                        f,
                        "  FAIL {}  {}  ({})",
                        call.label,
                        call.message,
                        ms(call.time)
                    )?;
                    for problem in problems {
                        writeln!(f, "         {problem}")?;
                    }
                    if let Some(answer) = answer {
                        writeln!(f, "         answer: {}", crate::error::clip(answer))?;
                    }
                }
            }
        }
        if let Some(missing) = self.missing_failure() {
            writeln!(f, "  FAIL {missing}")?;
        } else if !self.missing.is_empty() {
            writeln!(
                f,
                "  note no call for {} (allowed)",
                self.missing.join("; ")
            )?;
        }
        let passed = self
            .calls
            .iter()
            .filter(|c| matches!(c.outcome, Outcome::Passed { .. }))
            .count();
        write!(
            f,
            "  {}: {passed} passed, {} failed, {} calls in {}",
            if self.passed() { "PASS" } else { "FAIL" },
            self.failures(),
            self.calls.len(),
            ms(self.time)
        )
    }
}

/// The reports as TAP version 13: one test per call (and one for a spec's setup or missing
/// patterns when they fail), a failing one with its differences in a YAML block.
pub fn tap(reports: &[SpecReport]) -> String {
    let mut lines = vec!["TAP version 13".to_owned()];
    let mut n = 0usize;
    let mut test = |lines: &mut Vec<String>, ok: bool, name: String, problems: &[String]| {
        n += 1;
        lines.push(format!("{} {n} - {name}", if ok { "ok" } else { "not ok" }));
        if !ok {
            lines.push("  ---".into());
            lines.push("  problems:".into());
            for problem in problems {
                lines.push(format!(
                    "    - {}",
                    serde_json::Value::String(problem.clone())
                ));
            }
            lines.push("  ...".into());
        }
    };
    for report in reports {
        let spec = report.spec.display();
        if let Some(setup) = &report.setup {
            test(
                &mut lines,
                false,
                tap_name(&format!("{spec} setup")),
                std::slice::from_ref(setup),
            );
        }
        for call in &report.calls {
            let name = tap_name(&format!("{spec} {}", call.label));
            match &call.outcome {
                Outcome::Passed { .. } => {
                    test(&mut lines, true, name, &[]);
                }
                Outcome::Skipped => {
                    test(&mut lines, true, format!("{name} # SKIP run: false"), &[]);
                }
                Outcome::Failed { problems, answer } => {
                    let mut all = problems.clone();
                    all.extend(answer.iter().map(|a| format!("answer: {a}")));
                    test(&mut lines, false, name, &all);
                }
            }
        }
        if let Some(missing) = report.missing_failure() {
            test(
                &mut lines,
                false,
                tap_name(&format!("{spec} every pattern has a call")),
                &[missing],
            );
        }
    }
    let count = test_count(&lines);
    lines.insert(1, format!("1..{count}"));
    lines.join("\n") + "\n"
}

/// A test's name as TAP reads it: `#` starts a directive there, so it is escaped.
fn tap_name(name: &str) -> String {
    name.replace('#', "\\#")
}

/// How many test lines a TAP text has.
fn test_count(lines: &[String]) -> usize {
    lines
        .iter()
        .filter(|l| l.starts_with("ok ") || l.starts_with("not ok "))
        .count()
}

/// The reports as JUnit XML (one test suite per spec, one test case per call), the format CI
/// systems read test results in.
pub fn junit(reports: &[SpecReport]) -> String {
    use quick_junit::{NonSuccessKind, Report, TestCase, TestCaseStatus, TestSuite};
    let mut all = Report::new("wasmeca test");
    for report in reports {
        let spec = report.spec.display().to_string();
        let mut suite = TestSuite::new(spec.clone());
        suite.set_time(report.time);
        let failure = |message: &str, detail: String| {
            let mut status = TestCaseStatus::non_success(NonSuccessKind::Failure);
            status.set_message(message.to_owned());
            status.set_description(detail);
            status
        };
        if let Some(setup) = &report.setup {
            suite.add_test_case(TestCase::new("setup", failure(setup, setup.clone())));
        }
        for call in &report.calls {
            let status = match &call.outcome {
                Outcome::Passed { .. } => TestCaseStatus::success(),
                Outcome::Skipped => TestCaseStatus::skipped(),
                Outcome::Failed { problems, answer } => {
                    let mut detail = problems.join("\n");
                    if let Some(answer) = answer {
                        detail.push_str(&format!("\nanswer: {answer}"));
                    }
                    failure(problems.first().map_or("failed", String::as_str), detail)
                }
            };
            let mut case = TestCase::new(call.label.clone(), status);
            case.set_classname(spec.clone());
            case.set_time(call.time);
            suite.add_test_case(case);
        }
        if let Some(missing) = report.missing_failure() {
            suite.add_test_case(TestCase::new(
                "every pattern has a call",
                failure(&missing, missing.clone()),
            ));
        }
        all.add_test_suite(suite);
    }
    all.to_string().unwrap_or_else(|e| format!("<!-- {e} -->"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn report() -> SpecReport {
        SpecReport {
            spec: PathBuf::from("user.spec.jsonic"),
            plugins: vec!["user@1.0.0".into()],
            setup: None,
            calls: vec![
                CallReport {
                    label: "list".into(),
                    message: r#"{"if":"list","module":"user"}"#.into(),
                    time: Duration::from_micros(1500),
                    outcome: Outcome::Passed { answer: None },
                },
                CallReport {
                    label: "#1".into(),
                    message: r#"{"id":2,"if":"load","module":"user"}"#.into(),
                    time: Duration::from_micros(800),
                    outcome: Outcome::failed(
                        vec![r#"out.name: expected "Bob" (a string), got "乙" (a string)"#.into()],
                        Some(r#"{"id":2,"name":"乙"}"#.into()),
                    ),
                },
                CallReport {
                    label: "#2".into(),
                    message: "{}".into(),
                    time: Duration::ZERO,
                    outcome: Outcome::Skipped,
                },
            ],
            missing: vec!["module:user,if:delete (user@1.0.0)".into()],
            allow_missing: false,
            time: Duration::from_millis(12),
        }
    }

    #[test]
    fn the_text_report_names_the_failing_call_and_its_key() {
        let text = report().to_string();
        assert!(
            text.starts_with("user.spec.jsonic  (user@1.0.0)\n"),
            "{text}"
        );
        assert!(
            text.contains("  ok   list  {\"if\":\"list\",\"module\":\"user\"}  (1.5 ms)\n"),
            "{text}"
        );
        assert!(
            text.contains("  FAIL #1  {\"id\":2,\"if\":\"load\",\"module\":\"user\"}  (0.8 ms)\n         out.name: expected \"Bob\" (a string), got \"乙\" (a string)\n         answer: {\"id\":2,\"name\":\"乙\"}\n"),
            "{text}"
        );
        assert!(
            text.contains("  FAIL no call for module:user,if:delete (user@1.0.0)"),
            "{text}"
        );
        assert!(
            text.ends_with("  FAIL: 1 passed, 1 failed, 3 calls in 12.0 ms"),
            "{text}"
        );
        assert!(!report().passed());
    }

    #[test]
    fn missing_patterns_fail_unless_allowed() {
        let mut r = report();
        r.calls.remove(1);
        assert!(!r.passed());
        r.allow_missing = true;
        assert!(r.passed());
        assert!(
            r.to_string()
                .contains("note no call for module:user,if:delete")
        );
    }

    #[test]
    fn tap_counts_every_test_and_explains_the_failures() {
        let text = tap(&[report()]);
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(
            lines[..3],
            ["TAP version 13", "1..4", "ok 1 - user.spec.jsonic list"]
        );
        assert_eq!(lines[3], "not ok 2 - user.spec.jsonic \\#1");
        assert!(
            text.contains(
                "    - \"out.name: expected \\\"Bob\\\" (a string), got \\\"乙\\\" (a string)\""
            ),
            "{text}"
        );
        assert!(
            text.contains("ok 3 - user.spec.jsonic \\#2 # SKIP run: false"),
            "{text}"
        );
        assert!(
            text.contains("not ok 4 - user.spec.jsonic every pattern has a call"),
            "{text}"
        );
    }

    #[test]
    fn junit_has_a_suite_per_spec_and_a_case_per_call() {
        let xml = junit(&[report()]);
        assert!(
            xml.contains("<testsuite name=\"user.spec.jsonic\" tests=\"4\""),
            "{xml}"
        );
        assert!(xml.contains("failures=\"2\""), "{xml}");
        assert!(
            xml.contains("<testcase name=\"list\" classname=\"user.spec.jsonic\""),
            "{xml}"
        );
        assert!(xml.contains("out.name: expected &quot;Bob&quot;"), "{xml}");
        assert!(xml.contains("<skipped"), "{xml}");
    }
}
