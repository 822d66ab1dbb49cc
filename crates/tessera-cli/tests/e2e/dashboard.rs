//! The web dashboard (`/dashboard`) and the pool-wide status it reads
//! (`/v1/status?scope=pool`): the page and its parts are served with a
//! strict content security policy, any server answers for the whole pool
//! and names a silent one, and in a real browser (headless Chromium driven
//! through chromedriver) the page shows a seat checked out, drops it when
//! it is checked in without being reloaded, writes a hostile user name as
//! text, and says when a server stops answering.
//!
//! Chromium and chromedriver are Debian packages, not part of the Rust
//! toolchain: `.ci/run` installs them (`scripts/install-sdk-tools.sh`).
//! Without them the browser test says it is skipped, unless
//! `TESSERA_REQUIRE_CHROMIUM=1` (CI) makes a missing browser a failure.
//! `TESSERA_DASHBOARD_SCREENSHOT=FILE` keeps a screenshot of the page.

use std::path::PathBuf;
use std::process::Stdio;
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use tessera_proto::StatusResponse;
use tessera_testkit::Http;

use crate::fixture::{checkout_body, code, in_use, Fixture, Server, REQUEST_TIMEOUT};

/// Longest the page may take to show a change (it asks every second).
const PAGE_PATIENCE: Duration = Duration::from_secs(20);

/// `/v1/status?scope=pool` asked of `server` with `http`'s credentials.
async fn pool_status(server: &Server, http: &Http) -> StatusResponse {
    let answer = server
        .send(http.get(&server.address, "/v1/status?scope=pool"))
        .await;
    serde_json::from_value(answer.ok()).expect("a StatusResponse")
}

/// Checks out `count` seats of `cad` as `user` on `server`; the grant.
async fn check_out(server: &Server, user: &str, count: u32) -> Value {
    let mut body = checkout_body(&format!("{user}-client"), "cad", count);
    body["user"] = user.into();
    server.post("/v1/checkout", &body).await.ok()
}

/// Checks in `grant`, taken by [`check_out`] for `user`.
async fn check_in(server: &Server, grant: &Value, user: &str) {
    let body = json!({
        "grant_id": grant["grant_id"],
        "client_id": format!("{user}-client"),
        "proof": grant["proof"],
    });
    server.post("/v1/checkin", &body).await.ok();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn any_server_answers_for_the_pool_and_the_page_is_locked_down() {
    let fixture = Fixture::new().await;
    let codes = fixture.sign(&code("cad", 10)).await;
    let mut servers = fixture.start_pool(&["A", "B", "C"], &codes, &[]).await;
    check_out(&servers[0], "alice", 2).await;
    check_out(&servers[2], "bob", 3).await;
    // A checkout above what is left is denied and counted; one of a feature
    // no server serves is not kept (no caller can grow the counts).
    let refused = servers[2]
        .post("/v1/checkout", &checkout_body("carol-client", "cad", 6))
        .await;
    assert_eq!(refused.code(), "no_seats_available", "{:?}", refused.body);
    let unknown = servers[2]
        .post("/v1/checkout", &checkout_body("x", "no-such-feature", 1))
        .await;
    assert_eq!(unknown.code(), "unknown_feature", "{:?}", unknown.body);

    let anonymous = Http::tls(&servers[0].credentials.ca_pem(), None, REQUEST_TIMEOUT);
    for server in &servers {
        let status = pool_status(server, &server.http).await;
        assert!(
            status.pool_wide && status.unanswered.is_empty(),
            "{status:#?}"
        );
        assert_eq!(in_use(&status, "cad"), 5, "asked of {}", server.address);
        let mut users: Vec<(&str, &str)> = status
            .grants
            .iter()
            .map(|g| (g.user.as_str(), g.server_id.as_str()))
            .collect();
        users.sort();
        assert_eq!(users, [("alice", "A"), ("bob", "C")]);
        let denials = &status.features[0].denials;
        assert_eq!(denials.len(), 1, "{denials:?}");
        assert_eq!(denials[0].code.as_str(), "no_seats_available");
        assert_eq!(denials[0].count, 1);

        // Without a token: the pool's figures, nobody's name.
        let counted = pool_status(server, &anonymous).await;
        assert_eq!(in_use(&counted, "cad"), 5);
        assert!(counted.grants.is_empty(), "{:?}", counted.grants);
        assert_eq!(counted.grants_total, 2);
    }

    // A server's own scope is the default, and is what it was.
    let own = servers[1].status().await;
    assert!(!own.pool_wide);
    for bad in ["?scope=galaxy", "?scop=pool", "?scope=pool&extra=1"] {
        servers[1]
            .get(&format!("/v1/status{bad}"))
            .await
            .refused(400, "invalid_field");
    }

    // The text status names the denials.
    let table = crate::fixture::tessera(servers[1].cli(&["status"]))
        .await
        .success()
        .stdout;
    assert!(
        table.contains(
            "refused: 1 checkout requests since the servers started (no_seats_available 1)"
        ),
        "{table}"
    );

    // The page, its script and its style: each with the policy that keeps
    // anything but this server's own script and requests out.
    for (path, content_type) in [
        ("/dashboard", "text/html; charset=utf-8"),
        ("/dashboard/app.js", "text/javascript; charset=utf-8"),
        ("/dashboard/style.css", "text/css; charset=utf-8"),
    ] {
        let answer = anonymous
            .get(&servers[0].address, path)
            .send()
            .await
            .expect("an answer");
        assert_eq!(answer.status(), 200, "{path}");
        let header = |name: &str| {
            answer
                .headers()
                .get(name)
                .and_then(|v| v.to_str().ok())
                .unwrap_or("")
                .to_string()
        };
        assert_eq!(header("content-type"), content_type, "{path}");
        let policy = header("content-security-policy");
        for part in [
            "default-src 'none'",
            "script-src 'self'",
            "connect-src 'self'",
            "frame-ancestors 'none'",
        ] {
            assert!(policy.contains(part), "{path}: {policy}");
        }
        assert_eq!(header("x-content-type-options"), "nosniff");
        let text = answer.text().await.expect("the body");
        if path == "/dashboard/app.js" {
            // What servers say is written as text, never parsed as markup.
            for sink in [
                "innerHTML",
                "outerHTML",
                "insertAdjacentHTML",
                "document.write",
            ] {
                assert!(!text.contains(sink), "the script uses {sink}");
            }
        }
    }

    // A server that does not answer is named; the rest still count.
    servers[2].kill();
    let partial = pool_status(&servers[0], &servers[0].http).await;
    assert_eq!(
        partial
            .unanswered
            .iter()
            .map(|u| u.id.as_str())
            .collect::<Vec<_>>(),
        ["C"]
    );
    assert_eq!(partial.grants.len(), 1);
    assert_eq!(partial.grants[0].user, "alice");
}

/// chromedriver and Chromium, if this machine has them.
fn browser() -> Option<(PathBuf, PathBuf)> {
    let find = |variable: &str, names: &[&str]| -> Option<PathBuf> {
        if let Some(path) = std::env::var_os(variable) {
            return Some(PathBuf::from(path));
        }
        let path = std::env::var_os("PATH")?;
        std::env::split_paths(&path)
            .flat_map(|dir| names.iter().map(move |name| dir.join(name)))
            .find(|candidate| candidate.is_file())
    };
    let driver = find("TESSERA_CHROMEDRIVER", &["chromedriver"])?;
    let chromium = find(
        "TESSERA_CHROMIUM",
        &["chromium", "chromium-browser", "google-chrome"],
    )?;
    Some((driver, chromium))
}

/// A free loopback port (bound and let go).
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .expect("a free loopback port")
        .port()
}

/// chromedriver and the browser it started. Dropped, it kills chromedriver
/// and every process whose command line names this test's own browser
/// profile: a browser outlives a chromedriver that is killed, or a test
/// that panics before it closes its session.
struct BrowserProcesses {
    _driver: tokio::process::Child,
    profile: PathBuf,
}

impl Drop for BrowserProcesses {
    fn drop(&mut self) {
        let Ok(entries) = std::fs::read_dir("/proc") else {
            return;
        };
        let profile = self.profile.display().to_string();
        for entry in entries.flatten() {
            let Ok(pid) = entry.file_name().to_string_lossy().parse::<i32>() else {
                continue;
            };
            let cmdline = std::fs::read(entry.path().join("cmdline")).unwrap_or_default();
            if String::from_utf8_lossy(&cmdline).contains(&profile) {
                // SAFETY: kill(2) with a pid read from /proc; at worst the
                // process has exited and the call fails.
                unsafe {
                    libc::kill(pid, libc::SIGKILL);
                }
            }
        }
    }
}

/// Starts chromedriver on loopback and opens a headless Chromium session.
async fn open_browser(
    driver: &PathBuf,
    chromium: &PathBuf,
    profile: &std::path::Path,
) -> (BrowserProcesses, fantoccini::Client) {
    let port = free_port();
    let process = tokio::process::Command::new(driver)
        .arg(format!("--port={port}"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("start chromedriver");
    let mut capabilities = serde_json::Map::new();
    capabilities.insert(
        "goog:chromeOptions".into(),
        json!({
            "binary": chromium,
            "args": [
                "--headless=new",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-dev-shm-usage",
                "--window-size=1280,1100",
                format!("--user-data-dir={}", profile.display()),
            ],
        }),
    );
    // The servers' certificates are signed by the pool's own CA, which this
    // throwaway profile does not hold.
    capabilities.insert("acceptInsecureCerts".into(), json!(true));
    let started = Instant::now();
    loop {
        let connector = hyper_util::client::legacy::connect::HttpConnector::new();
        let connected = fantoccini::ClientBuilder::new(connector)
            .capabilities(capabilities.clone())
            .connect(&format!("http://127.0.0.1:{port}"))
            .await;
        match connected {
            Ok(client) => {
                let processes = BrowserProcesses {
                    _driver: process,
                    profile: profile.to_path_buf(),
                };
                return (processes, client);
            }
            Err(err) if started.elapsed() < Duration::from_secs(20) => {
                let _ = err;
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            Err(err) => panic!("no browser session from chromedriver: {err}"),
        }
    }
}

/// What the page shows, read in the page.
const READ_PAGE: &str = r#"
const rows = (id) => [...document.querySelectorAll(`#${id} tbody tr`)]
  .map((row) => [...row.cells].map((cell) => cell.textContent));
return {
  title: document.title,
  hash: location.hash,
  polls: Number(document.body.dataset.polls || 0),
  state: document.getElementById("state").textContent,
  holders: rows("holders"),
  servers: rows("servers"),
  allocations: rows("allocations"),
  in_use: Object.fromEntries([...document.querySelectorAll(".feature")]
    .map((card) => [card.dataset.feature, card.querySelector(".in-use").textContent])),
  charts: document.querySelectorAll(".feature svg polyline").length,
  injected: document.querySelectorAll("main img, main script, main iframe").length,
  same_page: window.tesseraTestMark === 1,
};
"#;

async fn read_page(browser: &fantoccini::Client) -> Value {
    browser
        .execute(READ_PAGE, Vec::new())
        .await
        .expect("the page answers a script")
}

/// Reads the page until `done` holds; panics with what it last showed.
async fn wait_page(
    browser: &fantoccini::Client,
    what: &str,
    done: impl Fn(&Value) -> bool,
) -> Value {
    let started = Instant::now();
    loop {
        let page = read_page(browser).await;
        if done(&page) {
            return page;
        }
        assert!(
            started.elapsed() < PAGE_PATIENCE,
            "the page did not show {what} within {PAGE_PATIENCE:?}; it shows {page:#}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

fn holder_users(page: &Value) -> Vec<String> {
    let mut users: Vec<String> = page["holders"]
        .as_array()
        .map(|rows| {
            rows.iter()
                .filter_map(|row| row[1].as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default();
    users.sort();
    users
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_dashboard_in_chromium_shows_seats_live_and_a_silent_server() {
    let Some((driver, chromium)) = browser() else {
        assert!(
            std::env::var("TESSERA_REQUIRE_CHROMIUM").as_deref() != Ok("1"),
            "TESSERA_REQUIRE_CHROMIUM=1 but no chromedriver and Chromium on PATH \
             (bash scripts/install-sdk-tools.sh installs them)"
        );
        eprintln!("skipped: no chromedriver and Chromium on PATH (TESSERA_CHROMEDRIVER)");
        return;
    };
    let fixture = Fixture::new().await;
    let codes = fixture.sign(&code("cad", 5)).await;
    let mut servers = fixture.start_pool(&["A", "B", "C"], &codes, &[]).await;
    let hostile = r#"<img src=x onerror="document.title='owned'">"#;
    let alice = check_out(&servers[0], "alice", 2).await;
    check_out(&servers[2], hostile, 1).await;

    let profile = fixture.path().join("chromium-profile");
    let (_processes, browser) = open_browser(&driver, &chromium, &profile).await;
    let read_token =
        std::fs::read_to_string(servers[1].credentials.read_token_file()).expect("the read token");
    let url = format!(
        "https://{}/dashboard#token={}",
        servers[1].address,
        read_token.trim()
    );
    browser.goto(&url).await.expect("the page loads");
    browser
        .execute("window.tesseraTestMark = 1; return true;", Vec::new())
        .await
        .expect("mark the page");

    // Both holders, the hostile name as text, the pool's 3 seats in use.
    let page = wait_page(&browser, "both holders", |page| {
        holder_users(page).len() == 2
    })
    .await;
    assert_eq!(
        holder_users(&page),
        vec![hostile.to_string(), "alice".to_string()]
    );
    assert_eq!(page["in_use"]["cad"], "3", "{page:#}");
    assert_eq!(page["title"], "Tessera", "a user name ran as markup");
    assert_eq!(page["injected"], 0, "{page:#}");
    assert_eq!(page["hash"], "", "the token stays in the address bar");
    assert_eq!(page["servers"].as_array().map(Vec::len), Some(3));
    assert!(
        page["servers"]
            .as_array()
            .is_some_and(|rows| rows.iter().any(|row| row[2] == "leader")),
        "{page:#}"
    );
    assert_eq!(page["allocations"].as_array().map(Vec::len), Some(3));
    assert_eq!(page["charts"], 1, "{page:#}");
    assert!(
        page["state"]
            .as_str()
            .is_some_and(|s| s.starts_with("3 servers, leader ")),
        "{page:#}"
    );

    if let Some(file) = std::env::var_os("TESSERA_DASHBOARD_SCREENSHOT") {
        let png = browser.screenshot().await.expect("a screenshot");
        std::fs::write(&file, png).expect("write the screenshot");
    }

    // Alice checks in: the page drops her, without being reloaded.
    let polls_before = page["polls"].as_u64().unwrap_or(0);
    check_in(&servers[0], &alice, "alice").await;
    let page = wait_page(&browser, "alice's check-in", |page| {
        holder_users(page) == vec![hostile.to_string()]
    })
    .await;
    assert_eq!(page["in_use"]["cad"], "1", "{page:#}");
    assert_eq!(page["same_page"], true, "the page was reloaded");
    assert!(page["polls"].as_u64().unwrap_or(0) > polls_before);

    // Server C stops answering: the page says so and drops its seat.
    servers[2].kill();
    let page = wait_page(&browser, "server C silent", |page| {
        page["state"]
            .as_str()
            .is_some_and(|state| state.starts_with("PARTIAL: server C at "))
    })
    .await;
    assert!(holder_users(&page).is_empty(), "{page:#}");

    // A token the pool does not know is dropped and asked for again.
    browser
        .goto(&format!(
            "https://{}/dashboard#token=not-a-token",
            servers[1].address
        ))
        .await
        .expect("the page loads");
    let signin = browser
        .wait()
        .at_most(PAGE_PATIENCE)
        .for_element(fantoccini::Locator::Css("#signin:not([hidden])"))
        .await
        .expect("the token form shows");
    let text = signin.text().await.expect("the form's text");
    assert!(
        text.contains("The token was refused (unauthenticated)"),
        "{text}"
    );
    let _ = browser.close().await;
}
