//! Distinct counts that cost days, not users: a HyperLogLog sketch of a
//! set of users (or projects), and a histogram of command durations, both
//! mergeable and stored as bytes in the rollup tables.
//!
//! A sketch holds keyed hashes, never ids: each member is first hashed
//! with the database's secret salt ([`member_hash`]). Up to
//! [`SPARSE_MAX`] members it keeps their 64-bit hashes (and counts them
//! exactly); past that, 2^14 registers of HyperLogLog, each the largest
//! "leading zeros + 1" of the hashes that fall on it, read with Ertl's
//! improved raw estimator (relative standard error 1.04/√16384 = 0.81%,
//! with no bias correction table). No id can be read back from either
//! form; with the salt, one could only test whether a known id was
//! counted.
//!
//! The format is hand-written (rather than a crate's serialised
//! internals) because it is stored: it must read the same whatever
//! library version wrote it. Byte 0 is the form, then big-endian data.

use sha2::{Digest, Sha256};

/// Register index bits.
const P: u32 = 14;
/// Registers.
const M: usize = 1 << P;
/// Bits left for the rank.
const Q: u32 = 64 - P;
/// Most members a sketch keeps as hashes (as many bytes as the registers).
pub(crate) const SPARSE_MAX: usize = M / 8;
/// Relative standard error of an estimate from registers.
pub(crate) const RELATIVE_ERROR: f64 = 0.008_125;

const SPARSE: u8 = 1;
const DENSE: u8 = 2;

/// The keyed 64-bit hash a sketch holds for a member.
pub(crate) fn member_hash(salt: &str, member: &str) -> u64 {
    let digest = Sha256::new()
        .chain_update(b"sketch\0")
        .chain_update(salt.as_bytes())
        .chain_update([0])
        .chain_update(member.as_bytes())
        .finalize();
    let mut first = [0u8; 8];
    first.copy_from_slice(&digest[..8]);
    u64::from_be_bytes(first)
}

/// A set of members, counted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Sketch {
    /// Sorted distinct hashes, at most [`SPARSE_MAX`].
    Sparse(Vec<u64>),
    /// One rank per register.
    Dense(Box<[u8]>),
}

impl Default for Sketch {
    fn default() -> Self {
        Sketch::Sparse(Vec::new())
    }
}

/// Why stored bytes are not a sketch (or a histogram).
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("stored {0} is malformed")]
pub(crate) struct Malformed(pub(crate) &'static str);

fn register(h: u64) -> (usize, u8) {
    let index = (h >> Q) as usize;
    let rest = h << P;
    let rank = if rest == 0 {
        Q + 1
    } else {
        rest.leading_zeros() + 1
    };
    (index, rank as u8)
}

impl Sketch {
    /// Adds the member with hash `h`.
    pub(crate) fn insert(&mut self, h: u64) {
        match self {
            Sketch::Sparse(hashes) => {
                if let Err(at) = hashes.binary_search(&h) {
                    hashes.insert(at, h);
                    if hashes.len() > SPARSE_MAX {
                        self.densify();
                    }
                }
            }
            Sketch::Dense(registers) => {
                let (i, r) = register(h);
                if registers[i] < r {
                    registers[i] = r;
                }
            }
        }
    }

    fn densify(&mut self) {
        if let Sketch::Sparse(hashes) = self {
            let mut registers = vec![0u8; M].into_boxed_slice();
            for &h in hashes.iter() {
                let (i, r) = register(h);
                registers[i] = registers[i].max(r);
            }
            *self = Sketch::Dense(registers);
        }
    }

    /// Adds every member of `other`.
    pub(crate) fn merge(&mut self, other: &Sketch) {
        match other {
            Sketch::Sparse(hashes) => {
                if let Sketch::Sparse(mine) = self {
                    let mut merged = Vec::with_capacity(mine.len() + hashes.len());
                    let (mut a, mut b) = (mine.iter().peekable(), hashes.iter().peekable());
                    loop {
                        let next = match (a.peek(), b.peek()) {
                            (Some(&&x), Some(&&y)) if x < y => a.next(),
                            (Some(&&x), Some(&&y)) if x > y => b.next(),
                            (Some(_), Some(_)) => {
                                b.next();
                                a.next()
                            }
                            (Some(_), None) => a.next(),
                            (None, Some(_)) => b.next(),
                            (None, None) => break,
                        };
                        merged.extend(next);
                    }
                    *mine = merged;
                    if mine.len() > SPARSE_MAX {
                        self.densify();
                    }
                } else {
                    for &h in hashes {
                        self.insert(h);
                    }
                }
            }
            Sketch::Dense(theirs) => {
                self.densify();
                if let Sketch::Dense(mine) = self {
                    for (m, t) in mine.iter_mut().zip(theirs.iter()) {
                        *m = (*m).max(*t);
                    }
                }
            }
        }
    }

    /// Whether it counts its members exactly.
    pub(crate) fn is_exact(&self) -> bool {
        matches!(self, Sketch::Sparse(_))
    }

    /// How many members: exact when sparse, otherwise estimated.
    pub(crate) fn count(&self) -> i64 {
        match self {
            Sketch::Sparse(hashes) => hashes.len() as i64,
            Sketch::Dense(registers) => estimate(registers).round() as i64,
        }
    }

    /// The stored form.
    pub(crate) fn to_bytes(&self) -> Vec<u8> {
        match self {
            Sketch::Sparse(hashes) => {
                let mut out = Vec::with_capacity(1 + hashes.len() * 8);
                out.push(SPARSE);
                for h in hashes {
                    out.extend_from_slice(&h.to_be_bytes());
                }
                out
            }
            Sketch::Dense(registers) => {
                let mut out = Vec::with_capacity(1 + M);
                out.push(DENSE);
                out.extend_from_slice(registers);
                out
            }
        }
    }

    /// Reads the stored form back.
    pub(crate) fn from_bytes(bytes: &[u8]) -> Result<Sketch, Malformed> {
        let bad = Malformed("sketch");
        match bytes.split_first() {
            Some((&SPARSE, rest))
                if rest.len().is_multiple_of(8) && rest.len() / 8 <= SPARSE_MAX =>
            {
                let hashes: Vec<u64> = rest
                    .chunks_exact(8)
                    .map(|c| u64::from_be_bytes(c.try_into().unwrap_or_default()))
                    .collect();
                if hashes.windows(2).any(|w| w[0] >= w[1]) {
                    return Err(bad);
                }
                Ok(Sketch::Sparse(hashes))
            }
            Some((&DENSE, rest)) if rest.len() == M && rest.iter().all(|&r| r <= Q as u8 + 1) => {
                Ok(Sketch::Dense(rest.into()))
            }
            _ => Err(bad),
        }
    }
}

/// A sketch being filled with members in any order. Inserting each hash
/// into the sorted ones moves half of them every time (a day's total
/// counts thousands of users); here they are gathered in runs, each run
/// sorted and merged in at once.
#[derive(Debug, Default)]
pub(crate) struct Gather {
    sketch: Sketch,
    run: Vec<u64>,
}

impl Extend<u64> for Gather {
    fn extend<I: IntoIterator<Item = u64>>(&mut self, hashes: I) {
        for h in hashes {
            self.insert(h);
        }
    }
}

impl Gather {
    /// Hashes gathered before they are merged into the sketch.
    const RUN: usize = 256;

    pub(crate) fn insert(&mut self, h: u64) {
        if let Sketch::Dense(_) = self.sketch {
            self.sketch.insert(h);
            return;
        }
        self.run.push(h);
        if self.run.len() >= Self::RUN {
            self.settle();
        }
    }

    fn settle(&mut self) {
        if self.run.is_empty() {
            return;
        }
        let mut run = std::mem::take(&mut self.run);
        run.sort_unstable();
        run.dedup();
        self.sketch.merge(&Sketch::Sparse(run));
    }

    /// Adds every member of `other`.
    pub(crate) fn absorb(&mut self, other: &Sketch) {
        if self.sketch == Sketch::default() {
            self.sketch = other.clone();
        } else {
            self.sketch.merge(other);
        }
    }

    pub(crate) fn finish(mut self) -> Sketch {
        self.settle();
        self.sketch
    }
}

/// Ertl, "New cardinality estimation algorithms for HyperLogLog
/// sketches" (2017), the improved raw estimator.
fn estimate(registers: &[u8]) -> f64 {
    let mut c = [0u32; Q as usize + 2];
    for &r in registers {
        c[usize::from(r)] += 1;
    }
    let m = M as f64;
    let mut z = m * tau(1.0 - f64::from(c[Q as usize + 1]) / m);
    for k in (1..=Q as usize).rev() {
        z = 0.5 * (z + f64::from(c[k]));
    }
    z += m * sigma(f64::from(c[0]) / m);
    0.5 / std::f64::consts::LN_2 * m * m / z
}

fn sigma(mut x: f64) -> f64 {
    if x == 1.0 {
        return f64::INFINITY;
    }
    let (mut y, mut z) = (1.0, x);
    loop {
        x *= x;
        let before = z;
        z += x * y;
        y += y;
        if z == before {
            return z;
        }
    }
}

fn tau(mut x: f64) -> f64 {
    if x == 0.0 || x == 1.0 {
        return 0.0;
    }
    let (mut y, mut z) = (1.0, 1.0 - x);
    loop {
        x = x.sqrt();
        let before = z;
        y *= 0.5;
        z -= (1.0 - x).powi(2) * y;
        if z == before {
            return z / 3.0;
        }
    }
}

/// Durations (milliseconds) counted in buckets an eighth of a power of two
/// wide: a percentile read from it is within 4.5% of the true value.
///
/// Its buckets are kept sorted in a vector (a few dozen at most): merging
/// one into another is the cube's most frequent step.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Histogram(Vec<(u16, i64)>);

/// Buckets per power of two.
const STEPS: f64 = 8.0;
/// Relative error of a percentile read from a [`Histogram`].
pub(crate) const PERCENTILE_ERROR: f64 = 0.045;

impl Histogram {
    pub(crate) fn add(&mut self, ms: i64) {
        let b = ((ms.max(0) as f64 + 1.0).log2() * STEPS).floor() as u16;
        self.bump(b, 1);
    }

    fn bump(&mut self, b: u16, n: i64) {
        match self.0.binary_search_by_key(&b, |&(bucket, _)| bucket) {
            Ok(i) => self.0[i].1 = self.0[i].1.saturating_add(n),
            Err(i) => self.0.insert(i, (b, n)),
        }
    }

    pub(crate) fn merge(&mut self, other: &Histogram) {
        for &(b, n) in &other.0 {
            self.bump(b, n);
        }
    }

    pub(crate) fn total(&self) -> i64 {
        self.0.iter().fold(0i64, |a, &(_, n)| a.saturating_add(n))
    }

    /// The `q` quantile (0..=1) in milliseconds, `None` when empty: the
    /// geometric middle of the bucket it falls in.
    pub(crate) fn quantile(&self, q: f64) -> Option<f64> {
        let total = self.total();
        if total == 0 {
            return None;
        }
        let rank = ((q * total as f64).ceil() as i64).clamp(1, total);
        let mut seen = 0i64;
        for &(b, n) in &self.0 {
            seen = seen.saturating_add(n);
            if seen >= rank {
                if b == 0 {
                    // Only 0 ms falls here.
                    return Some(0.0);
                }
                let (lo, hi) = (
                    2f64.powf(f64::from(b) / STEPS),
                    2f64.powf(f64::from(b + 1) / STEPS),
                );
                return Some(((lo * hi).sqrt() - 1.0).max(0.0));
            }
        }
        None
    }

    pub(crate) fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.0.len() * 10);
        for &(b, n) in &self.0 {
            out.extend_from_slice(&b.to_be_bytes());
            out.extend_from_slice(&n.to_be_bytes());
        }
        out
    }

    pub(crate) fn from_bytes(bytes: &[u8]) -> Result<Histogram, Malformed> {
        if !bytes.len().is_multiple_of(10) {
            return Err(Malformed("histogram"));
        }
        let mut h = Histogram::default();
        for c in bytes.chunks_exact(10) {
            let b = u16::from_be_bytes([c[0], c[1]]);
            let n = i64::from_be_bytes(c[2..].try_into().unwrap_or_default());
            // Buckets are written in order, each once.
            if n < 0 || h.0.last().is_some_and(|&(last, _)| last >= b) {
                return Err(Malformed("histogram"));
            }
            h.0.push((b, n));
        }
        Ok(h)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sketch_of(range: std::ops::Range<u64>) -> Sketch {
        let mut s = Sketch::default();
        for i in range {
            s.insert(member_hash("salt", &format!("{i:032x}")));
        }
        s
    }

    #[test]
    fn a_gathered_sketch_is_the_inserted_one() {
        for n in [0u64, 1, 255, 256, 257, 2_048, 2_049, 5_000, 40_000] {
            let mut gathered = Gather::default();
            // Every member twice, out of order.
            for i in (0..n).rev().chain(0..n) {
                gathered.insert(member_hash("salt", &format!("{i:032x}")));
            }
            assert_eq!(gathered.finish(), sketch_of(0..n), "{n} members");
        }
    }

    #[test]
    fn absorbing_sketches_into_a_gather_is_inserting_their_members() {
        // Days into a week: sparse into sparse, across the dense limit,
        // dense into sparse and into dense, with hashes still in the run.
        for days in [
            vec![0..10, 5..300],
            vec![0..2_000, 1_000..2_100],
            vec![0..40_000, 10..20],
            vec![0..100, 50..40_000, 30_000..90_000],
        ] {
            let mut week = Gather::default();
            week.insert(member_hash("salt", &format!("{:032x}", 1_000_000)));
            for day in &days {
                week.absorb(&sketch_of(day.clone()));
            }
            let mut every = sketch_of(1_000_000..1_000_001);
            for day in days.iter().cloned() {
                for i in day {
                    every.insert(member_hash("salt", &format!("{i:032x}")));
                }
            }
            assert_eq!(week.finish(), every, "{days:?}");
        }
    }

    #[test]
    fn small_sets_are_counted_exactly() {
        let mut s = sketch_of(0..2_000);
        assert!(s.is_exact());
        assert_eq!(s.count(), 2_000);
        s.merge(&sketch_of(1_000..2_048));
        assert_eq!(s.count(), 2_048);
    }

    #[test]
    fn large_sets_are_estimated_within_two_percent() {
        for n in [2_049u64, 5_000, 30_000, 100_000, 400_000, 1_000_000] {
            let s = sketch_of(0..n);
            assert!(!s.is_exact());
            let err = (s.count() as f64 - n as f64).abs() / n as f64;
            assert!(err < 0.02, "{n}: {} ({err:.4})", s.count());
        }
    }

    #[test]
    fn merging_is_a_union_in_any_order() {
        let (a, b, c) = (
            sketch_of(0..3_000),
            sketch_of(2_000..60_000),
            sketch_of(50..80),
        );
        let mut x = a.clone();
        x.merge(&b);
        x.merge(&c);
        let mut y = c.clone();
        y.merge(&b);
        y.merge(&a);
        assert_eq!(x, y);
        assert_eq!(x, sketch_of(0..60_000));
        let mut small = sketch_of(0..10);
        small.merge(&sketch_of(5..20));
        assert_eq!(small, sketch_of(0..20));
    }

    #[test]
    fn the_stored_form_reads_back_and_garbage_does_not() {
        for s in [Sketch::default(), sketch_of(0..100), sketch_of(0..10_000)] {
            assert_eq!(Sketch::from_bytes(&s.to_bytes()).unwrap(), s);
        }
        assert!(Sketch::from_bytes(&[]).is_err());
        assert!(Sketch::from_bytes(&[SPARSE, 1, 2]).is_err());
        assert!(Sketch::from_bytes(&[3]).is_err());
        let mut unsorted = vec![SPARSE];
        unsorted.extend_from_slice(&2u64.to_be_bytes());
        unsorted.extend_from_slice(&1u64.to_be_bytes());
        assert!(Sketch::from_bytes(&unsorted).is_err());
        let mut dense = sketch_of(0..10_000).to_bytes();
        dense[5] = 60;
        assert!(Sketch::from_bytes(&dense).is_err());
    }

    #[test]
    fn the_hash_is_keyed_by_the_salt() {
        assert_ne!(member_hash("a", "u"), member_hash("b", "u"));
        assert_eq!(member_hash("a", "u"), member_hash("a", "u"));
    }

    #[test]
    fn percentiles_are_within_their_bound() {
        let mut h = Histogram::default();
        for ms in 1..=1_000 {
            h.add(ms);
        }
        for (q, exact) in [(0.5, 500.0), (0.9, 900.0), (0.99, 990.0)] {
            let got = h.quantile(q).unwrap();
            assert!(
                (got - exact).abs() / exact <= PERCENTILE_ERROR,
                "{q}: {got}"
            );
        }
        let mut zero = Histogram::default();
        zero.add(0);
        assert_eq!(zero.quantile(0.5), Some(0.0));
        assert_eq!(Histogram::default().quantile(0.5), None);
        let mut other = Histogram::default();
        other.add(1_000_000);
        h.merge(&other);
        assert_eq!(h.total(), 1_001);
        assert_eq!(Histogram::from_bytes(&h.to_bytes()).unwrap(), h);
        assert!(Histogram::from_bytes(&[1, 2, 3]).is_err());
        // Buckets out of order or twice, or a negative count: refused.
        let bucket = |b: u16, n: i64| [&b.to_be_bytes()[..], &n.to_be_bytes()].concat();
        for bad in [
            [bucket(9, 1), bucket(3, 1)].concat(),
            [bucket(3, 1), bucket(3, 1)].concat(),
            bucket(3, -1),
        ] {
            assert!(Histogram::from_bytes(&bad).is_err());
        }
        assert!(Histogram::from_bytes(&[bucket(3, 1), bucket(9, 1)].concat()).is_ok());
    }
}
