//! MIA-efficacy against scikit-learn, on `fixtures/mia.json`.
//!
//! The fixture holds three synthetic sets of softmax probabilities (k = 10,
//! six decimals; exact 0/1 one-hot rows, uniform rows, tied maxima and
//! duplicated rows in each): 300 shadow members (confident), 300 shadow
//! non-members (less confident) and a 200-row target whose labels use
//! classes 0–2 only (a class-restricted forget set, which exposes the
//! reference's `m_entropy` column-indexing quirk). For each of the five
//! features it holds the reference's features, and
//! `SVC(C=3, gamma='auto', kernel='rbf')`'s predictions, decision values and
//! `1 - predict(X_target).mean()` on the target.
//!
//! Made with Python 3.11.7, numpy 2.4.6, scikit-learn 1.9.1 (fresh venv,
//! `pip install numpy scikit-learn`) by this script, the features being
//! OPTML-Group/Unlearn-Saliency `Classification/evaluation/SVC_MIA.py`
//! (a6e89fd) translated from torch to numpy in float64:
//!
//! ```python
//! import json, sys
//! import numpy as np
//! import sklearn
//! from sklearn.svm import SVC
//!
//! rng = np.random.default_rng(20240515)
//! K = 10
//!
//! def softmax(z):
//!     z = z - z.max(axis=1, keepdims=True)
//!     e = np.exp(z)
//!     return e / e.sum(axis=1, keepdims=True)
//!
//! def make(n, scale_lo, scale_hi, p_correct, classes):
//!     labels = rng.choice(classes, size=n)
//!     z = rng.normal(size=(n, K))
//!     scale = rng.uniform(scale_lo, scale_hi, size=n)
//!     correct = rng.random(n) < p_correct
//!     boost = np.where(correct, labels, rng.integers(0, K, size=n))
//!     z[np.arange(n), boost] += scale
//!     p = np.round(softmax(z), 6)
//!     # exact one-hot rows (p = 1 and p = 0), uniform rows, tied maxima, duplicates
//!     m = n // 40
//!     idx = rng.choice(n, size=4 * m, replace=False)
//!     one_hot, uniform, tied, dup = np.split(idx, 4)
//!     p[one_hot] = 0.0
//!     p[one_hot, labels[one_hot]] = 1.0
//!     p[uniform] = 0.1
//!     for i in tied:
//!         j = (labels[i] + 1) % K
//!         p[i] = 0.0
//!         p[i, labels[i]] = 0.4
//!         p[i, j] = 0.4
//!         p[i, (j + 1) % K] = 0.2
//!     p[dup] = p[dup[0]]
//!     labels[dup] = labels[dup[0]]
//!     return p, labels
//!
//! def entropy(p):
//!     with np.errstate(divide="ignore", invalid="ignore"):
//!         return -np.where(p > 0, p * np.log(p), 0.0).sum(axis=-1)
//!
//! def m_entropy(p, labels):
//!     # Unlearn-Saliency's current m_entropy, line for line.
//!     with np.errstate(divide="ignore"):
//!         log_prob = np.where(p > 0, np.log(p), np.log(1e-30))
//!         reverse_prob = 1 - p
//!         log_reverse_prob = np.where(p > 0, np.log(p), np.log(1e-30))
//!     modified_probs = p.copy()
//!     modified_probs[:, labels] = reverse_prob[:, labels]
//!     modified_log_probs = log_reverse_prob.copy()
//!     modified_log_probs[:, labels] = log_prob[:, labels]
//!     return -np.sum(modified_probs * modified_log_probs, axis=-1)
//!
//! def features(kind, p, labels):
//!     if kind == "correctness":
//!         return (np.argmax(p, axis=1) == labels).astype(np.int64).reshape(len(p), -1)
//!     if kind == "confidence":
//!         return p[np.arange(len(p)), labels].reshape(len(p), -1)
//!     if kind == "entropy":
//!         return entropy(p).reshape(len(p), -1)
//!     if kind == "modified_entropy":
//!         return m_entropy(p, labels).reshape(len(p), -1)
//!     if kind == "prob":
//!         return p.reshape(len(p), -1)
//!
//! members = make(300, 3.0, 9.0, 0.95, np.arange(K))
//! nonmembers = make(300, 0.5, 6.0, 0.7, np.arange(K))
//! # the target (forget) set: three classes only, half member-like
//! target = make(200, 1.0, 8.0, 0.85, np.array([0, 1, 2]))
//! # round-trip through JSON so both sides read the same float64 values
//! sets = {name: {"probs": s[0].tolist(), "labels": s[1].tolist()}
//!         for name, s in [("members", members), ("nonmembers", nonmembers), ("target", target)]}
//! sets = json.loads(json.dumps(sets))
//! arr = {k: (np.array(v["probs"], dtype=np.float64), np.array(v["labels"], dtype=np.int64))
//!        for k, v in sets.items()}
//!
//! out = {
//!     "source": "python3 make_mia_fixture.py (script quoted in crates/efficacy/tests/mia_sklearn.rs)",
//!     "versions": {"python": sys.version.split()[0], "numpy": np.__version__, "scikit-learn": sklearn.__version__},
//!     "num_classes": K,
//!     **sets,
//!     "features": {},
//!     "expected": {},
//! }
//! for kind in ["confidence", "entropy", "modified_entropy", "correctness", "prob"]:
//!     xs = [features(kind, *arr[k]) for k in ["members", "nonmembers", "target"]]
//!     if kind != "prob":
//!         out["features"][kind] = {k: x[:, 0].astype(np.float64).tolist() for k, x in zip(["members", "nonmembers", "target"], xs)}
//!     X = np.concatenate([xs[0], xs[1]]).astype(np.float64)
//!     Y = np.concatenate([np.ones(len(xs[0])), np.zeros(len(xs[1]))])
//!     clf = SVC(C=3, gamma="auto", kernel="rbf")
//!     clf.fit(X, Y)
//!     pred = clf.predict(xs[2].astype(np.float64))
//!     dec = clf.decision_function(xs[2].astype(np.float64))
//!     out["expected"][kind] = {
//!         "efficacy": float(1 - pred.mean()),
//!         "predictions": pred.astype(int).tolist(),
//!         "decision_function": [float(round(d, 9)) for d in dec],
//!         "n_support": clf.n_support_.tolist(),
//!     }
//!     print(kind, out["expected"][kind]["efficacy"], clf.n_support_, "min |dec|", np.abs(dec).min())
//! json.dump(out, open(sys.argv[1], "w"), separators=(",", ":"))
//! ```
//!
//! Run as `python3 make_mia_fixture.py fixtures/mia.json`. It printed
//! (efficacy, support vectors per class, smallest |decision| on the target):
//! confidence 0.485 [174 173] 0.0153; entropy 0.58 [182 179] 0.0227;
//! modified_entropy 0.005 [199 212] 0.346; correctness 0.235 [203 203] 1.0;
//! prob 0.55 [266 267] 0.0041.
//!
//! Tolerances: features within 1e-12 relative (numpy's pairwise summation
//! orders the 10-term row sums differently); predicted labels (all 200 per
//! feature), hence the efficacy, and the number of support vectors exactly;
//! decision values within 5e-3 (measured: at most 1.4e-3, for `prob`; both
//! solvers stop at a KKT violation below `tol = 1e-3`, and linfa runs without
//! shrinking, so the dual solutions agree only to about that), well below
//! the smallest |decision| above.

use muq_efficacy::{
    MiaFeature, MiaSet, SvcParams, correctness, entropy, mia_efficacy, mia_efficacy_with,
    modified_entropy,
};
use serde_json::Value;

struct Set {
    probs: Vec<f64>,
    labels: Vec<usize>,
}

impl Set {
    fn view(&self) -> MiaSet<'_> {
        MiaSet::new(&self.probs, &self.labels)
    }
}

fn fixture() -> Value {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../../fixtures/mia.json");
    let text = std::fs::read_to_string(path).expect("read fixtures/mia.json");
    serde_json::from_str(&text).expect("parse fixtures/mia.json")
}

fn f64s(v: &Value) -> Vec<f64> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_f64().unwrap())
        .collect()
}

fn set(root: &Value, name: &str) -> Set {
    Set {
        probs: root[name]["probs"]
            .as_array()
            .unwrap()
            .iter()
            .flat_map(f64s)
            .collect(),
        labels: root[name]["labels"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_u64().unwrap() as usize)
            .collect(),
    }
}

const SETS: [&str; 3] = ["members", "nonmembers", "target"];

#[test]
fn fixture_is_what_the_tests_expect() {
    let root = fixture();
    assert_eq!(root["num_classes"], 10);
    assert_eq!(root["versions"]["scikit-learn"], "1.9.1");
    let k = 10;
    for (name, rows) in SETS.into_iter().zip([300, 300, 200]) {
        let s = set(&root, name);
        assert_eq!(s.probs.len(), rows * k, "{name}");
        assert_eq!(s.labels.len(), rows, "{name}");
    }
}

#[test]
fn features_match_the_reference() {
    let root = fixture();
    let k = 10;
    for name in SETS {
        let s = set(&root, name);
        let ours = [
            (
                "confidence",
                muq_efficacy::confidence(&s.probs, k, &s.labels).unwrap(),
            ),
            ("entropy", entropy(&s.probs, k).unwrap()),
            (
                "modified_entropy",
                modified_entropy(&s.probs, k, &s.labels).unwrap(),
            ),
            ("correctness", correctness(&s.probs, k, &s.labels).unwrap()),
        ];
        for (feature, got) in ours {
            let want = f64s(&root["features"][feature][name]);
            assert_eq!(got.len(), want.len(), "{feature}/{name}");
            for (i, (g, w)) in got.iter().zip(&want).enumerate() {
                assert!(
                    (g - w).abs() <= 1e-12 * w.abs().max(1.0),
                    "{feature}/{name} row {i}: {g} vs reference {w}"
                );
            }
        }
    }
}

#[test]
fn mia_efficacy_matches_scikit_learn_exactly() {
    let root = fixture();
    let [members, nonmembers, target] = SETS.map(|n| set(&root, n));
    for feature in MiaFeature::ALL {
        let expected = &root["expected"][feature.name()];
        let out = mia_efficacy_with(
            feature,
            10,
            members.view(),
            nonmembers.view(),
            target.view(),
            &SvcParams::default(),
        )
        .unwrap();
        let want_pred: Vec<bool> = expected["predictions"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_u64().unwrap() == 1)
            .collect();
        let differing: Vec<usize> = (0..want_pred.len())
            .filter(|&i| out.predicted_member[i] != want_pred[i])
            .collect();
        assert!(
            differing.is_empty(),
            "{feature}: {} target rows predicted differently from scikit-learn: {differing:?}",
            differing.len()
        );
        assert_eq!(
            out.efficacy,
            expected["efficacy"].as_f64().unwrap(),
            "{feature}"
        );
        let want_dec = f64s(&expected["decision_function"]);
        let worst = out
            .decision
            .iter()
            .zip(&want_dec)
            .map(|(a, b)| (a - b).abs())
            .fold(0.0, f64::max);
        assert!(
            worst <= 5e-3,
            "{feature}: decision values differ by up to {worst}"
        );
        let n_support: u64 = expected["n_support"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_u64().unwrap())
            .sum();
        assert_eq!(
            out.n_support as u64, n_support,
            "{feature}: support vectors"
        );
        let short = mia_efficacy(
            feature,
            10,
            members.view(),
            nonmembers.view(),
            target.view(),
        );
        assert_eq!(short.unwrap(), out.efficacy, "{feature}");
    }
}
