//! `tessera status` from any server of a pool: the whole pool's seats in
//! use and grants, the same whichever server is asked, in every format;
//! a server that does not answer is named, never passed over.

use tessera_proto::StatusResponse;

use crate::fixture::{checkout_body, code, tessera, Fixture, Server};

/// `tessera status --json` asked of `server`, as its administrator.
async fn pool_status(server: &Server) -> StatusResponse {
    let out = tessera(server.cli(&["status", "--json"])).await.success();
    serde_json::from_str(&out.stdout).expect("a status in JSON")
}

fn in_use(status: &StatusResponse) -> u32 {
    status.features[0]
        .servers
        .iter()
        .filter_map(|row| row.in_use)
        .sum()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_server_answers_for_the_whole_pool_and_a_silent_one_is_named() {
    let fixture = Fixture::new().await;
    let codes = fixture.sign(&code("cad", 10)).await;
    let mut servers = fixture.start_pool(&["A", "B", "C"], &codes, &[]).await;
    for (server, user, count) in [(0, "alice", 2), (2, "bob", 3)] {
        let mut body = checkout_body(&format!("{user}-1"), "cad", count);
        body["user"] = user.into();
        body["display"] = format!("/dev/pts/{count}").into();
        let answer = servers[server].post("/v1/checkout", &body).await.ok();
        assert_eq!(answer["server_id"], ["A", "B", "C"][server]);
    }

    // Each server in turn: 5 seats in use, both grants, each on its holder.
    for server in &servers {
        let status = pool_status(server).await;
        assert!(
            status.pool_wide && status.unanswered.is_empty(),
            "{status:#?}"
        );
        assert_eq!(
            in_use(&status),
            5,
            "asked of {}: {status:#?}",
            server.address
        );
        let mut held: Vec<(String, u32, String, Option<String>)> = status
            .grants
            .iter()
            .map(|g| {
                (
                    g.user.clone(),
                    g.count,
                    g.server_id.clone(),
                    g.display.clone(),
                )
            })
            .collect();
        held.sort();
        assert_eq!(
            held,
            vec![
                ("alice".into(), 2, "A".into(), Some("/dev/pts/2".into())),
                ("bob".into(), 3, "C".into(), Some("/dev/pts/3".into())),
            ],
            "asked of {}",
            server.address
        );
        let table = tessera(server.cli(&["status"])).await.success().stdout;
        assert!(table.contains("5 of 10 seats in use, "), "{table}");
        assert!(!table.contains("PARTIAL"), "{table}");
    }

    // lmstat from a follower: the pool's total and both users, each with
    // the server that holds the grant.
    let lmstat = tessera(servers[1].cli(&["status", "--format", "lmstat"]))
        .await
        .success()
        .stdout;
    assert!(
        lmstat
            .contains("Users of cad:  (Total of 10 licenses issued;  Total of 5 licenses in use)"),
        "{lmstat}"
    );
    let holder = |i: usize| servers[i].address.replace(':', "/");
    for (user, display, server, count) in
        [("alice", "/dev/pts/2", 0, 2), ("bob", "/dev/pts/3", 2, 3)]
    {
        let line = lmstat
            .lines()
            .find(|l| {
                l.trim_start().starts_with(&format!(
                    "{user} loopback {display} (v1.0) ({} ",
                    holder(server)
                ))
            })
            .unwrap_or_else(|| panic!("no line of {user} in:\n{lmstat}"));
        assert!(line.ends_with(&format!(", {count} licenses")), "{line}");
    }

    // C stops: asked of A, the status names C and calls itself partial.
    servers[2].kill();
    let status = pool_status(&servers[0]).await;
    assert_eq!(status.unanswered.len(), 1, "{status:#?}");
    assert_eq!(status.unanswered[0].id, "C");
    let table = tessera(servers[0].cli(&["status"])).await.success().stdout;
    assert!(table.contains("PARTIAL: server C at "), "{table}");
    assert!(
        table.contains("seats in use on the servers that answered"),
        "{table}"
    );
    let lmstat = tessera(servers[0].cli(&["status", "--format", "lmstat"]))
        .await
        .success()
        .stdout;
    assert!(lmstat.contains("NOTE: PARTIAL: server C at "), "{lmstat}");
}
