//! A seeded generator (splitmix64): the same seed picks the same targets.

pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Rng(seed)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform in `0..n` (n > 0).
    pub fn below(&mut self, n: usize) -> usize {
        (self.next_u64() % n as u64) as usize
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_seed_repeats_and_covers_the_range() {
        let a: Vec<usize> = (0..64).scan(Rng::new(7), |r, _| Some(r.below(9))).collect();
        let b: Vec<usize> = (0..64).scan(Rng::new(7), |r, _| Some(r.below(9))).collect();
        assert_eq!(a, b);
        assert!((0..9).all(|v| a.contains(&v)), "{a:?}");
        assert_ne!(
            a,
            (0..64)
                .scan(Rng::new(8), |r, _| Some(r.below(9)))
                .collect::<Vec<_>>()
        );
    }
}
