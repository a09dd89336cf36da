//! The session layer with plain hyper 1 (no axum): a tower `Service` wrapped by the layer,
//! served by hyper's HTTP/1 connection through `hyper-util`'s tower adapter.
//!
//! ```sh
//! cargo run --example hyper                 # serves http://127.0.0.1:3000 (PORT to change)
//! cargo run --example hyper -- --self-test  # serves on a free port, calls itself, exits
//! ```
//!
//! The in-process store; `REDIS_URL=redis://...` for Redis. Plain http: the cookie goes
//! without `Secure` (use HTTPS in production).

use std::convert::Infallible;

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper_util::rt::TokioIo;
use hyper_util::service::TowerToHyperService;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tower::{service_fn, Layer};
use tower_redis_session::{Session, SessionError, SessionStore};

/// Counts the visits of the session the request carries.
async fn visits(req: Request<Incoming>) -> Result<Response<Full<Bytes>>, Infallible> {
    let Some(session) = req.extensions().get::<Session>().cloned() else {
        return Ok(Response::new(Full::from("no session layer")));
    };
    let text = async {
        let n = session.incr("visits", 1).await?;
        Ok::<_, SessionError>(format!("visit {n}\n"))
    }
    .await
    .unwrap_or_else(|e| format!("{} ({})\n", e.status(), e.public_message()));
    Ok(Response::new(Full::from(text)))
}

/// One request over a socket; the response's head and body as text.
async fn call(addr: std::net::SocketAddr, cookie: Option<&str>) -> std::io::Result<String> {
    let mut stream = TcpStream::connect(addr).await?;
    let cookie = cookie
        .map(|c| format!("Cookie: {c}\r\n"))
        .unwrap_or_default();
    let req = format!("GET / HTTP/1.1\r\nHost: localhost\r\n{cookie}Connection: close\r\n\r\n");
    stream.write_all(req.as_bytes()).await?;
    let mut raw = String::new();
    stream.read_to_string(&mut raw).await?;
    Ok(raw)
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let builder = SessionStore::builder()
        .signing_keys([[7u8; 32]])
        .cookie_secure(false);
    let store = match std::env::var("REDIS_URL") {
        Ok(url) => builder.redis_url(url),
        Err(_) => builder.memory(),
    }
    .build()
    .await?;
    let service = store.layer().layer(service_fn(visits));

    let self_test = std::env::args().any(|a| a == "--self-test");
    let port = if self_test {
        0
    } else {
        std::env::var("PORT")
            .ok()
            .and_then(|p| p.parse().ok())
            .unwrap_or(3000)
    };
    let listener = TcpListener::bind(("127.0.0.1", port)).await?;
    let addr = listener.local_addr()?;
    println!("listening on http://{addr}");
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            let service = TowerToHyperService::new(service.clone());
            tokio::spawn(async move {
                let conn = http1::Builder::new().serve_connection(TokioIo::new(stream), service);
                if let Err(e) = conn.await {
                    eprintln!("connection: {e}");
                }
            });
        }
    });
    if !self_test {
        std::future::pending::<()>().await;
    }
    // Two visits with the cookie the first one set.
    let first = call(addr, None).await?;
    let cookie = first
        .lines()
        .find_map(|l| l.strip_prefix("set-cookie: "))
        .and_then(|c| c.split(';').next())
        .ok_or("no cookie")?
        .to_owned();
    let second = call(addr, Some(&cookie)).await?;
    if !first.ends_with("visit 1\n") || !second.ends_with("visit 2\n") {
        return Err(format!("unexpected answers:\n{first}\n{second}").into());
    }
    println!("self-test passed: visit 1, then visit 2 with the cookie");
    Ok(())
}
