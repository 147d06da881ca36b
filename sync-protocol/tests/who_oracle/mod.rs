//! The oracle: 3,000 children scored by WHO's own program, the R package `anthro` 1.1.0
//! (`../data/who-anthro-oracle.csv`), read as the crate's children with WHO's scores. Shared
//! by the crate's test and the phone app's (the e2e tests include this file).
#![allow(dead_code)]

use sync_protocol::who::{Child, Position, Score, Sex};

const ORACLE: &str = include_str!("../data/who-anthro-oracle.csv");

/// One row of the oracle: its line in the file, the child, and WHO's (z, flag) per score, in
/// the order of [`Score::ALL`] (`None`: WHO gives no score).
pub struct Row {
    pub line: usize,
    pub child: Child,
    pub who: Vec<(Score, Option<(f64, bool)>)>,
}

pub fn rows() -> Vec<Row> {
    let mut lines = ORACLE.lines();
    let header: Vec<String> = lines
        .next()
        .unwrap()
        .split(',')
        .map(|h| h.trim_matches('"').to_owned())
        .collect();
    let col = |name: &str| header.iter().position(|h| h == name).unwrap();
    lines
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty())
        .map(|(i, line)| {
            let c: Vec<&str> = line.split(',').map(|v| v.trim_matches('"')).collect();
            let num = |name: &str| {
                let v = c[col(name)];
                (!v.is_empty() && v != "NA").then(|| v.parse::<f64>().unwrap())
            };
            let child = Child {
                sex: if c[col("sex")] == "1" {
                    Sex::Boy
                } else {
                    Sex::Girl
                },
                age_days: num("age_days").unwrap(),
                weight_kg: num("weight_kg"),
                lenhei_cm: num("lenhei_cm"),
                position: match c[col("measure")] {
                    "l" => Some(Position::Lying),
                    "h" => Some(Position::Standing),
                    _ => None,
                },
                oedema: c[col("oedema")] == "y",
            };
            let who = [
                (Score::Waz, "wei"),
                (Score::Haz, "len"),
                (Score::Whz, "wfl"),
                (Score::Baz, "bmi"),
            ]
            .into_iter()
            .map(|(s, n)| {
                let z = num(&format!("z{n}"));
                let f = num(&format!("f{n}"));
                (s, z.map(|z| (z, f == Some(1.0))))
            })
            .collect();
            Row {
                line: i + 2,
                child,
                who,
            }
        })
        .collect()
}
