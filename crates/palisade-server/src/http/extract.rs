//! Request extractors: JSON bodies, query strings and path parameters whose
//! rejections become [`ApiError`]s naming the field, and the two
//! authentications (agent client certificate, admin bearer token).
use super::AppState;
use crate::config::field_from_serde;
use crate::db::now_ms;
use crate::errors::ApiError;
use crate::store::Who;
use axum::extract::{FromRequest, FromRequestParts, Path, Request};
use axum::http::header::CONTENT_TYPE;
use axum::http::request::Parts;
use axum::http::StatusCode;
use bytes::Bytes;
use palisade_core::{Name, Sha256};
use serde::de::DeserializeOwned;
use sqlx::Row;

/// The SHA-256 fingerprint (DER) of the client certificate presented on the
/// TLS connection, put into every request's extensions by the accept loop.
#[derive(Debug, Clone, Copy)]
pub(crate) struct PeerCert(pub(crate) Option<Sha256>);

/// The client's address (the TCP peer), put into every request's
/// extensions by the accept loop.
#[derive(Debug, Clone, Copy)]
pub(crate) struct PeerAddr(pub(crate) std::net::IpAddr);

/// A JSON body, parsed with `serde_path_to_error` so errors name the field.
pub(crate) struct JsonBody<T>(pub(crate) T);

impl<S, T> FromRequest<S> for JsonBody<T>
where
    S: Send + Sync,
    T: DeserializeOwned,
{
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, ApiError> {
        if let Some(ct) = req.headers().get(CONTENT_TYPE) {
            let json = ct.to_str().is_ok_and(|s| {
                let mime = s.split(';').next().unwrap_or_default().trim();
                mime.eq_ignore_ascii_case("application/json") || mime.ends_with("+json")
            });
            if !json {
                return Err(ApiError::new(
                    StatusCode::UNSUPPORTED_MEDIA_TYPE,
                    "expected a JSON body (Content-Type: application/json)",
                ));
            }
        }
        let bytes = Bytes::from_request(req, state).await.map_err(|e| {
            if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
                ApiError::new(
                    StatusCode::PAYLOAD_TOO_LARGE,
                    "request body is larger than the server accepts",
                )
            } else {
                ApiError::bad_request("cannot read the request body")
            }
        })?;
        parse_json(&bytes).map(JsonBody)
    }
}

/// A JSON body that may be absent (empty): `T::default()` then.
pub(crate) struct OptionalJsonBody<T>(pub(crate) T);

impl<S, T> FromRequest<S> for OptionalJsonBody<T>
where
    S: Send + Sync,
    T: DeserializeOwned + Default,
{
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, ApiError> {
        let json_type = req.headers().get(CONTENT_TYPE).is_none_or(|ct| {
            ct.to_str().is_ok_and(|s| {
                let mime = s.split(';').next().unwrap_or_default().trim();
                mime.eq_ignore_ascii_case("application/json") || mime.ends_with("+json")
            })
        });
        let bytes = Bytes::from_request(req, state).await.map_err(|e| {
            if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
                ApiError::new(
                    StatusCode::PAYLOAD_TOO_LARGE,
                    "request body is larger than the server accepts",
                )
            } else {
                ApiError::bad_request("cannot read the request body")
            }
        })?;
        if bytes.iter().all(u8::is_ascii_whitespace) {
            return Ok(OptionalJsonBody(T::default()));
        }
        if !json_type {
            return Err(ApiError::new(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "expected a JSON body (Content-Type: application/json)",
            ));
        }
        parse_json(&bytes).map(OptionalJsonBody)
    }
}

/// Why text with U+0000 is refused: PostgreSQL cannot store it in a text
/// column (SQLite can), and no field of this API has a use for it (a Linux
/// path or name cannot hold one). Refused for every body, query string and
/// path parameter, so both backends answer alike, with a 4xx naming the
/// field rather than a failed statement.
const NUL_REFUSED: &str = "text may not contain NUL (U+0000)";

/// Whether a JSON text holds an escaped NUL (`\u0000` not itself escaped);
/// a raw NUL byte is not valid JSON at all.
fn has_escaped_nul(bytes: &[u8]) -> bool {
    bytes.windows(6).enumerate().any(|(i, w)| {
        w == b"\\u0000" && bytes[..i].iter().rev().take_while(|&&b| b == b'\\').count() % 2 == 0
    })
}

/// Longest field path a NUL refusal names: a key may be megabytes long, and
/// the path is written into the answer twice.
const MAX_NUL_PATH: usize = 256;

/// The path (`files[0].path`, as `serde_path_to_error` names fields) of the
/// first key or string, in document order, that holds a NUL; `None` when
/// there is none or the text is not JSON (the parse proper says why).
///
/// Streamed over the text, not built into a `serde_json::Value`: the walk
/// keeps only the keys of the objects it is inside, and the path is
/// assembled once, on the way back up from the NUL, so its cost is linear in
/// the body. (It used to format the path of every array element and object
/// member before descending: a 4 MiB key over an array of two million
/// elements cost terabytes of copying, on an unauthenticated endpoint.)
fn nul_field(bytes: &[u8]) -> Option<String> {
    use serde::de::DeserializeSeed;
    // Malformed JSON is malformed first, NUL or not (the walk stops at the NUL).
    serde_json::from_slice::<serde::de::IgnoredAny>(bytes).ok()?;
    let mut found = None;
    let mut de = serde_json::Deserializer::from_slice(bytes);
    // An error without `found` is malformed JSON, reported by the parse proper.
    let _ = NulWalk { found: &mut found }.deserialize(&mut de);
    let segments = found?;
    let mut path = String::new();
    for segment in segments.iter().rev() {
        match segment {
            NulSegment::Index(i) => path.push_str(&format!("[{i}]")),
            NulSegment::Key(k) => {
                if !path.is_empty() {
                    path.push('.');
                }
                path.push_str(k);
            }
        }
        if path.len() > MAX_NUL_PATH {
            break;
        }
    }
    Some(truncated(&path, MAX_NUL_PATH))
}

/// `s` cut to at most `max` bytes at a character boundary, `…` marking a cut.
fn truncated(s: &str, max: usize) -> String {
    if s.len() <= max {
        return s.to_owned();
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &s[..end])
}

/// One step of the path to a NUL, innermost first.
enum NulSegment {
    Index(usize),
    Key(String),
}

/// Visits a JSON value, and stops at the first key or string holding a NUL
/// with an error, `found` then holding the segments of its path, innermost
/// first.
struct NulWalk<'a> {
    found: &'a mut Option<Vec<NulSegment>>,
}

/// A map key as the text holds it (borrowed unless it has escapes).
struct NulKey;

impl<'de> serde::de::DeserializeSeed<'de> for NulKey {
    type Value = std::borrow::Cow<'de, str>;

    fn deserialize<D: serde::Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_str(self)
    }
}

impl<'de> serde::de::Visitor<'de> for NulKey {
    type Value = std::borrow::Cow<'de, str>;

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("a key")
    }

    fn visit_borrowed_str<E>(self, v: &'de str) -> Result<Self::Value, E> {
        Ok(std::borrow::Cow::Borrowed(v))
    }

    fn visit_str<E>(self, v: &str) -> Result<Self::Value, E> {
        Ok(std::borrow::Cow::Owned(v.to_owned()))
    }
}

impl<'de> serde::de::DeserializeSeed<'de> for NulWalk<'_> {
    type Value = ();

    fn deserialize<D: serde::Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_any(self)
    }
}

impl NulWalk<'_> {
    fn nul<E: serde::de::Error>(self, segment: Option<NulSegment>) -> E {
        *self.found = Some(segment.into_iter().collect());
        E::custom(NUL_REFUSED)
    }
}

impl<'de> serde::de::Visitor<'de> for NulWalk<'_> {
    type Value = ();

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("JSON")
    }

    fn visit_bool<E>(self, _: bool) -> Result<(), E> {
        Ok(())
    }

    fn visit_i64<E>(self, _: i64) -> Result<(), E> {
        Ok(())
    }

    fn visit_u64<E>(self, _: u64) -> Result<(), E> {
        Ok(())
    }

    fn visit_f64<E>(self, _: f64) -> Result<(), E> {
        Ok(())
    }

    fn visit_unit<E>(self) -> Result<(), E> {
        Ok(())
    }

    fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<(), E> {
        if v.contains('\0') {
            return Err(self.nul(None));
        }
        Ok(())
    }

    fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        let mut i = 0;
        loop {
            match seq.next_element_seed(NulWalk {
                found: &mut *self.found,
            }) {
                Ok(Some(())) => i += 1,
                Ok(None) => return Ok(()),
                Err(e) => {
                    if let Some(path) = self.found.as_mut() {
                        path.push(NulSegment::Index(i));
                    }
                    return Err(e);
                }
            }
        }
    }

    fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        while let Some(key) = map.next_key_seed(NulKey)? {
            let segment = || NulSegment::Key(truncated(&key, MAX_NUL_PATH));
            if key.contains('\0') {
                return Err(self.nul(Some(segment())));
            }
            if let Err(e) = map.next_value_seed(NulWalk {
                found: &mut *self.found,
            }) {
                if let Some(path) = self.found.as_mut() {
                    path.push(segment());
                }
                return Err(e);
            }
        }
        Ok(())
    }
}

/// Parse JSON into `T`, mapping errors as the `errors` module describes.
/// Text holding NUL is refused (see [`NUL_REFUSED`]).
pub(crate) fn parse_json<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    if has_escaped_nul(bytes) {
        if let Some(field) = nul_field(bytes) {
            return Err(ApiError::invalid(
                &field,
                format!("invalid request body: {field}: {NUL_REFUSED}"),
            ));
        }
    }
    let mut de = serde_json::Deserializer::from_slice(bytes);
    let value = serde_path_to_error::deserialize(&mut de).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner();
        if inner.is_data() {
            let message = inner.to_string();
            let field = field_from_serde(&path, &message);
            ApiError::invalid(&field, format!("invalid request body: {message}"))
        } else {
            ApiError::bad_request(format!("malformed JSON: {inner}"))
        }
    })?;
    de.end()
        .map_err(|e| ApiError::bad_request(format!("malformed JSON: {e}")))?;
    Ok(value)
}

/// Convert an already parsed JSON value into `T`, mapping errors as
/// [`parse_json`] does.
pub(crate) fn from_json_value<T: DeserializeOwned>(
    value: serde_json::Value,
) -> Result<T, ApiError> {
    serde_path_to_error::deserialize(value).map_err(|e| {
        let path = e.path().to_string();
        let message = e.into_inner().to_string();
        let field = field_from_serde(&path, &message);
        ApiError::invalid(&field, format!("invalid request body: {message}"))
    })
}

/// The first field of `given` (a request's JSON) that `canonical` (the
/// parsed value serialized again) does not have: for types that cannot
/// refuse unknown fields themselves (internally tagged enums). Null values
/// are skipped (an absent optional field).
pub(crate) fn unknown_field(
    given: &serde_json::Value,
    canonical: &serde_json::Value,
    path: &str,
) -> Option<String> {
    use serde_json::Value;
    match (given, canonical) {
        (Value::Object(g), Value::Object(c)) => g.iter().find_map(|(k, v)| {
            let here = format!("{path}.{k}");
            match c.get(k) {
                _ if v.is_null() => None,
                None => Some(here),
                Some(cv) => unknown_field(v, cv, &here),
            }
        }),
        (Value::Array(g), Value::Array(c)) => g
            .iter()
            .zip(c)
            .enumerate()
            .find_map(|(i, (gv, cv))| unknown_field(gv, cv, &format!("{path}[{i}]"))),
        _ => None,
    }
}

/// A query string, parsed with `serde_path_to_error`.
pub(crate) struct QueryParams<T>(pub(crate) T);

impl<S, T> FromRequestParts<S> for QueryParams<T>
where
    S: Send + Sync,
    T: DeserializeOwned,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, ApiError> {
        let query = parts.uri.query().unwrap_or_default();
        if let Some((k, _)) = form_urlencoded::parse(query.as_bytes())
            .find(|(k, v)| k.contains('\0') || v.contains('\0'))
        {
            return Err(
                ApiError::bad_request(format!("invalid query string: {k}: {NUL_REFUSED}"))
                    .field(k.into_owned()),
            );
        }
        let de = serde_urlencoded::Deserializer::new(form_urlencoded::parse(query.as_bytes()));
        serde_path_to_error::deserialize(de)
            .map(QueryParams)
            .map_err(|e| {
                let path = e.path().to_string();
                let message = e.into_inner().to_string();
                let field = field_from_serde(&path, &message);
                ApiError::bad_request(format!("invalid query string: {message}")).field(field)
            })
    }
}

/// The single path parameter of a route, as text.
pub(crate) struct PathParam(pub(crate) String);

impl<S: Send + Sync> FromRequestParts<S> for PathParam {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        let Path(s) = Path::<String>::from_request_parts(parts, state)
            .await
            .map_err(|e| ApiError::bad_request(format!("invalid path: {}", e.body_text())))?;
        if s.contains('\0') {
            return Err(ApiError::bad_request(format!(
                "invalid path: {NUL_REFUSED}"
            )));
        }
        Ok(PathParam(s))
    }
}

impl PathParam {
    /// The parameter as a hash.
    pub(crate) fn sha256(&self) -> Result<Sha256, ApiError> {
        Sha256::parse(&self.0).map_err(|e| ApiError::bad_request(e.to_string()).field("sha256"))
    }

    /// The parameter as a numeric id.
    pub(crate) fn id(&self, field: &str) -> Result<i64, ApiError> {
        self.0
            .parse::<i64>()
            .ok()
            .filter(|n| *n > 0)
            .ok_or_else(|| ApiError::bad_request(format!("{:?} is not an id", self.0)).field(field))
    }

    /// The parameter as a name.
    pub(crate) fn name(&self, field: &str) -> Result<Name, ApiError> {
        Name::parse(&self.0).map_err(|e| ApiError::bad_request(e.to_string()).field(field))
    }
}

/// An enrolled, non-revoked computer, identified by its client certificate.
/// Checked against the database on every request, so a revocation made
/// through any replica takes effect on the next request.
#[derive(Debug, Clone)]
pub(crate) struct AgentAuth {
    pub(crate) computer_id: i64,
    pub(crate) org_id: i64,
    pub(crate) policy_id: i64,
    pub(crate) name: String,
    /// When the computer enrolled: no sighting it reports is dated earlier.
    pub(crate) enrolled_ms: i64,
}

impl AgentAuth {
    pub(crate) fn who(&self) -> Who {
        Who {
            org_id: self.org_id,
            policy_id: self.policy_id,
            computer_id: self.computer_id,
        }
    }
}

/// How stale `last_seen_ms` may get before a request refreshes it.
const LAST_SEEN_GRANULARITY_MS: i64 = 30_000;

impl FromRequestParts<AppState> for AgentAuth {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let fingerprint = parts
            .extensions
            .get::<PeerCert>()
            .and_then(|p| p.0)
            .ok_or_else(|| {
                ApiError::unauthorized(
                    "a client certificate is required: enroll this computer first",
                )
            })?;
        let hex = fingerprint.to_hex();
        let row = sqlx::query(
            "SELECT id, org_id, policy_id, name, revoked, last_seen_ms, enrolled_ms, \
               CAST(CASE WHEN cert_fingerprint = $1 THEN 1 ELSE 0 END AS BIGINT) \
             FROM computers \
             WHERE cert_fingerprint = $1 OR next_cert_fingerprint = $1",
        )
        .bind(&hex)
        .fetch_optional(state.db.pool())
        .await?;
        let Some(row) = row else {
            return Err(ApiError::forbidden(
                "the client certificate does not belong to any enrolled computer",
            ));
        };
        let revoked: i64 = row.try_get(4)?;
        if revoked != 0 {
            return Err(ApiError::forbidden(
                "this computer's certificate has been revoked",
            ));
        }
        let auth = AgentAuth {
            computer_id: row.try_get(0)?,
            org_id: row.try_get(1)?,
            policy_id: row.try_get(2)?,
            name: row.try_get(3)?,
            enrolled_ms: row.try_get(6)?,
        };
        let current: i64 = row.try_get(7)?;
        if current == 0 {
            // The first use of a renewed certificate: it replaces the one it
            // renews, which is refused from now on.
            let mut tx = state.db.write().await?;
            sqlx::query(
                "UPDATE computers SET cert_fingerprint = next_cert_fingerprint, \
                   next_cert_fingerprint = NULL \
                 WHERE id = $1 AND next_cert_fingerprint = $2",
            )
            .bind(auth.computer_id)
            .bind(&hex)
            .execute(tx.conn())
            .await?;
            tx.commit().await?;
            tracing::info!(computer = %auth.name, "renewed client certificate in use");
        }
        let last_seen: Option<i64> = row.try_get(5)?;
        let now = now_ms();
        if last_seen.is_none_or(|t| now - t > LAST_SEEN_GRANULARITY_MS) {
            state.recorder.touch(auth.computer_id, now);
        }
        Ok(auth)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escaped_nul_is_found_and_named() {
        assert!(has_escaped_nul(br#"{"a":"x\u0000"}"#));
        assert!(
            has_escaped_nul(br#"{"a":"\\\u0000"}"#),
            "an escaped backslash, then NUL"
        );
        assert!(
            !has_escaped_nul(br#"{"a":"\\u0000"}"#),
            "a backslash, then text"
        );
        assert!(!has_escaped_nul(br#"{"a":"\u00001"}"#.split_at(4).0));
        let err =
            parse_json::<serde_json::Value>(br#"{"files":[{"path":"/ok"},{"path":"/a\u0000b"}]}"#)
                .unwrap_err();
        assert_eq!(err.status(), StatusCode::UNPROCESSABLE_ENTITY);
        assert_eq!(err.field_name(), Some("files[1].path"));
        let err = parse_json::<serde_json::Value>(br#"{"k\u0000":1}"#).unwrap_err();
        assert_eq!(err.field_name(), Some("k\0"));
        // Text that only looks like it is taken as it is.
        let v: serde_json::Value = parse_json(br#"{"a":"\\u0000"}"#).unwrap();
        assert_eq!(v["a"], "\\u0000");
    }

    #[test]
    fn nul_paths_are_named_in_document_order_and_capped() {
        let field = |body: &str| nul_field(body.as_bytes());
        assert_eq!(
            field(r#"[1,{"a":[{},"\u0000"]}]"#).as_deref(),
            Some("[1].a[1]")
        );
        assert_eq!(
            field(r#"{"z":{"b\u0000c":1},"a":"\u0000"}"#).as_deref(),
            Some("z.b\0c")
        );
        assert_eq!(field(r#""\u0000""#).as_deref(), Some(""));
        assert_eq!(field(r#"{"a":"\\u0000"}"#), None);
        assert_eq!(
            field(r#"{"a":"\u0000""#),
            None,
            "malformed: the parse says why"
        );
        // A long key is cut, at a character boundary.
        let long = "é".repeat(1000);
        let got = field(&format!(r#"{{"{long}":{{"x":"\u0000"}}}}"#)).unwrap();
        assert!(got.len() <= MAX_NUL_PATH + '…'.len_utf8(), "{}", got.len());
        assert!(got.starts_with("éé") && got.ends_with('…'), "{got}");
    }
}
