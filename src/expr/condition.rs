//! Conditions: boolean expressions for `choose`/`when` and other conditional policy settings.
//!
//! Grammar (loosest first): `a || b`, `a && b`, `!a`, then an atom: `( … )`, `true`, `false`,
//! `exists(name)`, `operand OP operand` with OP one of `== != < <= > >= contains starts_with
//! ends_with`, or `operand in ['a', 'b']`. Operands are names, quoted strings and integers.

use std::borrow::Cow;
use std::cmp::Ordering;

use super::lex::{self, column, Tok, Token};
use super::{resolve, Context, Name, Names, Value, MAX_CONDITION_LEN, MAX_DEPTH};

/// A compiled condition such as `request.method == 'GET' && exists(request.header.X-Debug)`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Condition {
    root: Node,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Node {
    Const(bool),
    Not(Box<Node>),
    All(Vec<Node>),
    Any(Vec<Node>),
    Exists(Name),
    Compare { op: Op, lhs: Operand, rhs: Operand },
    In { lhs: Operand, set: Vec<Lit> },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Op {
    Eq,
    Ne,
    Lt,
    Le,
    Gt,
    Ge,
    Contains,
    StartsWith,
    EndsWith,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Operand {
    Name(Name),
    Lit(Lit),
}

/// A literal with its integer value worked out once, at parse time.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Lit {
    text: Box<str>,
    int: Option<i64>,
}

impl Lit {
    fn new(text: String) -> Lit {
        let int = text.parse().ok();
        Lit { text: text.into(), int }
    }
}

impl Condition {
    /// Compiles `src`; the error message names the bad part and its column.
    pub fn parse(src: &str, names: &Names) -> Result<Condition, String> {
        if src.len() > MAX_CONDITION_LEN {
            return Err(format!("condition is {} bytes long; the limit is {MAX_CONDITION_LEN}", src.len()));
        }
        let tokens = lex::lex(src, 0, src.len())?;
        let mut p = Parser { src, tokens: &tokens, pos: 0, depth: 0, names };
        if tokens.is_empty() {
            return Err("empty condition".to_owned());
        }
        let root = p.or()?;
        if let Some(t) = p.peek() {
            return Err(format!("unexpected {} at column {}", describe(&t.tok), column(src, t.at)));
        }
        Ok(Condition { root })
    }

    /// Evaluates against `cx`, short-circuiting `&&` and `||`. A missing value compares as the
    /// empty string; comparisons of single values do not allocate.
    pub fn eval(&self, cx: &dyn Context) -> bool {
        eval(&self.root, cx)
    }

    /// The names the condition reads (a name may repeat).
    pub fn names(&self) -> impl Iterator<Item = &Name> {
        let mut out = Vec::new();
        let mut stack = vec![&self.root];
        while let Some(node) = stack.pop() {
            match node {
                Node::Const(_) => {}
                Node::Not(n) => stack.push(n),
                Node::All(v) | Node::Any(v) => stack.extend(v.iter().rev()),
                Node::Exists(n) => out.push(n),
                Node::Compare { lhs, rhs, .. } => {
                    out.extend(
                        [lhs, rhs].into_iter().filter_map(|o| if let Operand::Name(n) = o { Some(n) } else { None }),
                    )
                }
                Node::In { lhs: Operand::Name(n), .. } => out.push(n),
                Node::In { .. } => {}
            }
        }
        out.into_iter()
    }
}

// ---------------------------------------------------------------------------------------------
// Parsing

struct Parser<'t, 's> {
    src: &'s str,
    tokens: &'t [Token<'s>],
    pos: usize,
    depth: usize,
    names: &'t Names<'t>,
}

fn describe(tok: &Tok<'_>) -> String {
    match tok {
        Tok::Name { path, key: None } => format!("`{path}`"),
        Tok::Name { path, key: Some(_) } => format!("`{path}[…]`"),
        Tok::Str(s) => format!("string '{s}'"),
        Tok::Int(n) => format!("number {n}"),
        Tok::LParen => "`(`".into(),
        Tok::RParen => "`)`".into(),
        Tok::LBracket => "`[`".into(),
        Tok::RBracket => "`]`".into(),
        Tok::Comma => "`,`".into(),
        Tok::Eq => "`==`".into(),
        Tok::Ne => "`!=`".into(),
        Tok::Lt => "`<`".into(),
        Tok::Le => "`<=`".into(),
        Tok::Gt => "`>`".into(),
        Tok::Ge => "`>=`".into(),
        Tok::Not => "`!`".into(),
        Tok::And => "`&&`".into(),
        Tok::Or => "`||`".into(),
        Tok::Coalesce => "`??` (defaults are for templates)".into(),
        Tok::LBrace | Tok::RBrace => "brace (names in conditions are written without `{}`)".into(),
    }
}

impl<'s> Parser<'_, 's> {
    fn peek(&self) -> Option<&Token<'s>> {
        self.tokens.get(self.pos)
    }

    fn next(&mut self) -> Option<&Token<'s>> {
        let t = self.tokens.get(self.pos);
        self.pos += 1;
        t
    }

    fn at_end_col(&self) -> usize {
        column(self.src, self.src.len())
    }

    /// An error at the current token (or the end).
    fn unexpected(&self, wanted: &str) -> String {
        match self.peek() {
            Some(t) => format!("expected {wanted} at column {}, found {}", column(self.src, t.at), describe(&t.tok)),
            None => format!("expected {wanted} at column {}, found the end", self.at_end_col()),
        }
    }

    fn enter(&mut self) -> Result<(), String> {
        self.depth += 1;
        if self.depth > MAX_DEPTH {
            let col = self.peek().map_or_else(|| self.at_end_col(), |t| column(self.src, t.at));
            return Err(format!("condition nests deeper than {MAX_DEPTH} levels at column {col}"));
        }
        Ok(())
    }

    fn or(&mut self) -> Result<Node, String> {
        let mut items = vec![self.and()?];
        while self.peek().is_some_and(|t| t.tok == Tok::Or) {
            self.pos += 1;
            items.push(self.and()?);
        }
        Ok(if items.len() == 1 { items.remove(0) } else { Node::Any(items) })
    }

    fn and(&mut self) -> Result<Node, String> {
        let mut items = vec![self.unary()?];
        while self.peek().is_some_and(|t| t.tok == Tok::And) {
            self.pos += 1;
            items.push(self.unary()?);
        }
        Ok(if items.len() == 1 { items.remove(0) } else { Node::All(items) })
    }

    fn unary(&mut self) -> Result<Node, String> {
        if self.peek().is_some_and(|t| t.tok == Tok::Not) {
            self.pos += 1;
            self.enter()?;
            let inner = self.unary()?;
            self.depth -= 1;
            return Ok(Node::Not(Box::new(inner)));
        }
        self.atom()
    }

    fn atom(&mut self) -> Result<Node, String> {
        let Some(t) = self.peek() else {
            return Err(self.unexpected("a condition"));
        };
        match &t.tok {
            Tok::LParen => {
                self.pos += 1;
                self.enter()?;
                let inner = self.or()?;
                self.depth -= 1;
                self.expect(Tok::RParen, "`)`")?;
                Ok(inner)
            }
            Tok::Name { path: "true", key: None } => {
                self.pos += 1;
                Ok(Node::Const(true))
            }
            Tok::Name { path: "false", key: None } => {
                self.pos += 1;
                Ok(Node::Const(false))
            }
            Tok::Name { path: "exists", key: None }
                if self.tokens.get(self.pos + 1).is_some_and(|t| t.tok == Tok::LParen) =>
            {
                self.pos += 2;
                let name = match self.operand()? {
                    Operand::Name(n) => n,
                    Operand::Lit(_) => return Err("`exists(…)` takes a name, not a literal".to_owned()),
                };
                self.expect(Tok::RParen, "`)` closing `exists(`")?;
                Ok(Node::Exists(name))
            }
            _ => self.comparison(),
        }
    }

    fn expect(&mut self, tok: Tok<'static>, wanted: &str) -> Result<(), String> {
        if self.peek().is_some_and(|t| t.tok == tok) {
            self.pos += 1;
            Ok(())
        } else {
            Err(self.unexpected(wanted))
        }
    }

    fn operand(&mut self) -> Result<Operand, String> {
        let src = self.src;
        let names = self.names;
        let Some(t) = self.peek() else {
            return Err(self.unexpected("a name, a quoted string or a number"));
        };
        let col = column(src, t.at);
        let operand = match &t.tok {
            Tok::Name { path, key } => {
                Operand::Name(resolve(path, key.as_deref(), names).map_err(|e| format!("{e} (column {col})"))?)
            }
            Tok::Str(s) => Operand::Lit(Lit::new(s.clone())),
            Tok::Int(n) => Operand::Lit(Lit::new(n.to_string())),
            Tok::LBrace => {
                return Err(format!(
                    "unexpected `{{` at column {col}: names in conditions are written without braces (`jwt.sub`, not `{{jwt.sub}}`)"
                ))
            }
            _ => return Err(self.unexpected("a name, a quoted string or a number")),
        };
        self.pos += 1;
        Ok(operand)
    }

    fn comparison(&mut self) -> Result<Node, String> {
        let start = self.peek().map_or(0, |t| t.at);
        let lhs = self.operand()?;
        let op = match self.peek().map(|t| &t.tok) {
            Some(Tok::Eq) => Op::Eq,
            Some(Tok::Ne) => Op::Ne,
            Some(Tok::Lt) => Op::Lt,
            Some(Tok::Le) => Op::Le,
            Some(Tok::Gt) => Op::Gt,
            Some(Tok::Ge) => Op::Ge,
            Some(Tok::Name { path: "contains", key: None }) => Op::Contains,
            Some(Tok::Name { path: "starts_with", key: None }) => Op::StartsWith,
            Some(Tok::Name { path: "ends_with", key: None }) => Op::EndsWith,
            Some(Tok::Name { path: "in", key: None }) => {
                self.pos += 1;
                return Ok(Node::In { lhs, set: self.list()? });
            }
            _ => {
                let shown = match &lhs {
                    Operand::Name(n) => n.to_string(),
                    Operand::Lit(l) => format!("'{}'", l.text),
                };
                let what = match self.peek() {
                    Some(t) => format!("found {} at column {}", describe(&t.tok), column(self.src, t.at)),
                    None => "found the end".to_owned(),
                };
                return Err(format!(
                    "`{shown}` (column {}) alone is not a condition: compare it (`{shown} == '…'`), or test `exists({shown})`; {what}",
                    column(self.src, start)
                ));
            }
        };
        self.pos += 1;
        let rhs = self.operand()?;
        if let (Operand::Lit(_), Operand::Lit(_)) = (&lhs, &rhs) {
            return Err(format!(
                "the comparison at column {} has no name in it: it is always the same",
                column(self.src, start)
            ));
        }
        Ok(Node::Compare { op, lhs, rhs })
    }

    /// `['a', 'b', 3]` (a trailing comma is fine).
    fn list(&mut self) -> Result<Vec<Lit>, String> {
        self.expect(Tok::LBracket, "`[` starting the list after `in`")?;
        let mut set = Vec::new();
        loop {
            match self.next().map(|t| &t.tok) {
                Some(Tok::RBracket) => break,
                Some(Tok::Str(s)) => set.push(Lit::new(s.clone())),
                Some(Tok::Int(n)) => set.push(Lit::new(n.to_string())),
                _ => {
                    self.pos -= 1;
                    return Err(self.unexpected("a quoted string, a number or `]` in the `in` list"));
                }
            }
            match self.next().map(|t| &t.tok) {
                Some(Tok::Comma) => {}
                Some(Tok::RBracket) => break,
                _ => {
                    self.pos -= 1;
                    return Err(self.unexpected("`,` or `]` in the `in` list"));
                }
            }
        }
        Ok(set)
    }
}

// ---------------------------------------------------------------------------------------------
// Evaluation

fn eval(node: &Node, cx: &dyn Context) -> bool {
    match node {
        Node::Const(b) => *b,
        Node::Not(inner) => !eval(inner, cx),
        Node::All(items) => items.iter().all(|n| eval(n, cx)),
        Node::Any(items) => items.iter().any(|n| eval(n, cx)),
        Node::Exists(name) => cx.lookup(name).is_some(),
        Node::Compare { op, lhs, rhs } => {
            let (lv, rv) = (fetch(lhs, cx), fetch(rhs, cx));
            compare(*op, &arg(lhs, &lv), &arg(rhs, &rv))
        }
        Node::In { lhs, set } => {
            let lv = fetch(lhs, cx);
            match arg(lhs, &lv) {
                Arg::List(items) => items.iter().any(|i| set.iter().any(|l| equal(&scalar(i), &lit(l)))),
                Arg::Scalar(s) => set.iter().any(|l| equal(&s, &lit(l))),
            }
        }
    }
}

fn fetch<'c>(operand: &Operand, cx: &'c dyn Context) -> Option<Value<'c>> {
    match operand {
        Operand::Name(n) => cx.lookup(n),
        Operand::Lit(_) => None,
    }
}

/// A single value: its text and, when known up front, its integer value.
struct Scalar<'v> {
    text: Cow<'v, str>,
    int: Option<Option<i64>>,
}

impl Scalar<'_> {
    fn int(&self) -> Option<i64> {
        self.int.unwrap_or_else(|| self.text.parse().ok())
    }
}

enum Arg<'v> {
    Scalar(Scalar<'v>),
    List(&'v [Cow<'v, str>]),
}

fn scalar<'v>(s: &'v str) -> Scalar<'v> {
    Scalar { text: Cow::Borrowed(s), int: None }
}

fn lit(l: &Lit) -> Scalar<'_> {
    Scalar { text: Cow::Borrowed(&l.text), int: Some(l.int) }
}

fn arg<'v>(operand: &'v Operand, value: &'v Option<Value<'v>>) -> Arg<'v> {
    match (operand, value) {
        (Operand::Lit(l), _) => Arg::Scalar(lit(l)),
        (Operand::Name(_), None) => Arg::Scalar(scalar("")),
        (Operand::Name(_), Some(Value::Str(s))) => Arg::Scalar(scalar(s)),
        (Operand::Name(_), Some(Value::List(items))) => Arg::List(items),
    }
}

/// A list where one value is wanted: its only member as is, several joined with `,` (as they
/// render in a template; the one case that allocates).
fn flatten<'v>(a: &Arg<'v>) -> Scalar<'v> {
    match a {
        Arg::Scalar(s) => Scalar { text: s.text.clone(), int: s.int },
        Arg::List([]) => scalar(""),
        Arg::List([one]) => scalar(one),
        Arg::List(items) => Scalar { text: Cow::Owned(items.join(",")), int: None },
    }
}

/// Both sides as integers, when both are. A literal known not to be one spares parsing the other.
fn ints(a: &Scalar<'_>, b: &Scalar<'_>) -> Option<(i64, i64)> {
    if a.int == Some(None) || b.int == Some(None) {
        return None;
    }
    Some((a.int()?, b.int()?))
}

/// Integers compare as numbers, everything else as strings.
fn equal(a: &Scalar<'_>, b: &Scalar<'_>) -> bool {
    match ints(a, b) {
        Some((x, y)) => x == y,
        None => a.text == b.text,
    }
}

fn order(a: &Scalar<'_>, b: &Scalar<'_>) -> Ordering {
    match ints(a, b) {
        Some((x, y)) => x.cmp(&y),
        None => a.text.as_bytes().cmp(b.text.as_bytes()),
    }
}

fn compare(op: Op, l: &Arg<'_>, r: &Arg<'_>) -> bool {
    if let (Op::Contains, Arg::List(items)) = (op, l) {
        let needle = flatten(r);
        return items.iter().any(|i| i.as_ref() == needle.text.as_ref());
    }
    let (a, b) = (flatten(l), flatten(r));
    match op {
        Op::Eq => equal(&a, &b),
        Op::Ne => !equal(&a, &b),
        Op::Lt => order(&a, &b).is_lt(),
        Op::Le => order(&a, &b).is_le(),
        Op::Gt => order(&a, &b).is_gt(),
        Op::Ge => order(&a, &b).is_ge(),
        Op::Contains => a.text.contains(b.text.as_ref()),
        Op::StartsWith => a.text.starts_with(b.text.as_ref()),
        Op::EndsWith => a.text.ends_with(b.text.as_ref()),
    }
}
