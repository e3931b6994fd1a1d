//! Following a prefix: a list, then one watch, kept going across broken
//! streams, member failover and compaction, with etcd 3.4.23's watch bugs
//! filtered out (issue 18: the pattern of Kubernetes' watch cache and
//! etcd's own `cache` package).
//!
//! The caller sees the prefix as a [`Update::Reset`] (everything, at a
//! revision) followed by [`Update::Events`], each event newer than
//! everything before it:
//!
//! - a stream that breaks is watched again from the last revision applied
//!   (or the last progress notification), on whichever member answers (from
//!   that revision itself, so that a compaction right after it is reported;
//!   see `open`);
//! - compaction past that revision, or a header revision going backwards
//!   (a member that restored an older snapshot: etcd #15271), lists the
//!   prefix again and reports a reset;
//! - an event no newer than the last applied revision (duplicated events:
//!   etcd #15275) is dropped.

use std::time::Duration;

use crate::{Client, Error, WatchMessage, WatchStream, pb, prefix_end};

/// What a follower reports.
#[derive(Debug, Clone, PartialEq)]
pub enum Update {
    /// Every key under the prefix at `revision`: replaces what the caller
    /// holds.
    Reset {
        /// The store revision of the list.
        revision: i64,
        /// The keys, in key order.
        kvs: Vec<pb::KeyValue>,
        /// Why (the first list, compaction, a revision going back).
        reason: ResetReason,
    },
    /// Events newer than anything reported before, in revision order.
    Events {
        /// The revision of the last event.
        revision: i64,
        /// The events.
        events: Vec<pb::Event>,
    },
}

/// Why a follower listed the prefix again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ResetReason {
    /// The first list.
    Start,
    /// The revision to resume from was compacted away.
    Compacted,
    /// A member answered with a revision older than one already seen.
    WentBack,
}

/// Follows every key under one prefix.
#[derive(Debug)]
pub struct Follower {
    client: Client,
    prefix: Vec<u8>,
    /// Everything up to this revision has been reported.
    revision: i64,
    /// The highest header revision any member has answered with.
    highest_header: i64,
    watch: Option<WatchStream>,
    /// A reset to report before anything else.
    pending: Option<Update>,
    /// Consecutive failures to (re)open the watch, for backoff.
    failures: u32,
    /// Duplicated events dropped so far.
    dropped: u64,
    /// The revision the current watch started at: already reported, so
    /// its events come again by design (see `open`).
    replayed: i64,
}

// === impl Follower ===

impl Follower {
    /// Starts following `prefix`; the first [`next`](Self::next) reports the
    /// list as a [`Update::Reset`] with [`ResetReason::Start`].
    pub fn new(client: Client, prefix: &[u8]) -> Self {
        Self {
            client,
            prefix: prefix.to_vec(),
            revision: 0,
            highest_header: 0,
            watch: None,
            pending: None,
            failures: 0,
            dropped: 0,
            replayed: 0,
        }
    }

    /// Everything up to this revision has been reported.
    pub fn revision(&self) -> i64 {
        self.revision
    }

    /// How many duplicated events were dropped.
    pub fn dropped(&self) -> u64 {
        self.dropped
    }

    /// The next update. Errors are only those of listing the prefix (etcd
    /// unreachable): the caller may call again, which retries; a broken
    /// watch is reopened here, with backoff, without an error.
    pub async fn next(&mut self) -> Result<Update, Error> {
        if self.revision == 0 {
            return self.relist(ResetReason::Start).await;
        }
        if let Some(update) = self.pending.take() {
            return Ok(update);
        }
        loop {
            let Some(watch) = self.watch.as_mut() else {
                self.open().await?;
                continue;
            };
            let message = match watch.next().await {
                Ok(Some(m)) => m,
                Ok(None) | Err(_) => {
                    // Closed or broken: watch again from where we are.
                    self.watch = None;
                    continue;
                }
            };
            match message {
                WatchMessage::Progress { revision } => {
                    if self.went_back(revision) {
                        return self.relist(ResetReason::WentBack).await;
                    }
                    self.revision = self.revision.max(revision);
                }
                WatchMessage::Events { revision, events } => {
                    if self.went_back(revision) {
                        return self.relist(ResetReason::WentBack).await;
                    }
                    let fresh = self.fresh(events);
                    if let Some(last) = fresh.last().and_then(|e| e.kv.as_ref()) {
                        self.revision = last.mod_revision;
                        return Ok(Update::Events {
                            revision: self.revision,
                            events: fresh,
                        });
                    }
                }
                WatchMessage::Compacted { .. } => {
                    self.watch = None;
                    return self.relist(ResetReason::Compacted).await;
                }
                WatchMessage::Canceled { reason } => {
                    tracing::debug!(%reason, "etcd cancelled the watch; watching again");
                    self.watch = None;
                }
            }
        }
    }

    /// Events newer than the last reported revision, in order; older ones
    /// (duplicates) are dropped and counted.
    fn fresh(&mut self, events: Vec<pb::Event>) -> Vec<pb::Event> {
        let mut last = self.revision;
        let mut fresh = Vec::with_capacity(events.len());
        for event in events {
            let rev = event.kv.as_ref().map_or(0, |kv| kv.mod_revision);
            // Events of one revision (a transaction) share it.
            if rev < last || (rev == last && rev <= self.revision) {
                if rev != self.replayed {
                    self.dropped += 1;
                }
                continue;
            }
            last = rev;
            fresh.push(event);
        }
        fresh
    }

    /// Asks etcd to say how far the watch has come (a progress message,
    /// which moves [`revision`](Self::revision) without an update: a caller
    /// waiting for a revision with no change under the prefix learns it has
    /// passed). Nothing happens while no watch is open.
    pub async fn request_progress(&self) -> Result<(), Error> {
        match &self.watch {
            Some(watch) => watch.request_progress().await,
            None => Ok(()),
        }
    }

    /// Drops the watch: the next [`next`](Self::next) watches again from
    /// the revision after the last reported (for a caller that suspects the
    /// stream is a dead connection). [`next`](Self::next) may be cancelled
    /// for this: what it reported is recorded before it returns.
    pub fn rewatch(&mut self) {
        self.watch = None;
    }

    /// Whether `header` is older than a header already seen (and so the
    /// member answering is behind the state already reported); records it.
    fn went_back(&mut self, header: i64) -> bool {
        if header < self.highest_header {
            return true;
        }
        self.highest_header = header;
        false
    }

    /// Lists the prefix (a linearizable read, so never behind what was
    /// reported; if a member answers so, the list is tried again, and
    /// after 10 tries the error says so).
    async fn relist(&mut self, reason: ResetReason) -> Result<Update, Error> {
        self.watch = None;
        let reported = self.revision;
        let mut tries = 0;
        loop {
            let listed = self
                .client
                .range(&self.prefix, &prefix_end(&self.prefix), 0)
                .await?;
            let revision = listed.header.as_ref().map_or(0, |h| h.revision);
            if revision >= reported {
                self.revision = revision;
                self.highest_header = revision;
                return Ok(Update::Reset {
                    revision,
                    kvs: listed.kvs,
                    reason,
                });
            }
            tries += 1;
            if tries >= 10 {
                return Err(Error::Watch(format!(
                    "etcd lists revision {revision}, older than {reported} already reported"
                )));
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// Opens the watch from the last reported revision itself, not the one
    /// after, with backoff after failures (100 ms doubling to 2 s).
    ///
    /// Why not the one after: compacting at revision C removes the
    /// deletions made at C, yet a watch from C is not told it was
    /// compacted (only one from below C is). A follower at C - 1 watching
    /// from C would silently miss those deletes (the HA checker caught a
    /// replica that kept deleted instances this way). From C - 1 it is
    /// told, and relists; the events of the reported revision that come
    /// again are dropped (not counted as etcd's duplicates).
    async fn open(&mut self) -> Result<(), Error> {
        if self.failures > 0 {
            let wait =
                Duration::from_millis(100 << self.failures.min(5)).min(Duration::from_secs(2));
            tokio::time::sleep(wait).await;
        }
        match self.client.watch_prefix(&self.prefix, self.revision).await {
            Ok(watch) => {
                self.failures = 0;
                self.replayed = self.revision;
                self.watch = Some(watch);
                Ok(())
            }
            Err(e) => {
                self.failures += 1;
                tracing::debug!(error = %e, "etcd watch could not be opened; retrying");
                // Not the caller's error: the next loop retries.
                Ok(())
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(key: &str, rev: i64) -> pb::Event {
        pb::Event {
            r#type: pb::event::EventType::Put as i32,
            kv: Some(pb::KeyValue {
                key: key.as_bytes().to_vec(),
                mod_revision: rev,
                ..Default::default()
            }),
            prev_kv: None,
        }
    }

    fn follower_at(revision: i64) -> Follower {
        let mut f = Follower::new(
            Client::new(&["http://127.0.0.1:1"]).expect("client"),
            b"/p/",
        );
        f.revision = revision;
        f
    }

    // A runtime for the client's lazy channel; nothing is dialled.
    #[tokio::test]
    async fn duplicated_events_are_dropped_and_a_transaction_kept_whole() {
        let mut f = follower_at(10);
        // etcd #15275: events of revisions already reported come again.
        let fresh = f.fresh(vec![
            event("/p/a", 9),
            event("/p/b", 10),
            event("/p/c", 11),
            event("/p/d", 11),
            event("/p/e", 12),
        ]);
        let revs: Vec<i64> = fresh
            .iter()
            .map(|e| e.kv.as_ref().expect("kv").mod_revision)
            .collect();
        assert_eq!(revs, vec![11, 11, 12], "both events of transaction 11 kept");
        assert_eq!(f.dropped(), 2);
        // Out of order within a batch: the older one is dropped.
        f.revision = 12;
        let fresh = f.fresh(vec![event("/p/f", 14), event("/p/g", 13)]);
        assert_eq!(fresh.len(), 1);
        assert_eq!(f.dropped(), 3);
    }

    #[tokio::test]
    async fn a_header_older_than_one_seen_is_going_back() {
        let mut f = follower_at(10);
        assert!(!f.went_back(12));
        assert!(!f.went_back(12));
        assert!(
            f.went_back(11),
            "etcd #15271: a member behind what was reported"
        );
    }
}
