//! The drills this process runs right now, so `swf drill recover` (here,
//! or on a peer that asks) can tell a live drill from one whose process was
//! killed. Cluster-wide exclusivity is the journal's (one `running` row);
//! one drill or recovery at a time per node is the API's lock. Also the
//! dev-only hold points that stop a drill at a phase.

use std::collections::HashSet;
use std::sync::Mutex;

use uuid::Uuid;

/// Environment variable (`swf dev` builds only): the name of a hold point at
/// which every drill of this process stops for good, after logging
/// `drill held at phase `<name>``, so a test can kill the process there.
pub const HOLD_ENV: &str = "SWF_DEV_DRILL_HOLD_AT";

/// The drills this process runs.
static LIVE: Mutex<Option<HashSet<Uuid>>> = Mutex::new(None);

fn with<T>(f: impl FnOnce(&mut HashSet<Uuid>) -> T) -> T {
    let mut live = LIVE.lock().expect("live drills lock");
    f(live.get_or_insert_with(HashSet::new))
}

/// Whether this process runs the drill `id` right now.
pub fn is_active(id: Uuid) -> bool {
    with(|l| l.contains(&id))
}

/// A drill this process runs, registered until dropped (registered before
/// its row is claimed, so a live drill is never taken for a dead one).
pub(super) struct LiveDrill(Uuid);

impl LiveDrill {
    pub(super) fn enter(id: Uuid) -> LiveDrill {
        with(|l| l.insert(id));
        LiveDrill(id)
    }
}

impl Drop for LiveDrill {
    fn drop(&mut self) {
        with(|l| l.remove(&self.0));
    }
}

/// A hold point: in builds with the `dev` feature, when [`HOLD_ENV`] names
/// `phase`, logs that the drill is held there and never returns (the test
/// that set it kills the process). Otherwise returns at once.
pub async fn hold_point(phase: &str) {
    #[cfg(feature = "dev")]
    if std::env::var(HOLD_ENV).is_ok_and(|v| v == phase) {
        tracing::warn!("drill held at phase `{phase}` ({HOLD_ENV}); waiting to be killed");
        std::future::pending::<()>().await;
    }
    #[cfg(not(feature = "dev"))]
    let _ = phase;
}
