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

use std::future::Future;
use std::time::Instant;

use tracing::Instrument;

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

/// Runs one store operation (one round trip) inside a span named after it, and records its
/// outcome and duration.
pub(crate) async fn observe<T>(
    op: &'static str,
    session: Option<uuid::Uuid>,
    work: impl Future<Output = Result<T, SessionError>>,
) -> Result<T, SessionError> {
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
    let result = if traced {
        work.instrument(span.clone()).await
    } else {
        work.await
    };
    let took = start.map(|start| start.elapsed());
    if traced {
        let outcome = match &result {
            Ok(_) => "ok",
            Err(SessionError::Unavailable(_)) => "unavailable",
            Err(SessionError::Ended) => "ended",
            Err(_) => "error",
        };
        span.record("outcome", outcome);
        span.record("duration_us", took.unwrap_or_default().as_micros() as u64);
    }
    match &result {
        Err(SessionError::Unavailable(e)) => {
            tracing::warn!(parent: &span, error = %e, "session store unavailable");
            count("session_unavailable_total", &[], 1);
        }
        Err(SessionError::Ended) => {}
        Err(e) => tracing::error!(parent: &span, error = %e, "session store error"),
        Ok(_) => tracing::debug!(parent: &span, "session store operation"),
    }
    count("session_store_operations_total", &[("op", op)], 1);
    #[cfg(feature = "metrics")]
    ::metrics::histogram!("session_store_duration_seconds", "op" => op)
        .record(took.unwrap_or_default().as_secs_f64());
    result
}
