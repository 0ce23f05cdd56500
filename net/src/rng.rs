//! Seeded randomness: every random choice in a run comes from here.

use std::sync::{Arc, Mutex};

use rand::{RngCore, SeedableRng};
use rand_chacha::{ChaCha8Rng, ChaCha20Rng};

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

/// Where a process's secrets come from (session keys, one-time passwords, the lab PKI).
///
/// Simulation, and live mode given `--seed`, draw them from the run's seed: the same seed
/// gives the same secrets, which is what replay needs and what makes them guessable. Live
/// mode by default draws 256 bits from the operating system's random source once, so no two
/// processes share a secret and none can be predicted from another (issue 13).
#[derive(Clone, Copy)]
pub enum Entropy {
    /// Reproducible: derived from a run seed.
    Seed(u64),
    /// Unguessable: a key from the OS random source.
    Os([u8; 32]),
}

impl std::fmt::Debug for Entropy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Seed(s) => write!(f, "Entropy::Seed({s})"),
            // Never print the key.
            Self::Os(_) => f.write_str("Entropy::Os(..)"),
        }
    }
}

impl Entropy {
    /// 256 bits from the OS random source (through ring, rustls's provider).
    pub fn os() -> std::io::Result<Self> {
        let mut k = [0u8; 32];
        rustls::crypto::ring::default_provider()
            .secure_random
            .fill(&mut k)
            .map_err(|_| std::io::Error::other("the OS random source failed"))?;
        Ok(Self::Os(k))
    }

    /// `--seed N` when given (tests), else the OS random source.
    pub fn from_option(seed: Option<u64>) -> std::io::Result<Self> {
        seed.map_or_else(Self::os, |s| Ok(Self::Seed(s)))
    }

    /// A ChaCha20 stream for `label`: one per purpose, independent of the others.
    pub fn stream(&self, label: &str) -> ChaCha20Rng {
        match self {
            Self::Seed(seed) => ChaCha20Rng::seed_from_u64(derive_seed(*seed, label)),
            Self::Os(key) => {
                let mut r = ChaCha20Rng::from_seed(*key);
                r.set_stream(derive_seed(0, label));
                r
            }
        }
    }

    /// A 64-bit run seed for the seeded streams of a live process ([`SeededRng`]): the seed
    /// itself, or 64 bits of the key.
    pub fn seed(&self) -> u64 {
        match self {
            Self::Seed(s) => *s,
            Self::Os(_) => self.stream("run-seed").next_u64(),
        }
    }

    /// The stream secrets of `label` are drawn from.
    ///
    /// Seeded, it is the replayable 64-bit sequence simulation has always used (keyed on the
    /// seed alone, so simulated runs stay byte-identical); from the OS, a ChaCha20 stream
    /// giving 128-bit tokens.
    pub fn secrets(&self, label: &str) -> SecretRng {
        match self {
            Self::Seed(seed) => SecretRng(Secrets::Replay { seed: *seed, counter: 0 }),
            Self::Os(_) => {
                SecretRng(Secrets::Csprng(Box::new(self.stream(&format!("secrets:{label}")))))
            }
        }
    }
}

/// A stream of secrets.
pub struct SecretRng(Secrets);

enum Secrets {
    /// splitmix64 over a counter: reproducible and, by design, predictable (tests only).
    Replay { seed: u64, counter: u64 },
    /// ChaCha20, a cryptographically secure generator: one output tells nothing of the next
    /// or the previous one.
    Csprng(Box<ChaCha20Rng>),
}

impl std::fmt::Debug for SecretRng {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SecretRng(..)")
    }
}

impl SecretRng {
    /// A fresh token as `prefix` and hex digits: 128 bits (32 digits) from the OS stream,
    /// 64 bits (16 digits) seeded.
    pub fn token(&mut self, prefix: &str) -> String {
        match &mut self.0 {
            Secrets::Replay { seed, counter } => {
                *counter += 1;
                let mut z = seed.wrapping_add(counter.wrapping_mul(0x9e37_79b9_7f4a_7c15));
                z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
                z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
                z ^= z >> 31;
                format!("{prefix}{z:016x}")
            }
            Secrets::Csprng(r) => {
                let mut b = [0u8; 16];
                r.fill_bytes(&mut b);
                let mut s = String::with_capacity(prefix.len() + 32);
                s.push_str(prefix);
                uclab_proto::text::push_hex(&mut s, &b);
                s
            }
        }
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
    fn secrets_are_long_distinct_and_unrelated_to_the_seed_order() {
        let mut a = Entropy::Seed(7).secrets("imp");
        let mut b = Entropy::Seed(7).secrets("imp");
        let (x, y) = (a.token("sk-"), a.token("sk-"));
        assert_eq!(x.len(), 3 + 16);
        assert_ne!(x, y);
        assert_eq!(b.token("sk-"), x, "seeded: reproducible");
        let mut c = Entropy::os().unwrap().secrets("imp");
        let mut d = Entropy::os().unwrap().secrets("imp");
        let (p, q) = (c.token(""), d.token(""));
        assert_eq!(p.len(), 32, "128 bits from the OS stream");
        assert_ne!(p, q, "two processes never share a secret");
        assert_ne!(c.token(""), p);
        assert_eq!(format!("{:?}", Entropy::os().unwrap()), "Entropy::Os(..)");
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
