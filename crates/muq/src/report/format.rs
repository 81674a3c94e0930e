//! Number formatting shared by the renderers: fixed decimals, never
//! `-0.0000`.

/// `x` with 4 decimals, never `-0.0000`.
pub(super) fn f4(x: f64) -> String {
    let s = format!("{x:.4}");
    if s == "-0.0000" {
        "0.0000".to_string()
    } else {
        s
    }
}

/// A signed difference with 4 decimals (`+0.0123`, `-0.0040`, `0.0000`).
pub(super) fn d4(x: f64) -> String {
    let s = format!("{x:+.4}");
    if s == "-0.0000" || s == "+0.0000" {
        "0.0000".to_string()
    } else {
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fixed_formatting_has_no_negative_zero() {
        assert_eq!(f4(-0.000_01), "0.0000");
        assert_eq!(f4(0.015_44), "0.0154");
        assert_eq!(d4(-0.000_01), "0.0000");
        assert_eq!(d4(0.012_34), "+0.0123");
        assert_eq!(d4(-0.004), "-0.0040");
    }
}
