//! The XPath that XLSForm expressions are written in, parsed once into the form's rule tree
//! (the JSON expressions of [`crate::expr`]), so that the server and the phone evaluate the
//! same thing.
//!
//! The subset: `.` (the question itself, in a constraint), `${name}`, numbers and quoted text,
//! `+ - * div mod`, `= != < <= > >=`, `and`, `or`, parentheses, and the functions `not`,
//! `if`, `selected`, `selected-at`, `count-selected`, `string-length`, `regex`, `contains`, `starts-with`,
//! `ends-with`, `concat`, `substr`, `coalesce`, `int`, `round`, `number`, `string`, `true`,
//! `false`, `today`, `now`, `date`, `decimal-date-time`, `format-date`, `format-date-time`,
//! `position(..)` inside a repeat, `count`, `sum`, `max`, `min` and `indexed-repeat` over one, and
//! dates in arithmetic (`today() - ${dob}` is a number of days). Anything else is refused with
//! what it is, so that an import names it.
//!
//! A parsed rule is wrapped in `{"xpath": [rule]}`, which evaluates it as XPath reads values:
//! an unanswered question is the empty text, a comparison that cannot be made is false (`!=`
//! true), a condition holds for a non-empty text or a number other than 0, and a date in
//! arithmetic is its day number. Mầm's own rules, outside the wrapper, keep "unknown" instead.
//!
//! ```
//! use serde_json::json;
//! use sync_protocol::xpath::parse;
//!
//! let rule = parse("${age} >= 18 and selected(${consent}, 'yes')", None).unwrap();
//! assert_eq!(rule, json!({"xpath": [{"and": [
//!     {">=": [{"var": "age"}, 18]},
//!     {"selected": [{"var": "consent"}, "yes"]},
//! ]}]}));
//! ```

use serde_json::{json, Value};

use crate::expr::number;

/// Why an expression is not converted: the construct, as the designer wrote it, in English
/// and in Vietnamese.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Unsupported {
    pub en: String,
    pub vi: String,
}

fn no(en: impl Into<String>, vi: impl Into<String>) -> Unsupported {
    Unsupported {
        en: en.into(),
        vi: vi.into(),
    }
}

impl std::fmt::Display for Unsupported {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.en)
    }
}

#[derive(Clone, Debug, PartialEq)]
enum Token {
    Number(f64),
    Text(String),
    Dot,
    Var(String),
    Name(String),
    Open,
    Close,
    Comma,
    Op(&'static str),
    /// `position(..)`
    Position,
}

fn tokens(text: &str) -> Result<Vec<Token>, Unsupported> {
    let chars: Vec<char> = text.chars().collect();
    let mut out = Vec::new();
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        match c {
            c if c.is_whitespace() => i += 1,
            '(' => {
                out.push(Token::Open);
                i += 1;
            }
            ')' => {
                out.push(Token::Close);
                i += 1;
            }
            ',' => {
                out.push(Token::Comma);
                i += 1;
            }
            '\'' | '"' => {
                let end = chars[i + 1..].iter().position(|&x| x == c).ok_or_else(|| {
                    no("text without its closing quote", "chữ thiếu dấu nháy đóng")
                })?;
                out.push(Token::Text(chars[i + 1..i + 1 + end].iter().collect()));
                i += end + 2;
            }
            '$' if chars.get(i + 1) == Some(&'{') => {
                let end = chars[i..]
                    .iter()
                    .position(|&x| x == '}')
                    .ok_or_else(|| no("${ without its closing }", "${ thiếu dấu } đóng"))?;
                out.push(Token::Var(chars[i + 2..i + end].iter().collect()));
                i += end + 1;
            }
            '.' if chars.get(i + 1) == Some(&'.') => {
                // `position(..)`: the place of the repeat item the rule is in.
                let rest: String = chars[i..].iter().collect();
                let after_position =
                    matches!(out.as_slice(), [.., Token::Name(n), Token::Open] if n == "position");
                if rest.starts_with("..)") && after_position {
                    out.pop();
                    out.pop();
                    out.push(Token::Position);
                    i += 3;
                    continue;
                }
                return Err(no("the path \"..\"", "đường dẫn \"..\""));
            }
            '.' if !chars.get(i + 1).is_some_and(char::is_ascii_digit) => {
                out.push(Token::Dot);
                i += 1;
            }
            c if c.is_ascii_digit() || c == '.' => {
                let start = i;
                while i < chars.len() && (chars[i].is_ascii_digit() || chars[i] == '.') {
                    i += 1;
                }
                let s: String = chars[start..i].iter().collect();
                let n = s
                    .parse()
                    .map_err(|_| no(format!("the number {s:?}"), format!("số {s:?}")))?;
                out.push(Token::Number(n));
            }
            '!' if chars.get(i + 1) == Some(&'=') => {
                out.push(Token::Op("!="));
                i += 2;
            }
            '<' | '>' => {
                let with_eq = chars.get(i + 1) == Some(&'=');
                out.push(Token::Op(match (c, with_eq) {
                    ('<', true) => "<=",
                    ('<', false) => "<",
                    ('>', true) => ">=",
                    _ => ">",
                }));
                i += if with_eq { 2 } else { 1 };
            }
            '=' => {
                out.push(Token::Op("="));
                i += 1;
            }
            '+' | '-' | '*' => {
                out.push(Token::Op(match c {
                    '+' => "+",
                    '-' => "-",
                    _ => "*",
                }));
                i += 1;
            }
            c if c.is_alphabetic() || c == '_' => {
                let start = i;
                while i < chars.len()
                    && (chars[i].is_alphanumeric() || matches!(chars[i], '_' | '-' | ':'))
                {
                    i += 1;
                }
                // `a-b` in XPath is a name; `a - b` is a subtraction: a name ends before a
                // trailing '-'.
                while i > start + 1 && chars[i - 1] == '-' {
                    i -= 1;
                }
                out.push(Token::Name(chars[start..i].iter().collect()));
            }
            '/' => return Err(no("a path with \"/\"", "đường dẫn có \"/\"")),
            '|' => return Err(no("a union with \"|\"", "phép hợp \"|\"")),
            '[' => return Err(no("a predicate with \"[\"", "điều kiện lọc \"[\"")),
            other => {
                return Err(no(
                    format!("the character {other:?}"),
                    format!("ký tự {other:?}"),
                ))
            }
        }
    }
    Ok(out)
}

struct Parser<'a> {
    tokens: Vec<Token>,
    at: usize,
    /// The question `.` names, in a constraint.
    current: Option<&'a str>,
    /// In a choice filter, a bare name is a column of the choice: `{"var": "@column"}`.
    choice_columns: bool,
}

impl Parser<'_> {
    fn peek(&self) -> Option<&Token> {
        self.tokens.get(self.at)
    }

    fn next(&mut self) -> Option<Token> {
        let t = self.tokens.get(self.at).cloned();
        self.at += 1;
        t
    }

    fn word(&self, w: &str) -> bool {
        matches!(self.peek(), Some(Token::Name(n)) if n == w)
    }

    fn or(&mut self) -> Result<Value, Unsupported> {
        let mut terms = vec![self.and()?];
        while self.word("or") {
            self.at += 1;
            terms.push(self.and()?);
        }
        Ok(if terms.len() == 1 {
            terms.remove(0)
        } else {
            json!({ "or": terms })
        })
    }

    fn and(&mut self) -> Result<Value, Unsupported> {
        let mut terms = vec![self.equality()?];
        while self.word("and") {
            self.at += 1;
            terms.push(self.equality()?);
        }
        Ok(if terms.len() == 1 {
            terms.remove(0)
        } else {
            json!({ "and": terms })
        })
    }

    fn equality(&mut self) -> Result<Value, Unsupported> {
        let mut left = self.relational()?;
        while let Some(Token::Op(op @ ("=" | "!="))) = self.peek() {
            let op = if *op == "=" { "==" } else { "!=" };
            self.at += 1;
            let right = self.relational()?;
            left = json!({ op: [left, right] });
        }
        Ok(left)
    }

    fn relational(&mut self) -> Result<Value, Unsupported> {
        let mut left = self.additive()?;
        while let Some(Token::Op(op @ ("<" | "<=" | ">" | ">="))) = self.peek() {
            let op = *op;
            self.at += 1;
            let right = self.additive()?;
            left = json!({ op: [left, right] });
        }
        Ok(left)
    }

    fn additive(&mut self) -> Result<Value, Unsupported> {
        let mut left = self.multiplicative()?;
        while let Some(Token::Op(op @ ("+" | "-"))) = self.peek() {
            let op = *op;
            self.at += 1;
            let right = self.multiplicative()?;
            left = json!({ op: [left, right] });
        }
        Ok(left)
    }

    fn multiplicative(&mut self) -> Result<Value, Unsupported> {
        let mut left = self.unary()?;
        loop {
            let op = match self.peek() {
                Some(Token::Op("*")) => "*",
                Some(Token::Name(n)) if n == "div" => "/",
                Some(Token::Name(n)) if n == "mod" => "mod",
                _ => return Ok(left),
            };
            self.at += 1;
            let right = self.unary()?;
            left = json!({ op: [left, right] });
        }
    }

    fn unary(&mut self) -> Result<Value, Unsupported> {
        if self.peek() == Some(&Token::Op("-")) {
            self.at += 1;
            let x = self.unary()?;
            return Ok(match x.as_f64() {
                Some(n) => number(-n),
                None => json!({ "-": [0, x] }),
            });
        }
        self.primary()
    }

    fn primary(&mut self) -> Result<Value, Unsupported> {
        match self.next() {
            Some(Token::Number(n)) => Ok(number(n)),
            Some(Token::Position) => Ok(json!({ "position": [] })),
            Some(Token::Text(s)) => Ok(json!(s)),
            Some(Token::Var(name)) => {
                crate::ids::check_field_name(&name).map_err(|_| {
                    no(
                        format!("the reference ${{{name}}}"),
                        format!("tham chiếu ${{{name}}}"),
                    )
                })?;
                Ok(json!({ "var": name }))
            }
            Some(Token::Dot) => match self.current {
                Some(name) => Ok(json!({ "var": name })),
                None => Err(no(
                    "\".\" outside a constraint",
                    "\".\" ngoài điều kiện ràng buộc",
                )),
            },
            Some(Token::Open) => {
                let inner = self.or()?;
                match self.next() {
                    Some(Token::Close) => Ok(inner),
                    _ => Err(no("a \"(\" without its \")\"", "\"(\" thiếu \")\"")),
                }
            }
            Some(Token::Name(name)) if self.peek() == Some(&Token::Open) => {
                self.at += 1;
                let mut args = Vec::new();
                if self.peek() != Some(&Token::Close) {
                    loop {
                        args.push(self.or()?);
                        match self.next() {
                            Some(Token::Comma) => continue,
                            Some(Token::Close) => break,
                            _ => {
                                return Err(no(
                                    format!("the call {name}(…"),
                                    format!("lời gọi {name}(…"),
                                ))
                            }
                        }
                    }
                } else {
                    self.at += 1;
                }
                self.call(&name, args)
            }
            Some(Token::Name(name)) if self.choice_columns => {
                Ok(json!({ "var": format!("@{name}") }))
            }
            Some(Token::Name(name)) => Err(no(
                format!("the path {name:?}"),
                format!("đường dẫn {name:?}"),
            )),
            Some(other) => Err(no(
                format!("{other:?} where a value belongs"),
                format!("{other:?} ở chỗ của một giá trị"),
            )),
            None => Err(no(
                "an expression that ends too soon",
                "biểu thức kết thúc quá sớm",
            )),
        }
    }

    fn call(&self, name: &str, mut args: Vec<Value>) -> Result<Value, Unsupported> {
        let arity = |range: std::ops::RangeInclusive<usize>| {
            if range.contains(&args.len()) {
                Ok(())
            } else {
                Err(no(
                    format!("{name}() with {} arguments", args.len()),
                    format!("{name}() với {} đối số", args.len()),
                ))
            }
        };
        let dot = || -> Result<Value, Unsupported> {
            self.current.map(|n| json!({ "var": n })).ok_or_else(|| {
                no(
                    format!("{name}() without an argument"),
                    format!("{name}() thiếu đối số"),
                )
            })
        };
        Ok(match name {
            "true" => {
                arity(0..=0)?;
                json!(true)
            }
            "false" => {
                arity(0..=0)?;
                json!(false)
            }
            "not" => {
                arity(1..=1)?;
                json!({ "not": args })
            }
            "if" => {
                arity(3..=3)?;
                json!({ "if": args })
            }
            "selected" | "selected-at" | "regex" | "contains" | "starts-with" | "ends-with"
            | "coalesce" => {
                arity(2..=2)?;
                json!({ name.replace('-', "_"): args })
            }
            "count-selected" | "int" | "number" => {
                arity(1..=1)?;
                json!({ name.replace('-', "_"): args })
            }
            "string-length" => {
                arity(0..=1)?;
                if args.is_empty() {
                    args.push(dot()?);
                }
                json!({ "string_length": args })
            }
            "string" => {
                arity(1..=1)?;
                json!({ "concat": args })
            }
            "count" | "sum" | "max" | "min" => {
                arity(1..=1)?;
                json!({ name: args })
            }
            "indexed-repeat" => {
                // indexed-repeat(${field}, ${repeat}, n): the field's values across the items
                // already name their repeat.
                arity(3..=3)?;
                json!({ "indexed_repeat": [args[0], args[2]] })
            }
            "today" | "now" => {
                arity(0..=0)?;
                json!({ name: [] })
            }
            "date" | "decimal-date-time" => {
                arity(1..=1)?;
                json!({ name.replace('-', "_"): args })
            }
            "format-date" | "format-date-time" => {
                arity(2..=2)?;
                json!({ "format_date": args })
            }
            "concat" => json!({ "concat": args }),
            "substr" => {
                arity(2..=3)?;
                json!({ "substr": args })
            }
            "round" => {
                arity(1..=2)?;
                if args.len() == 1 {
                    args.push(json!(0));
                }
                json!({ "round": args })
            }
            other => {
                return Err(no(
                    format!("the function {other}()"),
                    format!("hàm {other}()"),
                ))
            }
        })
    }
}

/// Parses `text` into a rule. `current` is the question `.` stands for (a constraint's own
/// question); `None` where `.` has no meaning.
pub fn parse(text: &str, current: Option<&str>) -> Result<Value, Unsupported> {
    parse_with(text, current, false)
}

/// Parses a `choice_filter`: a bare name (`cf`, `name`) is a column of the choice being
/// offered, `{"var": "@cf"}`; `${name}` a question, as everywhere.
pub fn parse_choice_filter(text: &str) -> Result<Value, Unsupported> {
    parse_with(text, None, true)
}

fn parse_with(
    text: &str,
    current: Option<&str>,
    choice_columns: bool,
) -> Result<Value, Unsupported> {
    let mut parser = Parser {
        tokens: tokens(text)?,
        at: 0,
        current,
        choice_columns,
    };
    let rule = parser.or()?;
    match parser.peek() {
        // Evaluated as XPath reads it: an unanswered question is the empty text.
        None => Ok(json!({ "xpath": [rule] })),
        Some(t) => Err(no(
            format!("{t:?} after a whole expression"),
            format!("{t:?} sau một biểu thức đã trọn"),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The rule inside its `xpath` wrapper.
    fn parse(text: &str, current: Option<&str>) -> Result<Value, Unsupported> {
        super::parse(text, current).map(|v| v["xpath"][0].clone())
    }

    fn parse_choice_filter(text: &str) -> Result<Value, Unsupported> {
        super::parse_choice_filter(text).map(|v| v["xpath"][0].clone())
    }

    #[test]
    fn precedence_and_functions() {
        assert_eq!(
            parse(". > 0 and . < 10 or . = 99", Some("x")).unwrap(),
            json!({"or": [{"and": [{">": [{"var": "x"}, 0]}, {"<": [{"var": "x"}, 10]}]}, {"==": [{"var": "x"}, 99]}]})
        );
        assert_eq!(
            parse("${a} + ${b} * 2 - -1", None).unwrap(),
            json!({"-": [{"+": [{"var": "a"}, {"*": [{"var": "b"}, 2]}]}, -1]})
        );
        assert_eq!(
            parse("${n} mod 2 = 0", None).unwrap(),
            json!({"==": [{"mod": [{"var": "n"}, 2]}, 0]})
        );
        assert_eq!(
            parse("string-length(.) <= 10", Some("name")).unwrap(),
            json!({"<=": [{"string_length": [{"var": "name"}]}, 10]})
        );
        assert_eq!(
            parse("if(${age} >= 18, 'adult', 'child')", None).unwrap(),
            json!({"if": [{">=": [{"var": "age"}, 18]}, "adult", "child"]})
        );
        assert_eq!(
            parse("not(selected(., 'c'))", Some("s")).unwrap(),
            json!({"not": [{"selected": [{"var": "s"}, "c"]}]})
        );
        assert_eq!(
            parse("${my-field}", None).unwrap(),
            json!({"var": "my-field"})
        );
    }

    #[test]
    fn a_choice_filter_reads_the_choice_columns() {
        assert_eq!(
            parse_choice_filter("${state}=cf and name != 'x'").unwrap(),
            json!({"and": [{"==": [{"var": "state"}, {"var": "@cf"}]}, {"!=": [{"var": "@name"}, "x"]}]})
        );
        assert!(parse("${state}=cf", None).is_err());
    }

    #[test]
    fn dates_compute_as_odk_computes_them() {
        let values = |name: &str| match name {
            "dob" => Some(json!("2020-03-01")),
            "at" => Some(json!("2024-05-06T10:30:00+07:00")),
            "@today" => Some(json!("2021-03-01")),
            _ => None,
        };
        let run =
            |text: &str| crate::expr::eval(&super::parse(text, None).unwrap(), &values).unwrap();
        assert_eq!(run("today() - ${dob}"), json!(365));
        assert_eq!(run("int((today() - ${dob}) div 365.25)"), json!(0));
        assert_eq!(run("date(${dob} + 30)"), json!("2020-03-31"));
        assert_eq!(run("date(0)"), json!("1970-01-01"));
        assert_eq!(run("${dob} < today()"), json!(true));
        let x = run("decimal-date-time(${at})").as_f64().unwrap();
        assert!((x - (19_849.0 + 3.5 / 24.0)).abs() < 1e-9, "{x}");
        assert_eq!(
            run("format-date(${dob}, '%e/%n/%Y %b %a %d.%m.%y')"),
            json!("1/3/2020 Mar Sun 01.03.20")
        );
        assert_eq!(run("format-date-time(${at}, '%H:%M')"), json!("10:30"));
        // Unanswered is the empty text: never unknown.
        assert_eq!(run("not(selected(${missing}, 'yes'))"), json!(true));
        assert_eq!(run("${missing} < 3"), json!(false));
        assert_eq!(run("${missing} != 3"), json!(true));
        assert_eq!(run("${missing} + 1"), Value::Null);
    }

    #[test]
    fn what_is_outside_the_subset_is_named() {
        for (text, named) in [
            ("uuid()", "the function uuid()"),
            ("../age > 3", "the path \"..\""),
            ("/data/age > 3", "a path with \"/\""),
            (". > 3", "\".\" outside a constraint"),
            ("(${a} > 1", "a \"(\" without its \")\""),
            ("position(../x)", "the path \"..\""),
        ] {
            assert_eq!(
                parse(text, None).map_err(|e| e.en),
                Err(named.into()),
                "{text}"
            );
        }
    }
}
