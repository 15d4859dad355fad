//! Shared answers: each view rendered at most once per `stats.cache_ms`, its bytes shared by every client in that window.

use std::sync::Arc;
use std::time::{Duration, Instant};

/// A view of the proxy that is rendered (and so worth sharing).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum View {
    /// `/` and `/statistic`.
    Html,
    /// `/stats`.
    Json,
    /// `/metrics`.
    Metrics,
}

impl View {
    fn slot(self) -> usize {
        match self {
            View::Html => 0,
            View::Json => 1,
            View::Metrics => 2,
        }
    }
}

/// A complete HTTP response (head and body), shared by every connection
/// that sends it: 64 clients reading one large page hold one copy.
#[derive(Clone)]
pub struct Answer {
    bytes: Arc<[u8]>,
    head_len: usize,
}

impl Answer {
    /// The response made of `head` (ending in the blank line) and `body`.
    pub fn new(head: &[u8], body: &[u8]) -> Answer {
        let mut bytes = Vec::with_capacity(head.len() + body.len());
        bytes.extend_from_slice(head);
        bytes.extend_from_slice(body);
        Answer {
            bytes: bytes.into(),
            head_len: head.len(),
        }
    }

    /// The bytes to send and how many of them: all, or the head only (HEAD).
    pub fn to_send(&self, head_only: bool) -> (Arc<[u8]>, usize) {
        let len = if head_only { self.head_len } else { self.bytes.len() };
        (self.bytes.clone(), len)
    }

    /// Length of the whole response.
    pub(crate) fn len(&self) -> usize {
        self.bytes.len()
    }
}

/// One view's rendered answer and what it was rendered from.
struct Entry {
    at: Instant,
    /// `State::changes` when rendered: a health, admin or reload change
    /// since makes the answer stale at once.
    changes: u64,
    answer: Answer,
}

/// The last answer of each view.
pub(super) struct Cache {
    max_age: Duration,
    entries: [Option<Entry>; 3],
}

impl Cache {
    pub(super) fn new(max_age: Duration) -> Cache {
        Cache {
            max_age,
            entries: [None, None, None],
        }
    }

    /// A new window length; what was rendered is dropped.
    pub(super) fn set_max_age(&mut self, max_age: Duration) {
        *self = Cache::new(max_age);
    }

    /// The answer of `view` if it was rendered less than the window ago and
    /// nothing has changed since (`changes`: the current `State::changes`).
    pub(super) fn get(&self, view: View, changes: u64, now: Instant) -> Option<Answer> {
        let e = self.entries.get(view.slot())?.as_ref()?;
        let fresh = e.changes == changes && now.saturating_duration_since(e.at) < self.max_age;
        fresh.then(|| e.answer.clone())
    }

    /// Keeps `answer` as the answer of `view`, rendered at `now`.
    pub(super) fn put(&mut self, view: View, changes: u64, now: Instant, answer: Answer) {
        if let Some(slot) = self.entries.get_mut(view.slot()) {
            *slot = Some(Entry {
                at: now,
                changes,
                answer,
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers_are_shared_within_the_window_and_renewed_by_changes() {
        let now = Instant::now();
        let mut c = Cache::new(Duration::from_millis(1000));
        assert!(c.get(View::Json, 0, now).is_none());
        c.put(View::Json, 0, now, Answer::new(b"head\r\n\r\n", b"body"));
        let a = c.get(View::Json, 0, now + Duration::from_millis(999)).unwrap();
        let b = c.get(View::Json, 0, now).unwrap();
        assert!(Arc::ptr_eq(&a.bytes, &b.bytes), "one copy, shared");
        assert_eq!(a.to_send(true).1, 8);
        assert_eq!(a.to_send(false).1, 12);
        assert!(c.get(View::Metrics, 0, now).is_none(), "per view");
        assert!(
            c.get(View::Json, 0, now + Duration::from_millis(1000)).is_none(),
            "expired"
        );
        assert!(c.get(View::Json, 1, now).is_none(), "a change since");
        c.set_max_age(Duration::ZERO);
        c.put(View::Json, 0, now, Answer::new(b"h", b"b"));
        assert!(c.get(View::Json, 0, now).is_none(), "zero: rendered for every request");
    }
}
