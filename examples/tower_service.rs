//! The session layer around a bare tower `Service`: no axum, no server. The handler finds
//! its [`Session`] in the request extensions; the layer loads it lazily, writes what the
//! handler changed and sets the cookie. Requests go through `ServiceExt::oneshot`, as a test
//! or another tower stack would send them.
//!
//! ```sh
//! cargo run --example tower_service   # in-process store; REDIS_URL=redis://... for Redis
//! ```

use std::convert::Infallible;

use bytes::Bytes;
use http::{header, Request, Response};
use http_body_util::{BodyExt, Full};
use tower::{service_fn, Layer, ServiceExt};
use tower_redis_session::{Session, SessionError, SessionStore};

/// Counts the visits of the session the request carries.
async fn visits(req: Request<()>) -> Result<Response<Full<Bytes>>, Infallible> {
    // Always there behind the layer; a clear answer if the layer is missing.
    let Some(session) = req.extensions().get::<Session>().cloned() else {
        return Ok(Response::new(Full::from("no session layer")));
    };
    let text = async {
        let n = session.incr("visits", 1).await?;
        Ok::<_, SessionError>(format!("visit {n}"))
    }
    .await
    .unwrap_or_else(|e| format!("{} ({})", e.status(), e.public_message()));
    Ok(Response::new(Full::from(text)))
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let builder = SessionStore::builder().signing_keys([[7u8; 32]]);
    let store = match std::env::var("REDIS_URL") {
        Ok(url) => builder.redis_url(url),
        Err(_) => builder.memory(),
    }
    .build()
    .await?;
    let service = store.layer().layer(service_fn(visits));

    let mut cookie: Option<String> = None;
    for _ in 0..3 {
        let mut req = Request::builder();
        if let Some(c) = &cookie {
            req = req.header(header::COOKIE, c);
        }
        let res = service.clone().oneshot(req.body(())?).await?;
        if let Some(set) = res.headers().get(header::SET_COOKIE) {
            // name=value, before the attributes.
            cookie = set.to_str()?.split(';').next().map(str::to_owned);
        }
        let body = res.into_body().collect().await?.to_bytes();
        println!("{}", String::from_utf8_lossy(&body));
    }
    Ok(())
}
