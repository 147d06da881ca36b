//! The indicator tables as stored: a cell per indicator, side of the fraction, commune and
//! period, holding what the records add to it. The indicator service computes them; the
//! store keeps them.

use serde::Serialize;

/// Which side of the fraction.
pub const NUMERATOR: &str = "n";
pub const DENOMINATOR: &str = "d";

/// A cell of the stored tables.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
pub struct CellKey {
    pub indicator: String,
    pub part: &'static str,
    pub commune: String,
    pub period: String,
}

/// What records add to a cell.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Amount {
    pub value: i64,
    pub records: i64,
    pub conflicted: i64,
}

impl Amount {
    pub fn add(&mut self, other: Amount, sign: i64) {
        self.value += sign * other.value;
        self.records += sign * other.records;
        self.conflicted += sign * other.conflicted;
    }

    pub fn is_zero(&self) -> bool {
        *self == Amount::default()
    }
}
