//! Webhooks: an application's receivers of events, and the durable outbox of their deliveries.
//!
//! An event is written as one delivery row per webhook that receives it, by `enqueue`, in the
//! transaction that makes the change: a change that commits has its deliveries, one that rolls
//! back has none (a crash can neither lose nor invent an event). `crate::webhooks` delivers them.
//! Which event types an application's webhooks receive is kept on the application row too
//! (`webhook_events`, rewritten with every webhook change), so a change learns from the
//! application the door already read, without a query, whether it has anything to write.

use sea_query::{Expr, ExprTrait, LockBehavior, LockType, Order, Query};
use serde::Serialize;
use uuid::Uuid;

use super::notices::Notice;
use super::schema::{Applications, WebhookDeliveries, Webhooks};
use super::scope::ApplicationId;
use super::{Db, PageRequest, StoreResult, Tx, now_micros};

crate::text_enum! {
    /// What happened.
    pub enum EventType {
        ConversationCreated = "conversation.created",
        /// An assistant reply stored (incomplete ones too).
        MessageCompleted = "message.completed",
        FeedbackCreated = "feedback.created",
        MemoryCreated = "memory.created",
        UserErased = "user.erased",
        /// Sent by the dashboard's "send test event" to one webhook.
        Test = "webhook.test",
    }
}

impl EventType {
    /// The types a webhook may subscribe to.
    pub const SUBSCRIBABLE: [EventType; 5] = [
        Self::ConversationCreated,
        Self::MessageCompleted,
        Self::FeedbackCreated,
        Self::MemoryCreated,
        Self::UserErased,
    ];

    const fn bit(self) -> u8 {
        1 << self as u8
    }
}

/// A set of event types (what an application's webhooks receive).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct EventSet(u8);

impl EventSet {
    /// Reads the stored form, `,type,type,`.
    pub fn from_stored(text: &str) -> Self {
        Self(
            text.split(',')
                .filter_map(EventType::parse)
                .fold(0, |bits, event| bits | event.bit()),
        )
    }

    pub fn of(events: &[EventType]) -> Self {
        Self(events.iter().fold(0, |bits, event| bits | event.bit()))
    }

    pub fn contains(self, event: EventType) -> bool {
        self.0 & event.bit() != 0
    }

    pub fn union(self, other: Self) -> Self {
        Self(self.0 | other.0)
    }

    /// The stored form: `,type,type,` (a `LIKE '%,type,%'` finds one), `''` for none.
    pub fn stored(self) -> String {
        let names: Vec<&str> = EventType::SUBSCRIBABLE
            .iter()
            .filter(|e| self.contains(**e))
            .map(|e| e.as_str())
            .collect();
        if names.is_empty() {
            String::new()
        } else {
            format!(",{},", names.join(","))
        }
    }

    pub fn types(self) -> Vec<EventType> {
        EventType::SUBSCRIBABLE
            .into_iter()
            .filter(|e| self.contains(*e))
            .collect()
    }
}

/// Read once with its row (the application's, kept in the cache; a webhook's), not per request.
impl super::Column for EventSet {
    fn from_sqlite(row: &rusqlite::Row<'_>, index: usize) -> rusqlite::Result<Self> {
        String::from_sqlite(row, index).map(|text| Self::from_stored(&text))
    }
    fn from_postgres(row: &sqlx::postgres::PgRow, name: &str) -> sqlx::Result<Self> {
        String::from_postgres(row, name).map(|text| Self::from_stored(&text))
    }
}

impl From<EventSet> for sea_query::Value {
    fn from(set: EventSet) -> Self {
        set.stored().into()
    }
}

/// The most webhooks one application may have.
pub const MAX_WEBHOOKS: usize = 20;

#[derive(Debug, Clone)]
pub struct Webhook {
    pub id: Uuid,
    pub application_id: ApplicationId,
    pub url: String,
    pub events: EventSet,
    pub secret_encrypted: Vec<u8>,
    pub created_at: i64,
}

crate::from_row!(Webhook {
    id,
    application_id,
    url,
    events,
    secret_encrypted,
    created_at
});

/// A row read for its id alone (an application row locked, a receiving webhook).
struct IdRow {
    id: Uuid,
}
crate::from_row!(IdRow { id });

const WEBHOOK_COLUMNS: [Webhooks; 6] = [
    Webhooks::Id,
    Webhooks::ApplicationId,
    Webhooks::Url,
    Webhooks::Events,
    Webhooks::SecretEncrypted,
    Webhooks::CreatedAt,
];

/// The context a webhook's signing secret is sealed under (its row).
pub fn seal_context(app_id: ApplicationId, webhook_id: Uuid) -> String {
    format!("webhook-secret:{app_id}:{webhook_id}")
}

fn of_application(app_id: ApplicationId) -> sea_query::SelectStatement {
    Query::select()
        .columns(WEBHOOK_COLUMNS)
        .from(Webhooks::Table)
        .and_where(Expr::col(Webhooks::ApplicationId).eq(app_id))
        .order_by(Webhooks::Id, Order::Asc)
        .to_owned()
}

/// The application's webhooks, oldest first (at most `MAX_WEBHOOKS`).
pub async fn list(db: &Db, app_id: ApplicationId) -> StoreResult<Vec<Webhook>> {
    db.rows(&of_application(app_id)).await
}

pub async fn find(db: &Db, app_id: ApplicationId, id: Uuid) -> StoreResult<Option<Webhook>> {
    let mut query = of_application(app_id);
    query.and_where(Expr::col(Webhooks::Id).eq(id));
    db.row(&query).await
}

/// Adds a webhook; `None` when the application has `MAX_WEBHOOKS` already.
pub async fn create(db: &Db, webhook: Webhook) -> StoreResult<Option<Webhook>> {
    db.transaction(move |tx| {
        Box::pin(async move {
            let _: Vec<IdRow> = tx.rows(&lock_application(webhook.application_id)).await?;
            let existing: Vec<Webhook> = tx.rows(&of_application(webhook.application_id)).await?;
            if existing.len() >= MAX_WEBHOOKS {
                return Ok(None);
            }
            let insert = Query::insert()
                .into_table(Webhooks::Table)
                .columns(WEBHOOK_COLUMNS)
                .values_panic([
                    webhook.id.into(),
                    webhook.application_id.into(),
                    webhook.url.clone().into(),
                    webhook.events.into(),
                    webhook.secret_encrypted.clone().into(),
                    webhook.created_at.into(),
                ])
                .to_owned();
            tx.execute(&insert).await?;
            refresh_application_events(tx, webhook.application_id).await?;
            Ok(Some(webhook))
        })
    })
    .await
}

/// Deletes a webhook with its deliveries.
pub async fn delete(db: &Db, app_id: ApplicationId, id: Uuid) -> StoreResult<bool> {
    db.transaction(move |tx| {
        Box::pin(async move {
            let _: Vec<IdRow> = tx.rows(&lock_application(app_id)).await?;
            let deleted = tx
                .execute(
                    &Query::delete()
                        .from_table(Webhooks::Table)
                        .and_where(Expr::col(Webhooks::ApplicationId).eq(app_id))
                        .and_where(Expr::col(Webhooks::Id).eq(id))
                        .to_owned(),
                )
                .await?;
            if deleted > 0 {
                refresh_application_events(tx, app_id).await?;
            }
            Ok(deleted > 0)
        })
    })
    .await
}

/// Locks the application row (PostgreSQL), so webhook changes of one application take turns.
fn lock_application(app_id: ApplicationId) -> sea_query::SelectStatement {
    Query::select()
        .column(Applications::Id)
        .from(Applications::Table)
        .and_where(Expr::col(Applications::Id).eq(app_id))
        .lock(LockType::Update)
        .to_owned()
}

/// Rewrites the application's `webhook_events` from its webhooks; every instance forgets its copy
/// of the application when this commits.
async fn refresh_application_events(tx: &mut Tx, app_id: ApplicationId) -> StoreResult<()> {
    let webhooks: Vec<Webhook> = tx.rows(&of_application(app_id)).await?;
    let events = webhooks.iter().fold(EventSet::default(), |set, w| set.union(w.events));
    let update = Query::update()
        .table(Applications::Table)
        .value(Applications::WebhookEvents, events)
        .and_where(Expr::col(Applications::Id).eq(app_id))
        .to_owned();
    tx.execute(&update).await?;
    tx.notify(Notice::ApplicationChanged(app_id.uuid())).await
}

/// An event, as its receivers get it: `{type, timestamp, data}`.
#[derive(Debug, Clone)]
pub struct Event {
    pub kind: EventType,
    pub data: serde_json::Value,
}

impl Event {
    pub fn new(kind: EventType, data: serde_json::Value) -> Self {
        Self { kind, data }
    }

    /// The body every receiver of it gets (and its signature covers).
    fn body(&self, now: i64) -> String {
        #[derive(Serialize)]
        struct Body<'a> {
            r#type: &'static str,
            timestamp: String,
            data: &'a serde_json::Value,
        }
        let timestamp = chrono::DateTime::from_timestamp_micros(now)
            .unwrap_or_default()
            .to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
        serde_json::to_string(&Body {
            r#type: self.kind.as_str(),
            timestamp,
            data: &self.data,
        })
        .expect("events serialize")
    }
}

/// Runs a change, and, when `event` is given, writes its deliveries in the same transaction (no
/// transaction when there is none: a change nobody listens to costs what it did).
pub async fn execute_noting<S: super::Statement + 'static>(
    db: &Db,
    app_id: ApplicationId,
    change: S,
    event: Option<Event>,
) -> StoreResult<u64> {
    let Some(event) = event else {
        return db.execute(change).await;
    };
    db.transaction(move |tx| {
        Box::pin(async move {
            let changed = tx.execute(&change).await?;
            if changed > 0 {
                enqueue(tx, app_id, &event).await?;
            }
            Ok(changed)
        })
    })
    .await
}

/// Writes the event's deliveries, one per webhook of the application that receives it, in the
/// caller's transaction.
pub async fn enqueue(tx: &mut Tx, app_id: ApplicationId, event: &Event) -> StoreResult<()> {
    let receivers = Query::select()
        .column(Webhooks::Id)
        .from(Webhooks::Table)
        .and_where(Expr::col(Webhooks::ApplicationId).eq(app_id))
        .and_where(Expr::col(Webhooks::Events).like(format!("%,{},%", event.kind.as_str())))
        .to_owned();
    let receivers: Vec<IdRow> = tx.rows(&receivers).await?;
    if receivers.is_empty() {
        return Ok(());
    }
    let ids: Vec<Uuid> = receivers.into_iter().map(|r| r.id).collect();
    tx.execute(&insert_deliveries(app_id, &ids, event).0).await?;
    Ok(())
}

/// The insert of one delivery of `event` per webhook, and the deliveries' ids.
fn insert_deliveries(
    app_id: ApplicationId,
    webhooks: &[Uuid],
    event: &Event,
) -> (sea_query::InsertStatement, Vec<Uuid>) {
    let now = now_micros();
    let body = event.body(now);
    let mut insert = Query::insert();
    insert.into_table(WebhookDeliveries::Table).columns([
        WebhookDeliveries::Id,
        WebhookDeliveries::WebhookId,
        WebhookDeliveries::ApplicationId,
        WebhookDeliveries::EventType,
        WebhookDeliveries::Payload,
        WebhookDeliveries::Status,
        WebhookDeliveries::NextAttemptAt,
        WebhookDeliveries::CreatedAt,
    ]);
    let mut ids = Vec::with_capacity(webhooks.len());
    for webhook in webhooks {
        let id = Uuid::now_v7();
        ids.push(id);
        insert.values_panic([
            id.into(),
            (*webhook).into(),
            app_id.into(),
            event.kind.into(),
            body.clone().into(),
            DeliveryStatus::Pending.into(),
            now.into(),
            now.into(),
        ]);
    }
    (insert, ids)
}

/// Sends a test event to one webhook (the dashboard's button); returns the delivery's id.
pub async fn enqueue_test(db: &Db, app_id: ApplicationId, webhook_id: Uuid) -> StoreResult<Uuid> {
    let event = Event::new(
        EventType::Test,
        serde_json::json!({"webhook_id": webhook_id, "message": "A test event from Confidant."}),
    );
    let (insert, ids) = insert_deliveries(app_id, &[webhook_id], &event);
    db.execute(insert).await?;
    Ok(ids[0])
}

crate::text_enum! {
    /// Where a delivery stands.
    pub enum DeliveryStatus {
        /// Not yet delivered; tried again at `next_attempt_at`.
        Pending = "pending",
        Delivered = "delivered",
        /// Given up: not delivered within the retry period.
        Failed = "failed",
    }
}

#[derive(Debug, Clone)]
pub struct Delivery {
    pub id: Uuid,
    pub webhook_id: Uuid,
    pub application_id: ApplicationId,
    pub event_type: String,
    pub payload: String,
    pub status: DeliveryStatus,
    pub attempts: i64,
    pub last_status: Option<i64>,
    pub last_error: Option<String>,
    pub next_attempt_at: Option<i64>,
    pub created_at: i64,
    pub delivered_at: Option<i64>,
}

crate::from_row!(Delivery {
    id,
    webhook_id,
    application_id,
    event_type,
    payload,
    status,
    attempts,
    last_status,
    last_error,
    next_attempt_at,
    created_at,
    delivered_at
});

const DELIVERY_COLUMNS: [WebhookDeliveries; 12] = [
    WebhookDeliveries::Id,
    WebhookDeliveries::WebhookId,
    WebhookDeliveries::ApplicationId,
    WebhookDeliveries::EventType,
    WebhookDeliveries::Payload,
    WebhookDeliveries::Status,
    WebhookDeliveries::Attempts,
    WebhookDeliveries::LastStatus,
    WebhookDeliveries::LastError,
    WebhookDeliveries::NextAttemptAt,
    WebhookDeliveries::CreatedAt,
    WebhookDeliveries::DeliveredAt,
];

/// A page of a webhook's deliveries, newest first.
pub async fn deliveries(
    db: &Db,
    app_id: ApplicationId,
    webhook_id: Uuid,
    page: PageRequest,
) -> StoreResult<(Vec<Delivery>, Option<Uuid>)> {
    let mut query = Query::select()
        .columns(DELIVERY_COLUMNS)
        .from(WebhookDeliveries::Table)
        .and_where(Expr::col(WebhookDeliveries::ApplicationId).eq(app_id))
        .and_where(Expr::col(WebhookDeliveries::WebhookId).eq(webhook_id))
        .to_owned();
    page.apply(&mut query, WebhookDeliveries::Id);
    Ok(page.finish(db.rows(&query).await?, |d: &Delivery| d.id))
}

/// Takes up to `limit` due deliveries for this worker: each is leased until `lease_until` (no
/// other worker takes it meanwhile; one that dies lets the lease run out, and the delivery is
/// tried again). On PostgreSQL concurrent workers skip each other's rows (`FOR UPDATE SKIP
/// LOCKED`); SQLite has one writer.
pub async fn claim_due(db: &Db, now: i64, lease_until: i64, limit: u64) -> StoreResult<Vec<Delivery>> {
    let due = Query::select()
        .column(WebhookDeliveries::Id)
        .from(WebhookDeliveries::Table)
        .and_where(Expr::col(WebhookDeliveries::Status).eq(DeliveryStatus::Pending))
        .and_where(Expr::col(WebhookDeliveries::NextAttemptAt).lte(now))
        .order_by(WebhookDeliveries::NextAttemptAt, Order::Asc)
        .limit(limit)
        .lock_with_behavior(LockType::Update, LockBehavior::SkipLocked)
        .to_owned();
    let claim = Query::update()
        .table(WebhookDeliveries::Table)
        .value(WebhookDeliveries::NextAttemptAt, lease_until)
        .and_where(Expr::col(WebhookDeliveries::Id).in_subquery(due))
        .returning(Query::returning().columns(DELIVERY_COLUMNS))
        .to_owned();
    db.transaction(move |tx| Box::pin(async move { tx.rows(&claim).await }))
        .await
}

/// How one attempt went.
#[derive(Debug, Clone)]
pub enum Attempt {
    Delivered {
        status: u16,
    },
    /// Failed; tried again at `retry_at`, or given up (`None`).
    Failed {
        status: Option<u16>,
        error: String,
        retry_at: Option<i64>,
    },
}

/// Records an attempt of a delivery.
pub async fn record_attempt(db: &Db, id: Uuid, attempt: Attempt) -> StoreResult<()> {
    let now = now_micros();
    let mut update = Query::update();
    update.table(WebhookDeliveries::Table).value(
        WebhookDeliveries::Attempts,
        Expr::col(WebhookDeliveries::Attempts).add(1),
    );
    match attempt {
        Attempt::Delivered { status } => {
            update
                .value(WebhookDeliveries::Status, DeliveryStatus::Delivered)
                .value(WebhookDeliveries::LastStatus, i64::from(status))
                .value(WebhookDeliveries::LastError, None::<String>)
                .value(WebhookDeliveries::NextAttemptAt, None::<i64>)
                .value(WebhookDeliveries::DeliveredAt, now);
        }
        Attempt::Failed {
            status,
            error,
            retry_at,
        } => {
            let state = if retry_at.is_some() {
                DeliveryStatus::Pending
            } else {
                DeliveryStatus::Failed
            };
            update
                .value(WebhookDeliveries::Status, state)
                .value(WebhookDeliveries::LastStatus, status.map(i64::from))
                .value(WebhookDeliveries::LastError, error)
                .value(WebhookDeliveries::NextAttemptAt, retry_at);
        }
    }
    update.and_where(Expr::col(WebhookDeliveries::Id).eq(id));
    db.execute(update).await?;
    Ok(())
}

/// How long the deliveries log keeps a delivered or given-up delivery.
pub const LOG_DAYS: i64 = 7;
const PURGE_BATCH: u64 = 1000;

/// Deletes delivered and given-up deliveries created before `before`, in batches (pending ones
/// stay until they are delivered or given up); returns how many went.
pub async fn purge_deliveries(db: &Db, before: i64) -> StoreResult<u64> {
    db.execute_in_batches(PURGE_BATCH, || {
        let victims = Query::select()
            .column(WebhookDeliveries::Id)
            .from(WebhookDeliveries::Table)
            .and_where(Expr::col(WebhookDeliveries::CreatedAt).lt(before))
            .and_where(Expr::col(WebhookDeliveries::Status).ne(DeliveryStatus::Pending))
            .limit(PURGE_BATCH)
            .to_owned();
        Query::delete()
            .from_table(WebhookDeliveries::Table)
            .and_where(Expr::col(WebhookDeliveries::Id).in_subquery(victims))
            .to_owned()
    })
    .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn event_sets_round_trip_their_stored_form() {
        let set = EventSet::of(&[EventType::MessageCompleted, EventType::UserErased]);
        assert_eq!(set.stored(), ",message.completed,user.erased,");
        assert_eq!(EventSet::from_stored(&set.stored()), set);
        assert!(set.contains(EventType::MessageCompleted));
        assert!(!set.contains(EventType::MemoryCreated));
        assert_eq!(EventSet::from_stored("").stored(), "");
        assert_eq!(set.types(), [EventType::MessageCompleted, EventType::UserErased]);
    }

    #[test]
    fn the_worker_skips_rows_other_workers_hold_on_postgres() {
        let due = Query::select()
            .column(WebhookDeliveries::Id)
            .from(WebhookDeliveries::Table)
            .lock_with_behavior(LockType::Update, LockBehavior::SkipLocked)
            .to_owned();
        assert!(
            due.to_string(sea_query::PostgresQueryBuilder)
                .ends_with("FOR UPDATE SKIP LOCKED")
        );
        // SQLite has no row locks (one writer): nothing is rendered there.
        assert!(!due.to_string(sea_query::SqliteQueryBuilder).contains("FOR UPDATE"));
    }
}
