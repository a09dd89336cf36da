//! Figures over rounds: the median with its min–max spread, and ratios (or differences)
//! taken within each round before their median, so both sides of a ratio ran seconds apart.

use std::collections::BTreeMap;

use serde::Serialize;

/// Per-round values of one series, by round.
pub type Series = BTreeMap<usize, f64>;

/// A figure over rounds: median, min and max, and every round's value (in round order).
#[derive(Serialize, Clone)]
pub struct Spread {
    pub median: f64,
    pub min: f64,
    pub max: f64,
    pub rounds: Vec<f64>,
}

impl Spread {
    /// `None` for no rounds.
    pub fn of(rounds: Vec<f64>) -> Option<Self> {
        if rounds.is_empty() {
            return None;
        }
        let mut sorted = rounds.clone();
        sorted.sort_by(f64::total_cmp);
        let n = sorted.len();
        let median = if n % 2 == 1 {
            sorted[n / 2]
        } else {
            (sorted[n / 2 - 1] + sorted[n / 2]) / 2.0
        };
        Some(Self {
            median,
            min: sorted[0],
            max: sorted[n - 1],
            rounds,
        })
    }

    /// `a ÷ b` (or another combination) within each round both have.
    pub fn per_round(
        a: &BTreeMap<usize, f64>,
        b: &BTreeMap<usize, f64>,
        f: fn(f64, f64) -> f64,
    ) -> Option<Self> {
        Self::of(
            a.iter()
                .filter_map(|(round, x)| Some(f(*x, *b.get(round)?)))
                .collect(),
        )
    }
}

impl Spread {
    /// As the A/A control's figure (1× in truth): the largest distance from 1× of any of its
    /// rounds, what the method reads as a difference where there is none.
    pub fn noise(&self) -> f64 {
        (self.max - 1.0).abs().max((1.0 - self.min).abs())
    }
}

/// The report's one definition of "within noise" (BENCHMARKS-METHOD.md): a ratio whose
/// median misses its line by no more, relative to the line, than `noise` (the A/A control's,
/// [`Spread::noise`]).
pub fn within_noise(median: f64, limit: f64, noise: f64) -> bool {
    (median / limit - 1.0).abs() <= noise
}

/// `a ÷ b`, for [`Spread::per_round`].
pub fn ratio(a: f64, b: f64) -> f64 {
    a / b
}

/// `a − b`, for [`Spread::per_round`].
pub fn difference(a: f64, b: f64) -> f64 {
    a - b
}
