//! Office accounts: roles and their scope, passwords (argon2id, hashed off the async threads),
//! sign-in with lockout, and sessions.

use argon2::password_hash::rand_core::OsRng;
use argon2::password_hash::{Output, PasswordHash, SaltString};
use argon2::{Algorithm, Argon2, Block, Params, Version};
use sync_protocol::CommuneCode;

use crate::auth;
use crate::report::Scope;
use crate::store::{Lockout, NewUser, Store, StoreError, User};
use crate::units::Units;

/// The code of the province itself: a province account's area.
pub const PROVINCE: &str = "46";
/// Failed sign-ins in a row that lock an account, and for how long.
pub const LOCKOUT: Lockout = Lockout {
    after: 5,
    for_ms: 15 * 60 * 1000,
};
/// How long a session lasts.
pub const SESSION_MS: i64 = 12 * 3600 * 1000;
/// The shortest password accepted.
pub const MIN_PASSWORD_CHARS: usize = 10;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    Province,
    District,
    Commune,
}

impl Role {
    pub fn parse(s: &str) -> Option<Role> {
        match s {
            "province" => Some(Role::Province),
            "district" => Some(Role::District),
            "commune" => Some(Role::Commune),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Role::Province => "province",
            Role::District => "district",
            Role::Commune => "commune",
        }
    }
}

/// The scope a role and an area give, checked against the admin units (any version, so that an
/// account made for a district that has since merged still reads its old communes).
pub fn scope_of(role: Role, area: &str, units: &Units) -> Result<Scope, String> {
    match role {
        Role::Province if area == PROVINCE => Ok(Scope::Province),
        Role::Province => Err(format!(
            "area: a province account's area is {PROVINCE} (Thừa Thiên Huế), not {area:?}"
        )),
        Role::District => {
            let known = units.versions().iter().any(|v| {
                v.communes
                    .values()
                    .any(|c| c.district_code.as_deref() == Some(area))
            });
            if known {
                Ok(Scope::District(area.to_owned()))
            } else {
                Err(format!(
                    "area: {area:?} is not a district code of the province (e.g. 474 for Huế)"
                ))
            }
        }
        Role::Commune => {
            if units.all_codes().contains(area) {
                Ok(Scope::Communes(vec![area.to_owned()]))
            } else {
                Err(format!(
                    "area: {area:?} is not a commune code of the province (5 digits, see `mam units list`)"
                ))
            }
        }
    }
}

/// Every commune code a scope allows, across the versions of the map.
pub fn communes_in(scope: &Scope, units: &Units) -> Vec<CommuneCode> {
    units
        .all_codes()
        .into_iter()
        .filter(|c| scope.allows(c, units))
        .filter_map(|c| CommuneCode::parse(&c).ok())
        .collect()
}

/// The scope of a stored account.
pub fn user_scope(user: &User, units: &Units) -> Scope {
    Role::parse(&user.role)
        .and_then(|role| scope_of(role, &user.area, units).ok())
        // An account whose area is gone from the map sees nothing rather than everything.
        .unwrap_or(Scope::Communes(Vec::new()))
}

pub fn check_password_rules(password: &str) -> Result<(), String> {
    if password.chars().count() < MIN_PASSWORD_CHARS {
        return Err(format!(
            "password: at least {MIN_PASSWORD_CHARS} characters (got {})",
            password.chars().count()
        ));
    }
    Ok(())
}

/// Password hashing runs here: on a fixed set of threads, one per core, each running one
/// argon2id (19 MiB) at a time, with a short queue in front. Fixed threads, because the memory
/// an argon2id frees stays with its thread's allocator: spread over the runtime's blocking
/// threads, a burst would leave 19 MiB on each. A sign-in that finds the queue full is answered
/// "busy" instead of waiting, so a burst of any size holds about `threads × 19 MiB`.
struct HashPool {
    jobs: std::sync::Mutex<std::sync::mpsc::Sender<Box<dyn FnOnce() + Send>>>,
    queued: std::sync::atomic::AtomicUsize,
    max_queued: usize,
}

static POOL: std::sync::LazyLock<HashPool> = std::sync::LazyLock::new(|| {
    let (send, receive) = std::sync::mpsc::channel::<Box<dyn FnOnce() + Send>>();
    let receive = std::sync::Arc::new(std::sync::Mutex::new(receive));
    for i in 0..hashing_slots() {
        let receive = receive.clone();
        std::thread::Builder::new()
            .name(format!("mam-argon2-{i}"))
            .spawn(move || loop {
                let job = receive.lock().map(|r| r.recv());
                match job {
                    Ok(Ok(job)) => job(),
                    _ => return,
                }
            })
            .expect("a hashing thread starts");
    }
    HashPool {
        jobs: std::sync::Mutex::new(send),
        queued: std::sync::atomic::AtomicUsize::new(0),
        max_queued: hashing_slots() * 16,
    }
});

/// Argon2id instances that may run at once in this process: one per core.
pub fn hashing_slots() -> usize {
    std::thread::available_parallelism().map_or(2, |n| n.get())
}

/// Run `work` on a hashing thread; `None` when the queue is full.
async fn hashing<T: Send + 'static>(work: impl FnOnce() -> T + Send + 'static) -> Option<T> {
    use std::sync::atomic::Ordering;
    let pool = &*POOL;
    if pool.queued.fetch_add(1, Ordering::AcqRel) >= pool.max_queued {
        pool.queued.fetch_sub(1, Ordering::AcqRel);
        return None;
    }
    let (done, result) = tokio::sync::oneshot::channel();
    let job: Box<dyn FnOnce() + Send> = Box::new(move || {
        POOL.queued.fetch_sub(1, Ordering::AcqRel);
        let _ = done.send(work());
    });
    let sent = pool.jobs.lock().is_ok_and(|jobs| jobs.send(job).is_ok());
    if !sent {
        return None;
    }
    result.await.ok()
}

thread_local! {
    /// The argon2id memory of this hashing thread, allocated at its first password and kept:
    /// a thread reuses one block of memory for every password, so the pool holds
    /// `threads × 19 MiB` however many passwords pass through it (freed and allocated again,
    /// the blocks would spread over the allocator's arenas and stay there).
    static MEMORY: std::cell::RefCell<Vec<Block>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// The most memory a stored hash may ask for: 64 MiB.
const MAX_BLOCKS: usize = 64 * 1024;

/// `password` hashed with `argon2` and `salt` into `out`, on this thread's memory.
fn hash_into(argon2: &Argon2, blocks: usize, password: &[u8], salt: &[u8], out: &mut [u8]) -> bool {
    if blocks > MAX_BLOCKS {
        return false;
    }
    MEMORY.with_borrow_mut(|memory| {
        if memory.len() < blocks {
            memory.resize(blocks, Block::default());
        }
        argon2
            .hash_password_into_with_memory(password, salt, out, &mut memory[..blocks])
            .is_ok()
    })
}

/// A new argon2id hash of `password` (default parameters) in PHC form.
fn hash_now(password: &str) -> anyhow::Result<String> {
    let salt = SaltString::generate(&mut OsRng);
    let params = Params::default();
    let argon2 = Argon2::new(Algorithm::Argon2id, Version::V0x13, params.clone());
    let mut salt_bytes = [0u8; 64];
    let raw_salt = salt
        .decode_b64(&mut salt_bytes)
        .map_err(|e| anyhow::anyhow!("salt: {e}"))?;
    let mut out = [0u8; Params::DEFAULT_OUTPUT_LEN];
    if !hash_into(
        &argon2,
        params.block_count(),
        password.as_bytes(),
        raw_salt,
        &mut out,
    ) {
        anyhow::bail!("hashing the password failed");
    }
    let hash = PasswordHash {
        algorithm: Algorithm::Argon2id.ident(),
        version: Some(Version::V0x13.into()),
        params: (&params)
            .try_into()
            .map_err(|e| anyhow::anyhow!("argon2 parameters: {e}"))?,
        salt: Some(salt.as_salt()),
        hash: Some(Output::new(&out).map_err(|e| anyhow::anyhow!("argon2 output: {e}"))?),
    };
    Ok(hash.to_string())
}

/// Whether `password` matches the PHC hash `stored` (argon2id, any parameters up to 64 MiB).
fn matches_now(password: &str, stored: &str) -> bool {
    let Ok(hash) = PasswordHash::new(stored) else {
        return false;
    };
    let (Some(salt), Some(expected)) = (hash.salt, hash.hash) else {
        return false;
    };
    let (Ok(algorithm), Ok(params)) =
        (Algorithm::try_from(hash.algorithm), Params::try_from(&hash))
    else {
        return false;
    };
    let version = match hash.version.map(Version::try_from) {
        None => Version::default(),
        Some(Ok(v)) => v,
        Some(Err(_)) => return false,
    };
    let mut salt_bytes = [0u8; 64];
    let Ok(raw_salt) = salt.decode_b64(&mut salt_bytes) else {
        return false;
    };
    let argon2 = Argon2::new(algorithm, version, params.clone());
    let mut out = vec![0u8; expected.len()];
    hash_into(&argon2, params.block_count(), password.as_bytes(), raw_salt, &mut out)
        // `Output` compares in constant time.
        && Output::new(&out).is_ok_and(|got| got == expected)
}

/// Hash a password with argon2id, on a hashing thread: it takes tens of milliseconds of CPU
/// by design.
pub async fn hash_password(password: String) -> anyhow::Result<String> {
    hashing(move || hash_now(&password))
        .await
        .ok_or_else(|| anyhow::anyhow!("too many passwords are being checked; try again"))?
}

/// Whether `password` matches `stored`; `None` when every hashing slot is taken and the queue
/// is full.
async fn verify_password(password: String, stored: String) -> Option<bool> {
    hashing(move || matches_now(&password, &stored)).await
}

/// One lock per account name: attempts on one account are checked one after another, each
/// reading the failures of the one before, so a burst of guesses gets no more checks than the
/// lockout allows. Entries go when nobody waits on them.
static ACCOUNT_LOCKS: std::sync::LazyLock<
    std::sync::Mutex<std::collections::HashMap<String, std::sync::Arc<tokio::sync::Mutex<()>>>>,
> = std::sync::LazyLock::new(Default::default);

struct AccountTurn {
    name: String,
    lock: std::sync::Arc<tokio::sync::Mutex<()>>,
}

impl AccountTurn {
    fn of(name: &str) -> Self {
        let key = name.to_lowercase();
        let mut locks = ACCOUNT_LOCKS
            .lock()
            .expect("the account locks are never poisoned");
        let lock = locks.entry(key.clone()).or_default().clone();
        AccountTurn { name: key, lock }
    }
}

impl Drop for AccountTurn {
    fn drop(&mut self) {
        let mut locks = ACCOUNT_LOCKS
            .lock()
            .expect("the account locks are never poisoned");
        // Ours and the map's: nobody else holds or waits for this account.
        if std::sync::Arc::strong_count(&self.lock) <= 2 {
            locks.remove(&self.name);
        }
    }
}

/// A hash of nothing anyone knows, checked against for unknown names so that a wrong name
/// takes as long as a wrong password.
const DECOY: &str =
    "$argon2id$v=19$m=19456,t=2,p=1$c2FsdHNhbHRzYWx0$JZfkTqKDZ7nhnv/cnIKCeb/VIiEnHubkN8p9QBFFOtM";

#[derive(Debug, thiserror::Error)]
pub enum LoginError {
    #[error("wrong name or password")]
    Wrong,
    #[error("locked after repeated failures until {0}")]
    Locked(i64),
    /// Every password-hashing slot is taken and the queue is full: try again shortly.
    #[error("too many sign-ins at once")]
    Busy,
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Check a name and password. Every attempt is kept (`logins`); failures count toward the
/// lockout, and a locked account is refused without looking at the password.
pub async fn login(
    store: &dyn Store,
    name: &str,
    password: &str,
    now: i64,
) -> Result<User, LoginError> {
    // One attempt at a time per name, known or not (an unknown name waits the same).
    let turn = AccountTurn::of(name);
    let _turn = turn.lock.lock().await;
    let user = store.user_by_name(name).await?;
    let Some(user) = user else {
        // A name that is no account locks as one does, so that the answers never tell them
        // apart: the same failures lock it for the same time.
        let tried = store.logins_of(name, 100).await?;
        if let Some(until) = lock_of(&tried, LOCKOUT).filter(|&t| t > now) {
            store.log_login(name, Some("locked"), now).await?;
            return Err(LoginError::Locked(until));
        }
        let checked = verify_password(password.to_owned(), DECOY.to_owned()).await;
        if checked.is_none() {
            store.log_login(name, Some("busy"), now).await?;
            return Err(LoginError::Busy);
        }
        store.log_login(name, Some("unknown"), now).await?;
        return Err(LoginError::Wrong);
    };
    // Read inside the turn: the failures of the attempt before this one are counted.
    if let Some(until) = user.locked_until.filter(|&t| t > now) {
        store.log_login(name, Some("locked"), now).await?;
        return Err(LoginError::Locked(until));
    }
    let Some(matches) = verify_password(password.to_owned(), user.password_hash.clone()).await
    else {
        store.log_login(name, Some("busy"), now).await?;
        return Err(LoginError::Busy);
    };
    if !matches {
        store.login_failed(user.id, LOCKOUT, now).await?;
        store.log_login(name, Some("password"), now).await?;
        tracing::warn!(user = name, "sign-in refused: wrong password");
        return Err(LoginError::Wrong);
    }
    store.login_succeeded(user.id, now).await?;
    store.log_login(name, None, now).await?;
    Ok(user)
}

/// When a run of attempts (newest first: reason refused or none, when) locks its name, as an
/// account's failures do: `after` failures in a row lock it for `for_ms`; attempts refused as
/// locked or busy do not count; a success starts the count again.
fn lock_of(tried: &[(Option<String>, i64)], lockout: Lockout) -> Option<i64> {
    let mut failures = 0i64;
    let mut until: Option<i64> = None;
    for (reason, at) in tried.iter().rev() {
        match reason.as_deref() {
            None => failures = 0,
            Some("unknown" | "password") if until.is_none_or(|u| *at >= u) => {
                failures += 1;
                if failures >= lockout.after {
                    until = Some(at + lockout.for_ms);
                    failures = 0;
                }
            }
            _ => {}
        }
    }
    until
}

/// A new session: (cookie token, CSRF token). Only the cookie token's hash is stored.
pub async fn start_session(store: &dyn Store, user: &User, now: i64) -> Result<String, StoreError> {
    let token = auth::new_token();
    let csrf = auth::new_token();
    store
        .add_session(&auth::hash(&token), user.id, &csrf, now, now + SESSION_MS)
        .await?;
    Ok(token)
}

/// Create an account (CLI): checks the role, area and password rules, hashes the password.
pub async fn add_user(
    store: &dyn Store,
    units: &Units,
    name: &str,
    role: &str,
    area: &str,
    password: String,
    now: i64,
) -> anyhow::Result<User> {
    let name = name.trim();
    if name.is_empty() || name.chars().count() > 64 {
        anyhow::bail!("name: 1 to 64 characters (got {:?})", name);
    }
    let role = Role::parse(role).ok_or_else(|| {
        anyhow::anyhow!("role: one of province, district, commune (got {role:?})")
    })?;
    let scope = scope_of(role, area, units).map_err(anyhow::Error::msg)?;
    check_password_rules(&password).map_err(anyhow::Error::msg)?;
    let hash = hash_password(password).await?;
    let communes = communes_in(&scope, units);
    let user = NewUser {
        name,
        role: role.as_str(),
        area,
        password_hash: &hash,
        communes: &communes,
    };
    store.add_user(&user, now).await.map_err(|e| match e {
        StoreError::Conflict => anyhow::anyhow!("name: an account named {name:?} exists already"),
        other => other.into(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn passwords_verify_and_the_decoy_is_a_valid_hash() {
        let hash = hash_password("correct horse battery".into()).await.unwrap();
        assert!(hash.starts_with("$argon2id$"));
        let check = |password: &str, stored: &str| verify_password(password.into(), stored.into());
        assert_eq!(check("correct horse battery", &hash).await, Some(true));
        assert_eq!(check("correct horse batterY", &hash).await, Some(false));
        assert!(PasswordHash::new(DECOY).is_ok());
        assert_eq!(check("", DECOY).await, Some(false));
        // Hashes made by the argon2 crate's own hasher (as earlier releases stored them) verify.
        use argon2::password_hash::PasswordHasher;
        let salt = SaltString::generate(&mut OsRng);
        let theirs = Argon2::default()
            .hash_password(b"correct horse battery", &salt)
            .unwrap()
            .to_string();
        assert_eq!(check("correct horse battery", &theirs).await, Some(true));
        assert_eq!(check("wrong horse battery", &theirs).await, Some(false));
    }

    #[test]
    fn a_name_locks_as_an_account_does() {
        let lockout = Lockout {
            after: 3,
            for_ms: 100,
        };
        let failed = |at: i64| (Some("unknown".to_owned()), at);
        let locked = |at: i64| (Some("locked".to_owned()), at);
        // Newest first, as the store answers.
        let mut tried = vec![failed(2), failed(1)];
        assert_eq!(lock_of(&tried, lockout), None);
        tried.insert(0, failed(3));
        assert_eq!(lock_of(&tried, lockout), Some(103));
        // Refusals while locked do not count; after the lock the count starts again.
        tried.splice(0..0, [failed(120), failed(110), locked(50)]);
        assert_eq!(lock_of(&tried, lockout), Some(103));
        tried.insert(0, failed(130));
        assert_eq!(lock_of(&tried, lockout), Some(230));
        // A success in between resets the run.
        let reset = vec![failed(3), (None, 2), failed(1), failed(0)];
        assert_eq!(lock_of(&reset, lockout), None);
    }
}
