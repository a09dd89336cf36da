//! A credentials provider for the tests: the ACL user `app` with whatever password the test
//! sets, expiring `lifetime` after each answer (so that live connections re-authenticate).
#![allow(dead_code, unreachable_pub)]

use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use tower_redis_session::{Credentials, CredentialsFuture, CredentialsProvider};

#[derive(Clone)]
pub struct Password {
    pub current: Arc<Mutex<String>>,
    pub lifetime: Duration,
}

impl Password {
    pub fn new(first: &str, lifetime: Duration) -> Self {
        Self {
            current: Arc::new(Mutex::new(first.to_string())),
            lifetime,
        }
    }

    pub fn set(&self, password: &str) {
        *self.current.lock().unwrap_or_else(|e| e.into_inner()) = password.to_string();
    }
}

impl CredentialsProvider for Password {
    fn credentials(&self) -> CredentialsFuture<'_> {
        let password = self.current.lock().map(|p| p.clone()).unwrap_or_default();
        let expires_at = Some(SystemTime::now() + self.lifetime);
        Box::pin(async move {
            Ok(Credentials {
                username: Some("app".into()),
                password,
                expires_at,
            })
        })
    }
}
