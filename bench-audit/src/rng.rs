//! A seeded generator (wyrand), so that every run generates the same organisation and the
//! same events from the same seed, without a dependency on `rand`. Nothing here is meant to
//! be unpredictable.

#[derive(Debug, Clone)]
pub struct Rng {
    state: u64,
}

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng { state: seed }
    }

    /// A generator of its own for one part of the data, so that changing how much one part
    /// draws does not change the others.
    pub fn fork(&mut self) -> Rng {
        Rng::new(self.next_u64())
    }

    pub fn next_u64(&mut self) -> u64 {
        self.state = self.state.wrapping_add(0xa076_1d64_78bd_642f);
        let product = u128::from(self.state) * u128::from(self.state ^ 0xe703_7ed1_a0b4_28db);
        // Truncation intended: the low and high halves are folded together.
        ((product >> 64) as u64) ^ (product as u64)
    }

    /// A number in `0..n`; 0 when `n` is 0. The modulo bias is far below anything measured.
    pub fn below(&mut self, n: usize) -> usize {
        if n == 0 {
            return 0;
        }
        (self.next_u64() % n as u64) as usize
    }

    /// A number in `low..=high`.
    pub fn between(&mut self, low: u64, high: u64) -> u64 {
        low + self.next_u64() % (high.saturating_sub(low) + 1)
    }

    /// A float in `[0, 1)`.
    pub fn unit(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }

    /// True with probability `per_mille` / 1000.
    pub fn chance(&mut self, per_mille: u32) -> bool {
        self.below(1000) < per_mille as usize
    }

    /// An element of `items`; `None` when it is empty.
    pub fn pick<'a, T>(&mut self, items: &'a [T]) -> Option<&'a T> {
        items.get(self.below(items.len()))
    }

    /// An index in `0..n` where low indices are much more likely: traffic in a real
    /// organisation comes mostly from a few busy workloads. A tenth of the draws land in the
    /// first 1 % of the range, a third in the first 10 %.
    pub fn skewed(&mut self, n: usize) -> usize {
        let position = self.unit().powi(2);
        ((position * n as f64) as usize).min(n.saturating_sub(1))
    }

    /// `count` lowercase hex digits.
    pub fn hex(&mut self, count: usize) -> String {
        const DIGITS: &[u8; 16] = b"0123456789abcdef";
        let mut text = String::with_capacity(count);
        let mut bits = 0u64;
        for idx in 0..count {
            if idx % 16 == 0 {
                bits = self.next_u64();
            }
            text.push(char::from(DIGITS[(bits & 0xf) as usize]));
            bits >>= 4;
        }
        text
    }

    /// Ten random bytes, for the random part of a UUIDv7.
    pub fn bytes10(&mut self) -> [u8; 10] {
        let high = self.next_u64().to_le_bytes();
        let low = self.next_u64().to_le_bytes();
        [
            high[0], high[1], high[2], high[3], high[4], high[5], high[6], high[7], low[0], low[1],
        ]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_seed_same_numbers() {
        let mut first = Rng::new(7);
        let mut second = Rng::new(7);
        for _ in 0..100 {
            assert_eq!(first.next_u64(), second.next_u64());
        }
    }

    #[test]
    fn ranges_hold() {
        let mut rng = Rng::new(1);
        for _ in 0..10_000 {
            assert!(rng.below(7) < 7);
            assert!((3..=5).contains(&rng.between(3, 5)));
            assert!(rng.skewed(10) < 10);
            let unit = rng.unit();
            assert!((0.0..1.0).contains(&unit));
        }
        assert_eq!(rng.below(0), 0);
        assert_eq!(rng.hex(40).len(), 40);
    }

    #[test]
    fn skew_favours_low_indices() {
        let mut rng = Rng::new(3);
        let low = (0..10_000).filter(|_| rng.skewed(100) == 0).count();
        // Uniform draws would give about 100.
        assert!(low > 500, "{low}");
    }
}
