//! Host-side KL divergence for reporting (no tensors): the teacher's top-k support plus one
//! rest bucket against the student, as `kd eval` scores it. The training loss over the same
//! layout is [`crate::losses::soft_target_topk`].

/// `KL(p || q) = sum_i p_i (ln p_i - log_q_i) + p_rest (ln p_rest - log_q_rest)` in nats,
/// summed in that order in `f64`; terms with `p = 0` count 0 (so their `log_q` is not read
/// into the sum).
///
/// `p` are the teacher's probabilities on its support, `p_rest` the mass outside it; `log_q`
/// the student's log-probabilities of the same ids, `log_q_rest` the log of its mass outside.
pub fn rest_bucket_kl(p: &[f32], p_rest: f32, log_q: &[f64], log_q_rest: f64) -> f64 {
    let mut kl = 0f64;
    for (&pi, &lq) in p.iter().zip(log_q) {
        if pi > 0.0 {
            kl += f64::from(pi) * (f64::from(pi).ln() - lq);
        }
    }
    if p_rest > 0.0 {
        kl += f64::from(p_rest) * (f64::from(p_rest).ln() - log_q_rest);
    }
    kl
}

#[cfg(test)]
mod tests {
    use super::rest_bucket_kl;

    #[test]
    fn matches_a_hand_computation() {
        // p = (0.5, 0.25 | rest 0.25), q = (0.25, 0.25 | rest 0.5):
        // 0.5 ln 2 + 0.25 ln 1 + 0.25 ln 0.5 = 0.25 ln 2.
        let log_q = [0.25f64.ln(), 0.25f64.ln()];
        let kl = rest_bucket_kl(&[0.5, 0.25], 0.25, &log_q, 0.5f64.ln());
        assert!((kl - 0.25 * 2f64.ln()).abs() < 1e-12, "{kl}");
    }

    #[test]
    fn zero_mass_terms_count_nothing() {
        let kl = rest_bucket_kl(
            &[1.0, 0.0],
            0.0,
            &[0.0, f64::NEG_INFINITY],
            f64::NEG_INFINITY,
        );
        assert_eq!(kl, 0.0);
    }
}
