//! A real headless Chromium (Debian's `chromium`), driven over the DevTools
//! protocol: navigate, evaluate JavaScript, wait for a condition, click,
//! type, take a screenshot.
//!
//! Our own small client rather than `chromiumoxide` or `headless_chrome`:
//! the tests need five commands, and those crates bring the whole generated
//! protocol (chromiumoxide_cdp alone is some 100k lines to compile on a
//! two-core machine); this is one WebSocket (tokio-tungstenite, already the
//! gateway's test dependency) with JSON messages.
//!
//! Chromium is found as `SWITCHYARD_CHROMIUM`, or `chromium` on the PATH;
//! when it is missing and this runs as root with apt-get (CI, a fresh
//! machine), it is installed as `deploy/build.sh` installs etcd.

// Shared by test binaries that each use part of it.
#![allow(unreachable_pub, dead_code)]

use std::{
    path::PathBuf,
    process::Stdio,
    sync::atomic::{AtomicU64, Ordering},
    time::{Duration, Instant},
};

use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio::{
    io::{AsyncBufReadExt, BufReader},
    net::TcpStream,
    process::{Child, Command},
};
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream, tungstenite::Message};

/// A headless Chromium with one page; killed on drop.
pub struct Browser {
    child: Child,
    ws: WebSocketStream<MaybeTlsStream<TcpStream>>,
    session: String,
    next_id: u64,
    profile: PathBuf,
}

/// Finds Chromium, installing Debian's package when root may: once per
/// test binary, however many of its tests start a browser at the same time
/// (two apt-get runs at once fail on dpkg's lock).
fn chromium() -> PathBuf {
    static FOUND: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    FOUND.get_or_init(find_or_install).clone()
}

fn find_or_install() -> PathBuf {
    if let Ok(p) = std::env::var("SWITCHYARD_CHROMIUM") {
        return PathBuf::from(p);
    }
    let on_path = |name: &str| {
        std::env::var_os("PATH").and_then(|paths| {
            std::env::split_paths(&paths)
                .map(|d| d.join(name))
                .find(|p| p.is_file())
        })
    };
    if let Some(p) = on_path("chromium") {
        return p;
    }
    let root = std::process::Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| o.stdout.starts_with(b"0\n"));
    if root && on_path("apt-get").is_some() {
        let status = std::process::Command::new("sh")
            .args([
                "-c",
                "apt-get update -qq && apt-get install -y -qq chromium >/dev/null",
            ])
            .status();
        if status.is_ok_and(|s| s.success()) {
            if let Some(p) = on_path("chromium") {
                return p;
            }
        }
    }
    panic!(
        "the dashboard's tests need a real browser: install Debian's chromium \
         (apt-get install chromium) or set SWITCHYARD_CHROMIUM"
    );
}

impl Browser {
    /// Starts Chromium (a fresh profile, 1400×900) with a blank page.
    pub async fn launch() -> Self {
        static NEXT: AtomicU64 = AtomicU64::new(0);
        let profile = std::env::temp_dir().join(format!(
            "switchyard-chromium-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        ));
        let mut child = Command::new(chromium())
            .args([
                "--headless=new",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-dev-shm-usage",
                "--no-first-run",
                "--hide-scrollbars",
                "--window-size=1400,900",
                "--remote-debugging-port=0",
            ])
            .arg(format!("--user-data-dir={}", profile.display()))
            .arg("about:blank")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .expect("start chromium");
        let stderr = child.stderr.take().expect("stderr");
        let url = tokio::time::timeout(Duration::from_secs(30), async {
            let mut lines = BufReader::new(stderr).lines();
            while let Ok(Some(line)) = lines.next_line().await {
                if let Some(url) = line.strip_prefix("DevTools listening on ") {
                    // Keep reading (and dropping) its log so it never blocks.
                    tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
                    return url.trim().to_string();
                }
            }
            panic!("chromium ended without a DevTools address");
        })
        .await
        .expect("chromium did not start within 30 s");
        let (ws, _) = tokio_tungstenite::connect_async(url.as_str())
            .await
            .expect("connect to chromium");
        let mut browser = Self {
            child,
            ws,
            session: String::new(),
            next_id: 0,
            profile,
        };
        let target = browser
            .call("Target.createTarget", json!({ "url": "about:blank" }))
            .await;
        let target_id = target["targetId"].as_str().expect("targetId").to_string();
        let attached = browser
            .call(
                "Target.attachToTarget",
                json!({ "targetId": target_id, "flatten": true }),
            )
            .await;
        browser.session = attached["sessionId"]
            .as_str()
            .expect("sessionId")
            .to_string();
        browser.command("Page.enable", json!({})).await;
        browser.command("Runtime.enable", json!({})).await;
        browser
            .command(
                "Emulation.setDeviceMetricsOverride",
                json!({ "width": 1400, "height": 900, "deviceScaleFactor": 1, "mobile": false }),
            )
            .await;
        browser
    }

    /// A browser-level call.
    async fn call(&mut self, method: &str, params: Value) -> Value {
        self.send(method, params, None).await
    }

    /// A call to the page.
    pub async fn command(&mut self, method: &str, params: Value) -> Value {
        let session = self.session.clone();
        self.send(method, params, Some(session)).await
    }

    async fn send(&mut self, method: &str, params: Value, session: Option<String>) -> Value {
        self.next_id += 1;
        let id = self.next_id;
        let mut message = json!({ "id": id, "method": method, "params": params });
        if let Some(s) = session {
            message["sessionId"] = json!(s);
        }
        self.ws
            .send(Message::text(message.to_string()))
            .await
            .expect("send to chromium");
        let reply = tokio::time::timeout(Duration::from_secs(30), async {
            while let Some(m) = self.ws.next().await {
                let Ok(Message::Text(text)) = m else { continue };
                let v: Value = serde_json::from_str(&text).expect("json from chromium");
                if v["id"] == json!(id) {
                    return v;
                }
            }
            panic!("chromium closed the connection");
        })
        .await
        .unwrap_or_else(|_| panic!("chromium did not answer {method} within 30 s"));
        if let Some(e) = reply.get("error") {
            panic!("{method}: {e}");
        }
        reply["result"].clone()
    }

    /// Loads `url` and waits for the document to be complete.
    pub async fn goto(&mut self, url: &str) {
        self.command("Page.navigate", json!({ "url": url })).await;
        self.wait_for(
            "document.readyState === 'complete'",
            Duration::from_secs(10),
        )
        .await;
    }

    /// The value of `expression` (promises awaited); panics on an exception.
    pub async fn eval(&mut self, expression: &str) -> Value {
        let r = self
            .command(
                "Runtime.evaluate",
                json!({ "expression": expression, "awaitPromise": true, "returnByValue": true }),
            )
            .await;
        if let Some(e) = r.get("exceptionDetails") {
            panic!("{expression}: {e}");
        }
        r["result"]["value"].clone()
    }

    /// Waits until `expression` is truthy; returns how long it took.
    pub async fn wait_for(&mut self, expression: &str, within: Duration) -> Duration {
        let start = Instant::now();
        loop {
            if truthy(&self.eval(expression).await) {
                return start.elapsed();
            }
            if start.elapsed() > within {
                let body = self
                    .eval("document.body ? document.body.innerText.slice(0, 2000) : ''")
                    .await;
                panic!(
                    "not true within {within:?}: {expression}\nthe page says:\n{}",
                    body.as_str().unwrap_or_default()
                );
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Clicks the element `selector` names (it must exist).
    pub async fn click(&mut self, selector: &str) {
        let found = self
            .eval(&format!(
                "(() => {{ const e = document.querySelector({s}); if (!e) return false; e.click(); return true; }})()",
                s = json!(selector)
            ))
            .await;
        assert_eq!(found, json!(true), "nothing to click at {selector}");
    }

    /// Types `text` into the input `selector` names, as a user would (an
    /// `input` event follows).
    pub async fn fill(&mut self, selector: &str, text: &str) {
        let found = self
            .eval(&format!(
                "(() => {{ const e = document.querySelector({s}); if (!e) return false; e.focus(); e.value = {t}; e.dispatchEvent(new Event('input', {{ bubbles: true }})); return true; }})()",
                s = json!(selector),
                t = json!(text)
            ))
            .await;
        assert_eq!(found, json!(true), "no input at {selector}");
    }

    /// A PNG of the page as it is shown, saved at `path`.
    pub async fn screenshot(&mut self, path: &std::path::Path) {
        use base64::Engine as _;
        let shot = self
            .command(
                "Page.captureScreenshot",
                json!({ "format": "png", "captureBeyondViewport": false }),
            )
            .await;
        let png = base64::engine::general_purpose::STANDARD
            .decode(shot["data"].as_str().expect("screenshot data"))
            .expect("base64 screenshot");
        std::fs::write(path, png).expect("write screenshot");
    }
}

fn truthy(v: &Value) -> bool {
    match v {
        Value::Null => false,
        Value::Bool(b) => *b,
        Value::Number(n) => n.as_f64().is_some_and(|f| f != 0.0),
        Value::String(s) => !s.is_empty(),
        _ => true,
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        let _ = self.child.start_kill();
        let _ = std::fs::remove_dir_all(&self.profile);
    }
}
