//! What the store does, for operators: a `tracing` span around every store operation
//! (operation, public session id, outcome, duration; never a token or a store key) and, with
//! the `metrics` feature, counters and histograms through the `metrics` facade.
//!
//! | Metric | Kind | Labels |
//! |---|---|---|
//! | `session_created_total` | counter | |
//! | `session_loaded_total` | counter | `result`: `hit`, `miss`, `ended` |
//! | `session_saved_total` | counter | |
//! | `session_bytes_written_total` | counter | |
//! | `session_conflicts_total` | counter | (409 answers: the session ended meanwhile) |
//! | `session_unavailable_total` | counter | (503: the store did not answer) |
//! | `session_destroyed_total` | counter | |
//! | `session_regenerated_total` | counter | `login`: `true`, `false` |
//! | `session_refreshes_total` | counter | `outcome`: `sent`, `skipped`, `dropped` |
//! | `session_store_operations_total` | counter | `op` |
//! | `session_store_duration_seconds` | histogram | `op` |
//! | `session_connections_retired_total` | counter | |
//! | `session_connection_attempts_total` | counter | |

use std::time::Instant;

use tracing::Span;

use crate::error::SessionError;

/// Adds `n` to a counter (nothing without the `metrics` feature).
#[cfg_attr(not(feature = "metrics"), allow(unused_variables))]
pub(crate) fn count(name: &'static str, labels: &[(&'static str, &'static str)], n: u64) {
    #[cfg(feature = "metrics")]
    ::metrics::counter!(name, labels).increment(n);
}

/// Counts an error that becomes the response (409s as conflicts; 503s are counted where the
/// store failed).
pub(crate) fn answered(error: &SessionError) {
    if matches!(error, SessionError::Ended) {
        count("session_conflicts_total", &[], 1);
    }
}

/// One store operation under observation: its span (enabled only if a subscriber wants it)
/// and, if anything reads the duration, when it started.
pub(crate) struct Observation {
    op: &'static str,
    span: Span,
    traced: bool,
    start: Option<Instant>,
}

impl Observation {
    /// Opens the span of operation `op` on the session with this public id.
    pub(crate) fn start(op: &'static str, session: Option<uuid::Uuid>) -> Self {
        let span = tracing::debug_span!(
            "session_store",
            op,
            session = session.map(tracing::field::display),
            outcome = tracing::field::Empty,
            duration_us = tracing::field::Empty,
        );
        // Without a subscriber for the span (the usual case in production at info level) and
        // without metrics, nothing reads the duration or the span's fields: not measured.
        let traced = !span.is_disabled();
        let start = (traced || cfg!(feature = "metrics")).then(Instant::now);
        Self {
            op,
            span,
            traced,
            start,
        }
    }

    /// The span to run the operation in, if a subscriber wants it.
    pub(crate) fn span(&self) -> Option<Span> {
        self.traced.then(|| self.span.clone())
    }

    /// Records the operation's outcome and duration.
    pub(crate) fn finish<T>(self, result: &Result<T, SessionError>) {
        let took = self.start.map(|start| start.elapsed());
        if self.traced {
            let outcome = match result {
                Ok(_) => "ok",
                Err(SessionError::Unavailable(_)) => "unavailable",
                Err(SessionError::Ended) => "ended",
                Err(_) => "error",
            };
            self.span.record("outcome", outcome);
            self.span
                .record("duration_us", took.unwrap_or_default().as_micros() as u64);
        }
        match result {
            Err(SessionError::Unavailable(e)) => {
                tracing::warn!(parent: &self.span, error = %e, "session store unavailable");
                count("session_unavailable_total", &[], 1);
            }
            Err(SessionError::Ended) => {}
            Err(e) => tracing::error!(parent: &self.span, error = %e, "session store error"),
            Ok(_) => tracing::debug!(parent: &self.span, "session store operation"),
        }
        count("session_store_operations_total", &[("op", self.op)], 1);
        #[cfg(feature = "metrics")]
        ::metrics::histogram!("session_store_duration_seconds", "op" => self.op)
            .record(took.unwrap_or_default().as_secs_f64());
    }
}

/// Awaits one store operation (one round trip) in a span named after it, and records its
/// outcome and duration: `observed!("load", id, backend.load(&key, ttl))`.
///
/// A macro rather than a future that wraps the store's: wrapping moved the store's future
/// (about a kilobyte for a read) into the wrapper on every operation, and a wrapper is only
/// needed to enter a span that a subscriber wants.
macro_rules! observed {
    ($op:expr, $session:expr, $work:expr $(,)?) => {{
        let observation = $crate::observe::Observation::start($op, $session);
        let result = match observation.span() {
            None => $work.await,
            Some(span) => ::tracing::Instrument::instrument($work, span).await,
        };
        observation.finish(&result);
        result
    }};
}
pub(crate) use observed;
