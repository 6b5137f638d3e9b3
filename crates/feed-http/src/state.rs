//! [`Lifecycle`]: where the server is in its life, for the health endpoints
//! and the guard.

use std::sync::atomic::{AtomicBool, Ordering};

/// Loading, then serving, then draining. Shared by every worker.
#[derive(Debug, Default)]
pub struct Lifecycle {
    loaded: AtomicBool,
    draining: AtomicBool,
}

impl Lifecycle {
    /// A server whose data is still loading.
    pub fn loading() -> Self {
        Self::default()
    }

    /// The data is loaded and the feed service is in place.
    pub fn mark_loaded(&self) {
        self.loaded.store(true, Ordering::Release);
    }

    /// Shutdown has begun: stop advertising readiness, close connections
    /// after their current response.
    pub fn begin_drain(&self) {
        self.draining.store(true, Ordering::Release);
    }

    /// The data is loaded.
    pub fn is_loaded(&self) -> bool {
        self.loaded.load(Ordering::Acquire)
    }

    /// Shutdown has begun.
    pub fn is_draining(&self) -> bool {
        self.draining.load(Ordering::Acquire)
    }

    /// Loaded and not draining: a load balancer may send traffic.
    pub fn is_ready(&self) -> bool {
        self.is_loaded() && !self.is_draining()
    }
}
