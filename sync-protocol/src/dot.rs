//! Dots and version vectors: who wrote what, and what a replica has seen.

use serde::{Deserialize, Serialize};

/// The number the server gave a device at enrolment. Small and dense, so a dot stays 12 bytes.
pub type DeviceId = u32;

/// The identity of one edit: the device that made it and that device's own edit counter.
///
/// A device numbers its edits 1, 2, 3… across all records, so a dot is unique in the whole
/// system. On the wire a dot is the pair `[device, seq]`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(from = "(DeviceId, u64)", into = "(DeviceId, u64)")]
pub struct Dot {
    pub device: DeviceId,
    pub seq: u64,
}

impl Dot {
    pub const fn new(device: DeviceId, seq: u64) -> Self {
        Self { device, seq }
    }
}

impl From<(DeviceId, u64)> for Dot {
    fn from((device, seq): (DeviceId, u64)) -> Self {
        Self { device, seq }
    }
}

impl From<Dot> for (DeviceId, u64) {
    fn from(dot: Dot) -> Self {
        (dot.device, dot.seq)
    }
}

/// What a replica has seen, as "every dot of device `d` up to seq `n`", sorted by device.
///
/// A device is a sequential process: when it writes seq `n` it has seen its own earlier edits,
/// so a dot `(d, m)` with `m < n` that touched the same field is causally before `(d, n)`.
/// That is why one number per device is an exact causal context for a field, and why the
/// server needs only one row per device for all of its records.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct VersionVector(Vec<(DeviceId, u64)>);

impl VersionVector {
    pub fn new() -> Self {
        Self::default()
    }

    /// The highest seq of `device` covered, 0 when none.
    pub fn get(&self, device: DeviceId) -> u64 {
        match self.0.binary_search_by_key(&device, |e| e.0) {
            Ok(i) => self.0[i].1,
            Err(_) => 0,
        }
    }

    /// Record that `dot` (and so every earlier dot of its device) has been seen.
    pub fn insert(&mut self, dot: Dot) {
        match self.0.binary_search_by_key(&dot.device, |e| e.0) {
            Ok(i) => self.0[i].1 = self.0[i].1.max(dot.seq),
            Err(i) => self.0.insert(i, (dot.device, dot.seq)),
        }
    }

    /// Pointwise maximum: one pass over both sorted lists.
    pub fn join(&mut self, other: &VersionVector) {
        if other.0.iter().all(|&(d, s)| self.get(d) >= s) {
            return;
        }
        let mut merged = Vec::with_capacity(self.0.len() + other.0.len());
        let (mut a, mut b) = (self.0.iter().peekable(), other.0.iter().peekable());
        loop {
            match (a.peek(), b.peek()) {
                (Some(&&x), Some(&&y)) if x.0 == y.0 => {
                    merged.push((x.0, x.1.max(y.1)));
                    a.next();
                    b.next();
                }
                (Some(&&x), Some(&&y)) if x.0 < y.0 => {
                    merged.push(x);
                    a.next();
                }
                (_, Some(&&y)) => {
                    merged.push(y);
                    b.next();
                }
                (Some(&&x), None) => {
                    merged.push(x);
                    a.next();
                }
                (None, None) => break,
            }
        }
        self.0 = merged;
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub fn iter(&self) -> impl Iterator<Item = Dot> + '_ {
        self.0.iter().map(|&(device, seq)| Dot::new(device, seq))
    }
}

impl FromIterator<Dot> for VersionVector {
    fn from_iter<I: IntoIterator<Item = Dot>>(iter: I) -> Self {
        let mut vv = VersionVector::new();
        for dot in iter {
            vv.insert(dot);
        }
        vv
    }
}

/// Anything that can answer "has this dot been seen?".
///
/// The server answers it from its device table (`seq <= last applied seq of that device`);
/// a free-standing replica answers it from the version vector kept with each field.
pub trait Seen {
    fn has_seen(&self, dot: Dot) -> bool;
}

impl Seen for VersionVector {
    fn has_seen(&self, dot: Dot) -> bool {
        dot.seq <= self.get(dot.device)
    }
}

impl<F: Fn(Dot) -> bool> Seen for F {
    fn has_seen(&self, dot: Dot) -> bool {
        self(dot)
    }
}
