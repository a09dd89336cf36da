//! Our own connection over TLS (rustls driven by hand, see `src/connection/tls.rs`), against a
//! real redis-server's TLS port: writes larger than rustls's 64 KiB of ciphertext, replies
//! spread over many records, many requests sharing one socket, a server that dies and comes
//! back, and a server whose certificate the store does not trust.
#![cfg(feature = "tls")]

mod common;

use std::time::{Duration, Instant};

use axum::http::StatusCode;
use common::topology::{Certs, TlsServer};
use common::{app, builder, join_by, Browser};
use tokio::task::JoinSet;
use tower_redis_session::SessionStore;

const TIMEOUT: Duration = Duration::from_millis(500);

async fn tls_server() -> TlsServer {
    tokio::task::spawn_blocking(|| TlsServer::start(true))
        .await
        .expect("tls server")
}

async fn store_on(server: &TlsServer, timeout: Duration) -> SessionStore {
    let certs = Certs::get();
    builder()
        .redis_url(server.url())
        .tls_ca_file(certs.path("ca.crt"))
        .tls_client_cert(certs.pem("client.crt"), certs.pem("client.key"))
        .max_value_bytes(300 * 1024)
        .command_timeout(timeout)
        .connect_timeout(TIMEOUT)
        .pool_size(1)
        .build()
        .await
        .expect("store")
}

/// 24 clients on one socket, each writing three values of 256 KiB (a write of a request is
/// four times what rustls buffers) and reading its whole session back (768 KiB, many
/// records) while the others write: every value comes back whole and as written.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn large_values_from_many_clients_on_one_socket() {
    let server = tls_server().await;
    // 18 MiB each way on a busy machine: the deadline is not what this tests.
    let store = store_on(&server, Duration::from_secs(10)).await;
    let app = app(&store);
    let mut clients = JoinSet::new();
    for c in 0..24 {
        let app = app.clone();
        clients.spawn(async move {
            let mut b = Browser::new(app);
            for k in 0..3 {
                let n = 256 * 1024 - c * 7 - k;
                let r = b.get(&format!("/set-big/v{k}/{n}")).await;
                assert_eq!(r.status, StatusCode::OK, "client {c} write {k}: {}", r.body);
            }
            for k in 0..3 {
                let r = b.get(&format!("/get/v{k}")).await;
                assert_eq!(r.status, StatusCode::OK, "client {c} read {k}");
                let n = 256 * 1024 - c * 7 - k;
                assert!(
                    r.body.len() == n && r.body.bytes().all(|b| b == b'x'),
                    "client {c} value {k}: {} bytes back, {n} written",
                    r.body.len()
                );
            }
        });
    }
    let done = join_by(clients, Instant::now() + Duration::from_secs(60)).await;
    assert_eq!(done.len(), 24);
}

/// A TCP proxy to `upstream` that passes what the store sends on in small pieces, with a
/// pause after each, from a small receive buffer: the store's socket fills up again and
/// again, so a write's last TLS records often wait inside rustls for room.
async fn trickling_proxy(upstream: u16) -> u16 {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let socket = tokio::net::TcpSocket::new_v4().expect("socket");
    socket.set_recv_buffer_size(4096).expect("rcvbuf");
    socket
        .bind("127.0.0.1:0".parse().expect("addr"))
        .expect("bind");
    let port = socket.local_addr().expect("addr").port();
    let listener = socket.listen(16).expect("listen");
    tokio::spawn(async move {
        while let Ok((client, _)) = listener.accept().await {
            let Ok(server) = tokio::net::TcpStream::connect(("127.0.0.1", upstream)).await else {
                return;
            };
            let (mut cr, mut cw) = client.into_split();
            let (mut sr, mut sw) = server.into_split();
            tokio::spawn(async move {
                let mut buf = vec![0u8; 4096];
                while let Ok(n @ 1..) = cr.read(&mut buf).await {
                    if sw.write_all(&buf[..n]).await.is_err() {
                        return;
                    }
                    tokio::time::sleep(Duration::from_micros(500)).await;
                }
            });
            tokio::spawn(async move {
                let _ = tokio::io::copy(&mut sr, &mut cw).await;
            });
        }
    });
    port
}

/// Large writes from many clients through a socket that keeps filling up: requests whose
/// records the socket did not take (all of them, or only the last few) finish as it takes
/// them, and every value arrives whole. (One request alone never fills the socket here: the
/// kernel's buffer on loopback takes a megabyte at once.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writes_finish_through_a_slow_socket() {
    let server = tls_server().await;
    let certs = Certs::get();
    let port = trickling_proxy(server.tls_port).await;
    let store = builder()
        .redis_url(format!("rediss://127.0.0.1:{port}"))
        .tls_ca_file(certs.path("ca.crt"))
        .tls_client_cert(certs.pem("client.crt"), certs.pem("client.key"))
        .max_value_bytes(300 * 1024)
        .command_timeout(Duration::from_secs(20))
        .pool_size(1)
        .build()
        .await
        .expect("store");
    let app = app(&store);
    let mut clients = JoinSet::new();
    for c in 0..24 {
        let app = app.clone();
        clients.spawn(async move {
            let mut b = Browser::new(app);
            for k in 0..2 {
                let n = 256 * 1024 - c * 1031 - k;
                let r = b.get(&format!("/set-big/v{k}/{n}")).await;
                assert_eq!(r.status, StatusCode::OK, "client {c} write {k}: {}", r.body);
                assert_eq!(b.get(&format!("/get/v{k}")).await.body.len(), n, "read {k}");
            }
        });
    }
    let done = join_by(clients, Instant::now() + Duration::from_secs(60)).await;
    assert_eq!(done.len(), 24);
}

/// The server dies: requests fail fast with 503; it comes back: the store reconnects (a new
/// TLS handshake) by itself.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_that_dies_and_returns() {
    let mut server = tls_server().await;
    let store = store_on(&server, TIMEOUT).await;
    let app = app(&store);
    let mut b = Browser::new(app.clone());
    assert_eq!(b.get("/set/user/alice").await.status, StatusCode::OK);

    server.daemon.kill();
    let started = Instant::now();
    let r = b.get("/get/user").await;
    assert_eq!(r.status, StatusCode::SERVICE_UNAVAILABLE, "{}", r.body);
    assert!(started.elapsed() < TIMEOUT * 3, "{:?}", started.elapsed());

    // Dropping the server stops it: it is kept until the end.
    let _server = tokio::task::spawn_blocking(move || {
        server.daemon.restart();
        server
    })
    .await
    .expect("restart");
    // A restart without persistence: the session is gone, a new one works.
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut fresh = Browser::new(app);
    loop {
        let r = fresh.get("/set/user/bob").await;
        if r.status == StatusCode::OK {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "no recovery: {} {}",
            r.status,
            r.body
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(fresh.get("/get/user").await.body, "bob");
}

/// A server whose certificate no configured CA signed: no connection, a 503, no session.
/// The same server, with no client certificate asked, serves a store that trusts its CA.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_untrusted_server_is_refused() {
    let server = tokio::task::spawn_blocking(|| TlsServer::start(false))
        .await
        .expect("tls server");
    let certs = Certs::get();
    let store_trusting = |ca: &str| {
        builder()
            .redis_url(server.url())
            .tls_ca_file(certs.path(ca))
            .command_timeout(TIMEOUT)
            .connect_timeout(TIMEOUT)
            .build()
    };
    // The client certificate is not the CA: nothing the server presents chains to it.
    let untrusting = store_trusting("client.crt").await.expect("store");
    let r = common::send(&app(&untrusting), "/set/user/alice", None).await;
    assert_eq!(r.status, StatusCode::SERVICE_UNAVAILABLE, "{}", r.body);
    assert_eq!(server.daemon.cmd::<i64>(&["DBSIZE"]), 0);

    let trusting = store_trusting("ca.crt").await.expect("store");
    let r = common::send(&app(&trusting), "/set/user/alice", None).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
}
