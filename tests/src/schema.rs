//! A small JSON Schema checker for docs/json-events.schema.json. It knows the keywords that
//! schema uses and refuses any other, so the schema cannot silently outgrow the check.

use serde_json::Value;

/// Keywords that only describe.
const ANNOTATIONS: &[&str] = &["$schema", "$id", "title", "description"];

/// Checks `value` against `schema`; `Err` says where and why it does not match.
pub fn validate(schema: &Value, value: &Value) -> Result<(), String> {
    check(schema, value, "$")
}

fn check(schema: &Value, value: &Value, at: &str) -> Result<(), String> {
    let Some(schema) = schema.as_object() else {
        return Err(format!("{at}: schema is not an object"));
    };
    for (keyword, rule) in schema {
        match keyword.as_str() {
            k if ANNOTATIONS.contains(&k) => {}
            "type" => {
                let types: Vec<&str> = match rule {
                    Value::String(t) => vec![t.as_str()],
                    Value::Array(ts) => ts.iter().filter_map(Value::as_str).collect(),
                    _ => return Err(format!("{at}: bad \"type\" in schema")),
                };
                if !types.iter().any(|t| has_type(value, t)) {
                    return Err(format!("{at}: {value} is not of type {types:?}"));
                }
            }
            "const" if value != rule => return Err(format!("{at}: {value} is not {rule}")),
            "const" => {}
            "minimum" => {
                if value
                    .as_f64()
                    .zip(rule.as_f64())
                    .is_some_and(|(v, min)| v < min)
                {
                    return Err(format!("{at}: {value} is below {rule}"));
                }
            }
            "minLength" => {
                let min = rule.as_u64().unwrap_or(0) as usize;
                if value.as_str().is_some_and(|s| s.chars().count() < min) {
                    return Err(format!("{at}: {value} is shorter than {min}"));
                }
            }
            "required" => {
                for field in rule
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter_map(Value::as_str)
                {
                    if value.as_object().is_some_and(|o| !o.contains_key(field)) {
                        return Err(format!("{at}: {field:?} is missing"));
                    }
                }
            }
            "properties" => {
                let (Some(object), Some(properties)) = (value.as_object(), rule.as_object()) else {
                    continue;
                };
                for (field, sub) in properties {
                    if let Some(v) = object.get(field) {
                        check(sub, v, &format!("{at}.{field}"))?;
                    }
                }
            }
            "items" => {
                for (i, item) in value.as_array().into_iter().flatten().enumerate() {
                    check(rule, item, &format!("{at}[{i}]"))?;
                }
            }
            "additionalProperties" if rule == &Value::Bool(false) => {
                let known = schema.get("properties").and_then(Value::as_object);
                for field in value.as_object().into_iter().flat_map(|o| o.keys()) {
                    if !known.is_some_and(|k| k.contains_key(field)) {
                        return Err(format!("{at}: unexpected field {field:?}"));
                    }
                }
            }
            "oneOf" => {
                let options = rule.as_array().map(Vec::as_slice).unwrap_or_default();
                let results: Vec<Result<(), String>> =
                    options.iter().map(|o| check(o, value, at)).collect();
                let matched = results.iter().filter(|r| r.is_ok()).count();
                if matched != 1 {
                    let why: Vec<String> = results.into_iter().filter_map(Result::err).collect();
                    return Err(format!(
                        "{at}: {value} matches {matched} of the oneOf options ({})",
                        why.join("; ")
                    ));
                }
            }
            other => {
                return Err(format!(
                    "{at}: the checker does not know the keyword {other:?}"
                ));
            }
        }
    }
    Ok(())
}

fn has_type(value: &Value, name: &str) -> bool {
    match name {
        "object" => value.is_object(),
        "string" => value.is_string(),
        "integer" => value.is_u64() || value.is_i64(),
        "null" => value.is_null(),
        "array" => value.is_array(),
        "boolean" => value.is_boolean(),
        "number" => value.is_number(),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn the_checker_catches_mismatches() {
        let schema = json!({"oneOf": [{
            "type": "object", "required": ["v", "n"], "additionalProperties": false,
            "properties": {"v": {"const": 1}, "n": {"type": "integer", "minimum": 0}, "s": {"type": ["string", "null"], "minLength": 1},
                "a": {"type": "array", "items": {"type": "string", "minLength": 1}}}
        }]});
        assert!(validate(&schema, &json!({"v": 1, "n": 3, "s": null})).is_ok());
        assert!(validate(&schema, &json!({"v": 1, "n": 3, "a": ["x", "y"]})).is_ok());
        for bad in [
            json!({"v": 2, "n": 3}),
            json!({"v": 1}),
            json!({"v": 1, "n": -1}),
            json!({"v": 1, "n": 1, "x": 0}),
            json!({"v": 1, "n": 1, "s": ""}),
            json!({"v": 1, "n": 1, "a": ["x", ""]}),
            json!({"v": 1, "n": 1, "a": [1]}),
        ] {
            assert!(validate(&schema, &bad).is_err(), "{bad} must not validate");
        }
        assert!(
            validate(&json!({"pattern": "x"}), &json!("x")).is_err(),
            "unknown keywords are refused"
        );
    }
}
