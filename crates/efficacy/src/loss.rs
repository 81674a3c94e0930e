//! The loss-threshold membership-inference attack, as a ROC AUC.

use crate::error::{EfficacyError, Result};

/// ROC AUC of per-sample loss as a membership score: the probability that a
/// random forget-set sample has a *lower* loss than a random held-out sample,
/// ties counting one half,
///
/// `AUC = P(l_forget < l_heldout) + ½·P(l_forget = l_heldout)`,
///
/// i.e. the Mann–Whitney U statistic of the held-out losses over the forget
/// losses divided by `n_forget · n_heldout`. Members (low loss) score high:
/// 1.0 means every forget sample has a lower loss than every held-out one
/// (the forget set is still recognisably trained on), 0.5 means the losses
/// are indistinguishable (the ideal after unlearning when the held-out set is
/// drawn from the same distribution), below 0.5 means the forget set now has
/// *higher* loss than unseen data. `O((n + m) log m)`: the held-out losses
/// are sorted once and each forget loss is located by binary search.
///
/// ```
/// use muq_efficacy::loss_auc;
/// assert_eq!(loss_auc(&[0.1, 0.2], &[0.3, 0.4])?, 1.0);
/// assert_eq!(loss_auc(&[0.5], &[0.5])?, 0.5);
/// # Ok::<(), muq_efficacy::EfficacyError>(())
/// ```
///
/// # Errors
/// [`EfficacyError::Empty`] when either set is empty, [`EfficacyError::NaN`]
/// for a NaN loss (infinite losses are allowed and rank as usual).
pub fn loss_auc(forget_losses: &[f64], heldout_losses: &[f64]) -> Result<f64> {
    check_losses("forget losses", forget_losses)?;
    check_losses("heldout losses", heldout_losses)?;
    let mut heldout = heldout_losses.to_vec();
    heldout.sort_unstable_by(f64::total_cmp);
    let m = heldout.len() as u64;
    // Twice the U statistic, so every count is an integer: exact up to 2^64.
    let mut twice_u: u64 = 0;
    for &f in forget_losses {
        // `<` and `<=`, not total_cmp: -0.0 and 0.0 are a tie.
        let below_or_equal = heldout.partition_point(|&h| h <= f) as u64;
        let below = heldout.partition_point(|&h| h < f) as u64;
        let greater = m - below_or_equal;
        let equal = below_or_equal - below;
        twice_u += 2 * greater + equal;
    }
    Ok(twice_u as f64 / (2.0 * forget_losses.len() as f64 * m as f64))
}

fn check_losses(what: &'static str, losses: &[f64]) -> Result<()> {
    if losses.is_empty() {
        return Err(EfficacyError::Empty { what });
    }
    if let Some(index) = losses.iter().position(|l| l.is_nan()) {
        return Err(EfficacyError::NaN { what, index });
    }
    Ok(())
}
