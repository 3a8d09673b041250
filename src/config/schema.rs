//! The parameter schema of a stage kind: names, types, ranges, defaults and one line of documentation each.
//!
//! One declaration serves three purposes: validating a pipeline before anything runs (with precise errors),
//! filling in defaults so cache keys are computed from *resolved* parameters, and generating the reference
//! documentation (`eqflow kinds`, docs/pipeline-reference.md).

use super::value::Value;

/// The type (and range) of a parameter.
#[derive(Debug, Clone, PartialEq)]
pub enum ParamType {
    /// An integer in `[min, max]`.
    Int {
        /// Smallest allowed.
        min: Option<i64>,
        /// Largest allowed.
        max: Option<i64>,
    },
    /// A finite float; `min`/`max` with exclusivity flags.
    Float {
        /// Lower bound.
        min: Option<f64>,
        /// Whether the lower bound itself is excluded.
        min_exclusive: bool,
        /// Upper bound.
        max: Option<f64>,
        /// Whether the upper bound itself is excluded.
        max_exclusive: bool,
    },
    /// `true` / `false`.
    Bool,
    /// One of a fixed set of strings.
    Choice(&'static [&'static str]),
    /// Any string.
    Str,
    /// A file path, relative to the pipeline file; its *content* goes into the cache key.
    Path,
    /// The name of another stage whose outputs this stage reads: an edge of the DAG.
    Input,
    /// A list of stage names whose outputs this stage reads together (a fan-in). A listed stage that a
    /// sweep multiplies contributes *all* its instances, so one consumer sees every seed's model; the
    /// consumer itself is not multiplied by that sweep. Stages read them with `StageContext::input_list`.
    InputList,
    /// A list of finite floats with at least `min_len` items.
    FloatList {
        /// Fewest items allowed.
        min_len: usize,
    },
    /// A list of strings, each one of the given choices (empty choices: any string).
    StrList(&'static [&'static str]),
}

/// What happens when a pipeline does not set a parameter.
#[derive(Debug, Clone, PartialEq)]
pub enum DefaultValue {
    /// The pipeline must set it.
    Required,
    /// This value.
    Value(Value),
    /// The `[pipeline] seed`.
    PipelineSeed,
    /// Absent (an optional input or path): the stage checks `Params::opt_str`.
    Absent,
}

/// One parameter of a stage kind.
#[derive(Debug, Clone)]
pub struct ParamSpec {
    /// Its key.
    pub name: &'static str,
    /// Its type.
    pub ty: ParamType,
    /// Its default.
    pub default: DefaultValue,
    /// One line for the reference documentation.
    pub doc: &'static str,
}

impl ParamSpec {
    fn new(name: &'static str, ty: ParamType, default: DefaultValue, doc: &'static str) -> Self {
        ParamSpec {
            name,
            ty,
            default,
            doc,
        }
    }

    /// An integer with a default.
    pub fn int(name: &'static str, default: i64, doc: &'static str) -> Self {
        Self::new(
            name,
            ParamType::Int {
                min: None,
                max: None,
            },
            DefaultValue::Value(Value::Int(default)),
            doc,
        )
    }

    /// A float with a default.
    pub fn float(name: &'static str, default: f64, doc: &'static str) -> Self {
        let ty = ParamType::Float {
            min: None,
            min_exclusive: false,
            max: None,
            max_exclusive: false,
        };
        Self::new(name, ty, DefaultValue::Value(Value::Float(default)), doc)
    }

    /// A boolean with a default.
    pub fn bool(name: &'static str, default: bool, doc: &'static str) -> Self {
        Self::new(
            name,
            ParamType::Bool,
            DefaultValue::Value(Value::Bool(default)),
            doc,
        )
    }

    /// One of `choices`, defaulting to `default`.
    pub fn choice(
        name: &'static str,
        choices: &'static [&'static str],
        default: &str,
        doc: &'static str,
    ) -> Self {
        debug_assert!(
            choices.contains(&default),
            "default of {name} must be a choice"
        );
        Self::new(
            name,
            ParamType::Choice(choices),
            DefaultValue::Value(Value::Str(default.into())),
            doc,
        )
    }

    /// A free string with a default.
    pub fn string(name: &'static str, default: &str, doc: &'static str) -> Self {
        Self::new(
            name,
            ParamType::Str,
            DefaultValue::Value(Value::Str(default.into())),
            doc,
        )
    }

    /// A required reference to another stage.
    pub fn input(name: &'static str, doc: &'static str) -> Self {
        Self::new(name, ParamType::Input, DefaultValue::Required, doc)
    }

    /// A required, non-empty list of upstream stages (see [`ParamType::InputList`]).
    pub fn inputs(name: &'static str, doc: &'static str) -> Self {
        Self::new(name, ParamType::InputList, DefaultValue::Required, doc)
    }

    /// A file path (required unless made optional).
    pub fn path(name: &'static str, doc: &'static str) -> Self {
        Self::new(name, ParamType::Path, DefaultValue::Required, doc)
    }

    /// A list of floats.
    pub fn floats(name: &'static str, default: &[f64], doc: &'static str) -> Self {
        let v = Value::List(default.iter().map(|x| Value::Float(*x)).collect());
        Self::new(
            name,
            ParamType::FloatList { min_len: 1 },
            DefaultValue::Value(v),
            doc,
        )
    }

    /// A list of strings from `choices`.
    pub fn strs(
        name: &'static str,
        choices: &'static [&'static str],
        default: &[&str],
        doc: &'static str,
    ) -> Self {
        let v = Value::List(default.iter().map(|s| Value::Str((*s).into())).collect());
        Self::new(
            name,
            ParamType::StrList(choices),
            DefaultValue::Value(v),
            doc,
        )
    }

    /// The random seed, defaulting to the pipeline's.
    pub fn seed() -> Self {
        let ty = ParamType::Int {
            min: Some(0),
            max: None,
        };
        Self::new(
            "seed",
            ty,
            DefaultValue::PipelineSeed,
            "random seed (defaults to `[pipeline] seed`)",
        )
    }

    /// Makes the parameter required.
    pub fn required(mut self) -> Self {
        self.default = DefaultValue::Required;
        self
    }

    /// Makes the parameter optional with no default (inputs, paths).
    pub fn optional(mut self) -> Self {
        self.default = DefaultValue::Absent;
        self
    }

    /// Lower bound (inclusive) for ints and floats.
    pub fn min(mut self, lo: f64) -> Self {
        match &mut self.ty {
            ParamType::Int { min, .. } => *min = Some(lo as i64),
            ParamType::Float {
                min, min_exclusive, ..
            } => {
                *min = Some(lo);
                *min_exclusive = false;
            }
            _ => panic!("min() on a non-numeric parameter {}", self.name),
        }
        self
    }

    /// Upper bound (inclusive) for ints and floats.
    pub fn max(mut self, hi: f64) -> Self {
        match &mut self.ty {
            ParamType::Int { max, .. } => *max = Some(hi as i64),
            ParamType::Float {
                max, max_exclusive, ..
            } => {
                *max = Some(hi);
                *max_exclusive = false;
            }
            _ => panic!("max() on a non-numeric parameter {}", self.name),
        }
        self
    }

    /// Strictly positive float (or integer >= 1).
    pub fn positive(mut self) -> Self {
        match &mut self.ty {
            ParamType::Int { min, .. } => *min = Some(1),
            ParamType::Float {
                min, min_exclusive, ..
            } => {
                *min = Some(0.0);
                *min_exclusive = true;
            }
            _ => panic!("positive() on a non-numeric parameter {}", self.name),
        }
        self
    }

    /// Float in `[0, 1]`.
    pub fn probability(self) -> Self {
        self.min(0.0).max(1.0)
    }

    /// Checks `value` against the type; the value normalised (ints to floats for float params) or a message.
    pub fn check(&self, value: &Value) -> Result<Value, String> {
        check_type(&self.ty, value)
    }

    /// The type as written in the documentation.
    pub fn type_doc(&self) -> String {
        match &self.ty {
            ParamType::Int { min, max } => format!(
                "integer{}",
                range_doc(min.map(|v| v as f64), false, max.map(|v| v as f64), false)
            ),
            ParamType::Float {
                min,
                min_exclusive,
                max,
                max_exclusive,
            } => {
                format!(
                    "float{}",
                    range_doc(*min, *min_exclusive, *max, *max_exclusive)
                )
            }
            ParamType::Bool => "boolean".into(),
            ParamType::Choice(c) => c
                .iter()
                .map(|s| format!("\"{s}\""))
                .collect::<Vec<_>>()
                .join(" | "),
            ParamType::Str => "string".into(),
            ParamType::Path => "path (content hashed)".into(),
            ParamType::Input => "stage name (input)".into(),
            ParamType::InputList => {
                "list of stage names (inputs; swept stages give all instances)".into()
            }
            ParamType::FloatList { .. } => "list of floats".into(),
            ParamType::StrList([]) => "list of strings".into(),
            ParamType::StrList(c) => format!("list of {}", c.join(", ")),
        }
    }

    /// The default as written in the documentation.
    pub fn default_doc(&self) -> String {
        match &self.default {
            DefaultValue::Required => "required".into(),
            DefaultValue::Value(v) => v.to_string(),
            DefaultValue::PipelineSeed => "pipeline seed".into(),
            DefaultValue::Absent => "none".into(),
        }
    }
}

/// The key under which item `i` of list input `name` appears in a stage's inputs (`models[3]`).
pub fn list_input_key(name: &str, i: usize) -> String {
    format!("{name}[{i}]")
}

/// Splits a list-input key `name[i]` into `(name, i)`; `None` for a plain input key.
pub fn split_list_input_key(key: &str) -> Option<(&str, usize)> {
    let (name, rest) = key.split_once('[')?;
    let i = rest.strip_suffix(']')?.parse().ok()?;
    Some((name, i))
}

fn range_doc(min: Option<f64>, min_ex: bool, max: Option<f64>, max_ex: bool) -> String {
    match (min, max) {
        (None, None) => String::new(),
        (Some(a), None) => format!(" {} {a}", if min_ex { ">" } else { ">=" }),
        (None, Some(b)) => format!(" {} {b}", if max_ex { "<" } else { "<=" }),
        (Some(a), Some(b)) => format!(
            " in {}{a}, {b}{}",
            if min_ex { "(" } else { "[" },
            if max_ex { ")" } else { "]" }
        ),
    }
}

fn check_type(ty: &ParamType, value: &Value) -> Result<Value, String> {
    let wrong = |want: &str| {
        Err(format!(
            "expected {want}, found {} `{value}`",
            value.type_name()
        ))
    };
    match ty {
        ParamType::Int { min, max } => {
            let Value::Int(i) = value else {
                return wrong("an integer");
            };
            if let Some(lo) = min {
                if i < lo {
                    return Err(format!("must be >= {lo}, got {i}"));
                }
            }
            if let Some(hi) = max {
                if i > hi {
                    return Err(format!("must be <= {hi}, got {i}"));
                }
            }
            Ok(value.clone())
        }
        ParamType::Float {
            min,
            min_exclusive,
            max,
            max_exclusive,
        } => {
            let x = match value {
                Value::Float(x) => *x,
                Value::Int(i) => *i as f64,
                _ => return wrong("a number"),
            };
            if !x.is_finite() {
                return Err(format!("must be a finite number, got {x}"));
            }
            if let Some(lo) = min {
                if x < *lo || (*min_exclusive && x == *lo) {
                    return Err(format!(
                        "must be {} {lo}, got {x}",
                        if *min_exclusive { ">" } else { ">=" }
                    ));
                }
            }
            if let Some(hi) = max {
                if x > *hi || (*max_exclusive && x == *hi) {
                    return Err(format!(
                        "must be {} {hi}, got {x}",
                        if *max_exclusive { "<" } else { "<=" }
                    ));
                }
            }
            Ok(Value::Float(x))
        }
        ParamType::Bool => match value {
            Value::Bool(_) => Ok(value.clone()),
            _ => wrong("a boolean"),
        },
        ParamType::Choice(choices) => {
            let Value::Str(s) = value else {
                return wrong("a string");
            };
            if choices.contains(&s.as_str()) {
                Ok(value.clone())
            } else {
                let list = choices
                    .iter()
                    .map(|c| format!("\"{c}\""))
                    .collect::<Vec<_>>()
                    .join(", ");
                let mut msg = format!("unknown value \"{s}\"; expected one of {list}");
                if let Some(near) = super::source::suggest(s, choices.iter().copied()) {
                    msg.push_str(&format!(" (did you mean \"{near}\"?)"));
                }
                Err(msg)
            }
        }
        ParamType::Str | ParamType::Path | ParamType::Input => match value {
            Value::Str(_) => Ok(value.clone()),
            _ => wrong("a string"),
        },
        ParamType::InputList => {
            let Value::List(items) = value else {
                return wrong("an array of stage names");
            };
            if items.is_empty() {
                return Err("needs at least one stage name".into());
            }
            if let Some(bad) = items.iter().find(|v| !matches!(v, Value::Str(_))) {
                return Err(format!(
                    "expected stage names, found {} `{bad}`",
                    bad.type_name()
                ));
            }
            Ok(value.clone())
        }
        ParamType::FloatList { min_len } => {
            let Value::List(items) = value else {
                return wrong("an array of numbers");
            };
            if items.len() < *min_len {
                return Err(format!(
                    "needs at least {min_len} item(s), got {}",
                    items.len()
                ));
            }
            let float_ty = ParamType::Float {
                min: None,
                min_exclusive: false,
                max: None,
                max_exclusive: false,
            };
            let items = items
                .iter()
                .map(|v| check_type(&float_ty, v))
                .collect::<Result<Vec<_>, _>>()?;
            Ok(Value::List(items))
        }
        ParamType::StrList(choices) => {
            let Value::List(items) = value else {
                return wrong("an array of strings");
            };
            let item_ty = if choices.is_empty() {
                ParamType::Str
            } else {
                ParamType::Choice(choices)
            };
            let items = items
                .iter()
                .map(|v| check_type(&item_ty, v))
                .collect::<Result<Vec<_>, _>>()?;
            Ok(Value::List(items))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_and_normalisation() {
        let epochs = ParamSpec::int("epochs", 5, "").positive();
        assert_eq!(
            epochs.check(&Value::Int(0)).unwrap_err(),
            "must be >= 1, got 0"
        );
        assert!(epochs
            .check(&Value::Str("5".into()))
            .unwrap_err()
            .starts_with("expected an integer"));
        let dt = ParamSpec::float("dt", 0.1, "").positive();
        assert_eq!(dt.check(&Value::Int(1)), Ok(Value::Float(1.0)));
        assert_eq!(
            dt.check(&Value::Float(0.0)).unwrap_err(),
            "must be > 0, got 0"
        );
        let p = ParamSpec::float("p", 0.5, "").probability();
        assert!(p.check(&Value::Float(1.5)).is_err());
        let c = ParamSpec::choice("name", &["ring", "two_peaks"], "ring", "");
        assert!(c
            .check(&Value::Str("rign".into()))
            .unwrap_err()
            .contains("did you mean \"ring\""));
    }
}
