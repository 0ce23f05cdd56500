//! uclab: a fast hasher for the simulation's maps keyed by addresses, ports
//! and sequence numbers.
//!
//! Every step looks hosts and links up by address (`World::hosts`,
//! `Sim::rts`, the topology's inbox): with SipHash that was a fifth of a long
//! soak's CPU. An `IndexMap`'s order is the order of insertion whatever its
//! hasher, so nothing a simulation does depends on this choice. The keys come
//! from the simulation itself, never from a peer, so resistance to chosen
//! collisions buys nothing here. The mixing is rustc-hash 2's: add each word,
//! multiply by an odd constant, and rotate at the end so that the high bits of
//! the product reach the low bits hashbrown uses for a bucket.

use std::hash::{BuildHasherDefault, Hasher};

/// `IndexMap` with [`Fx`].
pub(crate) type FxIndexMap<K, V> = indexmap::IndexMap<K, V, BuildHasherDefault<Fx>>;

/// `IndexSet` with [`Fx`].
pub(crate) type FxIndexSet<K> = indexmap::IndexSet<K, BuildHasherDefault<Fx>>;

const K: u64 = 0xf135_7aea_2e62_a9c5;

/// The hasher (see the module's documentation).
#[derive(Default, Clone, Copy)]
pub(crate) struct Fx(u64);

impl Fx {
    #[inline]
    fn add(&mut self, word: u64) {
        self.0 = self.0.wrapping_add(word).wrapping_mul(K);
    }
}

impl Hasher for Fx {
    #[inline]
    fn write(&mut self, bytes: &[u8]) {
        let mut chunks = bytes.chunks_exact(8);
        for c in &mut chunks {
            self.add(u64::from_le_bytes(c.try_into().expect("8 bytes")));
        }
        let rest = chunks.remainder();
        if !rest.is_empty() {
            let mut last = [0u8; 8];
            last[..rest.len()].copy_from_slice(rest);
            self.add(u64::from_le_bytes(last));
        }
        self.add(bytes.len() as u64);
    }

    #[inline]
    fn write_u8(&mut self, i: u8) {
        self.add(u64::from(i));
    }

    #[inline]
    fn write_u16(&mut self, i: u16) {
        self.add(u64::from(i));
    }

    #[inline]
    fn write_u32(&mut self, i: u32) {
        self.add(u64::from(i));
    }

    #[inline]
    fn write_u64(&mut self, i: u64) {
        self.add(i);
    }

    #[inline]
    fn write_u128(&mut self, i: u128) {
        self.add(i as u64);
        self.add((i >> 64) as u64);
    }

    #[inline]
    fn write_usize(&mut self, i: usize) {
        self.add(i as u64);
    }

    #[inline]
    fn finish(&self) -> u64 {
        self.0.rotate_left(26)
    }
}
