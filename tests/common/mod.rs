//! Test harness: a redis-server of our own (`test_support::redis_server`, shared with the
//! benchmark member), the backends a test runs on (`backends.rs`), a test app, and a client
//! with a one-cookie jar that drives the real tower stack.
#![allow(dead_code, unreachable_pub)]

use std::time::Duration;

pub mod backends;
pub mod credentials;
pub mod logs;
pub mod record;
pub use test_support::redis_server::*;
pub use test_support::topology;

use axum::{
    body::Body,
    extract::Path,
    http::{header, Method, Request, StatusCode},
    routing::get,
    Router,
};
use http_body_util::BodyExt;
use tower::ServiceExt;
use tower_redis_session::{Session, SessionError, SessionStore, SessionStoreBuilder};

pub const KEY: [u8; 32] = [7; 32];

pub fn builder() -> SessionStoreBuilder {
    SessionStore::builder().signing_keys([KEY])
}

/// The app the tests drive: one route per session operation.
pub fn app(store: &SessionStore) -> Router {
    app_with(store.layer())
}

/// The header the API-client tests carry the token in.
pub const TOKEN_HEADER: &str = "x-auth-token";

/// [`app`] with the token in the `x-auth-token` header instead of the cookie, behind a client
/// that keeps it as the test [`Browser`] keeps a cookie: the browser's cookie goes in as the
/// header, and the header that comes back is shown to the test as a `Set-Cookie` (an empty
/// one as a removal). The session layer never sees a cookie, and must never send one.
pub fn header_app(store: &SessionStore) -> Router {
    let name = axum::http::HeaderName::from_static(TOKEN_HEADER);
    app_with(store.layer().token_header(name)).layer(axum::middleware::from_fn(
        |mut req: axum::extract::Request, next: axum::middleware::Next| async move {
            if let Some(cookie) = req.headers_mut().remove(header::COOKIE) {
                let value = cookie.to_str().ok().and_then(|c| c.split_once('='));
                if let Some(value) = value.and_then(|(_, v)| v.parse().ok()) {
                    req.headers_mut().insert(TOKEN_HEADER, value);
                }
            }
            let mut res = next.run(req).await;
            assert!(
                res.headers().get(header::SET_COOKIE).is_none(),
                "a header-token layer set a cookie"
            );
            if let Some(token) = res.headers_mut().remove(TOKEN_HEADER) {
                let cookie = match token.to_str().expect("ascii token") {
                    "" => "session=; Max-Age=0".to_owned(),
                    token => format!("session={token}"),
                };
                res.headers_mut()
                    .insert(header::SET_COOKIE, cookie.parse().expect("header"));
            }
            res
        },
    ))
}

fn app_with(layer: tower_redis_session::SessionLayer) -> Router {
    Router::new()
        .route("/get/{k}", get(read))
        .route("/set/{k}/{v}", get(write).post(write))
        .route("/set-int/{k}/{v}", get(write_int))
        .route("/set-big/{k}/{n}", get(write_big))
        .route("/slow-set/{ms}/{k}/{v}", get(slow_write))
        .route("/remove/{k}", get(remove))
        .route("/clear", get(clear))
        .route("/incr/{k}/{n}", get(incr))
        .route("/regenerate", get(regenerate))
        .route("/login/{user}", get(login))
        .route("/destroy", get(destroy))
        .route("/untouched", get(|| async { "no session here" }))
        .route(
            "/early",
            get(|_session: Session| async { "took the session, never used it" }),
        )
        .route("/keys", get(keys))
        .route("/slow-get/{ms}/{k}", get(slow_read))
        .route(
            "/read-then-slow-set/{ms}/{k}/{v}",
            get(read_then_slow_write).post(read_then_slow_write),
        )
        .route("/fail-set/{k}/{v}", get(failing_write))
        .route("/take/{k}", get(take))
        .route("/slow-take/{ms}/{k}", get(slow_take))
        .route("/persistent/{on}", get(persistent))
        .route("/idle/{ms}", get(idle))
        .route("/expires", get(expires))
        .route("/modified/{k}/{v}", get(modified))
        .layer(layer)
}

async fn read(session: Session, Path(k): Path<String>) -> Result<String, SessionError> {
    Ok(session
        .get::<String>(&k)
        .await?
        .unwrap_or_else(|| "none".to_string()))
}

async fn write(
    session: Session,
    Path((k, v)): Path<(String, String)>,
) -> Result<&'static str, SessionError> {
    session.insert(&k, &v)?;
    Ok("ok")
}

/// Sets `k` to a string of `n` bytes.
async fn write_big(
    session: Session,
    Path((k, n)): Path<(String, usize)>,
) -> Result<&'static str, SessionError> {
    session.insert(&k, &"x".repeat(n))?;
    Ok("ok")
}

async fn write_int(
    session: Session,
    Path((k, v)): Path<(String, i64)>,
) -> Result<&'static str, SessionError> {
    session.insert(&k, &v)?;
    Ok("ok")
}

async fn slow_write(
    session: Session,
    Path((ms, k, v)): Path<(u64, String, String)>,
) -> Result<&'static str, SessionError> {
    tokio::time::sleep(Duration::from_millis(ms)).await;
    session.insert(&k, &v)?;
    Ok("ok")
}

/// Waits, then reads: the load happens after the wait.
async fn slow_read(
    session: Session,
    Path((ms, k)): Path<(u64, String)>,
) -> Result<String, SessionError> {
    tokio::time::sleep(Duration::from_millis(ms)).await;
    Ok(session
        .get::<String>(&k)
        .await?
        .unwrap_or_else(|| "none".to_string()))
}

/// Loads first, then waits, then writes.
async fn read_then_slow_write(
    session: Session,
    Path((ms, k, v)): Path<(u64, String, String)>,
) -> Result<String, SessionError> {
    let seen = session.get::<String>(&k).await?;
    tokio::time::sleep(Duration::from_millis(ms)).await;
    session.insert(&k, &v)?;
    Ok(seen.unwrap_or_else(|| "none".to_string()))
}

/// Stages a change, then fails.
async fn failing_write(
    session: Session,
    Path((k, v)): Path<(String, String)>,
) -> Result<&'static str, (StatusCode, &'static str)> {
    session
        .insert(&k, &v)
        .map_err(|_| (StatusCode::BAD_REQUEST, "insert"))?;
    Err((StatusCode::INTERNAL_SERVER_ERROR, "handler failed"))
}

async fn take(session: Session, Path(k): Path<String>) -> Result<String, SessionError> {
    Ok(session
        .take::<String>(&k)
        .await?
        .unwrap_or_else(|| "none".to_string()))
}

/// Reads the session (so that it is loaded), waits, then takes `k`: requests run this way at
/// once have all read the value before any takes it.
async fn slow_take(
    session: Session,
    Path((ms, k)): Path<(u64, String)>,
) -> Result<String, SessionError> {
    session.get::<String>(&k).await?;
    tokio::time::sleep(Duration::from_millis(ms)).await;
    take(session, Path(k)).await
}

async fn persistent(session: Session, Path(on): Path<bool>) -> &'static str {
    session.set_persistent(on);
    "ok"
}

async fn idle(session: Session, Path(ms): Path<u64>) -> Result<&'static str, SessionError> {
    session.set_idle_timeout(Duration::from_millis(ms))?;
    Ok("ok")
}

/// Milliseconds until the session expires, or "none".
async fn expires(session: Session) -> String {
    match session.expires_at() {
        Some(at) => at
            .duration_since(std::time::SystemTime::now())
            .unwrap_or_default()
            .as_millis()
            .to_string(),
        None => "none".into(),
    }
}

/// Inserts, and says whether the session counts as modified before and after.
async fn modified(
    session: Session,
    Path((k, v)): Path<(String, String)>,
) -> Result<String, SessionError> {
    let before = session.is_modified();
    session.insert(&k, &v)?;
    Ok(format!("{before} {}", session.is_modified()))
}

async fn remove(session: Session, Path(k): Path<String>) -> Result<&'static str, SessionError> {
    session.remove(&k)?;
    Ok("ok")
}

async fn clear(session: Session) -> Result<&'static str, SessionError> {
    session.clear()?;
    Ok("ok")
}

async fn incr(session: Session, Path((k, n)): Path<(String, i64)>) -> Result<String, SessionError> {
    Ok(session.incr(&k, n).await?.to_string())
}

async fn regenerate(session: Session) -> Result<&'static str, SessionError> {
    session.regenerate().await?;
    Ok("ok")
}

async fn login(session: Session, Path(user): Path<String>) -> Result<&'static str, SessionError> {
    session.login(&user).await?;
    Ok("ok")
}

async fn destroy(session: Session) -> Result<&'static str, SessionError> {
    session.destroy().await?;
    Ok("ok")
}

/// The session's keys, sorted, joined by commas (`/keys`).
pub async fn keys(session: Session) -> Result<String, SessionError> {
    let mut keys = session.keys().await?;
    keys.sort();
    Ok(keys.join(","))
}

/// A response, reduced to what the tests look at.
#[derive(Debug)]
pub struct Reply {
    pub status: StatusCode,
    pub headers: header::HeaderMap,
    pub set_cookie: Vec<String>,
    pub body: String,
}

impl Reply {
    /// The `Max-Age` of the first Set-Cookie, if it has one.
    pub fn max_age(&self) -> Option<i64> {
        self.set_cookie
            .first()?
            .split("; ")
            .find_map(|a| a.strip_prefix("Max-Age="))?
            .parse()
            .ok()
    }

    /// The `name=value` part of the first Set-Cookie.
    pub fn cookie_pair(&self) -> Option<String> {
        self.set_cookie
            .first()
            .and_then(|c| c.split(';').next())
            .map(str::to_string)
    }
}

/// Sends one request through the app's tower stack.
pub async fn send(app: &Router, path: &str, cookie: Option<&str>) -> Reply {
    send_bytes(app, path, cookie.map(str::as_bytes)).await
}

/// As [`send`], with a Cookie header of raw bytes; bytes that cannot be a header value are
/// not sent.
pub async fn send_bytes(app: &Router, path: &str, cookie: Option<&[u8]>) -> Reply {
    send_method(app, Method::GET, path, cookie).await
}

/// As [`send_bytes`], with any method.
pub async fn send_method(app: &Router, method: Method, path: &str, cookie: Option<&[u8]>) -> Reply {
    let mut req = Request::builder().method(method).uri(path);
    if let Some(value) = cookie.and_then(|c| header::HeaderValue::from_bytes(c).ok()) {
        req = req.header(header::COOKIE, value);
    }
    let res = app
        .clone()
        .oneshot(req.body(Body::empty()).expect("request"))
        .await
        .expect("infallible");
    let status = res.status();
    let set_cookie = res
        .headers()
        .get_all(header::SET_COOKIE)
        .iter()
        .map(|v| v.to_str().expect("ascii cookie").to_string())
        .collect();
    let headers = res.headers().clone();
    let body = res.into_body().collect().await.expect("body").to_bytes();
    Reply {
        status,
        headers,
        set_cookie,
        body: String::from_utf8_lossy(&body).into_owned(),
    }
}

/// A browser with one cookie.
#[derive(Clone)]
pub struct Browser {
    pub app: Router,
    pub cookie: Option<String>,
}

impl Browser {
    pub fn new(app: Router) -> Self {
        Self { app, cookie: None }
    }

    pub async fn get(&mut self, path: &str) -> Reply {
        let reply = send(&self.app, path, self.cookie.as_deref()).await;
        for c in &reply.set_cookie {
            if c.contains("Max-Age=0") {
                self.cookie = None;
            } else {
                self.cookie = c.split(';').next().map(str::to_string);
            }
        }
        reply
    }

    /// POSTs a urlencoded form, keeping the cookie it sets.
    pub async fn post_form(&mut self, path: &str, form: &str) -> Reply {
        let mut req =
            Request::post(path).header(header::CONTENT_TYPE, "application/x-www-form-urlencoded");
        if let Some(c) = &self.cookie {
            req = req.header(header::COOKIE, c);
        }
        let res = self
            .app
            .clone()
            .oneshot(req.body(Body::from(form.to_owned())).expect("request"))
            .await
            .expect("infallible");
        let status = res.status();
        if let Some(c) = res.headers().get(header::SET_COOKIE) {
            self.cookie = c
                .to_str()
                .ok()
                .and_then(|c| c.split(';').next())
                .map(str::to_string);
        }
        Reply {
            status,
            headers: res.headers().clone(),
            set_cookie: Vec::new(),
            body: String::new(),
        }
    }

    /// Sends without updating the jar.
    pub async fn peek(&self, path: &str) -> Reply {
        send(&self.app, path, self.cookie.as_deref()).await
    }
}

/// Joins the client tasks of a load test by `deadline`, when each must be done: a task that
/// panicked, or one still running then (a hung client), fails the test. Their results, in the
/// order they finished.
pub async fn join_by<T: 'static>(
    mut tasks: tokio::task::JoinSet<T>,
    deadline: std::time::Instant,
) -> Vec<T> {
    let mut done = Vec::new();
    while let Ok(Some(result)) = tokio::time::timeout(
        deadline.saturating_duration_since(std::time::Instant::now()),
        tasks.join_next(),
    )
    .await
    {
        done.push(result.expect("client task panicked"));
    }
    assert!(
        tasks.is_empty(),
        "{} client tasks still hanging past the deadline",
        tasks.len()
    );
    done
}
