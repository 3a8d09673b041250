//! Parameter values, typed by each stage kind's schema, with a canonical encoding for cache keys.

use serde::Serialize;
use std::collections::BTreeMap;
use std::fmt;

use super::source::Source;

/// A parameter value. Serialises untagged, so the canonical JSON of `5`, `5.0` and `"x"` differ: the
/// schema normalises integers written for float parameters to floats before anything is hashed.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(untagged)]
pub enum Value {
    /// `true` / `false`.
    Bool(bool),
    /// An integer.
    Int(i64),
    /// A float (never NaN or infinite after validation).
    Float(f64),
    /// A string.
    Str(String),
    /// An array.
    List(Vec<Value>),
}

impl Value {
    /// The TOML type name, for messages.
    pub fn type_name(&self) -> &'static str {
        match self {
            Value::Bool(_) => "a boolean",
            Value::Int(_) => "an integer",
            Value::Float(_) => "a float",
            Value::Str(_) => "a string",
            Value::List(_) => "an array",
        }
    }

    /// Converts a toml_edit value (tables are not parameter values: `None`).
    pub fn from_toml(v: &toml_edit::Value) -> Option<Value> {
        Some(match v {
            toml_edit::Value::String(s) => Value::Str(s.value().clone()),
            toml_edit::Value::Integer(i) => Value::Int(*i.value()),
            toml_edit::Value::Float(f) => Value::Float(*f.value()),
            toml_edit::Value::Boolean(b) => Value::Bool(*b.value()),
            toml_edit::Value::Array(a) => {
                Value::List(a.iter().map(Value::from_toml).collect::<Option<Vec<_>>>()?)
            }
            toml_edit::Value::Datetime(_) | toml_edit::Value::InlineTable(_) => return None,
        })
    }

    /// Parses the right-hand side of `--set key=VALUE` as a TOML value; a bare word is a string.
    pub fn parse_cli(text: &str) -> Value {
        match text.parse::<toml_edit::Value>() {
            Ok(v) => Value::from_toml(&v).unwrap_or_else(|| Value::Str(text.to_string())),
            Err(_) => Value::Str(text.to_string()),
        }
    }
}

impl fmt::Display for Value {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Value::Bool(b) => write!(f, "{b}"),
            Value::Int(i) => write!(f, "{i}"),
            Value::Float(x) => write!(f, "{x:?}"),
            Value::Str(s) => write!(f, "{s:?}"),
            Value::List(items) => {
                write!(f, "[")?;
                for (i, v) in items.iter().enumerate() {
                    if i > 0 {
                        write!(f, ", ")?;
                    }
                    write!(f, "{v}")?;
                }
                write!(f, "]")
            }
        }
    }
}

/// A value and where it came from.
#[derive(Debug, Clone)]
pub struct Located<T> {
    /// The value.
    pub value: T,
    /// Its origin.
    pub source: Source,
}

/// A stage's resolved parameters: every key of its kind's schema, defaults filled in, types checked.
#[derive(Debug, Clone, Default, Serialize, PartialEq)]
#[serde(transparent)]
pub struct Params(pub BTreeMap<String, Value>);

impl Params {
    fn get(&self, key: &str) -> &Value {
        self.0
            .get(key)
            .unwrap_or_else(|| panic!("parameter `{key}` is not in the kind's schema"))
    }

    /// An integer parameter.
    pub fn int(&self, key: &str) -> i64 {
        match self.get(key) {
            Value::Int(i) => *i,
            other => panic!(
                "parameter `{key}` is {}, schema says integer",
                other.type_name()
            ),
        }
    }

    /// A non-negative integer parameter (the schema guarantees the range).
    pub fn usize(&self, key: &str) -> usize {
        usize::try_from(self.int(key)).expect("schema guarantees a non-negative integer")
    }

    /// A seed (non-negative integer).
    pub fn u64(&self, key: &str) -> u64 {
        u64::try_from(self.int(key)).expect("schema guarantees a non-negative integer")
    }

    /// A float parameter.
    pub fn float(&self, key: &str) -> f64 {
        match self.get(key) {
            Value::Float(x) => *x,
            Value::Int(i) => *i as f64,
            other => panic!(
                "parameter `{key}` is {}, schema says float",
                other.type_name()
            ),
        }
    }

    /// A float parameter whose values <= 0 stand for `default` (the stages' "0 = automatic" convention,
    /// for parameters whose automatic value depends on the model or data).
    pub fn float_or_default(&self, key: &str, default: f64) -> f64 {
        let v = self.float(key);
        if v > 0.0 {
            v
        } else {
            default
        }
    }

    /// A boolean parameter.
    pub fn bool(&self, key: &str) -> bool {
        match self.get(key) {
            Value::Bool(b) => *b,
            other => panic!(
                "parameter `{key}` is {}, schema says boolean",
                other.type_name()
            ),
        }
    }

    /// A string parameter (also choices, paths and inputs).
    pub fn str(&self, key: &str) -> &str {
        match self.get(key) {
            Value::Str(s) => s,
            other => panic!(
                "parameter `{key}` is {}, schema says string",
                other.type_name()
            ),
        }
    }

    /// An optional string parameter: `None` when absent or empty.
    pub fn opt_str(&self, key: &str) -> Option<&str> {
        match self.0.get(key) {
            Some(Value::Str(s)) if !s.is_empty() => Some(s),
            _ => None,
        }
    }

    /// A list of floats.
    pub fn floats(&self, key: &str) -> Vec<f64> {
        match self.get(key) {
            Value::List(items) => items
                .iter()
                .map(|v| match v {
                    Value::Float(x) => *x,
                    Value::Int(i) => *i as f64,
                    _ => panic!("schema guarantees a list of numbers for `{key}`"),
                })
                .collect(),
            other => panic!(
                "parameter `{key}` is {}, schema says list",
                other.type_name()
            ),
        }
    }

    /// A list of strings.
    pub fn strs(&self, key: &str) -> Vec<String> {
        match self.get(key) {
            Value::List(items) => items
                .iter()
                .map(|v| match v {
                    Value::Str(s) => s.clone(),
                    _ => panic!("schema guarantees a list of strings for `{key}`"),
                })
                .collect(),
            other => panic!(
                "parameter `{key}` is {}, schema says list",
                other.type_name()
            ),
        }
    }
}
