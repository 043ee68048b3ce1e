//! Counted job slots with a capacity that can change at run time (config reload), handing out
//! the lowest free slot number (`CI_CONCURRENT_ID`).

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};
use tokio::sync::Notify;

/// A pool of numbered slots.
#[derive(Debug)]
pub struct Slots {
    inner: Mutex<Inner>,
    freed: Notify,
}

#[derive(Debug)]
struct Inner {
    capacity: usize,
    used: BTreeSet<usize>,
}

/// A taken slot; released on drop.
#[derive(Debug)]
pub struct SlotGuard {
    slots: Arc<Slots>,
    id: usize,
}

impl SlotGuard {
    /// The slot number.
    pub fn id(&self) -> usize {
        self.id
    }
}

impl Drop for SlotGuard {
    fn drop(&mut self) {
        if let Ok(mut inner) = self.slots.inner.lock() {
            inner.used.remove(&self.id);
        }
        self.slots.freed.notify_waiters();
    }
}

impl Slots {
    /// A pool of `capacity` slots.
    pub fn new(capacity: usize) -> Arc<Self> {
        Arc::new(Slots {
            inner: Mutex::new(Inner {
                capacity,
                used: BTreeSet::new(),
            }),
            freed: Notify::new(),
        })
    }

    /// Changes the capacity; slots in use above it are kept until released.
    pub fn set_capacity(&self, capacity: usize) {
        if let Ok(mut inner) = self.inner.lock() {
            inner.capacity = capacity;
        }
        self.freed.notify_waiters();
    }

    /// Takes a slot now, if one is free.
    pub fn try_acquire(self: &Arc<Self>) -> Option<SlotGuard> {
        let mut inner = self.inner.lock().ok()?;
        if inner.used.len() >= inner.capacity {
            return None;
        }
        let id = (0..).find(|i| !inner.used.contains(i))?;
        inner.used.insert(id);
        Some(SlotGuard {
            slots: Arc::clone(self),
            id,
        })
    }

    /// Waits for a free slot.
    pub async fn acquire(self: &Arc<Self>) -> SlotGuard {
        loop {
            let freed = self.freed.notified();
            tokio::pin!(freed);
            // Register interest before looking, so a release in between is not missed.
            freed.as_mut().enable();
            if let Some(g) = self.try_acquire() {
                return g;
            }
            freed.await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn capacity_is_never_exceeded_and_ids_are_reused() {
        let s = Slots::new(2);
        let a = s.acquire().await;
        let b = s.acquire().await;
        assert_eq!((a.id(), b.id()), (0, 1));
        assert!(s.try_acquire().is_none());
        let waiter = {
            let s = Arc::clone(&s);
            tokio::spawn(async move { s.acquire().await.id() })
        };
        drop(a);
        assert_eq!(waiter.await.unwrap(), 0);
        s.set_capacity(3);
        assert!(s.try_acquire().is_some());
    }
}
