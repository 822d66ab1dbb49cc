//! License codes the server must not serve: one byte changed after signing,
//! expired, bound to another host. Each is refused with a reason a person
//! can act on, in `tessera license verify`, in the checkout's error and in
//! `/v1/status`, while the good codes next to them keep being served.

use crate::fixture::{
    checkout_body, code, feature_of, tessera, Fixture, Server, ServerSpec, StartMode,
};

/// One feature's expected verdict: served, or not with a reason containing this.
struct Verdict<'a> {
    feature: &'a str,
    not_served_because: Option<&'a str>,
}

/// The server's checkout answer and its status row of `verdict.feature`
/// both say what `verdict` says.
async fn check(server: &Server, verdict: &Verdict<'_>) {
    let feature = verdict.feature;
    let status = server.status().await;
    let row = feature_of(&status, feature);
    let answer = server
        .post("/v1/checkout", &checkout_body("codes-client", feature, 1))
        .await;
    match verdict.not_served_because {
        None => {
            assert!(
                row.codes.iter().all(|c| c.served && c.reason.is_none()),
                "`{feature}`: {row:#?}"
            );
            assert!(row.hard_limit > 0, "`{feature}`: {row:#?}");
            answer.ok();
        }
        Some(reason) => {
            assert_eq!(row.hard_limit, 0, "`{feature}` is not served: {row:#?}");
            assert!(!row.codes.is_empty(), "`{feature}`: {row:#?}");
            for code in &row.codes {
                assert!(!code.served, "`{feature}`: {code:#?}");
                let why = code.reason.as_deref().unwrap_or_default();
                assert!(
                    why.contains(reason),
                    "`{feature}`: expected {reason:?} in {code:#?}"
                );
            }
            answer.refused(403, "license_not_served");
            assert!(
                answer.message().contains(reason),
                "`{feature}`: expected {reason:?} in {answer:?}"
            );
        }
    }
}

/// Changes `seats = 10` to `seats = 11`.
fn more_seats(signed: &str) -> String {
    let tampered = signed.replacen("seats = 10\n", "seats = 11\n", 1);
    assert_ne!(tampered, signed, "no `seats = 10` in {signed}");
    tampered
}

/// Changes the first character of the signature (still valid base64).
fn other_signature(signed: &str) -> String {
    let marker = "signature = \"";
    let at = signed.find(marker).expect("a signature") + marker.len();
    let first = &signed[at..at + 1];
    let replacement = if first == "A" { "B" } else { "A" };
    format!("{}{replacement}{}", &signed[..at], &signed[at + 1..])
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_code_with_one_byte_changed_is_refused_with_a_clear_message() {
    let fixture = Fixture::new().await;
    let cad = more_seats(&fixture.sign(&code("cad", 10)).await);
    let sim = other_signature(&fixture.sign(&code("sim", 10)).await);
    let cam = fixture.sign(&code("cam", 10)).await;

    // `tessera license verify` with the vendor's public key.
    let public_key = fixture.public_key();
    for (name, text, bad) in [
        ("cad", &cad, true),
        ("sim", &sim, true),
        ("cam", &cam, false),
    ] {
        let path = fixture.path().join(format!("{name}.lic"));
        std::fs::write(&path, text).unwrap();
        let output = tessera([
            "license".as_ref(),
            "verify".as_ref(),
            path.as_os_str(),
            "--key".as_ref(),
            public_key.as_os_str(),
        ])
        .await;
        if bad {
            let output = output.failure();
            assert!(output.text().contains("bad signature"), "{name}: {output}");
        } else {
            let output = output.success();
            assert!(output.stdout.starts_with("ok "), "{name}: {output}");
        }
    }

    let mut server = fixture.server(ServerSpec::new(format!("{cad}\n{sim}\n{cam}")));
    server.start(StartMode::NewPool).await;
    server.wait_state("serving").await;
    let verdicts = [
        Verdict {
            feature: "cad",
            not_served_because: Some("bad signature"),
        },
        Verdict {
            feature: "sim",
            not_served_because: Some("bad signature"),
        },
        Verdict {
            feature: "cam",
            not_served_because: None,
        },
    ];
    for verdict in &verdicts {
        check(&server, verdict).await;
    }

    // The pool file as a whole: two of its three codes fail.
    let output = tessera([
        "license".as_ref(),
        "verify".as_ref(),
        server.pool_file.as_os_str(),
        "--key".as_ref(),
        public_key.as_os_str(),
    ])
    .await
    .failure();
    assert!(output.text().contains("2 of 3 license codes"), "{output}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expired_and_other_host_codes_are_not_served_and_status_says_why() {
    const THIS_HOST: &str = "mid-e2e0000000000001";
    const OTHER_HOST: &str = "mid-e2e0000000000002";
    let fixture = Fixture::new().await;
    // `tessera license sign` refuses an expiry before the issue date, and the
    // flags always issue today: the file form sets both dates.
    let unsigned = format!(
        "[[license]]\nfeature = \"old\"\nseats = 5\nissued = \"2019-01-01\"\nexpiry = \"2020-01-01\"\n\
         [[license]]\nfeature = \"elsewhere\"\nseats = 5\nexpiry = \"permanent\"\nhostid = \"{OTHER_HOST}\"\n\
         [[license]]\nfeature = \"here\"\nseats = 5\nexpiry = \"permanent\"\nhostid = \"{THIS_HOST}\"\n"
    );
    let mut spec = ServerSpec::new(fixture.sign(&unsigned).await);
    // This machine's hostid, for the test: honoured only with the test
    // fault switch, never from the config (see the test below).
    spec.env = vec![
        ("TESSERA_TEST_FAULTS".into(), "1".into()),
        ("TESSERA_TEST_HOSTID".into(), THIS_HOST.into()),
    ];
    let mut server = fixture.server(spec);
    server.start(StartMode::NewPool).await;
    let status = server.wait_state("serving").await;
    assert_eq!(status.server.hostid, THIS_HOST);

    let bound_elsewhere = format!("bound to hostid {OTHER_HOST}");
    let verdicts = [
        Verdict {
            feature: "old",
            not_served_because: Some("expired at the end of 2020-01-01"),
        },
        Verdict {
            feature: "elsewhere",
            not_served_because: Some(&bound_elsewhere),
        },
        Verdict {
            feature: "here",
            not_served_because: None,
        },
    ];
    for verdict in &verdicts {
        check(&server, verdict).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pool_file_update_with_a_changed_code_is_refused_and_the_pool_keeps_serving() {
    let fixture = Fixture::new().await;
    let server = fixture.serve(&code("cam", 10)).await;
    let tampered = more_seats(&fixture.sign(&code("cad", 10)).await);
    let installed = std::fs::read_to_string(&server.pool_file).unwrap();
    let update = format!(
        "{}\n{tampered}",
        installed.replacen("sequence = 1\n", "sequence = 2\n", 1)
    );
    let update_path = fixture.path().join("pool-2.toml");
    std::fs::write(&update_path, update).unwrap();

    let update = update_path.to_str().unwrap();
    tessera(server.cli(&["admin", "update-pool-file", update]))
        .await
        .failure()
        .mentions(&["pool_file_refused", "bad signature"]);
    let status = server.status().await;
    assert_eq!(status.pool_sequence, 1, "{status:#?}");
    check(
        &server,
        &Verdict {
            feature: "cam",
            not_served_because: None,
        },
    )
    .await;
}
