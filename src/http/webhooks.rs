//! Webhooks of an application: receivers of its events, signed per Standard Webhooks with a
//! secret shown once, and the log of their deliveries.

use axum::extract::State;
use axum::http::StatusCode;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use uuid::Uuid;

use super::providers::validate_outbound_url;
use super::{Json, ListParams, Path, Query, timestamp};
use crate::AppState;
use crate::auth::extract::Principal;
use crate::error::{Error, Result};
use crate::store::now_micros;
use crate::store::webhooks::{self, Delivery, DeliveryStatus, EventSet, EventType, MAX_WEBHOOKS, Webhook};

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(create_webhook, list_webhooks))
        .routes(routes!(delete_webhook))
        .routes(routes!(list_deliveries))
        .routes(routes!(send_test_event))
}

/// An event a webhook can receive.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, ToSchema, PartialEq, Eq)]
pub enum WebhookEvent {
    /// A conversation was started (`data`: `agent_id`, `conversation_id`, `user`).
    #[serde(rename = "conversation.created")]
    ConversationCreated,
    /// An assistant reply was stored, incomplete ones too (`data`: `agent_id`, `conversation_id`,
    /// `message_id`, `user`, `status`).
    #[serde(rename = "message.completed")]
    MessageCompleted,
    /// A user rated a message (`data`: `agent_id`, `conversation_id`, `message_id`, `user`, `rating`).
    #[serde(rename = "feedback.created")]
    FeedbackCreated,
    /// A memory record was created (`data`: `agent_id`, `memory_id`, `user`).
    #[serde(rename = "memory.created")]
    MemoryCreated,
    /// A user's data was erased (`data`: `user`).
    #[serde(rename = "user.erased")]
    UserErased,
}

impl WebhookEvent {
    fn stored(self) -> EventType {
        match self {
            Self::ConversationCreated => EventType::ConversationCreated,
            Self::MessageCompleted => EventType::MessageCompleted,
            Self::FeedbackCreated => EventType::FeedbackCreated,
            Self::MemoryCreated => EventType::MemoryCreated,
            Self::UserErased => EventType::UserErased,
        }
    }

    fn of(event: EventType) -> Option<Self> {
        Some(match event {
            EventType::ConversationCreated => Self::ConversationCreated,
            EventType::MessageCompleted => Self::MessageCompleted,
            EventType::FeedbackCreated => Self::FeedbackCreated,
            EventType::MemoryCreated => Self::MemoryCreated,
            EventType::UserErased => Self::UserErased,
            EventType::Test => return None,
        })
    }
}

#[derive(Serialize, ToSchema)]
pub struct WebhookView {
    pub id: Uuid,
    /// Where events are posted.
    pub url: String,
    pub events: Vec<WebhookEvent>,
    #[serde(serialize_with = "crate::http::rfc3339")]
    pub created_at: DateTime<Utc>,
}

impl From<Webhook> for WebhookView {
    fn from(w: Webhook) -> Self {
        Self {
            id: w.id,
            url: w.url,
            events: w.events.types().into_iter().filter_map(WebhookEvent::of).collect(),
            created_at: timestamp(w.created_at),
        }
    }
}

#[derive(Serialize, ToSchema)]
pub struct CreatedWebhook {
    pub id: Uuid,
    pub url: String,
    pub events: Vec<WebhookEvent>,
    /// The signing secret (`whsec_…`), for verifying `webhook-signature` with any Standard
    /// Webhooks library. Shown only here.
    pub secret: String,
    #[serde(serialize_with = "crate::http::rfc3339")]
    pub created_at: DateTime<Utc>,
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({"url": "https://example.com/hooks/confidant", "events": ["message.completed", "user.erased"]}))]
pub struct CreateWebhook {
    /// An absolute http(s) URL, under the same address rules as providers.
    pub url: String,
    /// What it receives: at least one event.
    pub events: Vec<WebhookEvent>,
}

#[derive(Serialize, ToSchema)]
pub struct WebhookList {
    pub data: Vec<WebhookView>,
}

/// Where a delivery stands.
#[derive(Debug, Clone, Copy, Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum DeliveryState {
    /// Not delivered yet; tried again at `next_attempt_at`.
    Pending,
    Delivered,
    /// Given up after 24 hours of retries.
    Failed,
}

#[derive(Serialize, ToSchema)]
pub struct DeliveryView {
    /// Also the `webhook-id` header, as `msg_` and this id without dashes.
    pub id: Uuid,
    pub webhook_id: Uuid,
    /// `conversation.created`, …, or `webhook.test`.
    pub event_type: String,
    /// The body posted: `{type, timestamp, data}`.
    pub payload: serde_json::Value,
    pub status: DeliveryState,
    pub attempts: i64,
    /// The HTTP status of the last attempt, when the receiver answered.
    pub last_status: Option<i64>,
    pub last_error: Option<String>,
    /// When it is tried next (pending deliveries).
    #[serde(serialize_with = "crate::http::rfc3339_option")]
    pub next_attempt_at: Option<DateTime<Utc>>,
    #[serde(serialize_with = "crate::http::rfc3339")]
    pub created_at: DateTime<Utc>,
    #[serde(serialize_with = "crate::http::rfc3339_option")]
    pub delivered_at: Option<DateTime<Utc>>,
}

impl From<Delivery> for DeliveryView {
    fn from(d: Delivery) -> Self {
        let status = match d.status {
            DeliveryStatus::Pending => DeliveryState::Pending,
            DeliveryStatus::Delivered => DeliveryState::Delivered,
            DeliveryStatus::Failed => DeliveryState::Failed,
        };
        Self {
            id: d.id,
            webhook_id: d.webhook_id,
            event_type: d.event_type,
            payload: serde_json::from_str(&d.payload).unwrap_or(serde_json::Value::Null),
            status,
            attempts: d.attempts,
            last_status: d.last_status,
            last_error: d.last_error,
            // (Cleared when it is delivered or given up.)
            next_attempt_at: d.next_attempt_at.map(timestamp),
            created_at: timestamp(d.created_at),
            delivered_at: d.delivered_at.map(timestamp),
        }
    }
}

#[derive(Serialize, ToSchema)]
pub struct TestEventQueued {
    /// The delivery of the test event (see the deliveries log).
    pub delivery_id: Uuid,
}

/// Register a webhook. The response holds its signing secret; it is never shown again.
#[utoipa::path(
    post, path = "/v1/applications/{app_id}/webhooks", tag = "webhooks",
    params(("app_id" = Uuid, Path, description = "Application id")),
    request_body = CreateWebhook,
    security(("operator" = []), ("api_key" = []), ("api_key_bearer" = [])),
    responses(
        (status = 201, description = "Created", body = CreatedWebhook),
        (status = 409, description = "The application has the most webhooks it may have (20)", body = crate::error::ErrorBody),
        (status = 422, description = "A URL refused by the address rules, or no events", body = crate::error::ErrorBody),
    )
)]
async fn create_webhook(
    State(state): State<AppState>,
    principal: Principal,
    Path(app_id): Path<Uuid>,
    Json(body): Json<CreateWebhook>,
) -> Result<(StatusCode, Json<CreatedWebhook>)> {
    let app_id = principal.access(&state, app_id).await?.app_id();
    if body.events.is_empty() {
        return Err(Error::invalid_field("events", "must name at least one event"));
    }
    let url = validate_outbound_url(&state, "url", &body.url).await?;
    let events: Vec<EventType> = body.events.iter().map(|e| e.stored()).collect();
    let id = Uuid::now_v7();
    let secret = crate::webhooks::new_secret();
    let webhook = Webhook {
        id,
        application_id: app_id,
        url: url.to_string(),
        events: EventSet::of(&events),
        secret_encrypted: crate::webhooks::seal_secret(state.master_key(), app_id, id, &secret),
        created_at: now_micros(),
    };
    let webhook = webhooks::create(state.db(), webhook).await?.ok_or_else(|| {
        Error::Conflict(format!(
            "an application has at most {MAX_WEBHOOKS} webhooks: delete one first"
        ))
    })?;
    tracing::info!(application.id = %app_id, webhook.id = %id, "webhook created");
    let view = WebhookView::from(webhook);
    Ok((
        StatusCode::CREATED,
        Json(CreatedWebhook {
            id: view.id,
            url: view.url,
            events: view.events,
            secret,
            created_at: view.created_at,
        }),
    ))
}

/// List the application's webhooks (at most 20), oldest first.
#[utoipa::path(
    get, path = "/v1/applications/{app_id}/webhooks", tag = "webhooks",
    params(("app_id" = Uuid, Path, description = "Application id")),
    security(("operator" = []), ("api_key" = []), ("api_key_bearer" = [])),
    responses((status = 200, description = "The webhooks", body = WebhookList))
)]
async fn list_webhooks(
    State(state): State<AppState>,
    principal: Principal,
    Path(app_id): Path<Uuid>,
) -> Result<Json<WebhookList>> {
    let app_id = principal.access(&state, app_id).await?.app_id();
    let rows = webhooks::list(state.db(), app_id).await?;
    Ok(Json(WebhookList {
        data: rows.into_iter().map(WebhookView::from).collect(),
    }))
}

/// Delete a webhook; its pending deliveries are dropped with it.
#[utoipa::path(
    delete, path = "/v1/applications/{app_id}/webhooks/{webhook_id}", tag = "webhooks",
    params(("app_id" = Uuid, Path, description = "Application id"), ("webhook_id" = Uuid, Path, description = "Webhook id")),
    security(("operator" = []), ("api_key" = []), ("api_key_bearer" = [])),
    responses((status = 204, description = "Deleted"))
)]
async fn delete_webhook(
    State(state): State<AppState>,
    principal: Principal,
    Path((app_id, webhook_id)): Path<(Uuid, Uuid)>,
) -> Result<StatusCode> {
    let app_id = principal.access(&state, app_id).await?.app_id();
    if !webhooks::delete(state.db(), app_id, webhook_id).await? {
        return Err(Error::not_found("webhook"));
    }
    tracing::info!(application.id = %app_id, webhook.id = %webhook_id, "webhook deleted");
    Ok(StatusCode::NO_CONTENT)
}

/// The webhook's deliveries, newest first: status, attempts, last error, next retry.
#[utoipa::path(
    get, path = "/v1/applications/{app_id}/webhooks/{webhook_id}/deliveries", tag = "webhooks",
    params(("app_id" = Uuid, Path, description = "Application id"), ("webhook_id" = Uuid, Path, description = "Webhook id"), ListParams),
    security(("operator" = []), ("api_key" = []), ("api_key_bearer" = [])),
    responses((status = 200, description = "A page of deliveries", body = super::DeliveryPage))
)]
async fn list_deliveries(
    State(state): State<AppState>,
    principal: Principal,
    Path((app_id, webhook_id)): Path<(Uuid, Uuid)>,
    Query(params): Query<ListParams>,
) -> Result<Json<super::DeliveryPage>> {
    let app_id = principal.access(&state, app_id).await?.app_id();
    let page = params.page()?;
    webhooks::find(state.db(), app_id, webhook_id)
        .await?
        .ok_or_else(|| Error::not_found("webhook"))?;
    let (rows, next) = webhooks::deliveries(state.db(), app_id, webhook_id, page).await?;
    Ok(Json(super::DeliveryPage::new(rows, next, DeliveryView::from)))
}

/// Send a `webhook.test` event to this webhook (delivered like any other, within a second).
#[utoipa::path(
    post, path = "/v1/applications/{app_id}/webhooks/{webhook_id}/test", tag = "webhooks",
    params(("app_id" = Uuid, Path, description = "Application id"), ("webhook_id" = Uuid, Path, description = "Webhook id")),
    security(("operator" = []), ("api_key" = []), ("api_key_bearer" = [])),
    responses((status = 202, description = "Queued", body = TestEventQueued))
)]
async fn send_test_event(
    State(state): State<AppState>,
    principal: Principal,
    Path((app_id, webhook_id)): Path<(Uuid, Uuid)>,
) -> Result<(StatusCode, Json<TestEventQueued>)> {
    let app_id = principal.access(&state, app_id).await?.app_id();
    webhooks::find(state.db(), app_id, webhook_id)
        .await?
        .ok_or_else(|| Error::not_found("webhook"))?;
    let delivery_id = webhooks::enqueue_test(state.db(), app_id, webhook_id).await?;
    Ok((StatusCode::ACCEPTED, Json(TestEventQueued { delivery_id })))
}
