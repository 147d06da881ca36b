//! `mam device`, `mam rejected`, `mam token`: phones, their refused edits, and read tokens.

use std::path::PathBuf;

use sync_protocol::CommuneCode;

use super::*;
use crate::report::Scope;
use crate::{auth, now_ms, store};

pub(super) async fn device(config: Option<&PathBuf>, command: DeviceCommand) -> anyhow::Result<()> {
    match command {
        DeviceCommand::Enroll {
            name,
            communes,
            json,
            odk,
            public_url,
            db,
        } => {
            let settings = command_settings(config, &db)?;
            let name = name.trim();
            if name.is_empty() {
                anyhow::bail!("--name must not be empty");
            }
            let communes = communes
                .iter()
                .map(|c| CommuneCode::parse(c.trim()).map_err(anyhow::Error::msg))
                .collect::<anyhow::Result<Vec<_>>>()?;
            let store = store::open(&settings).await?;
            if odk {
                let base = public_url
                    .or_else(|| settings.server.public_url.clone())
                    .unwrap_or_else(|| format!("http://{}", settings.server.listen));
                if !base.starts_with("http://") && !base.starts_with("https://") {
                    anyhow::bail!("--public-url: {base:?} is not an http:// or https:// address");
                }
                let (id, token) = crate::openrosa::enroll(store.as_ref(), name, &communes).await?;
                let server_url = crate::openrosa::server_url(&base, &token);
                let qr = crate::openrosa::qr_settings(&server_url, name);
                if json {
                    println!(
                        "{}",
                        serde_json::json!({ "device": id, "server_url": server_url, "qr": qr })
                    );
                } else {
                    println!("Device {id} ({name}) created for ODK Collect. In ODK Collect, scan the QR code on the office's Phones page, or enter this server URL (it holds the phone's key: keep it to that phone):");
                    println!();
                    println!("    {server_url}");
                    println!();
                    println!("QR code settings (base64 of zlib-compressed JSON): {qr}");
                }
                return Ok(());
            }
            let code = auth::new_code();
            let hours = settings.sync.enroll_code_hours;
            let expires = now_ms() + hours as i64 * 3_600_000;
            let id = store
                .add_device(name, &communes, &auth::code_hash(&code), expires, now_ms())
                .await?;
            if json {
                println!("{}", serde_json::json!({ "code": code, "device": id }));
            } else {
                println!("Device {id} ({name}) created. Enrolment code, valid {hours} hours, usable once:");
                println!();
                println!("    {code}");
                println!();
                println!("On the phone, enter the code; or: curl -X POST URL/v1/enroll -d '{{\"code\":\"{code}\"}}'");
            }
        }
        DeviceCommand::List { json, db } => {
            let settings = command_settings(config, &db)?;
            let store = store::open(&settings).await?;
            let devices = store.devices().await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&devices)?);
            } else {
                println!(
                    "{:>5}  {:<28} {:<18} {:<10} {:>8} {:>8}",
                    "id", "name", "communes", "state", "last seq", "refused"
                );
                for d in devices {
                    let state = if d.revoked {
                        "revoked"
                    } else if d.enrolled {
                        "enrolled"
                    } else {
                        "awaiting"
                    };
                    let follows = d
                        .predecessor
                        .map(|p| format!("  (follows #{p})"))
                        .unwrap_or_default();
                    let restore = d
                        .restored_seq
                        .map(|from| match d.last_seq > from {
                            true => format!(
                                "  (since the restore: seqs {}–{}, {} of them lost for good)",
                                from + 1,
                                d.last_seq,
                                d.lost
                            ),
                            false => format!(
                                "  (nothing sent since the restore, {} lost for good)",
                                d.lost
                            ),
                        })
                        .unwrap_or_default();
                    println!(
                        "{:>5}  {:<28} {:<18} {:<10} {:>8} {:>8}{follows}{restore}",
                        d.id,
                        d.name,
                        d.communes.join(","),
                        state,
                        d.last_seq,
                        d.rejected
                    );
                }
            }
        }
        DeviceCommand::Revoke { id, db } => {
            let settings = command_settings(config, &db)?;
            let store = store::open(&settings).await?;
            match store.revoke(id, now_ms()).await {
                Ok(()) => println!("Device {id} revoked."),
                Err(store::StoreError::NotFound) => anyhow::bail!("no device {id}"),
                Err(e) => return Err(e.into()),
            }
        }
    }
    Ok(())
}

/// `mam rejected list`: the refused edits, newest first.
pub(super) async fn rejected(
    config: Option<&PathBuf>,
    command: RejectedCommand,
) -> anyhow::Result<()> {
    match command {
        RejectedCommand::List {
            device,
            limit,
            json,
            db,
        } => {
            let settings = command_settings(config, &db)?;
            let store = store::open(&settings).await?;
            let rows = store
                .rejections(
                    device.as_ref().map(std::slice::from_ref),
                    0,
                    limit.min(10_000),
                )
                .await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&rows)?);
            } else if rows.is_empty() {
                println!("No refused edits.");
            } else {
                for r in rows {
                    println!(
                        "device {} seq {}: {}{} — {}",
                        r.device,
                        r.seq,
                        r.code,
                        r.field.map(|f| format!(" ({f})")).unwrap_or_default(),
                        r.message
                    );
                }
            }
            Ok(())
        }
        RejectedCommand::Uploads {
            device,
            limit,
            json,
            db,
        } => {
            let settings = command_settings(config, &db)?;
            let store = store::open(&settings).await?;
            let rows = store
                .upload_refusals(device.as_ref().map(std::slice::from_ref), limit.min(10_000))
                .await?;
            let names: std::collections::HashMap<i64, String> = store
                .devices()
                .await?
                .into_iter()
                .map(|d| (i64::from(d.id), d.name))
                .collect();
            if json {
                let rows: Vec<serde_json::Value> = rows
                    .iter()
                    .map(|r| {
                        serde_json::json!({
                            "device": r.device,
                            "device_name": names.get(&r.device),
                            "sha256": r.sha256,
                            "code": r.code,
                            "message": r.message,
                            "at": r.at,
                        })
                    })
                    .collect();
                println!("{}", serde_json::to_string_pretty(&rows)?);
            } else if rows.is_empty() {
                println!("No refused uploads.");
            } else {
                for r in rows {
                    println!(
                        "device {} ({}): {} {} — {}",
                        r.device,
                        names.get(&r.device).map_or("?", String::as_str),
                        r.code,
                        &r.sha256[..12.min(r.sha256.len())],
                        r.message
                    );
                }
            }
            Ok(())
        }
    }
}

/// `mam token create`: a read token for the indicator API.
pub(super) async fn token(config: Option<&PathBuf>, command: TokenCommand) -> anyhow::Result<()> {
    match command {
        TokenCommand::Create {
            scope,
            district,
            communes,
            name,
            json,
            db,
        } => {
            let settings = command_settings(config, &db)?;
            let scope = match (scope.as_deref(), district, communes.is_empty()) {
                (Some("province"), None, true) => Scope::Province,
                (None, Some(d), true) => Scope::District(d),
                (None, None, false) => {
                    for c in &communes {
                        CommuneCode::parse(c.as_str()).map_err(anyhow::Error::msg)?;
                    }
                    Scope::Communes(communes)
                }
                _ => anyhow::bail!(
                    "give exactly one of --scope province, --district CODE or --commune CODE…"
                ),
            };
            let store = store::open(&settings).await?;
            let token = auth::new_token();
            let id = store
                .add_api_token(
                    &name,
                    &auth::hash(&token),
                    &serde_json::to_string(&scope)?,
                    now_ms(),
                )
                .await?;
            if json {
                println!(
                    "{}",
                    serde_json::json!({ "id": id, "token": token, "scope": scope })
                );
            } else {
                println!(
                    "Read token {id} for {name} ({scope:?}), shown this once:\n\n    {token}\n"
                );
            }
            Ok(())
        }
    }
}
