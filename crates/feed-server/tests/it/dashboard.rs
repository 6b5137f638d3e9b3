//! The live dashboard on the admin listener, in a real headless Chromium:
//! the page loads, connects, and every chart draws data within 3 s.
//!
//! Why not `chromium --headless --virtual-time-budget=3000 --dump-dom`: the
//! budget is virtual time, and Chromium stops advancing virtual time while a
//! network fetch is pending. The page's `/events` stream never ends, so the
//! budget never runs out and Chromium hangs until it is killed. Without the
//! budget (or with `--timeout`), `--dump-dom` dumps right after the load
//! event, before the second snapshot exists. So the test drives Chromium
//! over the DevTools protocol instead (`--remote-debugging-pipe`: commands
//! in on fd 3, answers out on fd 4, each a JSON message ending in a NUL byte),
//! opens the page, and reads the page's DOM every 100 ms, in real time, until
//! the body's `data-points` and every chart's `data-points` are at least 2.
//! That must happen within 3 s of navigation by the page's own clock
//! (`performance.now()`), so that a slow Chromium start on a busy machine
//! does not count; the test waits at most 10 s. Two points come quickly
//! because the page fetches `stats` once at load and `/events` sends a new
//! snapshot every second.
//!
//! With an admin token the page first asks for it (data-conn "locked"); the
//! second test types it in and submits, the page reloads with it, and the
//! same 3 s hold from that reload.
//!
//! Without `/usr/bin/chromium` the test prints "skipped: chromium not
//! installed" and passes, unless `FEED_REQUIRE_CHROMIUM` is set (CI sets it),
//! in which case it fails. Chromium runs in its own process group, which is
//! killed when the test ends, and after 30 s whatever it is doing.

use std::fs::File;
use std::io::{BufRead, BufReader, Write};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc::{Receiver, RecvTimeoutError, Sender, channel};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde_json::{Value, json};

use super::server::Server;

const CHROMIUM: &str = "/usr/bin/chromium";
/// How long the page has, from navigation, to show 2 points everywhere.
const WITHIN_MS: f64 = 3000.0;
/// How long the test waits for that, Chromium's start included.
const WAIT: Duration = Duration::from_secs(10);
/// Chromium is killed after this long, whatever it is doing.
const HARD_LIMIT: Duration = Duration::from_secs(30);
/// The longest wait for one DevTools answer.
const CALL_LIMIT: Duration = Duration::from_secs(10);
/// The dashboard's five charts: requests, latency, errors (with shed and
/// rate-limited), random fill with items served, memory. The page draws the
/// fourth as two.
const MIN_CHARTS: usize = 5;

/// What the page shows, read from its DOM: milliseconds since navigation,
/// snapshots received, how they arrive, and the points each chart (canvas
/// or SVG) drew.
const PAGE_STATE: &str = r"(() => {
  const body = document.body;
  if (!body || body.dataset.points === undefined) return null;
  return {
    ms: performance.now(),
    points: Number(body.dataset.points),
    conn: body.dataset.conn || '',
    charts: Array.from(document.querySelectorAll('canvas, svg'), (c) => ({
      id: c.id,
      points: Number(c.getAttribute('data-points')),
    })),
  };
})()";

/// Chromium is there; else the test is skipped, loudly, unless CI requires it.
fn chromium() -> bool {
    if !Path::new(CHROMIUM).exists() {
        assert!(
            std::env::var_os("FEED_REQUIRE_CHROMIUM").is_none(),
            "FEED_REQUIRE_CHROMIUM is set but {CHROMIUM} does not exist"
        );
        println!("skipped: chromium not installed ({CHROMIUM} does not exist)");
        return false;
    }
    true
}

#[test]
fn the_dashboard_draws_live_data_within_3_s() {
    if !chromium() {
        return;
    }
    let (_server, ready) = Server::start_ready(&[("FEED__ADMIN__PORT", "0")]);
    let (mut browser, page) = Page::open(&ready);
    page.draws_live_data(&mut browser);
}

/// With an admin token, the page asks for it; once it is given, the page
/// reloads and draws as it does without one.
#[test]
fn the_dashboard_asks_for_the_admin_token_then_draws() {
    if !chromium() {
        return;
    }
    let token = "dashboard-token-0123456789";
    let (_server, ready) = Server::start_ready(&[("FEED__ADMIN__TOKEN", token)]);
    let (mut browser, page) = Page::open(&ready);
    let state = page.wait_for(&mut browser, |state| state["conn"] == "locked");
    assert_eq!(
        state["conn"], "locked",
        "the page did not ask for the token: {state}"
    );
    page.evaluate(
        &mut browser,
        &format!(
            "document.getElementById('token').value = {token:?}; \
             document.getElementById('unlock').requestSubmit(); true"
        ),
    );
    page.draws_live_data(&mut browser);
}

/// The dashboard open in a tab of a [`Browser`].
struct Page {
    url: String,
    session: String,
    opened: Instant,
}

impl Page {
    /// Opens the dashboard of the server whose ready line is `ready`.
    fn open(ready: &Value) -> (Browser, Self) {
        let admin = ready["admin"]
            .as_str()
            .unwrap_or_else(|| panic!("no admin address in the ready line {ready}"));
        let url = format!("http://{admin}/dashboard");
        let mut browser = Browser::launch();
        let opened = Instant::now();
        let target = browser.call(None, "Target.createTarget", json!({ "url": url }));
        let attached = browser.call(
            None,
            "Target.attachToTarget",
            json!({ "targetId": target["targetId"], "flatten": true }),
        );
        let session = attached["sessionId"].as_str().unwrap().to_owned();
        let page = Self {
            url,
            session,
            opened,
        };
        (browser, page)
    }

    /// The value of `expression` in the page; `Null` while the page is
    /// between two documents (a reload).
    fn evaluate(&self, browser: &mut Browser, expression: &str) -> Value {
        browser
            .try_call(
                Some(&self.session),
                "Runtime.evaluate",
                json!({ "expression": expression, "returnByValue": true }),
            )
            .map_or(Value::Null, |answer| answer["result"]["value"].clone())
    }

    /// Reads [`PAGE_STATE`] every 100 ms until `done` holds of it or
    /// [`WAIT`] has passed since the page was opened; the last state read.
    fn wait_for(&self, browser: &mut Browser, done: impl Fn(&Value) -> bool) -> Value {
        let mut state = Value::Null;
        while self.opened.elapsed() < WAIT {
            state = self.evaluate(browser, PAGE_STATE);
            if done(&state) {
                break;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        state
    }

    /// The page shows live data on every chart within [`WITHIN_MS`] of its
    /// (last) navigation.
    fn draws_live_data(&self, browser: &mut Browser) {
        let url = &self.url;
        let page = self.wait_for(browser, shows_data);
        assert!(
            shows_data(&page),
            "after {:?}, the page at {url} does not show 2 points on the body and on at least \
             {MIN_CHARTS} charts: {page}\nchromium log:\n{}",
            self.opened.elapsed(),
            browser.log_tail()
        );
        let page_ms = page["ms"].as_f64().unwrap();
        assert!(
            page_ms <= WITHIN_MS,
            "the page needed {page_ms:.0} ms from navigation to show data: {page}"
        );
        assert_eq!(
            page["conn"], "live",
            "the data did not come from /events: {page}"
        );
        println!("{url}: {page}");
    }
}

/// At least 2 snapshots received, at least [`MIN_CHARTS`] charts, and each
/// chart drew at least 2 points.
fn shows_data(page: &Value) -> bool {
    let at_least_2 = |v: &Value| v.as_f64().is_some_and(|n| n >= 2.0);
    let Some(charts) = page["charts"].as_array() else {
        return false;
    };
    at_least_2(&page["points"])
        && charts.len() >= MIN_CHARTS
        && charts.iter().all(|c| at_least_2(&c["points"]))
}

/// A headless Chromium driven over `--remote-debugging-pipe`, with a fresh
/// profile; killed with its whole process group when dropped.
struct Browser {
    child: Child,
    commands: ChildStdin,
    answers: Receiver<Value>,
    next_id: u64,
    dir: PathBuf,
    /// Dropping it tells the watchdog that the test is over.
    _watchdog: Sender<()>,
}

impl Browser {
    fn launch() -> Self {
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_nanos();
        let dir =
            std::env::temp_dir().join(format!("feed-dashboard-{}-{nanos}", std::process::id()));
        std::fs::create_dir_all(dir.join("profile")).unwrap();
        let log = File::create(dir.join("chromium.log")).unwrap();
        // std cannot hand a child extra descriptors without unsafe code; the
        // shell can: our stdin pipe becomes fd 3, our stdout pipe fd 4.
        let mut child = Command::new("sh")
            .arg("-c")
            .arg(r#"exec "$0" "$@" 3<&0 4>&1 </dev/null >/dev/null"#)
            .arg(CHROMIUM)
            .args([
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-quic",
                "--no-first-run",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                "--window-size=1280,900",
                "--remote-debugging-pipe",
            ])
            .arg(format!("--user-data-dir={}", dir.join("profile").display()))
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(log)
            .process_group(0)
            .spawn()
            .unwrap();
        let commands = child.stdin.take().unwrap();
        let stdout = child.stdout.take().unwrap();
        let (sender, answers) = channel();
        std::thread::spawn(move || {
            let mut reader = BufReader::new(stdout);
            let mut message = Vec::new();
            loop {
                message.clear();
                match reader.read_until(0, &mut message) {
                    Ok(0) | Err(_) => return,
                    Ok(_) => {}
                }
                if message.last() == Some(&0) {
                    message.pop();
                }
                let value = serde_json::from_slice(&message).unwrap_or_else(|e| {
                    panic!(
                        "DevTools message {:?}: {e}",
                        String::from_utf8_lossy(&message)
                    )
                });
                if sender.send(value).is_err() {
                    return;
                }
            }
        });
        let (watchdog, done) = channel::<()>();
        let group = child.id();
        std::thread::spawn(move || {
            if done.recv_timeout(HARD_LIMIT) == Err(RecvTimeoutError::Timeout) {
                eprintln!("chromium still running after {HARD_LIMIT:?}: killing it");
                kill_group(group);
            }
        });
        Self {
            child,
            commands,
            answers,
            next_id: 0,
            dir,
            _watchdog: watchdog,
        }
    }

    /// Sends one DevTools command (to the browser, or to a page's session)
    /// and returns its result, skipping the events that arrive meanwhile.
    fn call(&mut self, session: Option<&str>, method: &str, params: Value) -> Value {
        match self.try_call(session, method, params) {
            Ok(result) => result,
            Err(error) => panic!("{method}: {error}"),
        }
    }

    /// As [`Self::call`], but a DevTools error is returned, not a panic.
    fn try_call(
        &mut self,
        session: Option<&str>,
        method: &str,
        params: Value,
    ) -> Result<Value, Value> {
        self.next_id += 1;
        let id = self.next_id;
        let mut message = json!({ "id": id, "method": method, "params": params });
        if let Some(session) = session {
            message["sessionId"] = session.into();
        }
        let mut bytes = serde_json::to_vec(&message).unwrap();
        bytes.push(0);
        if let Err(e) = self.commands.write_all(&bytes) {
            panic!("sending {method} to chromium: {e}\n{}", self.log_tail());
        }
        let deadline = Instant::now() + CALL_LIMIT;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.answers.recv_timeout(left) {
                Ok(answer) if answer["id"] == id => {
                    return match answer.get("error") {
                        Some(error) => Err(error.clone()),
                        None => Ok(answer["result"].clone()),
                    };
                }
                Ok(_) => {}
                Err(e) => panic!("no answer to {method} ({e:?})\n{}", self.log_tail()),
            }
        }
    }

    /// The end of Chromium's stderr, without its D-Bus complaints.
    fn log_tail(&self) -> String {
        let log = std::fs::read_to_string(self.dir.join("chromium.log")).unwrap_or_default();
        let lines: Vec<_> = log.lines().filter(|l| !l.contains("dbus")).collect();
        lines[lines.len().saturating_sub(20)..].join("\n")
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        kill_group(self.child.id());
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// SIGKILL to the process group that Chromium leads (it and its helpers).
fn kill_group(group: u32) {
    let _ = Command::new("kill")
        .args(["-KILL", "--", &format!("-{group}")])
        .stderr(Stdio::null())
        .status();
}
