//! The OpenAPI 3.1 document of the HTTP API, `GET /v1/openapi.json`.
//!
//! Generated from the code, not written beside it: the wire types derive
//! their schemas (`tessera-proto`'s feature `openapi`), each client, status,
//! admin and monitoring handler carries its `#[utoipa::path]`, and the
//! router takes those handlers through `utoipa_axum::routes!`, so a route is
//! served exactly where it is documented ([`super::Documented`]). Each
//! handler names the error codes it can answer ([`Refuses`]); they are
//! grouped here by HTTP status ([`ErrorCode::http_status`]), each status
//! documented as an [`ErrorBody`] whose `error.code` is one of them.
//!
//! The peer routes (`/v1/peer/*`, and `/v1/test/*` under the test fault
//! switch) are the servers' own and are left out; the document says so.

use std::collections::BTreeMap;
use std::marker::PhantomData;
use std::sync::OnceLock;

use axum::http::header::CONTENT_TYPE;
use axum::response::IntoResponse;
use tessera_core::answer::{NONCE_CHARS_MAX, NONCE_CHARS_MIN};
use tessera_core::names::NAME_BYTES_MAX;
use tessera_proto::{ErrorBody, ErrorCode, MAX_FIELD_BYTES, MAX_SEATS_PER_REQUEST};
use utoipa::openapi::schema::{AllOfBuilder, ObjectBuilder, Ref, Schema, Type};
use utoipa::openapi::security::{Http, HttpAuthScheme, SecurityScheme};
use utoipa::openapi::{ContentBuilder, RefOr, Response, ResponseBuilder};
use utoipa::{IntoResponses, OpenApi, ToSchema};

/// Name of the bearer-token security scheme in the document.
pub const TOKEN_SCHEME: &str = "token";

/// Path of the document itself.
pub const DOCUMENT_PATH: &str = "/v1/openapi.json";

/// The document, as JSON text: built once, on first use.
pub fn document() -> &'static str {
    static DOCUMENT: OnceLock<String> = OnceLock::new();
    DOCUMENT.get_or_init(|| {
        serde_json::to_string(&openapi()).expect("an OpenAPI document serialises to JSON")
    })
}

/// The document: the base below, with the paths and schemas of every
/// documented route group.
pub fn openapi() -> utoipa::openapi::OpenApi {
    let mut document = Base::openapi();
    document.merge(super::DocumentedGroups::new().into_openapi());
    let schemas = &mut document
        .components
        .get_or_insert_with(Default::default)
        .schemas;
    text_as_string(schemas);
    for (schema, checks) in CHECKED_FIELDS {
        let Some(RefOr::T(Schema::Object(object))) = schemas.get_mut(*schema) else {
            panic!("no object schema {schema} in the document");
        };
        for (field, check) in *checks {
            let Some(RefOr::T(Schema::Object(property))) = object.properties.get_mut(*field) else {
                panic!("no field {field} in schema {schema}");
            };
            check.constrain(property);
        }
    }
    document
}

/// Shared text ([`tessera_proto::SharedText`]) is a JSON string, but utoipa
/// documents a type of its own as a reference to a component of its name
/// (`Text`). Every such reference becomes the string it stands for
/// (nullable where the field is optional, as `Option<String>` is), keeping
/// the field's description, and the component goes: the document shows
/// strings, as it would for `String` fields, and a checked field has a
/// schema of its own to carry its limits.
fn text_as_string(schemas: &mut BTreeMap<String, RefOr<Schema>>) {
    use serde_json::{json, Value};
    fn is_text(value: &Value) -> bool {
        value.get("$ref").and_then(Value::as_str) == Some(TEXT_REF)
    }
    fn inline(value: &mut Value) {
        if is_text(value) {
            let Value::Object(map) = value else {
                unreachable!("a reference is an object")
            };
            let description = map.remove("description").filter(|d| d != "");
            map.clear();
            map.insert("type".into(), json!("string"));
            if let Some(description) = description {
                map.insert("description".into(), description);
            }
            return;
        }
        match value {
            Value::Object(map) => {
                let optional_text =
                    map.get("oneOf")
                        .and_then(Value::as_array)
                        .is_some_and(|items| {
                            items.len() == 2
                                && items.contains(&json!({"type": "null"}))
                                && items.iter().any(is_text)
                        });
                if optional_text {
                    let items = map.remove("oneOf");
                    let description = items
                        .iter()
                        .flat_map(|items| items.as_array().into_iter().flatten())
                        .find_map(|item| item.get("description").filter(|d| *d != ""));
                    if let Some(description) = description {
                        map.entry("description").or_insert(description.clone());
                    }
                    map.insert("type".into(), json!(["string", "null"]));
                }
                map.values_mut().for_each(inline);
            }
            Value::Array(items) => items.iter_mut().for_each(inline),
            _ => {}
        }
    }
    const TEXT_REF: &str = "#/components/schemas/Text";
    schemas.remove("Text");
    let mut json = serde_json::to_value(&*schemas).expect("schemas serialise to JSON");
    inline(&mut json);
    *schemas = serde_json::from_value(json).expect("schemas with strings read back");
}

/// How the server checks a field of a request, beyond its type: stated in
/// the document, so that a client (and the fuzzer) knows what it takes.
#[derive(Clone, Copy)]
enum FieldCheck {
    /// 1 to [`MAX_FIELD_BYTES`] bytes without control characters
    /// (`client::check_field`).
    Text,
    /// An identifier: letters, digits and `. _ : @ + -`, 1 to
    /// [`NAME_BYTES_MAX`] bytes (`tessera_core::names::check_name`).
    Name,
    /// Base64url, [`NONCE_CHARS_MIN`] to [`NONCE_CHARS_MAX`] characters
    /// (`tessera_core::answer::check_nonce`).
    Nonce,
    /// A SHA-256: 64 lowercase hex digits
    /// (`tessera_core::answer::check_codes_sha256`).
    Sha256,
    /// 1 to [`MAX_SEATS_PER_REQUEST`].
    Seats,
}

impl FieldCheck {
    fn constrain(self, property: &mut utoipa::openapi::schema::Object) {
        match self {
            FieldCheck::Text => {
                // A character of the document's length is at least a byte:
                // the byte limit may refuse a shorter text of many-byte
                // characters (`invalid_field`).
                property.min_length = Some(1);
                property.max_length = Some(MAX_FIELD_BYTES);
                property.pattern = Some("^[^\\x00-\\x1f\\x7f-\\x9f]*$".to_string());
            }
            FieldCheck::Name => {
                property.pattern = Some(format!("^[A-Za-z0-9._:@+-]{{1,{NAME_BYTES_MAX}}}$"));
            }
            FieldCheck::Nonce => {
                property.pattern = Some(format!(
                    "^[A-Za-z0-9_-]{{{NONCE_CHARS_MIN},{NONCE_CHARS_MAX}}}$"
                ));
            }
            FieldCheck::Sha256 => {
                property.pattern = Some("^[0-9a-f]{64}$".to_string());
            }
            FieldCheck::Seats => {
                property.minimum = Some(1.into());
                property.maximum = Some((MAX_SEATS_PER_REQUEST as usize).into());
            }
        }
    }
}

/// The fields of the client requests the server checks, by schema.
const CHECKED_FIELDS: &[(&str, &[(&str, FieldCheck)])] = &[
    ("CheckoutRequest", SEAT_REQUEST_FIELDS),
    ("HeartbeatRequest", SEAT_REQUEST_FIELDS),
    ("HeartbeatRequest", &[("grant_id", FieldCheck::Text)]),
    (
        "CheckinRequest",
        &[
            ("grant_id", FieldCheck::Text),
            ("client_id", FieldCheck::Text),
        ],
    ),
    (
        "ActivateRequest",
        &[
            ("client_id", FieldCheck::Text),
            ("user", FieldCheck::Text),
            ("host", FieldCheck::Text),
            ("feature", FieldCheck::Text),
            ("version", FieldCheck::Text),
            ("device", FieldCheck::Name),
        ],
    ),
    (
        "TemporaryRequest",
        &[
            ("feature", FieldCheck::Text),
            ("license_id", FieldCheck::Text),
            ("device", FieldCheck::Text),
        ],
    ),
    ("RevokeInstance", &[("instance", FieldCheck::Text)]),
];

const SEAT_REQUEST_FIELDS: &[(&str, FieldCheck)] = &[
    ("client_id", FieldCheck::Text),
    ("user", FieldCheck::Text),
    ("host", FieldCheck::Text),
    ("display", FieldCheck::Text),
    ("feature", FieldCheck::Text),
    ("version", FieldCheck::Text),
    ("count", FieldCheck::Seats),
    ("nonce", FieldCheck::Nonce),
    ("codes_held", FieldCheck::Sha256),
    ("server_key", FieldCheck::Text),
];

#[derive(OpenApi)]
#[openapi(
    info(
        title = "Tessera",
        description = "The HTTP/JSON API of a Tessera license server (PROTOCOL.md): what \
                       programs (checkout, heartbeat, check-in, temporary licenses), \
                       administrators (/v1/admin/*) and monitoring (/v1/status, /metrics) \
                       call. Every error is an `ErrorBody` with the HTTP status of its \
                       code. The peer routes (/v1/peer/*, and /v1/test/* under the test \
                       fault switch), which only servers of one pool call, are internal \
                       and not in this document.",
        license(name = "Apache-2.0", identifier = "Apache-2.0"),
    ),
    components(schemas(ErrorBody, ErrorCode)),
    modifiers(&TokenScheme),
)]
struct Base;

/// The bearer token of the pool file's `[[admins]]`.
struct TokenScheme;

impl utoipa::Modify for TokenScheme {
    fn modify(&self, document: &mut utoipa::openapi::OpenApi) {
        let components = document.components.get_or_insert_with(Default::default);
        let mut http = Http::new(HttpAuthScheme::Bearer);
        http.description = Some(
            "A token of the pool file's `[[admins]]`: role `admin` for /v1/admin/*, `read` or \
             `admin` for the full /v1/status, `production` for a master's VID slots. A token \
             the pool does not know is refused (401 `unauthenticated`) on every route."
                .to_string(),
        );
        components.add_security_scheme(TOKEN_SCHEME, SecurityScheme::Http(http));
    }
}

/// `GET /v1/openapi.json`.
#[utoipa::path(
    get,
    path = "/v1/openapi.json",
    tag = "monitoring",
    summary = "This document (OpenAPI 3.1)",
    responses(
        (status = 200, description = "The OpenAPI document", body = Object,
         content_type = "application/json"),
        Refusals<Monitoring>,
    ),
)]
pub(super) async fn served() -> impl IntoResponse {
    ([(CONTENT_TYPE, "application/json")], document())
}

/// The error codes a route may answer with, as lists to join: the codes of
/// every request, of a JSON body, of an administrator's request, and the
/// route's own.
pub(super) trait Refuses {
    const CODES: &'static [&'static [ErrorCode]];
}

/// Every request: a token the pool does not know, too many requests in
/// flight from one address, a server that failed.
pub(super) const EVERY_REQUEST: &[ErrorCode] = &[
    ErrorCode::Unauthenticated,
    ErrorCode::TooManyRequests,
    ErrorCode::Internal,
];

/// A request with a JSON body ([`super::JsonBody`]).
pub(super) const JSON_BODY: &[ErrorCode] = &[
    ErrorCode::MalformedRequest,
    ErrorCode::BodyTooLarge,
    ErrorCode::BodyTimeout,
];

/// `/v1/admin/*` ([`super::auth::identify`]): the pool header, the role.
pub(super) const ADMIN_REQUEST: &[ErrorCode] = &[ErrorCode::WrongPool, ErrorCode::Forbidden];

/// A monitoring route: refused only as every request may be.
pub(super) struct Monitoring;

impl Refuses for Monitoring {
    const CODES: &'static [&'static [ErrorCode]] = &[EVERY_REQUEST];
}

/// A route's error responses: one per HTTP status among its codes.
pub(super) struct Refusals<R>(PhantomData<R>);

impl<R: Refuses> IntoResponses for Refusals<R> {
    fn responses() -> BTreeMap<String, RefOr<Response>> {
        let mut by_status: BTreeMap<u16, Vec<ErrorCode>> = BTreeMap::new();
        for code in R::CODES.iter().flat_map(|codes| codes.iter()) {
            let codes = by_status.entry(code.http_status()).or_default();
            if !codes.contains(code) {
                codes.push(*code);
            }
        }
        by_status
            .into_iter()
            .map(|(status, codes)| (status.to_string(), error_response(&codes).into()))
            .collect()
    }
}

/// An [`ErrorBody`] whose `error.code` is one of `codes`.
fn error_response(codes: &[ErrorCode]) -> Response {
    let names: Vec<&str> = codes.iter().map(|code| code.as_str()).collect();
    let code = ObjectBuilder::new()
        .schema_type(Type::String)
        .enum_values(Some(names.clone()));
    let error = ObjectBuilder::new()
        .schema_type(Type::Object)
        .property("code", code)
        .required("code");
    let narrowed = ObjectBuilder::new()
        .schema_type(Type::Object)
        .property("error", error)
        .required("error");
    let schema: Schema = AllOfBuilder::new()
        .item(Ref::from_schema_name(ErrorBody::name()))
        .item(narrowed)
        .into();
    let description = format!(
        "Refused: `{}` (PROTOCOL.md; `error.message` says why and what to do)",
        names.join("`, `")
    );
    ResponseBuilder::new()
        .description(description)
        .content(
            "application/json",
            ContentBuilder::new().schema(Some(schema)).build(),
        )
        .build()
}

#[cfg(test)]
mod tests {
    use serde_json::Value;

    use super::*;

    fn parsed() -> Value {
        serde_json::from_str(document()).expect("the document is JSON")
    }

    /// Every operation of the document: (path, method, operation).
    fn operations(document: &Value) -> Vec<(String, String, Value)> {
        let paths = document["paths"].as_object().expect("paths");
        let mut all = Vec::new();
        for (path, item) in paths {
            for (method, operation) in item.as_object().expect("a path item") {
                all.push((path.clone(), method.clone(), operation.clone()));
            }
        }
        all
    }

    /// Every `$ref` in `value`, with where it is.
    fn references(value: &Value, at: &str, found: &mut Vec<(String, String)>) {
        match value {
            Value::Object(map) => {
                for (key, inner) in map {
                    match (key.as_str(), inner) {
                        ("$ref", Value::String(target)) => {
                            found.push((at.to_string(), target.clone()))
                        }
                        _ => references(inner, &format!("{at}/{key}"), found),
                    }
                }
            }
            Value::Array(items) => {
                for (i, inner) in items.iter().enumerate() {
                    references(inner, &format!("{at}/{i}"), found);
                }
            }
            _ => {}
        }
    }

    #[test]
    fn the_document_is_openapi_3_1_and_every_reference_resolves() {
        let document = parsed();
        assert_eq!(document["openapi"], "3.1.0");
        assert_eq!(document["info"]["title"], "Tessera");
        assert!(document["info"]["version"].is_string());
        let schemas = document["components"]["schemas"]
            .as_object()
            .expect("components.schemas");
        for name in [
            "ErrorBody",
            "ErrorCode",
            "CheckoutRequest",
            "Grant",
            "StatusResponse",
        ] {
            assert!(schemas.contains_key(name), "no schema {name}");
        }
        assert!(document["components"]["securitySchemes"][TOKEN_SCHEME].is_object());
        let mut found = Vec::new();
        references(&document, "#", &mut found);
        assert!(found.len() > 50, "only {} references", found.len());
        for (at, target) in found {
            let pointer = target
                .strip_prefix('#')
                .unwrap_or_else(|| panic!("{at}: reference {target} is not local"));
            assert!(
                document.pointer(pointer).is_some(),
                "{at}: reference {target} does not resolve"
            );
        }
    }

    /// Client, status, monitoring and admin routes, each with its answers:
    /// a success, and every error as an `ErrorBody` of codes of its status.
    #[test]
    fn every_operation_documents_its_success_and_its_errors() {
        let document = parsed();
        let operations = operations(&document);
        let mut documented: Vec<String> = operations
            .iter()
            .map(|(path, method, _)| format!("{} {path}", method.to_uppercase()))
            .collect();
        documented.sort();
        assert_eq!(
            documented,
            [
                "GET /dashboard",
                "GET /dashboard/app.js",
                "GET /dashboard/style.css",
                "GET /metrics",
                "GET /v1/openapi.json",
                "GET /v1/status",
                "POST /v1/admin/distribution",
                "POST /v1/admin/license",
                "POST /v1/admin/license/remove",
                "POST /v1/admin/master/revoke",
                "POST /v1/admin/pool-file",
                "POST /v1/checkin",
                "POST /v1/checkout",
                "POST /v1/heartbeat",
                "POST /v1/noop",
                "POST /v1/temporary/activate",
                "POST /v1/temporary/extend",
                "POST /v1/temporary/return",
            ]
        );
        for (path, method, operation) in &operations {
            let name = format!("{method} {path}");
            let responses = operation["responses"].as_object().expect("responses");
            assert!(responses.contains_key("200"), "{name}: no 200");
            for status in ["401", "429"] {
                assert!(responses.contains_key(status), "{name}: no {status}");
            }
            for (status, response) in responses {
                if status.starts_with('2') {
                    continue;
                }
                let schema = &response["content"]["application/json"]["schema"];
                assert_eq!(
                    schema["allOf"][0]["$ref"], "#/components/schemas/ErrorBody",
                    "{name} {status}: {response}"
                );
                let codes = schema["allOf"][1]["properties"]["error"]["properties"]["code"]["enum"]
                    .as_array()
                    .unwrap_or_else(|| panic!("{name} {status}: no codes"));
                for code in codes {
                    let code: ErrorCode = serde_json::from_value(code.clone()).expect("a code");
                    assert_ne!(code, ErrorCode::Unknown, "{name} {status}");
                    assert_eq!(code.http_status().to_string(), *status, "{name} {code}");
                }
            }
            if method == "post" {
                let body = &operation["requestBody"]["content"]["application/json"]["schema"];
                assert!(
                    body["$ref"].is_string(),
                    "{name}: no JSON body: {operation}"
                );
                for status in ["400", "408", "413"] {
                    assert!(responses.contains_key(status), "{name}: no {status}");
                }
            }
            if path.starts_with("/v1/admin/") {
                assert_eq!(
                    operation["security"],
                    serde_json::json!([{ TOKEN_SCHEME: [] }]),
                    "{name}: an administrator's token"
                );
                assert_eq!(
                    operation["parameters"][0]["name"],
                    tessera_proto::POOL_HEADER
                );
                assert_eq!(operation["parameters"][0]["in"], "header");
                assert!(responses.contains_key("403"), "{name}: no 403");
            }
        }
        assert_eq!(
            document["paths"]["/metrics"]["get"]["responses"]["200"]["content"]
                .as_object()
                .map(|content| content.keys().cloned().collect::<Vec<_>>()),
            Some(vec!["text/plain".to_string()])
        );
    }

    /// The fields the server checks say how, so that a client (and the
    /// fuzzer) can send what it takes.
    #[test]
    fn checked_fields_carry_their_limits() {
        let document = parsed();
        let schemas = &document["components"]["schemas"];
        let client_id = &schemas["CheckoutRequest"]["properties"]["client_id"];
        assert_eq!(client_id["minLength"], 1);
        assert_eq!(client_id["maxLength"], MAX_FIELD_BYTES);
        assert!(client_id["pattern"].is_string(), "{client_id}");
        let count = &schemas["HeartbeatRequest"]["properties"]["count"];
        assert_eq!(count["minimum"], 1);
        assert_eq!(count["maximum"], MAX_SEATS_PER_REQUEST);
        let device = &schemas["ActivateRequest"]["properties"]["device"];
        assert_eq!(device["pattern"], "^[A-Za-z0-9._:@+-]{1,128}$");
        let nonce = &schemas["CheckoutRequest"]["properties"]["nonce"];
        assert_eq!(nonce["pattern"], "^[A-Za-z0-9_-]{22,128}$");
    }

    /// Shared text is documented as the string it is: no `Text` component,
    /// optional fields nullable, descriptions kept.
    #[test]
    fn shared_text_fields_are_plain_strings() {
        let document = parsed();
        let schemas = &document["components"]["schemas"];
        assert!(schemas.get("Text").is_none());
        assert!(!document.to_string().contains("schemas/Text\""));
        let grant = &schemas["Grant"]["properties"];
        assert_eq!(grant["grant_id"]["type"], "string", "{grant}");
        assert!(grant["server_id"]["description"].is_string(), "{grant}");
        let display = &schemas["CheckoutRequest"]["properties"]["display"];
        assert_eq!(display["type"], serde_json::json!(["string", "null"]));
        assert!(display["description"].as_str().unwrap().contains("DISPLAY"));
        assert_eq!(display["maxLength"], MAX_FIELD_BYTES);
    }

    /// The peer routes are the servers' own: not in the document, and the
    /// document says so.
    #[test]
    fn peer_routes_are_left_out_and_said_to_be() {
        let document = parsed();
        for path in document["paths"].as_object().expect("paths").keys() {
            assert!(
                !path.starts_with("/v1/peer/") && !path.starts_with("/v1/test/"),
                "{path} is internal"
            );
            assert!(
                path.starts_with(tessera_proto::API_PREFIX)
                    || path == "/metrics"
                    || path.starts_with(crate::api::dashboard::DASHBOARD_PATH),
                "{path}"
            );
        }
        let description = document["info"]["description"].as_str().unwrap_or("");
        assert!(description.contains("/v1/peer/"), "{description}");
    }

    /// `ErrorCode` is a string enum of the codes as the wire spells them.
    #[test]
    fn error_codes_are_a_string_enum_of_their_wire_names() {
        let document = parsed();
        let schema = &document["components"]["schemas"]["ErrorCode"];
        assert_eq!(schema["type"], "string");
        let names = schema["enum"].as_array().expect("an enum");
        assert!(names.len() > 30, "{names:?}");
        for name in names {
            let code: ErrorCode = serde_json::from_value(name.clone()).expect("a code");
            assert_eq!(code.as_str(), name, "{name}");
        }
        for code in [ErrorCode::MalformedRequest, ErrorCode::NoSeatsAvailable] {
            assert!(names.contains(&Value::from(code.as_str())), "{code}");
        }
        let detail = &document["components"]["schemas"]["ErrorDetail"];
        assert_eq!(
            detail["properties"]["code"]["$ref"],
            "#/components/schemas/ErrorCode"
        );
    }
}
