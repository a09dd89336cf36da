//! Arbitrary bytes as the Cookie header, through the real layer: never a panic, and never a
//! session for a cookie we did not sign.
#![no_main]

use std::convert::Infallible;
use std::sync::OnceLock;

use http::{header, HeaderValue, Request, Response};
use libfuzzer_sys::fuzz_target;
use tower::{Layer, ServiceExt};
use tower_redis_session::{Session, SessionStore};

fn setup() -> &'static (tokio::runtime::Runtime, SessionStore) {
    static SETUP: OnceLock<(tokio::runtime::Runtime, SessionStore)> = OnceLock::new();
    SETUP.get_or_init(|| {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        let store = rt
            .block_on(
                SessionStore::builder()
                    .memory()
                    .signing_keys([[3u8; 32]])
                    .build(),
            )
            .expect("store");
        (rt, store)
    })
}

fuzz_target!(|data: &[u8]| {
    let Ok(value) = HeaderValue::from_bytes(data) else {
        return;
    };
    let (rt, store) = setup();
    let service = store.layer().layer(tower::service_fn(|req: Request<()>| async move {
        let session = req.extensions().get::<Session>().cloned();
        let found = match session {
            Some(s) => !s.is_empty().await.unwrap_or(true),
            None => false,
        };
        Ok::<_, Infallible>(Response::new(if found { "session" } else { "none" }))
    }));
    let mut req = Request::new(());
    req.headers_mut().insert(header::COOKIE, value);
    let res = rt.block_on(service.oneshot(req)).expect("infallible");
    // The store holds no session, and no cookie can be forged into one.
    assert_eq!(*res.body(), "none");
    assert!(!res.headers().contains_key(header::SET_COOKIE));
});
