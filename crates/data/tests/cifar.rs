//! The CIFAR-10 binary reader and writer: round trips, every rejected input,
//! and (with `CIFAR10_DIR`) the real set. Agreement with candle-datasets'
//! reader lives in `crates/data-compat` (see its Cargo.toml for why).

use std::fs;
use std::path::Path;

use muq_data::cifar::{META_FILE, TEST_FILE, TRAIN_FILES, read_batch_file};
use muq_data::{
    Cifar10, DataError, IMAGE_BYTES, ImageSet, NUM_CLASSES, RECORD_BYTES, load_dir, synthetic,
    write_dir,
};

fn written(n_train: usize, n_test: usize, per_file: usize) -> (tempfile::TempDir, Cifar10) {
    let dir = tempfile::tempdir().unwrap();
    let data = synthetic::generate(n_train, n_test, 7);
    write_dir(dir.path(), &data, per_file).unwrap();
    (dir, data)
}

fn records(path: &Path) -> u64 {
    fs::metadata(path).unwrap().len() / RECORD_BYTES as u64
}

#[test]
fn round_trip_with_uneven_files() {
    // 37 training records over 5 files of at most 8: 8, 8, 7, 7, 7.
    let (dir, data) = written(37, 13, 8);
    let sizes: Vec<u64> = TRAIN_FILES
        .iter()
        .map(|f| records(&dir.path().join(f)))
        .collect();
    assert_eq!(sizes, [8, 8, 7, 7, 7]);
    assert_eq!(records(&dir.path().join(TEST_FILE)), 13);
    let back = load_dir(dir.path()).unwrap();
    assert_eq!(back, data);
    assert_eq!(back.train.checksum(), data.train.checksum());
    assert_eq!(back.class_names[0], "airplane");
}

#[test]
fn round_trip_with_one_record_per_file() {
    let (dir, data) = written(5, 1, 1);
    assert_eq!(load_dir(dir.path()).unwrap(), data);
}

#[test]
fn reads_files_of_any_record_count() {
    // Files written by hand with 0, 1, 2, 3 and 4 records.
    let data = synthetic::generate(15, 3, 1);
    let dir = tempfile::tempdir().unwrap();
    let mut start = 0;
    for (k, name) in TRAIN_FILES.iter().enumerate() {
        let k = k + 1;
        let mut bytes = Vec::new();
        for i in start..start + k {
            bytes.push(data.train.labels()[i]);
            bytes.extend_from_slice(data.train.image(i));
        }
        fs::write(dir.path().join(name), bytes).unwrap();
        start += k;
    }
    let mut test = Vec::new();
    for i in 0..3 {
        test.push(data.test.labels()[i]);
        test.extend_from_slice(data.test.image(i));
    }
    fs::write(dir.path().join(TEST_FILE), test).unwrap();
    fs::write(dir.path().join(META_FILE), muq_data::CLASS_NAMES.join("\n")).unwrap();
    let back = load_dir(dir.path()).unwrap();
    assert_eq!(back.train, data.train);
    assert_eq!(back.test, data.test);
    // But not none: an empty file is an error naming it, not 10,000 images
    // silently missing from the training set.
    for name in [TRAIN_FILES[2], TEST_FILE] {
        let path = dir.path().join(name);
        let kept = fs::read(&path).unwrap();
        fs::write(&path, b"").unwrap();
        for err in [
            load_dir(dir.path()).unwrap_err(),
            muq_data::cifar::check_dir(dir.path()).unwrap_err(),
        ] {
            assert!(matches!(&err, DataError::EmptyFile { path } if path.ends_with(name)));
            let msg = err.to_string();
            assert!(
                msg.contains(name) && msg.contains("cargo xtask download"),
                "{msg}"
            );
        }
        fs::write(&path, kept).unwrap();
    }
    muq_data::cifar::check_dir(dir.path()).unwrap();
}

/// Each batch file's SHA-1 is compared with the official archive's, and a
/// file that is a byte copy of another is named.
#[test]
fn copies_and_unofficial_files_are_warned_about() {
    let (dir, data) = written(20, 4, 4);
    let (back, check) = muq_data::load_dir_checked(dir.path()).unwrap();
    assert_eq!(back, data);
    assert_eq!(check.files.len(), 6);
    assert!(
        !check.all_official(),
        "generated data is not the official archive"
    );
    let warnings = check.warnings();
    assert_eq!(warnings.len(), 1, "{warnings:?}");
    assert!(
        warnings[0].contains("6 of 6 batch files differ"),
        "{warnings:?}"
    );
    // The SHA-1 is of the whole file's bytes.
    for f in &check.files {
        use sha1::Digest as _;
        let bytes = fs::read(dir.path().join(f.name)).unwrap();
        let want: String = sha1::Sha1::digest(&bytes)
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        assert_eq!(f.sha1, want, "{}", f.name);
    }
    fs::copy(
        dir.path().join(TRAIN_FILES[0]),
        dir.path().join(TRAIN_FILES[3]),
    )
    .unwrap();
    let (_, check) = muq_data::load_dir_checked(dir.path()).unwrap();
    let w = check.warnings();
    assert!(
        w.iter()
            .any(|w| w.contains("data_batch_4.bin is a byte-for-byte copy of data_batch_1.bin")),
        "{w:?}"
    );
    // The published list names the six files of the layout.
    let names: Vec<&str> = muq_data::cifar::official_sha1().map(|(n, _)| n).collect();
    assert_eq!(names[..5], TRAIN_FILES);
    assert_eq!(names[5], TEST_FILE);
}

/// A file where the directory should be is named as such, not "missing".
#[test]
fn a_file_given_as_the_directory_is_named() {
    let (dir, _) = written(10, 2, 2);
    let file = dir.path().join(TRAIN_FILES[0]);
    for err in [
        load_dir(&file).unwrap_err(),
        muq_data::cifar::check_dir(&file).unwrap_err(),
    ] {
        assert!(matches!(err, DataError::NotADirectory { .. }), "{err:?}");
        assert!(err.to_string().contains("it is a file"), "{err}");
    }
}

#[test]
fn missing_files_are_named() {
    for name in [TRAIN_FILES[3], TEST_FILE, META_FILE] {
        let (dir, _) = written(10, 2, 2);
        fs::remove_file(dir.path().join(name)).unwrap();
        let err = load_dir(dir.path()).unwrap_err();
        match &err {
            DataError::MissingFile { path, .. } => assert!(path.ends_with(name)),
            other => panic!("expected MissingFile for {name}, got {other:?}"),
        }
        let msg = err.to_string();
        assert!(msg.contains(name), "{msg}");
        assert!(msg.contains("cargo xtask download"), "{msg}");
        assert!(msg.contains("CIFAR10_DIR"), "{msg}");
    }
}

#[test]
fn truncated_file_names_the_record() {
    let (dir, _) = written(20, 4, 4);
    let path = dir.path().join(TRAIN_FILES[1]);
    let bytes = fs::read(&path).unwrap();
    assert_eq!(bytes.len(), 4 * RECORD_BYTES);
    fs::write(&path, &bytes[..bytes.len() - 100]).unwrap();
    let err = load_dir(dir.path()).unwrap_err();
    match &err {
        DataError::TruncatedFile {
            path: p,
            record,
            partial,
            ..
        } => {
            assert_eq!(p, &path);
            assert_eq!((*record, *partial), (3, RECORD_BYTES - 100));
        }
        other => panic!("expected TruncatedFile, got {other:?}"),
    }
    let msg = err.to_string();
    assert!(msg.contains("data_batch_2.bin"), "{msg}");
    assert!(msg.contains("record 3"), "{msg}");
    assert!(msg.contains("3073"), "{msg}");
    assert!(msg.contains("cargo xtask download"), "{msg}");

    // A file shorter than one record.
    fs::write(&path, [1u8; 10]).unwrap();
    assert!(matches!(
        read_batch_file(&path),
        Err(DataError::TruncatedFile {
            record: 0,
            partial: 10,
            ..
        })
    ));
}

#[test]
fn out_of_range_label_names_file_and_record() {
    let (dir, _) = written(20, 4, 4);
    let path = dir.path().join(TRAIN_FILES[2]);
    let mut bytes = fs::read(&path).unwrap();
    bytes[2 * RECORD_BYTES] = 11;
    fs::write(&path, bytes).unwrap();
    let err = load_dir(dir.path()).unwrap_err();
    assert!(
        matches!(&err, DataError::BadLabelInFile { path: p, record: 2, label: 11 } if p == &path),
        "{err:?}"
    );
    let msg = err.to_string();
    assert!(msg.contains("data_batch_3.bin"), "{msg}");
    assert!(msg.contains("record 2"), "{msg}");
    assert!(msg.contains("label 11"), "{msg}");
}

#[test]
fn bad_class_name_file_is_rejected() {
    let (dir, _) = written(5, 1, 1);
    fs::write(dir.path().join(META_FILE), "cat\ndog\n").unwrap();
    let err = load_dir(dir.path()).unwrap_err();
    assert!(matches!(err, DataError::BadMeta { .. }), "{err:?}");
    assert!(err.to_string().contains(META_FILE));
}

#[test]
fn write_dir_rejects_too_few_records_per_file() {
    let data = synthetic::generate(11, 1, 0);
    let dir = tempfile::tempdir().unwrap();
    let err = write_dir(dir.path(), &data, 2).unwrap_err();
    assert!(
        matches!(
            err,
            DataError::InvalidArgument {
                name: "records_per_file",
                ..
            }
        ),
        "{err:?}"
    );
    write_dir(dir.path(), &data, 3).unwrap();
}

#[test]
fn image_set_validates() {
    assert!(matches!(
        ImageSet::new(vec![0; IMAGE_BYTES * 2], vec![1]),
        Err(DataError::LengthMismatch {
            images: 6144,
            labels: 1
        })
    ));
    assert!(matches!(
        ImageSet::new(vec![0; IMAGE_BYTES * 2], vec![1, 10]),
        Err(DataError::BadLabel {
            index: 1,
            label: 10
        })
    ));
    let set = ImageSet::new((0..2 * IMAGE_BYTES).map(|i| i as u8).collect(), vec![3, 9]).unwrap();
    assert_eq!(set.len(), 2);
    assert_eq!(set.image(1)[0], (IMAGE_BYTES % 256) as u8);
    let mut counts = [0; NUM_CLASSES];
    counts[3] = 1;
    counts[9] = 1;
    assert_eq!(set.class_counts(), counts);
    let swapped = set.subset(&[1, 0]);
    assert_eq!(swapped.labels(), [9, 3]);
    assert_eq!(swapped.image(0), set.image(1));
    assert_ne!(swapped.checksum(), set.checksum());
    assert_eq!(set.subset(&[0, 1]).checksum(), set.checksum());
    assert_eq!(set.checksum().len(), 64);
}

/// The real data set, when `CIFAR10_DIR` points at it.
#[test]
fn real_cifar10_when_available() {
    let Some(dir) =
        muq_data::cifar::real_data_for_test("real_cifar10_when_available", &workspace_root())
    else {
        return;
    };
    let data = load_dir(&dir).unwrap();
    assert_eq!(data.train.len(), 50_000);
    assert_eq!(data.test.len(), 10_000);
    assert_eq!(data.train.class_counts(), [5_000; NUM_CLASSES]);
    assert_eq!(data.test.class_counts(), [1_000; NUM_CLASSES]);
    assert_eq!(data.class_names, muq_data::CLASS_NAMES);
    eprintln!(
        "real CIFAR-10 at {}: train {}, test {}",
        dir.display(),
        data.train.checksum(),
        data.test.checksum()
    );
}

/// The workspace root, which a relative `CIFAR10_DIR` is read from.
fn workspace_root() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// A gated test says that it did not run, on stderr and in the file
/// `.ci/run` lists after the tests (`MUQ_GATED_LOG`).
#[test]
fn a_gated_test_records_that_it_did_not_run() {
    let tmp = tempfile::tempdir().unwrap();
    let log = tmp.path().join("gated.log");
    let out = std::process::Command::new(std::env::current_exe().unwrap())
        .args(["real_cifar10_when_available", "--exact", "--nocapture"])
        .env_remove(muq_data::cifar::DIR_VAR)
        .env(muq_data::cifar::GATED_LOG_VAR, &log)
        .output()
        .unwrap();
    assert!(out.status.success());
    let text = std::fs::read_to_string(&log).unwrap();
    assert_eq!(text.lines().count(), 1, "{text}");
    assert!(
        text.starts_with("SKIPPED real_cifar10_when_available: CIFAR10_DIR is not set"),
        "{text}"
    );
    assert!(String::from_utf8_lossy(&out.stderr).contains("SKIPPED real_cifar10_when_available"));
}
