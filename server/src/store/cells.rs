//! The indicator tables as stored: a cell per indicator, side of the fraction, commune and
//! period, holding what the records add to it. The indicator service computes them; the
//! store keeps them.

use serde::Serialize;

/// Which side of the fraction.
pub const NUMERATOR: &str = "n";
pub const DENOMINATOR: &str = "d";
/// Records of the denominator whose outcome is not known yet (an indicator's `pending_days`
/// have not passed since the record's date). Their cells are by day: `period` holds the
/// record's date, so that a reader can tell which are still pending on the day it reads.
pub const PENDING: &str = "u";

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

/// The first and last day of a period (`2020`, `2020-H1`, `2020-H2`): where its pending cells
/// lie.
pub fn days_of(period: &str) -> Option<(String, String)> {
    let (year, half) = match period.split_once('-') {
        Some((y, h)) => (y, Some(h)),
        None => (period, None),
    };
    if year.len() != 4 || !year.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    match half {
        None => Some((format!("{year}-01-01"), format!("{year}-12-31"))),
        Some("H1") => Some((format!("{year}-01-01"), format!("{year}-06-30"))),
        Some("H2") => Some((format!("{year}-07-01"), format!("{year}-12-31"))),
        _ => None,
    }
}
