use kd_core::rng::{below_by_canon, below_by_modulo, below_by_multiply, shuffle_with, SeedHash};
use rand::{Rng, RngCore, SeedableRng};
use rand_chacha::ChaCha8Rng;

/// The pinned draw is `rand`'s `random_range(0..=i)` on `usize`, draw for draw, for small and
/// large bounds (so shuffles written with either give the same order).
#[test]
fn canon_draws_match_random_range() {
    let mut a = ChaCha8Rng::seed_from_u64(7);
    let mut b = a.clone();
    for i in (0..5000usize).chain([u32::MAX as usize - 1, u32::MAX as usize, 1 << 40]) {
        let x = below_by_canon(&mut a, i as u64 + 1) as usize;
        assert_eq!(x, b.random_range(0..=i), "bound {i}");
    }
    assert_eq!(a.next_u64(), b.next_u64(), "same number of draws");
}

#[test]
fn draws_stay_below_the_bound() {
    let mut r = ChaCha8Rng::seed_from_u64(1);
    for n in 1..200u64 {
        assert!(below_by_modulo(&mut r, n) < n);
        assert!(below_by_multiply(&mut r, n) < n);
        assert!(below_by_canon(&mut r, n) < n);
    }
    assert_eq!(below_by_modulo(&mut r, 0), 0);
}

#[test]
fn shuffles_are_permutations_and_seeded() {
    let order = |seed: u64| {
        let mut v: Vec<usize> = (0..100).collect();
        let mut rng = SeedHash::tagged(b"test\0").u64(seed).rng();
        shuffle_with(&mut v, &mut rng, below_by_multiply);
        v
    };
    let (a, b) = (order(1), order(1));
    assert_eq!(a, b);
    assert_ne!(a, order(2));
    let mut sorted = a.clone();
    sorted.sort_unstable();
    assert_eq!(sorted, (0..100).collect::<Vec<_>>());
}

#[test]
fn seed_hash_is_the_digest_of_the_concatenation() {
    use sha2::{Digest, Sha256};
    let mut h = Sha256::new();
    h.update(b"tag\0what");
    h.update(3u64.to_le_bytes());
    let want = ChaCha8Rng::from_seed(h.finalize().into()).next_u64();
    let got = SeedHash::tagged(b"tag\0")
        .bytes(b"what")
        .u64(3)
        .rng()
        .next_u64();
    assert_eq!(got, want);
}
