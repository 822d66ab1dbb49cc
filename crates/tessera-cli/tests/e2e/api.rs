//! Bad requests: each is answered with its HTTP status and stable error code
//! and a sentence, and the server keeps serving.

use serde_json::{json, Value};

use crate::fixture::{checkout_body, code, in_use, Fixture, Server};

const HARD_LIMIT: u32 = 3;

enum Body {
    None,
    Json(Value),
    Raw(Vec<u8>),
}

struct Case {
    name: &'static str,
    method: reqwest::Method,
    path: &'static str,
    body: Body,
    status: u16,
    code: &'static str,
}

async fn check(server: &Server, http: &tessera_testkit::Http, case: Case) {
    let mut request = http.request(case.method.clone(), &server.address, case.path);
    request = match case.body {
        Body::None => request,
        Body::Json(value) => request.json(&value),
        Body::Raw(bytes) => request
            .header("content-type", "application/json")
            .body(bytes),
    };
    let answer = server.send(request).await;
    assert_eq!(
        (answer.status, answer.code()),
        (case.status, case.code),
        "{}: {} {}: {answer:?}",
        case.name,
        case.method,
        case.path
    );
    assert!(
        !answer.message().is_empty(),
        "{}: no message: {answer:?}",
        case.name
    );
}

fn checkout_with(edit: impl FnOnce(&mut Value)) -> Body {
    let mut body = checkout_body("api-client", "cad", 1);
    edit(&mut body);
    Body::Json(body)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_requests_get_stable_codes_and_the_server_keeps_serving() {
    let fixture = Fixture::new().await;
    let server = fixture.serve(&code("cad", HARD_LIMIT)).await;
    let http = server.http.clone();
    let held = server
        .post("/v1/checkout", &checkout_body("api-client", "cad", 1))
        .await
        .ok();

    // The held grant's heartbeat, for `count` seats with `proof`.
    let heartbeat_of_held = |count: u32, proof: &str| {
        let grant_id = held["grant_id"].as_str().unwrap();
        Body::Json(crate::fixture::heartbeat_body(
            grant_id,
            "api-client",
            "cad",
            count,
            proof,
        ))
    };

    // Valid JSON padded past the limit, so only its size is wrong.
    let mut oversized = serde_json::to_vec(&checkout_body("api-client", "cad", 1)).unwrap();
    oversized.resize(64 * 1024 + 1, b' ');
    let post = reqwest::Method::POST;
    let cases = vec![
        Case {
            name: "malformed JSON",
            method: post.clone(),
            path: "/v1/checkout",
            body: Body::Raw(b"{\"client_id\": ".to_vec()),
            status: 400,
            code: "malformed_request",
        },
        Case {
            name: "body over 64 KiB",
            method: post.clone(),
            path: "/v1/checkout",
            body: Body::Raw(oversized),
            status: 413,
            code: "body_too_large",
        },
        Case {
            name: "unknown feature",
            method: post.clone(),
            path: "/v1/checkout",
            body: checkout_with(|b| b["feature"] = "cam".into()),
            status: 404,
            code: "unknown_feature",
        },
        Case {
            name: "count 0",
            method: post.clone(),
            path: "/v1/checkout",
            body: checkout_with(|b| b["count"] = 0.into()),
            status: 400,
            code: "invalid_count",
        },
        Case {
            name: "count above the hard limit",
            method: post.clone(),
            path: "/v1/checkout",
            body: checkout_with(|b| b["count"] = (HARD_LIMIT + 1).into()),
            status: 400,
            code: "count_above_limit",
        },
        Case {
            name: "unknown field",
            method: post.clone(),
            path: "/v1/checkout",
            body: checkout_with(|b| b["priority"] = "high".into()),
            status: 400,
            code: "malformed_request",
        },
        Case {
            name: "missing field",
            method: post.clone(),
            path: "/v1/checkout",
            body: checkout_with(|b| {
                b.as_object_mut().unwrap().remove("feature");
            }),
            status: 400,
            code: "malformed_request",
        },
        Case {
            name: "empty client_id",
            method: post.clone(),
            path: "/v1/checkout",
            body: checkout_with(|b| b["client_id"] = "".into()),
            status: 400,
            code: "invalid_field",
        },
        Case {
            name: "version outside every code",
            method: post.clone(),
            path: "/v1/checkout",
            body: checkout_with(|b| b["version"] = "1000000".into()),
            status: 400,
            code: "version_not_licensed",
        },
        Case {
            name: "wrong method",
            method: reqwest::Method::GET,
            path: "/v1/checkout",
            body: Body::None,
            status: 405,
            code: "method_not_allowed",
        },
        Case {
            name: "unknown path",
            method: reqwest::Method::GET,
            path: "/v1/nope",
            body: Body::None,
            status: 404,
            code: "not_found",
        },
        Case {
            name: "check-in of an unknown grant",
            method: post.clone(),
            path: "/v1/checkin",
            body: Body::Json(json!({"grant_id": "no-such-grant", "client_id": "api-client"})),
            status: 404,
            code: "unknown_grant",
        },
        Case {
            name: "check-in of another client's grant",
            method: post.clone(),
            path: "/v1/checkin",
            body: Body::Json(
                json!({"grant_id": held["grant_id"], "client_id": "someone-else", "proof": held["proof"]}),
            ),
            status: 403,
            code: "grant_proof_invalid",
        },
        Case {
            name: "check-in without a proof",
            method: post.clone(),
            path: "/v1/checkin",
            body: Body::Json(json!({"grant_id": held["grant_id"], "client_id": "api-client"})),
            status: 403,
            code: "grant_proof_invalid",
        },
        Case {
            name: "heartbeat with another count",
            method: post.clone(),
            path: "/v1/heartbeat",
            body: heartbeat_of_held(2, held["proof"].as_str().unwrap()),
            status: 403,
            code: "grant_proof_invalid",
        },
        Case {
            name: "heartbeat with a proof that is not base64url",
            method: post.clone(),
            path: "/v1/heartbeat",
            body: heartbeat_of_held(1, "not a proof"),
            status: 403,
            code: "grant_proof_invalid",
        },
    ];
    for case in cases {
        check(&server, &http, case).await;
    }

    // Still serving, and none of the bad requests took or freed a seat.
    let status = server.status().await;
    assert_eq!(status.server.state, "serving");
    assert_eq!(in_use(&status, "cad"), 1, "{status:#?}");
    server
        .post("/v1/checkout", &checkout_body("api-client", "cad", 2))
        .await
        .ok();
    assert_eq!(in_use(&server.status().await, "cad"), HARD_LIMIT);
}

/// A body over its route's limit is refused with the limit that applied:
/// 64 KiB for a program's request, 32 MiB for an administrator's (a pool
/// file with many codes).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_oversized_body_is_refused_naming_its_routes_limit() {
    let fixture = Fixture::new().await;
    let server = fixture.serve(&code("cad", HARD_LIMIT)).await;
    for (path, limit) in [
        ("/v1/checkout", 64 * 1024),
        ("/v1/admin/pool-file", 32 * 1024 * 1024),
    ] {
        let mut body = serde_json::to_vec(&json!({"text": ""})).unwrap();
        body.resize(limit + 1, b' ');
        let request = server
            .http
            .post(&server.address, path)
            .header(tessera_proto::POOL_HEADER, "e2e")
            .header("content-type", "application/json")
            .body(body);
        let answer = server.send(request).await;
        answer.refused(413, "body_too_large");
        assert_eq!(
            answer.message(),
            format!("request body is larger than {limit} bytes"),
            "{path}"
        );
    }
    assert_eq!(in_use(&server.status().await, "cad"), 0);
}
