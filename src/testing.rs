//! Helpers shared by unit tests.

/// `len` bytes of xorshift noise from `state` (not zero): incompressible and the same every run.
pub fn pseudo_random(len: usize, mut state: u64) -> Vec<u8> {
    (0..len)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state as u8
        })
        .collect()
}

/// A 128 KiB block of noise, one per seed (any seed, zero too).
pub fn random_block(seed: u64) -> Vec<u8> {
    pseudo_random(128 << 10, seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
}
