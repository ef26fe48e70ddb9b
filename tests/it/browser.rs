//! A minimal W3C WebDriver client for tests that drive a real headless
//! Chromium through chromedriver (Debian's `chromium` and `chromium-driver`).
//!
//! Every call panics with a readable message on failure: this is test code.
//! Dropping a [`Browser`] ends the WebDriver session, makes sure the Chromium
//! process tree is gone, stops chromedriver and removes the throwaway profile.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use reqwest::Method;
use serde_json::{json, Value};
use tokio::io::{AsyncBufReadExt, BufReader, Lines};
use tokio::process::{Child, ChildStdout, Command};

const MISSING: &str =
    "headless Chromium missing: install Debian's chromium and chromium-driver (.ci/run does)";
/// The W3C key under which a found element's reference comes back.
const ELEMENT_KEY: &str = "element-6066-11e4-a52e-4f735466cecf";
const STARTUP: Duration = Duration::from_secs(20);
const STARTUP_POLL: Duration = Duration::from_millis(50);
const WAIT_POLL: Duration = Duration::from_millis(100);

/// One chromedriver process with one session on its own headless Chromium.
pub struct Browser {
    http: reqwest::Client,
    /// `http://127.0.0.1:{port}/session/{id}`.
    base: String,
    port: u16,
    session: String,
    /// Chromium's main process (capability `goog:processID`).
    browser_pid: Option<i32>,
    /// Fresh `--user-data-dir` plus chromedriver's log file.
    profile: PathBuf,
    driver: Child,
}

impl Browser {
    /// Starts chromedriver on a free port and opens a session on a fresh
    /// headless Chromium profile.
    pub async fn start() -> Browser {
        let driver_bin = find_chromedriver().unwrap_or_else(|| panic!("{MISSING}"));
        let chromium = find_chromium().unwrap_or_else(|| panic!("{MISSING}"));
        let profile = fresh_profile_dir();
        let log_path = profile.join("chromedriver.log");
        let user_data = profile.join("user-data");
        std::fs::create_dir_all(&user_data)
            .unwrap_or_else(|e| panic!("create {}: {e}", user_data.display()));
        let deadline = Instant::now() + STARTUP;

        // --port=0 lets chromedriver bind a free port itself (no window for
        // another process to take it between probing and binding); it
        // prints the port it got on stdout. It binds IPv6 first, then IPv4
        // on the same port, which another test's listener may hold: then
        // it exits ("IPv4 port not available") and a fresh start picks
        // another port.
        let mut attempt = 0;
        let (driver, port, mut lines) = loop {
            attempt += 1;
            match spawn_driver(&driver_bin, &log_path, deadline).await {
                Ok(started) => break started,
                Err(why) if why.contains("port not available") && attempt < 5 => continue,
                Err(why) => panic!("{why}"),
            }
        };
        // Keep draining stdout so chromedriver can never block on a full pipe.
        tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });

        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(60))
            .build()
            .expect("HTTP client");
        let root = format!("http://127.0.0.1:{port}");
        loop {
            let ready = match http.get(format!("{root}/status")).send().await {
                Ok(resp) => resp
                    .json::<Value>()
                    .await
                    .map(|v| v["value"]["ready"] == true)
                    .unwrap_or(false),
                Err(_) => false,
            };
            if ready {
                break;
            }
            if Instant::now() >= deadline {
                panic!(
                    "chromedriver on port {port} not ready within {STARTUP:?}; log:\n{}",
                    log_tail(&log_path)
                );
            }
            tokio::time::sleep(STARTUP_POLL).await;
        }

        let caps = json!({"capabilities": {"alwaysMatch": {
            "browserName": "chrome",
            "goog:chromeOptions": {
                "binary": chromium.to_string_lossy(),
                "args": [
                    "--headless=new",
                    // We run as root in CI; Chromium refuses to sandbox then.
                    "--no-sandbox",
                    "--disable-gpu",
                    "--disable-dev-shm-usage",
                    "--window-size=1400,1000",
                    format!("--user-data-dir={}", user_data.display()),
                ],
            },
            "goog:loggingPrefs": {"browser": "ALL"},
        }}});
        let resp = http
            .post(format!("{root}/session"))
            .json(&caps)
            .send()
            .await
            .unwrap_or_else(|e| panic!("WebDriver new session: {e}"));
        let status = resp.status();
        let body: Value = resp
            .json()
            .await
            .unwrap_or_else(|e| panic!("WebDriver new session: {status}: {e}"));
        let session = match body["value"]["sessionId"].as_str() {
            Some(id) if status.is_success() => id.to_string(),
            _ => panic!(
                "WebDriver new session with {} failed: {status}: {body}\nchromedriver log:\n{}",
                chromium.display(),
                log_tail(&log_path)
            ),
        };
        let browser_pid = body["value"]["capabilities"]["goog:processID"]
            .as_i64()
            .map(|p| p as i32);
        Browser {
            http,
            base: format!("{root}/session/{session}"),
            port,
            session,
            browser_pid,
            profile,
            driver,
        }
    }

    /// Navigates and waits for the page load (WebDriver's "normal" strategy).
    pub async fn goto(&self, url: &str) {
        self.cmd(Method::POST, "/url", Some(json!({ "url": url })))
            .await;
    }

    /// Runs `script` as a function body (`return` gives the value; the
    /// arguments are `arguments[0..]`) and returns its result.
    pub async fn exec(&self, script: &str, args: Vec<Value>) -> Value {
        self.cmd(
            Method::POST,
            "/execute/sync",
            Some(json!({ "script": script, "args": args })),
        )
        .await
    }

    /// Re-runs `script` every 100 ms until it returns a truthy value (not
    /// null, false, "" or 0) and returns that value. Script errors (e.g.
    /// while a navigation is under way) count as not yet. Panics after
    /// `secs` seconds with `what`, the last result, the URL and the page text.
    pub async fn wait_js(&self, what: &str, secs: u64, script: &str) -> Value {
        self.wait_js_with(what, secs, script, vec![]).await
    }

    async fn wait_js_with(&self, what: &str, secs: u64, script: &str, args: Vec<Value>) -> Value {
        let deadline = Instant::now() + Duration::from_secs(secs);
        let body = json!({ "script": script, "args": args });
        let last = loop {
            let last = match self
                .try_cmd(Method::POST, "/execute/sync", Some(&body))
                .await
            {
                Ok(v) if truthy(&v) => return v,
                Ok(v) => v.to_string(),
                Err(e) => format!("error: {e}"),
            };
            if Instant::now() >= deadline {
                break last;
            }
            tokio::time::sleep(WAIT_POLL).await;
        };
        panic!(
            "timed out after {secs}s waiting for {what}\nlast result: {last}\n{}",
            self.diagnosis().await
        );
    }

    /// innerText of the first element matching `css`, "" if there is none.
    pub async fn text(&self, css: &str) -> String {
        let v = self
            .exec(
                "const e = document.querySelector(arguments[0]); return e ? e.innerText : '';",
                vec![json!(css)],
            )
            .await;
        v.as_str().unwrap_or_default().to_string()
    }

    /// Waits until the first element matching `css` has `needle` in its
    /// innerText; returns that innerText.
    pub async fn wait_text(&self, css: &str, needle: &str, secs: u64) -> String {
        let v = self
            .wait_js_with(
                &format!("{css:?} to contain {needle:?}"),
                secs,
                "const e = document.querySelector(arguments[0]);
                 const t = e ? e.innerText : null;
                 return t !== null && t.includes(arguments[1]) ? {text: t} : null;",
                vec![json!(css), json!(needle)],
            )
            .await;
        v["text"].as_str().unwrap_or_default().to_string()
    }

    /// Clicks the first element matching `css` (WebDriver element click:
    /// scrolls it into view and fails if something else would get the click).
    pub async fn click(&self, css: &str) {
        let found = self
            .try_cmd(
                Method::POST,
                "/element",
                Some(&json!({"using": "css selector", "value": css})),
            )
            .await;
        let id = match found {
            Ok(v) => v[ELEMENT_KEY]
                .as_str()
                .unwrap_or_else(|| panic!("find element {css:?}: no reference in {v}"))
                .to_string(),
            Err(e) => panic!(
                "click {css:?}: cannot find the element: {e}\n{}",
                self.diagnosis().await
            ),
        };
        if let Err(e) = self
            .try_cmd(
                Method::POST,
                &format!("/element/{id}/click"),
                Some(&json!({})),
            )
            .await
        {
            panic!("click {css:?}: {e}\n{}", self.diagnosis().await);
        }
    }

    /// Messages of level SEVERE (console.error, uncaught exceptions, failed
    /// loads) logged since the last call: reading drains the browser log.
    pub async fn console_errors(&self) -> Vec<String> {
        let entries = self
            .cmd(Method::POST, "/se/log", Some(json!({"type": "browser"})))
            .await;
        entries
            .as_array()
            .unwrap_or_else(|| panic!("browser log is not an array: {entries}"))
            .iter()
            .filter(|e| e["level"] == "SEVERE")
            .map(|e| e["message"].as_str().unwrap_or_default().to_string())
            .collect()
    }

    /// Writes a PNG screenshot of the viewport to `path`.
    pub async fn screenshot(&self, path: &Path) {
        let v = self.cmd(Method::GET, "/screenshot", None).await;
        let b64 = v
            .as_str()
            .unwrap_or_else(|| panic!("screenshot is not a string: {v}"));
        let png = base64_decode(b64).unwrap_or_else(|e| panic!("screenshot base64: {e}"));
        std::fs::write(path, png).unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
    }

    /// `sessionStorage.setItem(key, value)` in the current page's origin.
    pub async fn set_session_storage(&self, key: &str, value: &str) {
        self.exec(
            "sessionStorage.setItem(arguments[0], arguments[1]);",
            vec![json!(key), json!(value)],
        )
        .await;
    }

    /// The current URL and the start of the page text, for panic messages.
    async fn diagnosis(&self) -> String {
        let url = match self.try_cmd(Method::GET, "/url", None).await {
            Ok(v) => v
                .as_str()
                .map(str::to_string)
                .unwrap_or_else(|| v.to_string()),
            Err(e) => format!("(unknown: {e})"),
        };
        let body = json!({
            "script": "return document.body ? document.body.innerText : '(no body)';",
            "args": [],
        });
        let text = match self
            .try_cmd(Method::POST, "/execute/sync", Some(&body))
            .await
        {
            Ok(v) => v.as_str().unwrap_or_default().chars().take(2000).collect(),
            Err(e) => format!("(unknown: {e})"),
        };
        format!("current URL: {url}\npage text:\n{text}")
    }

    async fn cmd(&self, method: Method, path: &str, body: Option<Value>) -> Value {
        let what = format!("{method} {path}");
        self.try_cmd(method, path, body.as_ref())
            .await
            .unwrap_or_else(|e| panic!("WebDriver {what}: {e}"))
    }

    /// One session command; `Ok` is the response's `value`, `Err` a
    /// WebDriver or transport error as text.
    async fn try_cmd(
        &self,
        method: Method,
        path: &str,
        body: Option<&Value>,
    ) -> Result<Value, String> {
        let mut req = self.http.request(method, format!("{}{path}", self.base));
        if let Some(body) = body {
            req = req.json(body);
        }
        let resp = req.send().await.map_err(|e| e.to_string())?;
        let status = resp.status();
        let mut doc: Value = resp
            .json()
            .await
            .map_err(|e| format!("{status}: bad body: {e}"))?;
        let value = doc["value"].take();
        if status.is_success() {
            return Ok(value);
        }
        Err(format!(
            "{status}: {}: {}",
            value["error"].as_str().unwrap_or("?"),
            value["message"].as_str().unwrap_or("?")
        ))
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        // Killing chromedriver alone would orphan Chromium, so quit the
        // session first. No runtime may be usable here, hence plain blocking
        // HTTP/1.1 over std.
        let _ = delete_session_blocking(self.port, &self.session);
        if let Some(pid) = self.browser_pid {
            // Normally gone already; killing the main process takes the
            // whole tree (zygotes, renderers, crashpad) with it.
            if is_chromium(pid) {
                unsafe { libc::kill(pid, libc::SIGKILL) };
            }
        }
        let _ = self.driver.start_kill();
        let _ = std::fs::remove_dir_all(&self.profile);
    }
}

fn delete_session_blocking(port: u16, session: &str) -> std::io::Result<()> {
    let addr = std::net::SocketAddr::from(([127, 0, 0, 1], port));
    let mut s = std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(2))?;
    s.set_read_timeout(Some(Duration::from_secs(10)))?;
    s.set_write_timeout(Some(Duration::from_secs(2)))?;
    write!(
        s,
        "DELETE /session/{session} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n\
         Content-Length: 0\r\nConnection: close\r\n\r\n"
    )?;
    // Wait for the answer (chromedriver replies once Chromium has quit). It
    // keeps the connection open despite `Connection: close`, so read exactly
    // the headers plus Content-Length bytes rather than to EOF.
    let mut resp = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        if let Some(end) = resp.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&resp[..end]).to_ascii_lowercase();
            let len = head
                .lines()
                .find_map(|l| l.strip_prefix("content-length:"))
                .and_then(|v| v.trim().parse::<usize>().ok())
                .unwrap_or(0);
            if resp.len() >= end + 4 + len {
                return Ok(());
            }
        }
        match s.read(&mut buf)? {
            0 => return Ok(()),
            n => resp.extend_from_slice(&buf[..n]),
        }
    }
}

/// Whether `pid` is a live (not zombie) Chromium process.
fn is_chromium(pid: i32) -> bool {
    std::fs::read(format!("/proc/{pid}/cmdline"))
        .map(|c| String::from_utf8_lossy(&c).contains("chrom"))
        .unwrap_or(false)
}

fn parse_port(line: &str) -> Option<u16> {
    // "ChromeDriver was started successfully on port 37993."
    let rest = line.split("started successfully on port ").nth(1)?;
    rest.trim_end_matches(|c: char| !c.is_ascii_digit())
        .parse()
        .ok()
}

fn find_chromedriver() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("SWF_CHROMEDRIVER") {
        return Some(PathBuf::from(p)).filter(|p| p.is_file());
    }
    std::env::var_os("PATH")
        .iter()
        .flat_map(std::env::split_paths)
        .map(|dir| dir.join("chromedriver"))
        .chain([PathBuf::from("/usr/bin/chromedriver")])
        .find(|p| p.is_file())
}

fn find_chromium() -> Option<PathBuf> {
    match std::env::var_os("SWF_CHROMIUM") {
        Some(p) => Some(PathBuf::from(p)),
        None => Some(PathBuf::from("/usr/bin/chromium")),
    }
    .filter(|p| p.is_file())
}

fn fresh_profile_dir() -> PathBuf {
    static N: AtomicU64 = AtomicU64::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    let dir = std::env::temp_dir().join(format!(
        "swf-chromium-{}-{}-{nanos}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    ));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("create {}: {e}", dir.display()));
    dir
}

fn log_tail(path: &Path) -> String {
    let log = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = log.lines().collect();
    lines[lines.len().saturating_sub(40)..].join("\n")
}

/// JavaScript truthiness of a JSON value.
fn truthy(v: &Value) -> bool {
    match v {
        Value::Null => false,
        Value::Bool(b) => *b,
        Value::Number(n) => n.as_f64() != Some(0.0),
        Value::String(s) => !s.is_empty(),
        Value::Array(_) | Value::Object(_) => true,
    }
}

/// Standard-alphabet base64 with optional padding; whitespace is skipped.
fn base64_decode(s: &str) -> Result<Vec<u8>, String> {
    let mut out = Vec::with_capacity(s.len() / 4 * 3);
    let (mut acc, mut bits) = (0u32, 0u32);
    for (i, c) in s.bytes().enumerate() {
        let v = match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'+' => 62,
            b'/' => 63,
            b'=' => break,
            b' ' | b'\n' | b'\r' | b'\t' => continue,
            _ => return Err(format!("bad byte {c:#04x} at {i}")),
        };
        acc = (acc << 6) | u32::from(v);
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
            acc &= (1 << bits) - 1;
        }
    }
    Ok(out)
}

#[test]
fn base64_decodes_padded_and_unpadded() {
    assert_eq!(base64_decode("aGVsbG8gd29ybGQ=").unwrap(), b"hello world");
    assert_eq!(base64_decode("aGk").unwrap(), b"hi");
    assert_eq!(base64_decode("iVBORw0KGgo=").unwrap(), b"\x89PNG\r\n\x1a\n");
    assert!(base64_decode("a*b").is_err());
}

const SELF_TEST_PAGE: &str = r#"<!doctype html>
<html><head><title>swf browser self-test</title></head><body>
<div id="greeting">loading</div>
<button id="go" onclick="document.getElementById('out').textContent = 'clicked ' + sessionStorage.getItem('k')">go</button>
<div id="out"></div>
<script>
console.log("just info");
console.error("boom");
setTimeout(() => { document.getElementById("greeting").textContent = "hello from the page"; }, 300);
</script>
</body></html>"#;

/// Serves [`SELF_TEST_PAGE`] at every path but /favicon.ico (204) with
/// hand-written HTTP/1.1, one request per connection.
async fn serve_self_test_page() -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("local addr");
    tokio::spawn(async move {
        loop {
            let Ok((mut conn, _)) = listener.accept().await else {
                return;
            };
            tokio::spawn(async move {
                let mut req = Vec::new();
                let mut buf = [0u8; 4096];
                while !req.windows(4).any(|w| w == b"\r\n\r\n") {
                    match conn.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => req.extend_from_slice(&buf[..n]),
                    }
                }
                let resp = if req.starts_with(b"GET /favicon.ico ") {
                    "HTTP/1.1 204 No Content\r\nConnection: close\r\n\r\n".to_string()
                } else {
                    format!(
                        "HTTP/1.1 200 OK\r\nContent-Type: text/html; charset=utf-8\r\n\
                         Content-Length: {}\r\nConnection: close\r\n\r\n{SELF_TEST_PAGE}",
                        SELF_TEST_PAGE.len()
                    )
                };
                let _ = conn.write_all(resp.as_bytes()).await;
                let _ = conn.shutdown().await;
            });
        }
    });
    format!("http://{addr}/")
}

#[tokio::test]
async fn headless_chromium_runs_scripts_and_reports_console_errors() {
    let url = serve_self_test_page().await;
    let b = Browser::start().await;
    b.goto(&url).await;

    // The greeting changes 300 ms after load, so this really waits.
    assert_eq!(
        b.wait_text("#greeting", "hello", 10).await,
        "hello from the page"
    );
    assert_eq!(b.text("#greeting").await, "hello from the page");
    assert_eq!(b.text("#no-such-element").await, "");
    assert_eq!(
        b.wait_js("the title", 5, "return document.title").await,
        "swf browser self-test"
    );
    assert_eq!(
        b.exec(
            "return arguments[0] + arguments[1]",
            vec![json!(40), json!(2)]
        )
        .await,
        json!(42)
    );

    b.set_session_storage("k", "v42").await;
    b.click("#go").await;
    assert_eq!(b.wait_text("#out", "clicked", 10).await, "clicked v42");

    let errors = b.console_errors().await;
    assert!(
        errors.iter().any(|m| m.contains("\"boom\"")),
        "console.error not reported: {errors:?}"
    );
    assert!(
        !errors.iter().any(|m| m.contains("just info")),
        "console.log reported as an error: {errors:?}"
    );
    // Reading drained the log.
    let again = b.console_errors().await;
    assert!(
        !again.iter().any(|m| m.contains("boom")),
        "log not drained: {again:?}"
    );

    let shot = b.profile.with_extension("png");
    b.screenshot(&shot).await;
    let png = std::fs::read(&shot).expect("read screenshot");
    let _ = std::fs::remove_file(&shot);
    assert!(
        png.starts_with(b"\x89PNG\r\n\x1a\n"),
        "not a PNG: {:?}",
        &png[..png.len().min(16)]
    );
    assert!(
        png.len() > 1000,
        "suspiciously small PNG: {} bytes",
        png.len()
    );

    // Dropping the browser leaves no Chromium behind.
    let pid = b.browser_pid.expect("chromedriver reported Chromium's pid");
    let profile = b.profile.clone();
    assert!(
        is_chromium(pid),
        "Chromium {pid} not running during the test"
    );
    drop(b);
    let deadline = Instant::now() + Duration::from_secs(5);
    while is_chromium(pid) {
        assert!(Instant::now() < deadline, "Chromium {pid} outlived Browser");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(
        !profile.exists(),
        "profile {} left behind",
        profile.display()
    );
}

/// Starts chromedriver on a port of its choosing; answers it with the port
/// and its stdout, or why it exited first.
async fn spawn_driver(
    driver_bin: &Path,
    log_path: &Path,
    deadline: Instant,
) -> Result<(Child, u16, Lines<BufReader<ChildStdout>>), String> {
    let mut driver = Command::new(driver_bin)
        .arg("--port=0")
        .arg(format!("--log-path={}", log_path.display()))
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .unwrap_or_else(|e| panic!("spawn {}: {e}", driver_bin.display()));
    let stdout = driver.stdout.take().expect("chromedriver stdout");
    let mut lines = BufReader::new(stdout).lines();
    let mut seen = String::new();
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let line = match tokio::time::timeout(left, lines.next_line()).await {
            Ok(Ok(Some(line))) => line,
            Ok(Ok(None)) | Ok(Err(_)) => {
                return Err(format!(
                    "chromedriver {} exited before reporting its port; stdout:\n{seen}\nlog:\n{}",
                    driver_bin.display(),
                    log_tail(log_path)
                ))
            }
            Err(_) => {
                return Err(format!(
                    "chromedriver did not report its port within {STARTUP:?}; stdout:\n{seen}"
                ))
            }
        };
        seen.push_str(&line);
        seen.push('\n');
        if let Some(port) = parse_port(&line) {
            return Ok((driver, port, lines));
        }
    }
}
