//! GitLab's `rules:if` / `only:variables` expression language.
//!
//! ```text
//! expr    = and ( "||" and )*
//! and     = primary ( "&&" primary )*
//! primary = "(" expr ")" | operand ( ( "==" | "!=" ) operand | ( "=~" | "!~" ) operand )?
//! operand = $VAR | ${VAR} | "string" | 'string' | null | /regex/flags
//! ```
//!
//! A bare operand is true when it is a non-empty string (a variable that is defined and not
//! empty). Regexes use RE2 syntax (the `regex` crate), unanchored, flags `i`, `m`, `s`.

use std::fmt;

use regex::{Regex, RegexBuilder};

/// A parsed expression.
#[derive(Debug, Clone)]
pub struct Expr {
    source: String,
    root: Node,
}

#[derive(Debug, Clone)]
enum Node {
    // Flat lists, not left-deep pairs: a long `a && b && ...` chain must not make evaluation
    // (or dropping the tree) recurse once per operator.
    Or(Vec<Node>),
    And(Vec<Node>),
    Cmp(Operand, Op, Operand),
    Bare(Operand),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Op {
    Eq,
    Ne,
    Match,
    NoMatch,
}

#[derive(Debug, Clone)]
enum Operand {
    Var(String),
    Str(String),
    Null,
    Regex(Box<Regex>),
}

/// Why an expression does not parse.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExprError {
    /// 1-based column (in characters) where the problem is.
    pub column: usize,
    /// What was expected.
    pub message: String,
}

impl fmt::Display for ExprError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} at column {}", self.message, self.column)
    }
}

#[derive(Debug, Clone)]
enum Tok {
    Var(String),
    Str(String),
    Null,
    Regex(String, String),
    Op(Op),
    And,
    Or,
    LParen,
    RParen,
}

fn describe(t: &Tok) -> String {
    match t {
        Tok::Var(v) => format!("${v}"),
        Tok::Str(s) => format!("{s:?}"),
        Tok::Null => "null".into(),
        Tok::Regex(p, f) => format!("/{p}/{f}"),
        Tok::Op(Op::Eq) => "==".into(),
        Tok::Op(Op::Ne) => "!=".into(),
        Tok::Op(Op::Match) => "=~".into(),
        Tok::Op(Op::NoMatch) => "!~".into(),
        Tok::And => "&&".into(),
        Tok::Or => "||".into(),
        Tok::LParen => "(".into(),
        Tok::RParen => ")".into(),
    }
}

fn err(column: usize, message: impl Into<String>) -> ExprError {
    ExprError {
        column,
        message: message.into(),
    }
}

fn is_name(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '_'
}

fn lex(src: &str) -> Result<Vec<(usize, Tok)>, ExprError> {
    let chars: Vec<char> = src.chars().collect();
    let mut out = Vec::new();
    let mut i = 0;
    // A `/` starts a regex only where an operand is expected.
    let operand_expected = |out: &Vec<(usize, Tok)>| {
        matches!(
            out.last(),
            None | Some((_, Tok::Op(_) | Tok::And | Tok::Or | Tok::LParen))
        )
    };
    while i < chars.len() {
        let c = chars[i];
        let col = i + 1;
        let two: String = chars[i..chars.len().min(i + 2)].iter().collect();
        match c {
            ' ' | '\t' | '\n' | '\r' => i += 1,
            '(' => {
                out.push((col, Tok::LParen));
                i += 1;
            }
            ')' => {
                out.push((col, Tok::RParen));
                i += 1;
            }
            '$' => {
                if chars.get(i + 1) == Some(&'{') {
                    let end = chars[i + 2..]
                        .iter()
                        .position(|&c| c == '}')
                        .map(|p| p + i + 2);
                    let Some(end) = end else {
                        return Err(err(col, "unclosed ${"));
                    };
                    let name: String = chars[i + 2..end].iter().collect();
                    if name.is_empty() || !name.chars().all(is_name) {
                        return Err(err(col, format!("invalid variable name {name:?}")));
                    }
                    out.push((col, Tok::Var(name)));
                    i = end + 1;
                } else {
                    let mut j = i + 1;
                    while j < chars.len() && is_name(chars[j]) {
                        j += 1;
                    }
                    if j == i + 1 {
                        return Err(err(col, "expected a variable name after $"));
                    }
                    out.push((col, Tok::Var(chars[i + 1..j].iter().collect())));
                    i = j;
                }
            }
            '"' | '\'' => {
                let end = chars[i + 1..]
                    .iter()
                    .position(|&x| x == c)
                    .map(|p| p + i + 1);
                let Some(end) = end else {
                    return Err(err(col, "unclosed string"));
                };
                out.push((col, Tok::Str(chars[i + 1..end].iter().collect())));
                i = end + 1;
            }
            '/' if operand_expected(&out) => {
                let mut j = i + 1;
                let mut pat = String::new();
                loop {
                    match chars.get(j) {
                        None => return Err(err(col, "unclosed regex")),
                        Some('\\') if chars.get(j + 1) == Some(&'/') => {
                            pat.push('/');
                            j += 2;
                        }
                        Some('\\') => {
                            pat.push('\\');
                            if let Some(&n) = chars.get(j + 1) {
                                pat.push(n);
                            }
                            j += 2;
                        }
                        Some('/') => break,
                        Some(&x) => {
                            pat.push(x);
                            j += 1;
                        }
                    }
                }
                j += 1;
                let mut flags = String::new();
                while j < chars.len() && chars[j].is_ascii_alphabetic() {
                    flags.push(chars[j]);
                    j += 1;
                }
                out.push((col, Tok::Regex(pat, flags)));
                i = j;
            }
            _ if two == "==" => {
                out.push((col, Tok::Op(Op::Eq)));
                i += 2;
            }
            _ if two == "!=" => {
                out.push((col, Tok::Op(Op::Ne)));
                i += 2;
            }
            _ if two == "=~" => {
                out.push((col, Tok::Op(Op::Match)));
                i += 2;
            }
            _ if two == "!~" => {
                out.push((col, Tok::Op(Op::NoMatch)));
                i += 2;
            }
            _ if two == "&&" => {
                out.push((col, Tok::And));
                i += 2;
            }
            _ if two == "||" => {
                out.push((col, Tok::Or));
                i += 2;
            }
            _ if chars[i..].starts_with(&['n', 'u', 'l', 'l'])
                && !chars.get(i + 4).is_some_and(|&c| is_name(c)) =>
            {
                out.push((col, Tok::Null));
                i += 4;
            }
            _ => return Err(err(col, format!("unexpected {c:?}"))),
        }
    }
    Ok(out)
}

fn compile_regex(pattern: &str, flags: &str) -> Result<Regex, String> {
    let mut b = RegexBuilder::new(pattern);
    for f in flags.chars() {
        match f {
            'i' => b.case_insensitive(true),
            'm' => b.multi_line(true),
            's' => b.dot_matches_new_line(true),
            'x' => b.ignore_whitespace(true),
            other => return Err(format!("unknown regex flag {other:?}")),
        };
    }
    b.size_limit(1 << 20)
        .build()
        .map_err(|e| format!("invalid regex /{pattern}/: {e}"))
}

struct P {
    toks: Vec<(usize, Tok)>,
    pos: usize,
    end: usize,
    depth: usize,
}

impl P {
    fn peek(&self) -> Option<&Tok> {
        self.toks.get(self.pos).map(|(_, t)| t)
    }

    fn col(&self) -> usize {
        self.toks.get(self.pos).map_or(self.end, |(c, _)| *c)
    }

    fn or(&mut self) -> Result<Node, ExprError> {
        let first = self.and()?;
        if !matches!(self.peek(), Some(Tok::Or)) {
            return Ok(first);
        }
        let mut items = vec![first];
        while matches!(self.peek(), Some(Tok::Or)) {
            self.pos += 1;
            items.push(self.and()?);
        }
        Ok(Node::Or(items))
    }

    fn and(&mut self) -> Result<Node, ExprError> {
        let first = self.primary()?;
        if !matches!(self.peek(), Some(Tok::And)) {
            return Ok(first);
        }
        let mut items = vec![first];
        while matches!(self.peek(), Some(Tok::And)) {
            self.pos += 1;
            items.push(self.primary()?);
        }
        Ok(Node::And(items))
    }

    fn primary(&mut self) -> Result<Node, ExprError> {
        if matches!(self.peek(), Some(Tok::LParen)) {
            self.depth += 1;
            if self.depth > 64 {
                return Err(err(self.col(), "expression nested too deeply"));
            }
            self.pos += 1;
            let inner = self.or()?;
            if !matches!(self.peek(), Some(Tok::RParen)) {
                return Err(err(self.col(), "expected )"));
            }
            self.pos += 1;
            self.depth -= 1;
            return Ok(inner);
        }
        let left = self.operand()?;
        match self.peek() {
            Some(Tok::Op(op)) => {
                let op = *op;
                self.pos += 1;
                let right = self.operand()?;
                if matches!(op, Op::Eq | Op::Ne) && matches!(right, Operand::Regex(_)) {
                    return Err(err(
                        self.toks[self.pos - 1].0,
                        "a regex can only be used with =~ or !~",
                    ));
                }
                if matches!(op, Op::Match | Op::NoMatch)
                    && matches!(right, Operand::Str(_) | Operand::Null)
                {
                    return Err(err(
                        self.toks[self.pos - 1].0,
                        "expected a /regex/ or a variable after =~ or !~",
                    ));
                }
                Ok(Node::Cmp(left, op, right))
            }
            _ => Ok(Node::Bare(left)),
        }
    }

    fn operand(&mut self) -> Result<Operand, ExprError> {
        let col = self.col();
        let Some((_, tok)) = self.toks.get(self.pos).cloned() else {
            return Err(err(col, "expected a value"));
        };
        self.pos += 1;
        Ok(match tok {
            Tok::Var(v) => Operand::Var(v),
            Tok::Str(s) => Operand::Str(s),
            Tok::Null => Operand::Null,
            Tok::Regex(p, f) => {
                Operand::Regex(Box::new(compile_regex(&p, &f).map_err(|m| err(col, m))?))
            }
            other => {
                return Err(err(
                    col,
                    format!("expected a value, found {}", describe(&other)),
                ));
            }
        })
    }
}

/// Variable values an expression is evaluated against.
pub trait Lookup {
    /// The value of `name`, `None` when it is not defined.
    fn get(&self, name: &str) -> Option<&str>;
}

impl<S: std::hash::BuildHasher> Lookup for std::collections::HashMap<String, String, S> {
    fn get(&self, name: &str) -> Option<&str> {
        std::collections::HashMap::get(self, name).map(String::as_str)
    }
}

impl Lookup for indexmap::IndexMap<String, String> {
    fn get(&self, name: &str) -> Option<&str> {
        indexmap::IndexMap::get(self, name).map(String::as_str)
    }
}

impl Expr {
    /// Parses an expression.
    ///
    /// # Errors
    /// Where and why it does not parse.
    pub fn parse(source: &str) -> Result<Self, ExprError> {
        let toks = lex(source)?;
        let end = source.chars().count() + 1;
        let mut p = P {
            toks,
            pos: 0,
            end,
            depth: 0,
        };
        if p.toks.is_empty() {
            return Err(err(1, "empty expression"));
        }
        let root = p.or()?;
        if let Some((col, t)) = p.toks.get(p.pos) {
            return Err(err(*col, format!("unexpected {}", describe(t))));
        }
        Ok(Self {
            source: source.to_owned(),
            root,
        })
    }

    /// The text it was parsed from.
    pub fn source(&self) -> &str {
        &self.source
    }

    /// Evaluates against `vars`.
    pub fn eval(&self, vars: &dyn Lookup) -> bool {
        eval(&self.root, vars)
    }
}

enum Val<'a> {
    Str(std::borrow::Cow<'a, str>),
    Null,
    Regex(&'a Regex),
}

fn value<'a>(o: &'a Operand, vars: &'a dyn Lookup) -> Val<'a> {
    match o {
        Operand::Var(v) => vars.get(v).map_or(Val::Null, |s| Val::Str(s.into())),
        Operand::Str(s) => Val::Str(s.as_str().into()),
        Operand::Null => Val::Null,
        Operand::Regex(r) => Val::Regex(r),
    }
}

fn eval(n: &Node, vars: &dyn Lookup) -> bool {
    match n {
        Node::Or(items) => items.iter().any(|n| eval(n, vars)),
        Node::And(items) => items.iter().all(|n| eval(n, vars)),
        Node::Bare(o) => match value(o, vars) {
            Val::Str(s) => !s.is_empty(),
            Val::Null => false,
            Val::Regex(_) => true,
        },
        Node::Cmp(l, op, r) => {
            let (l, r) = (value(l, vars), value(r, vars));
            match op {
                Op::Eq | Op::Ne => {
                    let eq = match (&l, &r) {
                        (Val::Null, Val::Null) => true,
                        (Val::Str(a), Val::Str(b)) => a == b,
                        _ => false,
                    };
                    eq == (*op == Op::Eq)
                }
                Op::Match | Op::NoMatch => {
                    let matched = match (&l, &r) {
                        (Val::Str(s), Val::Regex(re)) => re.is_match(s),
                        (Val::Str(s), Val::Str(pat)) => {
                            regex_from_text(pat).is_some_and(|re| re.is_match(s))
                        }
                        _ => false,
                    };
                    matched == (*op == Op::Match)
                }
            }
        }
    }
}

/// A variable whose value is `/pattern/flags`, used on the right of `=~`.
fn regex_from_text(text: &str) -> Option<Regex> {
    let rest = text.strip_prefix('/')?;
    let end = rest.rfind('/')?;
    compile_regex(&rest[..end], &rest[end + 1..]).ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn vars() -> HashMap<String, String> {
        [
            ("BRANCH", "main"),
            ("EMPTY", ""),
            ("TAG", "v1.2.3"),
            ("OTHER", "main"),
            ("RE", "/^ma/"),
            ("PATH_V", "a/b"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect()
    }

    #[test]
    fn evaluation_table() {
        let cases: &[(&str, bool)] = &[
            ("$BRANCH", true),
            ("$EMPTY", false),
            ("$UNDEFINED", false),
            ("${BRANCH}", true),
            ("$BRANCH == 'main'", true),
            ("$BRANCH == \"main\"", true),
            ("$BRANCH != 'main'", false),
            ("$UNDEFINED == null", true),
            ("$EMPTY == null", false),
            ("$EMPTY == ''", true),
            ("$BRANCH != null", true),
            ("null == $UNDEFINED", true),
            ("$BRANCH == $OTHER", true),
            ("$BRANCH != $TAG", true),
            ("$TAG =~ /^v\\d+\\.\\d+/", true),
            ("$TAG !~ /^v\\d+/", false),
            ("$BRANCH =~ /MAIN/i", true),
            ("$BRANCH =~ /MAIN/", false),
            ("$UNDEFINED =~ /x/", false),
            ("$UNDEFINED !~ /x/", true),
            ("$BRANCH =~ $RE", true),
            ("$PATH_V =~ /a\\/b/", true),
            ("$BRANCH == 'x' || $TAG", true),
            ("$BRANCH == 'x' || $TAG && $EMPTY", false),
            ("$BRANCH || $TAG && $EMPTY", true),
            ("($BRANCH || $TAG) && $EMPTY", false),
            (
                "$BRANCH == 'main' && ($TAG == 'x' || $OTHER == 'main')",
                true,
            ),
            ("'literal'", true),
            ("''", false),
            ("null", false),
            ("$BRANCH=='main'&&$TAG", true),
        ];
        let v = vars();
        for (src, want) in cases {
            let e = Expr::parse(src).unwrap_or_else(|e| panic!("{src}: {e}"));
            assert_eq!(e.eval(&v), *want, "{src}");
        }
    }

    #[test]
    fn error_table() {
        let cases: &[(&str, &str)] = &[
            ("", "empty expression at column 1"),
            ("$A ==", "expected a value at column 6"),
            ("$A == 'x", "unclosed string at column 7"),
            ("$A == 'x' &&", "expected a value at column 13"),
            ("($A == 'x'", "expected ) at column 11"),
            ("$A 'x'", "unexpected \"x\" at column 4"),
            ("$A = 'x'", "unexpected '=' at column 4"),
            (
                "$A =~ /(/",
                "invalid regex /(/: regex parse error:\n    (\n    ^\nerror: unclosed group at column 7",
            ),
            ("$A =~ /x/q", "unknown regex flag 'q' at column 7"),
            (
                "$A == /x/",
                "a regex can only be used with =~ or !~ at column 7",
            ),
            (
                "$A =~ 'x'",
                "expected a /regex/ or a variable after =~ or !~ at column 7",
            ),
            ("$", "expected a variable name after $ at column 1"),
            ("${A", "unclosed ${ at column 1"),
            ("== 'x'", "expected a value, found == at column 1"),
            ("$A =~ /x", "unclosed regex at column 7"),
            (")", "expected a value, found ) at column 1"),
        ];
        for (src, want) in cases {
            let e = Expr::parse(src).expect_err(src);
            assert_eq!(e.to_string(), *want, "{src}");
        }
    }

    #[test]
    fn deep_nesting_is_an_error_not_a_stack_overflow() {
        let src = format!("{}$A{}", "(".repeat(10_000), ")".repeat(10_000));
        assert!(Expr::parse(&src).is_err());
    }

    #[test]
    fn long_operator_chains_do_not_recurse_per_operator() {
        let v = vars();
        let and = vec!["$BRANCH"; 200_000].join(" && ");
        assert!(Expr::parse(&and).unwrap().eval(&v));
        let or = format!("{} || $TAG", vec!["$EMPTY"; 200_000].join(" || "));
        assert!(Expr::parse(&or).unwrap().eval(&v));
        let mixed = vec!["($EMPTY || $BRANCH) && $TAG"; 50_000].join(" || ");
        assert!(Expr::parse(&mixed).unwrap().eval(&v));
    }
}
