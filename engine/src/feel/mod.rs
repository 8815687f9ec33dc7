//! A FEEL subset for Zeebe's `=` expressions.
//!
//! Parse once with [`parse`] (the text after the `=`), keep the [`Expression`] in the model, and
//! call [`Expression::evaluate`] per instance with a [`Scope`] that lends the variables. Evaluation
//! walks the tree and borrows variable values from the scope, so `order.total > 100` does not copy
//! `order`.
//!
//! # The subset
//!
//! - Literals: integers, decimals (`1.5`, `.5`), strings in double quotes with the escapes
//!   `\" \\ \/ \' \n \r \t \uXXXX`, `true`, `false`, `null`, lists `[1, 2]` and contexts
//!   `{a: 1, "b c": 2}`. Context entries do not see earlier entries of the same context.
//! - Paths: `x`, `order.total`, `a.b.c`; a missing member is `null`, and a path into a list maps
//!   over its items (`items.price`). A variable that the scope lacks is `null`.
//! - Brackets: `items[1]` is 1-based, `items[-1]` counts from the end, out of range is `null`.
//!   A bracket holding a comparison, `and`/`or`, `in`, `between` or a boolean function is a
//!   filter evaluated per item (`items[price > 10]`, `items[item > 2]`): the item is `item`, and
//!   its members are names too. Any other bracket is evaluated in the outer scope and indexes
//!   when it is a number, keeps all items when `true`, and filters per item otherwise.
//! - Operators, loosest first: `if c then a else b`; `or`; `and`; comparisons `= != < <= > >=`,
//!   `x between a and b`, `x in ...`; `+ -`; `* /`; `**`; unary `-`; paths and brackets.
//!   Unary minus binds tighter than `**`: `-2 ** 2` is `4`. `**` is left-associative.
//! - `x in` takes a value (a list means membership, anything else equality), a parenthesised
//!   list of values `(1, 2, 3)`, or a range `[1..5]`, `(1..5)`, `]1..5]`, `[1..5)`.
//! - Functions: see [`FUNCTIONS`]. `now()`, `today()` and `random number()` are rejected
//!   because an expression must give the same result on every replay.
//! - Comments `// ...` and `/* ... */` are skipped.
//!
//! # Numbers
//!
//! Integers stay integers while exact: `+ - * **` of two integers give an `i64` unless the
//! result overflows, in which case they give an `f64`. `/` of two integers gives an integer when
//! the division is exact (`6 / 3` is `2`) and an `f64` otherwise (`7 / 2` is `3.5`). As soon as
//! one operand is a decimal the result is an `f64` (`1.5 + 1.5` is `3.0`). Results that are not
//! finite (`0 ** -1`, `(-8) ** 0.5`) are `null`. Decimals are binary floats, not FEEL's
//! decimals: `0.1 + 0.2` is `0.30000000000000004`.
//!
//! # Null and mixed types
//!
//! As in FEEL, a type mismatch is not an error but `null`: arithmetic with `null` or on
//! mismatched types is `null` (`+` of two strings concatenates), ordering comparisons between
//! anything but two numbers or two strings are `null`, and division by zero is `null`.
//! `=` and `!=` never give `null`: `null = null` is `true`, and values of different types are
//! unequal (`1 = "1"` is `false`); numbers compare by value (`1 = 1.0`), lists and contexts
//! deeply. `and`/`or` use three-valued logic (`false and null` is `false`, `true and null` is
//! `null`; a non-boolean operand counts as `null`), `not(x)` of a non-boolean is `null`, and
//! `if` takes the `else` branch for anything but `true`.
//!
//! # Errors and limits
//!
//! Syntax errors, unknown functions and wrong argument counts are found by [`parse`]; messages
//! name the column, e.g. `expected ')' at column 7 in 'f(a, b'`. Sources longer than
//! [`SOURCE_BYTES_MAX`], brackets nested deeper than [`NESTING_MAX`] and trees deeper than
//! [`TREE_DEPTH_MAX`] are rejected, so neither parsing nor evaluation can exhaust the stack.
//!
//! Evaluation fails only on a [`Limits`] bound: every value it builds (a string from `+`,
//! `string()`, `upper case()` or `lower case()`; a list or context literal; the list of a path or
//! filter over a list) may hold at most `value_bytes_max` bytes (about its JSON size) and
//! `collection_items_max` items. Without them `x + x + x ...` or `[x, x, x, ...]` over a large
//! variable would multiply it in memory. Values the expression only passes through (`=order`)
//! are not measured: they exist already.

use std::borrow::Cow;
use std::fmt::Display;

use serde_json::Value;

mod eval;
mod lexer;
mod parser;

/// The longest accepted source text.
pub const SOURCE_BYTES_MAX: usize = 16 * 1024;
/// How deeply brackets, parentheses, calls, `if`s and unary minus may nest.
pub const NESTING_MAX: u32 = 64;
/// How deep the parsed tree may be (long operator chains such as `a + b + c ...` deepen it too).
pub const TREE_DEPTH_MAX: u32 = 256;

/// The built-in functions, as written in expressions.
pub const FUNCTIONS: &[&str] = &[
    "not",
    "string",
    "number",
    "string length",
    "upper case",
    "lower case",
    "contains",
    "starts with",
    "ends with",
    "substring",
    "is defined",
    "count",
    "sum",
    "min",
    "max",
    "abs",
    "floor",
    "ceiling",
    "list contains",
];

/// A parsed FEEL expression.
#[derive(Debug, Clone, PartialEq)]
pub struct Expression {
    source: String,
    root: Node,
}

/// Why an expression could not be parsed or evaluated.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct FeelError {
    pub message: String,
}

/// Default of [`Limits::value_bytes_max`]: 4 MiB, the largest variables document a request may
/// carry; a larger value could not be stored as a variable anyway.
pub const VALUE_BYTES_MAX_DEFAULT: usize = 4 << 20;
/// Default of [`Limits::collection_items_max`].
pub const COLLECTION_ITEMS_MAX_DEFAULT: usize = 100_000;

/// Bounds on the values one evaluation may build; exceeding one is an evaluation error.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Largest string, list or context an evaluation may build, in bytes (a list or context is
    /// measured as about its JSON size).
    pub value_bytes_max: usize,
    /// Most items of a list, or entries of a context, an evaluation may build.
    pub collection_items_max: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            value_bytes_max: VALUE_BYTES_MAX_DEFAULT,
            collection_items_max: COLLECTION_ITEMS_MAX_DEFAULT,
        }
    }
}

/// Where an expression looks up its variables.
pub trait Scope {
    /// The value of the variable `name`, if it exists.
    fn variable(&self, name: &str) -> Option<&Value>;
}

/// Parses the text after the `=`.
pub fn parse(source: &str) -> Result<Expression, FeelError> {
    if source.len() > SOURCE_BYTES_MAX {
        return Err(FeelError {
            message: format!(
                "expression is {} bytes long, more than the {SOURCE_BYTES_MAX} allowed; \
                 move the logic into a worker or split it",
                source.len()
            ),
        });
    }
    let root = parser::parse(source)?;
    Ok(Expression {
        source: source.to_owned(),
        root,
    })
}

impl Expression {
    /// Evaluates against the variables of `scope`, within the default [`Limits`].
    pub fn evaluate(&self, scope: &dyn Scope) -> Result<Value, FeelError> {
        self.evaluate_limited(scope, &Limits::default())
    }

    /// Evaluates against the variables of `scope`; a value built beyond `limits` is an error.
    pub fn evaluate_limited(&self, scope: &dyn Scope, limits: &Limits) -> Result<Value, FeelError> {
        self.evaluate_borrowed_limited(scope, limits)
            .map(Cow::into_owned)
    }

    /// Like [`Expression::evaluate`], but borrows the result from the scope or the expression
    /// when it can (e.g. `=order` does not copy `order`).
    pub fn evaluate_borrowed<'a>(
        &'a self,
        scope: &'a dyn Scope,
    ) -> Result<Cow<'a, Value>, FeelError> {
        self.evaluate_borrowed_limited(scope, &Limits::default())
    }

    /// Like [`Expression::evaluate_limited`], but borrows the result when it can.
    pub fn evaluate_borrowed_limited<'a>(
        &'a self,
        scope: &'a dyn Scope,
        limits: &Limits,
    ) -> Result<Cow<'a, Value>, FeelError> {
        let budget = eval::Budget::new(limits);
        let value = eval::eval(&budget, &self.root, scope);
        match budget.error() {
            Some(error) => Err(error),
            None => Ok(value),
        }
    }

    /// The source text this expression was parsed from (without the `=`).
    #[must_use]
    pub fn source(&self) -> &str {
        &self.source
    }
}

/// A node of the parsed tree.
#[derive(Debug, Clone, PartialEq)]
enum Node {
    Literal(Value),
    Variable(Box<str>),
    /// `base.name`
    Member(Box<Node>, Box<str>),
    /// `base[index]` where the index is evaluated in the outer scope.
    Index(Box<Node>, Box<Node>),
    /// `base[condition]`, evaluated per item.
    Filter(Box<Node>, Box<Node>),
    List(Vec<Node>),
    Context(Vec<(String, Node)>),
    Negate(Box<Node>),
    Arith(ArithOp, Box<Node>, Box<Node>),
    Compare(CompareOp, Box<Node>, Box<Node>),
    And(Box<Node>, Box<Node>),
    Or(Box<Node>, Box<Node>),
    If(Box<Node>, Box<Node>, Box<Node>),
    /// `x between low and high`
    Between(Box<Node>, Box<Node>, Box<Node>),
    /// `x in tests`: true when any test matches.
    In(Box<Node>, Vec<Test>),
    Call(Function, Vec<Node>),
}

/// One alternative right of `in`.
#[derive(Debug, Clone, PartialEq)]
enum Test {
    /// Membership when the value is a list, equality otherwise.
    Value(Node),
    Range {
        low: Node,
        high: Node,
        low_closed: bool,
        high_closed: bool,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ArithOp {
    Add,
    Sub,
    Mul,
    Div,
    Pow,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum CompareOp {
    Eq,
    Ne,
    Lt,
    Le,
    Gt,
    Ge,
}

/// The built-in functions; [`FUNCTIONS`] spells them in the same order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Function {
    Not,
    String,
    Number,
    StringLength,
    UpperCase,
    LowerCase,
    Contains,
    StartsWith,
    EndsWith,
    Substring,
    IsDefined,
    Count,
    Sum,
    Min,
    Max,
    Abs,
    Floor,
    Ceiling,
    ListContains,
}

/// Argument count for functions that take any number of arguments.
const VARIADIC: usize = usize::MAX;

impl Function {
    const ALL: [Function; 19] = [
        Function::Not,
        Function::String,
        Function::Number,
        Function::StringLength,
        Function::UpperCase,
        Function::LowerCase,
        Function::Contains,
        Function::StartsWith,
        Function::EndsWith,
        Function::Substring,
        Function::IsDefined,
        Function::Count,
        Function::Sum,
        Function::Min,
        Function::Max,
        Function::Abs,
        Function::Floor,
        Function::Ceiling,
        Function::ListContains,
    ];

    fn lookup(name: &str) -> Option<Function> {
        FUNCTIONS
            .iter()
            .position(|known| *known == name)
            .and_then(|index| Self::ALL.get(index).copied())
    }

    /// Least and most arguments.
    fn arity(self) -> (usize, usize) {
        match self {
            Function::Contains
            | Function::StartsWith
            | Function::EndsWith
            | Function::ListContains => (2, 2),
            Function::Substring => (2, 3),
            Function::Sum | Function::Min | Function::Max => (1, VARIADIC),
            _ => (1, 1),
        }
    }

    /// Whether the function answers a yes/no question, which makes a bracket holding it a filter.
    fn is_predicate(self) -> bool {
        matches!(
            self,
            Function::Not
                | Function::Contains
                | Function::StartsWith
                | Function::EndsWith
                | Function::IsDefined
                | Function::ListContains
        )
    }
}

const _: () = assert!(FUNCTIONS.len() == Function::ALL.len());

/// An error that points at byte `at` of `source`.
fn error_at(source: &str, at: usize, what: impl Display) -> FeelError {
    let column = source.get(..at).map_or(0, |before| before.chars().count()) + 1;
    FeelError {
        message: format!("{what} at column {column} in '{}'", excerpt(source)),
    }
}

/// The source as quoted in messages, shortened when long.
fn excerpt(source: &str) -> Cow<'_, str> {
    const CHARS_MAX: usize = 80;
    if source.chars().count() <= CHARS_MAX {
        Cow::Borrowed(source)
    } else {
        let mut short: String = source.chars().take(CHARS_MAX - 3).collect();
        short.push_str("...");
        Cow::Owned(short)
    }
}
