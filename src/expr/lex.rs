//! The tokenizer shared by conditions and template placeholders. Parse time only: it may
//! allocate; every error names the column where the bad part starts.

/// One token.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Tok<'s> {
    /// A dotted name as written (`request.header.X-User`), with the key of `name['key']`.
    Name {
        path: &'s str,
        key: Option<String>,
    },
    Str(String),
    Int(i64),
    LParen,
    RParen,
    LBracket,
    RBracket,
    Comma,
    Eq,
    Ne,
    Lt,
    Le,
    Gt,
    Ge,
    Not,
    And,
    Or,
    Coalesce,
    LBrace,
    RBrace,
}

#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Token<'s> {
    pub tok: Tok<'s>,
    /// Byte offset in the whole source.
    pub at: usize,
}

/// 1-based column (in characters) of byte offset `at`, for error messages.
pub(crate) fn column(src: &str, at: usize) -> usize {
    src.get(..at).map_or(at, |s| s.chars().count()) + 1
}

/// Bytes that may continue a name: header-name and claim-name friendly, no operators.
pub(crate) fn is_name_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-' | b':')
}

/// Tokenizes `src[start..end]`; offsets in tokens and errors are relative to all of `src`.
pub(crate) fn lex(src: &str, start: usize, end: usize) -> Result<Vec<Token<'_>>, String> {
    let end = end.min(src.len());
    let b = src.as_bytes();
    let peek = |i: usize| if i < end { b.get(i).copied() } else { None };
    let mut out = Vec::new();
    let mut i = start;
    while let Some(c) = peek(i) {
        let at = i;
        // Two-byte operators first; `second` is what the pair needs.
        let pair =
            |second: u8, two: Tok<'static>, one: Option<Tok<'static>>| -> Result<(Tok<'static>, usize), String> {
                if peek(i + 1) == Some(second) {
                    Ok((two, 2))
                } else {
                    one.map(|t| (t, 1)).ok_or_else(|| {
                        let hint = match c {
                            b'=' => "use `==` to compare",
                            b'&' => "use `&&` for “and”",
                            b'|' => "use `||` for “or”",
                            _ => "use `??` for a default",
                        };
                        format!("unexpected `{}` at column {}: {hint}", char::from(c), column(src, at))
                    })
                }
            };
        let (tok, len) = match c {
            b' ' | b'\t' | b'\n' | b'\r' => {
                i += 1;
                continue;
            }
            b'(' => (Tok::LParen, 1),
            b')' => (Tok::RParen, 1),
            b'[' => (Tok::LBracket, 1),
            b']' => (Tok::RBracket, 1),
            b',' => (Tok::Comma, 1),
            b'{' => (Tok::LBrace, 1),
            b'}' => (Tok::RBrace, 1),
            b'=' => pair(b'=', Tok::Eq, None)?,
            b'!' => pair(b'=', Tok::Ne, Some(Tok::Not))?,
            b'<' => pair(b'=', Tok::Le, Some(Tok::Lt))?,
            b'>' => pair(b'=', Tok::Ge, Some(Tok::Gt))?,
            b'&' => pair(b'&', Tok::And, None)?,
            b'|' => pair(b'|', Tok::Or, None)?,
            b'?' => pair(b'?', Tok::Coalesce, None)?,
            b'\'' | b'"' => {
                let (s, next) = string(src, i, end)?;
                out.push(Token { tok: Tok::Str(s), at });
                i = next;
                continue;
            }
            b'-' | b'0'..=b'9' => {
                let digits = i + usize::from(c == b'-');
                let mut j = digits;
                while peek(j).is_some_and(|d| d.is_ascii_digit()) {
                    j += 1;
                }
                if j == digits || peek(j).is_some_and(is_name_byte) {
                    let mut k = j;
                    while peek(k).is_some_and(is_name_byte) {
                        k += 1;
                    }
                    let bad = src.get(at..k.max(at + 1)).unwrap_or("-");
                    return Err(format!(
                        "invalid number `{bad}` at column {} (names start with a letter)",
                        column(src, at)
                    ));
                }
                let text = src.get(at..j).unwrap_or_default();
                let n = text
                    .parse::<i64>()
                    .map_err(|_| format!("integer `{text}` at column {} is out of range", column(src, at)))?;
                (Tok::Int(n), j - at)
            }
            c if c.is_ascii_alphabetic() || c == b'_' => {
                let mut j = i + 1;
                while peek(j).is_some_and(is_name_byte) {
                    j += 1;
                }
                let path = src.get(at..j).unwrap_or_default();
                // `jwt.claims['https://example.com/roles']`: a key no plain name can spell. `in[` is
                // the operator followed by its list.
                if peek(j) == Some(b'[') && path != "in" {
                    let mut k = j + 1;
                    while peek(k).is_some_and(|c| c == b' ') {
                        k += 1;
                    }
                    if !matches!(peek(k), Some(b'\'' | b'"')) {
                        return Err(format!("expected a quoted key in `{path}['…']` at column {}", column(src, j)));
                    }
                    let (key, mut k) = string(src, k, end)?;
                    while peek(k).is_some_and(|c| c == b' ') {
                        k += 1;
                    }
                    if peek(k) != Some(b']') {
                        return Err(format!("expected `]` after the key of `{path}[…]` at column {}", column(src, k)));
                    }
                    out.push(Token { tok: Tok::Name { path, key: Some(key) }, at });
                    i = k + 1;
                    continue;
                }
                (Tok::Name { path, key: None }, j - at)
            }
            _ => {
                let ch = src.get(at..).and_then(|s| s.chars().next()).unwrap_or('?');
                return Err(format!("unexpected `{ch}` at column {}", column(src, at)));
            }
        };
        out.push(Token { tok, at });
        i += len;
    }
    Ok(out)
}

/// A quoted string starting at `start` (its quote); returns the text and the offset after it.
/// Escapes: `\\`, `\'`, `\"`.
fn string(src: &str, start: usize, end: usize) -> Result<(String, usize), String> {
    let body = src.get(start..end).unwrap_or_default();
    let mut chars = body.char_indices();
    let quote = chars.next().map(|(_, q)| q).unwrap_or('\'');
    let mut out = String::new();
    while let Some((off, ch)) = chars.next() {
        match ch {
            '\\' => match chars.next() {
                Some((_, e @ ('\\' | '\'' | '"'))) => out.push(e),
                Some((_, e)) => {
                    return Err(format!(
                        "unknown escape `\\{e}` at column {} (only \\\\, \\' and \\\" are escapes)",
                        column(src, start + off)
                    ))
                }
                None => break,
            },
            q if q == quote => return Ok((out, start + off + 1)),
            other => out.push(other),
        }
    }
    Err(format!("unterminated string starting at column {}", column(src, start)))
}
