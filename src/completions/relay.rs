//! Replies produced by another instance on the same PostgreSQL database: a resume or a stop that
//! reaches an instance which does not produce the reply is asked of the one that does, through
//! PostgreSQL's own notification channel (`LISTEN`/`NOTIFY`), the one every instance already
//! listens on for cache invalidations. No cluster protocol of our own, no address of one instance
//! known to another: each listens on `confidant_live_<its id>`, and the conversation's row names
//! the instance producing its reply (`store::user_data::LiveMark`).
//!
//! A request is one notice: `resume <request> <asking instance> <conversation>` or `stop …`. The
//! answer is a sequence of frames (JSON), each cut into fragments that fit a notice (PostgreSQL
//! allows under 8,000 bytes): `r <request> <seq> <last: 0|1> <fragment>`. Notices sent from
//! different pool connections may arrive out of order, so fragments carry sequence numbers. A
//! resume is answered `start` (the format and the facts its encoder needs), then `events` in
//! batches as the reply's log grows (an empty batch every few seconds while the model is
//! silent), until the reply's last event; a stop is answered `stopped` once the reply is stored.
//! An instance that does not answer (it died with its mark in place) costs the asker
//! `ASK_WAIT`, then the reply counts as not in progress.

use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;
use uuid::Uuid;

use super::TurnEvent;
use super::formats::{Format, TurnMeta};
use super::live::EventSource;
use super::streams::{self, Resumed};
use crate::AppState;
use crate::error::Result;

/// How long an asking instance waits for the first answer.
const ASK_WAIT: Duration = Duration::from_secs(2);
/// A silent reply's heartbeat: an empty batch this often.
const HEARTBEAT: Duration = Duration::from_secs(5);
/// A followed reply whose instance says nothing for this long has been lost.
const IDLE_LIMIT: Duration = Duration::from_secs(20);
/// The longest fragment, in bytes (a notice's payload must stay under 8,000).
const FRAGMENT_BYTES: usize = 7_000;
/// Events gathered into one batch, at most (bytes of their JSON, roughly).
const BATCH_BYTES: usize = 32 * 1024;
/// Fragments held for one request before its reader takes them.
const INBOX_FRAGMENTS: usize = 512;

/// The channel an instance listens on for replies and requests.
pub fn channel(instance: Uuid) -> String {
    format!("confidant_live_{}", instance.simple())
}

/// Requests this instance made and awaits answers to.
#[derive(Default)]
pub struct Relay {
    pending: Mutex<HashMap<Uuid, mpsc::Sender<Fragment>>>,
}

impl Relay {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<Uuid, mpsc::Sender<Fragment>>> {
        self.pending.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

struct Fragment {
    seq: u64,
    last: bool,
    text: String,
}

/// One part of an answer.
#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
enum Frame {
    /// No reply of that conversation is in progress here.
    None,
    Start {
        format: Format,
        meta: TurnMeta,
    },
    Events(Vec<TurnEvent>),
    Stopped,
}

/// Handles a notice on this instance's channel (from `invalidation`'s listener).
pub fn on_notice(state: &AppState, payload: &str) {
    let mut words = payload.splitn(5, ' ');
    match words.next() {
        Some("r") => {
            let (Some(request), Some(seq), Some(last), text) = (
                words.next().and_then(|w| Uuid::try_parse(w).ok()),
                words.next().and_then(|w| w.parse().ok()),
                words.next(),
                words.next().unwrap_or_default(),
            ) else {
                tracing::warn!("a malformed relay answer");
                return;
            };
            let fragment = Fragment {
                seq,
                last: last == "1",
                text: text.to_owned(),
            };
            let mut pending = state.relay().lock();
            let full = match pending.get(&request) {
                Some(inbox) => inbox.try_send(fragment).is_err(),
                None => false,
            };
            if full {
                // Its reader stopped taking them: it is dropped, and ends.
                pending.remove(&request);
            }
        }
        Some(kind @ ("resume" | "stop")) => {
            let ids: Vec<Uuid> = words.take(3).filter_map(|w| Uuid::try_parse(w).ok()).collect();
            let [request, asker, conversation] = ids[..] else {
                tracing::warn!("a malformed relay request");
                return;
            };
            let state = state.clone();
            let answer = Answer {
                state,
                request,
                to: asker,
                seq: 0,
            };
            if kind == "resume" {
                tokio::spawn(answer.resume(conversation));
            } else {
                tokio::spawn(answer.stop(conversation));
            }
        }
        _ => tracing::warn!("an unknown relay notice"),
    }
}

/// Asks `instance` for the conversation's reply in progress.
pub async fn resume(state: &AppState, instance: Uuid, conversation: Uuid) -> Result<Option<Resumed>> {
    let mut inbox = Inbox::open(state);
    if !inbox.ask(instance, "resume", conversation).await {
        return Ok(None);
    }
    let (format, meta) = match inbox.frame(ASK_WAIT).await {
        Some(Frame::Start { format, meta }) => (format, meta),
        Some(_) => return Ok(None),
        None => {
            tracing::info!(%instance, "the instance named for a reply did not answer; nothing to resume");
            return Ok(None);
        }
    };
    let (events, receiver) = mpsc::channel(32);
    let send_timeout = state.settings().send_timeout;
    tokio::spawn(async move {
        loop {
            let batch = match inbox.frame(IDLE_LIMIT).await {
                Some(Frame::Events(batch)) => batch,
                _ => vec![TurnEvent::Error(
                    "the server producing this reply stopped answering".into(),
                )],
            };
            for event in batch {
                let last = event.ends_reply();
                if tokio::time::timeout(send_timeout, events.send(event)).await.is_err() || last {
                    return;
                }
            }
            if events.is_closed() {
                return;
            }
        }
    });
    Ok(Some(Resumed {
        format,
        meta,
        events: EventSource::Channel(receiver),
    }))
}

/// Asks `instance` to stop the conversation's reply, and waits until it says it is stored.
pub async fn stop(state: &AppState, instance: Uuid, conversation: Uuid) {
    let mut inbox = Inbox::open(state);
    if inbox.ask(instance, "stop", conversation).await && inbox.frame(streams::STOP_WAIT + ASK_WAIT).await.is_none() {
        tracing::info!(%instance, "the instance named for a reply did not answer a stop");
    }
}

/// The answers to one request, in order.
struct Inbox {
    state: AppState,
    id: Uuid,
    fragments: mpsc::Receiver<Fragment>,
    next: u64,
    held: BTreeMap<u64, Fragment>,
}

impl Inbox {
    fn open(state: &AppState) -> Self {
        let id = Uuid::now_v7();
        let (sender, fragments) = mpsc::channel(INBOX_FRAGMENTS);
        state.relay().lock().insert(id, sender);
        Self {
            state: state.clone(),
            id,
            fragments,
            next: 0,
            held: BTreeMap::new(),
        }
    }

    async fn ask(&self, instance: Uuid, kind: &str, conversation: Uuid) -> bool {
        let me = self.state.live().instance();
        let payload = format!("{kind} {} {me} {conversation}", self.id);
        match self.state.db().notify_now(&channel(instance), payload).await {
            Ok(()) => true,
            Err(error) => {
                tracing::warn!(%error, "could not ask another instance about a reply");
                false
            }
        }
    }

    /// The next whole frame; `None` if nothing arrives for `wait` (or it does not parse).
    async fn frame(&mut self, wait: Duration) -> Option<Frame> {
        let mut text = String::new();
        loop {
            if let Some(fragment) = self.held.remove(&self.next) {
                self.next += 1;
                text.push_str(&fragment.text);
                if fragment.last {
                    return serde_json::from_str(&text)
                        .inspect_err(|error| tracing::warn!(%error, "a relay frame does not parse"))
                        .ok();
                }
                continue;
            }
            let fragment = tokio::time::timeout(wait, self.fragments.recv()).await.ok()??;
            self.held.insert(fragment.seq, fragment);
        }
    }
}

impl Drop for Inbox {
    fn drop(&mut self) {
        self.state.relay().lock().remove(&self.id);
    }
}

/// This instance answering another's request.
struct Answer {
    state: AppState,
    request: Uuid,
    to: Uuid,
    seq: u64,
}

impl Answer {
    async fn resume(mut self, conversation: Uuid) {
        let Some(reply) = self.state.live().newest(conversation) else {
            self.send(&Frame::None).await;
            return;
        };
        let start = Frame::Start {
            format: reply.format,
            meta: reply.meta.clone(),
        };
        if !self.send(&start).await {
            return;
        }
        let mut follower = reply.follow();
        loop {
            let first = match tokio::time::timeout(HEARTBEAT, follower.next()).await {
                Ok(Some(event)) => event,
                Ok(None) => return,
                Err(_) => {
                    if !self.send(&Frame::Events(Vec::new())).await {
                        return;
                    }
                    continue;
                }
            };
            let mut batch = vec![first];
            let mut bytes = 0;
            while bytes < BATCH_BYTES && !batch.last().is_some_and(TurnEvent::ends_reply) {
                let Some(event) = follower.try_next() else { break };
                bytes += super::live::event_bytes(&event);
                batch.push(event);
            }
            let ended = batch.last().is_some_and(TurnEvent::ends_reply);
            if !self.send(&Frame::Events(batch)).await || ended {
                return;
            }
        }
    }

    async fn stop(mut self, conversation: Uuid) {
        streams::stop_here(&self.state, conversation).await;
        self.send(&Frame::Stopped).await;
    }

    /// Sends one frame, cut into fragments; `false` if the database refused.
    async fn send(&mut self, frame: &Frame) -> bool {
        let text = serde_json::to_string(frame).expect("frames serialize");
        let channel = channel(self.to);
        let mut rest = text.as_str();
        loop {
            let mut cut = rest.len().min(FRAGMENT_BYTES);
            while !rest.is_char_boundary(cut) {
                cut -= 1;
            }
            let (fragment, after) = rest.split_at(cut);
            let last = if after.is_empty() { 1 } else { 0 };
            let payload = format!("r {} {} {last} {fragment}", self.request, self.seq);
            self.seq += 1;
            if let Err(error) = self.state.db().notify_now(&channel, payload).await {
                tracing::warn!(%error, "could not answer another instance about a reply");
                return false;
            }
            if after.is_empty() {
                return true;
            }
            rest = after;
        }
    }
}
