//! Walks the tree. Values are borrowed from the scope or the tree where possible; recursion
//! depth is the tree depth, which the parser bounds.
//!
//! Every value the walk builds (a concatenated or converted string, a list, a context, the
//! result of a path or filter over a list) is measured against the [`Limits`] as it is built.
//! The first value over a limit is recorded in the [`Budget`] and becomes `null`, so the walk
//! finishes cheaply; [`super::Expression::evaluate_limited`] then fails with that limit.

use std::borrow::Cow;
use std::cell::Cell;
use std::cmp::Ordering;

use serde_json::{Number, Value};

use super::lexer::number_from_text;
use super::{ArithOp, CompareOp, FeelError, Function, Limits, Node, Scope, Test};

/// What a value built during an evaluation exceeded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Exceeded {
    /// A string of `bytes` bytes.
    StringBytes { bytes: usize },
    /// A list or context (`what`) with `items` items.
    CollectionItems { what: &'static str, items: usize },
    /// A list or context (`what`) of more than the byte limit.
    CollectionBytes { what: &'static str },
}

/// The limits of one evaluation and the first one it broke.
pub(super) struct Budget<'l> {
    limits: &'l Limits,
    exceeded: Cell<Option<Exceeded>>,
}

impl<'l> Budget<'l> {
    pub(super) fn new(limits: &'l Limits) -> Self {
        Self {
            limits,
            exceeded: Cell::new(None),
        }
    }

    /// Records a broken limit (the first one counts) and gives the `null` that replaces the
    /// value.
    fn exceed<'a>(&self, exceeded: Exceeded) -> Cow<'a, Value> {
        if self.exceeded.get().is_none() {
            self.exceeded.set(Some(exceeded));
        }
        null()
    }

    /// A string built by the expression, or `null` when it is too long.
    fn string<'a>(&self, text: String) -> Cow<'a, Value> {
        if text.len() > self.limits.value_bytes_max {
            return self.exceed(Exceeded::StringBytes { bytes: text.len() });
        }
        owned(Value::String(text))
    }

    /// Whether a list or context of `items` items may be built.
    fn items_allowed(&self, what: &'static str, items: usize) -> bool {
        if items > self.limits.collection_items_max {
            self.exceed(Exceeded::CollectionItems { what, items });
            return false;
        }
        true
    }

    /// The error of the first broken limit, if any.
    pub(super) fn error(&self) -> Option<FeelError> {
        let limits = self.limits;
        let message = match self.exceeded.get()? {
            Exceeded::StringBytes { bytes } => format!(
                "the expression builds a string of {bytes} bytes, more than the {} bytes an \
                 expression may build; build smaller values or move the work into a job worker",
                limits.value_bytes_max
            ),
            Exceeded::CollectionItems { what, items } => format!(
                "the expression builds a {what} of {items} items, more than the {} items an \
                 expression may build; filter or split the data first",
                limits.collection_items_max
            ),
            Exceeded::CollectionBytes { what } => format!(
                "the expression builds a {what} of more than {} bytes, more than an expression \
                 may build; build smaller values or move the work into a job worker",
                limits.value_bytes_max
            ),
        };
        Some(FeelError { message })
    }
}

/// About the JSON size of `value` in bytes, or `None` when it is above `budget`. Walks the value
/// (without recursion) only until the budget is spent.
fn approx_bytes(value: &Value, budget: usize) -> Option<usize> {
    const SCALAR_BYTES: usize = 8;
    let mut total = 0_usize;
    let mut pending = vec![value];
    while let Some(value) = pending.pop() {
        total = total.saturating_add(match value {
            Value::String(text) => text.len() + 2,
            Value::Array(items) => {
                pending.extend(items.iter());
                items.len() + 2
            }
            Value::Object(members) => {
                for (key, member) in members {
                    total = total.saturating_add(key.len() + 4);
                    pending.push(member);
                }
                2
            }
            Value::Null | Value::Bool(_) | Value::Number(_) => SCALAR_BYTES,
        });
        if total > budget {
            return None;
        }
    }
    Some(total)
}

static NULL: Value = Value::Null;

fn null<'a>() -> Cow<'a, Value> {
    Cow::Borrowed(&NULL)
}

fn owned<'a>(value: Value) -> Cow<'a, Value> {
    Cow::Owned(value)
}

pub(super) fn eval<'a>(
    budget: &Budget<'_>,
    node: &'a Node,
    scope: &'a dyn Scope,
) -> Cow<'a, Value> {
    match node {
        Node::Literal(value) => Cow::Borrowed(value),
        Node::Variable(name) => scope.variable(name).map_or_else(null, Cow::Borrowed),
        Node::Member(base, name) => member(budget, eval(budget, base, scope), name),
        Node::Index(base, index) => {
            let base = eval(budget, base, scope);
            match eval(budget, index, scope).as_ref() {
                Value::Number(position) => at_position(base, position),
                Value::Bool(true) if base.is_array() => base,
                Value::Bool(_) => owned(Value::Array(Vec::new())),
                _ => filter(budget, base, index, scope),
            }
        }
        Node::Filter(base, condition) => {
            filter(budget, eval(budget, base, scope), condition, scope)
        }
        Node::List(items) => list(budget, items, scope),
        Node::Context(entries) => context(budget, entries, scope),
        Node::Negate(inner) => owned(negate(&eval(budget, inner, scope))),
        Node::Arith(op, left, right) => {
            let (left, right) = (eval(budget, left, scope), eval(budget, right, scope));
            if *op == ArithOp::Add
                && let (Value::String(left), Value::String(right)) = (left.as_ref(), right.as_ref())
            {
                return concatenate(budget, left, right);
            }
            owned(arith(*op, &left, &right))
        }
        Node::Compare(op, left, right) => owned(compare(
            *op,
            &eval(budget, left, scope),
            &eval(budget, right, scope),
        )),
        Node::And(left, right) => {
            let left = truth(&eval(budget, left, scope));
            if left == Some(false) {
                return owned(Value::Bool(false));
            }
            match (left, truth(&eval(budget, right, scope))) {
                (_, Some(false)) => owned(Value::Bool(false)),
                (Some(true), Some(true)) => owned(Value::Bool(true)),
                _ => null(),
            }
        }
        Node::Or(left, right) => {
            let left = truth(&eval(budget, left, scope));
            if left == Some(true) {
                return owned(Value::Bool(true));
            }
            match (left, truth(&eval(budget, right, scope))) {
                (_, Some(true)) => owned(Value::Bool(true)),
                (Some(false), Some(false)) => owned(Value::Bool(false)),
                _ => null(),
            }
        }
        Node::If(condition, then, otherwise) => {
            if truth(&eval(budget, condition, scope)) == Some(true) {
                eval(budget, then, scope)
            } else {
                eval(budget, otherwise, scope)
            }
        }
        Node::Between(value, low, high) => {
            let value = eval(budget, value, scope);
            let low = compare(CompareOp::Ge, &value, &eval(budget, low, scope));
            let high = compare(CompareOp::Le, &value, &eval(budget, high, scope));
            match (truth(&low), truth(&high)) {
                (Some(low), Some(high)) => owned(Value::Bool(low && high)),
                _ => null(),
            }
        }
        Node::In(value, tests) => owned(is_in(budget, &eval(budget, value, scope), tests, scope)),
        Node::Call(function, args) => call(budget, *function, args, scope),
    }
}

/// A list literal, within the budget.
fn list<'a>(budget: &Budget<'_>, items: &'a [Node], scope: &'a dyn Scope) -> Cow<'a, Value> {
    if !budget.items_allowed("list", items.len()) {
        return null();
    }
    let mut bytes_left = budget.limits.value_bytes_max;
    let mut built = Vec::with_capacity(items.len());
    for item in items {
        let value = eval(budget, item, scope);
        let Some(bytes) = approx_bytes(&value, bytes_left) else {
            return budget.exceed(Exceeded::CollectionBytes { what: "list" });
        };
        bytes_left -= bytes;
        built.push(value.into_owned());
    }
    owned(Value::Array(built))
}

/// A context literal, within the budget.
fn context<'a>(
    budget: &Budget<'_>,
    entries: &'a [(String, Node)],
    scope: &'a dyn Scope,
) -> Cow<'a, Value> {
    if !budget.items_allowed("context", entries.len()) {
        return null();
    }
    let mut bytes_left = budget.limits.value_bytes_max;
    let mut built = serde_json::Map::new();
    for (key, value) in entries {
        let value = eval(budget, value, scope);
        let Some(bytes) = approx_bytes(&value, bytes_left.saturating_sub(key.len())) else {
            return budget.exceed(Exceeded::CollectionBytes { what: "context" });
        };
        bytes_left -= bytes + key.len();
        built.insert(key.clone(), value.into_owned());
    }
    owned(Value::Object(built))
}

/// `left + right` of two strings, within the budget.
fn concatenate<'a>(budget: &Budget<'_>, left: &str, right: &str) -> Cow<'a, Value> {
    let bytes = left.len().saturating_add(right.len());
    if bytes > budget.limits.value_bytes_max {
        return budget.exceed(Exceeded::StringBytes { bytes });
    }
    let mut joined = String::with_capacity(bytes);
    joined.push_str(left);
    joined.push_str(right);
    owned(Value::String(joined))
}

/// `Some` for booleans; FEEL's logic treats everything else as `null`.
fn truth(value: &Value) -> Option<bool> {
    value.as_bool()
}

/// `base.name`: the member of a context, the members of the items of a list, else `null`.
fn member<'a>(budget: &Budget<'_>, base: Cow<'a, Value>, name: &str) -> Cow<'a, Value> {
    if let Value::Array(items) = base.as_ref() {
        if !budget.items_allowed("list", items.len()) {
            return null();
        }
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
fn filter<'a>(
    budget: &Budget<'_>,
    base: Cow<'a, Value>,
    condition: &Node,
    scope: &dyn Scope,
) -> Cow<'a, Value> {
    let keep = |item: &Value| {
        let item_scope = ItemScope { outer: scope, item };
        truth(&eval(budget, condition, &item_scope)) == Some(true)
    };
    let kept: Vec<Value> = match base {
        Cow::Borrowed(Value::Null) | Cow::Owned(Value::Null) => return null(),
        Cow::Borrowed(Value::Array(items)) => {
            items.iter().filter(|item| keep(item)).cloned().collect()
        }
        Cow::Owned(Value::Array(items)) => items.into_iter().filter(|item| keep(item)).collect(),
        single if keep(&single) => vec![single.into_owned()],
        _ => Vec::new(),
    };
    if !budget.items_allowed("list", kept.len()) {
        return null();
    }
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
fn defined<'a>(
    budget: &Budget<'_>,
    node: &'a Node,
    scope: &'a dyn Scope,
) -> Option<Cow<'a, Value>> {
    match node {
        Node::Variable(name) => scope.variable(name).map(Cow::Borrowed),
        Node::Member(base, name) => {
            let base = defined(budget, base, scope)?;
            if base.is_array() {
                Some(member(budget, base, name))
            } else {
                defined_member(base, name)
            }
        }
        Node::Index(..) => Some(eval(budget, node, scope)).filter(|value| !value.is_null()),
        _ => Some(eval(budget, node, scope)),
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

/// Arithmetic on numbers; the concatenation of two strings is [`eval`]'s (it is bounded).
fn arith(op: ArithOp, left: &Value, right: &Value) -> Value {
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
fn is_in(budget: &Budget<'_>, value: &Value, tests: &[Test], scope: &dyn Scope) -> Value {
    let mut unknown = false;
    for test in tests {
        let matched = match test {
            Test::Value(node) => match eval(budget, node, scope).as_ref() {
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
                let above = compare(low_op, value, &eval(budget, low, scope));
                let below = compare(high_op, value, &eval(budget, high, scope));
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

fn call<'a>(
    budget: &Budget<'_>,
    function: Function,
    args: &'a [Node],
    scope: &'a dyn Scope,
) -> Cow<'a, Value> {
    if function == Function::IsDefined {
        let is_defined = args
            .first()
            .is_some_and(|arg| defined(budget, arg, scope).is_some());
        return owned(Value::Bool(is_defined));
    }
    let values: Vec<Cow<'a, Value>> = args.iter().map(|arg| eval(budget, arg, scope)).collect();
    let arg = |index: usize| values.get(index).map_or(&NULL, AsRef::as_ref);
    // The functions that build a string from a possibly large value: bounded like `+`.
    match function {
        Function::String => {
            return match arg(0) {
                Value::Null => null(),
                Value::String(text) => budget.string(text.clone()),
                other => match approx_bytes(other, budget.limits.value_bytes_max) {
                    Some(_) => budget.string(other.to_string()),
                    None => budget.exceed(Exceeded::StringBytes {
                        bytes: budget.limits.value_bytes_max.saturating_add(1),
                    }),
                },
            };
        }
        Function::UpperCase | Function::LowerCase => {
            return arg(0).as_str().map_or_else(null, |text| {
                budget.string(if function == Function::UpperCase {
                    text.to_uppercase()
                } else {
                    text.to_lowercase()
                })
            });
        }
        _ => {}
    }
    owned(match function {
        Function::Not => truth(arg(0)).map_or(Value::Null, |b| Value::Bool(!b)),
        Function::Number => match arg(0) {
            Value::String(text) => number_from_text(text.trim()).unwrap_or(Value::Null),
            number @ Value::Number(_) => number.clone(),
            _ => Value::Null,
        },
        Function::StringLength => arg(0).as_str().map_or(Value::Null, |text| {
            i64::try_from(text.chars().count()).map_or(Value::Null, Value::from)
        }),
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
        // Answered above: `is defined` looks at its argument unevaluated, `string`, `upper
        // case` and `lower case` build bounded strings.
        Function::IsDefined | Function::String | Function::UpperCase | Function::LowerCase => {
            Value::Null
        }
    })
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
