//! Builds the seed plugins (`plugins/`) and the test fixtures (`tests/plugins/`) for
//! wasm32-wasip2, installing the target with rustup when it is missing, and tells the harness
//! where the `.wasm` files are.

use std::path::{Path, PathBuf};
use std::process::Command;

/// Environment a build script inherits that must not leak into the nested wasm build.
const SCRUB: &[&str] = &[
    "CARGO_ENCODED_RUSTFLAGS",
    "RUSTFLAGS",
    "CARGO_BUILD_TARGET",
    "CARGO_TARGET_DIR",
    "CARGO_MAKEFLAGS",
    "MAKEFLAGS",
    "MFLAGS",
    "RUSTC_WORKSPACE_WRAPPER",
    "CARGO_PRIMARY_PACKAGE",
    "TARGET",
    "HOST",
    "OUT_DIR",
    "PROFILE",
    "OPT_LEVEL",
    "DEBUG",
];

fn main() {
    let manifest =
        PathBuf::from(std::env::var("CARGO_MANIFEST_DIR").expect("cargo sets CARGO_MANIFEST_DIR"));
    let root = manifest
        .parent()
        .expect("tests/ lives in the repository root")
        .to_owned();
    for watched in ["plugins", "tests/plugins", "sdk", "wit"] {
        println!("cargo:rerun-if-changed={}", root.join(watched).display());
    }
    let target_dir = root.join("target").join("plugins");
    ensure_wasm_target();
    for workspace in ["plugins", "tests/plugins"] {
        build(&root.join(workspace).join("Cargo.toml"), &target_dir);
    }
    let out = target_dir.join("wasm32-wasip2").join("release");
    println!("cargo:rustc-env=WASMECA_TEST_PLUGIN_DIR={}", out.display());
}

fn cargo() -> Command {
    let mut cmd = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()));
    for var in SCRUB {
        cmd.env_remove(var);
    }
    cmd
}

/// Installs wasm32-wasip2 with rustup when the sysroot lacks it.
fn ensure_wasm_target() {
    let rustc = std::env::var("RUSTC").unwrap_or_else(|_| "rustc".into());
    let sysroot = Command::new(&rustc)
        .args(["--print", "sysroot"])
        .output()
        .expect("rustc runs");
    let sysroot = String::from_utf8_lossy(&sysroot.stdout).trim().to_owned();
    if Path::new(&sysroot)
        .join("lib/rustlib/wasm32-wasip2")
        .exists()
    {
        return;
    }
    println!("cargo:warning=installing the wasm32-wasip2 target with rustup");
    let status = Command::new("rustup")
        .args(["target", "add", "wasm32-wasip2"])
        .status();
    match status {
        Ok(s) if s.success() => {}
        other => panic!(
            "the wasm32-wasip2 target is missing and `rustup target add wasm32-wasip2` failed ({other:?}); \
             install it and run the tests again"
        ),
    }
}

fn build(manifest: &Path, target_dir: &Path) {
    let status = cargo()
        .args([
            "build",
            "--release",
            "--target",
            "wasm32-wasip2",
            "--manifest-path",
        ])
        .arg(manifest)
        .arg("--target-dir")
        .arg(target_dir)
        .status()
        .expect("cargo runs");
    assert!(
        status.success(),
        "building the plugins in {} failed",
        manifest.display()
    );
}
