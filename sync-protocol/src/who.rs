//! WHO Child Growth Standards (2006), 0–60 months: the four z-scores of a child, exactly as
//! WHO's own program (the R package `anthro` 1.1.0) computes them, from WHO's tables by day
//! of age and by 0.1 cm of length/height (`schemas/who-growth/`, built into the crate).
//!
//! The rules, as `anthro` applies them:
//!
//! - Age in whole days (half a day rounds up) picks the row of the age tables; no score from
//!   60 months (days / 30.4375) on.
//! - The length tables expect lying length under 731 days and standing height from 731 days:
//!   a child measured standing under 731 days gets +0.7 cm, one measured lying from 731 days
//!   −0.7 cm. Under 9 months a standing measurement is taken as lying, uncorrected; without a
//!   position nothing is corrected.
//! - Weight-for-length (45–110 cm) under 731 days, weight-for-height (65–120 cm) from 731
//!   days, on the corrected measure, with L, M, S interpolated between the 0.1 cm rows.
//!   BMI is weight / (corrected measure in m)².
//! - Weight-for-age, weight-for-length/height and BMI-for-age use WHO's restricted tails
//!   beyond ±3 SD, and are not computed for a child with bilateral oedema.
//! - Rounded to 2 decimals as R rounds; flagged as implausible (and left out of prevalence)
//!   when weight-for-age is below −6 or above 5, length/height-for-age beyond ±6,
//!   weight-for-length/height or BMI-for-age beyond ±5.
//!
//! The phone app's `protocol.js` implements the same rules on the same tables; the oracle
//! test holds both to WHO's values for 3,000 children `anthro` scored.

use std::collections::HashMap;
use std::sync::OnceLock;

/// WHO's tables as the crate computes from them, by file name: the phone app is served the
/// same text (one copy in the binary).
pub static TABLES: [(&str, &str); 5] = [
    (
        "wei_by_day.csv",
        include_str!("../../schemas/who-growth/wei_by_day.csv"),
    ),
    (
        "len_by_day.csv",
        include_str!("../../schemas/who-growth/len_by_day.csv"),
    ),
    (
        "bmi_by_day.csv",
        include_str!("../../schemas/who-growth/bmi_by_day.csv"),
    ),
    (
        "wfl_by_length.csv",
        include_str!("../../schemas/who-growth/wfl_by_length.csv"),
    ),
    (
        "wfh_by_height.csv",
        include_str!("../../schemas/who-growth/wfh_by_height.csv"),
    ),
];

/// The rules this module computes by. Stored records are derived again when it changes.
pub const RULES: &str = "WHO Child Growth Standards 2006, as anthro 1.1.0 computes them";

/// Days in WHO's month.
pub const DAYS_PER_MONTH: f64 = 30.4375;
/// From this age in days the tables expect standing height rather than lying length.
pub const HEIGHT_FROM_DAYS: u32 = 731;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Sex {
    Boy,
    Girl,
}

/// How the length/height was measured.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Position {
    Lying,
    Standing,
}

/// The four scores.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Score {
    /// Weight-for-age.
    Waz,
    /// Length/height-for-age.
    Haz,
    /// Weight-for-length (under 731 days) or weight-for-height (from 731 days).
    Whz,
    /// BMI-for-age.
    Baz,
}

impl Score {
    pub const ALL: [Score; 4] = [Score::Waz, Score::Haz, Score::Whz, Score::Baz];

    /// `waz`, `haz`, `whz`, `baz`.
    pub fn name(self) -> &'static str {
        match self {
            Score::Waz => "waz",
            Score::Haz => "haz",
            Score::Whz => "whz",
            Score::Baz => "baz",
        }
    }

    pub fn from_name(name: &str) -> Option<Score> {
        Score::ALL.into_iter().find(|s| s.name() == name)
    }

    /// Outside these bounds WHO takes a score as implausible.
    fn plausible(self) -> (f64, f64) {
        match self {
            Score::Waz => (-6.0, 5.0),
            Score::Haz => (-6.0, 6.0),
            Score::Whz | Score::Baz => (-5.0, 5.0),
        }
    }
}

/// What a z-score says of a child, as nutrition programmes report it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Class {
    /// Below −3 SD.
    Severe,
    /// From −3 to below −2 SD.
    Moderate,
    Normal,
    /// Above +2 SD of weight-for-length/height or BMI-for-age.
    Overweight,
}

impl Score {
    /// The class of a score `z`: below −3 severe, below −2 moderate; above +2 overweight for
    /// weight-for-length/height and BMI-for-age.
    pub fn classify(self, z: f64) -> Class {
        if z < -3.0 {
            Class::Severe
        } else if z < -2.0 {
            Class::Moderate
        } else if z > 2.0 && matches!(self, Score::Whz | Score::Baz) {
            Class::Overweight
        } else {
            Class::Normal
        }
    }
}

/// One measurement of a child.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Child {
    pub sex: Sex,
    pub age_days: f64,
    pub weight_kg: Option<f64>,
    pub lenhei_cm: Option<f64>,
    pub position: Option<Position>,
    pub oedema: bool,
}

/// A z-score, rounded as WHO rounds it, and whether WHO flags it as implausible.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Z {
    pub z: f64,
    pub flagged: bool,
}

#[derive(Clone, Copy, Debug)]
struct Lms {
    l: f64,
    m: f64,
    s: f64,
}

/// A table's rows by (sex, key): age in days, or length/height in tenths of a cm.
type Table = HashMap<(Sex, i64), Lms>;

fn parse(text: &str, tenths: bool) -> Table {
    text.lines()
        .skip(1)
        .filter(|l| !l.trim().is_empty())
        .map(|line| {
            let c: Vec<&str> = line.split(',').collect();
            let num = |i: usize| c[i].trim().parse::<f64>().expect("WHO table numbers");
            let sex = if c[0] == "1" { Sex::Boy } else { Sex::Girl };
            let key = if tenths {
                (num(1) * 10.0).round() as i64
            } else {
                num(1) as i64
            };
            (
                (sex, key),
                Lms {
                    l: num(2),
                    m: num(3),
                    s: num(4),
                },
            )
        })
        .collect()
}

enum Which {
    Wei,
    Len,
    Bmi,
    Wfl,
    Wfh,
}

fn table(which: Which) -> &'static Table {
    static PARSED: OnceLock<[Table; 5]> = OnceLock::new();
    // In the order of `Which`; the last two are indexed by tenths of a cm.
    let all = PARSED.get_or_init(|| std::array::from_fn(|i| parse(TABLES[i].1, i >= 3)));
    &all[which as usize]
}

/// R's `round(x, 2)` (R 4): the nearer of the two 2-decimal neighbours, the even one on a tie.
pub fn round2(x: f64) -> f64 {
    if x == 0.0 || !x.is_finite() {
        return x;
    }
    let (sign, x) = if x < 0.0 { (-1.0, -x) } else { (1.0, x) };
    let x10 = 100.0 * x;
    let i10 = x10.floor();
    let down = i10 / 100.0;
    let up = x10.ceil() / 100.0;
    let (du, dd) = (up - x, x - down);
    let odd = i10 % 2.0 == 1.0;
    sign * if du < dd || (du == dd && odd) {
        up
    } else {
        down
    }
}

/// `anthro`'s rounding of an age to whole days: half a day and more rounds up.
fn whole_days(age: f64) -> i64 {
    let floor = age.floor();
    (if age - floor >= 0.5 {
        floor + 1.0
    } else {
        floor
    }) as i64
}

fn lms_z(y: f64, p: Lms) -> f64 {
    ((y / p.m).powf(p.l) - 1.0) / (p.s * p.l)
}

/// The z-score with WHO's restricted application beyond ±3 SD.
fn restricted_z(y: f64, p: Lms) -> f64 {
    let sd = |k: f64| p.m * (1.0 + p.l * p.s * k).powf(1.0 / p.l);
    let z = lms_z(y, p);
    if z > 3.0 {
        3.0 + (y - sd(3.0)) / (sd(3.0) - sd(2.0))
    } else if z < -3.0 {
        -3.0 + (y - sd(-3.0)) / (sd(-2.0) - sd(-3.0))
    } else {
        z
    }
}

impl Child {
    /// The position as WHO takes it: a standing measurement under 9 months counts as lying,
    /// with no correction (so as no position at all).
    fn position(&self) -> Option<Position> {
        match self.position {
            Some(Position::Standing) if self.age_days / DAYS_PER_MONTH < 9.0 => None,
            p => p,
        }
    }

    /// Length/height corrected to what the tables of this age expect.
    pub fn corrected_lenhei(&self) -> Option<f64> {
        let x = self.lenhei_cm?;
        let days = whole_days(self.age_days);
        Some(match self.position() {
            Some(Position::Standing) if days < HEIGHT_FROM_DAYS as i64 => x + 0.7,
            Some(Position::Lying) if days >= HEIGHT_FROM_DAYS as i64 => x - 0.7,
            _ => x,
        })
    }

    /// One of the four scores, or `None` where WHO gives none (a measure missing or not
    /// positive, 60 months or more, oedema for the weight-based scores, a length/height
    /// outside the weight-for-length/height tables).
    pub fn score(&self, which: Score) -> Option<Z> {
        if self.age_days.is_nan() || self.age_days < 0.0 || self.age_days / DAYS_PER_MONTH >= 60.0 {
            return None;
        }
        if self.oedema && which != Score::Haz {
            return None;
        }
        let days = whole_days(self.age_days);
        let by_age = |t: Which| table(t).get(&(self.sex, days)).copied();
        let positive = |v: Option<f64>| v.filter(|x| *x > 0.0);
        let z = match which {
            Score::Waz => restricted_z(positive(self.weight_kg)?, by_age(Which::Wei)?),
            Score::Haz => lms_z(positive(self.corrected_lenhei())?, by_age(Which::Len)?),
            Score::Baz => {
                let metres = positive(self.corrected_lenhei())? / 100.0;
                let bmi = positive(self.weight_kg)? / (metres * metres);
                restricted_z(bmi, by_age(Which::Bmi)?)
            }
            Score::Whz => self.weight_for_lenhei(days)?,
        };
        let z = round2(z);
        if z.is_nan() {
            return None;
        }
        let (low, high) = which.plausible();
        Some(Z {
            z,
            flagged: !(low..=high).contains(&z),
        })
    }

    fn weight_for_lenhei(&self, days: i64) -> Option<f64> {
        let weight = self.weight_kg.filter(|w| *w > 0.0)?;
        let x = self.corrected_lenhei()?;
        let lying = days < HEIGHT_FROM_DAYS as i64;
        let (which, low, high) = if lying {
            (Which::Wfl, 45.0, 110.0)
        } else {
            (Which::Wfh, 65.0, 120.0)
        };
        if !(low..=high).contains(&x) {
            return None;
        }
        let t = table(which);
        let lower = *t.get(&(self.sex, (x * 10.0).trunc() as i64))?;
        let diff = (x - (x * 10.0).trunc() / 10.0) / 0.1;
        let p = if diff > 0.0 {
            let upper = *t.get(&(self.sex, (x * 10.0 + 1.0).trunc() as i64))?;
            let mix = |a: f64, b: f64| a + diff * (b - a);
            Lms {
                l: mix(lower.l, upper.l),
                m: mix(lower.m, upper.m),
                s: mix(lower.s, upper.s),
            }
        } else {
            lower
        };
        Some(restricted_z(weight, p))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn child(sex: Sex, age_days: f64, kg: f64, cm: f64, position: Option<Position>) -> Child {
        Child {
            sex,
            age_days,
            weight_kg: Some(kg),
            lenhei_cm: Some(cm),
            position,
            oedema: false,
        }
    }

    #[test]
    fn rounds_as_r_does() {
        assert_eq!(round2(1.234), 1.23);
        assert_eq!(round2(-1.236), -1.24);
        // 0.125 is exact: a tie goes to the even neighbour; 0.135 is just above its tie.
        assert_eq!(round2(0.125), 0.12);
        assert_eq!(round2(2.675), 2.67);
        assert_eq!(round2(-0.005), -0.0);
    }

    #[test]
    fn the_median_child_scores_zero_and_position_is_corrected() {
        let m = table(Which::Wei)[&(Sex::Boy, 365)].m;
        let z = child(Sex::Boy, 365.0, m, 75.0, None)
            .score(Score::Waz)
            .unwrap();
        assert_eq!(
            z,
            Z {
                z: 0.0,
                flagged: false
            }
        );
        // Standing under two years counts 0.7 cm more than lying.
        let lying = child(Sex::Girl, 300.0, 8.0, 70.0, Some(Position::Lying));
        let standing = child(Sex::Girl, 300.0, 8.0, 69.3, Some(Position::Standing));
        for s in [Score::Haz, Score::Whz, Score::Baz] {
            assert_eq!(lying.score(s), standing.score(s), "{s:?}");
        }
        // Under 9 months a standing measurement is taken as lying, uncorrected.
        let young = child(Sex::Girl, 200.0, 7.0, 66.0, Some(Position::Standing));
        assert_eq!(young.corrected_lenhei(), Some(66.0));
        // From 60 months, and with oedema for the weight-based scores, there is no score.
        assert!(child(Sex::Boy, 1827.0, 18.0, 110.0, None)
            .score(Score::Haz)
            .is_none());
        let swollen = Child {
            oedema: true,
            ..child(Sex::Boy, 400.0, 9.0, 75.0, None)
        };
        assert!(swollen.score(Score::Waz).is_none() && swollen.score(Score::Whz).is_none());
        assert!(swollen.score(Score::Haz).is_some());
    }
}
