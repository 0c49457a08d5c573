//! The Mann-Whitney U test (two-sided, normal approximation with tie and continuity corrections) that
//! the reporting view uses to say whether an endpoint's durations really changed between two intervals.
//! Durations are skewed and heavy-tailed, so a rank test fits where a t-test would not.

/// The outcome of [`test`].
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct MannWhitney {
    /// U of the first sample: how often one of its values beats one of the second's (ties count 1/2).
    pub u: f64,
    /// Two-sided p-value.
    pub p_value: f64,
}

/// Fewest values per side for the normal approximation to mean anything.
pub const MIN_SAMPLE: usize = 5;

/// Tests whether `a` and `b` come from the same distribution; `None` when a side has fewer than
/// [`MIN_SAMPLE`] values or every value is equal.
pub fn test(a: &[f64], b: &[f64]) -> Option<MannWhitney> {
    let (n1, n2) = (a.len(), b.len());
    if n1 < MIN_SAMPLE || n2 < MIN_SAMPLE {
        return None;
    }
    let mut all: Vec<(f64, bool)> = a
        .iter()
        .map(|&v| (v, true))
        .chain(b.iter().map(|&v| (v, false)))
        .collect();
    all.sort_by(|x, y| x.0.total_cmp(&y.0));
    let n = all.len();
    // Average ranks over ties; the tie term corrects the variance.
    let (mut rank_sum_a, mut ties) = (0.0, 0.0);
    let mut i = 0;
    while i < n {
        let mut j = i;
        while j + 1 < n && all[j + 1].0 == all[i].0 {
            j += 1;
        }
        let count = (j - i + 1) as f64;
        let rank = (i + j) as f64 / 2.0 + 1.0;
        rank_sum_a += rank * all[i..=j].iter().filter(|v| v.1).count() as f64;
        ties += count * count * count - count;
        i = j + 1;
    }
    let (n1f, n2f, nf) = (n1 as f64, n2 as f64, n as f64);
    let u = rank_sum_a - n1f * (n1f + 1.0) / 2.0;
    let mean = n1f * n2f / 2.0;
    let variance = n1f * n2f / 12.0 * ((nf + 1.0) - ties / (nf * (nf - 1.0)));
    if variance <= 0.0 {
        return None;
    }
    let diff = (u - mean).abs();
    let z = (diff - 0.5).max(0.0) / variance.sqrt();
    Some(MannWhitney {
        u,
        p_value: erfc(z / std::f64::consts::SQRT_2).min(1.0),
    })
}

/// The complementary error function, by the Chebyshev fit of Numerical Recipes (`erfcc`): relative
/// error below 1.2e-7 everywhere, far finer than a significance threshold needs.
fn erfc(x: f64) -> f64 {
    let z = x.abs();
    let t = 1.0 / (1.0 + 0.5 * z);
    let poly = -z * z - 1.265_512_23
        + t * (1.000_023_68
            + t * (0.374_091_96
                + t * (0.096_784_18
                    + t * (-0.186_288_06
                        + t * (0.278_868_07
                            + t * (-1.135_203_98
                                + t * (1.488_515_87 + t * (-0.822_152_23 + t * 0.170_872_77))))))));
    let r = t * poly.exp();
    if x >= 0.0 {
        r
    } else {
        2.0 - r
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `expect`: (U, p) as scipy 1.18 computes them: scipy.stats.mannwhitneyu(a, b,
    /// alternative="two-sided", method="asymptotic", use_continuity=True).
    fn check(a: &[f64], b: &[f64], expect: Option<(f64, f64)>) {
        let got = test(a, b);
        match (got, expect) {
            (Some(g), Some((u, p))) => {
                assert!((g.u - u).abs() < 1e-9, "U {} vs {u}", g.u);
                assert!((g.p_value - p).abs() < 1e-6, "p {} vs {p}", g.p_value);
            }
            (None, None) => {}
            (g, e) => panic!("got {g:?}, expected {e:?}"),
        }
    }

    #[test]
    fn matches_scipy() {
        // Disjoint samples: every value of b beats every value of a.
        check(
            &[1.0, 2.0, 3.0, 4.0, 5.0],
            &[6.0, 7.0, 8.0, 9.0, 10.0],
            Some((0.0, 0.012_185_780_355_344_813)),
        );
        // Interleaved with ties across the samples.
        check(
            &[1.0, 2.0, 2.0, 3.0, 5.0, 8.0],
            &[2.0, 3.0, 4.0, 4.0, 6.0, 7.0, 9.0],
            Some((12.5, 0.249_159_056_062_730_37)),
        );
        // The same sample: no difference at all.
        check(
            &[1.0, 2.0, 3.0, 4.0, 5.0],
            &[1.0, 2.0, 3.0, 4.0, 5.0],
            Some((12.5, 1.0)),
        );
    }

    #[test]
    fn refuses_tiny_or_constant_samples() {
        check(&[1.0, 2.0], &[3.0, 4.0, 5.0, 6.0, 7.0], None);
        check(&[1.0; 6], &[1.0; 7], None);
    }

    #[test]
    fn erfc_is_accurate() {
        for (x, want) in [
            (0.0, 1.0),
            (0.5, 0.479_500_122_186_953_5),
            (1.0, 0.157_299_207_050_285_13),
            (2.0, 0.004_677_734_981_047_266),
            (-1.0, 1.842_700_792_949_715),
        ] {
            assert!(
                (erfc(x) - want).abs() < 2e-7 * want.max(1e-3),
                "erfc({x}) = {}",
                erfc(x)
            );
        }
    }
}
