//! The SVC membership-inference attack of SalUn / Unlearn-Sparse.

use linfa::Dataset;
use linfa::traits::{Fit, Predict};
use linfa_svm::Svm;
use ndarray::{Array1, Array2};
use serde::{Deserialize, Serialize};

use crate::error::{EfficacyError, Result};
use crate::features::{MiaFeature, check_labels, check_probs, features_unchecked};

/// One labelled set of softmax probabilities: a row-major `n × num_classes`
/// probability matrix and one label per row.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct MiaSet<'a> {
    /// Row-major probabilities, `n × num_classes`, each in `[0, 1]`.
    pub probs: &'a [f64],
    /// One label per row, each `< num_classes`.
    pub labels: &'a [usize],
}

impl<'a> MiaSet<'a> {
    /// Pairs probabilities with labels (checked when used).
    pub fn new(probs: &'a [f64], labels: &'a [usize]) -> Self {
        MiaSet { probs, labels }
    }
}

/// How `gamma` of the RBF kernel `exp(−gamma·‖x − x'‖²)` is chosen.
#[derive(Debug, Clone, Copy, PartialEq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Gamma {
    /// scikit-learn's `gamma='auto'`: `1 / n_features` (1 for the scalar
    /// features, `1 / num_classes` for [`MiaFeature::Prob`]). The reference's
    /// choice.
    #[default]
    Auto,
    /// A fixed value (> 0).
    Value(f64),
}

/// The SVC's parameters. The default is the reference's
/// `SVC(C=3, gamma='auto', kernel='rbf')` with scikit-learn's default
/// `tol=1e-3`. (scikit-learn also shrinks by default; this does not — see
/// [`svc_attack`] — which changes the work done, not the solution beyond `tol`.)
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct SvcParams {
    /// The penalty `C` (> 0); 3 in the reference.
    pub c: f64,
    /// The RBF kernel's `gamma`.
    pub gamma: Gamma,
    /// Stopping tolerance on the maximal KKT violation (libsvm's `eps`).
    pub tol: f64,
    /// The most shadow rows (members + non-members) accepted: the dense
    /// kernel matrix takes `8·n²` bytes. Larger inputs are an error
    /// ([`EfficacyError::ShadowTooLarge`]), never silently subsampled.
    pub max_shadow_rows: usize,
}

impl Default for SvcParams {
    fn default() -> Self {
        SvcParams {
            c: 3.0,
            gamma: Gamma::Auto,
            tol: 1e-3,
            max_shadow_rows: 16_000,
        }
    }
}

/// The SVC attack's outcome on the target set.
#[derive(Debug, Clone, PartialEq)]
pub struct MiaOutcome {
    /// MIA-efficacy: the fraction of target rows predicted non-member,
    /// `1 − mean(predicted_member)`.
    pub efficacy: f64,
    /// Per target row: `true` where the SVC says member (scikit-learn's
    /// `predict` = 1).
    pub predicted_member: Vec<bool>,
    /// Per target row: the decision value, with scikit-learn's sign
    /// (`decision_function`: > 0 leans member; exactly 0 predicts member, as
    /// scikit-learn does).
    pub decision: Vec<f64>,
    /// Number of support vectors (`n_support_.sum()` in scikit-learn).
    pub n_support: usize,
}

/// MIA-efficacy of `target` under the SVC attack on `feature`: an RBF SVC
/// trained to tell `shadow_members` (label 1; in a run, retained training
/// images) from `shadow_nonmembers` (label 0; test images), applied to the
/// target (forget) set; the fraction it calls non-member. Higher means the
/// forget set looks less like training data (more "forgotten"); the
/// retrain-from-scratch oracle's value is the reference point.
///
/// This is the reference's `SVC_fit_predict(shadow_train, shadow_test,
/// target_train=empty, target_test=forget)` path, i.e.
/// `1 - clf.predict(X_target).mean()` with
/// `clf = SVC(C=3, gamma='auto', kernel='rbf')` — SalUn's
/// `SVC_MIA_forget_efficacy[feature]`.
///
/// ```
/// use muq_efficacy::{mia_efficacy, MiaFeature, MiaSet};
/// // Members confident in their label, non-members not.
/// let members = [0.95, 0.05, 0.9, 0.1, 0.05, 0.95, 0.1, 0.9];
/// let nonmembers = [0.6, 0.4, 0.45, 0.55, 0.5, 0.5, 0.35, 0.65];
/// let labels = [0, 0, 1, 1];
/// let forget = [0.55, 0.45, 0.4, 0.6];
/// let e = mia_efficacy(
///     MiaFeature::Confidence,
///     2,
///     MiaSet::new(&members, &labels),
///     MiaSet::new(&nonmembers, &labels),
///     MiaSet::new(&forget, &[0, 1]),
/// )?;
/// assert_eq!(e, 1.0); // both forget rows look like non-members
/// # Ok::<(), muq_efficacy::EfficacyError>(())
/// ```
///
/// # Errors
/// For each set, named "shadow members", "shadow non-members" or "target":
/// [`EfficacyError::Empty`], [`EfficacyError::Ragged`],
/// [`EfficacyError::NaN`], [`EfficacyError::NotAProbability`],
/// [`EfficacyError::LengthMismatch`] (labels), and
/// [`EfficacyError::LabelOutOfRange`]; [`EfficacyError::ZeroClasses`];
/// [`EfficacyError::ShadowTooLarge`] above the default 16,000 shadow rows.
pub fn mia_efficacy(
    feature: MiaFeature,
    num_classes: usize,
    shadow_members: MiaSet<'_>,
    shadow_nonmembers: MiaSet<'_>,
    target: MiaSet<'_>,
) -> Result<f64> {
    mia_efficacy_with(
        feature,
        num_classes,
        shadow_members,
        shadow_nonmembers,
        target,
        &SvcParams::default(),
    )
    .map(|o| o.efficacy)
}

/// [`mia_efficacy`] with explicit SVC parameters, returning the per-row
/// predictions and decision values as well.
///
/// # Errors
/// As [`mia_efficacy`], plus [`EfficacyError::InvalidParameter`] for a
/// non-positive or non-finite `c`, `gamma` or `tol`.
pub fn mia_efficacy_with(
    feature: MiaFeature,
    num_classes: usize,
    shadow_members: MiaSet<'_>,
    shadow_nonmembers: MiaSet<'_>,
    target: MiaSet<'_>,
    params: &SvcParams,
) -> Result<MiaOutcome> {
    let features = |what, set: MiaSet<'_>| -> Result<Vec<f64>> {
        let rows = check_probs(what, set.probs, num_classes)?;
        check_labels(what, set.labels, rows, num_classes)?;
        Ok(features_unchecked(
            feature,
            set.probs,
            num_classes,
            set.labels,
        ))
    };
    let members = features("shadow members", shadow_members)?;
    let nonmembers = features("shadow non-members", shadow_nonmembers)?;
    let target = features("target", target)?;
    svc_attack(
        &members,
        &nonmembers,
        &target,
        feature.width(num_classes),
        params,
    )
}

/// The attack on precomputed features (row-major, `width` per row): fit the
/// RBF SVC on `members` (label 1) against `nonmembers` (label 0) and
/// classify `target`. [`mia_efficacy_with`] is this after
/// [`crate::mia_features`].
///
/// # The SVM
///
/// The SVM is [linfa-svm](https://docs.rs/linfa-svm)'s C-SVC. It is chosen
/// over `smartcore` because its solver is a port of libsvm's — the solver
/// behind scikit-learn's `SVC`: SMO with second-order working-set selection,
/// the same bias (`rho`) computation and the same stopping rule (maximal KKT
/// violation `< tol`) — so with `tol = 1e-3` it converges to the same
/// solution as scikit-learn and reproduces its predictions: on the fixture
/// (`crates/efficacy/tests/mia_sklearn.rs`) every target prediction and the
/// number of support vectors agree for all five features, decision values
/// to 1.4e-3. smartcore's SVC uses a different (LaSVM-style) solver.
/// linfa's Gaussian kernel is `exp(−‖x − x'‖² / eps)`, so `gamma` is passed
/// as `eps = 1 / gamma`. libsvm's shrinking heuristic is off: linfa-svm
/// 0.8.1's implementation of it underflows (it panicked on the fixture);
/// shrinking changes the work done, not the solution beyond `tol`.
///
/// Memory: linfa-kernel stores the *dense* `n × n` kernel matrix of the
/// shadow set in `f64`, `8·n²` bytes: 0.8 GB at the run's n = 10,000.
/// [`SvcParams::max_shadow_rows`] (default 16,000, 1.9 GiB) turns larger
/// inputs into an error rather than subsampling them silently.
///
/// Time: at n = 10,000 shadow rows and 5,000 target rows one fit + predict
/// took 8.5 s (correctness) to 35 s (entropy), 14 s for confidence and
/// prob, in release mode on a 2-core AMD EPYC shared with other jobs (load
/// average ≈ 6), peak RSS 0.79 GB (`examples/mia_timing.rs`). Probably (not
/// profiled) shrinking being off and linfa reading kernel columns with a
/// stride from a row-major matrix make it slower
/// than scikit-learn would be; the fixture size takes well under a second.
///
/// # Errors
/// [`EfficacyError::Empty`] or [`EfficacyError::Ragged`] for a feature
/// matrix (named "member features", "non-member features", "target
/// features"), [`EfficacyError::NaN`] or [`EfficacyError::NonFinite`] for a
/// NaN or infinite feature,
/// [`EfficacyError::InvalidParameter`], [`EfficacyError::ShadowTooLarge`],
/// [`EfficacyError::Svm`] if linfa-svm rejects the problem.
pub fn svc_attack(
    members: &[f64],
    nonmembers: &[f64],
    target: &[f64],
    width: usize,
    params: &SvcParams,
) -> Result<MiaOutcome> {
    let n_members = check_features("member features", members, width)?;
    let n_nonmembers = check_features("non-member features", nonmembers, width)?;
    let n_target = check_features("target features", target, width)?;
    let gamma = match params.gamma {
        Gamma::Auto => 1.0 / width as f64,
        Gamma::Value(g) => g,
    };
    for (name, value) in [("c", params.c), ("gamma", gamma), ("tol", params.tol)] {
        if !(value.is_finite() && value > 0.0) {
            return Err(EfficacyError::InvalidParameter { name, value });
        }
    }
    let rows = n_members + n_nonmembers;
    if rows > params.max_shadow_rows {
        return Err(EfficacyError::ShadowTooLarge {
            rows,
            max: params.max_shadow_rows,
            gib: 8.0 * (rows as f64).powi(2) / f64::from(1u32 << 30),
        });
    }

    let mut x = Vec::with_capacity(rows * width);
    x.extend_from_slice(members);
    x.extend_from_slice(nonmembers);
    let x = Array2::from_shape_vec((rows, width), x).expect("shape checked above");
    let y: Array1<bool> = (0..rows).map(|i| i < n_members).collect();
    let model = Svm::<f64, bool>::params()
        .pos_neg_weights(params.c, params.c)
        .gaussian_kernel(1.0 / gamma)
        .eps(params.tol)
        // Shrinking off: linfa-svm 0.8.1's `do_shrinking` fixes its loop bound
        // (`for i in 0..self.nactive()`) where libsvm re-reads `active_size`,
        // and underflows `nactive` on real problems (it panicked on the
        // fixture). Shrinking only speeds libsvm up; the solution is the same
        // up to `tol`.
        .shrinking(false)
        .fit(&Dataset::new(x, y))
        .map_err(|e| EfficacyError::Svm(e.to_string()))?;

    let xt = Array2::from_shape_vec((n_target, width), target.to_vec()).expect("shape checked");
    let decision: Vec<f64> = xt
        .outer_iter()
        .map(|row| model.weighted_sum(&row) - model.rho)
        .collect();
    let predicted_member: Vec<bool> = decision.iter().map(|&d| d >= 0.0).collect();
    debug_assert_eq!(
        predicted_member,
        model.predict(&xt).to_vec(),
        "linfa's predict and its decision value agree"
    );
    let members_found = predicted_member.iter().filter(|&&m| m).count();
    Ok(MiaOutcome {
        efficacy: 1.0 - members_found as f64 / n_target as f64,
        predicted_member,
        decision,
        n_support: model.nsupport(),
    })
}

fn check_features(what: &'static str, x: &[f64], width: usize) -> Result<usize> {
    if x.is_empty() {
        return Err(EfficacyError::Empty { what });
    }
    if width == 0 || !x.len().is_multiple_of(width) {
        return Err(EfficacyError::Ragged {
            what,
            len: x.len(),
            width,
        });
    }
    if let Some(index) = x.iter().position(|v| v.is_nan()) {
        return Err(EfficacyError::NaN { what, index });
    }
    if let Some(index) = x.iter().position(|v| v.is_infinite()) {
        let value = x[index];
        return Err(EfficacyError::NonFinite { what, index, value });
    }
    Ok(x.len() / width)
}
