//! Seed 003's enrolment, as the administrator and the vendor run it: the
//! master's key and hostid from `tessera master init`, the master license
//! `tessera license sign --master` makes of them, and the checks
//! `tessera license verify` makes of it. The machine's hostid is the
//! test-only override (only honoured with the test fault switch), so the
//! tests stand for two hosts on one machine.

use crate::fixture::*;

const MASTER_HOST: &str = "mid-5eed003000000001";
const OTHER_HOST: &str = "mid-5eed003000000002";

fn on_host(hostid: &str) -> [(&str, &str); 2] {
    [
        ("TESSERA_TEST_FAULTS", "1"),
        ("TESSERA_TEST_HOSTID", hostid),
    ]
}

/// The value after `label` on the line that starts with it.
fn field(text: &str, label: &str) -> String {
    text.lines()
        .find_map(|line| line.strip_prefix(label))
        .map(|rest| rest.split_whitespace().next().unwrap_or("").to_string())
        .unwrap_or_else(|| panic!("no `{label}` line in:\n{text}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_vendor_signs_a_master_license_for_what_master_init_printed() {
    let fixture = Fixture::new().await;
    let data = fixture.path().join("master-data");
    let init = tessera_env(
        &on_host(MASTER_HOST),
        [
            "master".as_ref(),
            "init".as_ref(),
            "--data-dir".as_ref(),
            data.as_os_str(),
        ],
    )
    .await
    .success();
    init.mentions(&["mode 0600", "tessera license sign --master"]);
    let public_key = field(&init.stdout, "public key: ");
    assert_eq!(field(&init.stdout, "hostid:     "), MASTER_HOST);

    // Run again, the master keeps its key: a new one would void the license.
    let again = tessera_env(
        &on_host(MASTER_HOST),
        [
            "master".as_ref(),
            "init".as_ref(),
            "--data-dir".as_ref(),
            data.as_os_str(),
        ],
    )
    .await
    .success();
    again.mentions(&["made earlier; kept"]);
    assert_eq!(field(&again.stdout, "public key: "), public_key);

    let license = fixture.path().join("master.toml");
    let secret = fixture.secret_key();
    tessera([
        "license",
        "sign",
        "--master",
        "--key",
        secret.to_str().unwrap(),
        "--vid",
        "acme-vid-1",
        "--servers",
        "3",
        "--hostid",
        MASTER_HOST,
        "--master-key",
        &public_key,
        "--expiry",
        "2099-12-31",
        "--out",
        license.to_str().unwrap(),
    ])
    .await
    .success();
    tessera(["license", "show", license.to_str().unwrap()])
        .await
        .success()
        .mentions(&[
            "vid:acme-vid-1",
            "3 production servers at once",
            MASTER_HOST,
        ]);

    let public = fixture.public_key();
    let verify = |hostid: &'static str, file: std::path::PathBuf| {
        let public = public.clone();
        async move {
            tessera_env(
                &on_host(hostid),
                [
                    "license".as_ref(),
                    "verify".as_ref(),
                    file.as_os_str(),
                    "--key".as_ref(),
                    public.as_os_str(),
                ],
            )
            .await
        }
    };
    verify(MASTER_HOST, license.clone())
        .await
        .success()
        .mentions(&["ok", "VID acme-vid-1 for 3 production servers"]);
    // The data directory copied to another host: the license names one host.
    verify(OTHER_HOST, license.clone())
        .await
        .failure()
        .mentions(&[&format!("bound to host {MASTER_HOST}"), OTHER_HOST]);
    // The customer raises N: the vendor's signature no longer checks.
    let tampered = fixture.path().join("tampered.toml");
    let text = std::fs::read_to_string(&license).unwrap();
    std::fs::write(&tampered, text.replace("servers = 3", "servers = 30")).unwrap();
    verify(MASTER_HOST, tampered)
        .await
        .failure()
        .mentions(&["bad signature"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_master_license_must_name_one_physical_host_and_a_master_key() {
    let fixture = Fixture::new().await;
    let secret = fixture.secret_key();
    let key = secret.to_str().unwrap();
    let master_key = "07ONa1LseQgvhk2vISwAH9fqegLD584VTddWqaYp6Bk=";
    tessera([
        "license",
        "sign",
        "--master",
        "--key",
        key,
        "--vid",
        "v1",
        "--servers",
        "3",
        "--master-key",
        master_key,
    ])
    .await
    .failure()
    .mentions(&["master_hostid is `any`", "one physical host"]);
    tessera([
        "license",
        "sign",
        "--master",
        "--key",
        key,
        "--vid",
        "v1",
        "--servers",
        "3",
        "--hostid",
        MASTER_HOST,
        "--master-key",
        "not-a-key",
    ])
    .await
    .failure()
    .mentions(&["--master-key is the public key `tessera master init` printed"]);
    tessera([
        "license",
        "sign",
        "--master",
        "--key",
        key,
        "--vid",
        "v1",
        "--servers",
        "0",
        "--hostid",
        MASTER_HOST,
        "--master-key",
        master_key,
    ])
    .await
    .failure()
    .mentions(&["servers is 0"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostid_says_whence_and_a_server_config_cannot_claim_one() {
    let output = tessera_env(&on_host(MASTER_HOST), ["hostid"])
        .await
        .success();
    assert_eq!(output.stdout.trim(), MASTER_HOST, "{output}");
    output.mentions(&["derived from TESSERA_TEST_HOSTID"]);

    // The customer's old trick: name the host a code is bound to in the
    // config. The server does not start, and says why.
    let fixture = Fixture::new().await;
    let mut spec = ServerSpec::new(String::new());
    spec.config_top = format!("hostid = \"{OTHER_HOST}\"\n");
    let server = fixture.server(spec);
    tessera([
        "server".as_ref(),
        "--config".as_ref(),
        server.config.as_os_str(),
    ])
    .await
    .failure()
    .mentions(&["can no longer be set in its config", "tessera master init"]);
}
