//! Why a drill was refused or failed: the one error type of the drill layer.

/// Why a drill (or a recovery) was refused or failed.
#[derive(Debug, thiserror::Error)]
pub enum DrillError {
    #[error("unknown region `{0}`")]
    UnknownRegion(String),
    #[error("{0}")]
    Refused(String),
    /// Another drill or a recovery runs, or an interrupted drill awaits
    /// `swf drill recover` (409 `drill_in_progress`).
    #[error("{0}")]
    InProgress(String),
    #[error("drill failed: {0}")]
    Failed(String),
}

/// A step of the drill failed after it had started moving the primary.
pub(super) fn failed(e: impl std::fmt::Display) -> DrillError {
    DrillError::Failed(e.to_string())
}
