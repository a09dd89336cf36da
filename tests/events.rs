//! Lifecycle events through the real tower stack, on the in-process store, a standalone
//! server and (feature `cluster`) a 3-master Cluster, where a new secret takes the general
//! way (read and end, then store anew): each operation reports exactly its events, with the
//! right public id and user; failed operations report nothing; a hook that panics or does
//! nothing never fails a request.

mod common;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::{routing::get, Router};
use common::backends::{on_every_backend, Backend, Backing};
use common::{builder, Browser};
use tokio::sync::Notify;
use tower_redis_session::{
    Session, SessionError, SessionEvent, SessionEventKind as Kind, SessionStore,
    SessionStoreBuilder,
};
use uuid::Uuid;

struct Fixture {
    store: SessionStore,
    app: Router,
    /// Released once per `/gated-login` request waiting for it.
    gate: Arc<Notify>,
    _backing: Backing,
}

async fn fixture(
    backend: Backend,
    configure: impl FnOnce(SessionStoreBuilder) -> SessionStoreBuilder,
) -> Fixture {
    let (b, backing) = backend.start(builder()).await;
    let store = configure(b).build().await.expect("store");
    let gate = Arc::new(Notify::new());
    Fixture {
        app: app(&store, Arc::clone(&gate)),
        store,
        gate,
        _backing: backing,
    }
}

/// What a hook saw, in order.
#[derive(Clone, Default)]
struct Recorder(Arc<Mutex<Vec<SessionEvent>>>);

impl Recorder {
    fn hook(&self) -> impl Fn(&SessionEvent) + Send + Sync + 'static {
        let seen = Arc::clone(&self.0);
        move |event: &SessionEvent| seen.lock().unwrap().push(event.clone())
    }

    /// The events seen since the last call, as (kind, id, user).
    fn take(&self) -> Vec<(Kind, Uuid, Option<String>)> {
        std::mem::take(&mut *self.0.lock().unwrap())
            .into_iter()
            .map(|e| (e.kind, e.id, e.user_id))
            .collect()
    }
}

fn ev(kind: Kind, id: Uuid, user: Option<&str>) -> (Kind, Uuid, Option<String>) {
    (kind, id, user.map(str::to_owned))
}

fn app(store: &SessionStore, gate: Arc<Notify>) -> Router {
    Router::new()
        .route(
            "/set/{k}/{v}",
            get(
                |s: Session, Path((k, v)): Path<(String, String)>| async move {
                    s.insert(&k, &v)?;
                    Ok::<_, SessionError>("ok")
                },
            ),
        )
        .route(
            "/get/{k}",
            get(|s: Session, Path(k): Path<String>| async move {
                Ok::<_, SessionError>(s.get::<String>(&k).await?.unwrap_or_else(|| "none".into()))
            }),
        )
        .route(
            "/incr/{k}",
            get(|s: Session, Path(k): Path<String>| async move {
                Ok::<_, SessionError>(s.incr(&k, 1).await?.to_string())
            }),
        )
        .route(
            "/regenerate",
            get(|s: Session| async move {
                s.regenerate().await?;
                Ok::<_, SessionError>("ok")
            }),
        )
        .route(
            "/login/{user}",
            get(|s: Session, Path(user): Path<String>| async move {
                s.login(&user).await?;
                s.insert("device", &"laptop")?;
                Ok::<_, SessionError>("ok")
            }),
        )
        .route(
            "/gated-login/{user}",
            get(
                |s: Session, State(gate): State<Arc<Notify>>, Path(user): Path<String>| async move {
                    // The request is under way before it logs in.
                    gate.notified().await;
                    s.login(&user).await?;
                    Ok::<_, SessionError>("ok")
                },
            ),
        )
        .route(
            "/logout",
            get(|s: Session| async move {
                s.logout().await?;
                Ok::<_, SessionError>("bye")
            }),
        )
        .route(
            "/destroy",
            get(|s: Session| async move {
                s.destroy().await?;
                Ok::<_, SessionError>("bye")
            }),
        )
        .route(
            "/whoami",
            get(|s: Session| async move {
                let user = s.user_id().await?.unwrap_or_else(|| "nobody".into());
                let id = s
                    .id()
                    .map(|i| i.to_string())
                    .unwrap_or_else(|| "none".into());
                Ok::<_, SessionError>(format!("{user} {id}"))
            }),
        )
        .with_state(gate)
        .layer(store.layer())
}

on_every_backend!(
    each_operation_reports_its_events,
    ending_one_or_all_reports_each_session_ended,
    failed_operations_report_nothing,
    a_panicking_hook_never_fails_a_request,
    a_hook_that_does_nothing_changes_nothing,
    limits_and_expiry_report_their_sessions,
);

/// GETs `path`, which must answer 200.
async fn ok(b: &mut Browser, path: &str) -> String {
    let r = b.get(path).await;
    assert_eq!(r.status, StatusCode::OK, "{path}: {r:?}");
    r.body
}

/// The session's public id, as the app reports it.
async fn id_of(b: &mut Browser) -> Uuid {
    let body = ok(b, "/whoami").await;
    let id = body.rsplit(' ').next().unwrap_or_default();
    Uuid::parse_str(id).unwrap_or_else(|_| panic!("no session id in {body:?}"))
}

async fn each_operation_reports_its_events(backend: Backend) {
    let seen = Recorder::default();
    let f = fixture(backend, |b| b.on_event(seen.hook())).await;
    let mut b = Browser::new(f.app.clone());

    // Requests that store nothing report nothing.
    ok(&mut b, "/get/a").await;
    ok(&mut b, "/regenerate").await;
    ok(&mut b, "/logout").await;
    assert_eq!(seen.take(), []);

    // The first write creates the session; later writes and reads report nothing.
    ok(&mut b, "/set/a/1").await;
    let id = id_of(&mut b).await;
    assert_eq!(seen.take(), [ev(Kind::Created, id, None)]);
    ok(&mut b, "/set/a/2").await;
    ok(&mut b, "/incr/n").await;
    assert_eq!(ok(&mut b, "/get/a").await, "2");
    assert_eq!(seen.take(), []);

    ok(&mut b, "/regenerate").await;
    assert_eq!(seen.take(), [ev(Kind::Regenerated, id, None)]);

    // Logging in to an anonymous session keeps its id; so does logging in again.
    ok(&mut b, "/login/alice").await;
    assert_eq!(seen.take(), [ev(Kind::LoggedIn, id, Some("alice"))]);
    assert_eq!(id_of(&mut b).await, id);
    ok(&mut b, "/regenerate").await;
    assert_eq!(seen.take(), [ev(Kind::Regenerated, id, Some("alice"))]);
    ok(&mut b, "/login/alice").await;
    assert_eq!(seen.take(), [ev(Kind::LoggedIn, id, Some("alice"))]);

    // Another user: the old session ends, a new one starts.
    ok(&mut b, "/login/bob").await;
    let bobs = id_of(&mut b).await;
    assert_ne!(bobs, id);
    assert_eq!(
        seen.take(),
        [
            ev(Kind::Destroyed, id, Some("alice")),
            ev(Kind::Created, bobs, Some("bob")),
            ev(Kind::LoggedIn, bobs, Some("bob")),
        ]
    );

    // Logout, with the session never loaded in that request: the store names the user.
    ok(&mut b, "/logout").await;
    assert_eq!(seen.take(), [ev(Kind::Destroyed, bobs, Some("bob"))]);
    assert_eq!(b.cookie, None);
    ok(&mut b, "/logout").await;
    assert_eq!(seen.take(), []);

    // A login without a session starts one; `incr` starts one.
    let mut c = Browser::new(f.app.clone());
    ok(&mut c, "/login/carol").await;
    let carols = id_of(&mut c).await;
    assert_eq!(
        seen.take(),
        [
            ev(Kind::Created, carols, Some("carol")),
            ev(Kind::LoggedIn, carols, Some("carol")),
        ]
    );
    // `destroy` of a loaded session.
    assert_eq!(ok(&mut c, "/get/device").await, "laptop");
    ok(&mut c, "/destroy").await;
    assert_eq!(seen.take(), [ev(Kind::Destroyed, carols, Some("carol"))]);

    let mut d = Browser::new(f.app.clone());
    assert_eq!(ok(&mut d, "/incr/n").await, "1");
    let ds = id_of(&mut d).await;
    assert_eq!(seen.take(), [ev(Kind::Created, ds, None)]);
    ok(&mut d, "/destroy").await;
    assert_eq!(seen.take(), [ev(Kind::Destroyed, ds, None)]);
}

async fn ending_one_or_all_reports_each_session_ended(backend: Backend) {
    let seen = Recorder::default();
    let f = fixture(backend, |b| b.on_event(seen.hook())).await;
    let mut browsers = Vec::new();
    for user in ["alice", "alice", "alice", "bob"] {
        let mut b = Browser::new(f.app.clone());
        ok(&mut b, &format!("/login/{user}")).await;
        let id = id_of(&mut b).await;
        browsers.push((b, id));
    }
    seen.take();
    let [a1, a2, a3, bob] = [0, 1, 2, 3].map(|i| browsers[i].1);

    // End one.
    assert!(f.store.end_session("alice", a1).await.unwrap());
    assert_eq!(seen.take(), [ev(Kind::Ended, a1, Some("alice"))]);
    assert!(!f.store.end_session("alice", a1).await.unwrap());
    assert!(!f.store.end_session("alice", bob).await.unwrap());
    assert_eq!(seen.take(), []);

    // End all but one, then all: one event per session ended.
    let mut more = Vec::new();
    for _ in 0..3 {
        let mut b = Browser::new(f.app.clone());
        ok(&mut b, "/login/alice").await;
        more.push(id_of(&mut b).await);
    }
    seen.take();
    assert_eq!(
        f.store.end_user_sessions("alice", Some(a2)).await.unwrap(),
        4
    );
    let mut ended = seen.take();
    ended.sort_by_key(|e| e.1);
    let mut expected: Vec<_> = [a3]
        .into_iter()
        .chain(more)
        .map(|id| ev(Kind::Ended, id, Some("alice")))
        .collect();
    expected.sort_by_key(|e| e.1);
    assert_eq!(ended, expected);
    assert_eq!(f.store.end_user_sessions("alice", None).await.unwrap(), 1);
    assert_eq!(seen.take(), [ev(Kind::Ended, a2, Some("alice"))]);
    assert_eq!(f.store.end_user_sessions("alice", None).await.unwrap(), 0);
    assert_eq!(seen.take(), []);

    // Bob's session is untouched; the ended ones log out and log in without a word of the
    // old session.
    let (mut b, _) = browsers.swap_remove(3);
    assert_eq!(ok(&mut b, "/whoami").await, format!("bob {bob}"));
    let (mut a, _) = browsers.swap_remove(0);
    ok(&mut a, "/logout").await;
    assert_eq!(seen.take(), []);
    let (mut a, _) = browsers.swap_remove(0);
    ok(&mut a, "/login/alice").await;
    let fresh = id_of(&mut a).await;
    assert_eq!(
        seen.take(),
        [
            ev(Kind::Created, fresh, Some("alice")),
            ev(Kind::LoggedIn, fresh, Some("alice")),
        ]
    );
}

async fn failed_operations_report_nothing(backend: Backend) {
    let seen = Recorder::default();
    let f = fixture(backend, |b| b.on_event(seen.hook())).await;

    // A login whose request started before "end all" is refused.
    let mut b = Browser::new(f.app.clone());
    ok(&mut b, "/set/a/1").await;
    let id = id_of(&mut b).await;
    assert_eq!(seen.take(), [ev(Kind::Created, id, None)]);
    let login = {
        let mut b = b.clone();
        tokio::spawn(async move { b.get("/gated-login/alice").await })
    };
    tokio::time::sleep(Duration::from_millis(20)).await;
    assert_eq!(f.store.end_user_sessions("alice", None).await.unwrap(), 0);
    f.gate.notify_one();
    let r = login.await.unwrap();
    assert_eq!(r.status, StatusCode::CONFLICT, "{r:?}");
    assert_eq!(seen.take(), []);

    // A new secret for a session ended meanwhile is refused.
    let mut c = Browser::new(f.app.clone());
    ok(&mut c, "/login/carol").await;
    let carols = id_of(&mut c).await;
    seen.take();
    assert!(f.store.end_session("carol", carols).await.unwrap());
    assert_eq!(seen.take(), [ev(Kind::Ended, carols, Some("carol"))]);
    let ended = c.cookie.clone();
    let r = c.get("/regenerate").await;
    assert_eq!(r.status, StatusCode::CONFLICT, "{r:?}");
    // So is a write with its cookie (which the response to a refused new secret may drop).
    let r = common::send(&f.app, "/set/a/1", ended.as_deref()).await;
    assert_eq!(r.status, StatusCode::CONFLICT, "{r:?}");
    assert_eq!(seen.take(), []);

    // A handler that fails has its staged write dropped: no session, no event.
    let app = Router::new()
        .route(
            "/fail",
            get(|s: Session| async move {
                s.insert("a", &1).map_err(|_| StatusCode::BAD_REQUEST)?;
                Err::<(), _>(StatusCode::INTERNAL_SERVER_ERROR)
            }),
        )
        .layer(f.store.layer());
    let mut d = Browser::new(app);
    let r = d.get("/fail").await;
    assert!(r.status.is_server_error(), "{r:?}");
    assert_eq!(d.cookie, None);
    assert_eq!(seen.take(), []);
}

/// Every operation once, each answering 200; then the store still works.
async fn every_operation(f: &Fixture) {
    let mut b = Browser::new(f.app.clone());
    ok(&mut b, "/set/a/1").await;
    ok(&mut b, "/incr/n").await;
    ok(&mut b, "/regenerate").await;
    ok(&mut b, "/login/alice").await;
    ok(&mut b, "/regenerate").await;
    ok(&mut b, "/login/bob").await;
    ok(&mut b, "/logout").await;
    let mut c = Browser::new(f.app.clone());
    ok(&mut c, "/incr/n").await;
    ok(&mut c, "/destroy").await;
    let mut alice = Vec::new();
    for _ in 0..3 {
        let mut b = Browser::new(f.app.clone());
        ok(&mut b, "/login/alice").await;
        alice.push((id_of(&mut b).await, b));
    }
    assert!(f.store.end_session("alice", alice[0].0).await.unwrap());
    let keep = alice[1].0;
    assert_eq!(
        f.store
            .end_user_sessions("alice", Some(keep))
            .await
            .unwrap(),
        1
    );
    // The store still works: the kept session reads and writes, a new one starts.
    let (id, mut kept) = alice.swap_remove(1);
    assert_eq!(ok(&mut kept, "/whoami").await, format!("alice {id}"));
    ok(&mut kept, "/set/k/v").await;
    assert_eq!(ok(&mut kept, "/get/k").await, "v");
    let listed = f.store.user_sessions("alice", &[]).await.unwrap();
    assert_eq!(listed.iter().map(|s| s.id).collect::<Vec<_>>(), [id]);
    let mut e = Browser::new(f.app.clone());
    ok(&mut e, "/set/x/y").await;
    assert_eq!(ok(&mut e, "/get/x").await, "y");
}

async fn a_panicking_hook_never_fails_a_request(backend: Backend) {
    let calls = Arc::new(AtomicUsize::new(0));
    let counted = Arc::clone(&calls);
    let f = fixture(backend, move |b| {
        b.on_event(move |event: &SessionEvent| {
            counted.fetch_add(1, Ordering::SeqCst);
            panic!("the hook failed on {:?}", event.kind);
        })
    })
    .await;
    every_operation(&f).await;
    // Every event was still delivered (and each panicked).
    assert_eq!(calls.load(Ordering::SeqCst), 19);
}

async fn a_hook_that_does_nothing_changes_nothing(backend: Backend) {
    let f = fixture(backend, |b| b.on_event(|_: &SessionEvent| {})).await;
    every_operation(&f).await;
    // Without a hook, the same.
    let f = fixture(backend, |b| b).await;
    every_operation(&f).await;
}

/// The panic is logged at `warn` with the event's kind and public id, never the cookie. On
/// one thread, so that a subscriber of this test alone sees everything.
#[tokio::test(flavor = "current_thread")]
async fn a_panicking_hook_is_logged_without_secrets() {
    let captured = common::logs::Captured::default();
    let writer = captured.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_max_level(tracing::Level::WARN)
        .with_ansi(false)
        .with_writer(move || writer.clone())
        .finish();
    let _guard = tracing::subscriber::set_default(subscriber);
    // Tests on other threads may have found the hook's `warn!` before this subscriber came,
    // with none to want it: ask every call site again.
    tracing::callsite::rebuild_interest_cache();
    let f = fixture(Backend::Memory, |b| {
        b.on_event(|_: &SessionEvent| panic!("the hook failed"))
    })
    .await;
    let mut b = Browser::new(f.app.clone());
    ok(&mut b, "/login/alice").await;
    let id = id_of(&mut b).await;
    let cookie = b.cookie.clone().unwrap_or_default();
    let value = cookie.split_once('=').map(|(_, v)| v).unwrap_or_default();
    assert!(value.len() > 20, "{cookie:?}");
    let text = captured.text();
    assert!(text.contains("WARN"), "{text}");
    assert!(text.contains("hook panicked"), "{text}");
    assert!(
        text.contains("LoggedIn") && text.contains(&id.to_string()),
        "{text}"
    );
    assert!(!text.contains(value), "{text}");
    assert!(!text.contains("alice"), "{text}");
}

/// A login past the session limit reports the oldest session `Ended`; a logged-in session that
/// expired is reported `Expired` once its user's index is checked (here by a listing), once.
async fn limits_and_expiry_report_their_sessions(backend: Backend) {
    let seen = Recorder::default();
    let f = fixture(backend, |b| {
        b.on_event(seen.hook())
            .idle_timeout(Duration::from_millis(1000))
            .max_sessions_per_user(1, tower_redis_session::SessionLimit::EndOldest)
    })
    .await;
    let mut first = Browser::new(f.app.clone());
    ok(&mut first, "/login/alice").await;
    let first_id = id_of(&mut first).await;
    let mut second = Browser::new(f.app.clone());
    ok(&mut second, "/login/alice").await;
    let second_id = id_of(&mut second).await;
    let events = seen.take();
    assert!(
        events.contains(&ev(Kind::Ended, first_id, Some("alice"))),
        "{events:?}"
    );
    tokio::time::sleep(Duration::from_millis(1300)).await;
    assert!(f
        .store
        .user_sessions("alice", &[])
        .await
        .unwrap()
        .is_empty());
    assert_eq!(seen.take(), [ev(Kind::Expired, second_id, Some("alice"))]);
    assert!(f
        .store
        .user_sessions("alice", &[])
        .await
        .unwrap()
        .is_empty());
    assert_eq!(seen.take(), []);
}

/// A session ended without its index entry being dropped (a logout whose second step was
/// lost): when a check of the index finds the ended marker, the entry goes, and no `Expired`
/// is reported for a session that did not expire.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_ended_session_found_by_an_index_check_is_not_reported_expired() {
    let redis = common::RedisServer::start();
    let seen = Recorder::default();
    let store = builder()
        .redis_url(redis.url())
        .idle_timeout(Duration::from_millis(1000))
        .on_event(seen.hook())
        .build()
        .await
        .unwrap();
    let app = app(&store, Arc::new(Notify::new()));
    let mut b = Browser::new(app);
    ok(&mut b, "/login/alice").await;
    let [key] = <[String; 1]>::try_from(redis.sessions()).expect("one session");
    // The marker `logout` leaves, written directly, so that the index keeps its entry.
    let _: () = redis.cmd(&["DEL", &key]);
    let _: () = redis.cmd(&["HSET", &key, "", "ended"]);
    let _: () = redis.cmd(&["PEXPIRE", &key, "60000"]);
    seen.take();
    tokio::time::sleep(Duration::from_millis(1300)).await;
    assert!(store.user_sessions("alice", &[]).await.unwrap().is_empty());
    assert_eq!(seen.take(), [], "an ended session reported as expired");
    let entries = redis
        .keys()
        .into_iter()
        .filter(|k| k.contains("u:{"))
        .count();
    assert_eq!(
        entries, 0,
        "the index dropped the entry and expired with it"
    );
}
