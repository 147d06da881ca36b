//! Office accounts: roles and their scope, passwords (argon2id, hashed off the async threads),
//! sign-in with lockout, and sessions.

use argon2::password_hash::rand_core::OsRng;
use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::Argon2;
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

/// Hash a password with argon2id, on a blocking thread: it takes tens of milliseconds of CPU
/// by design.
pub async fn hash_password(password: String) -> anyhow::Result<String> {
    tokio::task::spawn_blocking(move || {
        let salt = SaltString::generate(&mut OsRng);
        Argon2::default()
            .hash_password(password.as_bytes(), &salt)
            .map(|h| h.to_string())
            .map_err(|e| anyhow::anyhow!("hashing the password failed: {e}"))
    })
    .await?
}

async fn verify_password(password: String, stored: String) -> bool {
    tokio::task::spawn_blocking(move || {
        PasswordHash::new(&stored).is_ok_and(|h| {
            Argon2::default()
                .verify_password(password.as_bytes(), &h)
                .is_ok()
        })
    })
    .await
    .unwrap_or(false)
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
    let user = store.user_by_name(name).await?;
    let Some(user) = user else {
        verify_password(password.to_owned(), DECOY.to_owned()).await;
        store.log_login(name, Some("unknown"), now).await?;
        return Err(LoginError::Wrong);
    };
    if let Some(until) = user.locked_until.filter(|&t| t > now) {
        store.log_login(name, Some("locked"), now).await?;
        return Err(LoginError::Locked(until));
    }
    if !verify_password(password.to_owned(), user.password_hash.clone()).await {
        store.login_failed(user.id, LOCKOUT, now).await?;
        store.log_login(name, Some("password"), now).await?;
        tracing::warn!(user = name, "sign-in refused: wrong password");
        return Err(LoginError::Wrong);
    }
    store.login_succeeded(user.id, now).await?;
    store.log_login(name, None, now).await?;
    Ok(user)
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
        assert!(verify_password("correct horse battery".into(), hash.clone()).await);
        assert!(!verify_password("correct horse batterY".into(), hash).await);
        assert!(PasswordHash::new(DECOY).is_ok());
        assert!(!verify_password("".into(), DECOY.into()).await);
    }
}
