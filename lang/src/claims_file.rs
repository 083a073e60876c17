//! The custom-claims file of `policyc --claims`: the custom claims that the `oidc` trust
//! providers of a deployment declare, so that a policy set can be checked and built outside
//! the server that knows them.
//!
//! In: the text of a JSON file, either an array of claims or an object whose `custom_claims`
//! member is one, each claim in the shape of the configuration's `custom_claims` entries:
//!
//! ```json
//! [
//!   { "name": "team", "path": "org.team", "type": "string", "required": true },
//!   { "name": "tier", "path": ["x.acme", "tier"], "type": "integer" }
//! ]
//! ```
//!
//! Out: the [`CustomClaims`] the checker resolves `oidc` claims against, merged as if one
//! trust provider declared them all. `path` is optional here, since checking never reads a
//! token; when given it is validated as the configuration would.

use serde_json::{Map, Value};

use crate::schema::{ClaimType, CustomClaim, CustomClaimError, CustomClaims, dotted_path};

/// Custom-claims files larger than this are refused.
pub const MAX_CLAIMS_FILE_BYTES: u64 = 1024 * 1024;

/// Why a custom-claims file cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ClaimsFileError {
    #[error("not valid JSON: {0}")]
    Json(String),
    #[error("expected an array of custom claims, or an object with a `custom_claims` array")]
    NotAList,
    #[error("custom claim {index}: expected an object")]
    NotAnObject { index: usize },
    #[error("custom claim {index}: `{field}` is missing")]
    Missing { index: usize, field: &'static str },
    #[error("custom claim {index}: `{field}` must be {expected}")]
    WrongType {
        index: usize,
        field: &'static str,
        expected: &'static str,
    },
    #[error("custom claim {index}: unknown field `{field}`")]
    UnknownField { index: usize, field: String },
    #[error(transparent)]
    Claim(#[from] CustomClaimError),
}

/// Parses a custom-claims file. Never panics.
pub fn parse_claims_file(text: &str) -> Result<CustomClaims, ClaimsFileError> {
    let document: Value =
        serde_json::from_str(text).map_err(|error| ClaimsFileError::Json(error.to_string()))?;
    let list = match &document {
        Value::Array(list) => list,
        Value::Object(object) => match object.get("custom_claims") {
            Some(Value::Array(list)) if object.len() == 1 => list,
            _ => return Err(ClaimsFileError::NotAList),
        },
        _ => return Err(ClaimsFileError::NotAList),
    };
    let claims = list
        .iter()
        .enumerate()
        .map(|(index, entry)| match entry {
            Value::Object(fields) => claim(index, fields),
            _ => Err(ClaimsFileError::NotAnObject { index }),
        })
        .collect::<Result<Vec<CustomClaim>, ClaimsFileError>>()?;
    Ok(CustomClaims::merge([claims.as_slice()])?)
}

fn claim(index: usize, fields: &Map<String, Value>) -> Result<CustomClaim, ClaimsFileError> {
    if let Some(unknown) = fields
        .keys()
        .find(|key| !["name", "path", "type", "required"].contains(&key.as_str()))
    {
        return Err(ClaimsFileError::UnknownField {
            index,
            field: unknown.clone(),
        });
    }
    let wrong_type = |field, expected| ClaimsFileError::WrongType {
        index,
        field,
        expected,
    };
    let text = |field: &'static str| match fields.get(field) {
        Some(Value::String(text)) => Ok(text.as_str()),
        Some(_) => Err(wrong_type(field, "a string")),
        None => Err(ClaimsFileError::Missing { index, field }),
    };
    let name = text("name")?;
    let ty = ClaimType::from_config_name(text("type")?)?;
    let required = match fields.get("required") {
        None => false,
        Some(Value::Bool(required)) => *required,
        Some(_) => return Err(wrong_type("required", "true or false")),
    };
    let path = match fields.get("path") {
        // Checking reads no token; the name stands in for the path.
        None => vec![name.to_owned()],
        Some(Value::String(dotted)) => dotted_path(dotted),
        Some(Value::Array(keys)) => keys
            .iter()
            .map(|key| key.as_str().map(str::to_owned))
            .collect::<Option<Vec<String>>>()
            .ok_or_else(|| wrong_type("path", "a string or a list of strings"))?,
        Some(_) => return Err(wrong_type("path", "a string or a list of strings")),
    };
    Ok(CustomClaim::new(name, path, ty, required)?)
}

#[cfg(test)]
#[allow(clippy::unwrap_used, reason = "a test fails by panicking")]
mod tests {
    use super::*;
    use crate::schema::ProviderKind;

    #[test]
    fn reads_the_configuration_shape() {
        let claims = parse_claims_file(
            r#"{"custom_claims": [
                {"name": "team", "path": "org.team", "type": "string", "required": true},
                {"name": "tier", "path": ["x.acme", "tier"], "type": "integer"},
                {"name": "labels", "type": "string_set"}
            ]}"#,
        )
        .unwrap();
        assert_eq!(claims.len(), 3);
        let (_, ty, required) = claims.resolve(ProviderKind::Oidc, "team").unwrap();
        assert_eq!((ty, required), (ClaimType::String, true));
        let (_, ty, required) = claims.resolve(ProviderKind::Oidc, "tier").unwrap();
        assert_eq!((ty, required), (ClaimType::Int, false));
        assert!(claims.resolve(ProviderKind::Github, "team").is_none());
    }

    #[test]
    fn refuses_what_the_configuration_refuses() {
        let check = |text: &str, expected: &str| {
            let error = parse_claims_file(text).unwrap_err();
            assert_eq!(error.to_string(), expected, "{text}");
        };
        check(
            "{",
            "not valid JSON: EOF while parsing an object at line 1 column 1",
        );
        check(
            r#"{"claims": []}"#,
            "expected an array of custom claims, or an object with a `custom_claims` array",
        );
        check(r#"[1]"#, "custom claim 0: expected an object");
        check(
            r#"[{"type": "string"}]"#,
            "custom claim 0: `name` is missing",
        );
        check(
            r#"[{"name": "team", "type": "string", "required": "yes"}]"#,
            "custom claim 0: `required` must be true or false",
        );
        check(
            r#"[{"name": "team", "type": "text"}]"#,
            "unknown claim type `text`; expected `string`, `integer`, `bool` or `string_set`",
        );
        check(
            r#"[{"name": "email", "type": "string"}]"#,
            "custom claim `email`: `oidc` already has a built-in claim of that name",
        );
        check(
            r#"[{"name": "team", "type": "string"}, {"name": "team", "type": "string"}]"#,
            "custom claim `team` is declared twice for one trust provider",
        );
        check(
            r#"[{"name": "team", "type": "string", "audience": "x"}]"#,
            "custom claim 0: unknown field `audience`",
        );
    }
}
