//! The layer over real HTTP and from plain tower: cookies, signing keys, the example app,
//! Redis outages and bad configuration.

mod common;

use std::convert::Infallible;
use std::time::{Duration, Instant};

use axum::http::StatusCode;
use common::{app, builder, send, Browser, RedisServer, KEY};
use http_body_util::Full;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tower::{Layer, ServiceExt};
use tower_redis_session::{ConfigError, Session, SessionError, SessionStore};

#[path = "../examples/login.rs"]
#[allow(dead_code)]
mod example;

/// One HTTP/1.1 request over a real socket. Returns status, Set-Cookie headers, Location
/// and body.
async fn http(
    addr: std::net::SocketAddr,
    method: &str,
    path: &str,
    cookie: Option<&str>,
    form: Option<&str>,
) -> (u16, Vec<String>, Option<String>, String) {
    let cookie = cookie.map(|c| ("Cookie", c));
    let (status, headers, body) = raw_http(addr, method, path, cookie.as_slice(), form).await;
    let mut cookies = Vec::new();
    let mut location = None;
    for (name, value) in headers {
        match name.as_str() {
            "set-cookie" => cookies.push(value),
            "location" => location = Some(value),
            _ => {}
        }
    }
    (status, cookies, location, body)
}

/// One HTTP/1.1 request over a real socket, with these headers. Returns status, headers
/// (names in lower case) and body.
async fn raw_http(
    addr: std::net::SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    form: Option<&str>,
) -> (u16, Vec<(String, String)>, String) {
    let mut stream = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let mut req = format!("{method} {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n");
    for (name, value) in headers {
        req.push_str(&format!("{name}: {value}\r\n"));
    }
    let body = form.unwrap_or("");
    if form.is_some() {
        req.push_str("Content-Type: application/x-www-form-urlencoded\r\n");
    }
    req.push_str(&format!("Content-Length: {}\r\n\r\n{body}", body.len()));
    stream.write_all(req.as_bytes()).await.expect("write");
    let mut raw = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), stream.read_to_end(&mut raw))
        .await
        .expect("response in time")
        .expect("read");
    let text = String::from_utf8_lossy(&raw).into_owned();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let mut lines = head.lines();
    let status = lines
        .next()
        .and_then(|l| l.split(' ').nth(1))
        .and_then(|s| s.parse().ok())
        .expect("status line");
    let headers = lines
        .filter_map(|line| line.split_once(": "))
        .map(|(name, value)| (name.to_ascii_lowercase(), value.to_string()))
        .collect();
    (status, headers, body.to_string())
}

async fn serve(router: axum::Router) -> std::net::SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move { axum::serve(listener, router).await });
    addr
}

fn pair(set_cookie: &str) -> String {
    set_cookie.split(';').next().unwrap_or("").to_string()
}

async fn example_flow(store: SessionStore) {
    let addr = serve(example::app(&store)).await;
    let (status, cookies, _, body) = http(addr, "GET", "/", None, None).await;
    assert_eq!(status, 200);
    assert!(body.contains("You are not logged in"), "{body}");
    assert!(cookies.is_empty(), "anonymous visits create no session");

    let (status, _, _, body) = http(addr, "GET", "/login", None, None).await;
    assert_eq!(status, 200);
    assert!(body.contains("name=\"username\""));

    let (status, cookies, location, _) =
        http(addr, "POST", "/login", None, Some("username=alice%3Cb%3E")).await;
    assert_eq!(status, 303);
    assert_eq!(location.as_deref(), Some("/"));
    let cookie = pair(&cookies[0]);

    for visit in 1..=3 {
        let (status, _, _, body) = http(addr, "GET", "/", Some(&cookie), None).await;
        assert_eq!(status, 200);
        assert!(body.contains("Logged in as alice&lt;b&gt;"), "{body}");
        assert!(body.contains(&format!("Visits: {visit}")), "{body}");
    }

    // Logging in again as the same user keeps that user's state, under a new id.
    let (_, cookies, _, _) = http(
        addr,
        "POST",
        "/login",
        Some(&cookie),
        Some("username=alice%3Cb%3E"),
    )
    .await;
    let cookie = pair(&cookies[0]);
    let (_, _, _, body) = http(addr, "GET", "/", Some(&cookie), None).await;
    assert!(body.contains("Visits: 4"), "{body}");

    // Logging in as someone else regenerates the id (the old cookie dies) and starts from
    // that user's state, never the previous user's.
    let (_, cookies, _, _) =
        http(addr, "POST", "/login", Some(&cookie), Some("username=bob")).await;
    let second = pair(&cookies[0]);
    assert_ne!(second, cookie);
    let (_, _, _, body) = http(addr, "GET", "/", Some(&cookie), None).await;
    assert!(
        body.contains("You are not logged in"),
        "old id is dead: {body}"
    );
    let (_, _, _, body) = http(addr, "GET", "/", Some(&second), None).await;
    assert!(
        body.contains("Logged in as bob") && body.contains("Visits: 1"),
        "{body}"
    );
    assert!(
        body.contains("<form method=\"post\" action=\"/logout\">"),
        "{body}"
    );

    // Logout is a POST (the page's button); a GET (a link or an image on another site)
    // logs nobody out.
    let (status, cookies, _, _) = http(addr, "GET", "/logout", Some(&second), None).await;
    assert_eq!(status, 405);
    assert!(cookies.is_empty());
    let (_, _, _, body) = http(addr, "GET", "/", Some(&second), None).await;
    assert!(body.contains("Logged in as bob"), "{body}");
    let (status, cookies, location, _) = http(addr, "POST", "/logout", Some(&second), None).await;
    assert_eq!(status, 303);
    assert_eq!(location.as_deref(), Some("/"));
    assert!(cookies[0].contains("Max-Age=0"));
    let (_, _, _, body) = http(addr, "GET", "/", Some(&second), None).await;
    assert!(body.contains("You are not logged in"), "{body}");

    let (status, _, _, _) = http(addr, "POST", "/login", None, Some("username=")).await;
    assert_eq!(status, 400);

    // "Your sessions": carol on two devices; one logs out the other.
    let login = |device: usize| async move {
        let (_, cookies, _, _) = http(addr, "POST", "/login", None, Some("username=carol")).await;
        (device, pair(&cookies[0]))
    };
    let ((_, first), (_, second)) = (login(1).await, login(2).await);
    let (status, _, _, page) = http(addr, "GET", "/sessions", Some(&first), None).await;
    assert_eq!(status, 200);
    assert_eq!(page.matches("<li>").count(), 2, "{page}");
    assert_eq!(page.matches("(this device)").count(), 1, "{page}");
    assert!(page.contains("action=\"/sessions/end-others\""), "{page}");
    let (status, _, location, _) =
        http(addr, "POST", "/sessions/end-others", Some(&first), Some("")).await;
    assert_eq!((status, location.as_deref()), (303, Some("/sessions")));
    let (_, _, _, body) = http(addr, "GET", "/", Some(&second), None).await;
    assert!(
        body.contains("You are not logged in"),
        "the other device: {body}"
    );
    let (_, _, _, page) = http(addr, "GET", "/sessions", Some(&first), None).await;
    assert_eq!(page.matches("<li>").count(), 1, "{page}");
    // "Log out this device" on itself.
    let id = page
        .split("/sessions/")
        .nth(1)
        .and_then(|rest| rest.split('/').next())
        .expect("a session id in the page")
        .to_string();
    http(
        addr,
        "POST",
        &format!("/sessions/{id}/end"),
        Some(&first),
        Some(""),
    )
    .await;
    let (_, _, location, _) = http(addr, "GET", "/sessions", Some(&first), None).await;
    assert_eq!(location.as_deref(), Some("/login"), "logged out");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn example_app_over_http_with_redis() {
    let redis = RedisServer::start();
    let store = builder().redis_url(redis.url()).build().await.unwrap();
    example_flow(store).await;
    assert!(redis.sessions().is_empty(), "logout left no session behind");
}

/// The example's API for clients without cookies, over real HTTP: the token comes back in
/// `x-auth-token`, goes with each call in the same header, and an ended session empties it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn example_api_over_http_with_a_header_token() {
    let redis = RedisServer::start();
    let store = builder().redis_url(redis.url()).build().await.unwrap();
    let addr = serve(example::app(&store)).await;
    let token_of = |headers: &[(String, String)]| {
        assert!(
            headers.iter().all(|(n, _)| n != "set-cookie"),
            "{headers:?}"
        );
        headers
            .iter()
            .find(|(n, _)| n == "x-auth-token")
            .map(|(_, v)| v.clone())
    };
    let (status, _, _) = raw_http(addr, "GET", "/api/me", &[], None).await;
    assert_eq!(status, 401);
    let form = Some("username=alice");
    let (status, headers, _) = raw_http(addr, "POST", "/api/login", &[], form).await;
    assert_eq!(status, 204);
    let token = token_of(&headers).expect("a token");
    let auth = [("x-auth-token", token.as_str())];
    for calls in 1..=2 {
        let (status, headers, body) = raw_http(addr, "GET", "/api/me", &auth, None).await;
        assert_eq!(
            (status, body),
            (200, format!("{{\"user\":\"alice\",\"calls\":{calls}}}"))
        );
        assert_eq!(token_of(&headers), None);
    }
    let listed = store.user_sessions("alice", &["device"]).await.unwrap();
    assert_eq!(listed.len(), 1, "an API login is one of alice's sessions");
    let (status, headers, _) = raw_http(addr, "POST", "/api/logout", &auth, None).await;
    assert_eq!((status, token_of(&headers).as_deref()), (204, Some("")));
    let (status, _, _) = raw_http(addr, "GET", "/api/me", &auth, None).await;
    assert_eq!(status, 401);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn example_app_over_http_in_memory() {
    example_flow(builder().memory().build().await.unwrap()).await;
}

#[tokio::test]
async fn cookie_defaults_follow_owasp_and_host_prefix_works() {
    let store = builder()
        .memory()
        .cookie_name("__Host-sid")
        .build()
        .await
        .unwrap();
    let mut b = Browser::new(app(&store));
    let r = b.get("/set/a/1").await;
    let c = &r.set_cookie[0];
    for attr in [
        "__Host-sid=",
        "HttpOnly",
        "Secure",
        "SameSite=Lax",
        "Path=/",
    ] {
        assert!(c.contains(attr), "{c} lacks {attr}");
    }
    assert!(!c.contains("Max-Age") && !c.contains("Domain"), "{c}");
    // A 256-bit token (43 base64url chars), the creation time, the session's own idle
    // timeout and persistent expiry (empty: the defaults), the public id (22 chars), the
    // user (empty: not logged in), a 256-bit tag (43 chars).
    let value = pair(c).split_once('=').unwrap().1.to_string();
    let parts: Vec<&str> = value.split('.').collect();
    assert_eq!(parts.len(), 7, "{value}");
    assert_eq!(
        (parts[0].len(), parts[4].len(), parts[6].len()),
        (43, 22, 43)
    );
    assert!(parts[1].parse::<i64>().is_ok());
    assert_eq!((parts[2], parts[3], parts[5]), ("", "", ""));
    assert_eq!(b.get("/get/a").await.body, "1");
}

#[tokio::test]
async fn raw_tokens_never_reach_redis() {
    let redis = RedisServer::start();
    let store = builder().redis_url(redis.url()).build().await.unwrap();
    let mut b = Browser::new(app(&store));
    let mut tokens = Vec::new();
    for i in 0..5 {
        let mut fresh = Browser::new(b.app.clone());
        fresh.get(&format!("/set/k/{i}")).await;
        fresh.get("/regenerate").await;
        let value = fresh.cookie.clone().unwrap();
        tokens.push(value.split_once('=').unwrap().1[..43].to_string());
        b = fresh;
    }
    let mut dump = String::new();
    for key in redis.keys() {
        dump.push_str(&key);
        let fields: Vec<String> = redis.cmd(&["HGETALL", &key]);
        dump.push_str(&fields.join(" "));
    }
    assert!(!dump.is_empty());
    for t in &tokens {
        assert!(!dump.contains(t.as_str()), "token found in Redis");
    }
}

#[tokio::test]
async fn signing_keys_rotate() {
    let redis = RedisServer::start();
    let (old, new) = ([1u8; 32], [2u8; 32]);
    let store = |keys: Vec<[u8; 32]>| {
        SessionStore::builder()
            .redis_url(redis.url())
            .signing_keys(keys)
            .build()
    };
    let before = store(vec![old]).await.unwrap();
    let during = store(vec![new, old]).await.unwrap();
    let after = store(vec![new]).await.unwrap();

    let mut b = Browser::new(app(&before));
    b.get("/set/user/alice").await;
    let old_cookie = b.cookie.clone().unwrap();

    // Verified by the older key: accepted and re-issued, same session, new signature.
    let r = send(&app(&during), "/get/user", Some(&old_cookie)).await;
    assert_eq!(r.body, "alice");
    let reissued = r.cookie_pair().expect("re-issued");
    assert_ne!(reissued, old_cookie);
    let token_and_age = |c: &str| c.rsplit_once('.').map(|(head, _)| head.to_string());
    assert_eq!(
        token_and_age(&reissued),
        token_and_age(&old_cookie),
        "same token"
    );
    // Not on a route that never reads the session: without asking the store it cannot know
    // the session still lives (a newer cookie may have replaced it in the browser).
    let r = send(&app(&during), "/untouched", Some(&old_cookie)).await;
    assert!(r.set_cookie.is_empty(), "{:?}", r.set_cookie);

    // Once the old key is removed, the old cookie is worthless; the new one works.
    let r = send(&app(&after), "/get/user", Some(&old_cookie)).await;
    assert_eq!(r.body, "none");
    let r = send(&app(&after), "/get/user", Some(&reissued)).await;
    assert_eq!(r.body, "alice");
    assert!(r.set_cookie.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_outage_gives_fast_503_and_recovers() {
    let mut redis = RedisServer::start();
    let store = builder()
        .redis_url(redis.url())
        .command_timeout(Duration::from_millis(500))
        .connect_timeout(Duration::from_millis(500))
        .build()
        .await
        .unwrap();
    let mut b = Browser::new(app(&store));
    b.get("/set/user/alice").await;

    // The handler succeeded, the save failed: a retry is invited for an idempotent request
    // only, never for a POST. Both load the session, then Redis dies before their save.
    let cookie = b.cookie.clone().unwrap_or_default();
    let request = |method: http::Method| {
        let (app, cookie) = (b.app.clone(), cookie.clone());
        tokio::spawn(async move {
            let path = "/read-then-slow-set/300/x/1";
            common::send_method(&app, method, path, Some(cookie.as_bytes())).await
        })
    };
    let (get, post) = (request(http::Method::GET), request(http::Method::POST));
    tokio::time::sleep(Duration::from_millis(150)).await;
    redis.kill();
    let (get, post) = (get.await.unwrap(), post.await.unwrap());
    assert_eq!(get.status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(post.status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(get.headers["retry-after"], "1");
    assert!(
        !post.headers.contains_key("retry-after"),
        "{:?}",
        post.headers
    );

    for path in ["/get/user", "/set/x/1", "/incr/n/1"] {
        let start = Instant::now();
        let r = b.peek(path).await;
        assert_eq!(r.status, StatusCode::SERVICE_UNAVAILABLE, "{path}");
        assert!(
            start.elapsed() < Duration::from_secs(2),
            "{path} took {:?}",
            start.elapsed()
        );
    }
    // A route without the session is unaffected.
    assert_eq!(b.peek("/untouched").await.status, StatusCode::OK);
    // Redis comes back empty: no error page, the session simply starts fresh.
    redis.restart();
    let mut ok = false;
    for _ in 0..50 {
        let r = b.peek("/get/user").await;
        if r.status == StatusCode::OK {
            assert_eq!(r.body, "none");
            ok = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(ok, "service recovered by itself");
    let r = b.get("/set/user/bob").await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(b.get("/get/user").await.body, "bob");
}

#[tokio::test]
async fn paused_redis_fails_within_the_command_timeout() {
    let redis = RedisServer::start();
    let store = builder()
        .redis_url(redis.url())
        .command_timeout(Duration::from_millis(300))
        .build()
        .await
        .unwrap();
    let mut b = Browser::new(app(&store));
    b.get("/set/user/alice").await;
    redis.signal("-STOP");
    let start = Instant::now();
    let r = b.peek("/get/user").await;
    let took = start.elapsed();
    redis.signal("-CONT");
    assert_eq!(r.status, StatusCode::SERVICE_UNAVAILABLE);
    assert!(took < Duration::from_secs(2), "took {took:?}");
    assert_eq!(
        b.peek("/get/user").await.body,
        "alice",
        "resumes after SIGCONT"
    );
}

#[tokio::test]
async fn wrong_type_at_session_key_is_a_clear_error() {
    let redis = RedisServer::start();
    let store = builder().redis_url(redis.url()).build().await.unwrap();
    let mut b = Browser::new(app(&store));
    b.get("/set/user/alice").await;
    let key = redis.keys().remove(0);
    let _: () = redis.cmd(&["DEL", &key]);
    let _: () = redis.cmd(&["SET", &key, "not a hash"]);
    let r = b.peek("/get/user").await;
    assert_eq!(r.status, StatusCode::INTERNAL_SERVER_ERROR);
    assert_eq!(
        r.body, "session error",
        "unexpected data: internals stay in the logs"
    );
}

#[tokio::test]
async fn works_from_plain_tower_without_axum() {
    let store = builder().memory().build().await.unwrap();
    let svc = store
        .layer()
        .layer(tower::service_fn(|req: http::Request<()>| async move {
            let Some(session) = req.extensions().get::<Session>().cloned() else {
                return Ok::<_, Infallible>(http::Response::new(Full::<axum::body::Bytes>::from(
                    "no session",
                )));
            };
            let body = async {
                // Loaded on first use, without an explicit load().
                let n = session.get::<i64>("n").await?.unwrap_or(0) + 1;
                session.insert("n", &n)?;
                Ok::<_, SessionError>(format!("{n} {}", session.is_modified()))
            }
            .await
            .unwrap_or_else(|e| e.to_string());
            Ok(http::Response::new(Full::from(body)))
        }));
    let body = |res: http::Response<Full<axum::body::Bytes>>| async move {
        use http_body_util::BodyExt;
        let bytes = res.into_body().collect().await.unwrap().to_bytes();
        String::from_utf8(bytes.to_vec()).unwrap()
    };
    let res = svc.clone().oneshot(http::Request::new(())).await.unwrap();
    let cookie = res.headers()[http::header::SET_COOKIE].to_str().unwrap();
    let cookie = pair(cookie);
    assert_eq!(body(res).await, "1 true");
    let req = http::Request::builder()
        .header(http::header::COOKIE, &cookie)
        .body(())
        .unwrap();
    let res = svc.oneshot(req).await.unwrap();
    assert_eq!(body(res).await, "2 true");
}

#[tokio::test]
async fn bad_configuration_is_refused_with_a_clear_error() {
    let cases: Vec<(tower_redis_session::SessionStoreBuilder, &str)> = vec![
        (SessionStore::builder().memory(), "no signing key"),
        (
            SessionStore::builder().memory().signing_keys([[0u8; 31]]),
            "at least 32",
        ),
        (SessionStore::builder().signing_keys([KEY]), "no backend"),
        (builder().redis_url("http://nope"), "Redis URL"),
        (
            builder().memory().idle_timeout(Duration::ZERO),
            "idle_timeout",
        ),
        (
            builder().memory().command_timeout(Duration::ZERO),
            "command_timeout",
        ),
        (
            builder()
                .memory()
                .idle_timeout(Duration::from_secs(10))
                .absolute_timeout(Duration::from_secs(5)),
            "longer than the absolute",
        ),
        (
            builder().memory().cookie_name("bad name"),
            "invalid cookie name",
        ),
        (
            builder()
                .memory()
                .cookie_name("__Host-x")
                .cookie_secure(false),
            "be Secure",
        ),
        (
            builder()
                .memory()
                .cookie_name("__Host-x")
                .cookie_path("/app"),
            "Path=/",
        ),
        // Browsers match the prefixes whatever their case (RFC 6265bis).
        (
            builder()
                .memory()
                .cookie_name("__host-s")
                .cookie_secure(false),
            "be Secure",
        ),
        (
            builder()
                .memory()
                .cookie_name("__HOST-s")
                .cookie_domain("example.com"),
            "no Domain",
        ),
        (
            builder()
                .memory()
                .cookie_name("__SECURE-s")
                .cookie_secure(false),
            "be Secure",
        ),
        (
            builder().redis_url_from_var("TRS_SURELY_UNSET_VAR"),
            "not set",
        ),
    ];
    for (b, expected) in cases {
        let err: ConfigError = b.build().await.expect_err(expected);
        assert!(err.to_string().contains(expected), "{err} vs {expected}");
    }
}

/// The default name is `__Host-session` wherever its rules hold (a sibling subdomain cannot
/// set a cookie of that name: no cookie tossing), `session` where they cannot (plain-http
/// development, a path or a domain of one's own); a name given is kept.
#[tokio::test]
async fn the_default_cookie_name_is_host_prefixed_where_it_can_be() {
    use tower_redis_session::SessionStore;
    let base = || SessionStore::builder().signing_keys([common::KEY]).memory();
    let cases = [
        (base(), "__Host-session="),
        (base().cookie_secure(false), "session="),
        (base().cookie_path("/app"), "session="),
        (base().cookie_domain("example.com"), "session="),
        (base().cookie_name("sid"), "sid="),
    ];
    for (b, prefix) in cases {
        let store = b.build().await.expect("store");
        let r = common::Browser::new(common::app(&store))
            .get("/set/a/1")
            .await;
        assert!(r.set_cookie[0].starts_with(prefix), "{:?}", r.set_cookie);
    }
}

#[test]
fn the_example_never_prints_a_redis_password() {
    for (url, shown) in [
        (
            "redis://app:s3cret@cache.internal:6379/0",
            "redis://app:***@cache.internal:6379/0",
        ),
        ("rediss://:tok@en@host:6380", "rediss://:***@host:6380"),
        ("redis://127.0.0.1:6379", "redis://127.0.0.1:6379"),
    ] {
        assert_eq!(example::redact(url), shown);
    }
}

#[tokio::test]
async fn an_application_cache_policy_is_kept() {
    let store = builder().memory().build().await.unwrap();
    let app = axum::Router::new()
        .route(
            "/",
            axum::routing::get(|session: Session| async move {
                session.insert("a", &1)?;
                Ok::<_, SessionError>(([(http::header::CACHE_CONTROL, "no-store")], "ok"))
            }),
        )
        .layer(store.layer());
    let r = send(&app, "/", None).await;
    assert_eq!(r.set_cookie.len(), 1);
    assert_eq!(r.headers["cache-control"], "no-store");
}
