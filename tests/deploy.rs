//! The deployment recipes hold: `deploy/compose.yaml` passes `docker-compose config` and the
//! Kubernetes manifests in `deploy/k8s/` pass the Kubernetes schemas (`kubernetes-validate
//! --strict`), while a broken copy of each fails; the configurations the image and the
//! ConfigMap ship parse as a wasmeca.toml. The validators are installed on first use (Debian's
//! docker-compose, PyPI's kubernetes-validate). Nothing here runs a container: see README
//! "Deploy" for what was run and what was only validated.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::Once;

use wasmeca_tests::repo;

/// Runs `program args` and answers its output (failing the test if it cannot start).
fn run(program: &str, args: &[&str]) -> Output {
    Command::new(program)
        .args(args)
        .env("DEBIAN_FRONTEND", "noninteractive")
        .output()
        .unwrap_or_else(|e| panic!("{program} {args:?}: {e}"))
}

fn works(program: &str, args: &[&str]) -> bool {
    Command::new(program)
        .args(args)
        .output()
        .is_ok_and(|o| o.status.success())
}

/// Installs the validators once per test run, when the machine lacks them.
fn tools() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        if !works("docker-compose", &["--version"]) {
            // One apt at a time: deploy/image-test.sh (run by a test beside this one) installs
            // its tools under the same lock, and dpkg refuses a second apt-get outright.
            std::fs::create_dir_all(repo().join("target")).expect("the target folder");
            let lock = std::fs::File::create(repo().join("target").join("apt.lock"))
                .expect("the apt lock file");
            lock.lock().expect("the apt lock");
            let apt = |args: &[&str]| {
                let mut all = vec!["-o", "DPkg::Lock::Timeout=600"];
                all.extend_from_slice(args);
                run("apt-get", &all)
            };
            let mut out = apt(&["install", "-y", "-q", "docker-compose"]);
            if !out.status.success() {
                apt(&["update", "-q"]);
                out = apt(&["install", "-y", "-q", "docker-compose"]);
            }
            assert!(out.status.success(), "installing docker-compose: {out:?}");
        }
        if !works("python3", &["-m", "kubernetes_validate", "--version"]) {
            let out = run(
                "python3",
                &["-m", "pip", "install", "-q", "kubernetes-validate"],
            );
            assert!(
                out.status.success(),
                "installing kubernetes-validate: {out:?}"
            );
        }
    });
}

/// A copy of `file` with `from` replaced by `to`, in a scratch folder.
fn broken(file: &Path, from: &str, to: &str) -> PathBuf {
    let text = std::fs::read_to_string(file).expect("the recipe");
    assert!(text.contains(from), "{} has no {from:?}", file.display());
    let dir = std::env::temp_dir().join(format!("wasmeca-deploy-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("scratch folder");
    let copy = dir.join(file.file_name().expect("a file name"));
    std::fs::write(&copy, text.replacen(from, to, 1)).expect("write the copy");
    copy
}

fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

#[test]
fn the_compose_file_is_valid_and_a_broken_one_is_not() {
    tools();
    let compose = repo().join("deploy/compose.yaml");
    let path = compose.to_string_lossy();
    let out = run("docker-compose", &["-f", &path, "config", "-q"]);
    assert!(out.status.success(), "{}", text(&out));
    let rendered = text(&run("docker-compose", &["-f", &path, "config"]));
    for service in ["rabbitmq", "consul", "postgres", "redis", "wasmeca"] {
        assert!(rendered.contains(&format!("  {service}:")), "{rendered}");
    }
    assert!(
        rendered.contains("condition: service_healthy"),
        "{rendered}"
    );

    let copy = broken(
        &compose,
        "      rabbitmq:\n        condition",
        "      rabbit:\n        condition",
    );
    let out = run(
        "docker-compose",
        &["-f", &copy.to_string_lossy(), "config", "-q"],
    );
    assert!(!out.status.success(), "a dependency on no service passed");
    assert!(text(&out).contains("rabbit"), "{}", text(&out));
}

#[test]
fn the_kubernetes_manifests_validate_and_a_broken_one_does_not() {
    tools();
    let dir = repo().join("deploy/k8s");
    let mut files: Vec<String> = std::fs::read_dir(&dir)
        .expect("deploy/k8s")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "yaml"))
        .map(|p| p.to_string_lossy().into_owned())
        .collect();
    files.sort();
    let kinds: Vec<String> = files
        .iter()
        .filter_map(|f| std::fs::read_to_string(f).ok())
        .filter_map(|t| {
            t.lines()
                .find_map(|l| l.strip_prefix("kind: ").map(str::to_owned))
        })
        .collect();
    for kind in [
        "ConfigMap",
        "Deployment",
        "HorizontalPodAutoscaler",
        "PodDisruptionBudget",
        "Service",
    ] {
        assert!(kinds.iter().any(|k| k == kind), "no {kind} in {kinds:?}");
    }
    let mut args = vec!["-m", "kubernetes_validate", "--strict"];
    args.extend(files.iter().map(String::as_str));
    let out = run("python3", &args);
    assert!(out.status.success(), "{}", text(&out));

    let copy = broken(
        &dir.join("deployment.yaml"),
        "  replicas: 3",
        "  replicas: three",
    );
    let out = run(
        "python3",
        &[
            "-m",
            "kubernetes_validate",
            "--strict",
            &copy.to_string_lossy(),
        ],
    );
    assert!(!out.status.success(), "replicas: three passed");
    assert!(text(&out).contains("replicas"), "{}", text(&out));
}

#[test]
fn the_configurations_the_image_and_the_config_map_ship_parse() {
    let image = std::fs::read_to_string(repo().join("deploy/image/wasmeca.toml")).expect("file");
    let config = wasmeca::Config::from_toml(&image).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(config.plugin[0].path, Path::new("/plugins"));
    let map = std::fs::read_to_string(repo().join("deploy/k8s/configmap.yaml")).expect("file");
    let toml: String = map
        .lines()
        .skip_while(|l| !l.starts_with("  wasmeca.toml: |"))
        .skip(1)
        .take_while(|l| l.is_empty() || l.starts_with("    "))
        .map(|l| format!("{}\n", l.strip_prefix("    ").unwrap_or(l)))
        .collect();
    let config = wasmeca::Config::from_toml(&toml).unwrap_or_else(|e| panic!("{e}\n{toml}"));
    assert_eq!(config.events.group.as_deref(), Some("wasmeca"));
    assert_eq!(config.limits.drain_delay_ms, Some(5000));
}

/// The image builds and runs (`deploy/image-test.sh`, with the binary and plugins this test
/// run built already): the seeds are precompiled in the image and served from it, the demo
/// answers, the process is not root, data lands in /data, the public CAs are there, and
/// SIGTERM drains and exits 0.
#[test]
fn the_image_builds_runs_as_non_root_keeps_data_and_drains() {
    let plugins = wasmeca_tests::plugin("salute");
    let plugins = plugins.parent().expect("the plugin folder");
    let out = Command::new(repo().join("deploy/image-test.sh"))
        .env("WASMECA_BIN", env!("CARGO_BIN_EXE_wasmeca"))
        .env("WASMECA_PLUGINS_DIR", plugins)
        .output()
        .expect("deploy/image-test.sh runs");
    let said = text(&out);
    assert!(out.status.success(), "{said}");
    for step in [
        "runs as uid 10001",
        "the seeds are precompiled in the image",
        "the image trusts the public CAs",
        "the demo answers",
        "serve loaded the image's precompiled seeds",
        "data lands in /data",
        "SIGTERM drained and exited 0",
    ] {
        assert!(said.contains(step), "no {step:?} in {said}");
    }
}
