//! Attachments: the bytes of photos, sound, video and files, kept outside the database rows,
//! by their SHA-256, once however many records name them.
//!
//! A phone sends an attachment apart from the edit that names it, in chunks of at most
//! [`MAX_CHUNK`] bytes, each saying where it starts (`Content-Range`). What arrived is kept
//! per phone and hash (`uploads/DEVICE/SHA.part`), so an upload cut anywhere continues where
//! it stopped, after a restart too; a chunk sent twice changes nothing. Each chunk is written
//! under a lock on its part file, which holds across the `mam` processes sharing the folder
//! (a retry that reaches another process waits, then finds the chunk there). When the last
//! byte arrives the whole is hashed: a match moves it to `objects/AB/SHA` with its media type
//! beside it, both on disk before the phone is told; a mismatch throws the part away and is
//! refused.
//!
//! The folder is the data directory's `attachments/` (SQLite), or `[attachments] dir`, a
//! folder every `mam` process in front of one PostgreSQL shares.

use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use sha2::{Digest, Sha256};
use sync_protocol::media::{is_media_type, is_sha256};
use sync_protocol::DeviceId;

/// The largest chunk one request may carry.
pub const MAX_CHUNK: usize = 256 * 1024;

/// The chunk phones send: 64 KiB. On 2G (EDGE uplinks of 30–100 kbit/s) one takes 5–20 s,
/// so a cut loses at most that much; the request around it is under 1 % of it.
pub const CHUNK: usize = 64 * 1024;

/// Uploads one phone may have under way at once.
pub const MAX_OPEN: usize = 32;
/// Days a part nobody adds to is kept.
pub const PART_DAYS: u64 = 30;

/// The longer side of a thumbnail, in pixels.
pub const THUMB: u32 = 320;

/// Where an upload stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Progress {
    pub received: u64,
    pub complete: bool,
}

/// Why a chunk is refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum Refusal {
    #[error("the attachment is {size} bytes, over the limit of {max}")]
    TooLarge { size: u64, max: u64 },
    #[error("attachments of type {0:?} are not taken here")]
    Type(String),
    #[error(
        "the chunk starts at byte {start}, but {received} bytes have arrived: send from {received}"
    )]
    Offset { start: u64, received: u64 },
    #[error("{0}")]
    Range(String),
    #[error("this phone has {open} uploads under way ({bytes} bytes): finish or let them go before another")]
    Busy { open: usize, bytes: u64 },
    #[error("the {size} bytes received have SHA-256 {got}, not {want}: the upload starts again")]
    Hash {
        size: u64,
        got: String,
        want: String,
    },
}

/// A stored attachment.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Stored {
    pub size: u64,
    pub media_type: String,
    pub path: PathBuf,
}

pub struct Attachments {
    dir: PathBuf,
    max_bytes: u64,
    types: Vec<String>,
    /// One photo decoded for a thumbnail at a time: a decode may take tens of megabytes.
    decoding: Mutex<()>,
    /// An S3-compatible store that keeps every attachment; `dir` then holds the uploads
    /// under way and a cache of what this process read or received.
    objects: Option<crate::objects::S3>,
}

impl Attachments {
    /// The store in `dir`, taking attachments up to `max_bytes` of the media `types` (a type,
    /// or `image/*` for a family).
    /// Folders are made as attachments arrive.
    pub fn new(dir: &Path, max_bytes: u64, types: Vec<String>) -> Self {
        Self {
            dir: dir.to_owned(),
            max_bytes,
            types,
            decoding: Mutex::new(()),
            objects: None,
        }
    }

    /// Keeps attachments in an object store too (and reads them from it).
    pub fn with_objects(mut self, objects: Option<crate::objects::S3>) -> Self {
        self.objects = objects;
        self
    }

    pub fn objects(&self) -> Option<&crate::objects::S3> {
        self.objects.as_ref()
    }

    /// The attachment stored under `sha`, from this folder or, with an object store, from
    /// there (kept here afterwards). For async callers; [`Attachments::stored`] reads the
    /// folder alone.
    pub async fn fetch(&self, sha: &str) -> std::io::Result<Option<Stored>> {
        if let Some(s) = self.stored(sha) {
            return Ok(Some(s));
        }
        let Some(objects) = self.objects.as_ref().filter(|_| is_sha256(sha)) else {
            return Ok(None);
        };
        let got = objects
            .get(&format!("objects/{sha}"))
            .await
            .map_err(std::io::Error::other)?;
        let Some((bytes, media_type)) = got else {
            return Ok(None);
        };
        // What the store sent must be what its name says.
        if crate::auth::hex(&Sha256::digest(&bytes)) != sha {
            return Err(std::io::Error::other(format!(
                "the object store's copy of {sha} does not match its hash"
            )));
        }
        let object = self.object(sha);
        let folder = object.parent().expect("a folder").to_owned();
        tokio::fs::create_dir_all(&folder).await?;
        let part = object.with_extension(format!("fetch.{}", std::process::id()));
        tokio::fs::write(&part, &bytes).await?;
        tokio::fs::write(object.with_extension("type"), &media_type).await?;
        tokio::fs::rename(&part, &object).await?;
        Ok(self.stored(sha))
    }

    /// Whether the attachment is stored (here, or in the object store).
    pub async fn arrived(&self, sha: &str) -> bool {
        if self.stored(sha).is_some() {
            return true;
        }
        match &self.objects {
            Some(o) if is_sha256(sha) => {
                matches!(o.head(&format!("objects/{sha}")).await, Ok(Some(_)))
            }
            _ => false,
        }
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub fn max_bytes(&self) -> u64 {
        self.max_bytes
    }

    fn object(&self, sha: &str) -> PathBuf {
        self.dir.join("objects").join(&sha[..2]).join(sha)
    }

    fn part(&self, device: DeviceId, sha: &str) -> PathBuf {
        self.dir
            .join("uploads")
            .join(device.to_string())
            .join(format!("{sha}.part"))
    }

    /// Whether the store takes attachments of this media type.
    pub fn takes(&self, media_type: &str) -> bool {
        is_media_type(media_type)
            && self.types.iter().any(|t| match t.strip_suffix("/*") {
                Some(family) => media_type.split('/').next() == Some(family),
                None => t.eq_ignore_ascii_case(media_type),
            })
    }

    /// The attachment stored under `sha`, if it is.
    pub fn stored(&self, sha: &str) -> Option<Stored> {
        if !is_sha256(sha) {
            return None;
        }
        let path = self.object(sha);
        let size = std::fs::metadata(&path).ok()?.len();
        let media_type = std::fs::read_to_string(path.with_extension("type")).ok()?;
        Some(Stored {
            size,
            media_type: media_type.trim().to_owned(),
            path,
        })
    }

    /// A stored photo made small (at most [`THUMB`] pixels on its longer side, JPEG), made
    /// once and kept beside it; `None` for what is not a photo this server can read.
    pub fn thumbnail(&self, sha: &str) -> Option<PathBuf> {
        let stored = self.stored(sha)?;
        if !stored.media_type.starts_with("image/") {
            return None;
        }
        let thumb = stored.path.with_extension("thumb.jpg");
        let unreadable = stored.path.with_extension("thumb.none");
        if thumb.exists() {
            return Some(thumb);
        }
        if unreadable.exists() {
            return None;
        }
        let _one = self.decoding.lock().unwrap_or_else(|e| e.into_inner());
        if thumb.exists() {
            return Some(thumb);
        }
        let small = (|| {
            let mut reader = image::ImageReader::open(&stored.path)
                .ok()?
                .with_guessed_format()
                .ok()?;
            // A phone's photo is scaled to about a megapixel: a file claiming far more is
            // not read.
            let mut limits = image::Limits::default();
            limits.max_image_width = Some(8_000);
            limits.max_image_height = Some(8_000);
            limits.max_alloc = Some(64 * 1024 * 1024);
            reader.limits(limits);
            Some(reader.decode().ok()?.thumbnail(THUMB, THUMB).to_rgb8())
        })();
        let Some(small) = small else {
            let _ = std::fs::write(&unreadable, b"");
            return None;
        };
        let part = stored
            .path
            .with_extension(format!("thumb.{}.part", std::process::id()));
        small
            .save_with_format(&part, image::ImageFormat::Jpeg)
            .ok()?;
        std::fs::rename(&part, &thumb).ok()?;
        Some(thumb)
    }

    /// A phone's parts under way: those untouched for [`PART_DAYS`] days removed, then how
    /// many are left and their bytes.
    fn sweep(&self, folder: &Path) -> std::io::Result<(usize, u64)> {
        let (mut open, mut bytes) = (0, 0);
        let old = std::time::Duration::from_secs(PART_DAYS * 86_400);
        for entry in std::fs::read_dir(folder)?.flatten() {
            let meta = entry.metadata()?;
            let stale = meta
                .modified()
                .ok()
                .and_then(|m| m.elapsed().ok())
                .is_some_and(|age| age > old);
            if stale {
                let _ = std::fs::remove_file(entry.path());
            } else {
                open += 1;
                bytes += meta.len();
            }
        }
        Ok((open, bytes))
    }

    /// Where `device`'s upload of `sha` stands.
    pub fn progress(&self, device: DeviceId, sha: &str) -> Progress {
        if !is_sha256(sha) {
            return Progress {
                received: 0,
                complete: false,
            };
        }
        match self.stored(sha) {
            Some(s) => Progress {
                received: s.size,
                complete: true,
            },
            None => Progress {
                received: std::fs::metadata(self.part(device, sha)).map_or(0, |m| m.len()),
                complete: false,
            },
        }
    }

    /// Takes the chunk `bytes`, from byte `start` of an attachment of `total` bytes and type
    /// `media_type` whose SHA-256 is `sha`, from `device`.
    pub fn put(
        &self,
        device: DeviceId,
        sha: &str,
        start: u64,
        total: u64,
        media_type: &str,
        bytes: &[u8],
    ) -> Result<Progress, PutError> {
        if !is_sha256(sha) {
            return Err(
                Refusal::Range(format!("{sha:?} is not a SHA-256 in lower-case hex")).into(),
            );
        }
        if total > self.max_bytes {
            return Err(Refusal::TooLarge {
                size: total,
                max: self.max_bytes,
            }
            .into());
        }
        if !self.takes(media_type) {
            return Err(Refusal::Type(media_type.to_owned()).into());
        }
        let end = start + bytes.len() as u64;
        if total == 0 || end > total {
            return Err(Refusal::Range(format!(
                "bytes {start}–{end} do not fit in an attachment of {total} bytes"
            ))
            .into());
        }
        let part = self.part(device, sha);
        // The same photo from another record or phone: already here.
        if let Some(s) = self.stored(sha) {
            let _ = std::fs::remove_file(&part);
            return Ok(Progress {
                received: s.size,
                complete: true,
            });
        }
        let folder = part.parent().expect("a folder");
        std::fs::create_dir_all(folder)?;
        if !part.exists() {
            // A phone keeps a few uploads under way at once, never the disk's worth: parts left
            // longer than a month are let go, and past the limits a new one waits.
            let (open, bytes) = self.sweep(folder)?;
            if open >= MAX_OPEN || bytes + total > MAX_OPEN as u64 * self.max_bytes {
                return Err(Refusal::Busy { open, bytes }.into());
            }
        }
        let mut file = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .read(true)
            .write(true)
            .open(&part)?;
        // One writer of this part at a time, in this process or another.
        file.lock()?;
        // Completed meanwhile by whoever held the lock.
        if let Some(s) = self.stored(sha) {
            drop(file);
            let _ = std::fs::remove_file(&part);
            return Ok(Progress {
                received: s.size,
                complete: true,
            });
        }
        let received = file.metadata()?.len();
        if start > received {
            return Err(Refusal::Offset { start, received }.into());
        }
        // What overlaps what has arrived must be the same bytes (a chunk sent again).
        let overlap = (received.min(end) - start) as usize;
        if overlap > 0 {
            let mut had = vec![0; overlap];
            file.seek(SeekFrom::Start(start))?;
            file.read_exact(&mut had)?;
            if had != bytes[..overlap] {
                drop(file);
                std::fs::remove_file(&part)?;
                return Err(Refusal::Range(format!(
                    "bytes from {start} differ from those received before: the upload starts again"
                ))
                .into());
            }
        }
        file.seek(SeekFrom::Start(received))?;
        file.write_all(&bytes[overlap..])?;
        file.sync_data()?;
        let received = received.max(end);
        if received < total {
            return Ok(Progress {
                received,
                complete: false,
            });
        }
        let got = hash_file(&part)?;
        if got != sha {
            drop(file);
            std::fs::remove_file(&part)?;
            return Err(Refusal::Hash {
                size: total,
                got,
                want: sha.to_owned(),
            }
            .into());
        }
        // With an object store, the bytes go there before anyone hears "complete" (this
        // runs on a blocking thread of the runtime, which may wait for it).
        if let Some(objects) = &self.objects {
            let bytes = std::fs::read(&part)?;
            let key = format!("objects/{sha}");
            tokio::runtime::Handle::current()
                .block_on(objects.put(&key, bytes, media_type))
                .map_err(std::io::Error::other)?;
        }
        // The media type first, then the bytes under their name, each on disk (and the
        // folder's entries too) before the phone hears "complete" and lets its copy go.
        let object = self.object(sha);
        let folder = object.parent().expect("a folder");
        std::fs::create_dir_all(folder)?;
        let kind = object.with_extension(format!("type.{device}"));
        std::fs::write(&kind, media_type)?;
        std::fs::File::open(&kind)?.sync_all()?;
        std::fs::rename(&kind, object.with_extension("type"))?;
        std::fs::rename(&part, &object)?;
        std::fs::File::open(folder)?.sync_all()?;
        drop(file);
        Ok(Progress {
            received: total,
            complete: true,
        })
    }
}

/// The attachments a record's current values name (every sibling of a field in conflict).
pub fn named_by(record: &sync_protocol::Record) -> Vec<sync_protocol::media::Attachment> {
    let mut found = Vec::new();
    for register in record.fields.values() {
        for v in register.values() {
            sync_protocol::media::named_in(v, &mut found);
        }
    }
    found
}

/// Whether the record's current values name the attachment: what lets a reader of the record
/// read it.
pub fn names(record: &sync_protocol::Record, sha: &str) -> bool {
    named_by(record).iter().any(|a| a.sha256 == sha)
}

/// A chunk refused, or the folder failing.
#[derive(Debug, thiserror::Error)]
pub enum PutError {
    #[error(transparent)]
    Refused(#[from] Refusal),
    #[error("attachment store: {0}")]
    Io(#[from] std::io::Error),
}

/// The SHA-256 of a file, in lower-case hex.
pub fn hash_file(path: &Path) -> std::io::Result<String> {
    let mut file = std::fs::File::open(path)?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0; 64 * 1024];
    loop {
        let n = file.read(&mut buf)?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
    }
    Ok(crate::auth::hex(&hasher.finalize()))
}

/// `bytes START-END/TOTAL` (END inclusive), as `Content-Range` says it.
pub fn content_range(text: &str) -> Option<(u64, u64, u64)> {
    let rest = text.trim().strip_prefix("bytes ")?;
    let (range, total) = rest.split_once('/')?;
    let (a, b) = range.split_once('-')?;
    let (a, b, total): (u64, u64, u64) = (a.parse().ok()?, b.parse().ok()?, total.parse().ok()?);
    (a <= b && b < total).then_some((a, b, total))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sha(bytes: &[u8]) -> String {
        crate::auth::hex(&Sha256::digest(bytes))
    }

    #[test]
    fn chunks_resume_repeat_and_check_the_hash() {
        let dir = std::env::temp_dir().join(format!("mam-att-{}", std::process::id()));
        let store = Attachments::new(&dir, 1000, vec!["image/*".into()]);
        let photo: Vec<u8> = (0..300u32).map(|i| (i * 7) as u8).collect();
        let id = sha(&photo);
        let phone: DeviceId = 3;
        let put = |start: usize, end: usize| {
            store.put(
                phone,
                &id,
                start as u64,
                300,
                "image/jpeg",
                &photo[start..end],
            )
        };
        assert_eq!(put(0, 100).unwrap().received, 100);
        assert_eq!(put(0, 100).unwrap().received, 100, "the same chunk twice");
        assert!(matches!(
            put(150, 200),
            Err(PutError::Refused(Refusal::Offset { received: 100, .. }))
        ));
        assert_eq!(put(50, 200).unwrap().received, 200, "an overlap");
        assert_eq!(store.progress(phone, &id).received, 200);
        assert!(put(200, 300).unwrap().complete);
        assert_eq!(store.stored(&id).unwrap().size, 300);
        // Stored once: another phone's upload of it is complete at once.
        let other = store
            .put(4, &id, 0, 300, "image/jpeg", &photo[..10])
            .unwrap();
        assert!(other.complete);
        // A wrong hash, a wrong type, over the limit.
        let wrong = "0".repeat(64);
        let refused = store
            .put(phone, &wrong, 0, 300, "image/jpeg", &photo)
            .unwrap_err();
        assert!(
            matches!(refused, PutError::Refused(Refusal::Hash { .. })),
            "{refused:?}"
        );
        assert_eq!(
            store.progress(phone, &wrong).received,
            0,
            "the part is thrown away"
        );
        assert!(matches!(
            store.put(phone, &wrong, 0, 300, "text/html", &photo),
            Err(PutError::Refused(Refusal::Type(_)))
        ));
        assert!(matches!(
            store.put(phone, &wrong, 0, 5000, "image/png", &photo),
            Err(PutError::Refused(Refusal::TooLarge { .. }))
        ));
        assert_eq!(content_range("bytes 0-99/300"), Some((0, 99, 300)));
        // A phone's uploads under way are limited.
        let busy = Attachments::new(&dir.join("busy"), 1000, vec!["image/*".into()]);
        for i in 0..MAX_OPEN {
            let name = format!("{:064x}", i + 1);
            assert!(busy.put(5, &name, 0, 10, "image/png", &[1]).is_ok());
        }
        let one_more = busy.put(5, &"f".repeat(64), 0, 10, "image/png", &[1]);
        assert!(
            matches!(one_more, Err(PutError::Refused(Refusal::Busy { .. }))),
            "{one_more:?}"
        );
        assert!(
            busy.put(6, &"f".repeat(64), 0, 10, "image/png", &[1])
                .is_ok(),
            "another phone's"
        );
        // Retries racing each other (as through two processes): each chunk lands once.
        let photo: Vec<u8> = (0..900u32).map(|i| (i * 13 % 251) as u8).collect();
        let id = sha(&photo);
        let store = std::sync::Arc::new(Attachments::new(&dir, 1000, vec!["image/*".into()]));
        let racers: Vec<_> = (0..6)
            .map(|_| {
                let (store, photo, id) = (store.clone(), photo.clone(), id.clone());
                std::thread::spawn(move || {
                    let mut at = 0;
                    while at < photo.len() {
                        let end = (at + 100).min(photo.len());
                        match store.put(9, &id, at as u64, 900, "image/png", &photo[at..end]) {
                            Ok(p) if p.complete => return,
                            Ok(p) => at = p.received as usize,
                            Err(PutError::Refused(Refusal::Offset { received, .. })) => {
                                at = received as usize
                            }
                            Err(e) => panic!("{e}"),
                        }
                    }
                })
            })
            .collect();
        for r in racers {
            r.join().unwrap();
        }
        let stored = store.stored(&id).unwrap();
        assert_eq!(hash_file(&stored.path).unwrap(), id);
        assert_eq!(content_range("bytes 99-0/300"), None);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
