//! RocketMQ's SQL92 message selector (`MessageSelector.bySql`): the grammar of its
//! `rocketmq-filter` module, evaluated over a message's properties.
//!
//! - Comparisons `=`, `<>`, `>`, `>=`, `<`, `<=`; `[NOT] BETWEEN a AND b`;
//!   `[NOT] IN ('a', 'b')`; `IS [NOT] NULL`; `[NOT] CONTAINS`, `[NOT] STARTSWITH`,
//!   `[NOT] ENDSWITH` with a string; `AND`, `OR`, `NOT`, parentheses.
//! - Literals: strings in single quotes (`''` is a quote), integers (long), decimals
//!   and exponents (double), `TRUE`, `FALSE`, `NULL`. Keywords are case-insensitive.
//! - Identifiers (`[A-Za-z_$][A-Za-z0-9_$.]*`) name properties — user properties and
//!   system ones such as `TAGS` and `KEYS`. A property's value is a string; compared
//!   with a number it is read as one (as RocketMQ's selector converts strings), and
//!   if it is not a number the comparison is false.
//! - Three-valued logic as in SQL: a missing property makes a comparison unknown;
//!   a message matches only when the whole expression is true.

use std::cmp::Ordering;

/// A selector that failed to parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("Parse or compile expression failed: {reason} (at {position} in `{expression}`)")]
pub struct ParseError {
    /// What is wrong.
    pub reason: String,
    /// Byte offset in the expression.
    pub position: usize,
    /// The expression.
    pub expression: String,
}

/// A value during evaluation.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    /// A string (every property value, string literals).
    Str(String),
    /// An integer literal.
    Long(i64),
    /// A decimal literal.
    Double(f64),
    /// `TRUE` / `FALSE`.
    Bool(bool),
    /// `NULL`, a missing property.
    Null,
}

#[derive(Debug, Clone, PartialEq)]
enum Operand {
    Property(String),
    Literal(Value),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Cmp {
    Eq,
    Ne,
    Gt,
    Ge,
    Lt,
    Le,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum StrOp {
    Contains,
    StartsWith,
    EndsWith,
}

/// A parsed selector.
#[derive(Debug, Clone, PartialEq)]
pub struct Expr(Node);

#[derive(Debug, Clone, PartialEq)]
enum Node {
    And(Box<Node>, Box<Node>),
    Or(Box<Node>, Box<Node>),
    Not(Box<Node>),
    Compare(Operand, Cmp, Operand),
    /// `x [NOT] BETWEEN a AND b`.
    Between(Operand, Operand, Operand, bool),
    /// `x [NOT] IN (...)`.
    In(Operand, Vec<String>, bool),
    /// `x IS [NOT] NULL`.
    IsNull(Operand, bool),
    /// `x [NOT] CONTAINS|STARTSWITH|ENDSWITH 's'`.
    Str(Operand, StrOp, String, bool),
    /// A bare operand (`TRUE`, a boolean property).
    Operand(Operand),
}

#[derive(Debug, Clone, PartialEq)]
enum Tok {
    Ident(String),
    Str(String),
    Long(i64),
    Double(f64),
    Sym(&'static str),
    LParen,
    RParen,
    Comma,
}

fn lex(src: &str) -> Result<Vec<(usize, Tok)>, (String, usize)> {
    let b = src.as_bytes();
    let mut i = 0;
    let mut out = Vec::new();
    while i < b.len() {
        let c = b[i];
        let start = i;
        match c {
            b' ' | b'\t' | b'\r' | b'\n' => i += 1,
            b'(' => {
                out.push((start, Tok::LParen));
                i += 1;
            }
            b')' => {
                out.push((start, Tok::RParen));
                i += 1;
            }
            b',' => {
                out.push((start, Tok::Comma));
                i += 1;
            }
            b'=' => {
                out.push((start, Tok::Sym("=")));
                i += 1;
            }
            b'<' | b'>' => {
                let two = b.get(i + 1).copied();
                let sym = match (c, two) {
                    (b'<', Some(b'>')) => "<>",
                    (b'<', Some(b'=')) => "<=",
                    (b'>', Some(b'=')) => ">=",
                    (b'<', _) => "<",
                    _ => ">",
                };
                i += sym.len();
                out.push((start, Tok::Sym(sym)));
            }
            b'\'' => {
                let mut s = String::new();
                i += 1;
                loop {
                    let Some(rest) = src.get(i..) else {
                        return Err(("unterminated string".into(), start));
                    };
                    let Some(q) = rest.find('\'') else {
                        return Err(("unterminated string".into(), start));
                    };
                    s.push_str(&rest[..q]);
                    i += q + 1;
                    if b.get(i) == Some(&b'\'') {
                        s.push('\'');
                        i += 1;
                    } else {
                        break;
                    }
                }
                out.push((start, Tok::Str(s)));
            }
            b'0'..=b'9' | b'.' => {
                while i < b.len()
                    && (b[i].is_ascii_alphanumeric()
                        || b[i] == b'.'
                        || ((b[i] == b'+' || b[i] == b'-') && matches!(b[i - 1], b'e' | b'E')))
                {
                    i += 1;
                }
                let text = &src[start..i];
                let t = text.trim_end_matches(['l', 'L']);
                if let Ok(v) = t.parse::<i64>() {
                    out.push((start, Tok::Long(v)));
                } else if let Some(v) = t
                    .strip_prefix("0x")
                    .or_else(|| t.strip_prefix("0X"))
                    .and_then(|h| i64::from_str_radix(h, 16).ok())
                {
                    out.push((start, Tok::Long(v)));
                } else {
                    match text.trim_end_matches(['d', 'D', 'f', 'F']).parse::<f64>() {
                        Ok(v) if v.is_finite() => out.push((start, Tok::Double(v))),
                        _ => return Err((format!("`{text}` is not a number"), start)),
                    }
                }
            }
            c if c.is_ascii_alphabetic() || c == b'_' || c == b'$' => {
                while i < b.len()
                    && (b[i].is_ascii_alphanumeric() || matches!(b[i], b'_' | b'$' | b'.'))
                {
                    i += 1;
                }
                out.push((start, Tok::Ident(src[start..i].to_owned())));
            }
            b'-' | b'+' => {
                out.push((start, Tok::Sym(if c == b'-' { "-" } else { "+" })));
                i += 1;
            }
            _ => {
                let ch = src[i..].chars().next().unwrap_or('?');
                return Err((format!("unexpected character `{ch}`"), start));
            }
        }
    }
    Ok(out)
}

struct Parser<'a> {
    toks: Vec<(usize, Tok)>,
    pos: usize,
    src: &'a str,
}

fn is_kw(t: Option<&Tok>, kw: &str) -> bool {
    matches!(t, Some(Tok::Ident(s)) if s.eq_ignore_ascii_case(kw))
}

const KEYWORDS: &[&str] = &[
    "AND",
    "OR",
    "NOT",
    "BETWEEN",
    "IN",
    "IS",
    "NULL",
    "TRUE",
    "FALSE",
    "CONTAINS",
    "STARTSWITH",
    "ENDSWITH",
];

impl Parser<'_> {
    fn peek(&self) -> Option<&Tok> {
        self.toks.get(self.pos).map(|(_, t)| t)
    }

    fn peek_at(&self, n: usize) -> Option<&Tok> {
        self.toks.get(self.pos + n).map(|(_, t)| t)
    }

    fn here(&self) -> usize {
        self.toks.get(self.pos).map_or(self.src.len(), |(p, _)| *p)
    }

    fn err<T>(&self, reason: impl Into<String>) -> Result<T, ParseError> {
        Err(ParseError {
            reason: reason.into(),
            position: self.here(),
            expression: self.src.to_owned(),
        })
    }

    fn eat_kw(&mut self, kw: &str) -> bool {
        if is_kw(self.peek(), kw) {
            self.pos += 1;
            true
        } else {
            false
        }
    }

    fn expect_kw(&mut self, kw: &str) -> Result<(), ParseError> {
        if self.eat_kw(kw) {
            Ok(())
        } else {
            self.err(format!("expected {kw}"))
        }
    }

    fn or(&mut self) -> Result<Node, ParseError> {
        let mut left = self.and()?;
        while self.eat_kw("OR") {
            let right = self.and()?;
            left = Node::Or(Box::new(left), Box::new(right));
        }
        Ok(left)
    }

    fn and(&mut self) -> Result<Node, ParseError> {
        let mut left = self.not()?;
        while self.eat_kw("AND") {
            let right = self.not()?;
            left = Node::And(Box::new(left), Box::new(right));
        }
        Ok(left)
    }

    fn not(&mut self) -> Result<Node, ParseError> {
        if self.eat_kw("NOT") {
            return Ok(Node::Not(Box::new(self.not()?)));
        }
        self.predicate()
    }

    fn string(&mut self) -> Result<String, ParseError> {
        match self.peek().cloned() {
            Some(Tok::Str(s)) => {
                self.pos += 1;
                Ok(s)
            }
            _ => self.err("expected a string literal"),
        }
    }

    fn operand(&mut self) -> Result<Operand, ParseError> {
        let sign = match self.peek() {
            Some(Tok::Sym("-")) => {
                self.pos += 1;
                -1
            }
            Some(Tok::Sym("+")) => {
                self.pos += 1;
                1
            }
            _ => 0,
        };
        let t = self.peek().cloned();
        let op = match t {
            Some(Tok::Long(v)) => Operand::Literal(Value::Long(if sign < 0 { -v } else { v })),
            Some(Tok::Double(v)) => Operand::Literal(Value::Double(if sign < 0 { -v } else { v })),
            _ if sign != 0 => return self.err("expected a number after the sign"),
            Some(Tok::Str(s)) => Operand::Literal(Value::Str(s)),
            Some(Tok::Ident(s)) if s.eq_ignore_ascii_case("TRUE") => {
                Operand::Literal(Value::Bool(true))
            }
            Some(Tok::Ident(s)) if s.eq_ignore_ascii_case("FALSE") => {
                Operand::Literal(Value::Bool(false))
            }
            Some(Tok::Ident(s)) if s.eq_ignore_ascii_case("NULL") => Operand::Literal(Value::Null),
            Some(Tok::Ident(s)) if KEYWORDS.iter().any(|k| s.eq_ignore_ascii_case(k)) => {
                return self.err(format!("unexpected keyword {s}"))
            }
            Some(Tok::Ident(s)) => Operand::Property(s),
            _ => return self.err("expected a property, a literal or `(`"),
        };
        self.pos += 1;
        Ok(op)
    }

    fn predicate(&mut self) -> Result<Node, ParseError> {
        if self.peek() == Some(&Tok::LParen) {
            self.pos += 1;
            let e = self.or()?;
            if self.peek() != Some(&Tok::RParen) {
                return self.err("expected `)`");
            }
            self.pos += 1;
            return Ok(e);
        }
        let left = self.operand()?;
        if let Some(Tok::Sym(s)) = self.peek() {
            let cmp = match *s {
                "=" => Cmp::Eq,
                "<>" => Cmp::Ne,
                ">" => Cmp::Gt,
                ">=" => Cmp::Ge,
                "<" => Cmp::Lt,
                "<=" => Cmp::Le,
                _ => return self.err(format!("unexpected `{s}`")),
            };
            self.pos += 1;
            let right = self.operand()?;
            let null = |o: &Operand| matches!(o, Operand::Literal(Value::Null));
            if null(&left) || null(&right) {
                return self.err("NULL cannot be compared; use IS NULL");
            }
            if !matches!(cmp, Cmp::Eq | Cmp::Ne) {
                for o in [&left, &right] {
                    if let Operand::Literal(v) = o {
                        if !matches!(v, Value::Long(_) | Value::Double(_)) {
                            return self.err("only numbers can be compared with <, <=, >, >=");
                        }
                    }
                }
            }
            return Ok(Node::Compare(left, cmp, right));
        }
        let negated = is_kw(self.peek(), "NOT")
            && (is_kw(self.peek_at(1), "BETWEEN")
                || is_kw(self.peek_at(1), "IN")
                || is_kw(self.peek_at(1), "CONTAINS")
                || is_kw(self.peek_at(1), "STARTSWITH")
                || is_kw(self.peek_at(1), "ENDSWITH"));
        if negated {
            self.pos += 1;
        }
        if self.eat_kw("BETWEEN") {
            let lo = self.operand()?;
            self.expect_kw("AND")?;
            let hi = self.operand()?;
            for o in [&lo, &hi] {
                if !matches!(
                    o,
                    Operand::Literal(Value::Long(_) | Value::Double(_)) | Operand::Property(_)
                ) {
                    return self.err("BETWEEN takes numbers");
                }
            }
            return Ok(Node::Between(left, lo, hi, negated));
        }
        if self.eat_kw("IN") {
            if self.peek() != Some(&Tok::LParen) {
                return self.err("expected `(` after IN");
            }
            self.pos += 1;
            let mut items = vec![self.string()?];
            while self.peek() == Some(&Tok::Comma) {
                self.pos += 1;
                items.push(self.string()?);
            }
            if self.peek() != Some(&Tok::RParen) {
                return self.err("expected `)`");
            }
            self.pos += 1;
            return Ok(Node::In(left, items, negated));
        }
        for (kw, op) in [
            ("CONTAINS", StrOp::Contains),
            ("STARTSWITH", StrOp::StartsWith),
            ("ENDSWITH", StrOp::EndsWith),
        ] {
            if self.eat_kw(kw) {
                let s = self.string()?;
                return Ok(Node::Str(left, op, s, negated));
            }
        }
        if negated {
            return self.err("expected BETWEEN, IN, CONTAINS, STARTSWITH or ENDSWITH");
        }
        if self.eat_kw("IS") {
            let not = self.eat_kw("NOT");
            self.expect_kw("NULL")?;
            return Ok(Node::IsNull(left, not));
        }
        match left {
            Operand::Literal(Value::Bool(_)) | Operand::Property(_) => Ok(Node::Operand(left)),
            _ => self.err("expected a comparison"),
        }
    }
}

/// Parses a selector.
///
/// # Errors
/// [`ParseError`] naming what is wrong and where.
pub fn parse(src: &str) -> Result<Expr, ParseError> {
    let toks = lex(src).map_err(|(reason, position)| ParseError {
        reason,
        position,
        expression: src.to_owned(),
    })?;
    let mut p = Parser { toks, pos: 0, src };
    if p.peek().is_none() {
        return p.err("empty expression");
    }
    let e = p.or()?;
    if p.peek().is_some() {
        return p.err("unexpected input after the expression");
    }
    Ok(Expr(e))
}

fn value_of<'a>(o: &Operand, get: &impl Fn(&str) -> Option<&'a str>) -> Value {
    match o {
        Operand::Literal(v) => v.clone(),
        Operand::Property(name) => get(name).map_or(Value::Null, |v| Value::Str(v.to_owned())),
    }
}

fn num(v: &Value) -> Option<f64> {
    match v {
        Value::Long(l) => Some(*l as f64),
        Value::Double(d) => Some(*d),
        Value::Str(s) => s.trim().parse::<f64>().ok().filter(|d| d.is_finite()),
        _ => None,
    }
}

/// Orders two values: `None` when they cannot be compared (the comparison is false).
fn order(l: &Value, r: &Value) -> Option<Ordering> {
    match (l, r) {
        (Value::Str(a), Value::Str(b)) => Some(a.cmp(b)),
        (Value::Long(a), Value::Long(b)) => Some(a.cmp(b)),
        (Value::Bool(a), Value::Bool(b)) => Some(a.cmp(b)),
        (Value::Bool(a), Value::Str(s)) | (Value::Str(s), Value::Bool(a)) => {
            let b = s.trim().eq_ignore_ascii_case("true");
            let parsed = s.trim().eq_ignore_ascii_case("false") || b;
            if !parsed {
                return None;
            }
            let (x, y) = if matches!(l, Value::Bool(_)) {
                (*a, b)
            } else {
                (b, *a)
            };
            Some(x.cmp(&y))
        }
        (Value::Str(s), Value::Long(n)) | (Value::Long(n), Value::Str(s))
            if s.trim().parse::<i64>().is_ok() =>
        {
            let v = s.trim().parse::<i64>().ok()?;
            Some(if matches!(l, Value::Str(_)) {
                v.cmp(n)
            } else {
                n.cmp(&v)
            })
        }
        _ => num(l)?.partial_cmp(&num(r)?),
    }
}

/// Three-valued evaluation; `get` looks a property up.
fn eval<'a>(e: &Node, get: &impl Fn(&str) -> Option<&'a str>) -> Option<bool> {
    match e {
        Node::And(a, b) => match (eval(a, get), eval(b, get)) {
            (Some(false), _) | (_, Some(false)) => Some(false),
            (Some(true), Some(true)) => Some(true),
            _ => None,
        },
        Node::Or(a, b) => match (eval(a, get), eval(b, get)) {
            (Some(true), _) | (_, Some(true)) => Some(true),
            (Some(false), Some(false)) => Some(false),
            _ => None,
        },
        Node::Not(a) => eval(a, get).map(|v| !v),
        Node::Compare(l, cmp, r) => {
            let (lv, rv) = (value_of(l, get), value_of(r, get));
            if lv == Value::Null || rv == Value::Null {
                return None;
            }
            let o = order(&lv, &rv);
            Some(match cmp {
                Cmp::Eq => o == Some(Ordering::Equal),
                Cmp::Ne => o != Some(Ordering::Equal),
                Cmp::Gt => o == Some(Ordering::Greater),
                Cmp::Ge => matches!(o, Some(Ordering::Greater | Ordering::Equal)),
                Cmp::Lt => o == Some(Ordering::Less),
                Cmp::Le => matches!(o, Some(Ordering::Less | Ordering::Equal)),
            })
        }
        Node::Between(x, lo, hi, negated) => {
            let (v, a, b) = (value_of(x, get), value_of(lo, get), value_of(hi, get));
            if v == Value::Null || a == Value::Null || b == Value::Null {
                return None;
            }
            let inside = matches!(order(&v, &a), Some(Ordering::Greater | Ordering::Equal))
                && matches!(order(&v, &b), Some(Ordering::Less | Ordering::Equal));
            Some(inside != *negated)
        }
        Node::In(x, items, negated) => match value_of(x, get) {
            Value::Str(s) => Some(items.contains(&s) != *negated),
            _ => None,
        },
        Node::IsNull(x, not) => Some((value_of(x, get) == Value::Null) != *not),
        Node::Str(x, op, s, negated) => match value_of(x, get) {
            Value::Str(v) => {
                let hit = match op {
                    StrOp::Contains => v.contains(s.as_str()),
                    StrOp::StartsWith => v.starts_with(s.as_str()),
                    StrOp::EndsWith => v.ends_with(s.as_str()),
                };
                Some(hit != *negated)
            }
            _ => None,
        },
        Node::Operand(x) => match value_of(x, get) {
            Value::Bool(b) => Some(b),
            Value::Str(s) if s.eq_ignore_ascii_case("true") => Some(true),
            Value::Str(s) if s.eq_ignore_ascii_case("false") => Some(false),
            _ => None,
        },
    }
}

impl Expr {
    /// Whether a message whose properties `get` looks up is selected (the expression
    /// is true; unknown counts as not selected).
    pub fn matches<'a>(&self, get: impl Fn(&str) -> Option<&'a str>) -> bool {
        eval(&self.0, &get) == Some(true)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn sel(expr: &str, props: &[(&str, &str)]) -> bool {
        let m: HashMap<&str, &str> = props.iter().copied().collect();
        parse(expr)
            .unwrap_or_else(|e| panic!("{expr}: {e}"))
            .matches(|k| m.get(k).copied())
    }

    #[test]
    fn the_grammar_rocketmq_documents() {
        let p = [
            ("a", "5"),
            ("b", "abc"),
            ("TAGS", "TagA"),
            ("f", "1.5"),
            ("t", "true"),
        ];
        for (expr, want) in [
            ("a > 3", true),
            ("a >= 5 AND a <= 5", true),
            ("a < 5", false),
            ("a = 5", true),
            ("a <> 5", false),
            ("a BETWEEN 0 AND 5", true),
            ("a between 6 and 9", false),
            ("a NOT BETWEEN 6 AND 9", true),
            ("b = 'abc'", true),
            ("b <> 'abd'", true),
            ("b IN ('x', 'abc')", true),
            ("b NOT IN ('x', 'abc')", false),
            ("TAGS IN ('TagA', 'TagB')", true),
            ("TAGS is not null and TAGS in ('TagB')", false),
            ("c IS NULL", true),
            ("c IS NOT NULL", false),
            ("b IS NOT NULL AND (a > 10 OR b = 'abc')", true),
            ("NOT a > 3", false),
            ("f > 1.2", true),
            ("f < 1.2e0", false),
            ("a > -1", true),
            ("t = TRUE", true),
            ("t", true),
            ("b CONTAINS 'bc'", true),
            ("b STARTSWITH 'ab' AND b ENDSWITH 'c'", true),
            ("b NOT CONTAINS 'z'", true),
            ("TRUE", true),
            ("FALSE OR a = 5", true),
        ] {
            assert_eq!(sel(expr, &p), want, "{expr}");
        }
    }

    #[test]
    fn unknown_is_not_selected() {
        // A missing property: the comparison is unknown, so is its negation.
        assert!(!sel("c > 1", &[]));
        assert!(!sel("NOT c > 1", &[]));
        assert!(!sel("c = 'x'", &[]));
        assert!(!sel("c <> 'x'", &[]));
        assert!(sel("c > 1 OR TRUE", &[]));
        assert!(!sel("c > 1 AND TRUE", &[]));
        // Not a number: false, never an error.
        assert!(!sel("b > 1", &[("b", "abc")]));
        assert!(sel("NOT b > 1", &[("b", "abc")]));
    }

    #[test]
    fn bad_selectors_are_refused_with_a_position() {
        for (expr, at) in [
            ("", 0),
            ("a >", 3),
            ("a > 'x'", 7),
            ("a = NULL", 8),
            ("(a > 1", 6),
            ("a > 1 b", 6),
            ("a IN (1)", 6),
            ("'open", 0),
            ("a # 1", 2),
            ("a BETWEEN 1", 11),
            ("AND", 0),
        ] {
            let e = parse(expr).expect_err(expr);
            assert_eq!(e.position, at, "{expr}: {e}");
            assert!(e
                .to_string()
                .starts_with("Parse or compile expression failed"));
        }
    }

    #[test]
    fn quotes_and_case() {
        assert!(sel("b = 'it''s'", &[("b", "it's")]));
        assert!(sel("a > 1 and b = 'x' OR FALSE", &[("a", "2"), ("b", "x")]));
        assert!(sel("a = 10", &[("a", "10")]));
        assert!(sel("a = 10.0", &[("a", "10")]));
    }
}
