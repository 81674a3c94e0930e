//! Records the git commit the binary is built from (and whether its code
//! differed from that commit) as compile-time constants, so `result.json`'s
//! provenance names the build, not the checkout a moved binary happens to
//! run beside, and needs no `git` at run time.

use std::path::{Path, PathBuf};
use std::process::Command;

fn git(root: &Path, args: &[&str]) -> Option<String> {
    Command::new("git")
        .arg("-C")
        .arg(root)
        .args(args)
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
}

fn main() {
    let manifest = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR").expect("set by cargo"));
    let root = manifest.join("../..");
    // The code whose state is recorded: rerun when any of it changes.
    const CODE: [&str; 5] = [
        "crates",
        "xtask",
        "Cargo.toml",
        "Cargo.lock",
        "rust-toolchain.toml",
    ];
    for path in CODE {
        println!("cargo:rerun-if-changed={}", root.join(path).display());
    }
    let commit = git(&root, &["rev-parse", "HEAD"]);
    if commit.is_some() {
        // Commits and checkouts move HEAD or the branch it points to.
        for what in ["HEAD", "index", "packed-refs"] {
            // Only files that exist: cargo takes a missing one as changed
            // on every build (a checkout without packed-refs rebuilt muq
            // every time).
            if let Some(p) = git(&root, &["rev-parse", "--git-path", what])
                .map(|p| root.join(p))
                .filter(|p| p.exists())
            {
                println!("cargo:rerun-if-changed={}", p.display());
            }
        }
        if let Some(branch) = git(&root, &["symbolic-ref", "-q", "HEAD"])
            && let Some(p) = git(&root, &["rev-parse", "--git-path", &branch])
                .map(|p| root.join(p))
                .filter(|p| p.exists())
        {
            println!("cargo:rerun-if-changed={}", p.display());
        }
    }
    let mut status = vec!["status", "--porcelain", "--untracked-files=no", "--"];
    status.extend(CODE);
    let dirty = commit
        .as_ref()
        .and_then(|_| git(&root, &status))
        .map(|s| !s.is_empty());
    println!(
        "cargo:rustc-env=MUQ_GIT_COMMIT={}",
        commit.unwrap_or_default()
    );
    println!(
        "cargo:rustc-env=MUQ_GIT_DIRTY={}",
        dirty.map_or("", |d| if d { "true" } else { "false" })
    );
}
