//! Rollout events to a webhook: a JSON POST with a few bounded retries, sent from its own task so
//! that nothing on the data path or in the control task ever waits for it.

use std::time::Duration;

use bytes::Bytes;
use http::{header, Request, Uri};
use http_body_util::Full;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;

/// Attempts per event.
pub const ATTEMPTS: u32 = 3;
/// Timeout of each attempt.
pub const TIMEOUT: Duration = Duration::from_secs(2);

/// Posts `body` to `url` in the background: up to [`ATTEMPTS`] tries, 0.5 s then 1 s apart.
pub fn spawn_post(url: Uri, body: serde_json::Value) {
    tokio::spawn(async move {
        let client: Client<_, Full<Bytes>> = Client::builder(TokioExecutor::new()).build_http();
        let payload = Bytes::from(body.to_string());
        let mut backoff = Duration::from_millis(500);
        for attempt in 1..=ATTEMPTS {
            let request = Request::post(url.clone())
                .header(header::CONTENT_TYPE, "application/json")
                .body(Full::new(payload.clone()));
            let Ok(request) = request else { return };
            match tokio::time::timeout(TIMEOUT, client.request(request)).await {
                Ok(Ok(r)) if r.status().is_success() => return,
                Ok(Ok(r)) => {
                    tracing::warn!(%url, attempt, status = %r.status(), "webhook refused the event")
                }
                Ok(Err(e)) => tracing::warn!(%url, attempt, error = %e, "webhook unreachable"),
                Err(_) => tracing::warn!(%url, attempt, "webhook timed out"),
            }
            if attempt < ATTEMPTS {
                tokio::time::sleep(backoff).await;
                backoff *= 2;
            }
        }
        tracing::error!(%url, "webhook event dropped after {ATTEMPTS} attempts");
    });
}
