//! The FEEL subset: table-driven cases for values, nulls and errors, plus a no-panic proptest.

use proptest::prelude::*;
use serde_json::{Map, Value, json};
use sluice_engine::feel::{self, Scope};

struct Vars(Map<String, Value>);

impl Scope for Vars {
    fn variable(&self, name: &str) -> Option<&Value> {
        self.0.get(name)
    }
}

fn vars() -> Vars {
    let Value::Object(map) = json!({
        "x": 5,
        "y": 2.5,
        "name": "Ada",
        "flag": true,
        "nothing": null,
        "order": {"total": 120, "customer": {"tier": "gold"}, "lines": 3},
        "items": [
            {"name": "a", "price": 5},
            {"name": "b", "price": 15},
            {"name": "c", "price": 25}
        ],
        "numbers": [1, 2, 3, 4],
        "big": 9_223_372_036_854_775_807_i64,
        "$weird_name1": 7
    }) else {
        unreachable!("the test variables are an object")
    };
    Vars(map)
}

fn eval(source: &str) -> Value {
    let expression =
        feel::parse(source).unwrap_or_else(|error| panic!("'{source}' should parse: {error}"));
    expression
        .evaluate(&vars())
        .unwrap_or_else(|error| panic!("'{source}' should evaluate: {error}"))
}

fn check(cases: &[(&str, Value)]) {
    for (source, expected) in cases {
        assert_eq!(&eval(source), expected, "source: {source}");
    }
}

fn parse_error(source: &str) -> String {
    match feel::parse(source) {
        Ok(expression) => panic!("'{source}' should not parse, got {expression:?}"),
        Err(error) => error.message,
    }
}

#[test]
fn literals() {
    check(&[
        ("1", json!(1)),
        ("1.5", json!(1.5)),
        (".5", json!(0.5)),
        ("-3", json!(-3)),
        ("99999999999999999999", json!(1e20)),
        (r#""hi""#, json!("hi")),
        (r#""a\"b\\c\nd\te\u00e9\/""#, json!("a\"b\\c\nd\te\u{e9}/")),
        (r#""\ud83d\ude00""#, json!("\u{1F600}")),
        ("true", json!(true)),
        ("false", json!(false)),
        ("null", json!(null)),
        ("[1, 2, \"x\"]", json!([1, 2, "x"])),
        ("[]", json!([])),
        ("[x, x + 1]", json!([5, 6])),
        (r#"{a: 1, "b c": 2}"#, json!({"a": 1, "b c": 2})),
        ("{a: x, b: {c: name}}", json!({"a": 5, "b": {"c": "Ada"}})),
        ("{}", json!({})),
        ("1 // trailing comment", json!(1)),
        ("/* lead */ 2", json!(2)),
    ]);
}

#[test]
fn paths_and_brackets() {
    check(&[
        ("x", json!(5)),
        ("$weird_name1", json!(7)),
        ("missing", json!(null)),
        ("order.total", json!(120)),
        ("order.customer.tier", json!("gold")),
        ("order.missing", json!(null)),
        ("order.missing.deeper", json!(null)),
        ("x.member", json!(null)),
        ("missing.member", json!(null)),
        ("items.name", json!(["a", "b", "c"])),
        ("numbers[1]", json!(1)),
        ("numbers[4]", json!(4)),
        ("numbers[-1]", json!(4)),
        ("numbers[-4]", json!(1)),
        ("numbers[0]", json!(null)),
        ("numbers[5]", json!(null)),
        ("numbers[-5]", json!(null)),
        ("numbers[1.5]", json!(null)),
        ("numbers[x - 3]", json!(2)),
        ("items[2].name", json!("b")),
        ("items[-1].price", json!(25)),
        ("[10, 20][2]", json!(20)),
        ("{a: [1, {b: 2}]}.a[2].b", json!(2)),
        ("x[1]", json!(null)),
        ("items[price > 10].name", json!(["b", "c"])),
        ("numbers[item > 2]", json!([3, 4])),
        ("numbers[item > 2 and item < 4]", json!([3])),
        ("items[price > x * 4]", json!([{"name": "c", "price": 25}])),
        ("numbers[item > 10]", json!([])),
        ("numbers[true]", json!([1, 2, 3, 4])),
        ("numbers[false]", json!([])),
        ("missing[item > 1]", json!(null)),
        (
            "[{a: true}, {a: false}, {a: null}][a]",
            json!([{"a": true}]),
        ),
        ("5[item > 3]", json!([5])),
        ("count(items[contains(name, \"b\")])", json!(1)),
    ]);
}

#[test]
fn arithmetic_keeps_integers_while_exact() {
    check(&[
        ("1 + 2", json!(3)),
        ("1 + 2.0", json!(3.0)),
        ("1.5 + 1.5", json!(3.0)),
        ("x - 7", json!(-2)),
        ("x * 3", json!(15)),
        ("6 / 3", json!(2)),
        ("7 / 2", json!(3.5)),
        ("-7 / 2", json!(-3.5)),
        ("1 / 0", json!(null)),
        ("1.0 / 0.0", json!(null)),
        ("1 / 0.0", json!(null)),
        ("2 ** 10", json!(1024)),
        ("2 ** -1", json!(0.5)),
        ("2 ** 0.5", json!(2.0_f64.sqrt())),
        ("0 ** -1", json!(null)),
        ("(-8) ** 0.5", json!(null)),
        ("-2 ** 2", json!(4)),
        ("2 ** 3 ** 2", json!(64)),
        ("1 + 2 * 3", json!(7)),
        ("(1 + 2) * 3", json!(9)),
        ("10 - 2 - 3", json!(5)),
        ("12 / 2 / 3", json!(2)),
        ("-x", json!(-5)),
        ("--x", json!(5)),
        ("- -3", json!(3)),
        ("y * 2", json!(5.0)),
        ("big + 1", json!(9_223_372_036_854_775_808.0_f64)),
        ("big * big", json!(8.507_059_173_023_462e37)),
        ("-big - 2", json!(-9_223_372_036_854_775_809.0_f64)),
        ("2 ** 64", json!(18_446_744_073_709_551_616.0_f64)),
        ("10 ** 400", json!(null)),
        (r#""a" + "b""#, json!("ab")),
        (r#"name + "!""#, json!("Ada!")),
        (r#""a" + 1"#, json!(null)),
        ("x + null", json!(null)),
        ("x + missing", json!(null)),
        ("-name", json!(null)),
        ("true + 1", json!(null)),
        ("[1] + [2]", json!(null)),
    ]);
}

#[test]
fn comparisons_and_nulls() {
    check(&[
        ("x = 5", json!(true)),
        ("x = 5.0", json!(true)),
        ("x != 5", json!(false)),
        ("x > 4", json!(true)),
        ("x >= 5", json!(true)),
        ("x < 5", json!(false)),
        ("x <= 4.9", json!(false)),
        ("order.total > 100", json!(true)),
        (r#"name = "Ada""#, json!(true)),
        (r#"name < "Bob""#, json!(true)),
        (r#""b" > "a""#, json!(true)),
        ("flag = true", json!(true)),
        ("true != false", json!(true)),
        ("[1, 2] = [1, 2.0]", json!(true)),
        ("{a: 1} = {a: 1}", json!(true)),
        ("{a: 1} = {a: 2}", json!(false)),
        // Different types are unequal rather than null.
        (r#"x = "5""#, json!(false)),
        (r#"x != "5""#, json!(true)),
        ("null = null", json!(true)),
        ("missing = null", json!(true)),
        ("nothing = null", json!(true)),
        ("x = null", json!(false)),
        ("x != null", json!(true)),
        // Ordering anything but two numbers or two strings is null.
        ("missing > 1", json!(null)),
        ("x < null", json!(null)),
        (r#"x < "6""#, json!(null)),
        ("true < false", json!(null)),
        ("1 < 2 = true", json!(true)),
    ]);
}

#[test]
fn three_valued_logic() {
    check(&[
        ("true and true", json!(true)),
        ("true and false", json!(false)),
        ("false and null", json!(false)),
        ("null and false", json!(false)),
        ("true and null", json!(null)),
        ("null and true", json!(null)),
        ("null and null", json!(null)),
        ("true or null", json!(true)),
        ("null or true", json!(true)),
        ("false or null", json!(null)),
        ("false or false", json!(false)),
        ("null or null", json!(null)),
        ("1 and true", json!(null)),
        ("false and 1", json!(false)),
        ("x > 1 and x < 10", json!(true)),
        ("x > 10 or name = \"Ada\"", json!(true)),
        ("true or false and false", json!(true)),
        ("not(true)", json!(false)),
        ("not(false)", json!(true)),
        ("not(null)", json!(null)),
        ("not(1)", json!(null)),
        ("not(x > 3)", json!(false)),
        ("missing > 1 or flag", json!(true)),
    ]);
}

#[test]
fn if_between_in() {
    check(&[
        ("if x > 3 then \"big\" else \"small\"", json!("big")),
        ("if x > 30 then \"big\" else \"small\"", json!("small")),
        ("if null then 1 else 2", json!(2)),
        ("if 1 then 1 else 2", json!(2)),
        (
            "if flag then if x = 5 then \"a\" else \"b\" else \"c\"",
            json!("a"),
        ),
        ("1 + if true then 1 else 2", json!(2)),
        ("x between 1 and 10", json!(true)),
        ("x between 5 and 5", json!(true)),
        ("x between 6 and 10", json!(false)),
        ("x between 1 and 10 and flag", json!(true)),
        ("x between \"a\" and 10", json!(null)),
        ("x in [1, 5, 9]", json!(true)),
        ("x in [1, 2]", json!(false)),
        ("x in []", json!(false)),
        ("x in numbers", json!(false)),
        ("3 in numbers", json!(true)),
        ("x in (1, 5)", json!(true)),
        ("x in 5", json!(true)),
        ("x in [1..5]", json!(true)),
        ("x in [1..5)", json!(false)),
        ("x in (5..10]", json!(false)),
        ("x in ]4..10]", json!(true)),
        ("name in [\"Ada\", \"Bob\"]", json!(true)),
        ("missing in [1..5]", json!(null)),
        ("x in [1..5] and flag", json!(true)),
    ]);
}

#[test]
fn functions() {
    check(&[
        ("string(x)", json!("5")),
        ("string(1.5)", json!("1.5")),
        ("string(true)", json!("true")),
        ("string(name)", json!("Ada")),
        ("string(null)", json!(null)),
        ("string([1, 2])", json!("[1,2]")),
        ("number(\"3\")", json!(3)),
        ("number(\" -3.25 \")", json!(-3.25)),
        ("number(\"abc\")", json!(null)),
        ("number(\"1e5\")", json!(null)),
        ("number(\"NaN\")", json!(null)),
        ("number(7)", json!(7)),
        ("string length(name)", json!(3)),
        ("string length(\"héllo\")", json!(5)),
        ("string length(x)", json!(null)),
        ("upper case(name)", json!("ADA")),
        ("lower case(name)", json!("ada")),
        ("contains(name, \"d\")", json!(true)),
        ("contains(name, \"z\")", json!(false)),
        ("contains(x, \"z\")", json!(null)),
        ("starts with(name, \"A\")", json!(true)),
        ("ends with(name, \"A\")", json!(false)),
        ("substring(\"foobar\", 3)", json!("obar")),
        ("substring(\"foobar\", 3, 3)", json!("oba")),
        ("substring(\"foobar\", -2, 1)", json!("a")),
        ("substring(\"foobar\", 0)", json!(null)),
        ("is defined(x)", json!(true)),
        ("is defined(nothing)", json!(true)),
        ("is defined(missing)", json!(false)),
        ("is defined(order.total)", json!(true)),
        ("is defined(order.missing)", json!(false)),
        ("is defined(missing.total)", json!(false)),
        ("is defined(numbers[9])", json!(false)),
        ("count(numbers)", json!(4)),
        ("count([])", json!(0)),
        ("count(x)", json!(null)),
        ("sum(numbers)", json!(10)),
        ("sum([1, 2.5])", json!(3.5)),
        ("sum(1, 2, 3)", json!(6)),
        ("sum([])", json!(null)),
        ("sum([1, \"a\"])", json!(null)),
        ("sum(items.price)", json!(45)),
        ("min(numbers)", json!(1)),
        ("max(3, 9, 4)", json!(9)),
        ("max([\"a\", \"c\", \"b\"])", json!("c")),
        ("min([1, \"a\"])", json!(null)),
        ("abs(-4)", json!(4)),
        ("abs(-2.5)", json!(2.5)),
        ("floor(2.7)", json!(2)),
        ("ceiling(2.1)", json!(3)),
        ("floor(-2.5)", json!(-3)),
        ("floor(4)", json!(4)),
        ("list contains(numbers, 3)", json!(true)),
        ("list contains(numbers, 9)", json!(false)),
    ]);
}

#[test]
fn parse_errors_say_what_and_where() {
    let cases: &[(&str, &str)] = &[
        ("", "expected an expression at column 1 in ''"),
        (
            "contains(a, b",
            "expected ')' at column 14 in 'contains(a, b'",
        ),
        ("f(a, b", "unknown function 'f'"),
        ("foo(1)", "unknown function 'foo' (supported: not, string"),
        ("1 +", "expected an expression at column 4"),
        ("(1", "expected ')' at column 3"),
        (
            "1 2",
            "expected an operator or the end of the expression but found 2 at column 3",
        ),
        ("x ! 1", "unexpected character '!' at column 3"),
        ("\"open", "unterminated string at column 1"),
        (r#""\q""#, "unknown escape '\\q' at column 2"),
        (r#""\ud800""#, "unpaired surrogate"),
        (r#""\u12""#, "expected four hex digits"),
        ("now()", "'now()' is not allowed"),
        ("today()", "'today()' is not allowed"),
        ("random number()", "'random number()' is not allowed"),
        (
            "string length()",
            "function 'string length' takes 1 argument, not 0",
        ),
        (
            "contains(\"a\")",
            "function 'contains' takes 2 arguments, not 1",
        ),
        ("substring(\"a\", 1, 2, 3)", "takes 2 to 3 arguments, not 4"),
        ("sum()", "takes at least 1 arguments, not 0"),
        (
            "not x",
            "expected '(' after 'not' but found 'x' at column 5",
        ),
        ("if x then 1", "expected 'else' at column 12"),
        ("x between 1", "expected 'and' at column 12"),
        ("x in ]1, 2]", "expected '..'"),
        ("x in [1..2", "expected ']' or ')' closing the range"),
        ("a.", "expected a name after '.' at column 3"),
        (
            "then",
            "expected an expression but found 'then' at column 1",
        ),
        (
            "some x in xs satisfies x > 1",
            "'some' expressions are not supported",
        ),
        ("{a 1}", "expected ':' but found 1 at column 4"),
        ("/* open", "unterminated comment"),
        ("1 + @", "unexpected character '@' at column 5"),
    ];
    for (source, expected) in cases {
        let message = parse_error(source);
        assert!(
            message.contains(expected),
            "'{source}': '{message}' should contain '{expected}'"
        );
    }
}

#[test]
fn limits_reject_instead_of_overflowing() {
    let deep_parens = format!("{}1{}", "(".repeat(65), ")".repeat(65));
    assert!(parse_error(&deep_parens).contains("nested deeper than 64 levels"));
    let ok_parens = format!("{}1{}", "(".repeat(60), ")".repeat(60));
    assert_eq!(eval(&ok_parens), json!(1));

    let deep_lists = format!("{}{}", "[".repeat(5000), "]".repeat(5000));
    assert!(parse_error(&deep_lists).contains("nested deeper"));
    assert!(parse_error(&"-".repeat(5000)).contains("nested deeper"));
    assert!(parse_error(&"not(".repeat(3000)).contains("nested deeper"));

    let long_chain = vec!["1"; 1000].join(" + ");
    assert!(parse_error(&long_chain).contains("too deep"));
    let fine_chain = vec!["1"; 200].join(" + ");
    assert_eq!(eval(&fine_chain), json!(200));
    let long_path = format!("order{}", ".a".repeat(2000));
    assert!(parse_error(&long_path).contains("too deep"));

    let too_long = format!("\"{}\"", "a".repeat(16 * 1024));
    assert!(parse_error(&too_long).contains("more than the 16384 allowed"));
}

#[test]
fn evaluation_borrows_and_parsing_is_reusable() {
    let expression = feel::parse("order").expect("a variable parses");
    let scope = vars();
    let value = expression
        .evaluate_borrowed(&scope)
        .expect("evaluation does not fail");
    assert!(matches!(value, std::borrow::Cow::Borrowed(_)));
    assert_eq!(expression.source(), "order");

    let condition = feel::parse("order.total > 100").expect("a condition parses");
    for total in [50, 150] {
        let Value::Object(map) = json!({"order": {"total": total}}) else {
            unreachable!("an object")
        };
        let result = condition.evaluate(&Vars(map)).expect("no error");
        assert_eq!(result, json!(total > 100));
    }
    assert_eq!(condition, condition.clone());
}

/// Evaluates `source` with a variable `s` of `bytes` bytes under small limits.
fn eval_limited(source: &str, bytes: usize) -> Result<Value, String> {
    let Value::Object(map) = json!({"s": "a".repeat(bytes), "list": [1, 2, 3, 4, 5]}) else {
        unreachable!("an object")
    };
    let limits = feel::Limits {
        value_bytes_max: 100,
        collection_items_max: 4,
    };
    feel::parse(source)
        .expect("parses")
        .evaluate_limited(&Vars(map), &limits)
        .map_err(|error| error.message)
}

#[test]
fn built_values_are_bounded() {
    // Within the limits, as without them.
    assert_eq!(eval_limited("s + s", 50), Ok(json!("a".repeat(100))));
    assert_eq!(eval_limited("[s, s, s, s]", 0), Ok(json!(["", "", "", ""])));
    // Passing a value through builds nothing: a large variable is returned as it is.
    assert_eq!(eval_limited("s", 1_000), Ok(json!("a".repeat(1_000))));
    assert_eq!(eval_limited("list", 0), Ok(json!([1, 2, 3, 4, 5])));

    let error = eval_limited("s + s", 51).expect_err("102 bytes");
    assert!(
        error.contains("builds a string of 102 bytes, more than the 100 bytes"),
        "{error}"
    );
    let error = eval_limited("string length(s + s + s) > 1", 40).expect_err("120 bytes");
    assert!(error.contains("string of 120 bytes"), "{error}");
    let error = eval_limited("upper case(s)", 101).expect_err("101 bytes");
    assert!(error.contains("string of 101 bytes"), "{error}");
    let error = eval_limited("string(s)", 101).expect_err("101 bytes");
    assert!(error.contains("string of 101 bytes"), "{error}");
    assert_eq!(eval_limited("string(list)", 0), Ok(json!("[1,2,3,4,5]")));
    // (A list of literals is built once, by the parser, within the source's bound.)
    let error = eval_limited("[s, s, s, s, s]", 0).expect_err("5 items");
    assert!(
        error.contains("builds a list of 5 items, more than the 4 items"),
        "{error}"
    );
    let error = eval_limited("[s, s]", 60).expect_err("about 124 bytes");
    assert!(
        error.contains("builds a list of more than 100 bytes"),
        "{error}"
    );
    let error = eval_limited("{a: s, b: s}", 60).expect_err("about 130 bytes");
    assert!(
        error.contains("builds a context of more than 100 bytes"),
        "{error}"
    );
    let error = eval_limited("list[item > 0]", 0).expect_err("5 items kept");
    assert!(error.contains("builds a list of 5 items"), "{error}");
    assert_eq!(eval_limited("list[item > 1]", 0), Ok(json!([2, 3, 4, 5])));
    // Nested lists count the bytes of their items.
    let error = eval_limited("[[s], [s]]", 49).expect_err("about 108 bytes");
    assert!(
        error.contains("builds a list of more than 100 bytes"),
        "{error}"
    );
}

/// Fragments that make random inputs look like expressions, so they reach deep into the parser.
const FRAGMENTS: &[&str] = &[
    "x",
    "order",
    ".",
    "total",
    "items",
    "[",
    "]",
    "(",
    ")",
    "{",
    "}",
    ",",
    ":",
    "1",
    "-",
    "2.5",
    "0",
    "+",
    "*",
    "/",
    "**",
    "=",
    "!=",
    "<",
    "<=",
    ">",
    ">=",
    "..",
    "and",
    "or",
    "not",
    "if",
    "then",
    "else",
    "between",
    "in",
    "item",
    "\"s\"",
    "\"",
    "\\",
    "true",
    "null",
    "string",
    "length",
    "sum",
    "count",
    "is",
    "defined",
    "substring",
    "price",
    " ",
    "big",
    "numbers",
    "\u{e9}",
    "//",
    "/*",
    "*/",
    "$",
];

fn fragments() -> impl Strategy<Value = String> {
    prop::collection::vec(prop::sample::select(FRAGMENTS), 0..40).prop_map(|parts| parts.concat())
}

fn parse_and_evaluate(source: &str) {
    if let Ok(expression) = feel::parse(source) {
        let result = expression.evaluate(&vars());
        assert!(
            result.is_ok(),
            "'{source}' failed at evaluation: {result:?}"
        );
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn random_text_never_panics(source in "\\PC{0,60}") {
        parse_and_evaluate(&source);
    }

    #[test]
    fn random_operator_soup_never_panics(source in "[-+*/()\\[\\]{}.,:=<>!\"a-c0-9 ]{0,80}") {
        parse_and_evaluate(&source);
    }

    #[test]
    fn random_fragments_never_panic(source in fragments()) {
        parse_and_evaluate(&source);
    }
}
