//! The v1 sync service: one algorithm for both backends.
//!
//! A push, in one transaction: lock the device row; sort the pushed edits by seq; edits at or
//! below the device's last consumed seq are repeats (acknowledged again, or refused as
//! `seq_reused` when their content differs); the rest are taken strictly in order from
//! `last + 1` and stop at the first gap. A reused seq (a repeat with other content, or a second
//! edit under one seq in the push) is refused and stops the push there: one device number is
//! one history, so nothing after it is applied. Each taken edit is checked (shape, scope, form,
//! values, supersedes) and either applied to its record or rejected; both consume the seq and
//! are stored. Changed records get fresh change seqs last, and everything is committed at once:
//! either the whole push is durable and acknowledged, or nothing of it happened.

use std::borrow::Cow;
use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::fmt::Write;
use std::sync::Arc;
use std::time::Duration;

use serde_json::Value;
use sync_protocol::{
    BrokenRule, CheckedEdit, CommuneCode, DeviceId, Dot, Edit, FieldEdit, Record, RecordId,
    RejectCode, Rejection, Violation, COMMUNE_FIELD,
};
use tracing::warn;

use crate::forms::FormRegistry;
use crate::indicators::{self, Amount, CellKey, Indicator};
use crate::store::{
    record_row, Device, Move, PackedEdits, PushLog, RecordRow, Refused, Store, StoreError,
    WriteBatch,
};
use crate::units::Units;

pub mod request;

/// What the server checks and computes an edit against.
#[derive(Clone, Copy)]
pub struct Catalog<'a> {
    pub forms: &'a FormRegistry,
    pub units: &'a Units,
    pub indicators: &'a [Indicator],
}

/// Times a push is retried after losing a race with a concurrent writer.
const RETRIES: usize = 8;

#[derive(Debug, Default)]
pub struct PushOutcome {
    pub acked_through: u64,
    pub rejected: Vec<Rejection>,
    pub applied: usize,
}

/// An edit as received, with what can be known of it before touching the database: its
/// text as the phone sent it and whether it passes the checks that need no stored state.
pub struct Prepared {
    seq: u64,
    record: String,
    body: Arc<str>,
    checked: Result<Checked, Rejection>,
}

impl Prepared {
    /// This edit refused, as kept for review: with the text the phone sent and its record.
    fn refused(&self, rejection: Rejection) -> Refused {
        Refused {
            rejection,
            body: self.body.clone(),
            record: self.record.clone(),
        }
    }
}

/// A well-formed edit that passed the checks that need no stored state.
enum Checked {
    Edit(CheckedEdit),
    /// An edit that supersedes nothing, which is most edits: the record it makes if it creates
    /// its record, built (and checked) here, so that the transaction only has to write it.
    Creates(Box<Created>),
}

/// What an edit that supersedes nothing makes of a record that does not exist yet: its row and
/// its indicator cells. The record itself is freed here, by the thread that built it.
struct Created {
    id: RecordId,
    /// The new record's row and what it adds to the indicator cells, or the rule it breaks.
    row: Result<(RecordRow, BTreeMap<CellKey, Amount>), Rejection>,
}

impl Checked {
    fn id(&self) -> RecordId {
        match self {
            Checked::Edit(c) => c.record,
            Checked::Creates(made) => made.id,
        }
    }

    /// The edit, for the path that applies it to a stored record. A `Creates` is read again
    /// from the text the phone sent: that path is for the rare edit that supersedes nothing
    /// and finds its record made already.
    fn edit(&self, seq: u64, body: &str) -> Result<Cow<'_, CheckedEdit>, Rejection> {
        match self {
            Checked::Edit(c) => Ok(Cow::Borrowed(c)),
            Checked::Creates(made) => serde_json::from_str::<Edit>(body)
                .map_err(|e| {
                    Rejection::new(
                        seq,
                        RejectCode::InvalidEdit,
                        None,
                        format!("the edit could not be read again: {e}"),
                    )
                })
                .and_then(Edit::into_checked)
                .map(|c| {
                    debug_assert_eq!(c.record, made.id);
                    Cow::Owned(c)
                }),
        }
    }
}

/// A push's edits as received and checked, in seq order, with their log packed ahead: a push
/// consumes all of its edits but for repeats and gaps, and packing is CPU work best done before
/// the push holds the database.
pub struct PreparedPush {
    edits: Vec<Prepared>,
    /// Edits sent under a seq another edit of the same push already has, with other content:
    /// refused `seq_reused`, never applied.
    duplicates: Vec<Prepared>,
    /// The log of every edit, when their seqs follow on: see [`PushLog::new`].
    packed: Option<PackedEdits>,
    /// Seqs after the device's last consumed one, up to this, that the phone declares lost
    /// (acknowledged before the database was restored, no longer on the phone). Taken only
    /// when the push carries the edit right after them.
    pub lost_through: Option<u64>,
    /// The database was restored lately: a `supersedes` naming a dot not received (yet) is
    /// not refused, since the edit that made it may be on its way back from its phone. That
    /// value, when it comes, stands beside this edit's as a conflict.
    pub recovering: bool,
    /// The cursor the phone sent: it had pulled every change up to this one. Says which moves
    /// of a record it had seen, for an edit that names a commune without writing
    /// [`COMMUNE_FIELD`].
    pub cursor: u64,
}

impl PreparedPush {
    pub fn len(&self) -> usize {
        self.edits.len()
    }

    pub fn is_empty(&self) -> bool {
        self.edits.is_empty()
    }
}

/// An edit and its text as the phone sent it, which the edit log keeps.
pub struct Received {
    pub edit: Edit,
    pub text: Arc<str>,
}

impl From<Edit> for Received {
    /// An edit made here rather than received: its text is its canonical encoding.
    fn from(edit: Edit) -> Self {
        let text = serde_json::to_string(&edit)
            .expect("edits always serialize")
            .into();
        Self { edit, text }
    }
}

/// Check pushed edits, sorted by seq. Plain CPU work: the caller runs it off the async
/// threads, and the write transaction then holds the database for the writes alone.
pub fn prepare(
    edits: Vec<Received>,
    catalog: Catalog,
    device: &Device,
    today: &str,
) -> PreparedPush {
    let forms = catalog.forms;
    let mut prepared: Vec<Prepared> = edits
        .into_iter()
        .map(|Received { edit, text: body }| {
            let (seq, record) = (edit.seq, edit.record.clone());
            let checked = edit
                .into_checked()
                .and_then(|c| admit_alone(&c, forms, device, today).map(|()| c))
                .map(|c| match supersedes_nothing(&c) {
                    true => Checked::Creates(Box::new(create(c, catalog, device, today))),
                    false => Checked::Edit(c),
                });
            Prepared {
                seq,
                record,
                body,
                checked,
            }
        })
        .collect();
    // Stable: of two edits under one seq, the first sent is the one taken.
    prepared.sort_by_key(|p| p.seq);
    let mut duplicates = Vec::new();
    let mut unique: Vec<Prepared> = Vec::with_capacity(prepared.len());
    for p in prepared {
        match unique.last() {
            Some(first) if first.seq == p.seq => {
                // The same edit sent twice is one edit; another edit under its seq is refused.
                if !same_edit(&first.body, &p.body) {
                    duplicates.push(p);
                }
            }
            _ => unique.push(p),
        }
    }
    let prepared = unique;
    let packed = prepared
        .windows(2)
        .all(|w| w[1].seq == w[0].seq + 1)
        .then(|| PackedEdits::pack(prepared.iter().map(|p| (p.seq, &*p.body))))
        .flatten();
    PreparedPush {
        edits: prepared,
        duplicates,
        packed,
        lost_through: None,
        recovering: false,
        cursor: 0,
    }
}

fn supersedes_nothing(edit: &CheckedEdit) -> bool {
    edit.fields.values().all(|f| f.supersedes.is_empty())
}

/// The record an edit makes on its own: its row and its indicator cells.
fn create(edit: CheckedEdit, catalog: Catalog, device: &Device, today: &str) -> Created {
    let (id, seq) = (edit.record, edit.seq);
    let mut record = Record::from_edit(&edit);
    record.apply(device.id, edit, &|_| false);
    // A new record: every rule is checked, whatever the edit touched.
    let row = finish(
        &mut record,
        catalog,
        today,
        &|_| true,
        &|_| true,
        None,
        true,
    )
    .map(|()| {
        let cells = indicators::deltas(catalog.indicators, None, Some(&record));
        let row = RecordRow {
            name: Some(crate::forms::search_name(&record, catalog.forms)),
            ..record_row(&record, 0, false)
        };
        (row, cells)
    })
    .map_err(|v| v.reject(seq));
    Created { id, row }
}

/// Apply a device's prepared edits. Retries the whole transaction when a concurrent writer won
/// a race (PostgreSQL); nothing partial is ever committed.
pub async fn push(
    store: &dyn Store,
    catalog: Catalog<'_>,
    device: &Device,
    prepared: &PreparedPush,
    now: i64,
    today: &str,
) -> Result<PushOutcome, StoreError> {
    let mut attempt = 0;
    loop {
        match try_push(store, catalog, device, prepared, now, today).await {
            Err(StoreError::Conflict) if attempt < RETRIES => {
                attempt += 1;
                let jitter = (now as u64 ^ (device.id as u64 * 7919)) % 7;
                tokio::time::sleep(Duration::from_millis(2 * attempt as u64 + jitter)).await;
            }
            Err(StoreError::Conflict) => {
                warn!(device = device.id, "push lost {RETRIES} races in a row");
                return Err(StoreError::Unavailable(
                    "too much contention, retry later".into(),
                ));
            }
            other => return other,
        }
    }
}

async fn try_push(
    store: &dyn Store,
    catalog: Catalog<'_>,
    device: &Device,
    prepared: &PreparedPush,
    now: i64,
    today: &str,
) -> Result<PushOutcome, StoreError> {
    let mut tx = store.begin_sync().await?;
    let mut last = tx.lock_device(device.id).await?;

    let mut rejected = Vec::new();
    let mut refusals = Vec::new();
    // Seqs a restore lost that the phone no longer holds: consumed as lost, so that the edits
    // after them are not kept waiting behind a gap forever. Kept for the office to see.
    if let Some(lost) = prepared
        .lost_through
        .filter(|&l| l > last && prepared.edits.iter().any(|p| p.seq == l + 1))
    {
        let r = Rejection::new(
            last + 1,
            RejectCode::Lost,
            None,
            format!(
                "edits {}–{lost} of device {} were acknowledged before the database was \
                 restored from a backup and are no longer on the phone: lost for good",
                last + 1,
                device.id
            ),
        );
        refusals.push(Refused {
            rejection: r,
            body: Arc::from("{}"),
            record: String::new(),
        });
        last = lost;
    }

    // Seq 0 is no seq: refused under a code of its own, and the rest of the push goes on.
    let (unnumbered, numbered): (Vec<&Prepared>, Vec<&Prepared>) =
        prepared.edits.iter().partition(|p| p.seq == 0);
    for p in unnumbered {
        let r = Rejection::new(
            0,
            RejectCode::InvalidSeq,
            None,
            "seq 0: a device numbers its edits from 1; this edit was not applied".to_owned(),
        );
        rejected.push(r.clone());
        refusals.push(p.refused(r));
    }
    let (repeats, later): (Vec<&Prepared>, Vec<&Prepared>) =
        numbered.into_iter().partition(|p| p.seq <= last);
    let mut reused_any = false;

    let reused = |p: &Prepared| {
        let r = Rejection::new(
            p.seq,
            RejectCode::SeqReused,
            None,
            format!(
                "seq {} was already used by device {} for another edit; this edit was not applied: \
                 the phone must take a new device number and send it again",
                p.seq, device.id
            ),
        );
        (r.clone(), p.refused(r))
    };
    if !repeats.is_empty() {
        let seqs: Vec<u64> = repeats.iter().map(|p| p.seq).collect();
        let stored = tx.stored_edits(device.id, &seqs).await?;
        for p in &repeats {
            if !stored
                .get(&p.seq)
                .is_some_and(|text| same_edit(text, &p.body))
            {
                let (r, kept) = reused(p);
                rejected.push(r);
                refusals.push(kept);
                reused_any = true;
            }
        }
    }
    // One device number, one history: after a reused seq nothing more of this push is applied.
    // The edits after it were made by a phone that shares its number with another history;
    // they stay pending on the phone, which sends them again under a number of its own.
    let fresh: Vec<&Prepared> = if !reused_any {
        let first_duplicate = prepared.duplicates.first().map(|p| p.seq);
        later
            .iter()
            .enumerate()
            .take_while(|(i, p)| p.seq == last + 1 + *i as u64)
            .map(|(_, p)| *p)
            .take_while(|p| first_duplicate.is_none_or(|d| p.seq <= d))
            .collect()
    } else {
        Vec::new()
    };
    let acked_through = last + fresh.len() as u64;
    for p in prepared
        .duplicates
        .iter()
        .filter(|p| p.seq <= acked_through)
    {
        let (r, kept) = reused(p);
        rejected.push(r);
        refusals.push(kept);
    }

    let mut batch = WriteBatch {
        device: device.id,
        last_seq: acked_through,
        now,
        rejections: refusals,
        ..Default::default()
    };

    let ids: Vec<RecordId> = fresh
        .iter()
        .filter_map(|p| p.checked.as_ref().ok().map(Checked::id))
        .collect::<HashSet<_>>()
        .into_iter()
        .collect();
    let mut records = if ids.is_empty() {
        HashMap::new()
    } else {
        tx.load_records(&ids).await?
    };
    let existed: HashSet<RecordId> = records.keys().copied().collect();
    // The moves of records that an edit names another commune for than the one they are in:
    // they say where each record was when its phone last pulled it.
    let named_elsewhere: Vec<RecordId> = fresh
        .iter()
        .filter_map(|p| {
            let (id, commune) = match p.checked.as_ref().ok()? {
                Checked::Edit(c) if !c.fields.contains_key(COMMUNE_FIELD) => {
                    (c.record, Some(c.commune.as_str()))
                }
                Checked::Edit(_) => return None,
                // An edit that supersedes nothing, to a record that exists: read as an edit.
                Checked::Creates(made) => (
                    made.id,
                    made.row.as_ref().ok().map(|(row, _)| row.commune.as_str()),
                ),
            };
            let record = records.get(&id)?;
            commune
                .is_none_or(|c| c != record.commune.as_str())
                .then_some(id)
        })
        .collect::<HashSet<_>>()
        .into_iter()
        .collect();
    let moves = if named_elsewhere.is_empty() {
        HashMap::new()
    } else {
        tx.record_moves(&named_elsewhere).await?
    };
    let indicators = catalog.indicators;
    let originals: HashMap<RecordId, Record> = if indicators.is_empty() {
        HashMap::new()
    } else {
        records.clone()
    };
    let others: Vec<DeviceId> = fresh
        .iter()
        .filter_map(|p| match &p.checked {
            Ok(Checked::Edit(c)) => Some(c),
            _ => None,
        })
        .flat_map(|c| {
            c.fields
                .values()
                .flat_map(|f| f.supersedes.iter().map(|d| d.device))
        })
        .filter(|d| *d != device.id)
        .collect::<HashSet<_>>()
        .into_iter()
        .collect();
    let seqs = if others.is_empty() {
        HashMap::new()
    } else {
        tx.device_seqs(&others).await?
    };

    let mut edits_per_record: HashMap<RecordId, usize> = HashMap::new();
    for c in fresh.iter().filter_map(|p| p.checked.as_ref().ok()) {
        *edits_per_record.entry(c.id()).or_default() += 1;
    }
    // Where each changed record was before this push, to record moves between communes.
    let mut changed: BTreeMap<RecordId, Option<CommuneCode>> = BTreeMap::new();
    let mut created: BTreeMap<RecordId, &(RecordRow, BTreeMap<CellKey, Amount>)> = BTreeMap::new();
    let mut applied = 0;
    // The edits applied to each record ("device:seq,…"), and every edit for the log.
    let mut applied_to: HashMap<RecordId, String> = HashMap::new();
    let mut logged = Vec::with_capacity(fresh.len());
    for p in fresh {
        let checked = p.checked.as_ref().map_err(Rejection::clone);
        let verdict = match checked {
            Ok(Checked::Creates(made))
                if !existed.contains(&made.id)
                    && edits_per_record[&made.id] == 1
                    && (made.row.is_ok() || !prepared.recovering) =>
            {
                match &made.row {
                    Ok(made_row) => {
                        created.insert(made.id, made_row);
                        Ok(())
                    }
                    Err(r) => Err(r.clone()),
                }
            }
            Ok(checked) => checked.edit(p.seq, &p.body).and_then(|mut c| {
                admit_against(
                    &c,
                    device,
                    records.get(&c.record),
                    &seqs,
                    prepared.recovering,
                )
                .and_then(|()| {
                    // Read after the checks: the dots it supersedes are the record's own.
                    if let Some(record) = records.get(&c.record) {
                        if !c.fields.contains_key(COMMUNE_FIELD) {
                            let history = moves.get(&c.record).map(Vec::as_slice).unwrap_or(&[]);
                            let read =
                                read_commune(record, &c, device.id, prepared.cursor, history);
                            if let CommuneRead::Moves(supersedes) = read {
                                let value = Value::String(c.commune.to_string());
                                let change = FieldEdit { value, supersedes };
                                c.to_mut().fields.insert(COMMUNE_FIELD.to_owned(), change);
                            }
                        }
                    }
                    let (id, seq) = (c.record, c.seq);
                    let seen = |d: Dot| match d.device == device.id {
                        true => d.seq < seq,
                        false => d.seq <= seqs.get(&d.device).copied().unwrap_or(0),
                    };
                    let current = records.get(&id);
                    let before = current.map(|r| r.commune.clone());
                    let is_new = current.is_none();
                    let mut next = current.cloned().unwrap_or_else(|| Record::from_edit(&c));
                    let names: BTreeSet<String> = c.fields.keys().cloned().collect();
                    let touched = |name: &str| names.contains(name);
                    // The fields whose values the author provably saw: those it wrote, and
                    // those all of whose values are its own earlier edits or older than an
                    // edit it supersedes (a device's edits apply in order, so having seen its
                    // seq n is having seen its seqs before n).
                    let mut horizon: HashMap<DeviceId, u64> = HashMap::new();
                    for d in c.fields.values().flat_map(|f| &f.supersedes) {
                        let h = horizon.entry(d.device).or_default();
                        *h = (*h).max(d.seq);
                    }
                    let author_saw = |d: Dot| {
                        (d.device == device.id && d.seq <= seq)
                            || horizon.get(&d.device).is_some_and(|&h| d.seq <= h)
                    };
                    next.apply(device.id, c.into_owned(), &seen);
                    let unseen: BTreeSet<String> = next
                        .fields
                        .iter()
                        .filter(|(n, r)| !touched(n) && !r.dots().all(author_saw))
                        .map(|(n, _)| n.clone())
                        .collect();
                    let saw = |name: &str| !unseen.contains(name);
                    let moved_from = if is_new { None } else { before.as_ref() };
                    // After a restore, an edit may reach the server before the edit that made its
                    // record comes back from its phone: it is held to the fields it touches.
                    let complete = !(is_new && prepared.recovering);
                    finish(
                        &mut next, catalog, today, &touched, &saw, moved_from, complete,
                    )
                    .map_err(|v| v.reject(seq))?;
                    changed.entry(id).or_insert_with(|| {
                        if existed.contains(&id) {
                            before
                        } else {
                            None
                        }
                    });
                    records.insert(id, next);
                    Ok(())
                })
            }),
            Err(r) => Err(r),
        };
        let refused = verdict.is_err();
        match verdict {
            Ok(()) => {
                applied += 1;
                if let Ok(c) = &p.checked {
                    let list = applied_to.entry(c.id()).or_default();
                    if !list.is_empty() {
                        list.push(',');
                    }
                    let _ = write!(list, "{}:{}", device.id, p.seq);
                }
            }
            Err(r) => {
                rejected.push(r.clone());
                batch.rejections.push(p.refused(r));
            }
        }
        logged.push((p.seq, &*p.body, refused));
    }
    batch.log = PushLog::new(&logged, prepared.packed.as_ref());

    let mut cells: BTreeMap<CellKey, Amount> = BTreeMap::new();
    let mut add = |deltas: &BTreeMap<CellKey, Amount>| {
        for (key, amount) in deltas {
            cells.entry(key.clone()).or_default().add(*amount, 1);
        }
    };
    // Each changed record's place among this push's changes; the store makes them change seqs.
    let mut at = 0;
    for (id, before) in changed {
        let record = records.remove(&id).expect("changed records are loaded");
        add(&indicators::deltas(
            indicators,
            originals.get(&id),
            Some(&record),
        ));
        if let Some(from) = before.filter(|b| *b != record.commune) {
            batch.moves.push((id, from, record.commune.clone(), at));
        }
        let mut row = record_row(&record, at, existed.contains(&id));
        row.edits = applied_to.remove(&id).unwrap_or_default();
        row.name = Some(crate::forms::search_name(&record, catalog.forms));
        batch.records.push(row);
        at += 1;
    }
    for (id, (row, deltas)) in created {
        add(deltas);
        batch.records.push(RecordRow {
            changed_at: at,
            edits: applied_to.remove(&id).unwrap_or_default(),
            ..row.clone()
        });
        at += 1;
    }
    batch.cells = cells.into_iter().filter(|(_, a)| !a.is_zero()).collect();
    tx.write(&batch).await?;
    tx.commit().await?;

    // A phone that lost an earlier response learns again why its edits were refused.
    if let Some(first) = repeats.first() {
        let earlier = store.rejections_between(device.id, first.seq, last).await?;
        // Not for a seq refused as reused: that reason was about the other edit under it.
        let reused: HashSet<u64> = rejected
            .iter()
            .filter(|r| r.code == RejectCode::SeqReused)
            .map(|r| r.seq)
            .collect();
        rejected.extend(earlier.into_iter().filter(|r| !reused.contains(&r.seq)));
        rejected.sort_by_key(|r| r.seq);
    }
    Ok(PushOutcome {
        acked_through,
        rejected,
        applied,
    })
}

/// How an edit that names a commune, without writing [`COMMUNE_FIELD`], reads against the
/// record it edits (a v1 phone's edit, which moves a record by naming another commune).
#[derive(Debug, PartialEq)]
enum CommuneRead {
    /// It names a commune the record holds, or the one the record was in when its phone last
    /// pulled it: an edit made from an older view, which does not move the record back.
    Stays,
    /// A move, superseding the commune values its phone had seen; one it had not seen stays
    /// beside the move as a conflict.
    Moves(Vec<Dot>),
}

/// Reads `edit`'s commune against `record`, whose moves are `moves` (oldest first), for a
/// phone that had pulled every change up to `cursor`.
fn read_commune(
    record: &Record,
    edit: &CheckedEdit,
    author: DeviceId,
    cursor: u64,
    moves: &[Move],
) -> CommuneRead {
    let named = &edit.commune;
    let held = record.communes();
    if held.iter().any(|(c, _)| c == named) {
        return CommuneRead::Stays;
    }
    // A value was written by the last move to it; one no move brought was there from the start.
    let written_at = |c: &CommuneCode| moves.iter().rev().find(|m| &m.to == c).map(|m| m.at);
    let seen = |(c, dot): &&(CommuneCode, Option<Dot>)| {
        dot.is_some_and(|d| d.device == author && d.seq < edit.seq)
            || written_at(c).is_none_or(|at| at <= cursor)
    };
    let (seen, unseen): (Vec<_>, Vec<_>) = held.iter().partition(seen);
    let dots = seen.iter().filter_map(|(_, d)| *d).collect();
    if unseen.is_empty() {
        return CommuneRead::Moves(dots);
    }
    // Where the record was when the phone last pulled it.
    let then = moves
        .iter()
        .rev()
        .find(|m| m.at <= cursor)
        .map(|m| &m.to)
        .or(moves.first().map(|m| &m.from))
        .unwrap_or(&record.commune);
    if then == named {
        CommuneRead::Stays
    } else {
        CommuneRead::Moves(dots)
    }
}

/// Rules on the whole record after an edit, then its derived fields. `moved_from` is the
/// record's commune before the edit, `None` for a new record (whose commune is checked too).
fn finish(
    record: &mut Record,
    catalog: Catalog,
    today: &str,
    touched: &dyn Fn(&str) -> bool,
    seen: &dyn Fn(&str) -> bool,
    moved_from: Option<&CommuneCode>,
    complete: bool,
) -> Result<(), Violation> {
    let Catalog { forms, units, .. } = catalog;
    let Some(form) = forms.get(&record.form, record.version) else {
        return Ok(());
    };
    let is_new = moved_from.is_none();
    let merged = form.check_record(record, touched, is_new && complete, seen)?;
    // A rule that only the merge broke flags the record until an edit mends it.
    let mut broken = std::mem::take(&mut record.broken);
    broken.retain(|b| form.still_broken(record, b));
    for v in merged {
        if !broken
            .iter()
            .any(|b| b.field == v.field && b.rule == v.rule)
        {
            broken.push(BrokenRule {
                field: v.field,
                rule: v.rule.to_owned(),
                en: v.en,
                vi: v.vi,
            });
        }
    }
    record.broken = broken;
    let date_field = form.collected_on.as_deref();
    let date = date_field
        .and_then(|f| record.value(f))
        .and_then(Value::as_str)
        .unwrap_or(today)
        .to_owned();
    let recheck = is_new || moved_from != Some(&record.commune) || date_field.is_some_and(touched);
    if recheck && !units.valid_on(record.commune.as_str(), &date) {
        let successor = units
            .successor(record.commune.as_str())
            .map(|s| format!("; its successor is {s}"))
            .unwrap_or_default();
        return Err(Violation {
            field: "commune".into(),
            rule: "commune_on_date",
            value: Value::String(record.commune.to_string()),
            en: format!(
                "{} was not a commune of the province on {date}{successor}",
                record.commune
            ),
            vi: format!(
                "{} không phải là xã/phường của tỉnh vào ngày {date}{successor}",
                record.commune
            ),
        });
    }
    record.derived = form.derive(record);
    Ok(())
}

/// What an edit must satisfy on its own: the device's scope, the form, the values.
fn admit_alone(
    edit: &CheckedEdit,
    forms: &FormRegistry,
    device: &Device,
    today: &str,
) -> Result<(), Rejection> {
    if !device.in_scope(&edit.commune) {
        return Err(Rejection::new(
            edit.seq,
            RejectCode::OutOfScope,
            None,
            format!("commune {} is not in this device's communes", edit.commune),
        ));
    }
    let form = forms.get(&edit.form, edit.version).ok_or_else(|| {
        let (code, message) = if forms.knows(&edit.form) {
            (
                RejectCode::UnknownVersion,
                format!("form {} has no version {}", edit.form, edit.version),
            )
        } else {
            (
                RejectCode::UnknownForm,
                format!("no form {:?} is published", edit.form.as_str()),
            )
        };
        Rejection::new(edit.seq, code, None, message)
    })?;
    form.check_edit(edit, today)
}

/// What an edit must satisfy against the stored state: the record's scope and form, and
/// `supersedes` naming only dots the server has received.
fn admit_against(
    edit: &CheckedEdit,
    device: &Device,
    existing: Option<&Record>,
    seqs: &HashMap<DeviceId, u64>,
    recovering: bool,
) -> Result<(), Rejection> {
    let reject = |code, message: String| Rejection::new(edit.seq, code, None, message);
    if let Some(record) = existing {
        if !device.in_scope(&record.commune) {
            return Err(reject(
                RejectCode::OutOfScope,
                format!(
                    "record {} belongs to commune {}, not in this device's communes",
                    record.id, record.commune
                ),
            ));
        }
        if record.form != edit.form {
            return Err(reject(
                RejectCode::FormMismatch,
                format!(
                    "record {} is a {} record, not {}",
                    record.id, record.form, edit.form
                ),
            ));
        }
    }
    for (name, change) in &edit.fields {
        for dot in &change.supersedes {
            let known = if dot.device == device.id {
                dot.seq < edit.seq
            } else {
                dot.seq <= seqs.get(&dot.device).copied().unwrap_or(0)
            };
            if !known && !recovering {
                return Err(Rejection::new(
                    edit.seq,
                    RejectCode::InvalidSupersedes,
                    Some(name),
                    format!(
                        "{name}: supersedes [{}, {}], an edit this server has not received",
                        dot.device, dot.seq
                    ),
                ));
            }
        }
    }
    Ok(())
}

/// Whether two texts of an edit say the same thing, however they are laid out: a repeat is
/// told from a reused seq by content, not by bytes.
fn same_edit(stored: &str, received: &str) -> bool {
    stored == received
        || match (
            serde_json::from_str::<Edit>(stored),
            serde_json::from_str::<Edit>(received),
        ) {
            (Ok(a), Ok(b)) => a == b,
            _ => false,
        }
}

#[cfg(test)]
mod tests {
    use serde_json::json;
    use sync_protocol::{Edit, FieldEdit};

    use super::*;

    const A: &str = "19753";
    const B: &str = "19774";
    const C: &str = "19777";

    fn code(c: &str) -> CommuneCode {
        CommuneCode::parse(c).unwrap()
    }

    fn edit(record: RecordId, seq: u64, commune: &str, fields: &[(&str, Value)]) -> CheckedEdit {
        Edit {
            seq,
            record: record.to_string(),
            form: "birth-registration".into(),
            version: 1,
            commune: commune.into(),
            fields: fields
                .iter()
                .map(|(n, v)| {
                    let change = FieldEdit {
                        value: v.clone(),
                        supersedes: vec![],
                    };
                    (n.to_string(), change)
                })
                .collect(),
        }
        .into_checked()
        .unwrap()
    }

    fn moved(from: &str, to: &str, at: u64) -> Move {
        Move {
            from: code(from),
            to: code(to),
            at,
        }
    }

    /// A record made in A at change 1 by device 1, moved to B by device 2 at change 5.
    fn record_moved_to_b() -> (Record, Vec<Move>) {
        let id = RecordId::new_v7();
        let made = edit(id, 1, A, &[("child_name", json!("Lan"))]);
        let mut record = Record::from_edit(&made);
        record.apply(1, made, &|_| false);
        record.apply(2, edit(id, 1, B, &[(COMMUNE_FIELD, json!(B))]), &|_| false);
        assert_eq!(record.commune.as_str(), B);
        (record, vec![moved(A, B, 5)])
    }

    #[test]
    fn a_v1_move_from_the_current_view_supersedes_what_it_saw() {
        let (record, moves) = record_moved_to_b();
        let e = edit(record.id, 4, C, &[("notes", json!("x"))]);
        // Device 3 had pulled the move (cursor 5): a clean move.
        assert_eq!(
            read_commune(&record, &e, 3, 5, &moves),
            CommuneRead::Moves(vec![Dot::new(2, 1)])
        );
        // A record never moved: its first commune was seen by whoever edits it.
        let id = RecordId::new_v7();
        let made = edit(id, 1, A, &[("child_name", json!("Lan"))]);
        let mut fresh = Record::from_edit(&made);
        fresh.apply(1, made, &|_| false);
        let e = edit(id, 4, B, &[("notes", json!("x"))]);
        assert_eq!(
            read_commune(&fresh, &e, 3, 1, &[]),
            CommuneRead::Moves(vec![])
        );
    }

    #[test]
    fn an_edit_from_an_older_view_does_not_move_the_record_back() {
        let (record, moves) = record_moved_to_b();
        // Device 3 last pulled at change 3, when the record was in A: naming A is its view.
        let e = edit(record.id, 4, A, &[("notes", json!("x"))]);
        assert_eq!(read_commune(&record, &e, 3, 3, &moves), CommuneRead::Stays);
        // Naming where the record is, is no move either.
        let e = edit(record.id, 4, B, &[("notes", json!("x"))]);
        assert_eq!(read_commune(&record, &e, 3, 0, &moves), CommuneRead::Stays);
        // Having seen the move to B, naming A again is a move back.
        let e = edit(record.id, 4, A, &[("notes", json!("x"))]);
        assert_eq!(
            read_commune(&record, &e, 3, 5, &moves),
            CommuneRead::Moves(vec![Dot::new(2, 1)])
        );
        // The mover itself saw its own move.
        let e = edit(record.id, 2, A, &[("notes", json!("x"))]);
        assert_eq!(
            read_commune(&record, &e, 2, 0, &moves),
            CommuneRead::Moves(vec![Dot::new(2, 1)])
        );
    }

    #[test]
    fn a_move_concurrent_with_an_unseen_move_keeps_both() {
        let (mut record, moves) = record_moved_to_b();
        // Device 3, from its view of A (cursor 3), moves the family to C.
        let e = edit(record.id, 4, C, &[("notes", json!("x"))]);
        let CommuneRead::Moves(supersedes) = read_commune(&record, &e, 3, 3, &moves) else {
            panic!("a move to a third commune is a move");
        };
        assert!(supersedes.is_empty(), "it saw no move: {supersedes:?}");
        let mut e = e;
        let change = FieldEdit {
            value: json!(C),
            supersedes,
        };
        e.fields.insert(COMMUNE_FIELD.into(), change);
        record.apply(3, e, &|_| false);
        let held: Vec<&Value> = record.fields[COMMUNE_FIELD].values().collect();
        assert_eq!(held, [&json!(B), &json!(C)]);
        assert!(record.is_conflicted());
        assert_eq!(record.commune.as_str(), C, "the provisional commune");
    }
}
