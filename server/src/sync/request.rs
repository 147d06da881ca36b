//! One `POST /v1/sync`, from its body to its answer, without HTTP: [`parse`] reads and checks
//! the request (CPU work, for a blocking thread), [`run`] pushes and pulls, [`encode`] writes
//! the answer. The API's handler only authenticates, calls these and sends the bytes.

use std::collections::BTreeMap;

use sync_protocol::{Rejection, PROTOCOL_VERSION};
use tracing::info;

use super::{Catalog, PreparedPush, PushOutcome, Received};
use crate::store::{Device, Pull, Store, StoreError};

/// `POST /v1/sync` as read: the keys of `sync_protocol::SyncRequest`, each pushed edit still
/// text.
#[derive(serde::Deserialize)]
struct IncomingSync<'a> {
    protocol: u32,
    #[serde(default, borrow)]
    push: Vec<&'a serde_json::value::RawValue>,
    #[serde(default)]
    cursor: u64,
    #[serde(default = "default_max_bytes")]
    max_bytes: u64,
    #[serde(default)]
    epoch: Option<String>,
    #[serde(default)]
    lost_through: Option<u64>,
}

fn default_max_bytes() -> u64 {
    sync_protocol::wire::DEFAULT_MAX_BYTES
}

/// Why a sync request is not answered with a sync response.
#[derive(Debug, thiserror::Error)]
pub enum RequestError {
    #[error("{0}")]
    Malformed(String),
    #[error("protocol {0} is not spoken here")]
    UnsupportedProtocol(u32),
    #[error("{got} edits in one push, at most {limit}")]
    BatchTooLarge { limit: usize, got: usize },
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// A request read and checked: the pushed edits as received, and what the phone says of its
/// pull.
pub struct Parsed {
    pub push: Vec<Received>,
    pub cursor: u64,
    pub max_bytes: u64,
    pub epoch: Option<String>,
    pub lost_through: Option<u64>,
}

/// Reads a request body. Each edit keeps the text the phone sent: the edit log stores it as
/// received.
pub fn parse(body: &[u8], max_push: usize) -> Result<Parsed, RequestError> {
    let request: IncomingSync = serde_json::from_slice(body).map_err(|e| {
        RequestError::Malformed(format!("the body is not valid JSON for this request: {e}"))
    })?;
    if request.protocol != PROTOCOL_VERSION {
        return Err(RequestError::UnsupportedProtocol(request.protocol));
    }
    if request.push.len() > max_push {
        return Err(RequestError::BatchTooLarge {
            limit: max_push,
            got: request.push.len(),
        });
    }
    let push = request
        .push
        .iter()
        .enumerate()
        .map(|(i, raw)| {
            let edit: sync_protocol::Edit = serde_json::from_str(raw.get()).map_err(|e| {
                RequestError::Malformed(format!("push[{i}] is not a valid edit: {e}"))
            })?;
            Ok(Received {
                edit,
                text: raw.get().into(),
            })
        })
        .collect::<Result<Vec<_>, RequestError>>()?;
    Ok(Parsed {
        push,
        cursor: request.cursor,
        max_bytes: request.max_bytes,
        epoch: request.epoch,
        lost_through: request.lost_through,
    })
}

/// The page limits of a pull.
pub struct PageLimits {
    pub max_page_bytes: u64,
    pub max_page_records: usize,
}

/// What one sync did: the push's outcome and the pull, with the database's epoch.
pub struct Done {
    pub acked_through: u64,
    pub outcome: PushOutcome,
    pub pull: Pull,
    pub epoch: String,
    /// The phone's cursor was of another life of the database: it pulled from the start.
    pub reset: bool,
    pub pushed: usize,
}

/// Push `prepared` (made from the request by [`super::prepare`]) and pull what changed after
/// the phone's cursor.
#[allow(clippy::too_many_arguments)]
pub async fn run(
    store: &dyn Store,
    catalog: Catalog<'_>,
    device: &Device,
    mut prepared: PreparedPush,
    cursor: u64,
    requested_bytes: u64,
    their_epoch: Option<String>,
    limits: &PageLimits,
) -> Result<Done, RequestError> {
    let now = crate::now_ms();
    let epoch = store.epoch().await?;
    prepared.recovering = epoch.recovering(now);
    // What the phone had pulled: from another life of the database, nothing that can be trusted.
    let same_life = their_epoch.as_ref().is_none_or(|e| *e == epoch.id) && cursor <= epoch.counter;
    prepared.cursor = if same_life { cursor } else { 0 };
    let pushed = prepared.len();
    let outcome = if prepared.is_empty() {
        PushOutcome::default()
    } else {
        super::push(store, catalog, device, &prepared, now, &crate::today()).await?
    };
    // The records were freed as they were prepared: what is left is their rows and texts.
    drop(prepared);
    let acked_through = if pushed == 0 {
        device.last_seq
    } else {
        outcome.acked_through
    };
    let max_bytes = requested_bytes.clamp(1024, limits.max_page_bytes);
    // A cursor of another life of the database, or one ahead of anything it handed out (it was
    // restored, or failed over to a replica that missed commits): what the phone pulled may be
    // gone or renumbered, so the pull starts again from the beginning.
    let reset = their_epoch.is_some_and(|e| e != epoch.id) || cursor > epoch.counter;
    if reset {
        info!(
            cursor,
            counter = epoch.counter,
            "the phone's cursor is of another epoch or ahead of the database: pulling from the start"
        );
    }
    let from = if reset { 0 } else { cursor };
    let pull = store
        .pull(&device.communes, from, max_bytes, limits.max_page_records)
        .await?;
    Ok(Done {
        acked_through,
        outcome,
        pull,
        epoch: epoch.id,
        reset,
        pushed,
    })
}

/// The sync response's JSON. Records go out as stored (the store wrote them as wire JSON),
/// spliced in without being parsed and encoded again.
pub fn encode(done: &Done, forms: &BTreeMap<String, u32>) -> String {
    let Done {
        acked_through,
        outcome,
        pull,
        epoch,
        reset,
        ..
    } = done;
    let rejected: &[Rejection] = &outcome.rejected;
    let records_len: usize = pull.records.iter().map(|r| r.len() + 1).sum();
    let mut body = String::with_capacity(records_len + 320);
    body.push_str(&format!(
        "{{\"protocol\":{PROTOCOL_VERSION},\"acked_through\":{acked_through},\"rejected\":{},\"records\":[",
        json(rejected)
    ));
    for (i, record) in pull.records.iter().enumerate() {
        if i > 0 {
            body.push(',');
        }
        body.push_str(record);
    }
    body.push_str(&format!(
        "],\"evicted\":{},\"cursor\":{},\"more\":{},\"forms\":{},\"epoch\":{},\"next_seq\":{}{}}}",
        json(&pull.evicted),
        pull.cursor,
        pull.more,
        json(forms),
        json(epoch),
        acked_through + 1,
        if *reset { ",\"reset\":true" } else { "" },
    ));
    body
}

fn json<T: serde::Serialize + ?Sized>(value: &T) -> String {
    serde_json::to_string(value).expect("plain data always serializes")
}
