//! Replies in progress, kept by the instance producing them, so that their user can resume one
//! (from its first event, then live to its end) or stop it.
//!
//! A turn's reply task records every event it produces in the reply's log as it hands it to its
//! own reader; a resume follows the log with a cursor of its own, so a slow resumer costs the task
//! nothing and holds nothing but the log. Consecutive text (and tool-argument) fragments are kept
//! as one growing string: a log holds about the reply's own size, however many chunks the model
//! sent, and never more than `max_bytes`. The log lives while the reply runs and while a resumer
//! still reads it.
//!
//! On PostgreSQL the conversation's row names the instance producing its reply
//! (`store::user_data::LiveMark`, written with the turn's messages); a resume or stop reaching
//! another instance goes through `relay`.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use tokio::sync::{Notify, mpsc};
use uuid::Uuid;

use super::TurnEvent;
use super::formats::{Format, TurnMeta};
use crate::store::user_data::LiveMark;

/// This instance's replies in progress, by conversation (its internal id).
pub struct LiveReplies {
    instance: Uuid,
    /// Other instances may ask for our replies (PostgreSQL).
    shared: bool,
    max_bytes: usize,
    replies: Mutex<HashMap<Uuid, Vec<Arc<LiveReply>>>>,
}

impl LiveReplies {
    pub fn new(shared: bool, max_bytes: usize) -> Self {
        Self {
            instance: Uuid::now_v7(),
            shared,
            max_bytes,
            replies: Mutex::default(),
        }
    }

    /// This process's id among the instances sharing a database.
    pub fn instance(&self) -> Uuid {
        self.instance
    }

    /// What a turn's messages say of its reply: which instance produces it, where other
    /// instances may ask (nothing on SQLite: one instance).
    pub fn running_mark(&self) -> LiveMark {
        if self.shared {
            LiveMark::Running(self.instance)
        } else {
            LiveMark::Keep
        }
    }

    /// What the reply's last stored message says: this instance no longer produces it.
    pub fn ended_mark(&self) -> LiveMark {
        if self.shared {
            LiveMark::Ended(self.instance)
        } else {
            LiveMark::Keep
        }
    }

    /// Starts keeping a reply of the conversation `key`; it is forgotten when the guard drops.
    pub fn register(self: &Arc<Self>, key: Uuid, format: Format, meta: TurnMeta) -> LiveGuard {
        let reply = Arc::new(LiveReply {
            format,
            meta,
            max_bytes: self.max_bytes,
            log: Mutex::default(),
            changed: Notify::new(),
            stop_requested: AtomicBool::new(false),
            stop: Notify::new(),
        });
        self.lock().entry(key).or_default().push(reply.clone());
        LiveGuard {
            replies: self.clone(),
            key,
            reply,
        }
    }

    /// The conversation's newest reply in progress here.
    pub fn newest(&self, key: Uuid) -> Option<Arc<LiveReply>> {
        self.lock().get(&key).and_then(|replies| replies.last().cloned())
    }

    /// Every reply of the conversation in progress here.
    pub fn all(&self, key: Uuid) -> Vec<Arc<LiveReply>> {
        self.lock().get(&key).cloned().unwrap_or_default()
    }

    /// How many replies are in progress here.
    pub fn len(&self) -> usize {
        self.lock().values().map(Vec::len).sum()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<Uuid, Vec<Arc<LiveReply>>>> {
        self.replies.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// Keeps a reply registered while its task runs; ends its log and forgets it when dropped
/// (however the task ends, a panic included).
pub struct LiveGuard {
    replies: Arc<LiveReplies>,
    key: Uuid,
    reply: Arc<LiveReply>,
}

impl LiveGuard {
    pub fn reply(&self) -> &Arc<LiveReply> {
        &self.reply
    }
}

impl Drop for LiveGuard {
    fn drop(&mut self) {
        self.reply.close();
        let mut replies = self.replies.lock();
        if let Some(list) = replies.get_mut(&self.key) {
            list.retain(|r| !Arc::ptr_eq(r, &self.reply));
            if list.is_empty() {
                replies.remove(&self.key);
            }
        }
    }
}

/// One reply in progress: what its resumers need to encode it, and its events so far.
pub struct LiveReply {
    pub format: Format,
    pub meta: TurnMeta,
    max_bytes: usize,
    log: Mutex<Log>,
    /// Woken when the log grows or ends.
    changed: Notify,
    stop_requested: AtomicBool,
    stop: Notify,
}

#[derive(Default)]
struct Log {
    events: Vec<TurnEvent>,
    bytes: usize,
    /// No more events will come.
    done: bool,
    /// It grew past its bound and stopped recording: it cannot be replayed whole.
    overflowed: bool,
}

impl LiveReply {
    /// Records an event the reply produced; false if the log no longer records (it ended or
    /// outgrew its bound).
    pub fn record(&self, event: &TurnEvent) -> bool {
        let recorded = {
            let mut log = self.log.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
            if log.done {
                return false;
            }
            let size = event_bytes(event);
            if log.bytes + size > self.max_bytes {
                log.overflowed = true;
                log.done = true;
                false
            } else {
                log.bytes += size;
                let terminal = event.ends_reply();
                match (log.events.last_mut(), event) {
                    (Some(TurnEvent::Delta(text)), TurnEvent::Delta(more)) => text.push_str(more),
                    (
                        Some(TurnEvent::ToolCallDelta { id, delta, .. }),
                        TurnEvent::ToolCallDelta {
                            id: more_id,
                            delta: more,
                            ..
                        },
                    ) if id == more_id => delta.push_str(more),
                    _ => log.events.push(event.clone()),
                }
                log.done = terminal;
                true
            }
        };
        self.changed.notify_waiters();
        recorded
    }

    /// Where the log ends now: `text_since` of it is the text recorded after this point, even
    /// if the next delta is appended to the one the log ends with.
    pub fn mark(&self) -> LogMark {
        let log = self.log.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        match log.events.last() {
            Some(TurnEvent::Delta(text)) => LogMark {
                index: log.events.len() - 1,
                offset: text.len(),
            },
            _ => LogMark {
                index: log.events.len(),
                offset: 0,
            },
        }
    }

    /// The text of the deltas recorded since `mark` (the reply's task keeps the text of its step
    /// here rather than a second copy of its own).
    pub fn text_since(&self, mark: LogMark) -> String {
        let log = self.log.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let mut text = String::new();
        for (at, event) in log.events.iter().enumerate().skip(mark.index) {
            if let TurnEvent::Delta(delta) = event {
                let from = if at == mark.index { mark.offset } else { 0 };
                text.push_str(delta.get(from..).unwrap_or_default());
            }
        }
        text
    }

    /// No more events (the reply task ended).
    fn close(&self) {
        self.log.lock().unwrap_or_else(std::sync::PoisonError::into_inner).done = true;
        self.changed.notify_waiters();
    }

    /// Asks the reply to stop; its task stores what was produced as incomplete.
    pub fn request_stop(&self) {
        self.stop_requested.store(true, Ordering::SeqCst);
        self.stop.notify_waiters();
    }

    /// Resolves once a stop was asked for.
    pub async fn stopped(&self) {
        loop {
            let notified = self.stop.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if self.stop_requested.load(Ordering::SeqCst) {
                return;
            }
            notified.await;
        }
    }

    pub fn stop_requested(&self) -> bool {
        self.stop_requested.load(Ordering::SeqCst)
    }

    /// Resolves once the reply has ended (its last message stored, its last event recorded).
    pub async fn ended(&self) {
        loop {
            let notified = self.changed.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if self.log.lock().unwrap_or_else(std::sync::PoisonError::into_inner).done {
                return;
            }
            notified.await;
        }
    }

    /// A reader of the reply from its first event.
    pub fn follow(self: &Arc<Self>) -> Follower {
        Follower {
            reply: self.clone(),
            index: 0,
            offset: 0,
            finished: false,
        }
    }
}

/// The bytes an event holds, for the log's bound.
pub(super) fn event_bytes(event: &TurnEvent) -> usize {
    const BASE: usize = 16;
    BASE + match event {
        TurnEvent::Delta(text) | TurnEvent::Error(text) => text.len(),
        TurnEvent::ToolCallStart { id, name, .. } => id.len() + name.len(),
        TurnEvent::ToolCallDelta { id, delta, .. } => id.len() + delta.len(),
        TurnEvent::ToolCall { call, .. } => call.id.len() + call.name.len() + call.arguments.len(),
        TurnEvent::ToolResult { call, output, .. } => {
            call.id.len() + call.name.len() + call.arguments.len() + output.len()
        }
        TurnEvent::StepFinish | TurnEvent::StepStart | TurnEvent::Finish { .. } => 0,
    }
}

/// A place in a reply's log: its event at `index`, from byte `offset` of its text.
#[derive(Debug, Clone, Copy)]
pub struct LogMark {
    index: usize,
    offset: usize,
}

/// One reader's place in a reply's log.
pub struct Follower {
    reply: Arc<LiveReply>,
    index: usize,
    /// Bytes of the event at `index` already given (text that grows in place).
    offset: usize,
    finished: bool,
}

impl Follower {
    /// The next event: what the log holds beyond this reader's place, else the next one the
    /// reply records; `None` after the last.
    pub async fn next(&mut self) -> Option<TurnEvent> {
        if self.finished {
            return None;
        }
        let reply = self.reply.clone();
        loop {
            let notified = reply.changed.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            let (event, done, overflowed) = self.take();
            if let Some(event) = event {
                if event.ends_reply() {
                    self.finished = true;
                }
                return Some(event);
            }
            if done {
                self.finished = true;
                return Some(TurnEvent::Error(if overflowed {
                    "this reply is too long to resume".into()
                } else {
                    "the reply ended without finishing".into()
                }));
            }
            notified.await;
        }
    }

    /// The next event if the log holds it already (no waiting).
    pub fn try_next(&mut self) -> Option<TurnEvent> {
        if self.finished {
            return None;
        }
        let event = self.take().0?;
        if event.ends_reply() {
            self.finished = true;
        }
        Some(event)
    }

    /// The next part of the log for this reader, and whether the log has ended.
    fn take(&mut self) -> (Option<TurnEvent>, bool, bool) {
        let log = self.reply.log.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        while let Some(event) = log.events.get(self.index) {
            let growing = match event {
                TurnEvent::Delta(text) => Some((text, None)),
                TurnEvent::ToolCallDelta { id, delta, server } => Some((delta, Some((id, *server)))),
                _ => None,
            };
            match growing {
                Some((text, tool)) if self.offset < text.len() => {
                    let rest = text[self.offset..].to_owned();
                    self.offset = text.len();
                    let event = match tool {
                        None => TurnEvent::Delta(rest),
                        Some((id, server)) => TurnEvent::ToolCallDelta {
                            id: id.clone(),
                            delta: rest,
                            server,
                        },
                    };
                    return (Some(event), log.done, log.overflowed);
                }
                // Given whole: go on once something follows it (it may still grow).
                Some(_) if self.index + 1 == log.events.len() && !log.done => break,
                Some(_) => {
                    self.index += 1;
                    self.offset = 0;
                }
                None => {
                    self.index += 1;
                    self.offset = 0;
                    return (Some(event.clone()), log.done, log.overflowed);
                }
            }
        }
        (None, log.done, log.overflowed)
    }
}

/// Where a streamed reply's events come from: the turn's own task, or a reply's log (a resume
/// here, or one relayed from another instance).
pub enum EventSource {
    Channel(mpsc::Receiver<TurnEvent>),
    Log(Follower),
}

impl EventSource {
    pub async fn recv(&mut self) -> Option<TurnEvent> {
        match self {
            Self::Channel(receiver) => receiver.recv().await,
            Self::Log(follower) => follower.next().await,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::completions::{FinishReason, ToolCall, Usage};

    fn meta() -> TurnMeta {
        TurnMeta::for_tests()
    }

    fn finish() -> TurnEvent {
        TurnEvent::Finish {
            reason: FinishReason::Stop,
            usage: Usage::default(),
        }
    }

    #[tokio::test]
    async fn a_follower_reads_the_log_from_the_start_then_live() {
        let replies = Arc::new(LiveReplies::new(false, 1 << 20));
        let key = Uuid::now_v7();
        let guard = replies.register(key, Format::AiSdk, meta());
        let reply = guard.reply().clone();
        reply.record(&TurnEvent::Delta("Hel".into()));
        reply.record(&TurnEvent::Delta("lo".into()));
        let mut follower = replies.newest(key).unwrap().follow();
        // Text recorded in fragments comes back as one.
        assert_eq!(follower.next().await, Some(TurnEvent::Delta("Hello".into())));
        reply.record(&TurnEvent::Delta(" there".into()));
        assert_eq!(follower.next().await, Some(TurnEvent::Delta(" there".into())));
        let waiting = tokio::spawn(async move {
            let mut seen = Vec::new();
            while let Some(event) = follower.next().await {
                seen.push(event);
            }
            seen
        });
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        reply.record(&TurnEvent::StepFinish);
        reply.record(&TurnEvent::Delta("!".into()));
        reply.record(&finish());
        assert_eq!(
            waiting.await.unwrap(),
            [TurnEvent::StepFinish, TurnEvent::Delta("!".into()), finish()]
        );
        // A second follower sees the whole reply, coalesced.
        let mut again = reply.follow();
        assert_eq!(again.next().await, Some(TurnEvent::Delta("Hello there".into())));
        drop(guard);
        assert!(replies.newest(key).is_none(), "forgotten when its task ends");
        assert_eq!(again.next().await, Some(TurnEvent::StepFinish));
    }

    #[tokio::test]
    async fn a_log_past_its_bound_ends_its_followers_with_an_error() {
        let replies = Arc::new(LiveReplies::new(false, 100));
        let guard = replies.register(Uuid::now_v7(), Format::OpenAi, meta());
        let reply = guard.reply();
        reply.record(&TurnEvent::Delta("a".repeat(50)));
        reply.record(&TurnEvent::Delta("b".repeat(50)));
        let mut follower = reply.follow();
        assert_eq!(follower.next().await, Some(TurnEvent::Delta("a".repeat(50))));
        assert!(matches!(follower.next().await, Some(TurnEvent::Error(m)) if m.contains("too long")));
        assert_eq!(follower.next().await, None);
    }

    #[test]
    fn the_text_recorded_since_a_mark_is_the_steps_text_and_a_full_log_says_it_kept_nothing() {
        let replies = Arc::new(LiveReplies::new(false, 200));
        let guard = replies.register(Uuid::now_v7(), Format::OpenAi, meta());
        let reply = guard.reply();
        assert!(reply.record(&TurnEvent::Delta("first step".into())));
        let after_text = reply.mark();
        assert!(reply.record(&TurnEvent::Delta(", more".into())));
        assert_eq!(
            reply.text_since(after_text),
            ", more",
            "a delta appended to the one before the mark counts from the mark"
        );
        assert!(reply.record(&TurnEvent::StepStart));
        let mark = reply.mark();
        assert!(reply.record(&TurnEvent::Delta("Hel".into())));
        assert!(reply.record(&TurnEvent::Delta("lo".into())));
        let call = ToolCall {
            id: "c1".into(),
            name: "look".into(),
            arguments: "{}".into(),
        };
        assert!(reply.record(&TurnEvent::ToolCall {
            call: Box::new(call),
            server: true
        }));
        assert!(reply.record(&TurnEvent::Delta(" you".into())));
        assert_eq!(reply.text_since(mark), "Hello you", "only this step's deltas, in order");
        assert!(
            !reply.record(&TurnEvent::Delta("x".repeat(200))),
            "past the bound: not kept"
        );
        assert!(!reply.record(&TurnEvent::Delta("y".into())), "nor anything after it");
        assert_eq!(reply.text_since(mark), "Hello you");
    }

    #[tokio::test]
    async fn a_task_that_ends_without_finishing_ends_its_followers() {
        let replies = Arc::new(LiveReplies::new(false, 1000));
        let guard = replies.register(Uuid::now_v7(), Format::OpenAi, meta());
        let mut follower = guard.reply().follow();
        let reply = guard.reply().clone();
        assert!(!reply.stop_requested());
        reply.request_stop();
        reply.stopped().await;
        drop(guard);
        reply.ended().await;
        assert!(matches!(follower.next().await, Some(TurnEvent::Error(_))));
        assert_eq!(replies.len(), 0);
    }
}
