//! Small statistics helpers: the median of repeated runs, and how far it can
//! be trusted.

/// The median of `xs` (the mean of the two middle values for an even count);
/// `None` when empty or when a value is NaN.
pub fn median(xs: &[f64]) -> Option<f64> {
    let v = sorted(xs)?;
    let m = v.len() / 2;
    Some(if v.len() % 2 == 1 {
        v[m]
    } else {
        (v[m - 1] + v[m]) / 2.0
    })
}

fn sorted(xs: &[f64]) -> Option<Vec<f64>> {
    if xs.is_empty() || xs.iter().any(|x| x.is_nan()) {
        return None;
    }
    let mut v = xs.to_vec();
    v.sort_by(f64::total_cmp);
    Some(v)
}

/// A confidence interval for a median.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Interval {
    pub lo: f64,
    pub hi: f64,
    /// The probability that the interval holds the true median: at least the
    /// level asked for, or, with too few runs for that level, the most that
    /// the runs can give (the range of all of them).
    pub confidence: f64,
}

/// A distribution-free confidence interval for the median of whatever `xs`
/// were drawn from: the k-th smallest and k-th largest values, with the
/// largest k whose coverage, from the binomial distribution (each run falls
/// below the true median with probability 1/2), is at least `level`.
/// Assumes only that the runs are independent draws of one distribution;
/// no normality, so one wild run moves it by one rank at most. `None` when
/// `xs` is empty or holds a NaN.
pub fn median_ci(xs: &[f64], level: f64) -> Option<Interval> {
    let v = sorted(xs)?;
    let n = v.len();
    let coverage = |k: usize| 1.0 - 2.0 * binomial_half_cdf(n, k - 1);
    let mut k = 1;
    while k < n.div_ceil(2) && coverage(k + 1) >= level {
        k += 1;
    }
    Some(Interval {
        lo: v[k - 1],
        hi: v[n - k],
        confidence: coverage(k),
    })
}

/// P(X <= j) for X ~ Binomial(n, 1/2).
fn binomial_half_cdf(n: usize, j: usize) -> f64 {
    let mut c = 1.0; // C(n, 0)
    let mut sum = 0.0;
    for i in 0..=j.min(n) {
        if i > 0 {
            c = c * (n - i + 1) as f64 / i as f64;
        }
        sum += c;
    }
    sum / 2f64.powi(n as i32)
}

#[cfg(test)]
mod tests {
    use super::{binomial_half_cdf, median, median_ci};

    #[test]
    fn odd_even_empty() {
        assert_eq!(median(&[3.0, 1.0, 2.0]), Some(2.0));
        assert_eq!(median(&[4.0, 1.0, 2.0, 3.0]), Some(2.5));
        assert_eq!(median(&[]), None);
        assert_eq!(median(&[f64::NAN]), None);
    }

    #[test]
    fn binomial_tails() {
        assert_eq!(binomial_half_cdf(5, 0), 1.0 / 32.0);
        assert_eq!(binomial_half_cdf(5, 1), 6.0 / 32.0);
        assert_eq!(binomial_half_cdf(3, 3), 1.0);
    }

    #[test]
    fn median_interval_widens_to_the_level() {
        // Five runs cannot reach 95%: the range of all five, at 1 - 2/32.
        let ci = median_ci(&[5.0, 1.0, 4.0, 2.0, 3.0], 0.95).unwrap();
        assert_eq!((ci.lo, ci.hi), (1.0, 5.0));
        assert!((ci.confidence - 0.9375).abs() < 1e-12);
        // Nine runs: the 2nd smallest to the 2nd largest holds the median
        // with probability 1 - 2 * 10/512 = 96.1%; the 3rd to the 3rd, 82%.
        let xs: Vec<f64> = (1..=9).rev().map(f64::from).collect();
        let ci = median_ci(&xs, 0.95).unwrap();
        assert_eq!((ci.lo, ci.hi), (2.0, 8.0));
        assert!((ci.confidence - (1.0 - 20.0 / 512.0)).abs() < 1e-12);
        // A lower level narrows it.
        let ci = median_ci(&xs, 0.8).unwrap();
        assert_eq!((ci.lo, ci.hi), (3.0, 7.0));
        // One run: itself, with no confidence to speak of.
        let ci = median_ci(&[2.0], 0.95).unwrap();
        assert_eq!((ci.lo, ci.hi, ci.confidence), (2.0, 2.0, 0.0));
        assert!(median_ci(&[], 0.95).is_none());
    }
}
