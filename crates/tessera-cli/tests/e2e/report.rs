//! The report log and `tessera report`: a scripted working day on a pool
//! of two servers, whose clocks the test moves hour by hour; the report
//! merged from both servers' logs must give the figures the test computes
//! from its own record of what its programs did (seat-hours, the peak,
//! checkouts and denials per user). A changed or shortened log is refused.

use std::collections::BTreeMap;

use serde_json::Value;

use crate::fixture::{checkout_body, code, tessera, Fixture, Server};

const HOUR_MS: i64 = 3_600_000;

/// What one program did, by the scripted clock.
#[derive(Default)]
struct Program {
    /// (checked out at, checked in at, seats)
    held: Vec<(i64, i64, u32)>,
    checkouts: u64,
    denials: u64,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_scripted_day_is_reported_as_the_programs_saw_it() {
    let fixture = Fixture::new().await;
    let clock_file = fixture.path().join("clock-offset-ms");
    std::fs::write(&clock_file, "0").unwrap();
    let codes = format!(
        "{}\n[policy.features.cad]\nexclude = [\"user:mallory\"]\n",
        fixture.sign(&code("cad", 3)).await
    );
    let clock = clock_file.display().to_string();
    let env = [
        ("TESSERA_TEST_FAULTS", "1"),
        ("TESSERA_TEST_CLOCK_FILE", clock.as_str()),
    ];
    let mut servers = fixture.start_pool(&["A", "B"], &codes, &env).await;

    // The day starts at 08:00 UTC tomorrow; the clocks only move forward.
    let real_now = || {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_millis() as i64
    };
    let day = (real_now() / (24 * HOUR_MS) + 1) * 24 * HOUR_MS;
    let at = |hours: f64| day + (hours * HOUR_MS as f64) as i64;
    let set_clock = |unix_ms: i64| {
        std::fs::write(&clock_file, (unix_ms - real_now()).to_string()).unwrap();
    };

    let mut programs: BTreeMap<&str, Program> = BTreeMap::new();
    let mut open: BTreeMap<&str, (Value, i64, u32, usize)> = BTreeMap::new();
    // (hour, user, server, seats: > 0 check out, 0 check in)
    let script: &[(f64, &str, usize, u32)] = &[
        (8.0, "alice", 0, 2),
        (9.0, "bob", 1, 1),
        (9.5, "carol", 0, 1), // full: denied
        (10.0, "alice", 0, 0),
        (10.5, "mallory", 1, 1), // excluded by the policy
        (11.0, "carol", 1, 1),
        (12.0, "bob", 1, 0),
        (13.25, "carol", 1, 0),
        (14.0, "dave", 0, 3),
        (15.5, "dave", 0, 0),
        (16.0, "erin", 1, 1), // still held when the day is reported
    ];
    for &(hour, user, server, seats) in script {
        // Seats checked in on one server are lent to another once the
        // leader has heard of the check-in (a report, 300 ms): real time
        // between steps, whatever the scripted clock says.
        tokio::time::sleep(std::time::Duration::from_millis(800)).await;
        set_clock(at(hour));
        let program = programs.entry(user).or_default();
        let server: &Server = &servers[server];
        if seats > 0 {
            let mut body = checkout_body(&format!("{user}-prog"), "cad", seats);
            body["user"] = user.into();
            body["host"] = "pc".into();
            let answer = server.post("/v1/checkout", &body).await;
            if answer.code().is_empty() {
                let grant = answer.ok();
                program.checkouts += 1;
                open.insert(user, (grant, at(hour), seats, 0));
            } else {
                eprintln!("{hour}: {user} refused: {}", answer.message());
                program.denials += 1;
            }
        } else {
            let (grant, from, seats, _) = open.remove(user).expect("held");
            let checkin = serde_json::json!({
                "grant_id": grant["grant_id"],
                "client_id": format!("{user}-prog"),
                "proof": grant["proof"],
            });
            server.post("/v1/checkin", &checkin).await.ok();
            program.held.push((from, at(hour), seats));
        }
    }
    let end = at(17.0);
    set_clock(end);
    for (user, (_, from, seats, _)) in &open {
        programs
            .get_mut(user)
            .unwrap()
            .held
            .push((*from, end, *seats));
    }
    // Both servers stop cleanly: their files get their checksums.
    for server in &mut servers {
        assert!(server.terminate().await.success());
    }

    // What the programs saw.
    let mut changes: Vec<(i64, i64)> = Vec::new();
    for program in programs.values() {
        for &(from, to, seats) in &program.held {
            changes.push((from, i64::from(seats)));
            changes.push((to, -i64::from(seats)));
        }
    }
    changes.sort();
    let mut now = 0;
    let mut peak = 0;
    for (_, change) in changes {
        now += change;
        peak = peak.max(now);
    }
    let seat_hours = |p: &Program| -> f64 {
        p.held
            .iter()
            .map(|&(from, to, seats)| f64::from(seats) * (to - from) as f64 / HOUR_MS as f64)
            .sum()
    };

    let dirs: Vec<String> = servers
        .iter()
        .map(|s| s.data_dir.join("report").display().to_string())
        .collect();
    let to = end.to_string();
    let mut args = vec!["report", "--to", to.as_str(), "--format", "json"];
    args.extend(dirs.iter().map(String::as_str));
    let out = tessera(&args).await.success();
    let report: Value = serde_json::from_str(&out.stdout).expect("the report is JSON");
    let cad = &report["features"]["cad"];
    assert_eq!(cad["peak_seats"], peak, "{report:#}");
    assert_eq!(peak, 3);
    let mut total_hours = 0.0;
    for (user, program) in &programs {
        let reported = &cad["users"][user];
        let hours = seat_hours(program);
        total_hours += hours;
        let got = reported["seat_hours"].as_f64().unwrap_or(0.0);
        // Real time passes between a step and its request: seconds at most.
        assert!(
            (got - hours).abs() < 0.01,
            "{user}: {got} seat-hours reported, {hours} held; {report:#}"
        );
        assert_eq!(reported["checkouts"], program.checkouts, "{user}");
        assert_eq!(reported["denials"], program.denials, "{user}");
    }
    assert!((cad["seat_hours"].as_f64().unwrap() - total_hours).abs() < 0.05);
    assert_eq!(cad["denials"], 2);

    // The table and CSV say the same.
    let mut table_args = vec!["report", "--to", to.as_str()];
    table_args.extend(dirs.iter().map(String::as_str));
    let table = tessera(&table_args).await.success().stdout;
    assert!(table.contains("(2 report files)"), "{table}");
    eprintln!("{table}");
    assert!(
        table
            .lines()
            .any(|l| l.contains("alice") && l.contains("4.00")),
        "{table}"
    );
    let mut csv_args = vec!["report", "--to", to.as_str(), "--format", "csv"];
    csv_args.extend(dirs.iter().map(String::as_str));
    let csv = tessera(&csv_args).await.success().stdout;
    assert!(
        csv.lines()
            .any(|l| l.starts_with("cad,*,") && l.contains(",3,")),
        "{csv}"
    );

    // A changed line is refused with its number; a file cut short, by its checksum.
    let files: Vec<std::path::PathBuf> = std::fs::read_dir(&dirs[0])
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "jsonl"))
        .collect();
    let file = &files[0];
    assert!(
        file.with_extension("jsonl.sha256").exists(),
        "a cleanly stopped server closes its file with a checksum"
    );
    let text = std::fs::read_to_string(file).unwrap();
    std::fs::write(file, text.replacen("\"alice\"", "\"zoe\"", 1)).unwrap();
    tessera(["report", file.to_str().unwrap()])
        .await
        .failure()
        .mentions(&["the file was changed or cut short"]);
    std::fs::remove_file(file.with_extension("jsonl.sha256")).unwrap();
    tessera(["report", file.to_str().unwrap()])
        .await
        .failure()
        .mentions(&["does not follow line", "the file was changed there"]);
    let shortened: String = text.lines().take(2).map(|l| format!("{l}\n")).collect();
    std::fs::write(file, shortened).unwrap();
    tessera(["report", file.to_str().unwrap()]).await.success();
}
