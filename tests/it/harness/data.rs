//! A fast deterministic data generator: [`DataGen`] bytes are a pure function of (seed, mix,
//! position); [`Rng`] for test decisions; the seed from DRCTL_TEST_SEED or the clock.

use std::io::{self, Write};
use std::sync::OnceLock;

use super::MIB;

pub(super) const GOLDEN: u64 = 0x9E37_79B9_7F4A_7C15;

/// SplitMix64 finalizer.
#[inline(always)]
pub fn mix64(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// Small sequential PRNG (SplitMix64) for test decisions (sizes, delays, ...).
#[derive(Clone, Debug)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed)
    }
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(GOLDEN);
        mix64(self.0)
    }
    /// Uniform in [lo, hi).
    pub fn range(&mut self, lo: u64, hi: u64) -> u64 {
        assert!(hi > lo);
        lo + self.next_u64() % (hi - lo)
    }
    pub fn chance(&mut self, num: u64, den: u64) -> bool {
        self.next_u64() % den < num
    }
}

/// A seed from DRCTL_TEST_SEED (decimal or 0x-hex) or from the clock.
pub fn seed_from_env_or_time() -> u64 {
    if let Ok(s) = std::env::var("DRCTL_TEST_SEED") {
        let s = s.trim();
        let v = if let Some(h) = s.strip_prefix("0x") { u64::from_str_radix(h, 16) } else { s.parse() };
        return v.expect("DRCTL_TEST_SEED must be an integer");
    }
    let t = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap();
    mix64(t.as_nanos() as u64 ^ std::process::id() as u64)
}

const TEXT_LEN: usize = 256 * 1024;
const BLOCK: usize = 64;

/// A text-like corpus (words, punctuation, newlines) generated once. Blocks copied from it at
/// random offsets compress well (like logs / source code), unlike the random blocks.
fn text_corpus() -> &'static [u8] {
    static TEXT: OnceLock<Vec<u8>> = OnceLock::new();
    TEXT.get_or_init(|| {
        let mut rng = Rng::new(0x7E57_C0DE);
        let letters = b"etaoinshrdlcumwfgypbvkjxqz";
        let words: Vec<Vec<u8>> = (0..600)
            .map(|_| {
                let n = rng.range(2, 11) as usize;
                (0..n).map(|_| letters[(rng.range(0, 26) * rng.range(1, 27) / 26) as usize % 26]).collect()
            })
            .collect();
        let mut t = Vec::with_capacity(TEXT_LEN + BLOCK);
        let mut col = 0;
        while t.len() < TEXT_LEN + BLOCK {
            // Zipf-ish word choice: a few words are much more frequent than the others.
            let u = rng.range(0, 1 << 20) as f64 / (1u64 << 20) as f64;
            let w = &words[(u * u * u * words.len() as f64) as usize];
            t.extend_from_slice(w);
            col += w.len() + 1;
            match rng.range(0, 20) {
                0 => t.push(b','),
                1 => t.extend_from_slice(b"."),
                2 => t.extend_from_slice(b" = 42;"),
                _ => {}
            }
            if col > 72 {
                t.push(b'\n');
                col = 0;
            } else {
                t.push(b' ');
            }
        }
        t.truncate(TEXT_LEN + BLOCK);
        t
    })
}

/// What kind of bytes a [`DataGen`] produces.
#[derive(Clone, Copy, Debug)]
pub enum Mix {
    /// Incompressible pseudo-random bytes.
    Random,
    /// Compressible text-like bytes.
    Text,
    /// Alternating regions of `region` bytes: text, random, text, random, ...
    Alternating { region: u64 },
}

/// Fast deterministic byte generator. The content is a pure function of (seed, mix, position), so
/// it does not depend on how reads are split, and any range can be regenerated.
#[derive(Clone, Debug)]
pub struct DataGen {
    seed: u64,
    mix: Mix,
    pos: u64,
}

impl DataGen {
    pub fn new(seed: u64, mix: Mix) -> DataGen {
        DataGen { seed: mix64(seed ^ 0xD47A_6E4E), mix, pos: 0 }
    }
    pub fn random(seed: u64) -> DataGen {
        DataGen::new(seed, Mix::Random)
    }
    pub fn text(seed: u64) -> DataGen {
        DataGen::new(seed, Mix::Text)
    }
    pub fn mixed(seed: u64, region: u64) -> DataGen {
        assert!(region >= BLOCK as u64 && region.is_multiple_of(BLOCK as u64));
        DataGen::new(seed, Mix::Alternating { region })
    }

    /// Fill `buf` with the next bytes.
    pub fn fill(&mut self, buf: &mut [u8]) {
        self.fill_at(self.pos, buf);
        self.pos += buf.len() as u64;
    }

    /// The next `n` bytes as a Vec.
    pub fn take(&mut self, n: usize) -> Vec<u8> {
        let mut v = vec![0u8; n];
        self.fill(&mut v);
        v
    }

    /// Write the next `n` bytes to `w` (1 MiB at a time).
    pub fn write_to(&mut self, w: &mut dyn Write, mut n: u64) -> io::Result<()> {
        let mut buf = vec![0u8; MIB as usize];
        while n > 0 {
            let k = n.min(buf.len() as u64) as usize;
            self.fill(&mut buf[..k]);
            w.write_all(&buf[..k])?;
            n -= k as u64;
        }
        Ok(())
    }

    /// Fill `buf` with the bytes at absolute position `pos`.
    pub fn fill_at(&self, mut pos: u64, mut buf: &mut [u8]) {
        let text = text_corpus();
        while !buf.is_empty() {
            let b = pos / BLOCK as u64;
            let off = (pos % BLOCK as u64) as usize;
            let n = (BLOCK - off).min(buf.len());
            let (head, rest) = buf.split_at_mut(n);
            if n == BLOCK {
                self.block(text, b, head);
            } else {
                let mut tmp = [0u8; BLOCK];
                self.block(text, b, &mut tmp);
                head.copy_from_slice(&tmp[off..off + n]);
            }
            buf = rest;
            pos += n as u64;
        }
    }

    #[inline(always)]
    fn block(&self, text: &[u8], b: u64, out: &mut [u8]) {
        let random = match self.mix {
            Mix::Random => true,
            Mix::Text => false,
            Mix::Alternating { region } => (b * BLOCK as u64 / region) % 2 == 1,
        };
        if random {
            let base = self.seed.wrapping_add(b.wrapping_mul(8).wrapping_mul(GOLDEN));
            for (j, c) in out.chunks_exact_mut(8).enumerate() {
                let v = mix64(base.wrapping_add((j as u64).wrapping_mul(GOLDEN)));
                c.copy_from_slice(&v.to_le_bytes());
            }
        } else {
            let off = (mix64(self.seed ^ b.wrapping_mul(GOLDEN) ^ 0x5EED) % TEXT_LEN as u64) as usize;
            out.copy_from_slice(&text[off..off + BLOCK]);
        }
    }
}
