//! `http:<name>` handlers (DESIGN 10.4): the task input is POSTed as JSON
//! to the configured URL; a 2xx JSON body is the output. A 4xx answer fails
//! the step at once (sending the same request again cannot help); a 5xx, a
//! timeout or a connection error is retried while attempts are left. With a
//! secret, each body is signed: `swf-signature: sha256=<hex HMAC-SHA256 of
//! the body>`, so the receiver can tell the request came from this cluster.

use std::time::Duration;

use hmac::{Hmac, Mac};
use serde_json::{json, Value};
use sha2::Sha256;

use super::{BoxFuture, Handler, HandlerError, TaskContext};
use crate::config::HttpHandlerConfig;

/// The signature header.
pub const H_SIGNATURE: &str = "swf-signature";
/// Most of an answer's body read (larger answers fail the attempt).
const MAX_BODY_BYTES: usize = 64 << 20;
/// How much of an error answer's body the attempt's error keeps.
const ERROR_BODY_BYTES: usize = 4096;

/// One configured `http:<name>` handler.
pub struct HttpHandler {
    name: String,
    url: String,
    secret: Option<Vec<u8>>,
    client: reqwest::Client,
}

impl HttpHandler {
    pub fn new(name: &str, cfg: &HttpHandlerConfig) -> HttpHandler {
        let client = reqwest::Client::builder()
            .timeout(Duration::from_millis(cfg.timeout_ms))
            .build()
            .unwrap_or_default();
        HttpHandler {
            name: format!("http:{name}"),
            url: cfg.url.clone(),
            secret: cfg.secret.as_ref().map(|s| s.as_bytes().to_vec()),
            client,
        }
    }
}

/// `sha256=<hex>` of `body` under `secret`.
pub fn signature(secret: &[u8], body: &[u8]) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret).expect("HMAC takes any key length");
    mac.update(body);
    let bytes = mac.finalize().into_bytes();
    let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    format!("sha256={hex}")
}

/// The body the receiver gets: the task input (`run`, `step`, `deps`, and
/// `item`/`index` for a map task) with the task's identity.
pub fn request_body(ctx: &TaskContext) -> Value {
    let mut body = match &ctx.input {
        Value::Object(m) => m.clone(),
        other => {
            let mut m = serde_json::Map::new();
            m.insert("input".into(), other.clone());
            m
        }
    };
    body.insert("run_id".into(), json!(ctx.run_id));
    body.insert("step_id".into(), json!(ctx.step_id));
    body.insert("attempt".into(), json!(ctx.attempt));
    Value::Object(body)
}

impl Handler for HttpHandler {
    fn call(&self, ctx: TaskContext) -> BoxFuture {
        let name = self.name.clone();
        let url = self.url.clone();
        let secret = self.secret.clone();
        let client = self.client.clone();
        Box::pin(async move {
            let body = serde_json::to_vec(&request_body(&ctx))
                .map_err(|e| HandlerError::message(format!("{name}: input: {e}")))?;
            let mut req = client
                .post(&url)
                .header(reqwest::header::CONTENT_TYPE, "application/json");
            if let Some(secret) = &secret {
                req = req.header(H_SIGNATURE, signature(secret, &body));
            }
            let resp = req.body(body).send().await.map_err(|e| {
                let what = if e.is_timeout() {
                    "timed out"
                } else if e.is_connect() {
                    "could not connect"
                } else {
                    "failed"
                };
                HandlerError::retried(json!({
                    "message": format!("{name}: POST {url} {what}: {}", crate::api::tls::error_chain(&e)),
                }))
            })?;
            let status = resp.status();
            let bytes = read_limited(resp)
                .await
                .map_err(|m| HandlerError::retried(json!({"message": format!("{name}: {m}")})))?;
            if status.is_success() {
                if bytes.iter().all(u8::is_ascii_whitespace) {
                    return Ok(Value::Null);
                }
                return serde_json::from_slice(&bytes).map_err(|e| {
                    HandlerError::retried(json!({
                        "message": format!("{name}: the {status} answer is not JSON: {e}"),
                        "status": status.as_u16(),
                    }))
                });
            }
            let text = String::from_utf8_lossy(&bytes[..bytes.len().min(ERROR_BODY_BYTES)]);
            let error = json!({
                "message": format!("{name}: POST {url} answered {status}"),
                "status": status.as_u16(),
                "body": text,
            });
            if status.is_client_error() {
                Err(HandlerError::fatal(error))
            } else {
                Err(HandlerError::retried(error))
            }
        })
    }
}

/// The answer's body, up to [`MAX_BODY_BYTES`].
async fn read_limited(mut resp: reqwest::Response) -> Result<Vec<u8>, String> {
    let mut out = Vec::new();
    while let Some(chunk) = resp
        .chunk()
        .await
        .map_err(|e| format!("reading the answer: {e}"))?
    {
        if out.len() + chunk.len() > MAX_BODY_BYTES {
            return Err(format!("the answer is over {MAX_BODY_BYTES} bytes"));
        }
        out.extend_from_slice(&chunk);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_signature_is_the_hmac_sha256_of_the_body_in_hex() {
        // RFC 4231 test case 2.
        assert_eq!(
            signature(b"Jefe", b"what do ya want for nothing?"),
            "sha256=5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
    }

    #[test]
    fn the_body_carries_the_task_identity_and_its_input() {
        let ctx = TaskContext {
            run_id: uuid::Uuid::nil(),
            step_id: "s".into(),
            attempt: 2,
            input: json!({"run": {"a": 1}, "step": null, "deps": {}}),
        };
        assert_eq!(
            request_body(&ctx),
            json!({"run_id": uuid::Uuid::nil(), "step_id": "s", "attempt": 2,
                   "run": {"a": 1}, "step": null, "deps": {}})
        );
    }
}
