//! Task metrics over predictions and gold labels: accuracy, macro-F1, agreement, Pearson,
//! Spearman (average ranks for ties), MSE and the median.

/// Share of positions where `a` and `b` hold the same class (accuracy against gold labels,
/// agreement against another model's predictions); `None` for empty input.
pub fn agreement(a: &[u32], b: &[u32]) -> Option<f64> {
    if a.is_empty() || a.len() != b.len() {
        return None;
    }
    let same = a.iter().zip(b).filter(|(x, y)| x == y).count();
    Some(same as f64 / a.len() as f64)
}

/// Macro-averaged F1 of `pred` against `gold`: per class `F1 = 2 TP / (2 TP + FP + FN)`,
/// averaged over the classes that occur in `gold` or in `pred` (scikit-learn's
/// `f1_score(average="macro")` with its default label set); a class that is predicted but never
/// gold counts with F1 = 0, one that occurs in neither is left out. `None` for empty input.
pub fn macro_f1(pred: &[u32], gold: &[u32]) -> Option<f64> {
    if pred.is_empty() || pred.len() != gold.len() {
        return None;
    }
    let classes = pred.iter().chain(gold).copied().max().unwrap_or(0) as usize + 1;
    let (mut tp, mut fp, mut fneg) = (vec![0usize; classes], vec![0; classes], vec![0; classes]);
    for (&p, &g) in pred.iter().zip(gold) {
        if p == g {
            tp[p as usize] += 1;
        } else {
            fp[p as usize] += 1;
            fneg[g as usize] += 1;
        }
    }
    let (mut sum, mut n) = (0.0, 0usize);
    for c in 0..classes {
        let denom = 2 * tp[c] + fp[c] + fneg[c];
        if denom > 0 {
            sum += 2.0 * tp[c] as f64 / denom as f64;
            n += 1;
        }
    }
    Some(sum / n as f64)
}

/// Pearson correlation; `None` for fewer than two values or a constant side.
pub fn pearson(x: &[f64], y: &[f64]) -> Option<f64> {
    let n = x.len();
    if n < 2 || n != y.len() {
        return None;
    }
    let mean = |v: &[f64]| v.iter().sum::<f64>() / n as f64;
    let (mx, my) = (mean(x), mean(y));
    let (mut sxy, mut sxx, mut syy) = (0.0, 0.0, 0.0);
    for (&a, &b) in x.iter().zip(y) {
        let (dx, dy) = (a - mx, b - my);
        sxy += dx * dy;
        sxx += dx * dx;
        syy += dy * dy;
    }
    (sxx > 0.0 && syy > 0.0).then(|| sxy / (sxx * syy).sqrt())
}

/// 1-based ranks of `v`, tied values sharing the mean of their ranks.
pub fn average_ranks(v: &[f64]) -> Vec<f64> {
    let mut order: Vec<usize> = (0..v.len()).collect();
    order.sort_by(|&a, &b| v[a].total_cmp(&v[b]));
    let mut ranks = vec![0.0; v.len()];
    let mut i = 0;
    while i < order.len() {
        let mut j = i;
        while j + 1 < order.len() && v[order[j + 1]] == v[order[i]] {
            j += 1;
        }
        // Positions i..=j (0-based) share the ranks i+1..=j+1.
        let rank = (i + j) as f64 / 2.0 + 1.0;
        for &k in &order[i..=j] {
            ranks[k] = rank;
        }
        i = j + 1;
    }
    ranks
}

/// Spearman correlation: Pearson of the average ranks (scipy's `spearmanr`).
pub fn spearman(x: &[f64], y: &[f64]) -> Option<f64> {
    if x.len() != y.len() {
        return None;
    }
    pearson(&average_ranks(x), &average_ranks(y))
}

/// Mean squared error; `None` for empty input.
pub fn mse(pred: &[f64], gold: &[f64]) -> Option<f64> {
    if pred.is_empty() || pred.len() != gold.len() {
        return None;
    }
    let sum: f64 = pred.iter().zip(gold).map(|(p, g)| (p - g) * (p - g)).sum();
    Some(sum / pred.len() as f64)
}

/// The median (mean of the middle two for an even count); `None` when empty.
pub fn median(v: &[f64]) -> Option<f64> {
    if v.is_empty() {
        return None;
    }
    let mut s = v.to_vec();
    s.sort_by(f64::total_cmp);
    let m = s.len() / 2;
    Some(if s.len() % 2 == 1 {
        s[m]
    } else {
        (s[m - 1] + s[m]) / 2.0
    })
}

/// Index of the largest value (the first on a tie).
pub fn argmax(v: &[f32]) -> u32 {
    let mut best = 0;
    for (i, &x) in v.iter().enumerate() {
        if x > v[best] {
            best = i;
        }
    }
    best as u32
}

/// Softmax of one row of logits, in f64 for the sum, as f32.
pub fn softmax(v: &[f32]) -> Vec<f32> {
    let max = v.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let e: Vec<f64> = v.iter().map(|&x| f64::from(x - max).exp()).collect();
    let sum: f64 = e.iter().sum();
    e.iter().map(|&x| (x / sum) as f32).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn close(a: f64, b: f64) {
        assert!((a - b).abs() < 1e-12, "{a} != {b}");
    }

    #[test]
    fn accuracy_and_agreement_count_equal_positions() {
        close(agreement(&[0, 1, 1, 2], &[0, 1, 2, 2]).unwrap(), 0.75);
        assert_eq!(agreement(&[], &[]), None);
        assert_eq!(agreement(&[1], &[1, 2]), None);
    }

    #[test]
    fn macro_f1_by_hand_with_a_class_never_gold() {
        // gold 0 0 1 1, pred 0 1 1 2:
        // class 0: tp 1, fp 0, fn 1 -> 2/3; class 1: tp 1, fp 1, fn 1 -> 1/2;
        // class 2: tp 0, fp 1, fn 0 -> 0 (predicted, never gold: counted);
        // class 3 occurs nowhere: left out. Macro = (2/3 + 1/2 + 0) / 3 = 7/18.
        close(macro_f1(&[0, 1, 1, 2], &[0, 0, 1, 1]).unwrap(), 7.0 / 18.0);
        // A class that is gold but never predicted: F1 0. gold 0 1, pred 0 0:
        // class 0: tp 1, fp 1 -> 2/3; class 1: fn 1 -> 0. Macro 1/3.
        close(macro_f1(&[0, 0], &[0, 1]).unwrap(), 1.0 / 3.0);
        close(macro_f1(&[3, 3], &[3, 3]).unwrap(), 1.0);
    }

    #[test]
    fn ranks_share_ties() {
        assert_eq!(
            average_ranks(&[10.0, 20.0, 10.0, 30.0, 10.0]),
            [2.0, 4.0, 2.0, 5.0, 2.0]
        );
    }

    #[test]
    fn pearson_and_spearman_by_hand() {
        // x = 1 2 3 4, y = 2 4 5 4: means 2.5, 3.75; sxy = 3.5, sxx = 5, syy = 4.75.
        let (x, y) = ([1.0, 2.0, 3.0, 4.0], [2.0, 4.0, 5.0, 4.0]);
        close(pearson(&x, &y).unwrap(), 3.5 / (5.0f64 * 4.75).sqrt());
        // Ranks of y with the tie: 1, 2.5, 4, 2.5 -> Pearson(1 2 3 4, 1 2.5 4 2.5):
        // means 2.5, 2.5; sxy = (-1.5)(-1.5) + 0 + (0.5)(1.5) + 0 = 3; sxx = 5; syy = 4.5.
        close(spearman(&x, &y).unwrap(), 3.0 / (5.0f64 * 4.5).sqrt());
        // scipy.stats.spearmanr([1,2,3,4],[2,4,5,4]) = 0.6324555320336759.
        assert!((spearman(&x, &y).unwrap() - 0.632_455_532_033_675_9).abs() < 1e-12);
        assert_eq!(pearson(&x, &[1.0; 4]), None);
        assert_eq!(spearman(&[1.0], &[2.0]), None);
    }

    #[test]
    fn mse_median_argmax_softmax() {
        close(mse(&[1.0, 2.0], &[2.0, 4.0]).unwrap(), 2.5);
        close(median(&[3.0, 1.0, 2.0]).unwrap(), 2.0);
        close(median(&[4.0, 1.0, 2.0, 3.0]).unwrap(), 2.5);
        assert_eq!(median(&[]), None);
        assert_eq!(argmax(&[0.1, 0.7, 0.7]), 1);
        let p = softmax(&[0.0, (2.0f32).ln()]);
        assert!((p[0] - 1.0 / 3.0).abs() < 1e-6 && (p[1] - 2.0 / 3.0).abs() < 1e-6);
    }
}
