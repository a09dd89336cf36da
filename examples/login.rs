//! The app of the classic Flask + Redis server-side session tutorial, with axum.
//!
//! ```sh
//! cargo run --example login                  # in-process store
//! REDIS_URL=redis://127.0.0.1:6379 cargo run --example login
//! REDIS_CLUSTER_NODES=redis://10.0.0.1:6379,redis://10.0.0.2:6379 cargo run --example login --features cluster
//! REDIS_SENTINELS=redis://10.0.0.1:26379,redis://10.0.0.2:26379 REDIS_SENTINEL_SERVICE=mymaster cargo run --example login
//! REDIS_URL=rediss://cache.example:6379 REDIS_CA_FILE=ca.pem cargo run --example login --features tls
//! ```
//!
//! Environment: `PORT` (default 3000); the deployment, read by
//! `SessionStoreBuilder::redis_from_env`: `REDIS_URL` (standalone, `rediss://` for TLS),
//! `REDIS_CLUSTER_NODES` (comma-separated URLs), `REDIS_SENTINELS` (comma-separated URLs) with
//! `REDIS_SENTINEL_SERVICE`, `REDIS_CA_FILE` (a private CA); the in-process store when none is
//! set. `SESSION_IDLE_SECS` (default 1800), `SESSION_COOKIE_SECURE` (default true; set it to
//! `false` for plain-http local use), `SESSION_KEY` (signing key, 32+ bytes; a random one per
//! start when unset).

use std::time::Duration;

use axum::{
    extract::{Form, Path, State},
    http::{header::USER_AGENT, HeaderMap, HeaderName, StatusCode},
    response::{Html, IntoResponse, Redirect, Response},
    routing::{get, post},
    Router,
};
use serde::Deserialize;
use tower_redis_session::{Session, SessionError, SessionStore};

/// The routes, with the session layer: pages for browsers (the cookie), and an API for
/// clients that keep no cookies (the token in `x-auth-token`).
pub fn app(store: &SessionStore) -> Router {
    let pages = Router::new()
        .route("/", get(index))
        .route("/login", get(login_form).post(login))
        // POST only: a link or an image on another site must not log users out.
        .route("/logout", post(logout))
        .route("/sessions", get(sessions))
        .route("/sessions/end-others", post(end_others))
        .route("/sessions/{id}/end", post(end_one))
        .layer(store.layer());
    // Same sessions, same store: a token from `POST /api/login` comes back in the
    // `x-auth-token` response header, and goes with each request in the same header.
    let api = Router::new()
        .route("/api/login", post(api_login))
        .route("/api/me", get(api_me))
        .route("/api/logout", post(api_logout))
        .layer(
            store
                .layer()
                .token_header(HeaderName::from_static("x-auth-token")),
        );
    pages.merge(api).with_state(store.clone())
}

/// `POST /api/login` with `username=...`: the new token is in the `x-auth-token` header.
async fn api_login(session: Session, Form(form): Form<Login>) -> Result<Response, SessionError> {
    let name = form.username.trim();
    if name.is_empty() || name.len() > 64 {
        return Ok((StatusCode::BAD_REQUEST, "username: 1 to 64 characters").into_response());
    }
    session.login(name).await?;
    session.insert("username", name)?;
    session.insert("device", "API client")?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

/// `GET /api/me`: who the token belongs to, and how many calls it made.
async fn api_me(session: Session) -> Result<Response, SessionError> {
    let Some(name) = session.get::<String>("username").await? else {
        return Ok((StatusCode::UNAUTHORIZED, "log in at POST /api/login").into_response());
    };
    let calls = session.incr("api_calls", 1).await?;
    Ok(format!("{{\"user\":{:?},\"calls\":{calls}}}", name).into_response())
}

/// `POST /api/logout`: the token is dead; the response's `x-auth-token` is empty.
async fn api_logout(session: Session) -> Result<StatusCode, SessionError> {
    session.logout().await?;
    Ok(StatusCode::NO_CONTENT)
}

async fn index(session: Session) -> Result<Html<String>, SessionError> {
    let anonymous =
        || Html("<p>You are not logged in</p><p><a href=\"/login\">Log in</a></p>".to_owned());
    // No session cookie: nothing to ask Redis.
    if session.id().is_none() {
        return Ok(anonymous());
    }
    // One round trip: `incr` on a session not loaded yet loads it with the counter, so the
    // name below is read from memory.
    let visits = match session.incr("visits", 1).await {
        Ok(visits) => visits,
        // Logged out (or logged in elsewhere from this cookie): the old id is dead.
        Err(SessionError::Ended) => return Ok(anonymous()),
        Err(e) => return Err(e),
    };
    let Some(user) = session.get::<String>("username").await? else {
        // The session had expired and the counter started a new one: nobody is logged in.
        session.destroy().await?;
        return Ok(anonymous());
    };
    Ok(Html(format!(
        "<p>Logged in as {}</p><p>Visits: {visits}</p>\
         <form method=\"post\" action=\"/logout\"><button type=\"submit\">Log out</button></form>\
         <p><a href=\"/sessions\">Your sessions</a></p>",
        escape(&user)
    )))
}

async fn login_form() -> Html<&'static str> {
    Html(
        "<form method=\"post\" action=\"/login\">\
         <label>Username <input type=\"text\" name=\"username\"></label>\
         <button type=\"submit\">Log in</button></form>",
    )
}

#[derive(Deserialize)]
struct Login {
    username: String,
}

async fn login(
    session: Session,
    headers: HeaderMap,
    Form(form): Form<Login>,
) -> Result<Response, SessionError> {
    let name = form.username.trim();
    if name.is_empty() || name.len() > 64 {
        return Ok((StatusCode::BAD_REQUEST, "username: 1 to 64 characters").into_response());
    }
    // A new secret (an id planted before login is worthless), the session joins the user's
    // sessions, and logging in as someone else starts from that user's state (the visit
    // counter belongs to the user), never from the previous user's.
    session.login(name).await?;
    session.insert("username", name)?;
    let device = headers
        .get(USER_AGENT)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("unknown device");
    session.insert("device", &device.chars().take(120).collect::<String>())?;
    Ok(Redirect::to("/").into_response())
}

async fn logout(session: Session) -> Result<Redirect, SessionError> {
    session.logout().await?;
    Ok(Redirect::to("/"))
}

/// "Your sessions": every device the user is logged in on, with a button to log out each,
/// and one for all but this one.
async fn sessions(
    session: Session,
    State(store): State<SessionStore>,
) -> Result<Response, SessionError> {
    let Some(user) = session.user_id().await? else {
        return Ok(Redirect::to("/login").into_response());
    };
    let current = session.id();
    let mut rows = String::new();
    for s in store.user_sessions(&user, &["device"]).await? {
        let device = s
            .fields
            .get("device")
            .and_then(|d| d.as_str())
            .unwrap_or("?");
        let ago = s.last_seen.elapsed().map_or(0, |d| d.as_secs());
        let this = if Some(s.id) == current {
            " (this device)"
        } else {
            ""
        };
        rows.push_str(&format!(
            "<li>{}{this}, last seen {ago} s ago \
             <form method=\"post\" action=\"/sessions/{}/end\" style=\"display:inline\">\
             <button type=\"submit\">Log out this device</button></form></li>",
            escape(device),
            s.id
        ));
    }
    Ok(Html(format!(
        "<h1>Your sessions</h1><ul>{rows}</ul>\
         <form method=\"post\" action=\"/sessions/end-others\">\
         <button type=\"submit\">Log out everywhere else</button></form>\
         <p><a href=\"/\">Back</a></p>"
    ))
    .into_response())
}

async fn end_one(
    session: Session,
    State(store): State<SessionStore>,
    Path(id): Path<String>,
) -> Result<Redirect, SessionError> {
    let (Some(user), Ok(id)) = (session.user_id().await?, uuid::Uuid::parse_str(&id)) else {
        return Ok(Redirect::to("/sessions"));
    };
    store.end_session(&user, id).await?;
    Ok(Redirect::to("/sessions"))
}

async fn end_others(
    session: Session,
    State(store): State<SessionStore>,
) -> Result<Redirect, SessionError> {
    if let Some(user) = session.user_id().await? {
        store.end_user_sessions(&user, session.id()).await?;
    }
    Ok(Redirect::to("/sessions"))
}

fn escape(text: &str) -> String {
    text.chars()
        .map(|c| match c {
            '<' => "&lt;".into(),
            '>' => "&gt;".into(),
            '&' => "&amp;".into(),
            '"' => "&quot;".into(),
            '\'' => "&#39;".into(),
            c => c.to_string(),
        })
        .collect()
}

/// The URL without its password, fit for a log.
pub fn redact(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme), Some(at)) if at > scheme => {
            let userinfo = &url[scheme + 3..at];
            let user = userinfo.split(':').next().unwrap_or_default();
            format!("{}{user}:***{}", &url[..scheme + 3], &url[at..])
        }
        _ => url.to_owned(),
    }
}

/// Builds the store from the environment, as described at the top of this file.
pub async fn store_from_env() -> Result<SessionStore, Box<dyn std::error::Error>> {
    let idle = match std::env::var("SESSION_IDLE_SECS") {
        Ok(v) => v
            .parse::<u64>()
            .map_err(|_| format!("SESSION_IDLE_SECS must be a number of seconds, not {v:?}"))?,
        Err(_) => 1800,
    };
    let secure = match std::env::var("SESSION_COOKIE_SECURE") {
        Ok(v) => v
            .parse::<bool>()
            .map_err(|_| format!("SESSION_COOKIE_SECURE must be true or false, not {v:?}"))?,
        Err(_) => true,
    };
    let key = match std::env::var("SESSION_KEY") {
        Ok(key) => key.into_bytes(),
        Err(_) => {
            let mut key = vec![0u8; 32];
            getrandom::fill(&mut key).map_err(|e| format!("no randomness: {e}"))?;
            eprintln!("SESSION_KEY not set: using a random signing key (sessions end on restart)");
            key
        }
    };
    let builder = SessionStore::builder()
        .signing_keys([key])
        .idle_timeout(Duration::from_secs(idle))
        .absolute_timeout(Duration::from_secs(idle.max(12 * 3600)))
        .cookie_secure(secure);
    let deployment = ["REDIS_CLUSTER_NODES", "REDIS_SENTINELS", "REDIS_URL"]
        .into_iter()
        .find_map(|var| Some((var, std::env::var(var).ok()?)));
    let builder = match deployment {
        Some((var, value)) => {
            let shown: Vec<String> = value.split(',').map(|u| redact(u.trim())).collect();
            eprintln!("sessions: Redis from {var} ({})", shown.join(", "));
            builder.redis_from_env()
        }
        None => {
            eprintln!("sessions: in-process memory store (set REDIS_URL to use Redis)");
            builder.memory()
        }
    };
    Ok(builder.build().await?)
}

#[allow(dead_code)] // the tests include this file for `app` only
#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let store = store_from_env().await?;
    let port = std::env::var("PORT").unwrap_or_else(|_| "3000".into());
    let listener = tokio::net::TcpListener::bind(format!("127.0.0.1:{port}")).await?;
    eprintln!("listening on http://{}", listener.local_addr()?);
    axum::serve(listener, app(&store)).await?;
    Ok(())
}
