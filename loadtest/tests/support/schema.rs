//! A JSON Schema (draft 2020-12) validator for the subset of keywords that
//! `loadtest/schema/summary.schema.json` uses: `type`, `enum`, `const`, `properties`, `required`,
//! `additionalProperties`, `items`, `prefixItems`, `minItems`, `maxItems`, `minimum`, `maximum`,
//! `anyOf`, `oneOf`, and `$ref` to the same document (`#/...`); `$schema`, `$id`, `$defs`,
//! `title` and `description` are annotations.
//!
//! Written here rather than taken from the `jsonschema` crate: that crate (with its regex,
//! URL, HTTP-resolving and format dependencies) is not in this workspace's lock or the machine's
//! crate cache, and would be built for one test; the subset is 150 lines. A keyword outside the
//! subset is an error, so the schema cannot rely on one this validator would silently skip.

use serde_json::Value;

const ANNOTATIONS: [&str; 5] = ["$schema", "$id", "$defs", "title", "description"];

/// Validates `instance` against `schema` (the root, for `$ref`); returns every violation, each
/// with the JSON pointer of the value it is about.
pub fn validate(schema: &Value, instance: &Value) -> Result<(), Vec<String>> {
    let mut errors = Vec::new();
    check(schema, schema, instance, "", &mut errors);
    if errors.is_empty() {
        Ok(())
    } else {
        Err(errors)
    }
}

fn check(root: &Value, schema: &Value, instance: &Value, at: &str, errors: &mut Vec<String>) {
    let Some(keywords) = schema.as_object() else {
        match schema {
            Value::Bool(true) => {}
            Value::Bool(false) => errors.push(format!("{at}: not allowed here")),
            other => errors.push(format!("{at}: the schema is not an object: {other}")),
        }
        return;
    };
    for (keyword, value) in keywords {
        match keyword.as_str() {
            k if ANNOTATIONS.contains(&k) => {}
            "$ref" => {
                let target = value
                    .as_str()
                    .and_then(|r| r.strip_prefix('#'))
                    .and_then(|pointer| root.pointer(pointer));
                match target {
                    Some(target) => check(root, target, instance, at, errors),
                    None => errors.push(format!("{at}: unresolvable $ref {value}")),
                }
            }
            "type" => {
                let allowed: Vec<&str> = match value {
                    Value::String(t) => vec![t.as_str()],
                    Value::Array(ts) => ts.iter().filter_map(Value::as_str).collect(),
                    _ => vec![],
                };
                if !allowed.iter().any(|t| has_type(instance, t)) {
                    errors.push(format!("{at}: {instance} is not of type {value}"));
                }
            }
            "enum" => {
                if !value.as_array().is_some_and(|v| v.contains(instance)) {
                    errors.push(format!("{at}: {instance} is not one of {value}"));
                }
            }
            "const" => {
                if value != instance {
                    errors.push(format!("{at}: {instance} is not {value}"));
                }
            }
            "minimum" | "maximum" => {
                if let (Some(x), Some(bound)) = (instance.as_f64(), value.as_f64()) {
                    let ok = if keyword == "minimum" {
                        x >= bound
                    } else {
                        x <= bound
                    };
                    if !ok {
                        errors.push(format!("{at}: {x} is out of range ({keyword} {bound})"));
                    }
                }
            }
            "required" => {
                if let Some(object) = instance.as_object() {
                    for name in value.as_array().into_iter().flatten() {
                        let name = name.as_str().unwrap_or_default();
                        if !object.contains_key(name) {
                            errors.push(format!("{at}: {name} is missing"));
                        }
                    }
                }
            }
            "properties" => {
                if let (Some(object), Some(properties)) = (instance.as_object(), value.as_object())
                {
                    for (name, property) in properties {
                        if let Some(v) = object.get(name) {
                            check(root, property, v, &format!("{at}/{name}"), errors);
                        }
                    }
                }
            }
            "additionalProperties" => {
                if let Some(object) = instance.as_object() {
                    let declared = keywords.get("properties").and_then(Value::as_object);
                    for (name, v) in object {
                        if !declared.is_some_and(|d| d.contains_key(name)) {
                            check(root, value, v, &format!("{at}/{name}"), errors);
                        }
                    }
                }
            }
            "prefixItems" => {
                if let (Some(items), Some(schemas)) = (instance.as_array(), value.as_array()) {
                    for (i, (item, s)) in items.iter().zip(schemas).enumerate() {
                        check(root, s, item, &format!("{at}/{i}"), errors);
                    }
                }
            }
            "items" => {
                if let Some(items) = instance.as_array() {
                    let skip = keywords
                        .get("prefixItems")
                        .and_then(Value::as_array)
                        .map_or(0, Vec::len);
                    for (i, item) in items.iter().enumerate().skip(skip) {
                        check(root, value, item, &format!("{at}/{i}"), errors);
                    }
                }
            }
            "minItems" | "maxItems" => {
                if let (Some(items), Some(bound)) = (instance.as_array(), value.as_u64()) {
                    let n = items.len() as u64;
                    if (keyword == "minItems" && n < bound) || (keyword == "maxItems" && n > bound)
                    {
                        errors.push(format!("{at}: {n} items ({keyword} {bound})"));
                    }
                }
            }
            "anyOf" | "oneOf" => {
                let branches = value.as_array().map_or(&[][..], Vec::as_slice);
                let mut failures = Vec::new();
                let passed = branches
                    .iter()
                    .filter(|branch| {
                        let mut e = Vec::new();
                        check(root, branch, instance, at, &mut e);
                        let ok = e.is_empty();
                        failures.extend(e);
                        ok
                    })
                    .count();
                let ok = if keyword == "anyOf" {
                    passed >= 1
                } else {
                    passed == 1
                };
                if !ok {
                    errors.push(format!(
                        "{at}: {passed} of the {keyword} branches match; {}",
                        failures.join("; ")
                    ));
                }
            }
            other => errors.push(format!("{at}: keyword {other} is not supported")),
        }
    }
}

fn has_type(v: &Value, t: &str) -> bool {
    match t {
        "null" => v.is_null(),
        "boolean" => v.is_boolean(),
        "string" => v.is_string(),
        "array" => v.is_array(),
        "object" => v.is_object(),
        "number" => v.is_number(),
        // 2020-12: a number with no fractional part is an integer (1.0 too).
        "integer" => v.is_i64() || v.is_u64() || v.as_f64().is_some_and(|x| x.fract() == 0.0),
        _ => false,
    }
}
