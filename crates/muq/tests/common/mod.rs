//! Helpers shared by the end-to-end tests of `muq run`: the binary, a
//! small synthetic dataset and a small config.
#![allow(dead_code)] // each test binary uses its own subset

use std::path::{Path, PathBuf};
use std::process::Command;

use muq::result::RunResult;

/// The `muq` binary under test.
pub fn muq() -> Command {
    Command::new(env!("CARGO_BIN_EXE_muq"))
}

/// A synthetic CIFAR-like dataset in the binary layout (300 train / 200 test).
pub fn dataset(dir: &Path) -> PathBuf {
    let data_dir = dir.join("cifar");
    let data = muq_data::synthetic::generate(300, 200, 7);
    muq_data::write_dir(&data_dir, &data, 60).expect("write synthetic layout");
    data_dir
}

/// `--set` overrides for a model that trains in seconds.
pub const SMALL: &[&str] = &[
    "model.width=8",
    "train.epochs=1",
    "train.batch_size=32",
    "train.lr=0.05",
    "data.retain_eval=100",
    "modality.remove_prop=0.05",
    "modality.pool_prop=0.2",
];

/// `muq run` on `data_dir` with [`SMALL`] and `extra`; its result.
pub fn run(data_dir: &Path, out: &Path, extra: &[&str]) -> RunResult {
    run_with(data_dir, out, extra, &[])
}

/// The command [`run`] runs: `muq run --quiet` on `data_dir` with [`SMALL`]
/// and `extra`, on the default kernels.
pub fn run_command(data_dir: &Path, out: &Path, extra: &[&str]) -> Command {
    let mut cmd = muq();
    cmd.env_remove("MUQ_KERNELS");
    cmd.arg("run")
        .arg("--data-dir")
        .arg(data_dir)
        .arg("--out")
        .arg(out)
        .arg("--quiet");
    for s in SMALL.iter().chain(extra) {
        cmd.args(["--set", s]);
    }
    cmd
}

/// [`run`] with environment variables set for the process.
pub fn run_with(data_dir: &Path, out: &Path, extra: &[&str], env: &[(&str, &str)]) -> RunResult {
    let mut cmd = run_command(data_dir, out, extra);
    cmd.envs(env.iter().copied());
    let output = cmd.output().expect("run muq");
    assert!(
        output.status.success(),
        "muq run {extra:?} failed:\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    muq::result::read_result(&out.join("result.json")).expect("result.json")
}
