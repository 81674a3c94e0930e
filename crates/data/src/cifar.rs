//! Reading and writing the CIFAR-10 binary layout.
//!
//! A directory in this layout holds `data_batch_1.bin` … `data_batch_5.bin`
//! (the training set, in that order), `test_batch.bin` (the test set) and
//! `batches.meta.txt` (the ten class names, one a line). A batch file is a
//! sequence of 3,073-byte records: one label byte (0–9), then the 3,072 bytes
//! of the image (red, green, blue planes of 32×32, row-major). Any whole
//! number of records per file is accepted.

use std::fs;
use std::io::ErrorKind;
use std::path::{Path, PathBuf};

use crate::{DataError, IMAGE_BYTES, ImageSet, NUM_CLASSES, RECORD_BYTES, Result};

/// Names of the five training files, in reading order.
pub const TRAIN_FILES: [&str; 5] = [
    "data_batch_1.bin",
    "data_batch_2.bin",
    "data_batch_3.bin",
    "data_batch_4.bin",
    "data_batch_5.bin",
];

/// Name of the test file.
pub const TEST_FILE: &str = "test_batch.bin";

/// Name of the class-name file.
pub const META_FILE: &str = "batches.meta.txt";

/// The CIFAR-10 class names, in label order.
pub const CLASS_NAMES: [&str; NUM_CLASSES] = [
    "airplane",
    "automobile",
    "bird",
    "cat",
    "deer",
    "dog",
    "frog",
    "horse",
    "ship",
    "truck",
];

/// A CIFAR-10-shaped dataset: training and test images plus class names.
#[derive(Clone, Debug, PartialEq)]
pub struct Cifar10 {
    /// The training set (the five `data_batch_*.bin` files, concatenated).
    pub train: ImageSet,
    /// The test set (`test_batch.bin`).
    pub test: ImageSet,
    /// The ten class names, in label order.
    pub class_names: Vec<String>,
}

pub use crate::locate::{DIR_VAR, data_dir, dir_from_env};

/// The environment variable naming a file in which tests that need the
/// real CIFAR-10 record whether they ran ([`real_data_for_test`]):
/// `.ci/run` sets it and lists the file after the tests, because libtest
/// hides what a passing test prints.
pub const GATED_LOG_VAR: &str = "MUQ_GATED_LOG";

/// For a test that needs the real CIFAR-10: the folder `$CIFAR10_DIR`
/// names ([`dir_from_env`] from `base`), or `None` when it is unset. Either
/// way it says so, on stderr (shown with `--nocapture` or when the test
/// fails) and as one line — `ran <test> on <dir>` or `SKIPPED <test>: …` —
/// appended to the file `$MUQ_GATED_LOG` when that is set.
///
/// ```no_run
/// # use std::path::Path;
/// let Some(dir) = muq_data::cifar::real_data_for_test("my_check", Path::new(".")) else {
///     return; // said where a person sees it; nothing to check
/// };
/// # let _ = dir;
/// ```
pub fn real_data_for_test(test: &str, base: &Path) -> Option<PathBuf> {
    let dir = dir_from_env(base);
    let line = match &dir {
        Some(d) => format!("ran {test} on {}", d.display()),
        None => format!(
            "SKIPPED {test}: {DIR_VAR} is not set, so the real CIFAR-10 was not used \
             (set {DIR_VAR}=/path/to/cifar10 to run it)"
        ),
    };
    eprintln!("{line}");
    if let Some(log) = std::env::var_os(GATED_LOG_VAR).filter(|v| !v.is_empty()) {
        use std::io::Write as _;
        // One append of one line: whole even when tests run in parallel.
        let written = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log)
            .and_then(|mut f| f.write_all(format!("{line}\n").as_bytes()));
        if let Err(e) = written {
            eprintln!(
                "warning: cannot record this in {}: {e}",
                Path::new(&log).display()
            );
        }
    }
    dir
}

/// Reads a directory in the CIFAR-10 binary layout.
///
/// # Errors
/// [`DataError::MissingFile`] if a file is absent,
/// [`DataError::TruncatedFile`] if a batch file's size is not a multiple of
/// 3,073 bytes, [`DataError::BadLabelInFile`] if a record's label is above 9,
/// [`DataError::BadMeta`] if `batches.meta.txt` does not hold ten names, and
/// [`DataError::Io`] for other read failures. Each names the file (and the
/// record, where there is one).
pub fn load_dir(dir: &Path) -> Result<Cifar10> {
    load_dir_checked(dir).map(|(data, _)| data)
}

/// The SHA-1 of each batch file of the official CIFAR-10 binary archive
/// (`cifar-10-binary.tar.gz`), in `sha1sum` format: the list MXNet's
/// `gluon.data.vision.CIFAR10` checks. `cargo xtask download` reads the
/// same file.
pub const OFFICIAL_SHA1SUMS: &str = include_str!("../cifar10-official.sha1");

/// `(file name, hex SHA-1)` pairs of [`OFFICIAL_SHA1SUMS`].
pub fn official_sha1() -> impl Iterator<Item = (&'static str, &'static str)> {
    OFFICIAL_SHA1SUMS
        .lines()
        .filter_map(|l| l.split_once("  "))
        .map(|(digest, name)| (name.trim(), digest.trim()))
}

/// One batch file as [`load_dir_checked`] found it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FileCheck {
    /// The file name (`data_batch_1.bin` … `test_batch.bin`).
    pub name: &'static str,
    /// Records (images) it holds.
    pub records: usize,
    /// Hex SHA-1 of its bytes.
    pub sha1: String,
    /// Whether that is the official archive's file, byte for byte.
    pub official: bool,
}

/// What [`load_dir_checked`] found out about a directory's batch files
/// besides their contents: which are the official archive's and which are
/// copies of one another.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DirCheck {
    /// The five training files, then the test file.
    pub files: Vec<FileCheck>,
}

impl DirCheck {
    /// Whether every batch file is byte-identical to the official archive's.
    pub fn all_official(&self) -> bool {
        self.files.iter().all(|f| f.official)
    }

    /// Warnings a user should see, each naming the files: a batch file that
    /// is a byte copy of another, and files that differ from the official
    /// archive (expected of a re-encoded or converted copy, which still
    /// works; results are then comparable only between runs on that copy).
    pub fn warnings(&self) -> Vec<String> {
        let mut out = Vec::new();
        for (i, f) in self.files.iter().enumerate() {
            if let Some(first) = self.files[..i].iter().find(|g| g.sha1 == f.sha1) {
                out.push(format!(
                    "{} is a byte-for-byte copy of {}: a CIFAR-10 directory holds six different \
                     batches; {}",
                    f.name,
                    first.name,
                    crate::error::FIX_HINT
                ));
            }
        }
        let differ: Vec<&str> = self
            .files
            .iter()
            .filter(|f| !f.official)
            .map(|f| f.name)
            .collect();
        if !differ.is_empty() {
            out.push(format!(
                "{} of {} batch files differ from the official CIFAR-10 archive ({}): fine for a \
                 re-encoded or converted copy, but results are comparable only with runs on \
                 the same copy (result.json records its checksums)",
                differ.len(),
                self.files.len(),
                differ.join(", ")
            ));
        }
        out
    }
}

/// [`load_dir`], also reporting each batch file's SHA-1 and whether it is
/// the official archive's (see [`DirCheck::warnings`]).
///
/// # Errors
/// As [`load_dir`], plus [`DataError::NotADirectory`] when `dir` is a file
/// and [`DataError::EmptyFile`] for a batch file of 0 bytes.
pub fn load_dir_checked(dir: &Path) -> Result<(Cifar10, DirCheck)> {
    if dir.is_file() {
        return Err(DataError::NotADirectory {
            path: dir.to_path_buf(),
        });
    }
    let class_names = read_meta(&dir.join(META_FILE))?;
    let mut train = ImageSet::empty();
    let mut files = Vec::with_capacity(TRAIN_FILES.len() + 1);
    for name in TRAIN_FILES {
        let (set, check) = read_checked(&dir.join(name), name)?;
        train.extend(&set);
        files.push(check);
    }
    let (test, check) = read_checked(&dir.join(TEST_FILE), TEST_FILE)?;
    files.push(check);
    Ok((
        Cifar10 {
            train,
            test,
            class_names,
        },
        DirCheck { files },
    ))
}

fn read_checked(path: &Path, name: &'static str) -> Result<(ImageSet, FileCheck)> {
    use sha1::{Digest as _, Sha1};
    let bytes = read(path)?;
    let sha1 = format!("{:x}", Sha1::digest(&bytes));
    let official = official_sha1().any(|(n, digest)| n == name && digest == sha1);
    let set = parse_batch(path, &bytes)?;
    let check = FileCheck {
        name,
        records: set.len(),
        sha1,
        official,
    };
    Ok((set, check))
}

/// Checks a directory's layout without reading the images: not a file,
/// the class-name file holds ten names, and every batch file is present,
/// non-empty and a whole number of records. [`load_dir`] checks all of
/// this and the labels too; this is the cheap check a sweep makes before
/// its first run.
///
/// # Errors
/// As [`load_dir_checked`], except that labels are not read.
pub fn check_dir(dir: &Path) -> Result<()> {
    if dir.is_file() {
        return Err(DataError::NotADirectory {
            path: dir.to_path_buf(),
        });
    }
    read_meta(&dir.join(META_FILE))?;
    for name in TRAIN_FILES.iter().chain([&TEST_FILE]) {
        let path = dir.join(name);
        let len = fs::metadata(&path)
            .map_err(|source| {
                if source.kind() == ErrorKind::NotFound {
                    DataError::MissingFile {
                        path: path.clone(),
                        source,
                    }
                } else {
                    DataError::Io {
                        op: "read",
                        path: path.clone(),
                        source,
                    }
                }
            })?
            .len();
        check_size(&path, len)?;
    }
    Ok(())
}

fn check_size(path: &Path, len: u64) -> Result<()> {
    if len == 0 {
        return Err(DataError::EmptyFile {
            path: path.to_path_buf(),
        });
    }
    let record = RECORD_BYTES as u64;
    if !len.is_multiple_of(record) {
        return Err(DataError::TruncatedFile {
            path: path.to_path_buf(),
            len,
            record: (len / record) as usize,
            partial: (len % record) as usize,
        });
    }
    Ok(())
}

/// Reads one batch file (any whole number of records, at least one).
///
/// # Errors
/// As [`load_dir`], for this one file.
pub fn read_batch_file(path: &Path) -> Result<ImageSet> {
    parse_batch(path, &read(path)?)
}

fn parse_batch(path: &Path, bytes: &[u8]) -> Result<ImageSet> {
    check_size(path, bytes.len() as u64)?;
    let records = bytes.len() / RECORD_BYTES;
    let mut images = Vec::with_capacity(records * IMAGE_BYTES);
    let mut labels = Vec::with_capacity(records);
    for (record, chunk) in bytes.chunks_exact(RECORD_BYTES).enumerate() {
        let label = chunk[0];
        if usize::from(label) >= NUM_CLASSES {
            return Err(DataError::BadLabelInFile {
                path: path.to_path_buf(),
                record,
                label,
            });
        }
        labels.push(label);
        images.extend_from_slice(&chunk[1..]);
    }
    ImageSet::new(images, labels)
}

fn read(path: &Path) -> Result<Vec<u8>> {
    fs::read(path).map_err(|source| {
        if source.kind() == ErrorKind::NotFound {
            DataError::MissingFile {
                path: path.to_path_buf(),
                source,
            }
        } else {
            DataError::Io {
                op: "read",
                path: path.to_path_buf(),
                source,
            }
        }
    })
}

fn read_meta(path: &Path) -> Result<Vec<String>> {
    let bytes = read(path)?;
    let text = String::from_utf8(bytes).map_err(|_| DataError::BadMeta {
        path: path.to_path_buf(),
        reason: "is not UTF-8 text".to_owned(),
    })?;
    let names: Vec<String> = text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .map(str::to_owned)
        .collect();
    if names.len() != NUM_CLASSES {
        return Err(DataError::BadMeta {
            path: path.to_path_buf(),
            reason: format!(
                "holds {} non-empty lines, expected {NUM_CLASSES} class names",
                names.len()
            ),
        });
    }
    Ok(names)
}

/// Writes `data` to `dir` in the CIFAR-10 binary layout, creating `dir` if needed.
///
/// The training set is spread as evenly as possible over the five
/// `data_batch_*.bin` files (sizes differ by at most one record, earlier
/// files taking the extra ones); `records_per_file` is the most records one
/// training file may hold, so `write_dir(dir, data, 10_000)` on a 50,000-image
/// training set writes the standard layout. The whole test set goes to
/// `test_batch.bin`, the class names to `batches.meta.txt`.
///
/// # Errors
/// [`DataError::InvalidArgument`] if the training set does not fit in five
/// files of `records_per_file` records or if `data.class_names` does not hold
/// ten single-line names; [`DataError::Io`] if a file cannot be written.
pub fn write_dir(dir: &Path, data: &Cifar10, records_per_file: usize) -> Result<()> {
    let n = data.train.len();
    let files = TRAIN_FILES.len();
    if n < files || data.test.is_empty() {
        return Err(DataError::InvalidArgument {
            name: "data",
            reason: format!(
                "{n} training and {} test images cannot fill the layout: every batch file \
                 needs at least one record (at least {files} training and 1 test image)",
                data.test.len()
            ),
        });
    }
    if records_per_file
        .checked_mul(files)
        .is_none_or(|cap| cap < n)
    {
        return Err(DataError::InvalidArgument {
            name: "records_per_file",
            reason: format!(
                "{records_per_file} records per file cannot hold {n} training images in \
                 {files} files; pass at least {}",
                n.div_ceil(files)
            ),
        });
    }
    if data.class_names.len() != NUM_CLASSES
        || data
            .class_names
            .iter()
            .any(|s| s.trim().is_empty() || s.contains('\n') || s.trim() != s)
    {
        return Err(DataError::InvalidArgument {
            name: "class_names",
            reason: format!(
                "expected {NUM_CLASSES} non-empty single-line names without surrounding \
                 whitespace, got {:?}",
                data.class_names
            ),
        });
    }
    fs::create_dir_all(dir).map_err(|source| DataError::Io {
        op: "create directory",
        path: dir.to_path_buf(),
        source,
    })?;
    let mut start = 0;
    for (k, name) in TRAIN_FILES.iter().enumerate() {
        let count = n / files + usize::from(k < n % files);
        write_records(&dir.join(name), &data.train, start..start + count)?;
        start += count;
    }
    write_records(&dir.join(TEST_FILE), &data.test, 0..data.test.len())?;
    let mut meta = data.class_names.join("\n");
    meta.push('\n');
    write(&dir.join(META_FILE), meta.as_bytes())
}

fn write_records(path: &Path, set: &ImageSet, range: std::ops::Range<usize>) -> Result<()> {
    let mut bytes = Vec::with_capacity(range.len() * RECORD_BYTES);
    for i in range {
        bytes.push(set.labels()[i]);
        bytes.extend_from_slice(set.image(i));
    }
    write(path, &bytes)
}

fn write(path: &Path, bytes: &[u8]) -> Result<()> {
    fs::write(path, bytes).map_err(|source| DataError::Io {
        op: "write",
        path: PathBuf::from(path),
        source,
    })
}
