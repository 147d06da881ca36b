//! OpenRosa for ODK Collect, under `/key/{token}/`: the form list, each form's XForm and
//! manifest, entity lists and their integrity, and submissions (see [`crate::openrosa`]).
//!
//! Every answer carries `X-OpenRosa-Version: 1.0` and `X-OpenRosa-Accept-Content-Length`;
//! errors are an `OpenRosaResponse` whose message ODK Collect shows, in Vietnamese.

use std::collections::HashMap;
use std::sync::Arc;

use axum::extract::{DefaultBodyLimit, Multipart, Path, Query, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;

use crate::auth;
use crate::openrosa::{self, xform::esc, Part, Reply, ACCEPT_CONTENT_LENGTH};
use crate::state::AppState;
use crate::store::Device;

/// The OpenRosa routes: under `/key/{token}/` for a phone's key, and at the root for a
/// collaborator's account (Basic authentication, over HTTPS only).
pub fn routes() -> Router<Arc<AppState>> {
    let mut router = Router::new();
    for prefix in ["/key/{token}", ""] {
        router = router
            .route(&format!("{prefix}/formList"), get(form_list))
            .route(&format!("{prefix}/forms/{{form}}/form.xml"), get(form_xml))
            .route(&format!("{prefix}/forms/{{form}}/manifest"), get(manifest))
            .route(
                &format!("{prefix}/forms/{{form}}/attachments/{{file}}"),
                get(form_attachment),
            )
            .route(
                &format!("{prefix}/lists/{{list}}/integrity"),
                get(integrity),
            )
            .route(
                &format!("{prefix}/submission"),
                get(submission_head)
                    .head(submission_head)
                    .post(submission)
                    .layer(DefaultBodyLimit::max(ACCEPT_CONTENT_LENGTH + 1024 * 1024)),
            );
    }
    router
}

/// An OpenRosa answer: the headers every one carries.
fn answer(status: StatusCode, content_type: &'static str, body: String) -> Response {
    let mut r = (status, body).into_response();
    let h = r.headers_mut();
    h.insert("X-OpenRosa-Version", HeaderValue::from_static("1.0"));
    h.insert(
        "X-OpenRosa-Accept-Content-Length",
        HeaderValue::from(ACCEPT_CONTENT_LENGTH),
    );
    match content_type {
        "" => h.remove(header::CONTENT_TYPE),
        t => h.insert(header::CONTENT_TYPE, HeaderValue::from_static(t)),
    };
    r
}

/// An `OpenRosaResponse` with one message.
fn message(status: StatusCode, nature: &str, text: &str) -> Response {
    answer(
        status,
        "text/xml; charset=utf-8",
        format!(
            "<OpenRosaResponse xmlns=\"http://openrosa.org/http/response\" items=\"0\">\n    \
             <message nature=\"{nature}\">{}</message>\n  </OpenRosaResponse>",
            esc(text)
        ),
    )
}

fn error(status: StatusCode, text: &str) -> Response {
    message(status, "error", text)
}

type Params = HashMap<String, String>;

/// Accounts whose password was right lately, by the hash of name and password, until when.
type Believed = HashMap<String, (crate::store::User, i64)>;
static BELIEVED: std::sync::LazyLock<std::sync::Mutex<Believed>> =
    std::sync::LazyLock::new(|| std::sync::Mutex::new(HashMap::new()));
const BELIEVED_MS: i64 = 5 * 60 * 1000;

/// Who asks: the phone whose key is in the path (enrolled, not revoked), or an account by
/// Basic authentication over HTTPS, writing as a device of its own within its area. With the
/// address its links start from, and whose forms it fills.
async fn caller(
    state: &AppState,
    params: &Params,
    headers: &HeaderMap,
) -> Result<(Device, String), Response> {
    caller_of(state, params, headers)
        .await
        .map(|(d, base, _)| (d, base))
}

/// [`caller`], with the roles whose forms it is offered.
async fn caller_of(
    state: &AppState,
    params: &Params,
    headers: &HeaderMap,
) -> Result<(Device, String, Vec<String>), Response> {
    let phone = vec![openrosa::COLLABORATOR.to_owned()];
    let busy = |e: &dyn std::fmt::Display| {
        error(
            StatusCode::SERVICE_UNAVAILABLE,
            &format!("Máy chủ đang bận, hãy thử lại sau: {e}"),
        )
    };
    let public = crate::respond::public_base(state, headers);
    if let Some(token) = params.get("token") {
        let refused = || {
            error(
                StatusCode::FORBIDDEN,
                "Mã kết nối của máy này không đúng hoặc đã bị thu hồi. Hãy nhờ cán bộ xã quét lại mã QR mới.",
            )
        };
        if token.len() > 128 {
            return Err(refused());
        }
        return match state.store.device_by_token(&auth::hash(token)).await {
            Ok(Some(d)) if !d.revoked => Ok((d, openrosa::server_url(&public, token), phone)),
            Ok(_) => Err(refused()),
            Err(e) => Err(busy(&e)),
        };
    }
    let https = headers
        .get("x-forwarded-proto")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|p| p.eq_ignore_ascii_case("https"));
    if !https {
        return Err(error(
            StatusCode::FORBIDDEN,
            "Đăng nhập bằng tên và mật khẩu chỉ dùng được qua HTTPS. Hãy quét mã QR của máy này (trang Điện thoại).",
        ));
    }
    let credentials = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Basic "))
        .and_then(|b| {
            use base64::Engine as _;
            base64::engine::general_purpose::STANDARD
                .decode(b.trim())
                .ok()
        })
        .and_then(|b| String::from_utf8(b).ok());
    let challenge = |text: &str| {
        let mut r = error(StatusCode::UNAUTHORIZED, text);
        r.headers_mut().insert(
            header::WWW_AUTHENTICATE,
            HeaderValue::from_static("Basic realm=\"Mam\", charset=\"UTF-8\""),
        );
        r
    };
    let Some((name, password)) = credentials.as_deref().and_then(|c| c.split_once(':')) else {
        return Err(challenge("Hãy nhập tên đăng nhập và mật khẩu."));
    };
    // A password checked once is believed for a few minutes: Collect sends it with every
    // request, and each check is a deliberately slow hash.
    let key = auth::hash(&format!("{name}\u{0}{password}"));
    let now = crate::now_ms();
    let cached = {
        let mut seen = BELIEVED.lock().unwrap_or_else(|e| e.into_inner());
        seen.retain(|_, (_, until)| *until > now);
        seen.get(&key).map(|(u, _)| u.clone())
    };
    let user = match cached {
        Some(u) => u,
        None => match crate::accounts::login(state.store.as_ref(), name, password, now).await {
            Ok(u) => {
                let mut seen = BELIEVED.lock().unwrap_or_else(|e| e.into_inner());
                if seen.len() < 10_000 {
                    seen.insert(key, (u.clone(), now + BELIEVED_MS));
                }
                u
            }
            Err(crate::accounts::LoginError::Store(e)) => return Err(busy(&e)),
            Err(crate::accounts::LoginError::Busy) => {
                return Err(busy(&"đang có nhiều lượt đăng nhập"))
            }
            Err(e) => return Err(challenge(&format!("Không đăng nhập được: {e}"))),
        },
    };
    let scope = crate::accounts::user_scope(&user, &state.units);
    let communes = crate::accounts::communes_in(&scope, &state.units);
    let id = openrosa::account_device(state.store.as_ref(), &user.name, &communes)
        .await
        .map_err(|e| busy(&e))?;
    let device = Device {
        id,
        name: user.name.clone(),
        communes,
        revoked: false,
        last_seq: 0,
    };
    let roles = vec![openrosa::COLLABORATOR.to_owned(), user.role.clone()];
    Ok((device, public, roles))
}

fn path_part(s: &str) -> String {
    let mut out = String::new();
    for b in s.bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                out.push(b as char)
            }
            b => out.push_str(&format!("%{b:02X}")),
        }
    }
    out
}

async fn form_list(
    State(state): State<Arc<AppState>>,
    params: Option<Path<Params>>,
    Query(query): Query<HashMap<String, String>>,
    headers: HeaderMap,
) -> Response {
    let params = params.map(|p| p.0).unwrap_or_default();
    let (device, base, roles) = match caller_of(&state, &params, &headers).await {
        Ok(d) => d,
        Err(r) => return r,
    };
    let mut out = String::from(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<xforms xmlns=\"http://openrosa.org/xforms/xformsList\">\n",
    );
    for s in openrosa::all_served(state.as_ref(), &device, &roles) {
        let id = s.id.as_str();
        if query.get("formID").is_some_and(|f| f != id) {
            continue;
        }
        let name = s.form.title.as_ref().map(|t| t.vi.as_str()).unwrap_or(id);
        let url = format!("{base}/forms/{}", path_part(id));
        out.push_str(&format!(
            "  <xform>\n    <formID>{}</formID>\n    <name>{}</name>\n    <version>{}</version>\n    \
             <hash>{}</hash>\n    <downloadUrl>{url}/form.xml</downloadUrl>\n",
            esc(id),
            esc(name),
            s.form.version,
            s.md5
        ));
        if !s.lists.is_empty() {
            out.push_str(&format!("    <manifestUrl>{url}/manifest</manifestUrl>\n"));
        }
        out.push_str("  </xform>\n");
    }
    out.push_str("</xforms>\n");
    answer(StatusCode::OK, "text/xml; charset=utf-8", out)
}

async fn form_xml(
    State(state): State<Arc<AppState>>,
    params: Option<Path<Params>>,
    headers: HeaderMap,
) -> Response {
    let params = params.map(|p| p.0).unwrap_or_default();
    let (device, _, roles) = match caller_of(&state, &params, &headers).await {
        Ok(d) => d,
        Err(r) => return r,
    };
    let form = params.get("form").cloned().unwrap_or_default();
    match openrosa::served(state.as_ref(), &device, &roles, &form) {
        Some(s) => answer(StatusCode::OK, "text/xml; charset=utf-8", s.xml),
        None => not_found(&form),
    }
}

fn not_found(what: &str) -> Response {
    error(
        StatusCode::NOT_FOUND,
        &format!("Không có {what:?} trên máy chủ cho máy này."),
    )
}

fn unavailable(e: impl std::fmt::Display) -> Response {
    error(
        StatusCode::SERVICE_UNAVAILABLE,
        &format!("Máy chủ đang bận, hãy thử lại sau: {e}"),
    )
}

async fn manifest(
    State(state): State<Arc<AppState>>,
    params: Option<Path<Params>>,
    headers: HeaderMap,
) -> Response {
    let params = params.map(|p| p.0).unwrap_or_default();
    let (device, base, roles) = match caller_of(&state, &params, &headers).await {
        Ok(d) => d,
        Err(r) => return r,
    };
    let form = params.get("form").cloned().unwrap_or_default();
    let Some(s) = openrosa::served(state.as_ref(), &device, &roles, &form) else {
        return not_found(&form);
    };
    let mut out = String::from(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<manifest xmlns=\"http://openrosa.org/xforms/xformsManifest\">\n",
    );
    for list in &s.lists {
        let md5 = match openrosa::entity_list(state.as_ref(), &device, list).await {
            Ok(Some((_, md5))) => md5,
            Ok(None) => continue,
            Err(e) => return unavailable(e),
        };
        out.push_str(&format!(
            "  <mediaFile type=\"entityList\">\n    <filename>{0}.csv</filename>\n    <hash>{md5}</hash>\n    \
             <downloadUrl>{base}/forms/{1}/attachments/{2}.csv</downloadUrl>\n    \
             <integrityUrl>{base}/lists/{2}/integrity</integrityUrl>\n  </mediaFile>\n",
            esc(list),
            path_part(&form),
            path_part(list),
        ));
    }
    out.push_str("</manifest>\n");
    answer(StatusCode::OK, "text/xml; charset=utf-8", out)
}

async fn form_attachment(
    State(state): State<Arc<AppState>>,
    params: Option<Path<Params>>,
    headers: HeaderMap,
) -> Response {
    let params = params.map(|p| p.0).unwrap_or_default();
    let (device, _, roles) = match caller_of(&state, &params, &headers).await {
        Ok(d) => d,
        Err(r) => return r,
    };
    let form = params.get("form").cloned().unwrap_or_default();
    let file = params.get("file").cloned().unwrap_or_default();
    let Some(s) = openrosa::served(state.as_ref(), &device, &roles, &form) else {
        return not_found(&form);
    };
    let Some(list) = file.strip_suffix(".csv").filter(|l| s.lists.contains(*l)) else {
        return not_found(&file);
    };
    match openrosa::entity_list(state.as_ref(), &device, list).await {
        Ok(Some((csv, md5))) => {
            let mut r = answer(StatusCode::OK, "text/csv; charset=utf-8", csv);
            if let Ok(v) = HeaderValue::from_str(&format!("\"{}\"", &md5[4..])) {
                r.headers_mut().insert(header::ETAG, v);
            }
            r
        }
        Ok(None) => not_found(&file),
        Err(e) => unavailable(e),
    }
}

async fn integrity(
    State(state): State<Arc<AppState>>,
    params: Option<Path<Params>>,
    Query(query): Query<HashMap<String, String>>,
    headers: HeaderMap,
) -> Response {
    let params = params.map(|p| p.0).unwrap_or_default();
    let (device, _) = match caller(&state, &params, &headers).await {
        Ok(d) => d,
        Err(r) => return r,
    };
    let list = params.get("list").cloned().unwrap_or_default();
    if !openrosa::entity_lists(&state.forms()).contains(&list) {
        return not_found(&list);
    }
    let ids: Vec<String> = query
        .get("id")
        .map(|s| {
            s.split(',')
                .map(|i| i.trim().to_owned())
                .filter(|i| !i.is_empty())
                .collect()
        })
        .unwrap_or_default();
    let states = match openrosa::integrity(state.as_ref(), &device, &list, &ids).await {
        Ok(s) => s,
        Err(e) => return unavailable(e),
    };
    let mut out =
        String::from("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<data>\n  <entities>\n");
    for (id, gone) in states {
        out.push_str(&format!(
            "    <entity id=\"{}\">\n      <deleted>{gone}</deleted>\n    </entity>\n",
            esc(&id)
        ));
    }
    out.push_str("  </entities>\n</data>\n");
    answer(StatusCode::OK, "text/xml; charset=utf-8", out)
}

/// `HEAD /submission`: the phone asks where and how much it may send.
async fn submission_head(
    State(state): State<Arc<AppState>>,
    params: Option<Path<Params>>,
    headers: HeaderMap,
) -> Response {
    let params = params.map(|p| p.0).unwrap_or_default();
    match caller(&state, &params, &headers).await {
        Ok(_) => answer(StatusCode::NO_CONTENT, "", String::new()),
        Err(r) => r,
    }
}

async fn submission(
    State(state): State<Arc<AppState>>,
    params: Option<Path<Params>>,
    headers: HeaderMap,
    mut multipart: Multipart,
) -> Response {
    let params = params.map(|p| p.0).unwrap_or_default();
    let (device, _) = match caller(&state, &params, &headers).await {
        Ok(d) => d,
        Err(r) => return r,
    };
    let mut xml = None;
    let mut parts = Vec::new();
    let mut incomplete = false;
    loop {
        let field = match multipart.next_field().await {
            Ok(Some(f)) => f,
            Ok(None) => break,
            Err(e) => {
                return error(
                    StatusCode::BAD_REQUEST,
                    &format!("Không đọc được dữ liệu gửi lên: {e}"),
                )
            }
        };
        let name = field.name().unwrap_or("").to_owned();
        let filename = field.file_name().map(str::to_owned);
        let media_type = field.content_type().unwrap_or("").to_owned();
        let bytes = match field.bytes().await {
            Ok(b) => b,
            Err(e) => {
                return error(
                    StatusCode::BAD_REQUEST,
                    &format!("Không đọc được dữ liệu gửi lên: {e}"),
                )
            }
        };
        match (name.as_str(), filename) {
            ("xml_submission_file", _) => xml = Some(bytes),
            ("*isIncomplete*", _) => incomplete = true,
            (_, Some(filename)) => parts.push(Part {
                filename,
                media_type,
                bytes: bytes.to_vec(),
            }),
            _ => {}
        }
    }
    let Some(xml) = xml else {
        return error(
            StatusCode::BAD_REQUEST,
            "Thiếu phần xml_submission_file: phiếu không được gửi kèm.",
        );
    };
    match openrosa::submit(&state, &device, &xml, parts, incomplete).await {
        Ok(Reply::Accepted(text)) => {
            tracing::info!(device = device.id, "openrosa submission");
            message(StatusCode::CREATED, "", &text)
        }
        Ok(Reply::Refused(status, text)) => {
            tracing::info!(device = device.id, status, "openrosa submission refused");
            error(
                StatusCode::from_u16(status).unwrap_or(StatusCode::BAD_REQUEST),
                &text,
            )
        }
        Err(e) => unavailable(e),
    }
}
