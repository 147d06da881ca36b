//! Every child of `tests/data/who-anthro-oracle.csv`, scored by WHO's own program (the R
//! package `anthro` 1.1.0), scored again by this crate: the same four z-scores to 0.01 and the
//! same flags, and no score where WHO gives none. Then seeded random children: each score
//! rises with its measure, and the change of tables at 731 days moves no score more than
//! WHO's own tables do.

mod common;
mod who_oracle;

use common::{for_seeds, Rng};
use sync_protocol::who::{Child, Position, Score, Sex};
use who_oracle::rows;

#[test]
fn every_child_scores_as_who_scores_it() {
    let rows = rows();
    assert_eq!(rows.len(), 3000);
    let mut problems = Vec::new();
    for score in Score::ALL {
        let (mut compared, mut absent, mut largest) = (0, 0, 0.0f64);
        for row in &rows {
            let who = row.who.iter().find(|(s, _)| *s == score).unwrap().1;
            let ours = row.child.score(score).map(|z| (z.z, z.flagged));
            match (who, ours) {
                (None, None) => absent += 1,
                (Some((wz, wf)), Some((z, f))) => {
                    compared += 1;
                    largest = largest.max((wz - z).abs());
                    if (wz - z).abs() >= 0.005 || wf != f {
                        problems.push(format!(
                            "line {}: {} WHO {wz} flag {wf}, here {z} flag {f}: {:?}",
                            row.line,
                            score.name(),
                            row.child
                        ));
                    }
                }
                (who, ours) => problems.push(format!(
                    "line {}: {} WHO {who:?}, here {ours:?}: {:?}",
                    row.line,
                    score.name(),
                    row.child
                )),
            }
        }
        println!(
            "{}: {compared} scores compared, {absent} absent in both, largest difference {largest:.4}",
            score.name()
        );
    }
    assert!(
        problems.is_empty(),
        "{} disagreements:\n{}",
        problems.len(),
        problems[..problems.len().min(30)].join("\n")
    );
}

fn uniform(rng: &mut Rng, low: f64, high: f64) -> f64 {
    low + (high - low) * (rng.next_u64() % 1_000_001) as f64 / 1_000_000.0
}

/// A child of any age under five, measured in any position or none, with measures from far
/// below to far above WHO's medians.
fn random_child(rng: &mut Rng) -> Child {
    let age_days = rng.below(1827) as f64;
    let years = age_days / 365.25;
    let position = match rng.below(3) {
        0 => Some(Position::Lying),
        1 => Some(Position::Standing),
        _ => None,
    };
    Child {
        sex: if rng.chance(50) { Sex::Boy } else { Sex::Girl },
        age_days,
        weight_kg: Some(uniform(rng, 0.6, 1.6) * (3.3 + 2.6 * years)),
        lenhei_cm: Some(uniform(rng, 0.8, 1.2) * (50.0 + 12.0 * years)),
        position,
        oedema: false,
    }
}

/// More of a child's measure never lowers its score: weight for the weight-based scores,
/// length/height for length/height-for-age.
#[test]
fn every_score_rises_with_its_measure() {
    for_seeds("every_score_rises_with_its_measure", 200, |seed| {
        let mut rng = Rng::new(seed);
        for _ in 0..50 {
            let child = random_child(&mut rng);
            for score in Score::ALL {
                let step = uniform(&mut rng, 0.01, 2.0);
                let more = match score {
                    Score::Haz => Child {
                        lenhei_cm: child.lenhei_cm.map(|x| x + step),
                        ..child
                    },
                    _ => Child {
                        weight_kg: child.weight_kg.map(|x| x + step),
                        ..child
                    },
                };
                if let (Some(a), Some(b)) = (child.score(score), more.score(score)) {
                    assert!(
                        b.z >= a.z,
                        "{}: {a:?} then {b:?} for {child:?} and {more:?}",
                        score.name()
                    );
                }
            }
        }
    });
}

/// At 731 days the tables change from lying length to standing height and the measure is
/// corrected by 0.7 cm. For a child whose position is known, weight-for-length the day
/// before equals weight-for-height the day after (WHO's weight-for-height table is its
/// weight-for-length table moved by 0.7 cm); length/height-for-age moves by at most 0.02
/// and weight-for-age by at most 0.01, as WHO's tables do from one day to the next; BMI, whose
/// two WHO tables do not meet at two years, by at most 0.2. (Among plausible scores: in the
/// restricted tails past WHO's bounds any gap is stretched.)
#[test]
fn scores_are_continuous_across_731_days() {
    for_seeds("scores_are_continuous_across_731_days", 200, |seed| {
        let mut rng = Rng::new(seed);
        for _ in 0..50 {
            // A two-year-old, measured lying or standing.
            let child = Child {
                weight_kg: Some(uniform(&mut rng, 7.0, 17.0)),
                lenhei_cm: Some(uniform(&mut rng, 75.0, 100.0)),
                position: Some(if rng.chance(50) {
                    Position::Lying
                } else {
                    Position::Standing
                }),
                ..random_child(&mut rng)
            };
            let before = Child {
                age_days: 730.0,
                ..child
            };
            let after = Child {
                age_days: 731.0,
                ..child
            };
            for (score, most) in [
                (Score::Whz, 0.0),
                (Score::Haz, 0.02),
                (Score::Waz, 0.01),
                (Score::Baz, 0.2),
            ] {
                let (Some(a), Some(b)) = (before.score(score), after.score(score)) else {
                    continue;
                };
                // Past WHO's bounds of plausibility the tails stretch any gap.
                if !a.flagged && !b.flagged {
                    assert!(
                        (a.z - b.z).abs() <= most + 1e-9,
                        "{}: {} at 730 days, {} at 731: {child:?}",
                        score.name(),
                        a.z,
                        b.z
                    );
                }
            }
        }
    });
}
