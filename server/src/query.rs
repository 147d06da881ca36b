//! The questions the office pages and the API both ask of the indicator tables: a period and
//! its map, the rows of a table, a report workbook, the records behind a number. No HTTP here:
//! each surface turns a [`QueryError`] into its own answer.

use crate::indicators::{self, Indicator};
use crate::report::{self, Level, Scope};
use crate::store::Store;
use crate::store::StoreError;
use crate::units::Units;

/// Checks the period and picks the geography (default: the map in force when the period began).
pub(crate) fn period_and_geography(
    state: &Tables<'_>,
    period: Option<&str>,
    geography: Option<&str>,
) -> Result<(String, String), QueryError> {
    let period =
        period.ok_or_else(|| QueryError::bad("period", "required, e.g. 2020-H1 or 2020".into()))?;
    let (start, _) = indicators::period_bounds(period).ok_or_else(|| {
        QueryError::bad(
            "period",
            format!("{period:?} is not a half-year (2020-H1, 2020-H2) or a year (2020)"),
        )
    })?;
    let geography = match geography {
        Some(g) => state.units.geography(g).map(Units::key).ok_or_else(|| {
            QueryError::bad(
                "geography",
                format!("{g:?} is not a geography version (2020, 2021-07, 2025-01, 2025-07)"),
            )
        })?,
        None => state
            .units
            .version_on(&start)
            .map(Units::key)
            .unwrap_or_default(),
    };
    Ok((period.to_owned(), geography))
}

/// The rows of the indicator table for a period at a level, over what `scope` allows. The
/// inner error says why the level does not exist on that map.
pub(crate) async fn indicator_rows(
    state: &Tables<'_>,
    scope: &Scope,
    period: &str,
    level: Level,
    geography: &str,
) -> Result<Result<Vec<report::Row>, String>, StoreError> {
    let cells = state.store.cells(Some(period)).await?;
    Ok(rows_of(state, &cells, scope, period, level, geography))
}

/// [`indicator_rows`] over cells already read, for a page that shows several levels.
pub(crate) fn rows_of(
    state: &Tables<'_>,
    cells: &[(indicators::CellKey, indicators::Amount)],
    scope: &Scope,
    period: &str,
    level: Level,
    geography: &str,
) -> Result<Vec<report::Row>, String> {
    let today = crate::today();
    let query = report::Query {
        period,
        level,
        geography,
        scope,
        today: &today,
    };
    report::table(state.indicators, state.units, cells, &query)
}

/// The report workbook of a period, over the cells `scope` allows, made by `by` today.
pub(crate) async fn workbook(
    state: &Tables<'_>,
    scope: &Scope,
    period: &str,
    geography: Option<&str>,
    by: &str,
) -> Result<Workbook, QueryError> {
    let (period, geography) = period_and_geography(state, Some(period), geography)?;
    let level = report::report_level(scope, state.units, &geography);
    let cells = state.store.cells(Some(&period)).await?;
    let today = crate::today();
    let query = report::Query {
        period: &period,
        level,
        geography: &geography,
        scope,
        today: &today,
    };
    let made = report::Made { by, on: &today };
    let bytes = report::workbook(state.indicators, state.units, &cells, &query, &made)
        .map_err(QueryError::Internal)?;
    Ok(Workbook {
        file_name: format!("mam-{period}.xlsx"),
        bytes,
    })
}

/// The records behind one number of an indicator table.
pub(crate) struct Behind {
    pub period: String,
    pub geography: String,
    pub area_name: String,
    pub records: Vec<BehindRecord>,
}

pub(crate) struct BehindRecord {
    pub record: sync_protocol::Record,
    pub numerator: bool,
    pub value: i64,
    pub conflicted: bool,
}

/// The records in `scope` that add to `indicator` for `area` (a commune, district or the
/// province) in a period. An area with no commune in `scope`, or none at all, is not found.
pub(crate) async fn records_behind(
    state: &Tables<'_>,
    scope: &Scope,
    indicator: &Indicator,
    area: &str,
    period: Option<&str>,
    geography: Option<&str>,
) -> Result<Behind, QueryError> {
    let (period, geography) = period_and_geography(state, period, geography)?;
    let all = state.units.all_codes();
    let level = if area == "46" {
        Level::Province
    } else if all.contains(area) {
        Level::Commune
    } else {
        Level::District
    };
    let mut area_name = area.to_owned();
    let communes: Vec<String> = all
        .into_iter()
        .filter(|c| scope.allows(c, state.units))
        .filter(
            |c| match report::area_of(state.units, c, level, &geography) {
                Ok((a, name)) if a == area => {
                    area_name = name;
                    true
                }
                _ => false,
            },
        )
        .collect();
    if communes.is_empty() {
        return Err(QueryError::NotFound(format!(
            "no area {area:?} on the {geography} map within your scope"
        )));
    }
    let forms: Vec<String> = [&indicator.numerator.form, &indicator.denominator.form]
        .into_iter()
        .cloned()
        .collect();
    let found = state.store.records_of(&forms, &communes).await?;
    let one = [indicator.clone()];
    let mut records = Vec::new();
    for record in found {
        for (key, amount) in indicators::contributions(&one, &record) {
            if key.period == period {
                records.push(BehindRecord {
                    record: record.clone(),
                    numerator: key.part == indicators::NUMERATOR,
                    value: amount.value,
                    conflicted: amount.conflicted > 0,
                });
            }
        }
    }
    Ok(Behind {
        period,
        geography,
        area_name,
        records,
    })
}

/// A report workbook and the name it is downloaded under.
pub struct Workbook {
    pub file_name: String,
    pub bytes: Vec<u8>,
}

/// Why a question cannot be answered.
#[derive(Debug, thiserror::Error)]
pub enum QueryError {
    /// A parameter is wrong: which one and why.
    #[error("{field}: {message}")]
    Bad {
        field: &'static str,
        message: String,
    },
    /// Nothing of that name within the reader's scope.
    #[error("{0}")]
    NotFound(String),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("{0}")]
    Internal(String),
}

impl QueryError {
    fn bad(field: &'static str, message: String) -> Self {
        QueryError::Bad { field, message }
    }
}

/// What the questions read: the stored cells and records, the admin units, the indicators.
pub struct Tables<'a> {
    pub store: &'a dyn Store,
    pub units: &'a Units,
    pub indicators: &'a [Indicator],
}
