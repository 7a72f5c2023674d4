//! A small JSON Schema validator for the subset the native tools' schemas use: `type`
//! (`object`, `string`, `integer`, `number`, `boolean`, `array`), `properties`,
//! `required`, `additionalProperties: false`, `items`, `minItems`/`maxItems`,
//! `minLength`/`maxLength`, `minimum`/`maximum`, `exclusiveMinimum`, `enum`.
//!
//! It reports every problem, each as `"<json pointer>: <what is wrong>"`, so a model can
//! fix all of them in one retry.

use serde_json::Value;

/// Validates `value` against `schema`; `Err` lists every problem found.
pub fn validate(schema: &Value, value: &Value) -> Result<(), Vec<String>> {
    let mut errors = Vec::new();
    check(schema, value, "", &mut errors);
    if errors.is_empty() {
        Ok(())
    } else {
        Err(errors)
    }
}

fn type_name(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(n) if n.is_i64() || n.is_u64() => "integer",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

fn at(path: &str) -> &str {
    if path.is_empty() {
        "/"
    } else {
        path
    }
}

fn check(schema: &Value, value: &Value, path: &str, errors: &mut Vec<String>) {
    if let Some(t) = schema.get("type").and_then(Value::as_str) {
        let actual = type_name(value);
        let ok = actual == t || (t == "number" && actual == "integer");
        if !ok {
            errors.push(format!("{}: expected {t}, got {actual}", at(path)));
            return;
        }
    }
    if let Some(options) = schema.get("enum").and_then(Value::as_array) {
        if !options.contains(value) {
            let list: Vec<String> = options.iter().map(Value::to_string).collect();
            errors.push(format!("{}: must be one of {}", at(path), list.join(", ")));
        }
    }
    match value {
        Value::Object(map) => {
            let props = schema.get("properties").and_then(Value::as_object);
            if let Some(required) = schema.get("required").and_then(Value::as_array) {
                for r in required.iter().filter_map(Value::as_str) {
                    if !map.contains_key(r) {
                        errors.push(format!("{}: missing required property {r:?}", at(path)));
                    }
                }
            }
            let closed = schema.get("additionalProperties") == Some(&Value::Bool(false));
            for (k, v) in map {
                let sub = format!("{path}/{k}");
                match props.and_then(|p| p.get(k)) {
                    Some(s) => check(s, v, &sub, errors),
                    None if closed => {
                        let known: Vec<&str> = props
                            .map(|p| p.keys().map(String::as_str).collect())
                            .unwrap_or_default();
                        errors.push(format!(
                            "{}: unknown property {k:?} (known: {})",
                            at(path),
                            known.join(", ")
                        ));
                    }
                    None => {}
                }
            }
        }
        Value::Array(items) => {
            if let Some(min) = schema.get("minItems").and_then(Value::as_u64) {
                if (items.len() as u64) < min {
                    errors.push(format!(
                        "{}: needs at least {min} item(s), got {}",
                        at(path),
                        items.len()
                    ));
                }
            }
            if let Some(max) = schema.get("maxItems").and_then(Value::as_u64) {
                if items.len() as u64 > max {
                    errors.push(format!(
                        "{}: at most {max} items, got {}",
                        at(path),
                        items.len()
                    ));
                }
            }
            if let Some(item_schema) = schema.get("items") {
                for (i, v) in items.iter().enumerate() {
                    check(item_schema, v, &format!("{path}/{i}"), errors);
                }
            }
        }
        Value::String(s) => {
            let len = s.chars().count() as u64;
            if let Some(min) = schema.get("minLength").and_then(Value::as_u64) {
                if len < min {
                    errors.push(format!(
                        "{}: must be at least {min} character(s) long",
                        at(path)
                    ));
                }
            }
            if let Some(max) = schema.get("maxLength").and_then(Value::as_u64) {
                if len > max {
                    errors.push(format!(
                        "{}: must be at most {max} characters long, got {len}",
                        at(path)
                    ));
                }
            }
        }
        Value::Number(n) => {
            let x = n.as_f64().unwrap_or(f64::NAN);
            if let Some(min) = schema.get("minimum").and_then(Value::as_f64) {
                if x < min {
                    errors.push(format!("{}: must be >= {min}, got {n}", at(path)));
                }
            }
            if let Some(min) = schema.get("exclusiveMinimum").and_then(Value::as_f64) {
                if x <= min {
                    errors.push(format!("{}: must be > {min}, got {n}", at(path)));
                }
            }
            if let Some(max) = schema.get("maximum").and_then(Value::as_f64) {
                if x > max {
                    errors.push(format!("{}: must be <= {max}, got {n}", at(path)));
                }
            }
        }
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn reports_every_problem() {
        let schema = json!({
            "type": "object",
            "properties": {
                "path": {"type": "string", "minLength": 1},
                "n": {"type": "integer", "minimum": 0},
                "argv": {"type": "array", "items": {"type": "string"}, "minItems": 1},
                "mode": {"enum": ["a", "b"]}
            },
            "required": ["path"],
            "additionalProperties": false
        });
        assert!(validate(&schema, &json!({"path": "x", "n": 3, "argv": ["ls"]})).is_ok());
        let errs = validate(
            &schema,
            &json!({"n": -1, "argv": [1], "pth": "x", "mode": "c"}),
        )
        .unwrap_err();
        assert_eq!(errs.len(), 5, "{errs:?}");
        assert!(errs
            .iter()
            .any(|e| e.contains("missing required property \"path\"")));
        assert!(errs.iter().any(|e| e.starts_with("/n: must be >= 0")));
        assert!(errs
            .iter()
            .any(|e| e.starts_with("/argv/0: expected string")));
        assert!(errs.iter().any(|e| e.contains("unknown property \"pth\"")));
        assert!(errs.iter().any(|e| e.starts_with("/mode: must be one of")));
        assert_eq!(
            validate(&schema, &json!("x")).unwrap_err(),
            vec!["/: expected object, got string"]
        );
        assert!(
            validate(&schema, &json!({"path": "x", "n": 1.5})).is_err(),
            "1.5 is not an integer"
        );
    }
}
