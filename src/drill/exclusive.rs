//! What this process is doing to the cluster right now: the drills it runs
//! (so `swf drill recover`, and a peer asking, can tell a live drill from
//! one whose process was killed) and whether a recovery runs. Cluster-wide
//! exclusivity is the journal's (one `running` row); this is the process's
//! part of it. Also the dev-only hold points that stop a drill at a phase.

use std::collections::HashSet;
use std::sync::Mutex;

use uuid::Uuid;

use super::error::DrillError;

/// Environment variable (`swf dev` builds only): the name of a hold point at
/// which every drill of this process stops for good, after logging
/// `drill held at phase `<name>``, so a test can kill the process there.
pub const HOLD_ENV: &str = "SWF_DEV_DRILL_HOLD_AT";

#[derive(Default)]
struct Activity {
    drills: HashSet<Uuid>,
    recovering: bool,
}

static ACTIVITY: Mutex<Option<Activity>> = Mutex::new(None);

fn with<T>(f: impl FnOnce(&mut Activity) -> T) -> T {
    let mut a = ACTIVITY.lock().expect("drill activity lock");
    f(a.get_or_insert_with(Activity::default))
}

/// Whether this process runs the drill `id` right now.
pub fn is_active(id: Uuid) -> bool {
    with(|a| a.drills.contains(&id))
}

/// A drill this process runs, registered until dropped.
pub(super) struct LiveDrill(Uuid);

impl LiveDrill {
    /// Registers drill `id`; refused while this process runs a recovery.
    pub(super) fn enter(id: Uuid) -> Result<LiveDrill, DrillError> {
        with(|a| {
            if a.recovering {
                return Err(DrillError::InProgress(
                    "`swf drill recover` is running on this node".into(),
                ));
            }
            a.drills.insert(id);
            Ok(LiveDrill(id))
        })
    }
}

impl Drop for LiveDrill {
    fn drop(&mut self) {
        with(|a| a.drills.remove(&self.0));
    }
}

/// A recovery this process runs, registered until dropped.
pub(super) struct Recovering(());

impl Recovering {
    /// Refused while this process runs a drill or another recovery.
    pub(super) fn enter() -> Result<Recovering, DrillError> {
        with(|a| {
            if a.recovering {
                return Err(DrillError::InProgress(
                    "another `swf drill recover` is running on this node".into(),
                ));
            }
            if let Some(id) = a.drills.iter().next() {
                return Err(DrillError::InProgress(format!(
                    "drill {id} is running on this node"
                )));
            }
            a.recovering = true;
            Ok(Recovering(()))
        })
    }
}

impl Drop for Recovering {
    fn drop(&mut self) {
        with(|a| a.recovering = false);
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
