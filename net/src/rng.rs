//! Seeded randomness: every random choice in a run comes from here.

use std::sync::{Arc, Mutex};

use rand::{RngCore, SeedableRng};
use rand_chacha::ChaCha8Rng;

/// A shared handle on a node's seeded ChaCha8 stream.
#[derive(Clone, Debug)]
pub struct SeededRng(Arc<Mutex<ChaCha8Rng>>);

impl SeededRng {
    /// A stream for `label` (a node name) under the run's `seed`.
    pub fn new(seed: u64, label: &str) -> Self {
        Self(Arc::new(Mutex::new(ChaCha8Rng::seed_from_u64(derive_seed(seed, label)))))
    }

    /// The next 64 random bits.
    pub fn next_u64(&self) -> u64 {
        lock(&self.0).next_u64()
    }

    /// The next 16 random bits (DNS ids).
    pub fn next_u16(&self) -> u16 {
        (self.next_u64() >> 48) as u16
    }

    /// A uniform value in `0..n` (`n > 0`), without modulo bias worth caring about at our sizes.
    pub fn below(&self, n: u64) -> u64 {
        if n == 0 {
            return 0;
        }
        ((u128::from(self.next_u64()) * u128::from(n)) >> 64) as u64
    }

    /// Whether an event of probability `p` happens.
    pub fn chance(&self, p: f64) -> bool {
        if p <= 0.0 {
            return false;
        }
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64 <= p
    }
}

/// Derives a sub-seed from a run seed and a label with FNV-1a, so streams do not depend on the
/// order in which nodes are created.
pub fn derive_seed(seed: u64, label: &str) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325 ^ seed;
    for b in label.bytes().chain(seed.to_le_bytes()) {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_seed_same_stream_other_label_other_stream() {
        let a = SeededRng::new(7, "client");
        let b = SeededRng::new(7, "client");
        let c = SeededRng::new(7, "dns");
        let xa: Vec<u64> = (0..4).map(|_| a.next_u64()).collect();
        let xb: Vec<u64> = (0..4).map(|_| b.next_u64()).collect();
        let xc: Vec<u64> = (0..4).map(|_| c.next_u64()).collect();
        assert_eq!(xa, xb);
        assert_ne!(xa, xc);
    }

    #[test]
    fn below_stays_in_range() {
        let r = SeededRng::new(1, "x");
        for n in 1..50 {
            assert!(r.below(n) < n);
        }
        assert_eq!(r.below(0), 0);
    }
}
