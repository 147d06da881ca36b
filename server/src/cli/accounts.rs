//! `mam user`: office accounts.

use std::path::PathBuf;

use super::*;
use crate::units::Units;
use crate::{now_ms, store};

/// `mam user add|list|password`.
pub(super) async fn user(config: Option<&PathBuf>, command: UserCommand) -> anyhow::Result<()> {
    match command {
        UserCommand::Add {
            name,
            role,
            area,
            password,
            db,
        } => {
            let settings = command_settings(config, &db)?;
            let units = Units::load(&settings.forms.units())?;
            let password = read_password(password)?;
            let store = store::open(&settings).await?;
            let user = crate::accounts::add_user(
                store.as_ref(),
                &units,
                &name,
                &role,
                &area,
                password,
                now_ms(),
            )
            .await?;
            println!(
                "Account {} created: {} {}. Sign in at /login.",
                user.name, user.role, user.area
            );
            Ok(())
        }
        UserCommand::List { db } => {
            let settings = command_settings(config, &db)?;
            let store = store::open(&settings).await?;
            let now = now_ms();
            for u in store.users().await? {
                let locked = match u.locked_until {
                    Some(t) if t > now => {
                        format!(", locked for {} more min", (t - now) / 60_000 + 1)
                    }
                    _ => String::new(),
                };
                println!(
                    "{}\t{} {}\tfailed sign-ins: {}{locked}",
                    u.name, u.role, u.area, u.failed_logins
                );
            }
            Ok(())
        }
        UserCommand::Password { name, password, db } => {
            let settings = command_settings(config, &db)?;
            let password = read_password(password)?;
            crate::accounts::check_password_rules(&password).map_err(anyhow::Error::msg)?;
            let store = store::open(&settings).await?;
            let hash = crate::accounts::hash_password(password).await?;
            store
                .set_password(&name, &hash)
                .await
                .map_err(|e| match e {
                    crate::store::StoreError::NotFound => {
                        anyhow::anyhow!("name: no account {name:?}")
                    }
                    other => other.into(),
                })?;
            println!("Password of {name} changed; any lockout is lifted.");
            Ok(())
        }
    }
}

/// A password from the flag, or the first line of standard input.
pub(super) fn read_password(flag: Option<String>) -> anyhow::Result<String> {
    if let Some(p) = flag {
        return Ok(p);
    }
    if std::io::IsTerminal::is_terminal(&std::io::stdin()) {
        eprint!("Password: ");
    }
    let mut line = String::new();
    std::io::stdin().read_line(&mut line)?;
    Ok(line.trim_end_matches(['\r', '\n']).to_owned())
}
