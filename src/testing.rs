//! Helpers shared by unit tests.

/// xorshift64: the same stream of numbers from the same seed (not zero), every run.
pub struct Xorshift(pub u64);

impl Xorshift {
    pub fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    /// A number below `n` (0 when `n` is 0).
    pub fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
}

/// `len` bytes of xorshift noise from `state` (not zero): incompressible and the same every run.
pub fn pseudo_random(len: usize, state: u64) -> Vec<u8> {
    let mut x = Xorshift(state);
    (0..len).map(|_| x.next() as u8).collect()
}

/// A 128 KiB block of noise, one per seed (any seed, zero too).
pub fn random_block(seed: u64) -> Vec<u8> {
    pseudo_random(128 << 10, seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
}
