//! A small expression language, in JSON, for derived fields and conditional rules.
//!
//! An expression is a literal (number, string, boolean, null, or a list), `{"var": "field"}`,
//! or `{"<op>": [args…]}`. A missing input makes the result `null` (unknown), never an error,
//! so a derived field simply stays empty until its inputs are filled in.
//!
//! | op | meaning |
//! |---|---|
//! | `+ - * /` | arithmetic on numbers |
//! | `< <= > >= == !=` | comparison (numbers, or dates as `YYYY-MM-DD` text) |
//! | `and or not` | logic; `and` is false as soon as one argument is false |
//! | `if` | `[condition, then, else]` |
//! | `days` | `[from, to]`: days from one date to another |
//! | `in` | `[x, [a, b, …]]`; for a list `x`, whether any of it is in the list |
//! | `present` | `[x]`: not null |
//! | `sum_where` | `[items, condition, value]`: over a repeat group, the sum of `value` for the items where `condition` holds |
//! | `round` | `[x, digits]` |
//! | `mod` | `[x, y]`: the remainder, with the sign of `x` |
//! | `selected` | `[value, code]`: a choice (or list of choices) holds the code |
//! | `count_selected` | `[value]`: how many choices a list holds |
//! | `selected_at` | `[value, n]`: the choice at place `n` (from 0), empty text past the end |
//! | `string_length`, `contains`, `starts_with`, `ends_with`, `regex` | on a value's text |
//! | `concat`, `substr` (`[s, start, end?]`, from 0, `end` not included), `coalesce` (`[a, b]`: `a` unless empty) | text |
//! | `int` (towards zero), `number` (of text or a boolean) | numbers |
//! | `position` | `[]`: inside a repeat group's item, its place (from 1) |
//! | `count`, `sum`, `max`, `min` | `[x]`: over a repeat group, read from outside it (`x` is then its values in each item) |
//! | `indexed_repeat` | `[x, n]`: the value of a repeat group's field in item `n` (from 1) |
//! | `today`, `now` | `[]`: the day (`YYYY-MM-DD`) and the time with its offset, on Việt Nam's clock; a caller may give them as `@today`, `@now` |
//! | `date` | `[x]`: the date of a day number or of a date and time |
//! | `decimal_date_time` | `[x]`: days since 1970-01-01 (UTC) of a date or a date and time, with the day's fraction |
//! | `format_date` | `[date, format]`: `%Y %y %m %n %d %e %b %a %H %M %S` |
//! | `xpath` | `[rule]`: the rule as XPath reads values (see [`crate::xpath`]) |
//! | `who` | `[score, sex ("m"/"f"), age in days, weight kg, length/height cm, measured lying (true/false/null), oedema]`: a WHO z-score (`waz`, `haz`, `whz`, `baz`), rounded to 2 decimals; null where WHO gives none |
//! | `who_flag` | the same arguments: whether WHO flags that score as implausible |
//! | `who_z` | `["wfa" or "hfa", sex, age in days, kg or cm, measured lying]`: the first nutrition form's weight-for-age or length/height-for-age, by the rules of `who` |
//!
//! ```
//! use serde_json::json;
//! use sync_protocol::expr::eval;
//!
//! let on_time = json!({"<=": [{"days": [{"var": "date_of_birth"}, {"var": "registration_date"}]}, 60]});
//! let values = |name: &str| match name {
//!     "date_of_birth" => Some(json!("2020-01-15")),
//!     "registration_date" => Some(json!("2020-03-02")),
//!     _ => None,
//! };
//! assert_eq!(eval(&on_time, &values), Ok(json!(true)));
//! ```

use serde_json::{json, Value};

pub use crate::date::{date_of_day, day_number};
use crate::who::{Child, Position, Score, Sex};

/// Evaluates `expr` with field values from `var`.
pub fn eval(expr: &Value, var: &dyn Fn(&str) -> Option<Value>) -> Result<Value, String> {
    eval_in(expr, var, false)
}

/// XPath's truth of a value (`boolean()`): a non-empty text or list, a number other than 0.
fn truth(v: &Value) -> bool {
    match v {
        Value::Bool(b) => *b,
        Value::Number(n) => n.as_f64().is_some_and(|x| x != 0.0 && !x.is_nan()),
        Value::String(s) => !s.is_empty(),
        Value::Array(a) => !a.is_empty(),
        _ => false,
    }
}

/// A value in arithmetic, as XPath reads it: numeric text as its number, a date as its day
/// number (days since 1970-01-01, as ODK's engines count them).
fn xpath_number(v: &Value) -> Option<f64> {
    match v {
        Value::String(s) if s.len() == 10 && s.as_bytes()[4] == b'-' => {
            day_number(s).map(|d| d as f64)
        }
        Value::Bool(_) => None,
        v => number_of(v),
    }
}

/// `xpath` is true inside `{"xpath": rule}`: an unanswered question is the empty text, and
/// nothing is unknown.
fn eval_in(
    expr: &Value,
    var: &dyn Fn(&str) -> Option<Value>,
    xpath: bool,
) -> Result<Value, String> {
    let Value::Object(map) = expr else {
        return Ok(expr.clone());
    };
    let (op, args) = match map.iter().next() {
        Some(pair) if map.len() == 1 => pair,
        _ => {
            return Err(format!(
                "an expression object has exactly one key, got {}",
                expr
            ))
        }
    };
    if op == "var" {
        let name = args.as_str().ok_or("var takes a field name")?;
        return Ok(match var(name) {
            None | Some(Value::Null) if xpath => json!(""),
            v => v.unwrap_or(Value::Null),
        });
    }
    if op == "xpath" {
        let inner = match args {
            Value::Array(items) if items.len() == 1 => &items[0],
            _ => return Err("xpath takes one rule".into()),
        };
        return eval_in(inner, var, true);
    }
    let args: Vec<&Value> = match args {
        Value::Array(items) => items.iter().collect(),
        single => vec![single],
    };
    let arg = |i: usize| -> Result<Value, String> {
        args.get(i)
            .map(|a| eval_in(a, var, xpath))
            .unwrap_or_else(|| Err(format!("{op} needs argument {}", i + 1)))
    };
    let all =
        || -> Result<Vec<Value>, String> { args.iter().map(|a| eval_in(a, var, xpath)).collect() };
    let num = |v: &Value| if xpath { xpath_number(v) } else { v.as_f64() };
    // A condition: true, false, or (outside XPath) unknown.
    let cond = |v: Value| match v {
        Value::Bool(b) => Some(b),
        v if xpath => Some(truth(&v)),
        _ => None,
    };
    Ok(
        match compute(op, &args, &arg, &all, &num, &cond, var, xpath)? {
            Value::Null if xpath && is_test(op) => Value::Bool(op == "!="),
            v => v,
        },
    )
}

/// Whether `op` gives true or false: under XPath, a comparison that cannot be made is false
/// (`!=` true), as NaN compares.
fn is_test(op: &str) -> bool {
    matches!(
        op,
        "<" | "<=" | ">" | ">=" | "==" | "!=" | "and" | "or" | "not" | "selected" | "regex"
    )
}

#[allow(clippy::too_many_arguments)]
fn compute(
    op: &str,
    args: &[&Value],
    arg: &dyn Fn(usize) -> Result<Value, String>,
    all: &dyn Fn() -> Result<Vec<Value>, String>,
    num: &dyn Fn(&Value) -> Option<f64>,
    cond: &dyn Fn(Value) -> Option<bool>,
    var: &dyn Fn(&str) -> Option<Value>,
    xpath: bool,
) -> Result<Value, String> {
    Ok(match op {
        "+" | "-" | "*" | "/" => {
            let values = all()?;
            let mut numbers = Vec::with_capacity(values.len());
            for v in &values {
                match num(v) {
                    Some(n) => numbers.push(n),
                    None => return Ok(Value::Null),
                }
            }
            let first = *numbers.first().ok_or(format!("{op} needs arguments"))?;
            let result = numbers[1..].iter().fold(first, |acc, n| match op {
                "+" => acc + n,
                "-" => acc - n,
                "*" => acc * n,
                _ => acc / n,
            });
            if result.is_finite() {
                number(result)
            } else {
                Value::Null
            }
        }
        "<" | "<=" | ">" | ">=" | "==" | "!=" => {
            let (a, b) = (arg(0)?, arg(1)?);
            // No answer is the empty text, as XPath reads it: `${x} = ''` holds when x is
            // unanswered.
            let empty = |v: &Value| v.is_null() || v.as_str() == Some("");
            if (op == "==" || op == "!=") && (a.is_null() || b.is_null()) && empty(&a) && empty(&b)
            {
                return Ok(Value::Bool(op == "=="));
            }
            if a.is_null() || b.is_null() {
                return Ok(Value::Null);
            }
            // A number against text compares as numbers when the text is one (a choice coded
            // "1" against 1), as XPath does.
            let numeric = |v: &Value| v.as_str().and(number_of(v));
            let (na, nb) = match (num(&a), num(&b)) {
                (Some(x), None) => (Some(x), numeric(&b)),
                (None, Some(y)) => (numeric(&a), Some(y)),
                other => other,
            };
            let ord = match (na, nb, a.as_str(), b.as_str()) {
                (Some(x), Some(y), _, _) => x.partial_cmp(&y),
                (_, _, Some(x), Some(y)) => Some(x.cmp(y)),
                _ if op == "==" => return Ok(Value::Bool(a == b)),
                _ if op == "!=" => return Ok(Value::Bool(a != b)),
                _ => return Ok(Value::Null),
            };
            let Some(ord) = ord else {
                return Ok(Value::Null);
            };
            Value::Bool(match op {
                "<" => ord.is_lt(),
                "<=" => ord.is_le(),
                ">" => ord.is_gt(),
                ">=" => ord.is_ge(),
                "==" => ord.is_eq(),
                _ => ord.is_ne(),
            })
        }
        "and" | "or" => {
            let decisive = op == "or";
            let mut unknown = false;
            for a in args {
                match cond(eval_in(a, var, xpath)?) {
                    Some(b) if b == decisive => return Ok(Value::Bool(decisive)),
                    Some(_) => {}
                    None => unknown = true,
                }
            }
            if unknown {
                Value::Null
            } else {
                Value::Bool(!decisive)
            }
        }
        "not" => match cond(arg(0)?) {
            Some(b) => Value::Bool(!b),
            None => Value::Null,
        },
        "if" => match cond(arg(0)?) {
            Some(true) => arg(1)?,
            Some(false) => arg(2)?,
            None => Value::Null,
        },
        "present" => Value::Bool(!arg(0)?.is_null()),
        "sum_where" => {
            // [list of items, condition, value]: the items' fields are the variables.
            let Value::Array(items) = arg(0)? else {
                return Ok(Value::Null);
            };
            let (cond, value) = (
                args.get(1).ok_or("sum_where needs a condition")?,
                args.get(2).ok_or("sum_where needs a value")?,
            );
            let mut total = 0.0;
            for item in &items {
                let lookup = |name: &str| item.get(name).cloned();
                if eval(cond, &lookup)? == Value::Bool(true) {
                    total += num(&eval(value, &lookup)?).unwrap_or(0.0);
                }
            }
            number(total)
        }
        "days" => {
            let (a, b) = (arg(0)?, arg(1)?);
            match (
                a.as_str().and_then(day_number),
                b.as_str().and_then(day_number),
            ) {
                (Some(x), Some(y)) => json!(y - x),
                _ => Value::Null,
            }
        }
        "in" => {
            let (x, list) = (arg(0)?, arg(1)?);
            let list = match list {
                Value::Array(list) => list,
                Value::Null => return Ok(Value::Null),
                _ => return Err("in takes a list as its second argument".into()),
            };
            match x {
                Value::Null => Value::Null,
                Value::Array(items) => Value::Bool(items.iter().any(|i| list.contains(i))),
                x => Value::Bool(list.contains(&x)),
            }
        }
        "mod" => match (num(&arg(0)?), num(&arg(1)?)) {
            // XPath's `mod`: the remainder takes the sign of the dividend.
            (Some(x), Some(y)) if y != 0.0 => number(x % y),
            _ => Value::Null,
        },
        "selected_at" => {
            // The choice at place `n` (from 0) of a list of choices; empty text past its end.
            let codes: Vec<String> = match arg(0)? {
                Value::Array(items) => items.iter().map(text_of).collect(),
                v => text_of(&v).split_whitespace().map(str::to_owned).collect(),
            };
            match num(&arg(1)?) {
                Some(n) if n >= 0.0 => json!(codes.get(n as usize).cloned().unwrap_or_default()),
                _ => json!(""),
            }
        }
        "selected" => match (arg(0)?, arg(1)?) {
            (Value::Array(items), code) => Value::Bool(items.contains(&code)),
            (Value::String(s), Value::String(code)) => {
                Value::Bool(s.split_whitespace().any(|w| w == code))
            }
            _ => Value::Null,
        },
        "count_selected" => match arg(0)? {
            Value::Array(items) => json!(items.len()),
            Value::String(s) => json!(s.split_whitespace().count()),
            _ => json!(0),
        },
        "string_length" => json!(text_of(&arg(0)?).chars().count()),
        "contains" | "starts_with" | "ends_with" => {
            let (a, b) = (text_of(&arg(0)?), text_of(&arg(1)?));
            Value::Bool(match op {
                "contains" => a.contains(&b),
                "starts_with" => a.starts_with(&b),
                _ => a.ends_with(&b),
            })
        }
        "regex" => {
            let (a, p) = (arg(0)?, arg(1)?);
            match (a, p.as_str()) {
                (Value::Null, _) => Value::Null,
                (a, Some(p)) => {
                    let re = regex_lite::Regex::new(p)
                        .map_err(|e| format!("regex {p:?} does not compile: {e}"))?;
                    Value::Bool(re.is_match(&text_of(&a)))
                }
                _ => Value::Null,
            }
        }
        "concat" => Value::String(all()?.iter().map(text_of).collect()),
        "substr" => {
            // ODK's substr(s, start, end?): from `start` up to `end` (not included), from 0.
            let s: Vec<char> = text_of(&arg(0)?).chars().collect();
            let start = num(&arg(1)?).unwrap_or(0.0).max(0.0) as usize;
            let end = match args.get(2) {
                Some(_) => num(&arg(2)?).map_or(s.len(), |n| n.max(0.0) as usize),
                None => s.len(),
            };
            let from = start.min(s.len());
            let to = end.min(s.len()).max(from);
            Value::String(s[from..to].iter().collect())
        }
        "coalesce" => {
            let (a, b) = (arg(0)?, arg(1)?);
            if a.is_null() || a == json!("") {
                b
            } else {
                a
            }
        }
        "position" => var("@position").unwrap_or(Value::Null),
        "count" => match arg(0)? {
            Value::Array(items) => json!(items.len()),
            Value::Null => json!(0),
            Value::String(s) if s.is_empty() => json!(0),
            _ => json!(1),
        },
        "sum" | "max" | "min" => {
            let items = match arg(0)? {
                Value::Array(items) => items,
                Value::Null => Vec::new(),
                one => vec![one],
            };
            let numbers: Option<Vec<f64>> = items.iter().map(num).collect();
            match (op, numbers) {
                (_, None) => Value::Null,
                ("sum", Some(n)) => number(n.iter().sum()),
                (_, Some(n)) if n.is_empty() => Value::Null,
                ("max", Some(n)) => number(n.iter().copied().fold(f64::MIN, f64::max)),
                (_, Some(n)) => number(n.iter().copied().fold(f64::MAX, f64::min)),
            }
        }
        "indexed_repeat" => match (arg(0)?, num(&arg(1)?)) {
            (Value::Array(items), Some(n)) if n >= 1.0 => {
                items.get(n as usize - 1).cloned().unwrap_or(Value::Null)
            }
            _ => Value::Null,
        },
        "today" => match var("@today") {
            Some(Value::String(d)) => json!(d),
            _ => json!(crate::date::date_of_day(
                vietnam_ms().div_euclid(86_400_000)
            )),
        },
        "now" => match var("@now") {
            Some(Value::String(t)) => json!(t),
            _ => {
                let ms = vietnam_ms();
                let (day, s) = (ms.div_euclid(86_400_000), ms.rem_euclid(86_400_000) / 1000);
                json!(format!(
                    "{}T{:02}:{:02}:{:02}+07:00",
                    crate::date::date_of_day(day),
                    s / 3600,
                    s / 60 % 60,
                    s % 60
                ))
            }
        },
        "date" => match arg(0)? {
            Value::String(s) => match s.get(..10).filter(|d| day_number(d).is_some()) {
                Some(d) => json!(d),
                None => Value::Null,
            },
            v => match number_of(&v) {
                Some(x) => json!(crate::date::date_of_day(x.floor() as i64)),
                None => Value::Null,
            },
        },
        "decimal_date_time" => decimal_days(&arg(0)?).map_or(Value::Null, |x| json!(x)),
        "format_date" => {
            let (d, f) = (arg(0)?, arg(1)?);
            match (decimal_days(&d), f.as_str()) {
                (Some(days), Some(f)) => json!(format_date(days, &d, f)),
                _ => Value::Null,
            }
        }
        "int" => match number_of(&arg(0)?) {
            Some(x) => number(x.trunc()),
            None => Value::Null,
        },
        "number" => number_of(&arg(0)?).map_or(Value::Null, number),
        "round" => match (num(&arg(0)?), num(&arg(1)?)) {
            (Some(x), Some(d)) => {
                let f = 10f64.powi(d as i32);
                number((x * f).round() / f)
            }
            _ => Value::Null,
        },
        "who_z" => {
            // The first form's op: one score from one measure. Computed by today's rules.
            let values = all()?;
            if values.len() != 5 {
                return Err("who_z takes [indicator, sex, age_days, value, lying]".into());
            }
            let weight = match values[0].as_str() {
                Some("wfa") => true,
                Some("hfa") => false,
                _ => return Err("who_z indicator is \"wfa\" or \"hfa\"".into()),
            };
            let measure = num(&values[3]);
            let (kg, cm) = if weight {
                (measure, None)
            } else {
                (None, measure)
            };
            let score = if weight { Score::Waz } else { Score::Haz };
            growth_child(&values[1], &values[2], kg, cm, &values[4], &Value::Null)
                .and_then(|child| child.score(score))
                .map_or(Value::Null, |z| number(z.z))
        }
        "who" | "who_flag" => {
            let values = all()?;
            let score = values
                .first()
                .and_then(Value::as_str)
                .and_then(Score::from_name);
            let (Some(score), 7) = (score, values.len()) else {
                return Err(format!(
                    "{op} takes [\"waz\", \"haz\", \"whz\" or \"baz\", sex, age_days, weight_kg, lenhei_cm, measured_lying, oedema]"
                ));
            };
            let z = growth_child(
                &values[1],
                &values[2],
                num(&values[3]),
                num(&values[4]),
                &values[5],
                &values[6],
            )
            .and_then(|child| child.score(score));
            match (op, z) {
                (_, None) => Value::Null,
                ("who", Some(z)) => number(z.z),
                (_, Some(z)) => Value::Bool(z.flagged),
            }
        }
        other => return Err(format!("unknown operator {other:?}")),
    })
}

/// Milliseconds since 1970 on Việt Nam's clock (UTC+7): what `today()` and `now()` read
/// when the caller gives no `@today` / `@now`.
fn vietnam_ms() -> i64 {
    let utc = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64);
    utc + 7 * 3_600_000
}

/// A date or a date and time as days since 1970-01-01 (UTC), with the day's fraction: XPath's
/// `decimal-date-time()`. A date alone is its day; a time without an offset is UTC.
fn decimal_days(v: &Value) -> Option<f64> {
    let s = v.as_str()?;
    let day = day_number(s.get(..10)?)? as f64;
    let Some(time) = s.get(11..).filter(|_| s.as_bytes().get(10) == Some(&b'T')) else {
        return (s.len() == 10).then_some(day);
    };
    let (clock, offset) = match time.find(['Z', '+', '-']) {
        Some(i) => time.split_at(i),
        None => (time, ""),
    };
    let mut parts = clock.split(':');
    let mut next = || parts.next().and_then(|p| p.parse::<f64>().ok());
    let (h, m) = (next()?, next()?);
    let sec = next().unwrap_or(0.0);
    let shift = match offset {
        "" | "Z" => 0.0,
        o => {
            let sign = if o.starts_with('-') { -1.0 } else { 1.0 };
            let (oh, om) = o[1..].split_once(':').unwrap_or((&o[1..], "0"));
            sign * (oh.parse::<f64>().ok()? * 60.0 + om.parse::<f64>().ok()?)
        }
    };
    Some(day + (h * 3600.0 + m * 60.0 + sec - shift * 60.0) / 86_400.0)
}

/// XPath's `format-date(date, format)`: `%Y %y %m %n %d %e %b %a %H %M %S`, in the date's own
/// clock when it has a time.
fn format_date(days: f64, original: &Value, format: &str) -> String {
    const MONTHS: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    const WEEKDAYS: [&str; 7] = ["Thu", "Fri", "Sat", "Sun", "Mon", "Tue", "Wed"];
    let text = original.as_str().unwrap_or_default();
    let date = text.get(..10).unwrap_or_default();
    let (y, m, d) = crate::date::parse_date(date).unwrap_or((1970, 1, 1));
    let clock: Vec<u32> = text
        .get(11..19.min(text.len()))
        .unwrap_or_default()
        .split(':')
        .filter_map(|p| p.get(..2).and_then(|p| p.parse().ok()))
        .collect();
    let part = |i: usize| clock.get(i).copied().unwrap_or(0);
    let day = day_number(date).unwrap_or(days.floor() as i64);
    let mut out = String::new();
    let mut chars = format.chars();
    while let Some(c) = chars.next() {
        if c != '%' {
            out.push(c);
            continue;
        }
        match chars.next() {
            Some('Y') => out.push_str(&format!("{y:04}")),
            Some('y') => out.push_str(&format!("{:02}", y.rem_euclid(100))),
            Some('m') => out.push_str(&format!("{m:02}")),
            Some('n') => out.push_str(&m.to_string()),
            Some('d') => out.push_str(&format!("{d:02}")),
            Some('e') => out.push_str(&d.to_string()),
            Some('b') => out.push_str(MONTHS[(m as usize).saturating_sub(1) % 12]),
            Some('a') => out.push_str(WEEKDAYS[day.rem_euclid(7) as usize]),
            Some('H') => out.push_str(&format!("{:02}", part(0))),
            Some('M') => out.push_str(&format!("{:02}", part(1))),
            Some('S') => out.push_str(&format!("{:02}", part(2))),
            Some(other) => {
                out.push('%');
                out.push(other);
            }
            None => out.push('%'),
        }
    }
    out
}

/// The fields an expression reads.
pub fn vars(expr: &Value) -> Vec<String> {
    let mut out = Vec::new();
    collect(expr, &mut out);
    out
}

fn collect(expr: &Value, out: &mut Vec<String>) {
    match expr {
        Value::Object(map) => {
            for (k, v) in map {
                if k == "var" {
                    if let Some(name) = v.as_str() {
                        out.push(name.to_owned());
                    }
                } else {
                    collect(v, out);
                }
            }
        }
        Value::Array(items) => items.iter().for_each(|i| collect(i, out)),
        _ => {}
    }
}

/// Whole numbers stay integers in JSON.
/// A value as XPath reads it as text: a number without a needless `.0`, a boolean as
/// `true`/`false`, a list of codes space-separated, nothing as empty.
fn text_of(v: &Value) -> String {
    match v {
        Value::Null => String::new(),
        Value::String(s) => s.clone(),
        // As JavaScript writes numbers: a whole number without `.0`.
        Value::Number(n) => match n.as_f64() {
            Some(x) if x.fract() == 0.0 && x.abs() < 9e15 => (x as i64).to_string(),
            Some(x) => x.to_string(),
            None => n.to_string(),
        },
        Value::Bool(b) => b.to_string(),
        Value::Array(items) => items.iter().map(text_of).collect::<Vec<_>>().join(" "),
        Value::Object(_) => String::new(),
    }
}

/// A value as XPath's number(): numbers, numeric text, booleans as 1 and 0.
fn number_of(v: &Value) -> Option<f64> {
    match v {
        Value::Number(n) => n.as_f64(),
        Value::String(s) => s.trim().parse().ok().filter(|x: &f64| x.is_finite()),
        Value::Bool(b) => Some(if *b { 1.0 } else { 0.0 }),
        _ => None,
    }
}

/// A number as JSON: a whole number as an integer.
pub(crate) fn number(x: f64) -> Value {
    if x.fract() == 0.0 && x.abs() < 9e15 {
        json!(x as i64)
    } else {
        json!(x)
    }
}

/// The child a growth op's arguments describe; `None` without a sex or an age.
fn growth_child(
    sex: &Value,
    age: &Value,
    weight_kg: Option<f64>,
    lenhei_cm: Option<f64>,
    lying: &Value,
    oedema: &Value,
) -> Option<Child> {
    let sex = match sex {
        Value::String(s) if s == "m" => Sex::Boy,
        Value::String(s) if s == "f" => Sex::Girl,
        v if v.as_u64() == Some(1) => Sex::Boy,
        v if v.as_u64() == Some(2) => Sex::Girl,
        _ => return None,
    };
    Some(Child {
        sex,
        age_days: age.as_f64()?,
        weight_kg,
        lenhei_cm,
        position: lying.as_bool().map(|lying| {
            if lying {
                Position::Lying
            } else {
                Position::Standing
            }
        }),
        oedema: oedema.as_bool() == Some(true),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(expr: Value, vars: &[(&str, Value)]) -> Value {
        let lookup = |n: &str| vars.iter().find(|(k, _)| *k == n).map(|(_, v)| v.clone());
        eval(&expr, &lookup).unwrap()
    }

    #[test]
    fn dates_and_logic() {
        assert_eq!(day_number("1970-01-01"), Some(0));
        for d in ["2020-02-29", "2025-07-01", "1999-12-31"] {
            assert_eq!(date_of_day(day_number(d).unwrap()), d);
        }
        assert_eq!(
            day_number("2020-03-01").unwrap() - day_number("2020-02-28").unwrap(),
            2
        );
        let days = json!({"days": [{"var": "a"}, {"var": "b"}]});
        assert_eq!(
            run(
                days.clone(),
                &[("a", json!("2020-01-15")), ("b", json!("2020-03-15"))]
            ),
            json!(60)
        );
        assert_eq!(
            run(days, &[("a", json!("2020-01-15"))]),
            Value::Null,
            "missing input: unknown"
        );
        let rule =
            json!({"and": [{">=": [{"var": "d"}, 25]}, {">=": [{"var": "f"}, 90]}, {"var": "e"}]});
        assert_eq!(
            run(
                rule.clone(),
                &[("d", json!(25)), ("f", json!(90)), ("e", json!(true))]
            ),
            json!(true)
        );
        assert_eq!(
            run(rule.clone(), &[("d", json!(10))]),
            json!(false),
            "one false decides"
        );
        assert_eq!(
            run(rule, &[("d", json!(30))]),
            Value::Null,
            "otherwise unknown"
        );
        assert_eq!(
            run(
                json!({"in": [{"var": "w"}, ["a", "b"]]}),
                &[("w", json!(["c", "b"]))]
            ),
            json!(true)
        );
    }
}
