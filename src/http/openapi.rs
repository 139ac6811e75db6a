//! The OpenAPI document's frame (info, security schemes, tags) and the error responses every
//! operation shares, added in one place rather than repeated on each handler.

use utoipa::openapi::path::{Operation, ParameterIn};
use utoipa::openapi::security::{ApiKey, ApiKeyValue, HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::openapi::{ContentBuilder, OpenApi, Ref, RefOr, Response, ResponseBuilder};
use utoipa::{OpenApi as _, PartialSchema, ToSchema};

use crate::error::ErrorBody;

/// Security scheme names used by handlers' `security(...)`.
pub const OPERATOR: &str = "operator";
pub const API_KEY: &str = "api_key";
pub const API_KEY_BEARER: &str = "api_key_bearer";
pub const USER_TOKEN: &str = "user_token";
pub const USER_TOKEN_HEADER: &str = "user_token_header";

#[derive(utoipa::OpenApi)]
#[openapi(
    info(
        title = "Confidant",
        description = "A self-hostable, multi-tenant store for AI-agent conversations and per-user memory.\n\n\
            Operators log in with email and password and manage applications, agents and keys (the admin plane). \
            Server-to-server clients use API keys. End users reach only their own data with secure user tokens \
            (HS256 JWTs signed with an application's authentication key, `kid` = key id).\n\n\
            Every error is `{\"error\": code, \"message\": sentence, \"details\"?: object}`.",
        license(name = "Apache-2.0", identifier = "Apache-2.0"),
    ),
    tags(
        (name = "auth", description = "Operator login, token refresh and logout"),
        (name = "applications", description = "Applications (tenants) and their members"),
        (name = "agents", description = "Agents of an application"),
        (name = "authentication-keys", description = "Keys that sign secure user tokens"),
        (name = "api-keys", description = "Server-to-server API keys"),
        (name = "providers", description = "Model providers (OpenAI-compatible servers)"),
        (name = "users", description = "An application's end users: export and erase their data"),
        (name = "webhooks", description = "Receivers of an application's events (Standard Webhooks) and their deliveries"),
        (name = "conversations", description = "The end user's conversations (secure user token)"),
        (name = "memories", description = "The end user's memory (secure user token)"),
        (name = "completions", description = "Talk to an agent (secure user token)"),
        (name = "service", description = "Health, readiness and this document"),
    ),
    components(schemas(ErrorBody))
)]
struct Base;

pub fn base() -> OpenApi {
    let mut doc = Base::openapi();
    let components = doc.components.get_or_insert_with(Default::default);
    components.add_security_scheme(
        OPERATOR,
        SecurityScheme::Http(
            HttpBuilder::new()
                .scheme(HttpAuthScheme::Bearer)
                .bearer_format("JWT")
                .description(Some("Operator access token from `POST /v1/auth/login`."))
                .build(),
        ),
    );
    components.add_security_scheme(
        API_KEY,
        SecurityScheme::ApiKey(ApiKey::Header(ApiKeyValue::with_description(
            "X-API-Key",
            "API key (`cfd_…`) with the `admin` ACL, confined to its application.",
        ))),
    );
    components.add_security_scheme(
        API_KEY_BEARER,
        SecurityScheme::Http(
            HttpBuilder::new()
                .scheme(HttpAuthScheme::Bearer)
                .description(Some("The same API key sent as `Authorization: Bearer cfd_…`."))
                .build(),
        ),
    );
    components.add_security_scheme(
        USER_TOKEN,
        SecurityScheme::Http(
            HttpBuilder::new()
                .scheme(HttpAuthScheme::Bearer)
                .bearer_format("JWT")
                .description(Some(
                    "Secure user token: an HS256 JWT signed with an authentication key's secret; header `kid` = the key id, \
                     claims `sub` (the end user) and `exp` required, `nbf`/`iat` optional.",
                ))
                .build(),
        ),
    );
    components.add_security_scheme(
        "metrics_token",
        SecurityScheme::Http(
            HttpBuilder::new()
                .scheme(HttpAuthScheme::Bearer)
                .description(Some(
                    "`CONFIDANT_METRICS_TOKEN`, when the server sets one (`GET /metrics` only).",
                ))
                .build(),
        ),
    );
    components.add_security_scheme(
        USER_TOKEN_HEADER,
        SecurityScheme::ApiKey(ApiKey::Header(ApiKeyValue::with_description(
            "X-Secure-User-Token",
            "The same secure user token in its own header.",
        ))),
    );
    doc
}

fn error_response(description: &str) -> RefOr<Response> {
    ResponseBuilder::new()
        .description(description)
        .content(
            "application/json",
            ContentBuilder::new()
                .schema(Some(Ref::from_schema_name(ErrorBody::name())))
                .build(),
        )
        .build()
        .into()
}

/// The shared error responses: (status, component name, description).
const ERRORS: &[(&str, &str, &str)] = &[
    (
        "400",
        "InvalidRequest",
        "`invalid_request`: malformed JSON, wrong types, unknown enum value or bad cursor.",
    ),
    (
        "401",
        "Unauthorized",
        "`missing_credentials`, `invalid_token`, `unknown_key`, `invalid_signature`, `token_expired` \
         (`details.expired_at`), `token_not_yet_valid`, `invalid_api_key` or `invalid_credentials`; carries `WWW-Authenticate: Bearer error=\"invalid_token\"` when a token was rejected.",
    ),
    (
        "403",
        "Forbidden",
        "`forbidden`: authenticated, but not allowed (not a member, wrong ACL, not an owner); on the data \
         plane also `agent_not_in_scope` (the key does not cover the agent) and `origin_not_allowed` (a \
         browser `Origin` outside the allowed origins).",
    ),
    ("404", "NotFound", "`not_found`: no such thing for this caller."),
    (
        "409",
        "Conflict",
        "`conflict`: a unique name is taken, or the change conflicts with the current state.",
    ),
    (
        "413",
        "PayloadTooLarge",
        "`payload_too_large`: the body is over the configured limit.",
    ),
    (
        "422",
        "ValidationFailed",
        "`validation_failed`: well-formed but invalid values (`details.fields`).",
    ),
    (
        "429",
        "TooManyRequests",
        "`rate_limited` (a per-minute limit; login attempts, or a user's requests or completions) or \
         `quota_exceeded` (a user's daily tokens, on turns): `Retry-After` says when to try again, \
         `details: {scope, limit}` which limit.",
    ),
    ("500", "Internal", "`internal`: a bug; the body never holds internals."),
    (
        "503",
        "Unavailable",
        "`unavailable`: the database cannot be reached, or the request took longer than the server allows.",
    ),
];

/// Adds the shared error responses to every operation, by what the operation does: all may fail
/// with 500/503; authenticated ones with 401/403; ones with path parameters with 404; ones with a
/// body with 400/413/422; ones with a query or a free-text path parameter with 422; creating and
/// changing ones with 409; the data plane and login with 429.
pub fn finish(doc: &mut OpenApi) {
    let components = doc.components.get_or_insert_with(Default::default);
    for (_, name, description) in ERRORS {
        components
            .responses
            .insert((*name).to_owned(), error_response(description));
    }
    // Make sure the schema exists even if no handler named it.
    components
        .schemas
        .entry(ErrorBody::name().into_owned())
        .or_insert_with(ErrorBody::schema);

    for (path, item) in doc.paths.paths.iter_mut() {
        // Limited per user (data plane) or per address and email (login).
        let limited = path.starts_with("/v1/agents/") || path.starts_with("/v1/memories") || path == "/v1/auth/login";
        let operations = [
            &mut item.get,
            &mut item.post,
            &mut item.put,
            &mut item.patch,
            &mut item.delete,
        ];
        for (method, operation) in ["get", "post", "put", "patch", "delete"].into_iter().zip(operations) {
            if let Some(operation) = operation {
                add_errors(method, operation, limited);
            }
        }
    }
}

/// A path parameter that is free text (a user's `sub`), checked by the handler.
fn path_has_text_param(operation: &Operation) -> bool {
    operation
        .parameters
        .iter()
        .flatten()
        .any(|p| matches!(p, RefOr::T(p) if p.parameter_in == ParameterIn::Path && p.name == "sub"))
}

fn add_errors(method: &str, operation: &mut Operation, limited: bool) {
    let authenticated = operation.security.as_ref().is_some_and(|s| !s.is_empty());
    let has_param = |location: ParameterIn| {
        operation
            .parameters
            .iter()
            .flatten()
            .any(|p| matches!(p, RefOr::T(p) if p.parameter_in == location))
    };
    let (has_path_params, has_query) = (has_param(ParameterIn::Path), has_param(ParameterIn::Query));
    let has_body = operation.request_body.is_some();
    let mut wanted = vec!["500", "503"];
    if authenticated {
        wanted.extend(["401", "403"]);
    }
    // A path's ids, and on the data plane an agent named in a body or query, may name nothing.
    if has_path_params || (limited && authenticated) {
        wanted.push("404");
    }
    if has_body || has_query {
        wanted.push("400");
    }
    if has_body {
        wanted.push("413");
    }
    // Query values are checked too (dates, limits, ids), as are bodies.
    if has_body || has_query || path_has_text_param(operation) {
        wanted.push("422");
    }
    if matches!(method, "post" | "patch" | "put") && authenticated {
        wanted.push("409");
    }
    if limited {
        wanted.push("429");
    }
    for (status, name, _) in ERRORS {
        if wanted.contains(status) && !operation.responses.responses.contains_key(*status) {
            operation.responses.responses.insert(
                (*status).to_owned(),
                Ref::new(format!("#/components/responses/{name}")).into(),
            );
        }
    }
}
