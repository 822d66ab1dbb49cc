//! The framed protocol (PROTOCOL.md, "The framed protocol") with the real
//! binary: the SDK speaks it by default, and its answers are REST's; a
//! hostile or broken frame gets a stable code, and the server keeps serving.

use std::time::Duration;

use serde_json::{json, Value};
use tessera_client::{Client, ClientConfig, ClientError, Protocol};
use tessera_proto::frame::{self, Op};
use tessera_transport::{FramedConnector, FramedStream, Opened};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::fixture::{checkout_body, code, in_use, tessera, Fixture, Server};

/// Request frames the server has answered, from `/metrics`.
async fn frames_answered(server: &Server) -> u64 {
    metric(server, "tessera_framed_requests_total").await
}

/// The value of the unlabelled metric `name` in the server's `/metrics`.
async fn metric(server: &Server, name: &str) -> u64 {
    let metrics = server.metrics().await;
    tessera_testkit::metric(&metrics, name).unwrap_or_else(|| panic!("no {name} in:\n{metrics}"))
}

fn sdk(server: &Server, protocol: Protocol, client_id: &str) -> Client {
    let mut config = ClientConfig::new([server.address.as_str()]);
    config.client_id = client_id.into();
    config.user = "u1".into();
    config.host = "h1".into();
    config.tls = tessera_client::ClientTls::PoolCa(server.credentials.ca_pem());
    config.trust = server.vendor_trust();
    config.protocol = protocol;
    Client::new(config).expect("SDK client")
}

/// The SDK's checkout, heartbeat and check-in travel in frames, signed
/// over their nonces as over REST (the client trusts only its vendor's
/// key), and a refusal keeps its code. A client set to REST sends none.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_sdk_checks_out_renews_and_checks_in_over_frames() {
    let fixture = Fixture::new().await;
    let server = fixture.serve(&code("cad", 3)).await;
    let before = frames_answered(&server).await;

    let framed = sdk(&server, Protocol::Framed, "framed-ws1");
    let seat = framed.checkout("cad", "1.0", 2).await.expect("two seats");
    assert!(seat.grant().answer.is_some(), "the grant is signed");
    let grant = seat.grant();
    let heartbeat = tessera_client::HeartbeatRequest {
        grant_id: grant.grant_id.clone(),
        client_id: "framed-ws1".into(),
        user: "u1".into(),
        host: "h1".into(),
        display: None,
        idle_ms: None,
        feature: "cad".into(),
        version: "1.0".into(),
        count: 2,
        answer_within_ms: None,
        nonce: Some("0123456789abcdef0123456789abcdef".into()),
        codes_held: None,
        server_key: None,
        renewal: 1,
        proof: grant.proof.clone(),
        holding: None,
    };
    let renewed = framed
        .heartbeat_once(&server.address, &heartbeat)
        .await
        .expect("a heartbeat over frames");
    assert_eq!(renewed.grant_id, seat.grant_id());
    let refused = framed.checkout("cad", "1.0", 2).await.err().unwrap();
    assert!(
        matches!(&refused, ClientError::NoSeatsAvailable { .. }),
        "{refused:?}"
    );
    assert_eq!(in_use(&server.status().await, "cad"), 2);
    seat.release().await.expect("check-in over frames");
    assert_eq!(in_use(&server.status().await, "cad"), 0);
    let after_framed = frames_answered(&server).await;
    assert!(
        after_framed >= before + 4,
        "checkout, heartbeat, refused checkout and check-in are frames: {before} -> {after_framed}"
    );

    let rest = sdk(&server, Protocol::Rest, "rest-ws2");
    let seat = rest
        .checkout("cad", "1.0", 1)
        .await
        .expect("a seat over REST");
    seat.release().await.expect("check-in over REST");
    assert_eq!(
        frames_answered(&server).await,
        after_framed,
        "a client set to REST sends no frame"
    );
    // A pool of one has no other server to tell of its check-ins, so none
    // waits in memory for a report, and none of their seats cools.
    assert_eq!(metric(&server, "tessera_superseded_queued").await, 0);
    assert_eq!(metric(&server, "tessera_seats_cooling").await, 0);
}

/// A framed connection to `server`.
async fn connect(server: &Server) -> Box<FramedStream> {
    let connector = FramedConnector::new(&server.credentials.ca_pem(), Duration::from_secs(5))
        .expect("connector");
    match connector.connect(&server.address).await.expect("connects") {
        Opened::Framed(stream) => stream,
        Opened::RestOnly => panic!("the server did not choose the framed protocol"),
    }
}

/// Sends `bytes` and reads one answer frame: its status and JSON body.
async fn exchange(stream: &mut FramedStream, bytes: &[u8]) -> (u16, Value) {
    let answer = tessera_transport::exchange(stream, bytes, 1 << 20)
        .await
        .unwrap_or_else(|err| panic!("no answer frame: {err:?}"));
    let body = serde_json::from_slice(&answer.body).unwrap_or_else(|err| {
        panic!(
            "answer {} is not JSON ({err}): {}",
            answer.status,
            String::from_utf8_lossy(&answer.body)
        )
    });
    (answer.status, body)
}

/// Reads one answer frame, without sending anything.
async fn read_answer(stream: &mut FramedStream) -> (u16, Value) {
    let mut prefix = [0u8; 4];
    stream
        .read_exact(&mut prefix)
        .await
        .expect("an answer frame");
    let mut answer = vec![0u8; u32::from_be_bytes(prefix) as usize];
    stream
        .read_exact(&mut answer)
        .await
        .expect("the whole answer frame");
    let (status, body) = frame::decode_answer(&answer).expect("status and body");
    (status, serde_json::from_slice(body).expect("a JSON body"))
}

fn request(op: Op, token: Option<&str>, body: &Value) -> Vec<u8> {
    frame::encode_request(op, token, body.to_string().as_bytes()).expect("a request frame")
}

fn assert_refused((status, body): &(u16, Value), expected: (u16, &str), mentions: &str) {
    assert_eq!(
        (*status, body["error"]["code"].as_str().unwrap_or("")),
        expected,
        "{body}"
    );
    let message = body["error"]["message"].as_str().unwrap_or("");
    assert!(
        message.contains(mentions),
        "`{mentions}` not in {message:?}"
    );
}

/// After an error that loses the frame boundary, the server closes the
/// connection: the next read ends.
async fn assert_closed(stream: &mut FramedStream) {
    let mut byte = [0u8; 1];
    let read = tokio::time::timeout(Duration::from_secs(5), stream.read(&mut byte))
        .await
        .expect("the server closes the connection");
    assert!(matches!(read, Ok(0) | Err(_)), "{read:?}");
}

/// Each broken or hostile frame gets REST's status and a stable code. A
/// frame read whole keeps the connection, whatever it holds; one that is
/// too long or cut short closes it, since the next frame's start is lost. The server serves on, and nothing is issued by any of them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_frames_get_stable_codes_and_the_server_keeps_serving() {
    let fixture = Fixture::new().await;
    let server = fixture.serve(&code("cad", 3)).await;
    let checkout = checkout_body("c1", "cad", 1);

    let mut stream = connect(&server).await;
    // Within frame boundaries: answered, the connection goes on.
    let mut unknown_op = request(Op::Noop, None, &json!({}));
    unknown_op[4] = 9;
    assert_refused(
        &exchange(&mut stream, &unknown_op).await,
        (404, "not_found"),
        "no such frame op 9",
    );
    let not_json = frame::encode_request(Op::Checkout, None, b"{\"feature\":").unwrap();
    assert_refused(
        &exchange(&mut stream, &not_json).await,
        (400, "malformed_request"),
        "not the JSON this endpoint takes",
    );
    let wrong_token = request(Op::Checkout, Some("not-a-token-of-this-pool"), &checkout);
    assert_refused(
        &exchange(&mut stream, &wrong_token).await,
        (401, "unauthenticated"),
        "not one of this pool's administrator tokens",
    );
    let forged = json!({"grant_id": "0".repeat(32), "client_id": "c1", "proof": "A".repeat(43)});
    let (status, body) = exchange(&mut stream, &request(Op::Checkin, None, &forged)).await;
    let rest = server.post("/v1/checkin", &forged).await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (rest.status, Some(rest.code())),
        "a frame is refused as REST refuses it: {body}"
    );
    let invalid = json!({"client_id": "c1", "user": "u", "host": "h",
        "feature": "cad", "version": "1.0", "count": 0});
    assert_refused(
        &exchange(&mut stream, &request(Op::Checkout, None, &invalid)).await,
        (400, "invalid_count"),
        "",
    );
    let (status, _) = exchange(&mut stream, &request(Op::Noop, None, &checkout)).await;
    assert_eq!(status, 200, "the connection still carries requests");
    // A frame of 40 KB (JSON may be padded with spaces), sent in two parts
    // a moment apart: read whole as it arrives, past the 4 KiB the server
    // sets aside up front.
    let padded = format!("{}{}", " ".repeat(40_000), checkout);
    let big = frame::encode_request(Op::Noop, None, padded.as_bytes()).unwrap();
    stream.write_all(&big[..10_000]).await.unwrap();
    stream.flush().await.unwrap();
    tokio::time::sleep(Duration::from_millis(100)).await;
    let (status, body) = exchange(&mut stream, &big[10_000..]).await;
    assert_eq!(status, 200, "{body}");
    // The connection reads and answers each frame afresh in buffers it
    // keeps: after a large frame, and a longer one before a shorter one,
    // each answer is its own request's.
    for feature in ["f".repeat(200), "cad".to_string()] {
        let mut asked = checkout.clone();
        asked["feature"] = json!(feature);
        let (status, body) = exchange(&mut stream, &request(Op::Noop, None, &asked)).await;
        assert_eq!(
            (status, body["feature"].as_str()),
            (200, Some(feature.as_str())),
            "{body}"
        );
    }

    // Boundaries lost: answered, then closed.
    let mut stream = connect(&server).await;
    let huge = (frame::REQUEST_BYTES_MAX as u32 + 1).to_be_bytes();
    assert_refused(
        &exchange(&mut stream, &huge).await,
        (413, "body_too_large"),
        "at most",
    );
    assert_closed(&mut stream).await;

    let mut stream = connect(&server).await;
    // A token length past the frame's end: the frame's own length still
    // marks where the next one starts.
    let lying = [0, 0, 0, 4, Op::Checkout as u8, 0x03, 0xff, b'x'];
    assert_refused(
        &exchange(&mut stream, &lying).await,
        (400, "malformed_request"),
        "token",
    );
    let (status, _) = exchange(&mut stream, &request(Op::Noop, None, &checkout)).await;
    assert_eq!(status, 200, "the connection still carries requests");

    let mut stream = connect(&server).await;
    // Half a frame, then the client stops sending.
    stream.write_all(&[0, 0, 0, 100, 1, 0]).await.unwrap();
    stream.shutdown().await.unwrap();
    assert_refused(
        &read_answer(&mut stream).await,
        (400, "malformed_request"),
        "cut short",
    );
    assert_closed(&mut stream).await;

    let status = server.status().await;
    assert_eq!(in_use(&status, "cad"), 0, "nothing was issued");
    server.post("/v1/checkout", &checkout).await.ok();
    let mut stream = connect(&server).await;
    let (status, body) = exchange(&mut stream, &request(Op::Checkout, None, &checkout)).await;
    assert_eq!(status, 200, "{body}");
}

/// A frame that stops arriving is refused once the body deadline passes
/// (`body_timeout`, as a REST body would be), and the connection closed;
/// the server serves others meanwhile.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_frame_that_stops_arriving_is_timed_out() {
    let fixture = Fixture::new().await;
    let server = fixture.serve(&code("cad", 3)).await;
    let mut stalled = connect(&server).await;
    stalled.write_all(&[0, 0, 0, 100, 1, 0]).await.unwrap();
    stalled.flush().await.unwrap();

    let mut other = connect(&server).await;
    let checkout = checkout_body("c2", "cad", 1);
    let (status, _) = exchange(&mut other, &request(Op::Checkout, None, &checkout)).await;
    assert_eq!(status, 200, "served while the other frame stalls");

    let answer = tokio::time::timeout(
        Duration::from_millis(tessera_proto::BODY_READ_TIMEOUT_MS) + Duration::from_secs(10),
        read_answer(&mut stalled),
    )
    .await
    .expect("answered within the body deadline and a margin");
    assert_refused(&answer, (408, "body_timeout"), "did not arrive within");
    assert_closed(&mut stalled).await;
}

/// The fields a signed grant answers for `request`, as a program puts them
/// together to check the signature.
fn granted_fields(request: &Value, grant: &Value) -> tessera_core::answer::AnswerFields {
    let answer = &grant["answer"];
    let codes: Vec<tessera_core::LicenseCode> = answer["codes"]
        .as_array()
        .expect("the codes behind the grant")
        .iter()
        .map(|code| {
            let text: tessera_proto::LicenseCodeText =
                serde_json::from_value(code.clone()).expect("a code's text");
            tessera_core::LicenseCode::from_text(&text).expect("a code")
        })
        .collect();
    let text = |value: &Value| value.as_str().expect("a string").to_string();
    tessera_core::answer::AnswerFields {
        outcome: tessera_core::answer::OUTCOME_GRANTED.into(),
        pool_id: text(&answer["pool_id"]),
        server_id: text(&answer["server_id"]),
        hostid: text(&answer["hostid"]),
        server_unix_ms: answer["server_unix_ms"]
            .as_i64()
            .expect("the server's clock"),
        nonce: text(&request["nonce"]),
        client_id: text(&request["client_id"]),
        feature: text(&request["feature"]),
        version: text(&request["version"]),
        count: 1,
        grant_id: text(&grant["grant_id"]),
        lease_ms: grant["lease_ms"].as_u64().expect("a lease"),
        heartbeat_interval_ms: grant["heartbeat_interval_ms"]
            .as_u64()
            .expect("an interval"),
        codes_sha256: tessera_core::answer::codes_sha256(&codes),
        channel: String::new(),
    }
}

/// Programs checking out at once share one signature, each answer
/// carrying its place in the batch, and each checks against the vendor's
/// key: the SDK's first answer on each `tessera/3` connection (later ones
/// are bound to it, see below) and every answer on `tessera/2`. A program
/// that offers only `tessera/1` (an older SDK, which would refuse a field
/// it does not know) gets every answer signed alone, grant and refusal.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn signed_answers_come_in_batches_on_tessera_3_and_2_and_alone_on_tessera_1() {
    let fixture = Fixture::new().await;
    let server = fixture.serve(&code("cad", 40)).await;

    // Older programs: `tessera/1` only.
    let older = FramedConnector::offering(
        &server.credentials.ca_pem(),
        Duration::from_secs(5),
        &[frame::ALPN_V1],
    )
    .expect("connector");
    let Opened::Framed(mut stream) = older.connect(&server.address).await.expect("connects") else {
        panic!("the server did not choose tessera/1 for a client offering only it");
    };
    assert_eq!(stream.get_ref().1.alpn_protocol(), Some(frame::ALPN_V1));
    let mut asked = checkout_body("older-sdk", "cad", 1);
    asked["nonce"] = json!("b2xkZXItc2RrLW5vbmNlLTAwMDE");
    let (status, grant) = exchange(&mut stream, &request(Op::Checkout, None, &asked)).await;
    assert_eq!(status, 200, "{grant}");
    assert!(grant["answer"].get("batch").is_none(), "{grant}");
    let key = tessera_core::answer::ServerPublicKey::from_base64(
        grant["answer"]["server_key"].as_str().unwrap(),
    )
    .unwrap();
    key.verify(
        &granted_fields(&asked, &grant),
        grant["answer"]["signature"].as_str().unwrap(),
    )
    .expect("a tessera/1 answer is signed alone");
    let mut refused = checkout_body("older-sdk", "no-such-feature", 1);
    refused["nonce"] = json!("b2xkZXItc2RrLW5vbmNlLTAwMDI");
    let (status, denial) = exchange(&mut stream, &request(Op::Checkout, None, &refused)).await;
    assert_eq!(status, 404, "{denial}");
    assert!(denial["answer"]["signature"].is_string(), "{denial}");
    assert!(denial["answer"].get("batch").is_none(), "{denial}");

    // Current programs: thirty-two at once, each on a new connection, for
    // at most ten rounds, until one signature has covered more than one of
    // them.
    let mut largest = 0;
    let mut rounds = 0;
    for round in 0..10 {
        rounds += 1;
        let programs: Vec<Client> = (0..32)
            .map(|i| sdk(&server, Protocol::Framed, &format!("ws-{round}-{i}")))
            .collect();
        let mut checkouts = tokio::task::JoinSet::new();
        for program in &programs {
            let program = program.clone();
            checkouts.spawn(async move { program.checkout("cad", "1.0", 1).await });
        }
        let seats: Vec<_> = checkouts
            .join_all()
            .await
            .into_iter()
            .map(|seat| seat.expect("a grant whose batch signature checks"))
            .collect();
        for seat in &seats {
            let answer = seat.grant().answer.expect("a signed answer");
            let batch = answer
                .batch
                .expect("a connection's first signed answer names its batch");
            assert!(batch.index < batch.size, "{batch:?}");
            largest = largest.max(batch.size);
        }
        for seat in seats {
            seat.release().await.expect("a check-in");
        }
        if largest > 1 {
            break;
        }
    }
    assert!(
        largest > 1,
        "thirty-two checkouts at once, ten times, never shared a signature"
    );
    assert_eq!(
        in_use(&server.status().await, "cad"),
        1,
        "only the older program's seat"
    );
    // `/metrics` counts the batches and what they covered: every signed
    // checkout of the current programs, none of the older one's.
    let metrics = server.metrics().await;
    let counter = |name: &str| -> u64 {
        tessera_testkit::metric(&metrics, name)
            .unwrap_or_else(|| panic!("no {name} in:\n{metrics}"))
    };
    let (batches, answers) = (
        counter("tessera_answer_batches_total"),
        counter("tessera_answers_batch_signed_total"),
    );
    assert_eq!(answers, 32 * rounds, "{metrics}");
    assert!(batches < answers, "{batches} batches for {answers} answers");
}

/// A program names the codes it holds (`codes_held`), and a server
/// serving exactly those leaves them out of its grant: the SDK's second
/// checkout comes without them and checks with the ones it holds, and a
/// code added live is sent again. Over REST too, where the signature
/// covers the held codes; a malformed hash is refused. (A grant without
/// codes the program did not name does not count: `trust.rs`'s unit tests.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn codes_the_program_holds_are_not_sent_again() {
    let fixture = Fixture::new().await;
    let server = fixture.serve(&code("cad", 4)).await;
    let program = sdk(&server, Protocol::Framed, "ws-held");
    let codes_of = |seat: &tessera_client::SeatGuard| {
        seat.grant()
            .answer
            .expect("a signed answer")
            .codes
            .iter()
            .map(|code| code.id.clone())
            .collect::<Vec<_>>()
    };
    let first = program.checkout("cad", "1.0", 1).await.expect("a seat");
    assert_eq!(codes_of(&first), ["acme-cad"]);
    let second = program.checkout("cad", "1.0", 1).await.expect("a seat");
    assert!(codes_of(&second).is_empty(), "the program held them");

    // More seats, by a new code: its grants carry both codes again, once.
    let more = fixture
        .sign(
            "[[license]]\nid = \"acme-cad-more\"\nfeature = \"cad\"\nseats = 2\n\
             expiry = \"permanent\"\nlease_s = 60\nheartbeat_interval_s = 10\n",
        )
        .await;
    let file = fixture.path().join("more.lic");
    std::fs::write(&file, more).expect("write the code");
    tessera(server.cli(&["admin", "add-license", file.to_str().unwrap()]))
        .await
        .success();
    let third = program.checkout("cad", "1.0", 1).await.expect("a seat");
    assert_eq!(codes_of(&third), ["acme-cad", "acme-cad-more"]);
    let fourth = program.checkout("cad", "1.0", 1).await.expect("a seat");
    assert!(codes_of(&fourth).is_empty());
    let metrics = server.metrics().await;
    assert!(
        metrics.contains("\ntessera_answers_codes_held_total 2\n"),
        "{metrics}"
    );
    for seat in [first, second, third, fourth] {
        seat.release().await.expect("a check-in");
    }

    // Over REST, signed alone: the signature covers the held codes' hash.
    let mut asked = checkout_body("ws-rest", "cad", 1);
    asked["nonce"] = json!("aGVsZC1jb2Rlcy1yZXN0LTAwMQ");
    let full = server.post("/v1/checkout", &asked).await.ok();
    let held = granted_fields(&asked, &full).codes_sha256;
    asked["nonce"] = json!("aGVsZC1jb2Rlcy1yZXN0LTAwMg");
    asked["codes_held"] = json!(held);
    let grant = server.post("/v1/checkout", &asked).await.ok();
    assert!(grant["answer"].get("codes").is_none(), "{grant}");
    let key = tessera_core::answer::ServerPublicKey::from_base64(
        grant["answer"]["server_key"].as_str().unwrap(),
    )
    .unwrap();
    let mut with_codes = grant.clone();
    with_codes["answer"]["codes"] = full["answer"]["codes"].clone();
    key.verify(
        &granted_fields(&asked, &with_codes),
        grant["answer"]["signature"].as_str().unwrap(),
    )
    .expect("signed over the held codes");
    // Naming codes the server does not serve: they come.
    asked["nonce"] = json!("aGVsZC1jb2Rlcy1yZXN0LTAwMw");
    asked["codes_held"] = json!("0".repeat(64));
    let grant = server.post("/v1/checkout", &asked).await.ok();
    assert_eq!(grant["answer"]["codes"], full["answer"]["codes"]);
    // Not a SHA-256: refused with the field named, over REST and frames.
    asked["codes_held"] = json!("ABC");
    let refused = server.post("/v1/checkout", &asked).await;
    refused.refused(400, "invalid_field");
    assert!(refused.message().contains("codes_held"), "{refused:?}");
    let mut stream = connect(&server).await;
    let (status, answer) = exchange(&mut stream, &request(Op::Checkout, None, &asked)).await;
    assert_eq!(
        (status, &answer["error"]["code"]),
        (400, &json!("invalid_field"))
    );
}

/// On `tessera/3` over TLS 1.3 (the SDK's choice) a connection's first
/// signed answer is signed over the TLS channel too, its exporter value as
/// either end derives it, and the answers after it come unsigned: the
/// channel vouches for them. The SDK takes both (the heartbeat and
/// refusal of `the_sdk_checks_out_renews_and_checks_in_over_frames` travel
/// on its bound connection).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn answers_on_tessera_3_are_signed_once_over_the_channel_then_bound_to_it() {
    let fixture = Fixture::new().await;
    let server = fixture.serve(&code("cad", 3)).await;
    let mut stream = connect(&server).await;
    assert_eq!(stream.get_ref().1.alpn_protocol(), Some(frame::ALPN_V3));
    let channel = tessera_transport::channel_of(&stream).expect("a TLS 1.3 channel");

    let mut asked = checkout_body("ws-bound", "cad", 1);
    asked["nonce"] = json!("Ym91bmQtY2hhbm5lbC1ub25jZS0x");
    let (status, grant) = exchange(&mut stream, &request(Op::Checkout, None, &asked)).await;
    assert_eq!(status, 200, "{grant}");
    let answer: tessera_proto::SignedAnswer =
        serde_json::from_value(grant["answer"].clone()).expect("a signed answer");
    let key = tessera_core::answer::ServerPublicKey::from_base64(&answer.server_key).unwrap();
    let place = answer
        .batch
        .as_ref()
        .expect("signed in a batch")
        .to_core()
        .unwrap();
    let over_channel = tessera_core::answer::AnswerFields {
        channel: channel.value().to_string(),
        ..granted_fields(&asked, &grant)
    };
    key.verify_in_batch(&over_channel, &answer.signature, &place)
        .expect("signed over this connection's channel");
    assert!(
        key.verify_in_batch(&granted_fields(&asked, &grant), &answer.signature, &place)
            .is_err(),
        "the signature does not check without the channel"
    );

    // Later answers on the connection: unsigned, naming the same key.
    asked["nonce"] = json!("Ym91bmQtY2hhbm5lbC1ub25jZS0y");
    let (status, second) = exchange(&mut stream, &request(Op::Checkout, None, &asked)).await;
    assert_eq!(status, 200, "{second}");
    assert!(second["answer"].get("signature").is_none(), "{second}");
    assert!(second["answer"].get("batch").is_none(), "{second}");
    assert_eq!(
        second["answer"]["server_key"],
        grant["answer"]["server_key"]
    );
    assert!(
        !second["answer"]["codes"].as_array().unwrap().is_empty(),
        "the codes still come with the grant: {second}"
    );
    // Two of the three seats are held: two more are refused.
    let mut refused = checkout_body("ws-bound", "cad", 2);
    refused["nonce"] = json!("Ym91bmQtY2hhbm5lbC1ub25jZS0z");
    let (_, denial) = exchange(&mut stream, &request(Op::Checkout, None, &refused)).await;
    assert_eq!(denial["error"]["code"], "no_seats_available", "{denial}");
    assert!(denial["answer"].get("signature").is_none(), "{denial}");

    // A new connection has a new channel, and is signed for again.
    let mut other = connect(&server).await;
    let other_channel = tessera_transport::channel_of(&other).expect("a TLS 1.3 channel");
    assert_ne!(other_channel.value(), channel.value());
    asked["nonce"] = json!("Ym91bmQtY2hhbm5lbC1ub25jZS00");
    let (status, third) = exchange(&mut other, &request(Op::Checkout, None, &asked)).await;
    assert_eq!(status, 200, "{third}");
    assert!(third["answer"]["signature"].is_string(), "{third}");

    let metrics = server.metrics().await;
    assert!(
        metrics.contains("\ntessera_answers_channel_bound_total 2\n"),
        "{metrics}"
    );
}

/// One program checking out from many tasks at once: its connections
/// are shared between the tasks, each bound by its first answer, and the
/// codes one task's grant brought let the others' grants leave them out.
/// Every checkout counts.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn many_tasks_of_one_program_share_its_connections_and_codes() {
    let fixture = Fixture::new().await;
    let server = fixture.serve(&code("cad", 100)).await;
    let program = sdk(&server, Protocol::Framed, "ws-many");
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..16 {
        let program = program.clone();
        tasks.spawn(async move {
            let mut failures = Vec::new();
            for _ in 0..20 {
                match program.checkout("cad", "1.0", 1).await {
                    Ok(seat) => seat.release().await.expect("a check-in"),
                    Err(err) => failures.push(err.to_string()),
                }
            }
            failures
        });
    }
    let failures: Vec<String> = tasks.join_all().await.into_iter().flatten().collect();
    assert!(
        failures.is_empty(),
        "{} of 320 failed: {:?}",
        failures.len(),
        failures.first()
    );
    let metrics = server.metrics().await;
    let held: u64 = metrics
        .lines()
        .find_map(|line| line.strip_prefix("tessera_answers_codes_held_total "))
        .and_then(|value| value.parse().ok())
        .unwrap_or_else(|| panic!("no tessera_answers_codes_held_total in:\n{metrics}"));
    // Only the checkouts sent before the first grant came back carry the
    // codes.
    assert!(held >= 320 - 16, "{held} of 320 grants left the codes out");
}
