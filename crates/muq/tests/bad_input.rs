//! Bad input, command by command, through the real binary: each case must
//! fail before any work with exit status 2 (or the status the case names),
//! and its message must name the culprit — the file, field or flag — and
//! say what to do. None may panic, and none may leave a trained model or a
//! result behind.

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

fn muq() -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_muq"));
    cmd.env_remove("MUQ_KERNELS").env_remove("CIFAR10_DIR");
    cmd
}

/// A small synthetic CIFAR-10 layout in `dir/cifar`.
fn dataset(dir: &Path) -> PathBuf {
    let data_dir = dir.join("cifar");
    let data = muq_data::synthetic::generate(300, 200, 7);
    muq_data::write_dir(&data_dir, &data, 60).expect("write synthetic layout");
    data_dir
}

const SMALL: &[&str] = &["model.width=4", "train.epochs=1", "data.retain_eval=50"];

/// Every file under `dir`, recursively.
fn files(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    if let Ok(rd) = std::fs::read_dir(dir) {
        for e in rd.flatten() {
            let p = e.path();
            if p.is_dir() {
                out.extend(files(&p));
            } else {
                out.push(p);
            }
        }
    }
    out
}

/// Checks the exit status and that every needle is in stderr, and that
/// nothing panicked.
fn expect(case: &str, out: &Output, code: i32, needles: &[&str]) {
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(code), "{case}: status\n{err}");
    assert!(!err.contains("panicked"), "{case}: panicked\n{err}");
    for n in needles {
        assert!(err.contains(n), "{case}: stderr lacks {n:?}\n{err}");
    }
}

/// What to break in a fresh copy of the data, output and cache folders.
enum Break {
    Nothing,
    DataDirIsAFile,
    EmptyFile(&'static str),
    CopyOver(&'static str, &'static str),
    OutIsAFile,
    OutUnderAFile,
    CacheIsAFile,
}

struct RunCase {
    name: &'static str,
    brk: Break,
    set: &'static [&'static str],
    env: &'static [(&'static str, &'static str)],
    needles: &'static [&'static str],
}

#[test]
fn muq_run_rejects_bad_input_before_any_work() {
    let cases = [
        RunCase {
            name: "a regular file as --data-dir",
            brk: Break::DataDirIsAFile,
            set: &[],
            env: &[],
            needles: &[
                "is not a CIFAR-10 directory: it is a file",
                "pass the folder",
            ],
        },
        RunCase {
            name: "an empty training batch",
            brk: Break::EmptyFile("data_batch_3.bin"),
            set: &[],
            env: &[],
            needles: &["data_batch_3.bin is empty", "cargo xtask download"],
        },
        RunCase {
            name: "an empty test batch",
            brk: Break::EmptyFile("test_batch.bin"),
            set: &[],
            env: &[],
            needles: &["test_batch.bin is empty", "cargo xtask download"],
        },
        RunCase {
            name: "epochs not a number",
            brk: Break::Nothing,
            set: &["train.epochs=abc"],
            env: &[],
            needles: &["config field `train.epochs`", "expected a whole number"],
        },
        RunCase {
            name: "epochs negative",
            brk: Break::Nothing,
            set: &["train.epochs=-1"],
            env: &[],
            needles: &["config field `train.epochs`", "-1"],
        },
        RunCase {
            name: "epochs fractional",
            brk: Break::Nothing,
            set: &["train.epochs=1.5"],
            env: &[],
            needles: &["config field `train.epochs`", "1.5"],
        },
        RunCase {
            name: "a negative seed",
            brk: Break::Nothing,
            set: &["seed=-1"],
            env: &[],
            needles: &["config field `seed`", "expected a whole number >= 0"],
        },
        RunCase {
            name: "a number where a list of features goes",
            brk: Break::Nothing,
            set: &["eval.mia_features=7"],
            env: &[],
            needles: &["config field `eval.mia_features`"],
        },
        RunCase {
            name: "forgetting everything",
            brk: Break::Nothing,
            set: &["modality.remove_prop=1.0", "modality.kind=random"],
            env: &[],
            needles: &["config field `modality.remove_prop`", "none to retain"],
        },
        RunCase {
            name: "a class count that does not fit the labels",
            brk: Break::Nothing,
            set: &["model.num_classes=5"],
            env: &[],
            needles: &["config field `model.num_classes`", "model.num_classes = 10"],
        },
        RunCase {
            name: "too many bins",
            brk: Break::Nothing,
            set: &["eval.bins=4000000000"],
            env: &[],
            needles: &["config field `eval.bins`", "1..=10000"],
        },
        RunCase {
            name: "an ensemble of one member",
            brk: Break::Nothing,
            set: &["eval.ensemble=1"],
            env: &[],
            needles: &[
                "config field `eval.ensemble`",
                "use 0 (no ensemble) or 2..=64",
            ],
        },
        RunCase {
            name: "a recalibrator setting out of range",
            brk: Break::Nothing,
            set: &["eval.recalibration.hist.bins=0"],
            env: &[],
            needles: &["config field `eval.recalibration.hist.bins`", "1..=10000"],
        },
        RunCase {
            name: "a negative ODIR weight",
            brk: Break::Nothing,
            set: &["eval.recalibration.ms.lambda=-0.5"],
            env: &[],
            needles: &["config field `eval.recalibration.ms.lambda`", "at least 0"],
        },
        RunCase {
            name: "a model too wide to allocate",
            brk: Break::Nothing,
            set: &["model.width=100000"],
            env: &[],
            needles: &["config field `model.width`", "1..=1024"],
        },
        RunCase {
            name: "a subset larger than the data",
            brk: Break::Nothing,
            set: &["data.train_subset=100000"],
            env: &[],
            needles: &["config field `data.train_subset`", "use 0 for all"],
        },
        RunCase {
            name: "an unknown kernel set",
            brk: Break::Nothing,
            set: &[],
            env: &[("MUQ_KERNELS", "fastest")],
            needles: &["MUQ_KERNELS", "use `stock`"],
        },
        RunCase {
            name: "an unknown instruction-set level",
            brk: Break::Nothing,
            set: &[],
            env: &[("MUQ_CPU_LEVEL", "avx9000")],
            needles: &["MUQ_CPU_LEVEL=`avx9000`", "`baseline`", "unset it"],
        },
        RunCase {
            name: "--out is a file",
            brk: Break::OutIsAFile,
            set: &[],
            env: &[],
            needles: &["output folder (--out)", "is a file, not a folder"],
        },
        RunCase {
            name: "--out under a file",
            brk: Break::OutUnderAFile,
            set: &[],
            env: &[],
            needles: &["output folder (--out)", "is a file, not a folder"],
        },
        RunCase {
            name: "--cache-dir is a file",
            brk: Break::CacheIsAFile,
            set: &[],
            env: &[],
            needles: &["cache folder (--cache-dir)", "is a file, not a folder"],
        },
        RunCase {
            // A duplicated batch is warned about (naming both files), not
            // refused; the run then stops at its config error.
            name: "a batch that is a copy of another",
            brk: Break::CopyOver("data_batch_1.bin", "data_batch_2.bin"),
            set: &["modality.remove_prop=1.0", "modality.kind=random"],
            env: &[],
            needles: &[
                "data_batch_2.bin is a byte-for-byte copy of data_batch_1.bin",
                "differ from the official CIFAR-10 archive",
                "none to retain",
            ],
        },
    ];
    for case in &cases {
        let tmp = tempfile::tempdir().unwrap();
        let mut data_dir = dataset(tmp.path());
        let mut out = tmp.path().join("out");
        let mut cache = tmp.path().join("cache");
        match case.brk {
            Break::Nothing => {}
            Break::DataDirIsAFile => {
                data_dir = data_dir.join("data_batch_1.bin");
            }
            Break::EmptyFile(name) => std::fs::write(data_dir.join(name), b"").unwrap(),
            Break::CopyOver(from, to) => {
                std::fs::copy(data_dir.join(from), data_dir.join(to)).unwrap();
            }
            Break::OutIsAFile => std::fs::write(&out, b"x").unwrap(),
            Break::OutUnderAFile => {
                std::fs::write(&out, b"x").unwrap();
                out = out.join("run");
            }
            Break::CacheIsAFile => {
                cache = tmp.path().join("cache-file");
                std::fs::write(&cache, b"x").unwrap();
            }
        }
        let mut cmd = muq();
        cmd.arg("run")
            .arg("--data-dir")
            .arg(&data_dir)
            .arg("--out")
            .arg(&out)
            .arg("--cache-dir")
            .arg(&cache)
            .envs(case.env.iter().copied());
        for s in SMALL.iter().chain(case.set) {
            cmd.args(["--set", s]);
        }
        let output = cmd.output().unwrap();
        expect(case.name, &output, 2, case.needles);
        let left: Vec<PathBuf> = files(tmp.path())
            .into_iter()
            .filter(|f| {
                let name = f.file_name().unwrap().to_string_lossy();
                name.ends_with(".safetensors") || name == "result.json"
            })
            .collect();
        assert!(left.is_empty(), "{}: work was done: {left:?}", case.name);
    }
}

#[test]
fn muq_sweep_checks_data_folders_and_config_before_the_first_run() {
    let tmp = tempfile::tempdir().unwrap();
    let data_dir = dataset(tmp.path());
    let sweep = |data: &Path, out: &Path, extra: &[&str]| {
        let mut cmd = muq();
        cmd.args(["sweep", "--preset", "quick", "--no-report"])
            .arg("--data-dir")
            .arg(data)
            .arg("--out")
            .arg(out);
        for s in extra {
            cmd.args(["--set", s]);
        }
        cmd.output().unwrap()
    };
    // A missing test batch: refused before any run folder exists.
    let broken = tmp.path().join("broken");
    std::fs::create_dir_all(&broken).unwrap();
    for f in std::fs::read_dir(&data_dir).unwrap().flatten() {
        if f.file_name() != "test_batch.bin" {
            std::fs::copy(f.path(), broken.join(f.file_name())).unwrap();
        }
    }
    let out = tmp.path().join("a");
    let o = sweep(&broken, &out, &[]);
    expect("missing test batch", &o, 2, &["test_batch.bin is missing"]);
    assert!(!out.join("runs").exists(), "no run was started");
    // A truncated batch.
    std::fs::copy(
        data_dir.join("test_batch.bin"),
        broken.join("test_batch.bin"),
    )
    .unwrap();
    let f = std::fs::OpenOptions::new()
        .append(true)
        .open(broken.join("data_batch_4.bin"))
        .unwrap();
    f.set_len(f.metadata().unwrap().len() - 100).unwrap();
    let o = sweep(&broken, &out, &[]);
    expect(
        "truncated batch",
        &o,
        2,
        &["data_batch_4.bin", "not a multiple of 3073"],
    );
    assert!(!out.join("runs").exists());
    // An unusable --out.
    let file = tmp.path().join("file");
    std::fs::write(&file, b"x").unwrap();
    let o = sweep(&data_dir, &file, &[]);
    expect("--out a file", &o, 2, &["is a file, not a folder"]);
    // A mistyped override names its field.
    let o = sweep(&data_dir, &out, &["train.batch_size=big"]);
    expect("typed override", &o, 2, &["`train.batch_size`"]);
}

#[test]
fn muq_bench_rejects_sizes_it_cannot_allocate() {
    for (args, needles) in [
        (&["--width", "100000"][..], &["`width`", "1..=1024"][..]),
        (&["--width", "0"][..], &["`width`", "1..=1024"][..]),
        (&["--batch", "1"][..], &["--batch", "2..=8192"][..]),
        (&["--batch", "99999999"][..], &["--batch", "2..=8192"][..]),
        (
            &["--grad-images", "50001"][..],
            &["--grad-images", "0..=50000"][..],
        ),
        (&["--device", "cuda:x"][..], &["--device", "cuda:N"][..]),
    ] {
        let o = muq().arg("bench").args(args).output().unwrap();
        expect(&format!("bench {args:?}"), &o, 2, needles);
    }
}

#[test]
fn muq_report_names_what_it_cannot_read() {
    let tmp = tempfile::tempdir().unwrap();
    let report = |dir: &Path| muq().arg("report").arg(dir).output().unwrap();
    let o = report(&tmp.path().join("absent"));
    expect("absent folder", &o, 2, &["absent", "does not exist"]);
    let empty = tmp.path().join("empty");
    std::fs::create_dir_all(&empty).unwrap();
    expect("no results", &report(&empty), 2, &["no result.json found"]);
    let bad = tmp.path().join("bad/runs/x");
    std::fs::create_dir_all(&bad).unwrap();
    std::fs::write(bad.join("result.json"), b"{\"x\": 1}").unwrap();
    let o = report(&tmp.path().join("bad"));
    expect(
        "not a result",
        &o,
        2,
        &["runs/x/result.json is not a muq result"],
    );
}

/// Files for `muq metrics`.
struct Files {
    dir: tempfile::TempDir,
}

impl Files {
    fn new() -> Self {
        Files {
            dir: tempfile::tempdir().unwrap(),
        }
    }
    fn write(&self, name: &str, bytes: &[u8]) -> PathBuf {
        let p = self.dir.path().join(name);
        std::fs::write(&p, bytes).unwrap();
        p
    }
}

fn metrics(logits: &Path, labels: &Path, extra: &[&str]) -> Output {
    muq()
        .arg("metrics")
        .arg("--logits")
        .arg(logits)
        .arg("--labels")
        .arg(labels)
        .args(extra)
        .output()
        .unwrap()
}

/// A `.npy` header of `version` for `descr` and `shape`, as numpy writes it.
fn npy_header(version: u8, descr: &str, shape: &str) -> Vec<u8> {
    let dict = format!("{{'descr': '{descr}', 'fortran_order': False, 'shape': {shape}, }}");
    let prefix = if version == 1 { 10 } else { 12 };
    let total = (prefix + dict.len() + 1).div_ceil(64) * 64;
    let mut header = dict.into_bytes();
    header.resize(total - prefix - 1, b' ');
    header.push(b'\n');
    let mut out = b"\x93NUMPY".to_vec();
    out.extend([version, 0]);
    if version == 1 {
        out.extend((header.len() as u16).to_le_bytes());
    } else {
        out.extend((header.len() as u32).to_le_bytes());
    }
    out.extend(header);
    out
}

#[test]
fn muq_metrics_rejects_bad_input_and_names_the_file() {
    let f = Files::new();
    let labels = f.write("labels.txt", b"0\n0\n1\n");
    let good = f.write("good.csv", b"2,1\n1,0\n0,3\n");
    // One column: a one-class "classifier".
    let one = f.write("one.csv", b"1.0\n2.0\n0.5\n");
    expect(
        "one-column csv",
        &metrics(&one, &labels, &[]),
        2,
        &["one.csv", "at least two classes"],
    );
    let mut one_npy = npy_header(1, "<f8", "(3, 1)");
    for v in [1.0f64, 2.0, 0.5] {
        one_npy.extend(v.to_le_bytes());
    }
    let one_npy = f.write("one.npy", &one_npy);
    expect(
        "one-column npy",
        &metrics(&one_npy, &labels, &[]),
        2,
        &["one.npy", "at least two classes"],
    );
    // Truncated version-2 and version-3 files: "truncated", not "unsupported".
    for version in [2u8, 3] {
        let full = npy_header(version, "<f8", "(3, 2)");
        for cut in [9, 11, full.len() - 5] {
            let p = f.write(&format!("v{version}-{cut}.npy"), &full[..cut]);
            let o = metrics(&p, &labels, &[]);
            expect(
                "truncated npy",
                &o,
                2,
                &[&format!("v{version}-{cut}.npy"), "truncated"],
            );
            assert!(!String::from_utf8_lossy(&o.stderr).contains("unsupported"));
        }
    }
    // A bin count with no upper bound would allocate without limit.
    for bins in ["4000000000", "10001", "0"] {
        let o = metrics(&good, &labels, &["--bins", bins]);
        expect("--bins", &o, 2, &["--bins", "1..=10000"]);
    }
    assert!(
        metrics(&good, &labels, &["--bins", "10000"])
            .status
            .success()
    );
}

#[test]
fn a_closed_stdout_is_a_quiet_exit_and_a_full_one_an_error() {
    let f = Files::new();
    let labels = f.write("labels.txt", b"0\n1\n");
    let logits = f.write("logits.csv", b"2,1\n0,3\n");
    // The reader has gone before muq writes a byte.
    let (reader, writer) = std::io::pipe().unwrap();
    drop(reader);
    let o = muq()
        .arg("metrics")
        .arg("--logits")
        .arg(&logits)
        .arg("--labels")
        .arg(&labels)
        .stdout(Stdio::from(writer))
        .stderr(Stdio::piped())
        .output()
        .unwrap();
    expect("closed stdout", &o, 0, &[]);
    assert!(!String::from_utf8_lossy(&o.stderr).contains("error"));
    // A full device is an error that says what could not be written.
    let full = Path::new("/dev/full");
    if !full.exists() {
        eprintln!("a_closed_stdout_…: the /dev/full part did not run (no /dev/full here)");
        return;
    }
    let o = muq()
        .arg("metrics")
        .arg("--logits")
        .arg(&logits)
        .arg("--labels")
        .arg(&labels)
        .stdout(std::fs::File::create(full).unwrap())
        .output()
        .unwrap();
    expect(
        "full stdout",
        &o,
        1,
        &["writing to standard output", "No space left"],
    );
}
