//! A small W3C WebDriver client for the console's browser tests: Debian's
//! chromium, headless, driven through chromedriver (packages `chromium` and
//! `chromium-driver`, installed by `scripts/test.sh`).
//!
//! Each [`Browser`] starts its own chromedriver (in its own process group,
//! with its own empty profile) and kills that group when dropped, so a
//! failing test leaves no browser behind.
use serde_json::{json, Value};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const ELEMENT: &str = "element-6066-11e4-a52e-4f735466cecf";
const CHROMEDRIVER: &str = "/usr/bin/chromedriver";
const CHROMIUM: &str = "/usr/bin/chromium";

pub(crate) struct Browser {
    http: reqwest::Client,
    session: String,
    driver: Child,
    _profile: tempfile::TempDir,
}

/// An element handle.
#[derive(Clone)]
pub(crate) struct El(String);

impl Browser {
    pub(crate) async fn start() -> Browser {
        for bin in [CHROMEDRIVER, CHROMIUM] {
            assert!(
                Path::new(bin).exists(),
                "{bin} is missing: the console tests need Debian's chromium and chromium-driver \
                 (bash scripts/deps.sh chromium chromium-driver)"
            );
        }
        let port = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").expect("free port");
            l.local_addr().expect("addr").port()
        };
        let mut cmd = Command::new(CHROMEDRIVER);
        cmd.arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        std::os::unix::process::CommandExt::process_group(&mut cmd, 0);
        let driver = cmd.spawn().expect("start chromedriver");
        let profile = tempfile::tempdir().expect("profile dir");
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(60))
            .build()
            .expect("client");
        let base = format!("http://127.0.0.1:{port}");
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Ok(r) = http.get(format!("{base}/status")).send().await {
                if r.status().is_success() {
                    break;
                }
            }
            assert!(Instant::now() < deadline, "chromedriver did not start");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let caps = json!({"capabilities": {"alwaysMatch": {
            "browserName": "chrome",
            // The service's own CA signs its certificate.
            "acceptInsecureCerts": true,
            "goog:chromeOptions": {
                "binary": CHROMIUM,
                "args": [
                    "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                    "--disable-background-networking", "--disable-component-update",
                    "--disable-sync", "--no-first-run", "--disable-quic",
                    "--window-size=1280,1000",
                    format!("--user-data-dir={}", profile.path().display()),
                ],
            },
        }}});
        let mut browser = Browser {
            http,
            session: String::new(),
            driver,
            _profile: profile,
        };
        let v = browser
            .raw("POST", &format!("{base}/session"), Some(caps))
            .await;
        let id = v["sessionId"].as_str().expect("session id").to_owned();
        browser.session = format!("{base}/session/{id}");
        browser
    }

    async fn raw(&self, method: &str, url: &str, body: Option<Value>) -> Value {
        let method = reqwest::Method::from_bytes(method.as_bytes()).expect("method");
        let resp = self
            .http
            .request(method.clone(), url)
            .json(&body.unwrap_or_else(|| json!({})))
            .send()
            .await
            .unwrap_or_else(|e| panic!("webdriver {method} {url}: {e}"));
        let status = resp.status();
        let v: Value = resp.json().await.expect("webdriver answers JSON");
        assert!(
            status.is_success(),
            "webdriver {method} {url}: {status} {v}"
        );
        v["value"].clone()
    }

    async fn cmd(&self, method: &str, path: &str, body: Option<Value>) -> Value {
        self.raw(method, &format!("{}{path}", self.session), body)
            .await
    }

    pub(crate) async fn goto(&self, url: &str) {
        self.cmd("POST", "/url", Some(json!({ "url": url }))).await;
    }

    pub(crate) async fn url(&self) -> String {
        self.cmd("GET", "/url", None)
            .await
            .as_str()
            .unwrap_or_default()
            .to_owned()
    }

    async fn find_now(&self, css: &str) -> Option<El> {
        let url = format!("{}/element", self.session);
        let resp = self
            .http
            .post(url)
            .json(&json!({"using": "css selector", "value": css}))
            .send()
            .await
            .ok()?;
        if !resp.status().is_success() {
            return None;
        }
        let v: Value = resp.json().await.ok()?;
        v["value"][ELEMENT].as_str().map(|s| El(s.to_owned()))
    }

    /// The first element matching `css`, waiting up to 10 s for it.
    pub(crate) async fn find(&self, css: &str) -> El {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Some(el) = self.find_now(css).await {
                return el;
            }
            assert!(
                Instant::now() < deadline,
                "no element {css:?} on {}: {}",
                self.url().await,
                self.body_text().await
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    pub(crate) async fn click(&self, css: &str) {
        let el = self.find(css).await;
        self.cmd("POST", &format!("/element/{}/click", el.0), None)
            .await;
    }

    pub(crate) async fn fill(&self, css: &str, text: &str) {
        let el = self.find(css).await;
        self.cmd("POST", &format!("/element/{}/clear", el.0), None)
            .await;
        self.cmd(
            "POST",
            &format!("/element/{}/value", el.0),
            Some(json!({ "text": text })),
        )
        .await;
    }

    /// Choose the `<option>` with `value` in the `<select>` matching `css`.
    pub(crate) async fn select(&self, css: &str, value: &str) {
        self.click(&format!("{css} option[value=\"{value}\"]"))
            .await;
    }

    pub(crate) async fn text(&self, css: &str) -> String {
        let el = self.find(css).await;
        self.cmd("GET", &format!("/element/{}/text", el.0), None)
            .await
            .as_str()
            .unwrap_or_default()
            .to_owned()
    }

    pub(crate) async fn attr(&self, css: &str, name: &str) -> Option<String> {
        let el = self.find(css).await;
        self.cmd("GET", &format!("/element/{}/attribute/{name}", el.0), None)
            .await
            .as_str()
            .map(str::to_owned)
    }

    pub(crate) async fn body_text(&self) -> String {
        match self.find_now("body").await {
            Some(el) => self
                .cmd("GET", &format!("/element/{}/text", el.0), None)
                .await
                .as_str()
                .unwrap_or_default()
                .to_owned(),
            None => String::new(),
        }
    }

    /// Wait up to 10 s for the text of `css` to satisfy `check`.
    pub(crate) async fn wait_text(&self, css: &str, what: &str, check: impl Fn(&str) -> bool) {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Some(el) = self.find_now(css).await {
                let v = self
                    .http
                    .get(format!("{}/element/{}/text", self.session, el.0))
                    .send()
                    .await
                    .ok();
                if let Some(r) = v {
                    if let Ok(v) = r.json::<Value>().await {
                        if check(v["value"].as_str().unwrap_or_default()) {
                            return;
                        }
                    }
                }
            }
            assert!(
                Instant::now() < deadline,
                "{what}: {css:?} on {}: {}",
                self.url().await,
                self.body_text().await
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Wait up to 10 s for the browser to be on a URL ending with `suffix`.
    pub(crate) async fn wait_url(&self, suffix: &str) {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let url = self.url().await;
            if url.ends_with(suffix) {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "not on {suffix} but {url}: {}",
                self.body_text().await
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Save a PNG of the page into `dir` (when set).
    pub(crate) async fn screenshot(&self, dir: Option<&Path>, name: &str) {
        let Some(dir) = dir else { return };
        use base64_decode::decode;
        let v = self.cmd("GET", "/screenshot", None).await;
        let png = decode(v.as_str().expect("base64 PNG"));
        std::fs::create_dir_all(dir).expect("screenshot dir");
        std::fs::write(dir.join(format!("{name}.png")), png).expect("write screenshot");
    }

    pub(crate) async fn quit(mut self) {
        let _ = self.http.delete(&self.session).send().await;
        self.kill();
    }

    fn kill(&mut self) {
        // The process group this browser started (chromedriver made it its
        // own at spawn; chromium inherits it), and nothing else.
        if let Ok(pgid) = i32::try_from(self.driver.id()) {
            if pgid > 1 {
                // SAFETY: kill(2) with a negative id signals exactly that
                // process group; it touches no memory.
                unsafe { libc::kill(-pgid, libc::SIGKILL) };
            }
        }
        let _ = self.driver.wait();
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        if let Ok(None) = self.driver.try_wait() {
            self.kill();
        }
    }
}

/// Standard base64 (the screenshot's encoding), without a dependency.
mod base64_decode {
    pub(super) fn decode(text: &str) -> Vec<u8> {
        let mut out = Vec::with_capacity(text.len() * 3 / 4);
        let mut acc = 0u32;
        let mut bits = 0;
        for c in text.bytes() {
            let v = match c {
                b'A'..=b'Z' => c - b'A',
                b'a'..=b'z' => c - b'a' + 26,
                b'0'..=b'9' => c - b'0' + 52,
                b'+' => 62,
                b'/' => 63,
                _ => continue, // padding, line breaks
            };
            acc = (acc << 6) | u32::from(v);
            bits += 6;
            if bits >= 8 {
                bits -= 8;
                out.push((acc >> bits) as u8);
            }
        }
        out
    }
}
