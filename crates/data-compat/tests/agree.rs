//! muq-data's reader and candle-datasets' `vision::cifar::load_dir` read the
//! same bytes and labels from a standard 10,000-records-per-file layout.

use muq_data::cifar::{TEST_FILE, TRAIN_FILES};
use muq_data::{Cifar10, RECORD_BYTES, load_dir, synthetic, write_dir};

fn written(n_train: usize, n_test: usize, per_file: usize) -> (tempfile::TempDir, Cifar10) {
    let dir = tempfile::tempdir().unwrap();
    let data = synthetic::generate(n_train, n_test, 7);
    write_dir(dir.path(), &data, per_file).unwrap();
    (dir, data)
}

fn records(path: &std::path::Path) -> u64 {
    std::fs::metadata(path).unwrap().len() / RECORD_BYTES as u64
}

#[test]
fn agrees_with_candle_datasets_on_the_standard_layout() {
    let (dir, data) = written(50_000, 10_000, 10_000);
    for f in TRAIN_FILES.iter().chain([&TEST_FILE]) {
        assert_eq!(records(&dir.path().join(f)), 10_000, "{f}");
    }
    let ours = load_dir(dir.path()).unwrap();
    assert_eq!(ours, data);
    let theirs = candle_datasets::vision::cifar::load_dir(dir.path()).unwrap();
    for (set, images, labels) in [
        (&ours.train, &theirs.train_images, &theirs.train_labels),
        (&ours.test, &theirs.test_images, &theirs.test_labels),
    ] {
        assert_eq!(images.dims(), [set.len(), 3, 32, 32]);
        // candle-datasets gives f32 in [0, 1]; take both back to bytes.
        let theirs_bytes: Vec<u8> = images
            .flatten_all()
            .unwrap()
            .to_vec1::<f32>()
            .unwrap()
            .into_iter()
            .map(|v| (v * 255.0).round() as u8)
            .collect();
        assert!(theirs_bytes == set.images(), "image bytes differ");
        assert_eq!(labels.to_vec1::<u8>().unwrap(), set.labels());
    }
}
