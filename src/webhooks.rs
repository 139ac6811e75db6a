//! Delivering webhook events: a worker per instance takes due deliveries from the outbox
//! (`store::webhooks`), signs each per Standard Webhooks and posts it, and records how it went;
//! a failed one is tried again with exponential backoff and jitter for 24 hours. Deliveries run
//! beside the data plane, never in a request: a slow or dead receiver costs its own attempts
//! (each bounded by `CONFIDANT_WEBHOOK_TIMEOUT`), never a turn.
//!
//! At least once: a delivery is leased to one worker while it is tried (on PostgreSQL other
//! instances skip it); a worker that dies mid-attempt lets the lease run out, and the delivery is
//! tried again with the same `webhook-id`, which receivers use to drop duplicates.

use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use hmac::{Hmac, Mac};
use sha2::Sha256;

use crate::AppState;
use crate::crypto::{MasterKey, random_bytes};
use crate::store::now_micros;
use crate::store::scope::ApplicationId;
use crate::store::webhooks::{self, Attempt, Delivery, Webhook};

/// How often the worker looks for due deliveries.
const POLL_INTERVAL: Duration = Duration::from_millis(500);
/// Deliveries taken per look.
const BATCH: u64 = 32;
/// How long a taken delivery is this worker's beyond twice the attempt timeout (an attempt can't
/// outlast it); a worker that died mid-attempt holds its deliveries this long.
const LEASE_MARGIN: Duration = Duration::from_secs(5);
/// How long a delivery is retried.
pub const RETRY_PERIOD: Duration = Duration::from_secs(24 * 3600);
/// The longest wait between two attempts.
const MAX_BACKOFF: Duration = Duration::from_secs(3600);
/// The part of a receiver's error answer kept in the log.
const MAX_ERROR_CHARS: usize = 200;

/// A new signing secret, as Standard Webhooks spells it: `whsec_` and base64 of 32 random bytes.
pub fn new_secret() -> String {
    format!("whsec_{}", STANDARD.encode(random_bytes::<32>()))
}

/// The signing secret, sealed under the master key for its row.
pub fn seal_secret(master_key: &MasterKey, app_id: ApplicationId, webhook_id: uuid::Uuid, secret: &str) -> Vec<u8> {
    master_key.seal(&webhooks::seal_context(app_id, webhook_id), secret.as_bytes())
}

/// `webhook-signature`: `v1,` and base64 of HMAC-SHA256 over `{id}.{timestamp}.{body}`, keyed
/// with the secret's bytes (the base64 after `whsec_`).
pub fn signature(secret: &str, id: &str, timestamp: i64, body: &str) -> Option<String> {
    let key = STANDARD.decode(secret.strip_prefix("whsec_")?).ok()?;
    let mut mac = Hmac::<Sha256>::new_from_slice(&key).ok()?;
    mac.update(format!("{id}.{timestamp}.{body}").as_bytes());
    Some(format!("v1,{}", STANDARD.encode(mac.finalize().into_bytes())))
}

/// The wait before attempt `attempt + 1` (after `attempt` failures): `base` doubled each time, at
/// most an hour, ±25 % at random so receivers coming back are not hit all at once.
pub fn backoff(base: Duration, attempt: u32) -> Duration {
    let doubled = base.saturating_mul(1 << attempt.saturating_sub(1).min(20));
    let wait = doubled.min(MAX_BACKOFF);
    let jitter = f64::from(u32::from_le_bytes(random_bytes::<4>())) / f64::from(u32::MAX);
    wait.mul_f64(0.75 + jitter * 0.5)
}

/// Deliveries tried at once by one instance: a dead receiver holds its own attempts (each up to
/// the timeout), never the others'.
const IN_FLIGHT: usize = 64;

/// Runs the delivery worker until the process ends.
pub fn spawn(state: AppState) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let slots = std::sync::Arc::new(tokio::sync::Semaphore::new(IN_FLIGHT));
        loop {
            let free = slots.available_permits().min(BATCH as usize);
            if free == 0 {
                // Every slot busy: wait for one to free.
                drop(slots.acquire().await);
                continue;
            }
            let taken = match take_due(&state, &slots, free as u64).await {
                Ok(taken) => taken,
                Err(error) => {
                    tracing::warn!(%error, "could not read the webhook outbox");
                    0
                }
            };
            if taken < free {
                tokio::time::sleep(POLL_INTERVAL).await;
            }
        }
    })
}

/// Takes up to `limit` due deliveries and starts an attempt of each; returns how many there were.
async fn take_due(
    state: &AppState,
    slots: &std::sync::Arc<tokio::sync::Semaphore>,
    limit: u64,
) -> crate::store::StoreResult<usize> {
    let now = now_micros();
    let lease = state.settings().webhook_timeout * 2 + LEASE_MARGIN;
    let lease_until = now + lease.as_micros() as i64;
    let due = webhooks::claim_due(state.db(), now, lease_until, limit).await?;
    let count = due.len();
    for delivery in due {
        let Ok(slot) = slots.clone().try_acquire_owned() else {
            // (Not reached: no more were taken than slots were free.) Its lease runs out.
            break;
        };
        let state = state.clone();
        tokio::spawn(async move {
            attempt(&state, delivery).await;
            drop(slot);
        });
    }
    Ok(count)
}

/// One attempt of a delivery, recorded.
async fn attempt(state: &AppState, delivery: Delivery) {
    let id = delivery.id;
    let outcome = match webhooks::find(state.db(), delivery.application_id, delivery.webhook_id).await {
        Ok(Some(webhook)) => post(state, &webhook, &delivery).await,
        // Deleted meanwhile: its deliveries went with it.
        Ok(None) => return,
        Err(error) => Err((None, format!("could not read the webhook: {error}"))),
    };
    let attempt = match outcome {
        Ok(status) => {
            tracing::debug!(delivery.id = %id, status, "webhook delivered");
            Attempt::Delivered { status }
        }
        Err((status, error)) => {
            let attempts = delivery.attempts as u32 + 1;
            let retry_at = now_micros() + backoff(state.settings().webhook_retry_base, attempts).as_micros() as i64;
            let give_up_at = delivery.created_at + RETRY_PERIOD.as_micros() as i64;
            let retry_at = (retry_at <= give_up_at).then_some(retry_at);
            if retry_at.is_none() {
                tracing::warn!(delivery.id = %id, webhook.id = %delivery.webhook_id, attempts, "webhook delivery given up after 24 h");
            } else {
                tracing::info!(delivery.id = %id, webhook.id = %delivery.webhook_id, attempts, error, "webhook delivery failed; will retry");
            }
            Attempt::Failed {
                status,
                error,
                retry_at,
            }
        }
    };
    if let Err(error) = webhooks::record_attempt(state.db(), id, attempt).await {
        tracing::warn!(%error, delivery.id = %id, "could not record a webhook attempt");
    }
}

/// Posts a delivery; its status when the receiver took it (2xx), else what went wrong.
async fn post(state: &AppState, webhook: &Webhook, delivery: &Delivery) -> Result<u16, (Option<u16>, String)> {
    let url = url::Url::parse(&webhook.url).map_err(|_| (None, "the webhook's URL does not parse".to_owned()))?;
    if let Err(refusal) = state.egress().check_url(&url) {
        return Err((None, format!("refused by this server's address rules: {refusal}")));
    }
    let secret = state
        .master_key()
        .open(
            &webhooks::seal_context(webhook.application_id, webhook.id),
            &webhook.secret_encrypted,
        )
        .ok()
        .and_then(|bytes| String::from_utf8(bytes).ok())
        .ok_or_else(|| (None, "the webhook's secret cannot be opened".to_owned()))?;
    let message_id = format!("msg_{}", delivery.id.simple());
    let timestamp = chrono::Utc::now().timestamp();
    let signature = signature(&secret, &message_id, timestamp, &delivery.payload)
        .ok_or_else(|| (None, "the webhook's secret is malformed".to_owned()))?;
    let sent = state
        .http()
        .post(url)
        .timeout(state.settings().webhook_timeout)
        .header("content-type", "application/json")
        .header("webhook-id", &message_id)
        .header("webhook-timestamp", timestamp.to_string())
        .header("webhook-signature", signature)
        .body(delivery.payload.clone())
        .send()
        .await;
    match sent {
        Ok(response) if response.status().is_success() => Ok(response.status().as_u16()),
        Ok(response) => {
            let status = response.status().as_u16();
            let text = response.text().await.unwrap_or_default();
            let text: String = text.chars().take(MAX_ERROR_CHARS).collect();
            Err((Some(status), format!("the receiver answered {status}: {text}")))
        }
        Err(error) if error.is_timeout() => Err((None, "the receiver did not answer in time".to_owned())),
        Err(error) => Err((None, format!("could not reach the receiver: {}", error.without_url()))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signatures_follow_standard_webhooks() {
        // The example of the Standard Webhooks specification.
        let secret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
        let body = r#"{"test": 2432232314}"#;
        let signed = signature(secret, "msg_p5jXN8AQM9LWM0D4loKWxJek", 1614265330, body).unwrap();
        assert_eq!(signed, "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=");
        assert!(signature("not-a-secret", "id", 1, body).is_none());
    }

    #[test]
    fn backoff_doubles_with_jitter_up_to_an_hour() {
        let base = Duration::from_secs(5);
        for _ in 0..50 {
            let first = backoff(base, 1);
            assert!(first >= Duration::from_millis(3750) && first <= Duration::from_millis(6250));
            let fourth = backoff(base, 4);
            assert!(fourth >= Duration::from_secs(30) && fourth <= Duration::from_secs(50));
            assert!(backoff(base, 40) <= MAX_BACKOFF.mul_f64(1.25));
        }
        assert!(new_secret().starts_with("whsec_"));
    }
}
