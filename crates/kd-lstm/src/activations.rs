//! The gate nonlinearities of the fused recurrence over slices, branch-free so the loops
//! vectorise (libm's scalar `expf`/`tanhf` calls cannot be): `exp` as Cephes' `expf`
//! (range reduction by `ln 2` in two parts, a degree-6 polynomial, the power of two built in
//! the exponent bits), `σ(x) = 1 / (1 + exp(-x))`, `tanh(x) = 2 σ(2x) - 1`. Absolute error
//! below 1e-6 over the whole `f32` range (tested against `f64`). Everything here is
//! `inline(always)`, so the recurrence's AVX2 + FMA copies (see [`avx2_fma`]) vectorise it
//! 8 wide.

const LOG2E: f32 = std::f32::consts::LOG2_E;
const LN2_HI: f32 = 0.693_359_4;
const LN2_LO: f32 = -2.121_944_4e-4;
/// Adding and subtracting `1.5 * 2^23` rounds to the nearest integer without `roundps`.
const ROUND: f32 = 12_582_912.0;

/// `e^x`, inputs clamped to `[-87.3, 88.3]` (results stay normal and finite).
#[inline(always)]
pub(crate) fn exp(x: f32) -> f32 {
    let x = x.clamp(-87.3, 88.3);
    let shifted = x * LOG2E + ROUND;
    let n = shifted - ROUND;
    // The integer n sits in the low mantissa bits of `shifted`: integer lanes, no float cast.
    let ni = shifted.to_bits() as i32 - ROUND.to_bits() as i32;
    let r = x - n * LN2_HI - n * LN2_LO;
    let p = 1.987_569_2e-4_f32;
    let p = p * r + 1.398_2e-3;
    let p = p * r + 8.333_452e-3;
    let p = p * r + 4.166_579_6e-2;
    let p = p * r + 1.666_666_5e-1;
    let p = p * r + 0.5;
    let y = p * r * r + r + 1.0;
    y * f32::from_bits(((ni + 127) as u32) << 23)
}

/// `1 / (1 + e^-x)`.
#[inline(always)]
pub(crate) fn sigmoid(x: f32) -> f32 {
    1.0 / (1.0 + exp(-x))
}

/// `tanh(x)` as `2 σ(2x) - 1`.
#[inline(always)]
pub(crate) fn tanh(x: f32) -> f32 {
    2.0 * sigmoid(2.0 * x) - 1.0
}

/// Whether this CPU has AVX2 and FMA, for the kernels compiled for them.
#[cfg(target_arch = "x86_64")]
pub(crate) fn avx2_fma() -> bool {
    is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma")
}

/// Gates in place, one row of `4h` pre-activations `[i, f, g, o]` at a time:
/// `σ` on `i`, `f`, `o` and `tanh` on `g`.
#[inline(always)]
pub(crate) fn gates_in_place(rows: &mut [f32], h: usize) {
    for row in rows.chunks_exact_mut(4 * h) {
        let (ifg, o) = row.split_at_mut(3 * h);
        let (i_f, g) = ifg.split_at_mut(2 * h);
        i_f.iter_mut().for_each(|x| *x = sigmoid(*x));
        g.iter_mut().for_each(|x| *x = tanh(*x));
        o.iter_mut().for_each(|x| *x = sigmoid(*x));
    }
}

/// `dst = tanh(src)`.
#[inline(always)]
pub(crate) fn tanh_into(dst: &mut [f32], src: &[f32]) {
    dst.iter_mut().zip(src).for_each(|(d, &s)| *d = tanh(s));
}

#[cfg(test)]
mod tests {
    #[test]
    fn exp_sigmoid_and_tanh_are_within_1e6_of_f64() {
        let mut worst = [0f64; 3];
        let mut x = -100.0f32;
        while x <= 100.0 {
            let xd = f64::from(x);
            let want = [xd.exp(), 1.0 / (1.0 + (-xd).exp()), xd.tanh()];
            let got = [super::exp(x), super::sigmoid(x), super::tanh(x)];
            for k in 0..3 {
                let err = if k == 0 {
                    // relative for exp, inside the clamped range
                    if x.abs() > 87.0 {
                        continue;
                    }
                    (f64::from(got[k]) - want[k]).abs() / want[k]
                } else {
                    (f64::from(got[k]) - want[k]).abs()
                };
                worst[k] = worst[k].max(err);
            }
            x += 0.001_3;
        }
        assert!(worst[0] < 1e-6, "exp relative error {}", worst[0]);
        assert!(worst[1] < 1e-6, "sigmoid error {}", worst[1]);
        assert!(worst[2] < 1e-6, "tanh error {}", worst[2]);
    }
}
