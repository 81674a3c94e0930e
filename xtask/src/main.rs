//! `cargo xtask`: the user's entry points that are not the `muq` binary
//! itself — fetching CIFAR-10 and running whole sweeps.
//!
//! Few dependencies, no candle: `cargo xtask --help` compiles in seconds.
//! `sweep` builds `muq` in release and hands over to `muq sweep`.

#![deny(missing_docs)]

use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};

use anyhow::{Context as _, bail};
use clap::{Parser, Subcommand};

// The data-directory resolver muq and the tests use, compiled in (the
// source of truth is muq-data's; xtask does not depend on candle).
#[path = "../../crates/data/src/locate.rs"]
mod locate;
#[cfg(test)]
mod tidy;

/// The official archive and its published MD5
/// (<https://www.cs.toronto.edu/~kriz/cifar.html>).
const CIFAR_URL: &str = "https://www.cs.toronto.edu/~kriz/cifar-10-binary.tar.gz";
const CIFAR_MD5: &str = "c32a1d4ab5d03f1284b67883e8d87530";
/// Files of the binary layout and their sizes (10,000 records of 3,073 bytes).
const LAYOUT: [(&str, u64); 6] = [
    ("data_batch_1.bin", 30_730_000),
    ("data_batch_2.bin", 30_730_000),
    ("data_batch_3.bin", 30_730_000),
    ("data_batch_4.bin", 30_730_000),
    ("data_batch_5.bin", 30_730_000),
    ("test_batch.bin", 30_730_000),
];
const META: &str = "batches.meta.txt";

/// Developer and user chores for muq.
#[derive(Debug, Parser)]
#[command(name = "xtask", bin_name = "cargo xtask", about)]
struct Cli {
    #[command(subcommand)]
    command: Task,
}

#[derive(Debug, Subcommand)]
enum Task {
    /// Fetch the official cifar-10-binary.tar.gz, verify its checksum and
    /// unpack it; does nothing when a complete copy is already there.
    Download {
        /// Where the binary layout goes.
        #[arg(long, default_value = "data/cifar10")]
        dir: PathBuf,
    },
    /// Build muq in release and run a whole study (`muq sweep`), then its report.
    Sweep {
        /// paper | original | extended | benchmark | quick.
        #[arg(long, default_value = "paper")]
        preset: String,
        /// CIFAR-10 directory (default: $CIFAR10_DIR, else data/cifar10, downloaded if missing).
        #[arg(long)]
        data_dir: Option<PathBuf>,
        /// Results directory (default: `results/<preset>`).
        #[arg(long)]
        out: Option<PathBuf>,
        /// cpu, cuda or cuda:N (cuda builds muq with --features cuda).
        #[arg(long, default_value = "cpu")]
        device: String,
        /// Run only the I-th of N disjoint slices of the grid (0-based), e.g. 0/4.
        #[arg(long, value_name = "I/N")]
        shard: Option<String>,
        /// Write a Slurm array script (one task per run) instead of running.
        #[arg(long)]
        slurm: bool,
        /// Extra arguments passed to `muq sweep` (after --).
        #[arg(last = true)]
        rest: Vec<String>,
    },
}

fn project_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("xtask lives one level below the root")
        .to_path_buf()
}

/// Whether `dir` holds a complete binary layout (every file present at its
/// full size). Whether it is the official archive's is [`official_copy`].
fn layout_complete(dir: &Path) -> bool {
    LAYOUT
        .iter()
        .all(|(name, size)| std::fs::metadata(dir.join(name)).is_ok_and(|m| m.len() == *size))
        && dir.join(META).is_file()
}

/// The official archive's SHA-1 of each batch file: the list muq-data
/// checks too (one file, read by both).
const OFFICIAL_SHA1SUMS: &str = include_str!("../../crates/data/cifar10-official.sha1");

/// The batch files of `dir` that differ from the official archive's
/// (empty: an official copy).
fn official_copy(dir: &Path) -> anyhow::Result<Vec<&'static str>> {
    use sha1::{Digest as _, Sha1};
    let mut differ = Vec::new();
    for line in OFFICIAL_SHA1SUMS.lines() {
        let Some((digest, name)) = line.split_once("  ") else {
            continue;
        };
        let path = dir.join(name);
        let bytes = std::fs::read(&path).with_context(|| format!("reading {}", path.display()))?;
        let got = format!("{:x}", Sha1::digest(&bytes));
        if got != digest {
            differ.push(name);
        }
    }
    Ok(differ)
}

/// Scratch folders of earlier downloads that were interrupted (their
/// process is gone) in `parent`: `.cifar10-download-<pid>`, made by
/// [`download`] and by nothing else.
fn stale_scratch(parent: &Path) -> Vec<PathBuf> {
    let Ok(entries) = std::fs::read_dir(parent) else {
        return Vec::new();
    };
    entries
        .filter_map(Result::ok)
        .filter_map(|e| {
            let name = e.file_name().into_string().ok()?;
            let pid: u32 = name.strip_prefix(SCRATCH_PREFIX)?.parse().ok()?;
            let alive = pid == std::process::id() || Path::new(&format!("/proc/{pid}")).exists();
            (!alive && e.path().is_dir()).then(|| e.path())
        })
        .collect()
}

const SCRATCH_PREFIX: &str = ".cifar10-download-";

/// Refuses a destination that exists and is not an empty folder (a folder
/// that held a complete layout was dealt with before): the download never
/// replaces or deletes a file it did not create.
fn check_destination(dir: &Path) -> anyhow::Result<()> {
    if !dir.exists() {
        return Ok(());
    }
    let empty = dir.is_dir()
        && std::fs::read_dir(dir)
            .with_context(|| format!("reading {}", dir.display()))?
            .next()
            .is_none();
    if !empty {
        bail!(
            "{} exists and is not an empty folder, and it does not hold a complete CIFAR-10 \
             layout; nothing in it was changed. Pass --dir a new or empty folder (e.g. \
             --dir {}), or move its contents away",
            dir.display(),
            dir.join("cifar10").display()
        );
    }
    Ok(())
}

/// Moves a complete unpacked layout into `dir` (absent or an empty folder,
/// see [`check_destination`]).
fn install(unpacked: &Path, dir: &Path) -> anyhow::Result<()> {
    check_destination(dir)?;
    if dir.exists() {
        std::fs::remove_dir(dir).with_context(|| format!("replacing empty {}", dir.display()))?;
    }
    std::fs::rename(unpacked, dir)
        .with_context(|| format!("moving the dataset into {}", dir.display()))
}

fn how_to_get_it(dir: &Path) -> String {
    format!(
        "to proceed without a download, either\n  \
         - download {CIFAR_URL} yourself (MD5 {CIFAR_MD5}), unpack it and copy the files of \
         cifar-10-batches-bin/ into {dir}, or\n  \
         - point muq at an existing copy in the binary layout: --data-dir DIR, or set CIFAR10_DIR=DIR",
        dir = dir.display()
    )
}

fn download(dir: &Path) -> anyhow::Result<()> {
    if layout_complete(dir) {
        let differ = official_copy(dir)?;
        if differ.is_empty() {
            println!(
                "CIFAR-10 already present in {}: nothing to do",
                dir.display()
            );
        } else {
            println!(
                "a complete CIFAR-10 layout is already in {}, but {} of its files differ from \
                 the official archive ({}): a re-encoded or converted copy, which muq reads; \
                 nothing downloaded (move the folder away to fetch the official files)",
                dir.display(),
                differ.len(),
                differ.join(", ")
            );
        }
        return Ok(());
    }
    // Checked before the download too, so that no time is spent on it.
    check_destination(dir)?;
    let parent = dir
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    std::fs::create_dir_all(parent).with_context(|| format!("creating {}", parent.display()))?;
    for stale in stale_scratch(parent) {
        println!(
            "removing {} left by an interrupted download",
            stale.display()
        );
        let _ = std::fs::remove_dir_all(&stale);
    }
    // Everything happens in a scratch folder beside the destination, which is
    // renamed into place only when complete: never a half-written dataset.
    // An interrupted download leaves it behind; the next one removes it.
    let scratch = parent.join(format!("{SCRATCH_PREFIX}{}", std::process::id()));
    std::fs::create_dir_all(&scratch)?;
    let result = fetch_into(&scratch, dir);
    let _ = std::fs::remove_dir_all(&scratch);
    result
}

/// curl's arguments: fail on HTTP errors, follow redirects, a progress bar,
/// and bounded time — give up on connecting after 20 s, on a transfer that
/// stays below 10 kB/s for 60 s, and after 30 minutes in all.
const CURL_ARGS: [&str; 12] = [
    "--fail",
    "--location",
    "--progress-bar",
    "--show-error",
    "--connect-timeout",
    "20",
    "--speed-limit",
    "10000",
    "--speed-time",
    "60",
    "--max-time",
    "1800",
];

fn fetch_into(scratch: &Path, dir: &Path) -> anyhow::Result<()> {
    let archive = scratch.join("cifar-10-binary.tar.gz");
    println!("downloading {CIFAR_URL} (162 MB) …");
    let status = Command::new("curl")
        .args(CURL_ARGS)
        .arg("-o")
        .arg(&archive)
        .arg(CIFAR_URL)
        .status();
    match status {
        Ok(s) if s.success() => {}
        Ok(s) => bail!(
            "download failed (curl exit code {}; 28 means it timed out): are you offline?\n{}",
            s.code().unwrap_or(-1),
            how_to_get_it(dir)
        ),
        Err(e) => bail!("cannot run curl ({e})\n{}", how_to_get_it(dir)),
    }
    let bytes =
        std::fs::read(&archive).with_context(|| format!("reading {}", archive.display()))?;
    let digest = format!("{:x}", md5::compute(&bytes));
    if digest != CIFAR_MD5 {
        bail!(
            "checksum mismatch: {} has MD5 {digest}, the published one is {CIFAR_MD5} \
             (a truncated or altered download); nothing was installed.\n{}",
            archive.display(),
            how_to_get_it(dir)
        );
    }
    let status = Command::new("tar")
        .arg("-xzf")
        .arg(&archive)
        .arg("-C")
        .arg(scratch)
        .status()?;
    if !status.success() {
        bail!("unpacking {} failed", archive.display());
    }
    let unpacked = scratch.join("cifar-10-batches-bin");
    if !layout_complete(&unpacked) {
        bail!("the archive did not contain the expected binary layout");
    }
    install(&unpacked, dir)?;
    println!("CIFAR-10 ready in {}", dir.display());
    Ok(())
}

/// The dataset directory for a sweep: the flag, $CIFAR10_DIR, or
/// data/cifar10 (downloaded when missing).
fn resolve_data_dir(flag: Option<PathBuf>) -> anyhow::Result<PathBuf> {
    if let Some(d) = &flag
        && !layout_complete(d)
    {
        bail!(
            "--data-dir {} does not hold a complete CIFAR-10 binary layout \
             (data_batch_1..5.bin, test_batch.bin, batches.meta.txt)",
            d.display()
        );
    }
    if let Some(d) = locate::data_dir(flag.as_deref(), &project_root()) {
        return Ok(d);
    }
    let dir = project_root().join("data/cifar10");
    download(&dir).with_context(|| {
        format!(
            "no --data-dir and no {}, so CIFAR-10 was to be downloaded",
            locate::DIR_VAR
        )
    })?;
    Ok(dir)
}

/// Cargo's target directory: `$CARGO_TARGET_DIR` (relative to the project
/// root, where the build runs) or `<root>/target`.
fn target_dir(root: &Path, env: Option<std::ffi::OsString>) -> PathBuf {
    match env.filter(|d| !d.is_empty()) {
        Some(d) => root.join(d),
        None => root.join("target"),
    }
}

#[allow(clippy::too_many_arguments)]
fn sweep(
    preset: &str,
    data_dir: Option<PathBuf>,
    out: Option<PathBuf>,
    device: &str,
    shard: Option<String>,
    slurm: bool,
    rest: &[String],
) -> anyhow::Result<()> {
    let root = project_root();
    let data_dir = resolve_data_dir(data_dir)?;
    let out = out.unwrap_or_else(|| root.join("results").join(preset));
    let mut build = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()));
    build
        .current_dir(&root)
        .args(["build", "--release", "--package", "muq"]);
    if device.starts_with("cuda") {
        build.args(["--features", "cuda"]);
    }
    println!("building muq (release) …");
    if !build.status().context("running cargo build")?.success() {
        bail!("building muq failed");
    }
    let muq = target_dir(&root, std::env::var_os("CARGO_TARGET_DIR")).join("release/muq");
    let mut cmd = Command::new(&muq);
    cmd.arg("sweep")
        .args(["--preset", preset])
        .arg("--data-dir")
        .arg(&data_dir)
        .arg("--out")
        .arg(&out)
        .args(["--device", device]);
    if let Some(s) = shard {
        cmd.args(["--shard", &s]);
    }
    if slurm {
        cmd.arg("--slurm");
    }
    cmd.args(rest);
    let status = cmd
        .status()
        .with_context(|| format!("running {}", muq.display()))?;
    if !status.success() {
        bail!("muq sweep failed ({status})");
    }
    Ok(())
}

fn main() -> anyhow::Result<ExitCode> {
    let cli = Cli::parse();
    let result = match cli.command {
        Task::Download { dir } => download(&dir),
        Task::Sweep {
            preset,
            data_dir,
            out,
            device,
            shard,
            slurm,
            rest,
        } => sweep(&preset, data_dir, out, &device, shard, slurm, &rest),
    };
    match result {
        Ok(()) => Ok(ExitCode::SUCCESS),
        Err(e) => {
            eprintln!("error: {e:#}");
            Ok(ExitCode::FAILURE)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_muq_binary_is_looked_for_in_cargos_target_dir() {
        let root = Path::new("/project");
        assert_eq!(target_dir(root, None), Path::new("/project/target"));
        assert_eq!(
            target_dir(root, Some("".into())),
            Path::new("/project/target")
        );
        assert_eq!(target_dir(root, Some("/t".into())), Path::new("/t"));
        assert_eq!(
            target_dir(root, Some("out".into())),
            Path::new("/project/out")
        );
    }

    #[test]
    fn an_incomplete_layout_is_not_taken_for_a_dataset() {
        let dir = std::env::temp_dir().join(format!("xtask-layout-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        assert!(!layout_complete(&dir));
        for (name, size) in LAYOUT {
            let f = std::fs::File::create(dir.join(name)).unwrap();
            f.set_len(size).unwrap();
        }
        assert!(!layout_complete(&dir), "the meta file is missing");
        std::fs::write(dir.join(META), "airplane\n").unwrap();
        assert!(layout_complete(&dir));
        std::fs::File::create(dir.join("test_batch.bin"))
            .unwrap()
            .set_len(3073)
            .unwrap();
        assert!(!layout_complete(&dir), "a truncated file");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn shared_copy_counts_as_complete_when_present() {
        let shared = project_root().join("../shared/cifar10");
        if !shared.is_dir() {
            eprintln!(
                "shared_copy_counts_as_complete_when_present: did not run (no ../shared/cifar10)"
            );
            return;
        }
        assert!(layout_complete(&shared));
    }

    #[test]
    fn a_destination_with_other_files_is_never_touched() {
        let tmp = std::env::temp_dir().join(format!("xtask-install-{}", std::process::id()));
        let unpacked = tmp.join("unpacked");
        std::fs::create_dir_all(&unpacked).unwrap();
        std::fs::write(unpacked.join("data_batch_1.bin"), b"new").unwrap();
        // A folder with someone else's file (e.g. --dir ~/datasets or --dir .).
        let busy = tmp.join("busy");
        std::fs::create_dir_all(&busy).unwrap();
        std::fs::write(busy.join("thesis.tex"), b"mine").unwrap();
        let err = install(&unpacked, &busy).unwrap_err().to_string();
        assert!(
            err.contains("not an empty folder") && err.contains("--dir"),
            "{err}"
        );
        assert_eq!(std::fs::read(busy.join("thesis.tex")).unwrap(), b"mine");
        assert!(
            check_destination(&busy).is_err(),
            "refused before downloading"
        );
        // A regular file is refused too, and left alone.
        let file = tmp.join("file");
        std::fs::write(&file, b"x").unwrap();
        assert!(install(&unpacked, &file).is_err());
        assert_eq!(std::fs::read(&file).unwrap(), b"x");
        // An empty folder or a new path is filled.
        let empty = tmp.join("empty");
        std::fs::create_dir_all(&empty).unwrap();
        install(&unpacked, &empty).unwrap();
        assert_eq!(
            std::fs::read(empty.join("data_batch_1.bin")).unwrap(),
            b"new"
        );
        std::fs::remove_dir_all(&tmp).unwrap();
    }

    #[test]
    fn interrupted_downloads_scratch_is_found_and_nothing_else() {
        let tmp = std::env::temp_dir().join(format!("xtask-scratch-{}", std::process::id()));
        // No process has pid 4294967295: an interrupted download's folder.
        let dead = tmp.join(format!("{SCRATCH_PREFIX}4294967295"));
        let live = tmp.join(format!("{SCRATCH_PREFIX}{}", std::process::id()));
        let other = tmp.join(".cifar10-download-notapid");
        for d in [&dead, &live, &other] {
            std::fs::create_dir_all(d).unwrap();
        }
        std::fs::write(tmp.join(format!("{SCRATCH_PREFIX}4294967294")), b"a file").unwrap();
        assert_eq!(stale_scratch(&tmp), vec![dead]);
        std::fs::remove_dir_all(&tmp).unwrap();
    }

    #[test]
    fn downloads_are_bounded_in_time_and_show_progress() {
        let arg = |name: &str| {
            let i = CURL_ARGS.iter().position(|a| *a == name).unwrap();
            CURL_ARGS[i + 1].parse::<u32>().unwrap()
        };
        assert!(CURL_ARGS.contains(&"--progress-bar"));
        assert!(!CURL_ARGS.contains(&"--silent"));
        assert!(arg("--max-time") > 0 && arg("--speed-time") > 0 && arg("--speed-limit") > 0);
    }

    #[test]
    fn the_official_checksums_are_the_layouts_files() {
        let names: Vec<&str> = OFFICIAL_SHA1SUMS
            .lines()
            .filter_map(|l| l.split_once("  ").map(|(_, n)| n))
            .collect();
        let layout: Vec<&str> = LAYOUT.iter().map(|(n, _)| *n).collect();
        assert_eq!(names, layout);
        // A complete layout of the wrong bytes is found out by checksum.
        let dir = std::env::temp_dir().join(format!("xtask-sha-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        for (name, size) in LAYOUT {
            std::fs::File::create(dir.join(name))
                .unwrap()
                .set_len(size)
                .unwrap();
        }
        std::fs::write(dir.join(META), "airplane\n").unwrap();
        assert!(layout_complete(&dir));
        assert_eq!(official_copy(&dir).unwrap(), layout);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn the_offline_message_says_what_to_do() {
        let msg = how_to_get_it(Path::new("data/cifar10"));
        assert!(
            msg.contains(CIFAR_URL) && msg.contains("--data-dir") && msg.contains("CIFAR10_DIR")
        );
    }
}
