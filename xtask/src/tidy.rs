//! Repository policy as ordinary tests (`cargo test -p xtask`): what review
//! would otherwise have to remember.
//!
//! - no test is switched off with an ignore attribute;
//! - every workspace crate takes the workspace's lints;
//! - every relative link in the README and `docs/` points at a file or
//!   folder that exists, so the docs cannot silently go stale when a file
//!   moves.

use std::path::{Path, PathBuf};

use crate::project_root;

/// Every file below `dir` whose name ends in `ext`, skipping build output
/// and git's folder.
fn files_with(dir: &Path, ext: &str, out: &mut Vec<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    let mut entries: Vec<_> = entries.flatten().map(|e| e.path()).collect();
    entries.sort();
    for path in entries {
        let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
        if path.is_dir() {
            if !matches!(name, "target" | ".git") {
                files_with(&path, ext, out);
            }
        } else if name.ends_with(ext) {
            out.push(path);
        }
    }
}

/// The relative link targets of a Markdown text: `[text](target)` with the
/// target neither a URL nor an in-page anchor, its `#fragment` removed.
fn relative_links(markdown: &str) -> Vec<String> {
    let mut links = Vec::new();
    let mut rest = markdown;
    while let Some(i) = rest.find("](") {
        rest = &rest[i + 2..];
        let Some(end) = rest.find(')') else { break };
        let target = rest[..end].split('#').next().unwrap_or("").trim();
        let external = target.contains("://") || target.starts_with("mailto:");
        if !target.is_empty() && !external && !target.contains(' ') {
            links.push(target.to_string());
        }
        rest = &rest[end..];
    }
    links
}

#[test]
fn no_test_is_ignored() {
    let root = project_root();
    let mut files = Vec::new();
    files_with(&root.join("crates"), ".rs", &mut files);
    files_with(&root.join("xtask"), ".rs", &mut files);
    // Spelled in two pieces so this file does not match itself.
    let attribute = ["#[", "ignore"].concat();
    let offenders: Vec<String> = files
        .iter()
        .filter(|f| {
            std::fs::read_to_string(f).is_ok_and(|text| {
                text.lines()
                    .any(|l| l.trim_start().starts_with(attribute.as_str()))
            })
        })
        .map(|f| f.display().to_string())
        .collect();
    assert!(
        offenders.is_empty(),
        "tests switched off with an ignore attribute (make them run, or skip with a \
         printed reason): {offenders:?}"
    );
}

#[test]
fn every_workspace_crate_takes_the_workspace_lints() {
    let root = project_root();
    let mut manifests = vec![root.join("xtask/Cargo.toml")];
    for entry in std::fs::read_dir(root.join("crates")).unwrap().flatten() {
        let manifest = entry.path().join("Cargo.toml");
        // crates/data-compat is outside the workspace (see its manifest).
        if manifest.is_file() && !entry.path().ends_with("data-compat") {
            manifests.push(manifest);
        }
    }
    assert!(manifests.len() >= 6, "found only {manifests:?}");
    for m in manifests {
        let text = std::fs::read_to_string(&m).unwrap();
        assert!(
            text.contains("[lints]\nworkspace = true"),
            "{} lacks `[lints] workspace = true`: add it so the workspace's lints apply",
            m.display()
        );
    }
}

#[test]
fn relative_links_in_the_docs_resolve() {
    let root = project_root();
    let mut docs = vec![root.join("README.md")];
    files_with(&root.join("docs"), ".md", &mut docs);
    files_with(&root.join("crates"), "README.md", &mut docs);
    assert!(docs.len() >= 5, "found only {docs:?}");
    let mut broken = Vec::new();
    for doc in &docs {
        let text = std::fs::read_to_string(doc).unwrap();
        let dir = doc.parent().unwrap();
        for link in relative_links(&text) {
            if !dir.join(&link).exists() {
                broken.push(format!("{} → {link}", doc.display()));
            }
        }
    }
    assert!(
        broken.is_empty(),
        "links to files that do not exist (fix the link or restore the file): {broken:#?}"
    );
}

#[test]
fn link_extraction() {
    let md = "See [a](docs/a.md#x), [b](https://e.org/b), [c](#top), ![d](fig/d.png) \
              and [e](../e.md).";
    assert_eq!(
        relative_links(md),
        ["docs/a.md", "fig/d.png", "../e.md"].map(String::from)
    );
}
