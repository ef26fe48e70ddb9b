//! `command:<name>` handlers (DESIGN 10.4): the configured program runs
//! with its arguments (no shell), the task input as JSON on stdin; its
//! stdout, JSON, is the output. A non-zero exit fails the attempt with the
//! last 4 KiB of stderr (retried while attempts are left). The program runs
//! in a process group of its own, which is killed whole on the handler's
//! timeout and whenever the attempt stops before the program does (the
//! step's timeout, a cancel, a lost lease, shutdown).

use std::process::Stdio;
use std::time::Duration;

use serde_json::{json, Value};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio::process::Command;

use super::http::request_body;
use super::{BoxFuture, Handler, HandlerError, TaskContext};
use crate::config::CommandHandlerConfig;

/// How much of stderr a failure keeps (its end).
const STDERR_TAIL: usize = 4096;
/// Most of stdout read (a larger output fails the attempt).
const MAX_STDOUT: usize = 64 << 20;

/// One configured `command:<name>` handler.
pub struct CommandHandler {
    name: String,
    cfg: CommandHandlerConfig,
}

impl CommandHandler {
    pub fn new(name: &str, cfg: &CommandHandlerConfig) -> CommandHandler {
        CommandHandler {
            name: format!("command:{name}"),
            cfg: cfg.clone(),
        }
    }
}

/// Kills the process group `pgid` when dropped, unless disarmed (the
/// program ended on its own and was reaped).
struct GroupGuard {
    pgid: Option<i32>,
}

impl GroupGuard {
    fn kill(&mut self) {
        if let Some(pgid) = self.pgid.take() {
            // SAFETY: killpg only sends a signal; pgid is a group this
            // handler made (the leader is its child, not yet reaped).
            unsafe {
                libc::killpg(pgid, libc::SIGKILL);
            }
        }
    }
}

impl Drop for GroupGuard {
    fn drop(&mut self) {
        self.kill();
    }
}

impl Handler for CommandHandler {
    fn call(&self, ctx: TaskContext) -> BoxFuture {
        let name = self.name.clone();
        let cfg = self.cfg.clone();
        Box::pin(async move { run(&name, &cfg, &ctx).await })
    }
}

async fn run(
    name: &str,
    cfg: &CommandHandlerConfig,
    ctx: &TaskContext,
) -> Result<Value, HandlerError> {
    let input = serde_json::to_vec(&request_body(ctx))
        .map_err(|e| HandlerError::message(format!("{name}: input: {e}")))?;
    let mut cmd = Command::new(&cfg.program);
    cmd.args(&cfg.args)
        .envs(cfg.env.iter().map(|(k, v)| (k, v)))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0)
        .kill_on_drop(true);
    let mut child = cmd.spawn().map_err(|e| {
        HandlerError::message(format!("{name}: could not start `{}`: {e}", cfg.program))
    })?;
    let mut guard = GroupGuard {
        pgid: child.id().map(|p| p as i32),
    };
    let mut stdin = child.stdin.take();
    let stdout = child.stdout.take();
    let stderr = child.stderr.take();
    let feed = async move {
        if let Some(mut s) = stdin.take() {
            // A program that does not read its input closes the pipe early:
            // that is its business, not a failure.
            let _ = s.write_all(&input).await;
            let _ = s.shutdown().await;
        }
    };
    let work = async {
        let (_, out, err, status) = tokio::join!(
            feed,
            read_capped(stdout, MAX_STDOUT),
            read_tail(stderr, STDERR_TAIL),
            child.wait()
        );
        (out, err, status)
    };
    let (out, err, status) =
        match tokio::time::timeout(Duration::from_millis(cfg.timeout_ms), work).await {
            Ok(r) => r,
            Err(_) => {
                guard.kill();
                return Err(HandlerError::retried(json!({
                    "message": format!(
                        "{name}: timed out after {} ms; its process group was killed",
                        cfg.timeout_ms
                    ),
                })));
            }
        };
    let status = status.map_err(|e| HandlerError::message(format!("{name}: wait: {e}")))?;
    // Reaped: its group id may be reused; nothing of ours to kill now.
    guard.pgid = None;
    let stderr_tail = String::from_utf8_lossy(&err).into_owned();
    if !status.success() {
        let how = match status.code() {
            Some(c) => format!("exited with status {c}"),
            None => "was killed by a signal".to_string(),
        };
        return Err(HandlerError::retried(json!({
            "message": format!("{name}: `{}` {how}", cfg.program),
            "exit_code": status.code(),
            "stderr": stderr_tail,
        })));
    }
    let out = out.map_err(|m| HandlerError::message(format!("{name}: {m}")))?;
    if out.iter().all(u8::is_ascii_whitespace) {
        return Ok(Value::Null);
    }
    serde_json::from_slice(&out).map_err(|e| {
        HandlerError::retried(json!({
            "message": format!("{name}: stdout is not JSON: {e}"),
            "stderr": stderr_tail,
        }))
    })
}

/// All of `r`, up to `max` bytes.
async fn read_capped(r: Option<impl AsyncRead + Unpin>, max: usize) -> Result<Vec<u8>, String> {
    let Some(mut r) = r else {
        return Ok(Vec::new());
    };
    let mut out = Vec::new();
    let mut buf = [0u8; 8192];
    loop {
        let n = r
            .read(&mut buf)
            .await
            .map_err(|e| format!("reading stdout: {e}"))?;
        if n == 0 {
            return Ok(out);
        }
        if out.len() + n > max {
            return Err(format!("stdout is over {max} bytes"));
        }
        out.extend_from_slice(&buf[..n]);
    }
}

/// The last `keep` bytes of `r`.
async fn read_tail(r: Option<impl AsyncRead + Unpin>, keep: usize) -> Vec<u8> {
    let Some(mut r) = r else {
        return Vec::new();
    };
    let mut tail = Vec::new();
    let mut buf = [0u8; 8192];
    while let Ok(n) = r.read(&mut buf).await {
        if n == 0 {
            break;
        }
        tail.extend_from_slice(&buf[..n]);
        if tail.len() > keep {
            tail.drain(..tail.len() - keep);
        }
    }
    tail
}
