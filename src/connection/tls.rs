//! TLS for our own connection (`direct`): rustls over a tokio `TcpStream`, driven by hand so
//! that the connection keeps what makes it fast over plain TCP. A request writes its own
//! commands (`try_write`, never waiting while it holds the write lock) and the request that
//! reads the socket hands every reply over; no driver task, no hop between tasks. A stream
//! wrapper such as tokio-rustls's would need one: its halves share a lock across awaits.
//!
//! The one rustls state machine serves both directions under a short `Mutex`, never held
//! across an await. Ciphertext that the socket did not take stays inside rustls (in order,
//! up to its 64 KiB limit, beyond which it takes no more plaintext) until the writer's flush
//! sends it: [`TlsSocket::pending_out`] tells the writer that it is not done yet.

use std::io::{self, BufRead, Read, Write};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use redis::RedisResult;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use rustls::{ClientConfig, ClientConnection, RootCertStore};
use tokio::io::Interest;
use tokio::net::TcpStream;

use super::connector::Tls;

/// One TLS connection, shared by the reading and the writing side of `direct`.
pub(super) struct TlsSocket {
    tcp: TcpStream,
    tls: Mutex<ClientConnection>,
}

/// `std::io` over the tokio socket without waiting: `WouldBlock` when it is not ready.
struct Io<'a>(&'a TcpStream);

impl Read for Io<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.0.try_read(buf)
    }
}

impl Write for Io<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0.try_write(buf)
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// rustls's error as an I/O error of the socket (the connection is retired for it).
fn tls_error(e: rustls::Error) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, e)
}

impl TlsSocket {
    /// Opens a TLS session on `tcp` with the server `host`, within the caller's timeout.
    pub(super) async fn connect(
        tcp: TcpStream,
        host: &str,
        config: Arc<ClientConfig>,
    ) -> io::Result<Self> {
        let name = ServerName::try_from(host.to_owned())
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
        let tls = ClientConnection::new(config, name).map_err(tls_error)?;
        let socket = Self {
            tcp,
            tls: Mutex::new(tls),
        };
        socket.handshake().await?;
        Ok(socket)
    }

    /// Runs the handshake; the connect timeout bounds it.
    async fn handshake(&self) -> io::Result<()> {
        loop {
            let (handshaking, wants_write) = {
                let mut tls = self.lock();
                self.push(&mut tls)?;
                (tls.is_handshaking(), tls.wants_write())
            };
            if wants_write {
                self.tcp.writable().await?;
            } else if !handshaking {
                return Ok(());
            } else {
                self.tcp.readable().await?;
                let mut tls = self.lock();
                match self.pull(&mut tls) {
                    Ok(0) => {
                        return Err(io::Error::new(
                            io::ErrorKind::UnexpectedEof,
                            "the server closed the connection during the TLS handshake",
                        ))
                    }
                    Ok(_) => {}
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                    Err(e) => {
                        // Tells the server why (rustls queued an alert), if the socket takes it.
                        let _ = self.push(&mut tls);
                        return Err(e);
                    }
                }
            }
        }
    }

    fn lock(&self) -> MutexGuard<'_, ClientConnection> {
        self.tls.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Sends the ciphertext rustls holds, as far as the socket takes it now.
    fn push(&self, tls: &mut ClientConnection) -> io::Result<()> {
        while tls.wants_write() {
            match tls.write_tls(&mut Io(&self.tcp)) {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(()),
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    /// Reads ciphertext that the socket holds now and decrypts it: `Ok(0)` at the socket's
    /// end, `WouldBlock` when it holds nothing.
    fn pull(&self, tls: &mut ClientConnection) -> io::Result<usize> {
        let n = tls.read_tls(&mut Io(&self.tcp))?;
        tls.process_new_packets().map_err(tls_error)?;
        Ok(n)
    }

    /// Encrypts what rustls takes of `buf` (all of it, unless 64 KiB of ciphertext wait for
    /// the socket) and sends what the socket takes: how much of `buf` was taken.
    pub(super) fn try_write(&self, buf: &[u8]) -> io::Result<usize> {
        let mut tls = self.lock();
        let n = tls.writer().write(buf)?;
        self.push(&mut tls)?;
        if n == 0 && !buf.is_empty() {
            return Err(io::ErrorKind::WouldBlock.into());
        }
        Ok(n)
    }

    /// Whether ciphertext still waits for the socket, after sending what it takes now.
    pub(super) fn pending_out(&self) -> io::Result<bool> {
        let mut tls = self.lock();
        self.push(&mut tls)?;
        Ok(tls.wants_write())
    }

    pub(super) async fn writable(&self) -> io::Result<()> {
        self.tcp.writable().await
    }

    /// See `WriteHalf::seen_readable`; plaintext is never left inside rustls between reads.
    pub(super) fn seen_readable(&self) -> bool {
        self.tcp.try_io(Interest::READABLE, || Ok(())).is_ok()
    }

    /// Appends the plaintext that the socket holds now to `buf`: `Ok(0)` once the server
    /// closed the connection, `WouldBlock` when there is none (records that carry no data,
    /// such as session tickets, are taken and give none).
    pub(super) fn try_read_buf(&self, buf: &mut Vec<u8>) -> io::Result<usize> {
        let mut tls = self.lock();
        loop {
            let took = Self::drain(&mut tls, buf);
            // Alerts or key updates that reading queued.
            self.push(&mut tls)?;
            match took {
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Ok(0),
                other => return other,
            }
            // Each pass takes bytes from the socket or returns (`WouldBlock` included).
            if self.pull(&mut tls)? == 0 {
                return Ok(0);
            }
        }
    }

    /// Moves every chunk of decrypted plaintext into `buf`.
    fn drain(tls: &mut ClientConnection, buf: &mut Vec<u8>) -> io::Result<usize> {
        let mut total = 0;
        loop {
            let mut reader = tls.reader();
            let chunk = match reader.fill_buf() {
                Ok(chunk) => chunk,
                Err(e) if total > 0 && e.kind() == io::ErrorKind::WouldBlock => return Ok(total),
                Err(e) => return Err(e),
            };
            if chunk.is_empty() {
                return Ok(total);
            }
            let n = chunk.len();
            buf.extend_from_slice(chunk);
            reader.consume(n);
            total += n;
        }
    }

    /// Waits for plaintext and appends it to `buf` (`Ok(0)`: the server closed the
    /// connection). Cancel-safe: nothing is read between awaits.
    pub(super) async fn read_buf(&self, buf: &mut Vec<u8>) -> io::Result<usize> {
        loop {
            match self.try_read_buf(buf) {
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => self.tcp.readable().await?,
                done => return done,
            }
        }
    }
}

/// The rustls settings of a store's TLS connections: the given CA (else the system's roots)
/// and client certificate, ring's cryptography. Built once, when the store is.
pub(crate) fn client_config(tls: &Tls) -> RedisResult<Arc<ClientConfig>> {
    let invalid = |what: &str, e: &dyn std::fmt::Display| {
        redis::RedisError::from((
            redis::ErrorKind::InvalidClientConfig,
            "TLS settings",
            format!("{what}: {e}"),
        ))
    };
    let mut roots = RootCertStore::empty();
    match &tls.ca_pem {
        Some(pem) => {
            for cert in CertificateDer::pem_slice_iter(pem) {
                let cert = cert.map_err(|e| invalid("the CA certificate's PEM", &e))?;
                roots
                    .add(cert)
                    .map_err(|e| invalid("the CA certificate", &e))?;
            }
        }
        None => {
            let found = rustls_native_certs::load_native_certs();
            if found.certs.is_empty() {
                if let Some(e) = found.errors.first() {
                    return Err(invalid("the system's root certificates", e));
                }
            }
            roots.add_parsable_certificates(found.certs);
        }
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| invalid("TLS versions", &e))?
        .with_root_certificates(roots);
    let config = match &tls.client {
        Some((cert, key)) => {
            let chain = CertificateDer::pem_slice_iter(cert)
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| invalid("the client certificate's PEM", &e))?;
            let key = PrivateKeyDer::from_pem_slice(key)
                .map_err(|e| invalid("the client key's PEM", &e))?;
            builder
                .with_client_auth_cert(chain, key)
                .map_err(|e| invalid("the client certificate", &e))?
        }
        None => builder.with_no_client_auth(),
    };
    Ok(Arc::new(config))
}
