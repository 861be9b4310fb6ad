//! Detector quality against labels: counts at each risk level, ROC and PR curves with their
//! areas, bootstrap confidence intervals, breakdowns by type and language, time to first alert.

use std::collections::BTreeMap;

use rand::{Rng, SeedableRng};
use serde::Serialize;

/// One scored call, as the metrics need it.
#[derive(Debug, Clone)]
pub struct Scored {
    pub is_scam: bool,
    pub score: f64,
    /// 0 none, 1 suspected, 2 high.
    pub level: u8,
    pub kind: Option<String>,
    pub lang: Option<String>,
    pub first_alert_s: Option<f64>,
}

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Binary {
    pub tp: usize,
    pub fp: usize,
    pub fn_: usize,
    pub tn: usize,
    pub precision: f64,
    pub recall: f64,
    pub f1: f64,
    pub accuracy: f64,
    pub fpr: f64,
}

pub fn binary(rows: &[Scored], min_level: u8) -> Binary {
    let (mut tp, mut fp, mut fn_, mut tn) = (0, 0, 0, 0);
    for r in rows {
        match (r.is_scam, r.level >= min_level) {
            (true, true) => tp += 1,
            (true, false) => fn_ += 1,
            (false, true) => fp += 1,
            (false, false) => tn += 1,
        }
    }
    let div = |a: usize, b: usize| if b == 0 { 0.0 } else { a as f64 / b as f64 };
    let precision = div(tp, tp + fp);
    let recall = div(tp, tp + fn_);
    let f1 = if precision + recall == 0.0 {
        0.0
    } else {
        2.0 * precision * recall / (precision + recall)
    };
    Binary {
        tp,
        fp,
        fn_,
        tn,
        precision,
        recall,
        f1,
        accuracy: div(tp + tn, tp + fp + fn_ + tn),
        fpr: div(fp, fp + tn),
    }
}

/// Cumulative (true, false) positives as the threshold falls through each distinct score.
fn sweep(rows: &[Scored]) -> Vec<(f64, f64)> {
    let mut sorted: Vec<&Scored> = rows.iter().collect();
    sorted.sort_by(|a, b| b.score.total_cmp(&a.score));
    let mut out = Vec::new();
    let (mut tp, mut fp) = (0.0, 0.0);
    let mut i = 0;
    while i < sorted.len() {
        let s = sorted[i].score;
        while i < sorted.len() && sorted[i].score == s {
            if sorted[i].is_scam {
                tp += 1.0
            } else {
                fp += 1.0
            }
            i += 1;
        }
        out.push((tp, fp));
    }
    out
}

/// ROC curve points (fpr, tpr), from the highest threshold down, ties taken together.
pub fn roc_curve(rows: &[Scored]) -> Vec<(f64, f64)> {
    let pos = rows.iter().filter(|r| r.is_scam).count() as f64;
    let neg = rows.len() as f64 - pos;
    let rate = |x: f64, n: f64| if n > 0.0 { x / n } else { 0.0 };
    std::iter::once((0.0, 0.0))
        .chain(
            sweep(rows)
                .into_iter()
                .map(|(tp, fp)| (rate(fp, neg), rate(tp, pos))),
        )
        .collect()
}

/// Trapezoidal area under the ROC curve (equals the Mann-Whitney probability, ties half).
pub fn roc_auc(rows: &[Scored]) -> f64 {
    roc_curve(rows)
        .windows(2)
        .map(|w| (w[1].0 - w[0].0) * (w[1].1 + w[0].1) / 2.0)
        .sum()
}

/// Precision-recall points (recall, precision) at each distinct threshold.
pub fn pr_curve(rows: &[Scored]) -> Vec<(f64, f64)> {
    let pos = rows.iter().filter(|r| r.is_scam).count() as f64;
    if pos == 0.0 {
        return Vec::new();
    }
    sweep(rows)
        .into_iter()
        .map(|(tp, fp)| (tp / pos, tp / (tp + fp)))
        .collect()
}

/// Average precision: sum over thresholds of (recall step) x precision.
pub fn pr_auc(rows: &[Scored]) -> f64 {
    let mut prev_recall = 0.0;
    pr_curve(rows)
        .into_iter()
        .map(|(r, p)| {
            let a = (r - prev_recall) * p;
            prev_recall = r;
            a
        })
        .sum()
}

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Interval {
    pub low: f64,
    pub high: f64,
}

/// Percentile bootstrap 95% interval of `stat` over resampled rows (seeded: reproducible).
pub fn bootstrap(rows: &[Scored], resamples: usize, stat: impl Fn(&[Scored]) -> f64) -> Interval {
    if rows.is_empty() {
        return Interval {
            low: 0.0,
            high: 0.0,
        };
    }
    let mut rng = rand::rngs::StdRng::seed_from_u64(20251128);
    let mut values: Vec<f64> = (0..resamples)
        .map(|_| {
            let sample: Vec<Scored> = (0..rows.len())
                .map(|_| rows[rng.random_range(0..rows.len())].clone())
                .collect();
            stat(&sample)
        })
        .collect();
    values.sort_by(f64::total_cmp);
    let at = |q: f64| values[((values.len() - 1) as f64 * q).round() as usize];
    Interval {
        low: at(0.025),
        high: at(0.975),
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct Breakdown {
    pub n: usize,
    pub scam: usize,
    pub legit: usize,
    pub flagged: usize,
    /// Recall for scam groups, false-positive rate for legitimate ones, as fits.
    pub recall: Option<f64>,
    pub fpr: Option<f64>,
    pub f1: f64,
}

fn breakdown(rows: &[Scored]) -> Breakdown {
    let b = binary(rows, 1);
    let scam = b.tp + b.fn_;
    let legit = b.fp + b.tn;
    Breakdown {
        n: rows.len(),
        scam,
        legit,
        flagged: b.tp + b.fp,
        recall: (scam > 0).then_some(b.recall),
        fpr: (legit > 0).then_some(b.fpr),
        f1: b.f1,
    }
}

pub fn group_by(rows: &[Scored], key: impl Fn(&Scored) -> String) -> BTreeMap<String, Breakdown> {
    let mut groups: BTreeMap<String, Vec<Scored>> = BTreeMap::new();
    for r in rows {
        groups.entry(key(r)).or_default().push(r.clone());
    }
    groups
        .into_iter()
        .map(|(k, v)| (k, breakdown(&v)))
        .collect()
}

#[derive(Debug, Clone, Serialize)]
pub struct AlertTimes {
    pub n: usize,
    pub median_s: Option<f64>,
    pub p90_s: Option<f64>,
    pub sorted_s: Vec<f64>,
}

pub fn alert_times(rows: &[Scored]) -> AlertTimes {
    let mut t: Vec<f64> = rows
        .iter()
        .filter(|r| r.is_scam)
        .filter_map(|r| r.first_alert_s)
        .collect();
    t.sort_by(f64::total_cmp);
    let q = |q: f64| (!t.is_empty()).then(|| t[((t.len() - 1) as f64 * q).round() as usize]);
    AlertTimes {
        n: t.len(),
        median_s: q(0.5),
        p90_s: q(0.9),
        sorted_s: t,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(is_scam: bool, score: f64) -> Scored {
        Scored {
            is_scam,
            score,
            level: if score >= 0.8 {
                2
            } else if score >= 0.5 {
                1
            } else {
                0
            },
            kind: None,
            lang: None,
            first_alert_s: None,
        }
    }

    #[test]
    fn auc_is_the_probability_a_scam_outscores_a_legit_call() {
        let rows = [s(true, 0.9), s(true, 0.6), s(false, 0.7), s(false, 0.1)];
        // Pairs: (0.9>0.7) (0.9>0.1) (0.6<0.7) (0.6>0.1): 3 of 4.
        assert!((roc_auc(&rows) - 0.75).abs() < 1e-12);
        let ties = [s(true, 0.5), s(false, 0.5)];
        assert!((roc_auc(&ties) - 0.5).abs() < 1e-12);
        let perfect = [s(true, 0.9), s(false, 0.2)];
        assert_eq!(roc_auc(&perfect), 1.0);
        assert_eq!(pr_auc(&perfect), 1.0);
    }

    #[test]
    fn counts_at_each_level() {
        let rows = [s(true, 0.9), s(true, 0.6), s(false, 0.7), s(false, 0.1)];
        let b = binary(&rows, 1);
        assert_eq!((b.tp, b.fp, b.fn_, b.tn), (2, 1, 0, 1));
        assert!((b.f1 - 0.8).abs() < 1e-12);
        let h = binary(&rows, 2);
        assert_eq!((h.tp, h.fp, h.fn_, h.tn), (1, 0, 1, 2));
        let ci = bootstrap(&rows, 200, |r| binary(r, 1).f1);
        assert!(ci.low <= 0.8 && 0.8 <= ci.high, "{ci:?}");
    }
}
