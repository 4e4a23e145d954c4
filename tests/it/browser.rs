//! The Developer Settings page in a real headless Chromium, driven over WebDriver (fantoccini): sign in, add a
//! webhook pointing at a test receiver, see a delivery appear while the page refreshes itself, make the
//! receiver fail and watch the attempts arrive, "Retry now" once it recovers, edit, rotate the secret, delete.
//! Screenshots of the main pages are saved to `target/screenshots/` for a person to look at.
//!
//! It needs Debian's `chromium` and `chromium-driver`. Without them it prints a notice and passes, unless
//! `TIDINGS_TEST_BROWSER=1` says the browser must be there (as in CI), when it fails.

use std::cell::RefCell;
use std::io::Write;
use std::os::unix::process::CommandExt;
use std::panic::AssertUnwindSafe;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use axum::http::StatusCode;
use fantoccini::elements::Element;
use fantoccini::{Client, ClientBuilder, Locator};
use futures_util::FutureExt;
use hyper_util::client::legacy::connect::HttpConnector;
use serde_json::{Value, json};
use tempfile::TempDir;

use crate::helpers::*;

/// Debian's Chromium.
const CHROMIUM: &str = "/usr/bin/chromium";
/// The flags every run uses: headless, no sandbox (CI runs as root), and nothing that reaches the network.
const CHROMIUM_FLAGS: [&str; 8] = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-dev-shm-usage",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
];
/// The longest the whole walk-through may take.
const WHOLE_TEST: Duration = Duration::from_secs(240);
/// The longest chromedriver may take to start.
const DRIVER_START: Duration = Duration::from_secs(30);

/// Where `chromedriver` is, if installed.
fn chromedriver() -> Option<PathBuf> {
    let on_path = std::env::var_os("PATH")
        .map(|path| std::env::split_paths(&path).map(|dir| dir.join("chromedriver")).collect::<Vec<_>>())
        .unwrap_or_default();
    on_path
        .into_iter()
        .chain([PathBuf::from("/usr/bin/chromedriver"), PathBuf::from("/usr/lib/chromium/chromedriver")])
        .find(|p| p.is_file())
}

/// `target/screenshots/` of this crate (or of `CARGO_TARGET_DIR`).
fn screenshot_dir() -> PathBuf {
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("target"));
    target.join("screenshots")
}

/// A chromedriver started by the test on a free port, in its own process group so that it and the browser it
/// starts are all stopped when the test ends, however it ends.
struct ChromeDriver {
    child: Child,
    url: String,
    log: PathBuf,
}

impl ChromeDriver {
    async fn start(path: &Path, log: PathBuf) -> Self {
        let port = free_port();
        let log_file = std::fs::File::create(&log).expect("chromedriver log file");
        let child = Command::new(path)
            .arg(format!("--port={port}"))
            .stdin(Stdio::null())
            .stdout(log_file.try_clone().expect("log file"))
            .stderr(log_file)
            .process_group(0)
            .spawn()
            .unwrap_or_else(|e| panic!("starting {}: {e}", path.display()));
        let mut driver = Self { child, url: format!("http://127.0.0.1:{port}"), log };
        driver.wait_ready().await;
        driver
    }

    async fn wait_ready(&mut self) {
        let http = reqwest::Client::builder().timeout(Duration::from_secs(2)).build().unwrap();
        let deadline = Instant::now() + DRIVER_START;
        loop {
            if let Ok(response) = http.get(format!("{}/status", self.url)).send().await
                && let Ok(status) = response.json::<Value>().await
                && status["value"]["ready"] == true
            {
                return;
            }
            if let Ok(Some(exit)) = self.child.try_wait() {
                panic!("chromedriver exited with {exit} before it was ready:\n{}", self.log_text());
            }
            if Instant::now() >= deadline {
                panic!("chromedriver was not ready within {DRIVER_START:?}:\n{}", self.log_text());
            }
            tokio::time::sleep(ms(50)).await;
        }
    }

    fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for ChromeDriver {
    fn drop(&mut self) {
        // The whole group: chromedriver and any browser process it left.
        let group = format!("-{}", self.child.id());
        let _ = Command::new("kill").args(["-s", "KILL", "--", &group]).stderr(Stdio::null()).status();
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_settings_page_in_a_real_browser() {
    let required = std::env::var("TIDINGS_TEST_BROWSER").is_ok_and(|v| v == "1");
    let driver_path = chromedriver();
    let Some(driver_path) = driver_path.filter(|_| Path::new(CHROMIUM).is_file()) else {
        let notice = "the browser test needs Debian's chromium and chromium-driver \
                      (apt-get install -y chromium chromium-driver)";
        if required {
            panic!("TIDINGS_TEST_BROWSER=1 but {CHROMIUM} or chromedriver is missing: {notice}");
        }
        // Straight to stderr, past the test harness's capture, so the skip is seen.
        let _ = writeln!(std::io::stderr(), "notice: skipping browser::the_settings_page_in_a_real_browser: {notice}");
        return;
    };

    let shots = screenshot_dir();
    std::fs::create_dir_all(&shots).expect("target/screenshots");
    let profile = TempDir::new().expect("browser profile dir");
    let driver = ChromeDriver::start(&driver_path, profile.path().join("chromedriver.log")).await;

    let mut args: Vec<String> = CHROMIUM_FLAGS.iter().map(|s| s.to_string()).collect();
    args.push(format!("--user-data-dir={}", profile.path().join("profile").display()));
    args.push("--window-size=1280,900".into());
    let mut capabilities = serde_json::Map::new();
    capabilities.insert("browserName".into(), json!("chrome"));
    capabilities.insert("goog:chromeOptions".into(), json!({ "binary": CHROMIUM, "args": args }));
    let mut builder = ClientBuilder::new(HttpConnector::new());
    builder.capabilities(capabilities);
    let connecting = builder.connect(&driver.url);
    let client = match tokio::time::timeout(DRIVER_START, connecting).await {
        Ok(Ok(client)) => client,
        Ok(Err(e)) => panic!("starting a browser session: {e}\n{}", driver.log_text()),
        Err(_) => panic!("no browser session within {DRIVER_START:?}:\n{}", driver.log_text()),
    };

    // Fast retries that still leave time to watch them arrive one by one: the last comes 7 s after the update,
    // time enough for a slow browser to open the delivery's page before it.
    let app = TestApp::spawn_with(|c| c.retry_schedule = vec![Duration::from_secs(3), Duration::from_secs(4)]).await;
    let receiver = Receiver::ok().await;
    let walk = AssertUnwindSafe(walk_through(&client, &app, &receiver, &shots)).catch_unwind();
    let outcome = tokio::time::timeout(WHOLE_TEST, walk).await;
    if !matches!(outcome, Ok(Ok(()))) {
        // What the browser showed when it went wrong.
        if let Ok(png) = client.screenshot().await {
            let _ = std::fs::write(shots.join("failure.png"), png);
        }
        if let Ok(html) = client.source().await {
            let _ = std::fs::write(shots.join("failure.html"), html);
        }
    }
    let _ = tokio::time::timeout(Duration::from_secs(10), client.close()).await;
    drop(driver);
    match outcome {
        Ok(Ok(())) => {}
        Ok(Err(panic)) => std::panic::resume_unwind(panic),
        Err(_) => panic!("the browser walk-through took longer than {WHOLE_TEST:?}"),
    }
}

// ---------------------------------------------------------------------------------------------------------
// Small WebDriver helpers: each waits with a deadline and names what it waited for.
// ---------------------------------------------------------------------------------------------------------

/// Runs `script` in the page and answers its value.
async fn js(client: &Client, script: &str) -> Value {
    client.execute(script, Vec::new()).await.unwrap_or_else(|e| panic!("script {script:?}: {e}"))
}

/// The element `css` matches, once it is there.
async fn find(client: &Client, css: &str) -> Element {
    client
        .wait()
        .at_most(WAIT)
        .for_element(Locator::Css(css))
        .await
        .unwrap_or_else(|e| panic!("no element {css} within {WAIT:?}: {e}"))
}

async fn click(client: &Client, css: &str) {
    find(client, css).await.click().await.unwrap_or_else(|e| panic!("clicking {css}: {e}"));
}

/// Clicks `css` from inside the page in one step: an element of a region that refreshes itself can be
/// replaced between finding it and clicking it over WebDriver.
async fn click_in_refreshing_region(client: &Client, css: &str) {
    let script = format!("var e = document.querySelector({}); if (e) e.click(); return !!e;", json!(css));
    assert_eq!(js(client, &script).await, true, "no element {css} to click");
}

/// Replaces the text of the input `css` with `text`.
async fn fill(client: &Client, css: &str, text: &str) {
    let input = find(client, css).await;
    input.clear().await.unwrap_or_else(|e| panic!("clearing {css}: {e}"));
    input.send_keys(text).await.unwrap_or_else(|e| panic!("typing into {css}: {e}"));
}

/// The text of the element `css` (empty when there is none).
async fn text_of(client: &Client, css: &str) -> String {
    let script = format!("var e = document.querySelector({}); return e ? e.textContent.trim() : '';", json!(css));
    js(client, &script).await.as_str().unwrap_or_default().to_owned()
}

/// Waits until the element `css` says `text`.
async fn wait_text(client: &Client, css: &str, text: &str) {
    eventually(&format!("{css} to say {text:?}"), WAIT, || async {
        text_of(client, css).await.contains(text).then_some(())
    })
    .await;
}

async fn value_of(client: &Client, css: &str) -> String {
    find(client, css).await.prop("value").await.ok().flatten().unwrap_or_default()
}

async fn screenshot(client: &Client, shots: &Path, name: &str) {
    let png = client.screenshot().await.unwrap_or_else(|e| panic!("screenshot {name}: {e}"));
    std::fs::write(shots.join(format!("{name}.png")), png).expect("write screenshot");
}

/// Marks the page so a later check can tell it was not reloaded (only parts of it were refreshed).
async fn mark_page(client: &Client, mark: u32) {
    js(client, &format!("window.__tidingsMark = {mark}; return null;")).await;
}

async fn page_mark(client: &Client) -> Value {
    js(client, "return window.__tidingsMark === undefined ? null : window.__tidingsMark;").await
}

/// The attempts shown on a delivery's page: (count, status).
async fn attempts_shown(client: &Client) -> (usize, String) {
    let count = js(client, "return document.querySelectorAll('#attempts tr.attempt').length;").await;
    (count.as_u64().unwrap_or(0) as usize, text_of(client, "#delivery-status").await)
}

// ---------------------------------------------------------------------------------------------------------
// The walk-through
// ---------------------------------------------------------------------------------------------------------

async fn walk_through(client: &Client, app: &TestApp, receiver: &Receiver, shots: &Path) {
    let base = &app.base;
    let key = app.a.key.clone().expect("organization A's key");
    client.set_window_size(1280, 900).await.expect("window size");

    // Sign in, with the keyboard: type the key, press Enter.
    client.goto(&format!("{base}/settings/webhooks")).await.expect("open the settings page");
    find(client, "#api_key").await;
    assert!(client.current_url().await.unwrap().path().ends_with("/settings/sign-in"), "sent to sign in first");
    screenshot(client, shots, "sign-in").await;
    find(client, "#api_key").await.send_keys(&format!("{key}\u{E007}")).await.expect("type the key");
    wait_text(client, "h1", "Webhooks").await;
    assert_eq!(text_of(client, "nav a[aria-current=page]").await, "Webhooks");

    // Add a webhook: first with a mistake, shown next to the field with the API's message.
    click(client, "#add-webhook").await;
    fill(client, "#url", "ftp://example.com/hook").await;
    click(client, "#save").await;
    let (_, api) = app.a.post("/v1/endpoints", json!({ "url": "ftp://example.com/hook" })).await;
    wait_text(client, "#url-error", api["error"]["message"].as_str().unwrap()).await;
    assert_eq!(find(client, "#url").await.attr("aria-invalid").await.unwrap().as_deref(), Some("true"));
    fill(client, "#url", &receiver.url()).await;
    fill(client, "#description", "Browser test receiver").await;
    click(client, "#save").await;
    wait_text(client, ".notice", "Webhook added.").await;
    let secret = value_of(client, "#secret-value").await;
    assert!(secret.starts_with("whsec_"), "the new secret is shown: {secret:?}");
    let ep = client.current_url().await.unwrap().path().rsplit('/').next().unwrap().to_owned();
    assert!(ep.starts_with("ep_"), "{ep}");
    let (_, stored) = app.a.get(&format!("/v1/endpoints/{ep}/secret")).await;
    assert_eq!(stored["secret"], secret.as_str());
    screenshot(client, shots, "webhook-added").await;

    // "Send test event": the example event arrives at the receiver, and its delivery page says so.
    click(client, "#send-test").await;
    wait_text(client, ".notice", "Test event queued").await;
    receiver.wait_for(1).await;
    wait_text(client, "#delivery-status", "succeeded").await;

    // The deliveries page is open; an interview update through the API appears on it by itself.
    client.goto(&format!("{base}/settings/deliveries")).await.unwrap();
    find(client, "#deliveries").await;
    mark_page(client, 1).await;
    let answer = app.a.patch_interview("cand_browser", json!({ "interview_outcome": "qualified" })).await;
    let first = app.a.delivery_of_event(answer["event"]["id"].as_str().unwrap()).await;
    let first_id = first["id"].as_str().unwrap().to_owned();
    let row = format!("tr[data-delivery='{first_id}'] .status");
    eventually("the new delivery to show up as succeeded without a reload", WAIT, || async {
        (text_of(client, &row).await == "succeeded").then_some(())
    })
    .await;
    assert_eq!(page_mark(client).await, 1, "the list refreshed itself; the page was not reloaded");
    // Times are shown in the viewer's local time, with the UTC time on hover.
    let time = js(client, "var t = document.querySelector('#deliveries time'); return [t.textContent, t.title];").await;
    assert!(!time[0].as_str().unwrap().contains("UTC"), "local time shown: {time}");
    assert!(time[1].as_str().unwrap().ends_with("UTC"), "UTC on hover: {time}");
    assert_eq!(receiver.count(), 2);
    // Nothing changes now: the page looks again (its "last updated" moves) but leaves the list as it is, so a
    // reader's place in it is kept.
    js(client, "document.getElementById('deliveries').__kept = true; return null;").await;
    let stamp_js = "return document.getElementById('refreshed-at').getAttribute('datetime');";
    let stamp = js(client, stamp_js).await;
    eventually("the page to look again", WAIT, || async { (js(client, stamp_js).await != stamp).then_some(()) }).await;
    let kept = js(client, "return document.getElementById('deliveries').__kept === true;").await;
    assert_eq!(kept, json!(true), "an unchanged list is not replaced");
    // Paused, the list stays as it is while a new delivery is made (for two refresh intervals); resumed, it
    // shows the delivery.
    click(client, "#pause-updates").await;
    let pressed = js(client, "return document.getElementById('pause-updates').getAttribute('aria-pressed');").await;
    assert_eq!(pressed, json!("true"));
    let answer = app.a.patch_interview("cand_paused", json!({ "interview_outcome": "qualified" })).await;
    let paused = app.a.delivery_of_event(answer["event"]["id"].as_str().unwrap()).await;
    let paused_id = paused["id"].as_str().unwrap().to_owned();
    app.a.wait_delivery_status(&paused_id, "succeeded").await;
    tokio::time::sleep(Duration::from_millis(4500)).await;
    let row_shown = format!("return document.querySelector(\"tr[data-delivery='{paused_id}']\") !== null;");
    assert_eq!(js(client, &row_shown).await, json!(false), "paused: the list did not change");
    click(client, "#pause-updates").await;
    eventually("the new delivery once resumed", WAIT, || async {
        (js(client, &row_shown).await == json!(true)).then_some(())
    })
    .await;
    assert_eq!(receiver.count(), 3);

    // The receiver fails: the delivery's attempts arrive on its page one by one, until it is undeliverable.
    receiver.set_reply(Reply::Status(500));
    let answer = app.a.patch_interview("cand_browser", json!({ "interview_outcome": "completed" })).await;
    let failing = app.a.delivery_of_event(answer["event"]["id"].as_str().unwrap()).await;
    let failing_id = failing["id"].as_str().unwrap().to_owned();
    find(client, &format!("tr[data-delivery='{failing_id}'] a")).await;
    click_in_refreshing_region(client, &format!("tr[data-delivery='{failing_id}'] a")).await;
    find(client, "#retry-now").await;
    mark_page(client, 2).await;
    let seen = RefCell::new(Vec::new());
    eventually("three failed attempts and undeliverable", WAIT, || async {
        let (count, status) = attempts_shown(client).await;
        let mut seen = seen.borrow_mut();
        if seen.last() != Some(&count) {
            seen.push(count);
        }
        (count == 3 && status == "undeliverable").then_some(())
    })
    .await;
    let seen = seen.into_inner();
    assert!(seen.len() >= 2, "attempts arrived while the page was open, one refresh at a time: {seen:?}");
    assert_eq!(page_mark(client).await, 2, "the delivery page refreshed itself; it was not reloaded");
    let results =
        js(client, "return [...document.querySelectorAll('#attempts .result')].map(e => e.textContent);").await;
    assert_eq!(results, json!(["HTTP 500", "HTTP 500", "HTTP 500"]));
    assert!(text_of(client, "#attempts").await.contains("receiver says 500"));
    screenshot(client, shots, "delivery-failed").await;
    client.goto(&format!("{base}/settings/deliveries")).await.unwrap();
    find(client, &format!("tr[data-delivery='{failing_id}']")).await;
    screenshot(client, shots, "deliveries").await;

    // At 375 px wide, nothing needs sideways scrolling.
    client.set_window_size(375, 812).await.expect("narrow window");
    client.refresh().await.unwrap();
    find(client, "#deliveries").await;
    let fits = js(client, "return document.documentElement.scrollWidth <= window.innerWidth + 1;").await;
    assert_eq!(fits, true, "the deliveries page fits 375 px");
    screenshot(client, shots, "deliveries-375px").await;
    client.set_window_size(1280, 900).await.expect("wide window");

    // It recovers; "Retry now" delivers it.
    receiver.set_reply(Reply::Status(200));
    client.goto(&format!("{base}/settings/deliveries/{failing_id}")).await.unwrap();
    click(client, "#retry-now").await;
    wait_text(client, ".notice", "Retry asked for").await;
    eventually("the retried delivery to show succeeded", WAIT, || async {
        let (count, status) = attempts_shown(client).await;
        (count == 4 && status == "succeeded").then_some(())
    })
    .await;
    let last = text_of(client, "#attempts tr.attempt:last-child").await;
    assert!(last.contains("manual") && last.contains("HTTP 200"), "{last}");
    assert_eq!(app.a.delivery(&failing_id).await["status"], "succeeded");
    screenshot(client, shots, "delivery-retried").await;

    // Edit: a description and one more event type.
    client.goto(&format!("{base}/settings/webhooks/{ep}")).await.unwrap();
    fill(client, "#description", "Edited in the browser").await;
    click(client, "input[name=event_types][value=call_completed]").await;
    click(client, "#save").await;
    wait_text(client, ".notice", "Changes saved.").await;
    let (_, stored) = app.a.get(&format!("/v1/endpoints/{ep}")).await;
    assert_eq!(stored["description"], "Edited in the browser");
    assert_eq!(stored["event_types"], json!(["candidate.interview.updated", "call_completed"]));
    assert_eq!(stored["enabled"], true);

    // Rotate the secret: a new one is shown, and it is the one the API has.
    click(client, "#reveal-secret").await;
    assert_eq!(value_of(client, "#secret-value").await, secret);
    assert!(find(client, "button[data-copy]").await.is_displayed().await.unwrap(), "the copy button is shown");
    click(client, "#rotate-secret").await;
    wait_text(client, ".notice", "New signing secret made.").await;
    let rotated = value_of(client, "#secret-value").await;
    assert!(rotated.starts_with("whsec_") && rotated != secret, "{rotated}");
    let (_, stored) = app.a.get(&format!("/v1/endpoints/{ep}/secret")).await;
    assert_eq!(stored["secret"], rotated.as_str());
    screenshot(client, shots, "webhook").await;

    // Delete, after the confirmation.
    click(client, "#delete").await;
    wait_text(client, "h1", "Delete this webhook?").await;
    screenshot(client, shots, "webhook-delete").await;
    click(client, "#confirm-delete").await;
    wait_text(client, ".notice", "Webhook deleted.").await;
    let (status, _) = app.a.get(&format!("/v1/endpoints/{ep}")).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert!(!text_of(client, "main").await.contains(&receiver.url()));

    // Sign out.
    click(client, "#sign-out").await;
    wait_text(client, ".notice", "You are signed out.").await;
    client.goto(&format!("{base}/settings/deliveries")).await.unwrap();
    find(client, "#api_key").await;
}
