//! Recursive descent over the tokens, one function per precedence level.
//!
//! Every function returns the node with its tree depth, so long operator chains are bounded by
//! [`TREE_DEPTH_MAX`] even though they are built by loops; recursion through brackets is bounded
//! by [`NESTING_MAX`].

use serde_json::Value;

use super::lexer::{Tok, Token, tokenize};
use super::{
    ArithOp, CompareOp, FUNCTIONS, FeelError, Function, NESTING_MAX, Node, TREE_DEPTH_MAX, Test,
    VARIADIC, error_at, eval,
};

/// A node and the depth of its tree (a leaf is 1).
type Parsed = (Node, u32);
type Result<T> = std::result::Result<T, FeelError>;

/// Words that cannot name a variable.
const KEYWORDS: [&str; 10] = [
    "true", "false", "null", "if", "then", "else", "and", "or", "between", "in",
];

/// FEEL constructs outside the subset, named in the error.
const UNSUPPORTED: [&str; 5] = ["for", "some", "every", "function", "instance"];

/// Functions that would make a replay differ from the original run.
const NON_DETERMINISTIC: [&str; 3] = ["now", "today", "random number"];

pub(super) fn parse(source: &str) -> Result<Node> {
    let mut parser = Parser {
        source,
        tokens: tokenize(source)?,
        pos: 0,
        nesting: 0,
    };
    let (node, _) = parser.expression()?;
    if parser.peek() != &Tok::End {
        return Err(parser.unexpected("an operator or the end of the expression"));
    }
    Ok(node)
}

struct Parser<'s> {
    source: &'s str,
    /// Never empty: ends with [`Tok::End`], and `pos` never passes it.
    tokens: Vec<Token<'s>>,
    pos: usize,
    nesting: u32,
}

impl<'s> Parser<'s> {
    fn token(&self, ahead: usize) -> &Token<'s> {
        let last = self.tokens.len() - 1;
        &self.tokens[(self.pos + ahead).min(last)]
    }

    fn peek(&self) -> &Tok<'s> {
        &self.token(0).tok
    }

    fn at(&self) -> usize {
        self.token(0).at
    }

    fn bump(&mut self) {
        if self.pos + 1 < self.tokens.len() {
            self.pos += 1;
        }
    }

    fn is_symbol(&self, symbol: &str) -> bool {
        matches!(self.peek(), Tok::Symbol(s) if *s == symbol)
    }

    fn is_word(&self, word: &str) -> bool {
        matches!(self.peek(), Tok::Name(w) if *w == word)
    }

    fn eat_symbol(&mut self, symbol: &str) -> bool {
        let found = self.is_symbol(symbol);
        if found {
            self.bump();
        }
        found
    }

    fn expect_symbol(&mut self, symbol: &str) -> Result<()> {
        if self.eat_symbol(symbol) {
            Ok(())
        } else {
            Err(self.unexpected(&format!("'{symbol}'")))
        }
    }

    fn expect_word(&mut self, word: &str) -> Result<()> {
        if self.is_word(word) {
            self.bump();
            Ok(())
        } else {
            Err(self.unexpected(&format!("'{word}'")))
        }
    }

    fn error(&self, what: impl std::fmt::Display) -> FeelError {
        error_at(self.source, self.at(), what)
    }

    fn unexpected(&self, wanted: &str) -> FeelError {
        let found = match self.peek() {
            Tok::End => return self.error(format!("expected {wanted}")),
            Tok::Number(value) => value.to_string(),
            Tok::Str(_) => "a string".to_owned(),
            Tok::Name(name) => format!("'{name}'"),
            Tok::Symbol(symbol) => format!("'{symbol}'"),
        };
        self.error(format!("expected {wanted} but found {found}"))
    }

    /// The depth of a node over children at most `depth` deep.
    fn above(&self, depth: u32) -> Result<u32> {
        if depth >= TREE_DEPTH_MAX {
            Err(self.error(format!(
                "expression is too deep (more than {TREE_DEPTH_MAX} levels); split it"
            )))
        } else {
            Ok(depth + 1)
        }
    }

    fn enter(&mut self) -> Result<()> {
        self.nesting += 1;
        if self.nesting > NESTING_MAX {
            Err(self.error(format!(
                "expression is nested deeper than {NESTING_MAX} levels"
            )))
        } else {
            Ok(())
        }
    }

    fn leave(&mut self) {
        self.nesting -= 1;
    }

    fn expression(&mut self) -> Result<Parsed> {
        self.enter()?;
        let parsed = if self.is_word("if") {
            self.if_then_else()
        } else {
            self.disjunction()
        }?;
        self.leave();
        Ok(parsed)
    }

    fn if_then_else(&mut self) -> Result<Parsed> {
        self.bump();
        let (condition, d1) = self.expression()?;
        self.expect_word("then")?;
        let (then, d2) = self.expression()?;
        self.expect_word("else")?;
        let (otherwise, d3) = self.expression()?;
        let depth = self.above(d1.max(d2).max(d3))?;
        Ok((
            Node::If(Box::new(condition), Box::new(then), Box::new(otherwise)),
            depth,
        ))
    }

    fn disjunction(&mut self) -> Result<Parsed> {
        let (mut node, mut depth) = self.conjunction()?;
        while self.is_word("or") {
            self.bump();
            let (right, right_depth) = self.conjunction()?;
            depth = self.above(depth.max(right_depth))?;
            node = Node::Or(Box::new(node), Box::new(right));
        }
        Ok((node, depth))
    }

    fn conjunction(&mut self) -> Result<Parsed> {
        let (mut node, mut depth) = self.comparison()?;
        while self.is_word("and") {
            self.bump();
            let (right, right_depth) = self.comparison()?;
            depth = self.above(depth.max(right_depth))?;
            node = Node::And(Box::new(node), Box::new(right));
        }
        Ok((node, depth))
    }

    fn compare_op(&self) -> Option<CompareOp> {
        let Tok::Symbol(symbol) = self.peek() else {
            return None;
        };
        Some(match *symbol {
            "=" => CompareOp::Eq,
            "!=" => CompareOp::Ne,
            "<" => CompareOp::Lt,
            "<=" => CompareOp::Le,
            ">" => CompareOp::Gt,
            ">=" => CompareOp::Ge,
            _ => return None,
        })
    }

    fn comparison(&mut self) -> Result<Parsed> {
        let (mut node, mut depth) = self.additive()?;
        loop {
            if let Some(op) = self.compare_op() {
                self.bump();
                let (right, right_depth) = self.additive()?;
                depth = self.above(depth.max(right_depth))?;
                node = Node::Compare(op, Box::new(node), Box::new(right));
            } else if self.is_word("between") {
                self.bump();
                let (low, low_depth) = self.additive()?;
                self.expect_word("and")?;
                let (high, high_depth) = self.additive()?;
                depth = self.above(depth.max(low_depth).max(high_depth))?;
                node = Node::Between(Box::new(node), Box::new(low), Box::new(high));
            } else if self.is_word("in") {
                self.bump();
                let (tests, tests_depth) = self.in_tests()?;
                depth = self.above(depth.max(tests_depth))?;
                node = Node::In(Box::new(node), tests);
            } else {
                return Ok((node, depth));
            }
        }
    }

    /// What follows `in`: `(a, b)`, `(a..b)`, `[a..b]`, `]a..b]`, `[a, b]` or a value.
    fn in_tests(&mut self) -> Result<(Vec<Test>, u32)> {
        let Tok::Symbol(opening @ ("(" | "[" | "]")) = *self.peek() else {
            let (node, depth) = self.additive()?;
            return Ok((vec![Test::Value(node)], depth));
        };
        self.bump();
        if opening == "[" && self.eat_symbol("]") {
            return Ok((
                vec![Test::Value(Node::Literal(Value::Array(Vec::new())))],
                1,
            ));
        }
        let (first, first_depth) = self.expression()?;
        if self.eat_symbol("..") {
            let (high, high_depth) = self.expression()?;
            let high_closed = if self.eat_symbol("]") {
                true
            } else if self.eat_symbol(")") {
                false
            } else {
                return Err(self.unexpected("']' or ')' closing the range"));
            };
            let test = Test::Range {
                low: first,
                high,
                low_closed: opening == "[",
                high_closed,
            };
            let depth = self.above(first_depth.max(high_depth))?;
            return Ok((vec![test], depth));
        }
        let mut items = vec![first];
        let mut depth = first_depth;
        let closing = match opening {
            "(" => ")",
            "[" => "]",
            _ => return Err(self.unexpected("'..'")),
        };
        while self.eat_symbol(",") {
            let (item, item_depth) = self.expression()?;
            depth = depth.max(item_depth);
            items.push(item);
        }
        self.expect_symbol(closing)?;
        let depth = self.above(depth)?;
        if opening == "[" {
            Ok((vec![Test::Value(list(items))], depth))
        } else {
            Ok((items.into_iter().map(Test::Value).collect(), depth))
        }
    }

    fn additive(&mut self) -> Result<Parsed> {
        let (mut node, mut depth) = self.multiplicative()?;
        loop {
            let op = if self.is_symbol("+") {
                ArithOp::Add
            } else if self.is_symbol("-") {
                ArithOp::Sub
            } else {
                return Ok((node, depth));
            };
            self.bump();
            let (right, right_depth) = self.multiplicative()?;
            depth = self.above(depth.max(right_depth))?;
            node = Node::Arith(op, Box::new(node), Box::new(right));
        }
    }

    fn multiplicative(&mut self) -> Result<Parsed> {
        let (mut node, mut depth) = self.power()?;
        loop {
            let op = if self.is_symbol("*") {
                ArithOp::Mul
            } else if self.is_symbol("/") {
                ArithOp::Div
            } else {
                return Ok((node, depth));
            };
            self.bump();
            let (right, right_depth) = self.power()?;
            depth = self.above(depth.max(right_depth))?;
            node = Node::Arith(op, Box::new(node), Box::new(right));
        }
    }

    fn power(&mut self) -> Result<Parsed> {
        let (mut node, mut depth) = self.unary()?;
        while self.eat_symbol("**") {
            let (right, right_depth) = self.unary()?;
            depth = self.above(depth.max(right_depth))?;
            node = Node::Arith(ArithOp::Pow, Box::new(node), Box::new(right));
        }
        Ok((node, depth))
    }

    fn unary(&mut self) -> Result<Parsed> {
        if !self.is_symbol("-") {
            return self.postfix();
        }
        self.bump();
        self.enter()?;
        let (inner, depth) = self.unary()?;
        self.leave();
        if let Node::Literal(value @ Value::Number(_)) = &inner {
            return Ok((Node::Literal(eval::negate(value)), depth));
        }
        let depth = self.above(depth)?;
        Ok((Node::Negate(Box::new(inner)), depth))
    }

    fn postfix(&mut self) -> Result<Parsed> {
        let (mut node, mut depth) = self.primary()?;
        loop {
            if self.eat_symbol(".") {
                let Tok::Name(name) = *self.peek() else {
                    return Err(self.unexpected("a name after '.'"));
                };
                self.bump();
                depth = self.above(depth)?;
                node = Node::Member(Box::new(node), name.into());
            } else if self.eat_symbol("[") {
                let (inner, inner_depth) = self.expression()?;
                self.expect_symbol("]")?;
                depth = self.above(depth.max(inner_depth))?;
                node = if is_condition(&inner) {
                    Node::Filter(Box::new(node), Box::new(inner))
                } else {
                    Node::Index(Box::new(node), Box::new(inner))
                };
            } else {
                return Ok((node, depth));
            }
        }
    }

    fn primary(&mut self) -> Result<Parsed> {
        match self.peek().clone() {
            Tok::Number(value) => {
                self.bump();
                Ok((Node::Literal(value), 1))
            }
            Tok::Str(text) => {
                self.bump();
                Ok((Node::Literal(Value::String(text)), 1))
            }
            Tok::Symbol("(") => {
                self.bump();
                let parsed = self.expression()?;
                self.expect_symbol(")")?;
                Ok(parsed)
            }
            Tok::Symbol("[") => self.list(),
            Tok::Symbol("{") => self.context(),
            Tok::Name(word) => self.name(word),
            _ => Err(self.unexpected("an expression")),
        }
    }

    fn list(&mut self) -> Result<Parsed> {
        self.bump();
        let mut items = Vec::new();
        let mut depth = 0;
        if !self.eat_symbol("]") {
            loop {
                let (item, item_depth) = self.expression()?;
                depth = depth.max(item_depth);
                items.push(item);
                if !self.eat_symbol(",") {
                    self.expect_symbol("]")?;
                    break;
                }
            }
        }
        let depth = self.above(depth)?;
        Ok((list(items), depth))
    }

    fn context(&mut self) -> Result<Parsed> {
        self.bump();
        let mut entries = Vec::new();
        let mut depth = 0;
        if !self.eat_symbol("}") {
            loop {
                let key = match self.peek().clone() {
                    Tok::Name(name) => name.to_owned(),
                    Tok::Str(text) => text,
                    _ => return Err(self.unexpected("a context key")),
                };
                self.bump();
                self.expect_symbol(":")?;
                let (value, value_depth) = self.expression()?;
                depth = depth.max(value_depth);
                entries.push((key, value));
                if !self.eat_symbol(",") {
                    self.expect_symbol("}")?;
                    break;
                }
            }
        }
        let depth = self.above(depth)?;
        if entries
            .iter()
            .all(|(_, value)| matches!(value, Node::Literal(_)))
        {
            let object = entries
                .into_iter()
                .map(|(key, value)| match value {
                    Node::Literal(value) => (key, value),
                    _ => (key, Value::Null),
                })
                .collect();
            return Ok((Node::Literal(Value::Object(object)), 1));
        }
        Ok((Node::Context(entries), depth))
    }

    /// A literal word, a variable, or a function call.
    fn name(&mut self, word: &'s str) -> Result<Parsed> {
        let word_at = self.at();
        match word {
            "true" | "false" | "null" => {
                self.bump();
                let value = match word {
                    "true" => Value::Bool(true),
                    "false" => Value::Bool(false),
                    _ => Value::Null,
                };
                return Ok((Node::Literal(value), 1));
            }
            "if" => return self.expression(),
            _ => {}
        }
        if UNSUPPORTED.contains(&word) {
            return Err(self.error(format!("'{word}' expressions are not supported")));
        }
        if KEYWORDS.contains(&word) {
            return Err(self.unexpected("an expression"));
        }
        // Function names may be two words: `string length(s)`.
        if let Tok::Name(second) = self.token(1).tok
            && self.token(2).tok == Tok::Symbol("(")
        {
            let name = format!("{word} {second}");
            if FUNCTIONS.contains(&name.as_str()) || NON_DETERMINISTIC.contains(&name.as_str()) {
                self.bump();
                self.bump();
                return self.call(&name, word_at);
            }
        }
        self.bump();
        if self.is_symbol("(") {
            return self.call(word, word_at);
        }
        if word == "not" {
            return Err(self.unexpected("'(' after 'not'"));
        }
        Ok((Node::Variable(word.into()), 1))
    }

    /// The call of `name`, whose `(` is the current token.
    fn call(&mut self, name: &str, name_at: usize) -> Result<Parsed> {
        if NON_DETERMINISTIC.contains(&name) {
            return Err(error_at(
                self.source,
                name_at,
                format!(
                    "'{name}()' is not allowed: an expression must give the same result on \
                     every replay; pass the value in a variable"
                ),
            ));
        }
        let Some(function) = Function::lookup(name) else {
            return Err(error_at(
                self.source,
                name_at,
                format!(
                    "unknown function '{name}' (supported: {})",
                    FUNCTIONS.join(", ")
                ),
            ));
        };
        self.expect_symbol("(")?;
        let mut args = Vec::new();
        let mut depth = 0;
        if !self.eat_symbol(")") {
            loop {
                let (arg, arg_depth) = self.expression()?;
                depth = depth.max(arg_depth);
                args.push(arg);
                if !self.eat_symbol(",") {
                    self.expect_symbol(")")?;
                    break;
                }
            }
        }
        let (least, most) = function.arity();
        if args.len() < least || args.len() > most {
            let expected = match (least, most) {
                (least, VARIADIC) => format!("at least {least}"),
                (least, most) if least == most => least.to_string(),
                (least, most) => format!("{least} to {most}"),
            };
            let plural = if most == 1 { "argument" } else { "arguments" };
            return Err(error_at(
                self.source,
                name_at,
                format!(
                    "function '{name}' takes {expected} {plural}, not {}",
                    args.len()
                ),
            ));
        }
        let depth = self.above(depth)?;
        Ok((Node::Call(function, args), depth))
    }
}

/// A list node, folded into a literal when every item is one.
fn list(items: Vec<Node>) -> Node {
    if items.iter().all(|item| matches!(item, Node::Literal(_))) {
        Node::Literal(Value::Array(
            items
                .into_iter()
                .map(|item| match item {
                    Node::Literal(value) => value,
                    _ => Value::Null,
                })
                .collect(),
        ))
    } else {
        Node::List(items)
    }
}

/// Whether a bracket holding `node` filters per item rather than indexing.
fn is_condition(node: &Node) -> bool {
    match node {
        Node::Compare(..) | Node::And(..) | Node::Or(..) | Node::In(..) | Node::Between(..) => true,
        Node::Call(function, _) => function.is_predicate(),
        _ => false,
    }
}
