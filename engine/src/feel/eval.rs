//! Walks the tree. Values are borrowed from the scope or the tree where possible; recursion
//! depth is the tree depth, which the parser bounds.

use std::borrow::Cow;
use std::cmp::Ordering;

use serde_json::{Number, Value};

use super::lexer::number_from_text;
use super::{ArithOp, CompareOp, Function, Node, Scope, Test};

static NULL: Value = Value::Null;

fn null<'a>() -> Cow<'a, Value> {
    Cow::Borrowed(&NULL)
}

fn owned<'a>(value: Value) -> Cow<'a, Value> {
    Cow::Owned(value)
}

pub(super) fn eval<'a>(node: &'a Node, scope: &'a dyn Scope) -> Cow<'a, Value> {
    match node {
        Node::Literal(value) => Cow::Borrowed(value),
        Node::Variable(name) => scope.variable(name).map_or_else(null, Cow::Borrowed),
        Node::Member(base, name) => member(eval(base, scope), name),
        Node::Index(base, index) => {
            let base = eval(base, scope);
            match eval(index, scope).as_ref() {
                Value::Number(position) => at_position(base, position),
                Value::Bool(true) if base.is_array() => base,
                Value::Bool(_) => owned(Value::Array(Vec::new())),
                _ => filter(base, index, scope),
            }
        }
        Node::Filter(base, condition) => filter(eval(base, scope), condition, scope),
        Node::List(items) => owned(Value::Array(
            items
                .iter()
                .map(|item| eval(item, scope).into_owned())
                .collect(),
        )),
        Node::Context(entries) => owned(Value::Object(
            entries
                .iter()
                .map(|(key, value)| (key.clone(), eval(value, scope).into_owned()))
                .collect(),
        )),
        Node::Negate(inner) => owned(negate(&eval(inner, scope))),
        Node::Arith(op, left, right) => owned(arith(*op, &eval(left, scope), &eval(right, scope))),
        Node::Compare(op, left, right) => {
            owned(compare(*op, &eval(left, scope), &eval(right, scope)))
        }
        Node::And(left, right) => {
            let left = truth(&eval(left, scope));
            if left == Some(false) {
                return owned(Value::Bool(false));
            }
            match (left, truth(&eval(right, scope))) {
                (_, Some(false)) => owned(Value::Bool(false)),
                (Some(true), Some(true)) => owned(Value::Bool(true)),
                _ => null(),
            }
        }
        Node::Or(left, right) => {
            let left = truth(&eval(left, scope));
            if left == Some(true) {
                return owned(Value::Bool(true));
            }
            match (left, truth(&eval(right, scope))) {
                (_, Some(true)) => owned(Value::Bool(true)),
                (Some(false), Some(false)) => owned(Value::Bool(false)),
                _ => null(),
            }
        }
        Node::If(condition, then, otherwise) => {
            if truth(&eval(condition, scope)) == Some(true) {
                eval(then, scope)
            } else {
                eval(otherwise, scope)
            }
        }
        Node::Between(value, low, high) => {
            let value = eval(value, scope);
            let low = compare(CompareOp::Ge, &value, &eval(low, scope));
            let high = compare(CompareOp::Le, &value, &eval(high, scope));
            match (truth(&low), truth(&high)) {
                (Some(low), Some(high)) => owned(Value::Bool(low && high)),
                _ => null(),
            }
        }
        Node::In(value, tests) => owned(is_in(&eval(value, scope), tests, scope)),
        Node::Call(function, args) => call(*function, args, scope),
    }
}

/// `Some` for booleans; FEEL's logic treats everything else as `null`.
fn truth(value: &Value) -> Option<bool> {
    value.as_bool()
}

/// `base.name`: the member of a context, the members of the items of a list, else `null`.
fn member<'a>(base: Cow<'a, Value>, name: &str) -> Cow<'a, Value> {
    if let Value::Array(items) = base.as_ref() {
        return owned(Value::Array(
            items
                .iter()
                .map(|item| item.get(name).cloned().unwrap_or(Value::Null))
                .collect(),
        ));
    }
    defined_member(base, name).unwrap_or_else(null)
}

/// The member `name` of a context, `None` when absent or `base` is not a context.
fn defined_member<'a>(base: Cow<'a, Value>, name: &str) -> Option<Cow<'a, Value>> {
    match base {
        Cow::Borrowed(Value::Object(members)) => members.get(name).map(Cow::Borrowed),
        Cow::Owned(Value::Object(mut members)) => members.remove(name).map(Cow::Owned),
        _ => None,
    }
}

/// The item at a 1-based position (negative counts from the end).
fn at_position<'a>(base: Cow<'a, Value>, position: &Number) -> Cow<'a, Value> {
    let Some(len) = base.as_array().map(Vec::len) else {
        return null();
    };
    let Some(position) = whole(position) else {
        return null();
    };
    let index = match position.cmp(&0) {
        Ordering::Greater => usize::try_from(position - 1).ok(),
        Ordering::Less => usize::try_from(position.unsigned_abs())
            .ok()
            .and_then(|back| len.checked_sub(back)),
        Ordering::Equal => None,
    };
    let Some(index) = index.filter(|index| *index < len) else {
        return null();
    };
    match base {
        Cow::Borrowed(Value::Array(items)) => items.get(index).map_or_else(null, Cow::Borrowed),
        Cow::Owned(Value::Array(mut items)) => owned(items.swap_remove(index)),
        _ => null(),
    }
}

/// The items for which `condition` is `true`, evaluated with the item in scope. A single value
/// counts as a list of one.
fn filter<'a>(base: Cow<'a, Value>, condition: &Node, scope: &dyn Scope) -> Cow<'a, Value> {
    let keep = |item: &Value| {
        let item_scope = ItemScope { outer: scope, item };
        truth(&eval(condition, &item_scope)) == Some(true)
    };
    let kept = match base {
        Cow::Borrowed(Value::Null) | Cow::Owned(Value::Null) => return null(),
        Cow::Borrowed(Value::Array(items)) => {
            items.iter().filter(|item| keep(item)).cloned().collect()
        }
        Cow::Owned(Value::Array(items)) => items.into_iter().filter(|item| keep(item)).collect(),
        single if keep(&single) => vec![single.into_owned()],
        _ => Vec::new(),
    };
    owned(Value::Array(kept))
}

/// The scope inside a filter: `item`, then the item's members, then the outer variables.
struct ItemScope<'a> {
    outer: &'a dyn Scope,
    item: &'a Value,
}

impl Scope for ItemScope<'_> {
    fn variable(&self, name: &str) -> Option<&Value> {
        if name == "item" {
            return Some(self.item);
        }
        self.item
            .as_object()
            .and_then(|members| members.get(name))
            .or_else(|| self.outer.variable(name))
    }
}

/// `is defined(x)`: whether a variable or path exists (even if its value is `null`).
fn defined<'a>(node: &'a Node, scope: &'a dyn Scope) -> Option<Cow<'a, Value>> {
    match node {
        Node::Variable(name) => scope.variable(name).map(Cow::Borrowed),
        Node::Member(base, name) => {
            let base = defined(base, scope)?;
            if base.is_array() {
                Some(member(base, name))
            } else {
                defined_member(base, name)
            }
        }
        Node::Index(..) => Some(eval(node, scope)).filter(|value| !value.is_null()),
        _ => Some(eval(node, scope)),
    }
}

#[derive(Debug, Clone, Copy)]
enum Num {
    Int(i64),
    Float(f64),
}

fn num(value: &Value) -> Option<Num> {
    let Value::Number(number) = value else {
        return None;
    };
    match number.as_i64() {
        Some(integer) => Some(Num::Int(integer)),
        None => number.as_f64().map(Num::Float),
    }
}

#[expect(
    clippy::cast_precision_loss,
    reason = "FEEL numbers past 2^53 lose precision as floats, like JSON numbers in most readers"
)]
fn float(n: Num) -> f64 {
    match n {
        Num::Int(integer) => integer as f64,
        Num::Float(float) => float,
    }
}

fn number_value(n: Num) -> Value {
    match n {
        Num::Int(integer) => Value::from(integer),
        Num::Float(float) => Number::from_f64(float).map_or(Value::Null, Value::Number),
    }
}

/// The integer value of a whole number, `None` for fractions and out-of-range floats.
fn whole(number: &Number) -> Option<i64> {
    number.as_i64().or_else(|| {
        let float = number.as_f64()?;
        float_to_int(float).filter(|_| float.fract() == 0.0)
    })
}

#[expect(
    clippy::cast_possible_truncation,
    reason = "the range is checked first; callers pass whole numbers"
)]
fn float_to_int(float: f64) -> Option<i64> {
    // 2^63 is exactly representable; every float below it in magnitude fits an i64.
    const LIMIT: f64 = 9_223_372_036_854_775_808.0;
    (float > -LIMIT && float < LIMIT).then_some(float as i64)
}

pub(super) fn negate(value: &Value) -> Value {
    match num(value) {
        Some(Num::Int(integer)) => number_value(
            integer
                .checked_neg()
                .map_or_else(|| Num::Float(-float(Num::Int(integer))), Num::Int),
        ),
        Some(Num::Float(float)) => number_value(Num::Float(-float)),
        None => Value::Null,
    }
}

fn arith(op: ArithOp, left: &Value, right: &Value) -> Value {
    if op == ArithOp::Add
        && let (Value::String(left), Value::String(right)) = (left, right)
    {
        let mut joined = String::with_capacity(left.len() + right.len());
        joined.push_str(left);
        joined.push_str(right);
        return Value::String(joined);
    }
    let (Some(left), Some(right)) = (num(left), num(right)) else {
        return Value::Null;
    };
    number_value(match (op, left, right) {
        (ArithOp::Div, _, _) if float(right) == 0.0 => return Value::Null,
        (ArithOp::Add, Num::Int(a), Num::Int(b)) if let Some(sum) = a.checked_add(b) => {
            Num::Int(sum)
        }
        (ArithOp::Sub, Num::Int(a), Num::Int(b)) if let Some(difference) = a.checked_sub(b) => {
            Num::Int(difference)
        }
        (ArithOp::Mul, Num::Int(a), Num::Int(b)) if let Some(product) = a.checked_mul(b) => {
            Num::Int(product)
        }
        (ArithOp::Div, Num::Int(a), Num::Int(b))
            if a.checked_rem(b) == Some(0)
                && let Some(quotient) = a.checked_div(b) =>
        {
            Num::Int(quotient)
        }
        (ArithOp::Pow, Num::Int(a), Num::Int(b))
            if let Ok(exponent) = u32::try_from(b)
                && let Some(power) = a.checked_pow(exponent) =>
        {
            Num::Int(power)
        }
        (ArithOp::Add, a, b) => Num::Float(float(a) + float(b)),
        (ArithOp::Sub, a, b) => Num::Float(float(a) - float(b)),
        (ArithOp::Mul, a, b) => Num::Float(float(a) * float(b)),
        (ArithOp::Div, a, b) => Num::Float(float(a) / float(b)),
        (ArithOp::Pow, a, b) => Num::Float(float(a).powf(float(b))),
    })
}

fn compare_numbers(left: Num, right: Num) -> Option<Ordering> {
    match (left, right) {
        (Num::Int(a), Num::Int(b)) => Some(a.cmp(&b)),
        (a, b) => float(a).partial_cmp(&float(b)),
    }
}

/// The order of two numbers or two strings; `None` for anything else.
fn order(left: &Value, right: &Value) -> Option<Ordering> {
    match (left, right) {
        (Value::String(a), Value::String(b)) => Some(a.cmp(b)),
        _ => compare_numbers(num(left)?, num(right)?),
    }
}

/// FEEL equality: numbers by value, lists and contexts deeply, different types unequal.
fn equal(left: &Value, right: &Value) -> bool {
    match (left, right) {
        (Value::Number(_), Value::Number(_)) => order(left, right) == Some(Ordering::Equal),
        (Value::Array(a), Value::Array(b)) => {
            a.len() == b.len() && a.iter().zip(b).all(|(a, b)| equal(a, b))
        }
        (Value::Object(a), Value::Object(b)) => {
            a.len() == b.len()
                && a.iter()
                    .all(|(key, a)| b.get(key).is_some_and(|b| equal(a, b)))
        }
        _ => left == right,
    }
}

fn compare(op: CompareOp, left: &Value, right: &Value) -> Value {
    let ordering = match op {
        CompareOp::Eq => return Value::Bool(equal(left, right)),
        CompareOp::Ne => return Value::Bool(!equal(left, right)),
        _ => order(left, right),
    };
    let Some(ordering) = ordering else {
        return Value::Null;
    };
    Value::Bool(match op {
        CompareOp::Lt => ordering.is_lt(),
        CompareOp::Le => ordering.is_le(),
        CompareOp::Gt => ordering.is_gt(),
        _ => ordering.is_ge(),
    })
}

/// `value in tests`: `true` if a test matches, else `null` if a test could not compare, else
/// `false`.
fn is_in(value: &Value, tests: &[Test], scope: &dyn Scope) -> Value {
    let mut unknown = false;
    for test in tests {
        let matched = match test {
            Test::Value(node) => match eval(node, scope).as_ref() {
                Value::Array(items) => Some(items.iter().any(|item| equal(value, item))),
                other => Some(equal(value, other)),
            },
            Test::Range {
                low,
                high,
                low_closed,
                high_closed,
            } => {
                let low_op = if *low_closed {
                    CompareOp::Ge
                } else {
                    CompareOp::Gt
                };
                let high_op = if *high_closed {
                    CompareOp::Le
                } else {
                    CompareOp::Lt
                };
                let above = compare(low_op, value, &eval(low, scope));
                let below = compare(high_op, value, &eval(high, scope));
                truth(&above).zip(truth(&below)).map(|(a, b)| a && b)
            }
        };
        match matched {
            Some(true) => return Value::Bool(true),
            Some(false) => {}
            None => unknown = true,
        }
    }
    if unknown {
        Value::Null
    } else {
        Value::Bool(false)
    }
}

fn call<'a>(function: Function, args: &'a [Node], scope: &'a dyn Scope) -> Cow<'a, Value> {
    if function == Function::IsDefined {
        let is_defined = args
            .first()
            .is_some_and(|arg| defined(arg, scope).is_some());
        return owned(Value::Bool(is_defined));
    }
    let values: Vec<Cow<'a, Value>> = args.iter().map(|arg| eval(arg, scope)).collect();
    let arg = |index: usize| values.get(index).map_or(&NULL, AsRef::as_ref);
    owned(match function {
        Function::Not => truth(arg(0)).map_or(Value::Null, |b| Value::Bool(!b)),
        Function::String => to_string(arg(0)),
        Function::Number => match arg(0) {
            Value::String(text) => number_from_text(text.trim()).unwrap_or(Value::Null),
            number @ Value::Number(_) => number.clone(),
            _ => Value::Null,
        },
        Function::StringLength => arg(0).as_str().map_or(Value::Null, |text| {
            i64::try_from(text.chars().count()).map_or(Value::Null, Value::from)
        }),
        Function::UpperCase => arg(0)
            .as_str()
            .map_or(Value::Null, |text| Value::String(text.to_uppercase())),
        Function::LowerCase => arg(0)
            .as_str()
            .map_or(Value::Null, |text| Value::String(text.to_lowercase())),
        Function::Contains | Function::StartsWith | Function::EndsWith => {
            match (arg(0).as_str(), arg(1).as_str()) {
                (Some(text), Some(part)) => Value::Bool(match function {
                    Function::Contains => text.contains(part),
                    Function::StartsWith => text.starts_with(part),
                    _ => text.ends_with(part),
                }),
                _ => Value::Null,
            }
        }
        Function::Substring => substring(arg(0), arg(1), values.get(2).map(AsRef::as_ref)),
        Function::Count => arg(0).as_array().map_or(Value::Null, |items| {
            i64::try_from(items.len()).map_or(Value::Null, Value::from)
        }),
        Function::Sum | Function::Min | Function::Max => {
            let items: Vec<&Value> = match values.as_slice() {
                [single] if single.is_array() => single.as_array().into_iter().flatten().collect(),
                all => all.iter().map(AsRef::as_ref).collect(),
            };
            aggregate(function, &items)
        }
        Function::Abs => match num(arg(0)) {
            Some(n) if float(n) < 0.0 => negate(arg(0)),
            Some(n) => number_value(n),
            None => Value::Null,
        },
        Function::Floor | Function::Ceiling => match num(arg(0)) {
            Some(Num::Float(float)) => {
                let rounded = if function == Function::Floor {
                    float.floor()
                } else {
                    float.ceil()
                };
                number_value(float_to_int(rounded).map_or(Num::Float(rounded), Num::Int))
            }
            Some(integer) => number_value(integer),
            None => Value::Null,
        },
        Function::ListContains => arg(0).as_array().map_or(Value::Null, |items| {
            Value::Bool(items.iter().any(|item| equal(item, arg(1))))
        }),
        Function::IsDefined => Value::Bool(true),
    })
}

/// `string(x)`: strings as they are, numbers and booleans as written, lists and contexts as
/// JSON, `null` stays `null`.
fn to_string(value: &Value) -> Value {
    match value {
        Value::Null => Value::Null,
        Value::String(text) => Value::String(text.clone()),
        other => Value::String(other.to_string()),
    }
}

/// `substring(text, start, length?)`: 1-based `start`, negative counts from the end.
fn substring(text: &Value, start: &Value, length: Option<&Value>) -> Value {
    let (Some(text), Some(start)) = (text.as_str(), start.as_number().and_then(whole)) else {
        return Value::Null;
    };
    let chars = text.chars().count();
    let skip = match start.cmp(&0) {
        Ordering::Greater => usize::try_from(start - 1).unwrap_or(usize::MAX),
        Ordering::Less => {
            usize::try_from(start.unsigned_abs()).map_or(0, |back| chars.saturating_sub(back))
        }
        Ordering::Equal => return Value::Null,
    };
    let take = match length {
        None => usize::MAX,
        Some(length) => match length.as_number().and_then(whole).map(usize::try_from) {
            Some(Ok(length)) => length,
            _ => return Value::Null,
        },
    };
    Value::String(text.chars().skip(skip).take(take).collect())
}

/// `sum`, `min` or `max` of numbers (`min`/`max` also of strings); `null` when empty or mixed.
fn aggregate(function: Function, items: &[&Value]) -> Value {
    let Some((first, rest)) = items.split_first() else {
        return Value::Null;
    };
    if function == Function::Sum {
        let mut total = (*first).clone();
        for item in rest {
            if !item.is_number() {
                return Value::Null;
            }
            total = arith(ArithOp::Add, &total, item);
        }
        return if total.is_number() {
            total
        } else {
            Value::Null
        };
    }
    let mut best = *first;
    for item in rest {
        match order(item, best) {
            Some(Ordering::Less) if function == Function::Min => best = item,
            Some(Ordering::Greater) if function == Function::Max => best = item,
            Some(_) => {}
            None => return Value::Null,
        }
    }
    if rest.is_empty() && order(best, best).is_none() {
        return Value::Null;
    }
    best.clone()
}
