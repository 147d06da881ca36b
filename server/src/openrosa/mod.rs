//! OpenRosa: ODK Collect (and KoboCollect, and ODK's web forms) working with Mầm unchanged.
//!
//! A phone enrolled for ODK Collect signs in with a token in the URL path and sees, as any
//! phone, the forms of its collaborators and the records of its communes:
//!
//! - the form list, each form an XForm made from its definition ([`xform`]), announced with
//!   the `md5:` of the exact bytes served;
//! - each form's manifest: the entity lists its references read, as CSV made from the records
//!   of the phone's communes (`name,label,__version,<properties>`), and their integrity (which
//!   entities are gone);
//! - submissions, each one edit of the phone's device through the same sync path as `/v1`.
//!
//! A submission's edit writes only what the person changed. A new instance writes its
//! answers. An edit of a sent instance (`deprecatedID`) writes the answers that differ from
//! that instance's, each superseding the value that instance saw, and so nothing an office or
//! another phone wrote meanwhile. An entity update writes the properties that differ from the
//! entity version it was made from (`baseVersion`, or `trunkVersion` and the earlier updates
//! of its `branchId` when the phone made several offline), each superseding what that version
//! held: properties edited by two people at once are kept side by side for a person to
//! settle, and nothing waits for anything to arrive in order. An update that arrives after a
//! later one of its own branch (or a create after an update) leaves the properties the later
//! one wrote: the phone had seen them replaced.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::{Arc, LazyLock, Mutex};

use md5::{Digest as _, Md5};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use sha2::Sha256;
use sync_protocol::media::Attachment;
use sync_protocol::{CommuneCode, DeviceId, Dot, Edit, FieldEdit, Form, FormId, Record, RecordId};

use crate::forms::FormRegistry;
use crate::store::{Device, Store, StoreError};
use crate::sync;
use crate::units::Units;

pub mod submission;
pub mod xform;

use submission::EntityMeta;

/// The `X-OpenRosa-Accept-Content-Length` the server announces: a request larger than this
/// is split by the phone into several (`*isIncomplete*`).
pub const ACCEPT_CONTENT_LENGTH: usize = 32 * 1024 * 1024;

/// A form as the form list offers it.
pub struct Served {
    /// Its form id in the form list (`child.update` for the child register's update form).
    pub id: String,
    pub form: Arc<Form>,
    pub xml: String,
    pub md5: String,
    /// The entity lists its references read.
    pub lists: BTreeSet<String>,
}

/// What the OpenRosa service works with: the store, the published forms, the admin units,
/// the sync path's catalog and the attachment store.
pub trait Host: Send + Sync + 'static {
    fn store(&self) -> &dyn Store;
    fn forms(&self) -> Arc<FormRegistry>;
    fn units(&self) -> &Units;
    fn catalog<'a>(&'a self, forms: &'a FormRegistry) -> sync::Catalog<'a>;
    /// Keeps a whole attachment (blocking: called off the async threads).
    fn put_attachment(
        &self,
        device: DeviceId,
        sha: &str,
        size: u64,
        media_type: &str,
        bytes: &[u8],
    ) -> Result<(), String>;
}

impl<H: Host> Host for Arc<H> {
    fn store(&self) -> &dyn Store {
        H::store(self)
    }
    fn forms(&self) -> Arc<FormRegistry> {
        H::forms(self)
    }
    fn units(&self) -> &Units {
        H::units(self)
    }
    fn catalog<'a>(&'a self, forms: &'a FormRegistry) -> sync::Catalog<'a> {
        H::catalog(self, forms)
    }
    fn put_attachment(
        &self,
        device: DeviceId,
        sha: &str,
        size: u64,
        media_type: &str,
        bytes: &[u8],
    ) -> Result<(), String> {
        H::put_attachment(self, device, sha, size, media_type, bytes)
    }
}

/// `md5:` and the hex MD5 of `bytes`, as OpenRosa announces hashes.
pub fn md5_of(bytes: &[u8]) -> String {
    let digest = Md5::digest(bytes);
    let mut out = String::from("md5:");
    for b in digest {
        out.push_str(&format!("{b:02x}"));
    }
    out
}

fn sha256_hex(bytes: &[u8]) -> String {
    let digest = Sha256::digest(bytes);
    digest.iter().map(|b| format!("{b:02x}")).collect()
}

/// Who fills what: a phone's collaborator, and an account's role (`commune`, …) too.
pub const COLLABORATOR: &str = "collaborator";

/// The forms offered to people of these roles: the current version of each form they fill
/// (`collected_by`; a form that names nobody is everyone's).
pub fn offered<'a>(forms: &'a FormRegistry, roles: &[String]) -> Vec<&'a Form> {
    forms
        .current()
        .iter()
        .filter_map(|(id, &v)| forms.get(&FormId::parse(id).ok()?, v))
        .filter(|f| f.collected_by.is_empty() || f.collected_by.iter().any(|c| roles.contains(c)))
        .collect()
}

/// The forms whose records other forms reference: served as entity lists.
pub fn entity_lists(forms: &FormRegistry) -> BTreeSet<String> {
    forms
        .current()
        .iter()
        .filter_map(|(id, &v)| forms.get(&FormId::parse(id).ok()?, v))
        .flat_map(xform::lists_read)
        .collect()
}

/// The phone's communes with their names, as its XForms offer them.
pub fn communes_of<H: Host + ?Sized>(state: &H, device: &Device) -> Vec<(String, String)> {
    let key = state
        .units()
        .version_on(&crate::today())
        .map(crate::units::Units::key)
        .unwrap_or_default();
    device
        .communes
        .iter()
        .map(|c| {
            let (_, name) = state.units().commune_full_in(c.as_str(), &key);
            (c.as_str().to_owned(), name)
        })
        .collect()
}

/// A form's XForm for this phone (and its hash), when the phone is offered it; for an entity
/// list's form, `<form>.update` is the form that updates its entities.
pub fn served<H: Host + ?Sized>(
    state: &H,
    device: &Device,
    roles: &[String],
    form_id: &str,
) -> Option<Served> {
    let forms = state.forms();
    let lists = entity_lists(&forms);
    let (base, update) = match form_id.strip_suffix(".update") {
        Some(base) if lists.contains(base) => (base, true),
        Some(_) => return None,
        None => (form_id, false),
    };
    let mut form = offered(&forms, roles)
        .into_iter()
        .find(|f| f.id.as_str() == base)?
        .clone();
    if update {
        form = xform::update_form(&form);
    }
    let communes = communes_of(state, device);
    let list = lists.get(form.id.as_str()).map(String::as_str);
    let xml = xform::xform(
        &form,
        &xform::Context {
            communes: &communes,
            entity_list: list,
            update,
        },
    );
    let md5 = md5_of(xml.as_bytes());
    let mut read = xform::lists_read(&form);
    if update {
        read.insert(base.to_owned());
    }
    Some(Served {
        id: form_id.to_owned(),
        lists: read,
        form: Arc::new(form),
        xml,
        md5,
    })
}

/// Every form this phone is offered, and the update form of each entity list.
pub fn all_served<H: Host + ?Sized>(state: &H, device: &Device, roles: &[String]) -> Vec<Served> {
    let forms = state.forms();
    let lists = entity_lists(&forms);
    let mut ids: Vec<String> = Vec::new();
    for f in offered(&forms, roles) {
        ids.push(f.id.as_str().to_owned());
        if lists.contains(f.id.as_str()) {
            ids.push(xform::update_id(f.id.as_str()));
        }
    }
    ids.iter()
        .filter_map(|id| served(state, device, roles, id))
        .collect()
}

/// A property's value and the dots that hold it, as an entity version or a submission saw it.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Seen {
    pub value: Value,
    #[serde(default)]
    pub dots: Vec<Dot>,
}

type View = BTreeMap<String, Seen>;

/// What the server keeps of a submission.
#[derive(Clone, Debug, Serialize, Deserialize)]
struct Kept {
    /// The SHA-256 of its XML: a resend must be the same.
    xml: String,
    device: DeviceId,
    seq: u64,
    record: String,
    form: String,
    /// Every field as the phone saw it once this submission was made: the base of an edit
    /// that deprecates it.
    view: View,
    /// The fields its edit wrote.
    wrote: View,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    entity: Option<EntityMeta>,
    /// Attachments its XML names that had not arrived.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    missing: BTreeMap<String, String>,
    /// Its edit is being pushed: noted before the push.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pending: Option<Pending>,
}

/// An edit of a submission on its way into the database: its seq, and the submission as it
/// stood before (none for a new one).
#[derive(Clone, Debug, Serialize, Deserialize)]
struct Pending {
    seq: u64,
    before: Option<Box<Kept>>,
}

/// An attachment received with a submission.
pub struct Part {
    pub filename: String,
    pub media_type: String,
    pub bytes: Vec<u8>,
}

/// The answer to a submission, as the phone shows it.
#[derive(Debug, PartialEq)]
pub enum Reply {
    /// 201 with this message.
    Accepted(String),
    /// This status and message.
    Refused(u16, String),
}

/// One submission at a time per phone (`device:N`: each is the phone's next edit number), and
/// per record (`record:ID`: an update waiting for its create, and the create that releases
/// it, see each other). Taken in that order.
static LOCKS: LazyLock<Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>> =
    LazyLock::new(|| Mutex::new(HashMap::new()));

/// Entity versions are numbered under this lock (the number of a state a phone downloads is
/// the state its updates are read against).
static VERSIONS: LazyLock<tokio::sync::Mutex<()>> = LazyLock::new(|| tokio::sync::Mutex::new(()));

fn lock_of(key: String) -> Arc<tokio::sync::Mutex<()>> {
    let mut locks = LOCKS.lock().unwrap_or_else(|e| e.into_inner());
    locks.entry(key).or_default().clone()
}

/// Takes a submission (its XML and the attachments of this request).
pub async fn submit<H: Host>(
    state: &Arc<H>,
    device: &Device,
    xml: &[u8],
    parts: Vec<Part>,
    incomplete: bool,
) -> Result<Reply, StoreError> {
    let sha = sha256_hex(xml);
    let refuse = |code: &'static str, status: u16, vi: String, en: String| async move {
        state
            .store()
            .add_upload_refusal(device.id, &sha256_hex(xml), code, &en, crate::now_ms())
            .await?;
        Ok::<_, StoreError>(Reply::Refused(status, vi))
    };
    let sub = match submission::read(xml) {
        Ok(s) => s,
        Err(e) => {
            return refuse(
                "openrosa_xml",
                400,
                format!("Máy chủ không đọc được phiếu gửi lên: {e}"),
                format!("the submission cannot be read: {e}"),
            )
            .await
        }
    };
    let forms = state.forms();
    let form = FormId::parse(sub.form.strip_suffix(".update").unwrap_or(&sub.form))
        .ok()
        .zip(sub.version.trim().parse::<u32>().ok())
        .and_then(|(id, v)| forms.get(&id, v))
        .cloned();
    let Some(form) = form else {
        return refuse(
            "openrosa_form",
            400,
            format!(
                "Mẫu phiếu {} phiên bản {:?} không có trên máy chủ. Hãy tải lại mẫu phiếu (Tải mẫu phiếu trống) rồi nhập lại.",
                sub.form, sub.version
            ),
            format!("form {} version {:?} is not published here", sub.form, sub.version),
        )
        .await;
    };

    // The attachments of this request, into the attachment store.
    let mut docs = Vec::new();
    for part in parts {
        let a = match store_part(state, device.id, &part).await {
            Ok(a) => a,
            Err(message) => {
                return refuse(
                    "openrosa_attachment",
                    400,
                    format!("Tệp đính kèm {} không nhận được: {message}", part.filename),
                    format!("attachment {}: {message}", part.filename),
                )
                .await
            }
        };
        docs.push((
            "file",
            format!("{}:{}/{}", device.id, sub.instance_id, part.filename),
            format!("{}:{}", device.id, sub.instance_id),
            serde_json::to_string(&a).expect("an attachment serializes"),
        ));
    }
    if !docs.is_empty() {
        state.store().put_openrosa(&docs).await?;
    }
    if incomplete {
        return Ok(Reply::Accepted(
            "Đã nhận một phần phiếu; phần còn lại đang gửi.".into(),
        ));
    }
    let files = files_of(state.as_ref(), device.id, &sub.instance_id).await?;

    let device_lock = lock_of(format!("device:{}", device.id));
    let _one_at_a_time = device_lock.lock().await;
    let (reply, created) = take(state, device, &sub, &form, &sha, &files).await?;
    if let Some(record) = created {
        release_held(state, device, &record).await?;
    }
    Ok(reply)
}

/// Applies the updates that waited for the entity `record` to be created, oldest base first:
/// at once when they are this phone's, else as soon as their phone's lock is free.
async fn release_held<H: Host>(
    state: &Arc<H>,
    device: &Device,
    record: &str,
) -> Result<(), StoreError> {
    let mut held: Vec<(Option<u64>, String, DeviceId, String)> = Vec::new();
    for (key, body) in state.store().openrosa_of("held", record).await? {
        let Ok(h) = serde_json::from_str::<Held>(&body) else {
            continue;
        };
        if h.xml.is_empty() {
            continue;
        }
        let base = submission::read(h.xml.as_bytes())
            .ok()
            .and_then(|s| s.entity.and_then(|e| e.base_version));
        held.push((base, key, h.device, h.xml));
    }
    held.sort();
    for (_, key, owner, xml) in held {
        // Marked taken once applied (or refused, which keeps the refusal): one that fails
        // here stays held, and the next submission about the record tries it again. Applied
        // twice it changes nothing: its instance is known by then.
        let done = (
            "held",
            key,
            String::new(),
            serde_json::to_string(&Held {
                device: owner,
                xml: String::new(),
            })
            .expect("serializes"),
        );
        if owner == device.id {
            match Box::pin(replay(state, device, &xml)).await {
                Ok(()) => state.store().put_openrosa(&[done]).await?,
                Err(e) => {
                    tracing::warn!(device = owner, error = %e, "a held entity update could not be applied yet")
                }
            }
        } else {
            let state = state.clone();
            tokio::spawn(async move {
                let Ok(Some(phone)) = state.store().device(owner).await else {
                    return;
                };
                let lock = lock_of(format!("device:{owner}"));
                let _held = lock.lock().await;
                let applied = replay(&state, &phone, &xml).await;
                let marked = match applied {
                    Ok(()) => state.store().put_openrosa(&[done]).await,
                    Err(e) => Err(e),
                };
                if let Err(e) = marked {
                    tracing::warn!(device = owner, error = %e, "a held entity update could not be applied yet");
                }
            });
        }
    }
    Ok(())
}

/// The attachments a phone sent for a submission, by file name.
async fn files_of<H: Host + ?Sized>(
    state: &H,
    device: DeviceId,
    instance: &str,
) -> Result<HashMap<String, Attachment>, StoreError> {
    Ok(state
        .store()
        .openrosa_of("file", &format!("{device}:{instance}"))
        .await?
        .into_iter()
        .filter_map(|(key, body)| {
            let name = key.rsplit_once('/')?.1.to_owned();
            Some((name, serde_json::from_str(&body).ok()?))
        })
        .collect())
}

/// A held submission applied (its phone's lock held by the caller).
async fn replay<H: Host>(state: &Arc<H>, device: &Device, xml: &str) -> Result<(), StoreError> {
    let Ok(sub) = submission::read(xml.as_bytes()) else {
        return Ok(());
    };
    let forms = state.forms();
    let Some(form) = FormId::parse(sub.form.strip_suffix(".update").unwrap_or(&sub.form))
        .ok()
        .zip(sub.version.trim().parse::<u32>().ok())
        .and_then(|(id, v)| forms.get(&id, v))
        .cloned()
    else {
        return Ok(());
    };
    let files = files_of(state.as_ref(), device.id, &sub.instance_id).await?;
    let (reply, _) = take(
        state,
        device,
        &sub,
        &form,
        &sha256_hex(xml.as_bytes()),
        &files,
    )
    .await?;
    if let Reply::Refused(_, message) = reply {
        tracing::warn!(device = device.id, %message, "a held entity update was refused");
    }
    Ok(())
}

/// An entity update kept until its entity is created.
#[derive(Serialize, Deserialize)]
struct Held {
    device: DeviceId,
    xml: String,
}

/// Applies a read submission: the reply, and the record it created if it created one.
async fn take<H: Host>(
    state: &Arc<H>,
    device: &Device,
    sub: &submission::Submission,
    form: &Form,
    sha: &str,
    files: &HashMap<String, Attachment>,
) -> Result<(Reply, Option<String>), StoreError> {
    let xml_sha = sha.to_owned();
    let refuse = |code: &'static str, status: u16, vi: String, en: String| {
        let xml_sha = xml_sha.clone();
        async move {
            state
                .store()
                .add_upload_refusal(device.id, &xml_sha, code, &en, crate::now_ms())
                .await?;
            Ok::<_, StoreError>((Reply::Refused(status, vi), None))
        }
    };
    let earlier = state
        .store()
        .openrosa("submission", &sub.instance_id)
        .await?;
    let earlier: Option<Kept> = earlier.and_then(|(_, b)| serde_json::from_str(&b).ok());
    let mut finished = None;
    let earlier = match earlier {
        Some(mut kept) if kept.pending.is_some() => {
            // Its edit was on its way when the server stopped: applied, or not at all.
            let pending = kept.pending.take().expect("pending");
            let applied = match RecordId::parse(&kept.record) {
                Ok(id) => state.store().record_edits(id).await?.iter().any(|e| {
                    e.device == i64::from(kept.device) && e.seq == pending.seq as i64 && !e.rejected
                }),
                Err(_) => false,
            };
            let now = if applied {
                Some(kept)
            } else {
                pending.before.map(|b| *b)
            };
            let doc = match &now {
                Some(k) => serde_json::to_string(k).expect("serializes"),
                None => "{}".into(),
            };
            let record = now.as_ref().map(|k| k.record.clone()).unwrap_or_default();
            state
                .store()
                .put_openrosa(&[("submission", sub.instance_id.clone(), record.clone(), doc)])
                .await?;
            if applied {
                finished = Some(record);
            }
            now
        }
        other => other,
    };
    if let Some(kept) = &earlier {
        if kept.xml != sha {
            return Ok((
                Reply::Refused(
                    409,
                    format!(
                        "Phiếu {} đã được gửi trước đây với nội dung khác. Nếu muốn sửa, hãy sửa phiếu đã gửi thay vì gửi lại.",
                        sub.instance_id
                    ),
                ),
                None,
            ));
        }
        if kept.missing.is_empty() || kept.missing.keys().all(|f| !files.contains_key(f)) {
            return Ok((
                Reply::Accepted("Phiếu này đã được nhận trước đây.".into()),
                finished,
            ));
        }
    }

    let mut values = match submission::values(form, &sub.root, files) {
        Ok(v) => v,
        Err(e) => {
            return refuse(
                "openrosa_values",
                400,
                format!("Phiếu không khớp mẫu phiếu trên máy chủ: {e}. Hãy tải lại mẫu phiếu."),
                e,
            )
            .await
        }
    };
    // Attachments the XML names that have not arrived (yet).
    let mut missing = BTreeMap::new();
    for f in &form.fields {
        if matches!(
            f.kind,
            sync_protocol::FieldType::Image
                | sync_protocol::FieldType::Audio
                | sync_protocol::FieldType::Video
                | sync_protocol::FieldType::File
        ) {
            if let Some(name) = sub.root.child(&f.name).map(|n| n.text.trim()) {
                if !name.is_empty() && !files.contains_key(name) {
                    missing.insert(name.to_owned(), f.name.clone());
                }
            }
        }
    }

    let entity = sub.entity.clone().filter(|e| {
        (e.create || e.update) && uuid::Uuid::parse_str(e.id.trim_start_matches("uuid:")).is_ok()
    });
    let edited = match (&earlier, &sub.deprecated_id) {
        (None, Some(old)) => deprecated(state, old).await?,
        _ => None,
    };
    // Which record it is.
    let record_id = match (&earlier, &edited, &entity) {
        (Some(kept), _, _) | (None, Some(kept), _) => kept.record.clone(),
        (None, None, Some(e)) => e.id.trim_start_matches("uuid:").to_lowercase(),
        (None, None, None) => record_of_instance(&sub.instance_id),
    };
    let Ok(record) = RecordId::parse(&record_id) else {
        return refuse(
            "openrosa_id",
            400,
            format!("Mã phiếu {record_id:?} không hợp lệ."),
            format!("{record_id:?} is not a record id"),
        )
        .await;
    };
    let record_lock = lock_of(format!("record:{record_id}"));
    let _one_record_at_a_time = record_lock.lock().await;
    let stored = state.store().record(record).await?;
    // What the phone saw before this submission.
    let (base, later) = match (&earlier, &edited, &entity) {
        (Some(kept), _, _) | (None, Some(kept), _) => (kept.view.clone(), BTreeSet::new()),
        (None, None, Some(e)) => {
            if e.update && !e.create && stored.is_none() {
                // An update of an entity whose create has not arrived: nothing to merge it
                // into yet (a record is made with its required answers). Kept, and applied
                // the moment the create arrives.
                let held = Held {
                    device: device.id,
                    xml: sub.xml.clone(),
                };
                state
                    .store()
                    .put_openrosa(&[(
                        "held",
                        sub.instance_id.clone(),
                        record_id.clone(),
                        serde_json::to_string(&held).expect("serializes"),
                    )])
                    .await?;
                return Ok((
                    Reply::Accepted(
                        "Đã nhận. Hồ sơ này chưa có trên máy chủ: phần cập nhật sẽ được ghi ngay khi phiếu tạo hồ sơ được gửi lên."
                            .into(),
                    ),
                    None,
                ));
            }
            entity_base(state, &record_id, e, stored.is_some()).await?
        }
        (None, None, None) => (View::new(), BTreeSet::new()),
    };
    // An edit of a sent submission leaves out the questions no longer asked (ODK drops the
    // answers of questions that are not relevant): their answers are cleared.
    if edited.is_some() {
        for (name, seen) in &base {
            if !seen.value.is_null() && form.field(name).is_some() {
                values.entry(name.clone()).or_insert(Value::Null);
            }
        }
    }
    // A record already there that this submission knows nothing of (its create applied before
    // a crash kept the server from noting it, or a version the server never had): an answer
    // it already holds is not written again; one that differs stands beside what it holds.
    let base = match (&stored, &earlier, &edited) {
        (Some(r), None, None) if base.is_empty() => r
            .fields
            .keys()
            .map(|n| {
                let value = r.value(n).cloned().unwrap_or(Value::Null);
                (
                    n.clone(),
                    Seen {
                        value,
                        dots: Vec::new(),
                    },
                )
            })
            .collect(),
        _ => base,
    };
    let commune = match &stored {
        Some(r) => r.commune.as_str().to_owned(),
        None => submission::commune(&sub.root)
            .or_else(|| device.communes.first().map(|c| c.as_str().to_owned()))
            .unwrap_or_default(),
    };

    // What changed: the answers that differ from what the phone saw, superseding it.
    let mut fields = BTreeMap::new();
    for (name, value) in &values {
        if later.contains(name) {
            continue;
        }
        if earlier.is_some() && !missing_field(&earlier, name, files) {
            continue;
        }
        let seen = base.get(name);
        let before = seen.map(|s| &s.value).unwrap_or(&Value::Null);
        if before == value {
            continue;
        }
        if value.is_null() && stored.as_ref().is_none_or(|r| !r.fields.contains_key(name)) {
            continue;
        }
        fields.insert(
            name.clone(),
            FieldEdit {
                value: value.clone(),
                supersedes: seen.map(|s| s.dots.clone()).unwrap_or_default(),
            },
        );
    }

    // The device as it signed in (a phone's communes, an account's area), with its last seq.
    let mut now = None;
    let mut seq = 0;
    if !fields.is_empty() {
        let Some(stored_device) = state.store().device(device.id).await? else {
            return Ok((
                Reply::Refused(403, "Máy này không còn được đăng ký.".into()),
                None,
            ));
        };
        if stored_device.revoked {
            return Ok((Reply::Refused(403, "Máy này đã bị thu hồi.".into()), None));
        }
        seq = stored_device.last_seq + 1;
        now = Some(Device {
            last_seq: stored_device.last_seq,
            revoked: false,
            ..device.clone()
        });
    }

    // What the phone sees once this is applied, for an edit of this submission to come.
    let dot = Dot::new(device.id, seq);
    let mut view = base.clone();
    let mut wrote = View::new();
    for (name, change) in &fields {
        let seen = Seen {
            value: change.value.clone(),
            dots: vec![dot],
        };
        view.insert(name.clone(), seen.clone());
        wrote.insert(name.clone(), seen);
    }
    for (name, value) in &values {
        view.entry(name.clone()).or_insert_with(|| Seen {
            value: value.clone(),
            dots: Vec::new(),
        });
    }
    let before = earlier.clone();
    let mut kept = match earlier {
        Some(mut kept) => {
            kept.view.extend(view);
            kept.wrote.extend(wrote);
            kept.missing.retain(|f, _| !files.contains_key(f));
            kept
        }
        None => Kept {
            xml: sha.to_owned(),
            device: device.id,
            seq,
            record: record_id.clone(),
            form: form.id.as_str().to_owned(),
            view,
            wrote,
            entity,
            missing,
            pending: None,
        },
    };
    let doc = |kept: &Kept| {
        (
            "submission",
            sub.instance_id.clone(),
            record_id.clone(),
            serde_json::to_string(kept).expect("a submission serializes"),
        )
    };

    if let Some(now) = now {
        // Noted before the push, so that a resend after a crash between the push's commit
        // and the note finds out whether the push was committed instead of applying it again.
        kept.pending = Some(Pending {
            seq,
            before: before.map(Box::new),
        });
        state.store().put_openrosa(&[doc(&kept)]).await?;
        let before = kept.pending.take().and_then(|p| p.before);
        let edit = Edit {
            seq,
            record: record_id.clone(),
            form: form.id.as_str().to_owned(),
            version: form.version,
            commune: commune.clone(),
            fields: fields.clone(),
        };
        let forms = state.forms();
        let today = crate::today();
        let mut prepared = sync::prepare(
            vec![sync::Received::from(edit)],
            state.catalog(&forms),
            &now,
            &today,
        );
        prepared.cursor = u64::MAX;
        let outcome = sync::push(
            state.store(),
            state.catalog(&forms),
            &now,
            &prepared,
            crate::now_ms(),
            &today,
        )
        .await?;
        if let Some(r) = outcome.rejected.first() {
            // Refused (and kept as a refused edit): the submission stands as it was.
            let back = match before {
                Some(b) => doc(&b),
                None => (
                    "submission",
                    sub.instance_id.clone(),
                    String::new(),
                    "{}".into(),
                ),
            };
            state.store().put_openrosa(&[back]).await?;
            let vi = r
                .message_vi
                .clone()
                .unwrap_or_else(|| format!("máy chủ từ chối ({}): {}", r.code.as_str(), r.message));
            return Ok((
                Reply::Refused(400, format!("Phiếu chưa được nhận: {vi}")),
                None,
            ));
        }
    }
    let mut docs = vec![doc(&kept)];
    let numbering = VERSIONS.lock().await;
    if entity_lists(&state.forms()).contains(form.id.as_str()) {
        if let Some(r) = state.store().record(record).await? {
            docs.extend(new_version(state, form, &r).await?);
        }
    }
    state.store().put_openrosa(&docs).await?;
    drop(numbering);
    let created = (stored.is_none() && seq > 0).then_some(record_id);
    Ok((
        Reply::Accepted(match form.title.as_ref() {
            Some(t) => format!("Đã nhận phiếu {}.", t.vi),
            None => "Đã nhận phiếu.".into(),
        }),
        created,
    ))
}

/// Whether `name` is a field whose attachment was missing from an earlier copy of this
/// submission and has now arrived.
fn missing_field(earlier: &Option<Kept>, name: &str, files: &HashMap<String, Attachment>) -> bool {
    earlier.as_ref().is_some_and(|k| {
        k.missing
            .iter()
            .any(|(file, field)| field == name && files.contains_key(file))
    })
}

async fn deprecated<H: Host + ?Sized>(
    state: &H,
    instance: &str,
) -> Result<Option<Kept>, StoreError> {
    Ok(state
        .store()
        .openrosa("submission", instance)
        .await?
        .and_then(|(_, b)| serde_json::from_str(&b).ok()))
}

/// The record a new instance makes: the UUID of its `uuid:…` instanceID, or one made from it.
fn record_of_instance(instance: &str) -> String {
    let id = instance.strip_prefix("uuid:").unwrap_or(instance);
    match uuid::Uuid::parse_str(id) {
        Ok(u) => u.to_string(),
        Err(_) => {
            let digest = Sha256::digest(instance.as_bytes());
            let mut bytes = [0u8; 16];
            bytes.copy_from_slice(&digest[..16]);
            uuid::Builder::from_custom_bytes(bytes)
                .into_uuid()
                .to_string()
        }
    }
}

/// Into the attachment store: the reference a field holds.
async fn store_part<H: Host>(
    state: &Arc<H>,
    device: DeviceId,
    part: &Part,
) -> Result<Attachment, String> {
    let sha = sha256_hex(&part.bytes);
    let size = part.bytes.len() as u64;
    let media_type = match part.media_type.as_str() {
        "" | "application/octet-stream" => guess_type(&part.filename).to_owned(),
        t => t.to_owned(),
    };
    let state = state.clone();
    let bytes = part.bytes.clone();
    let (s, t) = (sha.clone(), media_type.clone());
    tokio::task::spawn_blocking(move || state.put_attachment(device, &s, size, &t, &bytes))
        .await
        .map_err(|e| e.to_string())??;
    Ok(Attachment {
        sha256: sha,
        size,
        media_type,
        name: Some(part.filename.clone()).filter(|n| !n.contains(['/', '\\'])),
    })
}

fn guess_type(name: &str) -> &'static str {
    let ext = name.rsplit('.').next().unwrap_or("").to_ascii_lowercase();
    match ext.as_str() {
        "jpg" | "jpeg" => "image/jpeg",
        "png" => "image/png",
        "webp" => "image/webp",
        "mp3" => "audio/mpeg",
        "m4a" | "aac" => "audio/mp4",
        "amr" => "audio/amr",
        "ogg" => "audio/ogg",
        "mp4" => "video/mp4",
        "3gp" => "video/3gpp",
        "pdf" => "application/pdf",
        "csv" => "text/csv",
        _ => "application/octet-stream",
    }
}

/// An entity list's properties: the fields of its form that an entity may carry.
fn properties(form: &Form) -> Vec<&sync_protocol::FormField> {
    form.fields
        .iter()
        .filter(|f| xform::is_property(f))
        .collect()
}

/// An entity's state: its properties' values and dots.
fn view_of(form: &Form, record: &Record) -> View {
    properties(form)
        .into_iter()
        .filter_map(|f| {
            let register = record.fields.get(&f.name)?;
            Some((
                f.name.clone(),
                Seen {
                    value: record.value(&f.name).cloned().unwrap_or(Value::Null),
                    dots: register.dots().collect(),
                },
            ))
        })
        .collect()
}

fn digest(view: &View) -> String {
    sha256_hex(
        serde_json::to_string(view)
            .expect("a view serializes")
            .as_bytes(),
    )
}

#[derive(Serialize, Deserialize)]
struct Latest {
    v: u64,
    d: String,
}

fn version_key(record: &str, version: u64) -> String {
    format!("{record}/{version:010}")
}

/// A new version of the entity when the record's state is not its newest version's.
async fn new_version<H: Host + ?Sized>(
    state: &H,
    form: &Form,
    record: &Record,
) -> Result<Vec<(&'static str, String, String, String)>, StoreError> {
    let id = record.id.to_string();
    let latest: Option<Latest> = state
        .store()
        .openrosa("latest", &id)
        .await?
        .and_then(|(_, b)| serde_json::from_str(&b).ok());
    let view = view_of(form, record);
    Ok(versioned(&id, latest.as_ref(), &view))
}

fn versioned(
    id: &str,
    latest: Option<&Latest>,
    view: &View,
) -> Vec<(&'static str, String, String, String)> {
    let d = digest(view);
    if latest.is_some_and(|l| l.d == d) {
        return Vec::new();
    }
    let v = latest.map_or(1, |l| l.v + 1);
    vec![
        (
            "version",
            version_key(id, v),
            id.to_owned(),
            serde_json::to_string(view).expect("a view serializes"),
        ),
        (
            "latest",
            id.to_owned(),
            id.to_owned(),
            serde_json::to_string(&Latest { v, d }).expect("serializes"),
        ),
    ]
}

/// What an entity update was made from, and the properties a later submission of its own
/// line already replaced.
async fn entity_base<H: Host + ?Sized>(
    state: &H,
    id: &str,
    e: &EntityMeta,
    exists: bool,
) -> Result<(View, BTreeSet<String>), StoreError> {
    let others: Vec<Kept> = state
        .store()
        .openrosa_of("submission", id)
        .await?
        .into_iter()
        .filter_map(|(_, b)| serde_json::from_str(&b).ok())
        .collect();
    let mut later = BTreeSet::new();
    if !(e.update && exists) {
        // A create: any update of the entity was made after it.
        for k in others
            .iter()
            .filter(|k| k.entity.as_ref().is_some_and(|x| x.update))
        {
            later.extend(k.wrote.keys().cloned());
        }
        return Ok((View::new(), later));
    }
    let base = e.base_version.unwrap_or(0);
    let trunk = e.trunk_version.filter(|&t| t < base);
    let from = trunk.unwrap_or(base);
    let mut view: View = match state
        .store()
        .openrosa("version", &version_key(id, from))
        .await?
    {
        Some((_, body)) => serde_json::from_str(&body).unwrap_or_default(),
        None => View::new(),
    };
    if let Some(branch) = &e.branch_id {
        let mut line: Vec<&Kept> = others
            .iter()
            .filter(|k| {
                k.entity
                    .as_ref()
                    .is_some_and(|x| x.branch_id.as_ref() == Some(branch))
            })
            .collect();
        line.sort_by_key(|k| k.entity.as_ref().and_then(|x| x.base_version));
        for k in line {
            let b = k.entity.as_ref().and_then(|x| x.base_version).unwrap_or(0);
            if trunk.is_some() && b < base {
                // An earlier offline update of this line: the phone saw what it wrote.
                view.extend(k.wrote.clone());
            } else if b > base {
                later.extend(k.wrote.keys().cloned());
            }
        }
    }
    Ok((view, later))
}

/// An entity list as CSV for this phone: `name,label,__version` and the properties of the
/// records of its communes, with its `md5:`.
pub async fn entity_list<H: Host + ?Sized>(
    state: &H,
    device: &Device,
    list: &str,
) -> Result<Option<(String, String)>, StoreError> {
    let forms = state.forms();
    let Some(form) = FormId::parse(list)
        .ok()
        .and_then(|id| forms.latest(&id))
        .cloned()
    else {
        return Ok(None);
    };
    let communes: Vec<String> = device
        .communes
        .iter()
        .map(|c| c.as_str().to_owned())
        .collect();
    let records = state
        .store()
        .records_of(&[list.to_owned()], &communes)
        .await?;
    // Versions are numbered one writer at a time: a number names one state.
    let _numbering = VERSIONS.lock().await;
    let latest: HashMap<String, Latest> = state
        .store()
        .openrosa_all("latest")
        .await?
        .into_iter()
        .filter_map(|(k, b)| Some((k, serde_json::from_str(&b).ok()?)))
        .collect();
    let props = properties(&form);
    let mut csv = String::from("name,label,__version");
    for p in &props {
        csv.push(',');
        csv.push_str(&csv_cell(&p.name));
    }
    csv.push('\n');
    let mut docs = Vec::new();
    let mut rows: Vec<(String, String)> = Vec::with_capacity(records.len());
    for r in records.iter().filter(|r| !r.is_deleted()) {
        let id = r.id.to_string();
        let view = view_of(&form, r);
        let new = versioned(&id, latest.get(&id), &view);
        let version = match new.last() {
            Some((_, _, _, body)) => serde_json::from_str::<Latest>(body).map_or(1, |l| l.v),
            None => latest.get(&id).map_or(1, |l| l.v),
        };
        docs.extend(new);
        let label = crate::forms::record_name(r, Some(&form)).unwrap_or_else(|| id.clone());
        let mut line = format!("{},{},{version}", csv_cell(&id), csv_cell(&label));
        for p in &props {
            line.push(',');
            line.push_str(&csv_cell(&submission::text_of(
                r.value(&p.name).unwrap_or(&Value::Null),
            )));
        }
        line.push('\n');
        rows.push((id, line));
    }
    rows.sort();
    for (_, line) in rows {
        csv.push_str(&line);
    }
    for chunk in docs.chunks(20_000) {
        state.store().put_openrosa(chunk).await?;
    }
    let md5 = md5_of(csv.as_bytes());
    Ok(Some((csv, md5)))
}

fn csv_cell(s: &str) -> String {
    if s.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", s.replace('"', "\"\""))
    } else {
        s.to_owned()
    }
}

/// Which of these entities are gone for this phone (deleted, or no longer in its communes).
pub async fn integrity<H: Host + ?Sized>(
    state: &H,
    device: &Device,
    list: &str,
    ids: &[String],
) -> Result<Vec<(String, bool)>, StoreError> {
    let communes: Vec<String> = device
        .communes
        .iter()
        .map(|c| c.as_str().to_owned())
        .collect();
    let here: std::collections::HashSet<String> = state
        .store()
        .records_of(&[list.to_owned()], &communes)
        .await?
        .into_iter()
        .filter(|r| !r.is_deleted())
        .map(|r| r.id.to_string())
        .collect();
    Ok(ids
        .iter()
        .take(200_000)
        .map(|id| (id.clone(), !here.contains(&id.to_lowercase())))
        .collect())
}

/// The settings ODK Collect reads from a QR code: `base64(zlib(JSON))` with the server URL.
pub fn qr_settings(server_url: &str, name: &str) -> String {
    use base64::Engine as _;
    use std::io::Write as _;
    let settings = json!({
        "general": {
            "server_url": server_url,
            "form_update_mode": "match_exactly",
            "autosend": "wifi_and_cellular",
        },
        "admin": {},
        "project": { "name": format!("Mầm – {name}"), "icon": "M", "color": "#2e7d32" },
    });
    let mut z = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::default());
    z.write_all(settings.to_string().as_bytes())
        .expect("writing to memory");
    let packed = z.finish().expect("writing to memory");
    base64::engine::general_purpose::STANDARD.encode(packed)
}

/// The URL ODK Collect is given: the server's public address and the phone's key.
pub fn server_url(base: &str, token: &str) -> String {
    format!("{}/key/{token}", base.trim_end_matches('/'))
}

/// The device an office account's ODK Collect writes as (Basic authentication): its own
/// numbers, apart from the account's office edits, made on first use.
pub async fn account_device(
    store: &dyn Store,
    user: &str,
    communes: &[CommuneCode],
) -> Result<DeviceId, StoreError> {
    let lock = lock_of(format!("account:{user}"));
    let _one = lock.lock().await;
    if let Some((_, body)) = store.openrosa("account", user).await? {
        if let Some(id) = serde_json::from_str::<Value>(&body)
            .ok()
            .and_then(|v| v["device"].as_u64())
        {
            return Ok(id as DeviceId);
        }
    }
    let (id, _) = enroll(store, &format!("ODK Collect: {user}"), communes).await?;
    store
        .put_openrosa(&[(
            "account",
            user.to_owned(),
            String::new(),
            json!({ "device": id }).to_string(),
        )])
        .await?;
    Ok(id)
}

/// A phone for ODK Collect, enrolled at once: its device number and key (shown once, kept
/// hashed).
pub async fn enroll(
    store: &dyn crate::store::Store,
    name: &str,
    communes: &[CommuneCode],
) -> Result<(DeviceId, String), StoreError> {
    let code = crate::auth::new_code();
    let now = crate::now_ms();
    let id = store
        .add_device(
            name,
            communes,
            &crate::auth::code_hash(&code),
            now + 60_000,
            now,
        )
        .await?;
    let token = crate::auth::new_token();
    store
        .enroll(
            &crate::auth::code_hash(&code),
            &crate::auth::hash(&token),
            now,
        )
        .await?;
    Ok((id, token))
}
