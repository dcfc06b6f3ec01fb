//! The one "draining" flag of a process: set on SIGTERM, read by the engine's admission and by
//! every front end's readiness.

use tokio::sync::watch;

#[derive(Debug)]
pub struct Drain(watch::Sender<bool>);

impl Default for Drain {
    fn default() -> Self {
        Drain(watch::channel(false).0)
    }
}

impl Drain {
    /// From now on new work is refused and readiness is false; admitted work still runs.
    pub fn begin(&self) {
        self.0.send_replace(true);
    }

    pub fn is_draining(&self) -> bool {
        *self.0.borrow()
    }

    /// Resolves once draining has begun.
    pub async fn started(&self) {
        let mut rx = self.0.subscribe();
        let _ = rx.wait_for(|d| *d).await;
    }
}
