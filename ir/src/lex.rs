//! Tokens of the text form: identifiers, integers, floats, `%values`, strings and punctuation;
//! `;` starts a comment that runs to the end of the line.

use crate::ParseError;
use std::fmt;

#[derive(Clone, Debug, PartialEq)]
pub(crate) enum Tok {
    Ident(String),
    Int(u128),
    /// Lexeme of a literal with a fraction or exponent, parsed by `f64::from_str`.
    Float(String),
    /// `%name`, without the `%`.
    Value(String),
    Str(String),
    Punct(char),
    Eof,
}

impl fmt::Display for Tok {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Tok::Ident(s) => write!(f, "`{s}`"),
            Tok::Int(n) => write!(f, "`{n}`"),
            Tok::Float(s) => write!(f, "`{s}`"),
            Tok::Value(s) => write!(f, "`%{s}`"),
            Tok::Str(s) => write!(f, "{s:?}"),
            Tok::Punct(c) => write!(f, "`{c}`"),
            Tok::Eof => f.write_str("end of input"),
        }
    }
}

#[derive(Clone, Debug)]
pub(crate) struct Token {
    pub tok: Tok,
    pub line: usize,
    pub col: usize,
}

fn is_ident_start(c: char) -> bool {
    c.is_ascii_alphabetic() || c == '_'
}

fn is_ident_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '_'
}

pub(crate) fn lex(src: &str) -> Result<Vec<Token>, ParseError> {
    let chars: Vec<char> = src.chars().collect();
    let (mut i, mut line, mut col) = (0, 1, 1);
    let mut out = Vec::new();
    let err = |line, col, message: String| ParseError { line, col, message };
    while i < chars.len() {
        let c = chars[i];
        let (l0, c0, start) = (line, col, i);
        if c == '\n' {
            i += 1;
            line += 1;
            col = 1;
            continue;
        }
        if c.is_whitespace() {
            i += 1;
            col += 1;
            continue;
        }
        if c == ';' {
            while i < chars.len() && chars[i] != '\n' {
                i += 1;
            }
            continue;
        }
        let tok = if is_ident_start(c) {
            while i < chars.len() && is_ident_char(chars[i]) {
                i += 1;
            }
            Tok::Ident(chars[start..i].iter().collect())
        } else if c.is_ascii_digit() {
            while i < chars.len() && chars[i].is_ascii_digit() {
                i += 1;
            }
            let mut float = false;
            if i + 1 < chars.len() && chars[i] == '.' && chars[i + 1].is_ascii_digit() {
                float = true;
                i += 1;
                while i < chars.len() && chars[i].is_ascii_digit() {
                    i += 1;
                }
            }
            if i < chars.len() && (chars[i] == 'e' || chars[i] == 'E') {
                let mut j = i + 1;
                if j < chars.len() && (chars[j] == '+' || chars[j] == '-') {
                    j += 1;
                }
                if j < chars.len() && chars[j].is_ascii_digit() {
                    float = true;
                    i = j;
                    while i < chars.len() && chars[i].is_ascii_digit() {
                        i += 1;
                    }
                }
            }
            let text: String = chars[start..i].iter().collect();
            if i < chars.len() && is_ident_char(chars[i]) {
                return Err(err(
                    l0,
                    c0,
                    format!("malformed number `{text}{}`", chars[i]),
                ));
            }
            if float {
                Tok::Float(text)
            } else {
                Tok::Int(
                    text.parse()
                        .map_err(|_| err(l0, c0, format!("integer `{text}` is too large")))?,
                )
            }
        } else if c == '%' {
            i += 1;
            while i < chars.len() && (is_ident_char(chars[i]) || chars[i] == '.') {
                i += 1;
            }
            if i == start + 1 {
                return Err(err(l0, c0, "expected a value name after `%`".into()));
            }
            Tok::Value(chars[start + 1..i].iter().collect())
        } else if c == '"' {
            i += 1;
            let mut s = String::new();
            loop {
                match chars.get(i) {
                    None | Some('\n') => return Err(err(l0, c0, "unterminated string".into())),
                    Some('"') => break,
                    Some('\\') => {
                        let e = chars.get(i + 1).copied();
                        i += 2;
                        match e {
                            Some('"') => s.push('"'),
                            Some('\\') => s.push('\\'),
                            Some('n') => s.push('\n'),
                            Some('t') => s.push('\t'),
                            Some('u') if chars.get(i) == Some(&'{') => {
                                let close =
                                    chars[i..].iter().position(|&c| c == '}').map(|p| i + p);
                                let hex: String = close
                                    .map(|e| chars[i + 1..e].iter().collect())
                                    .unwrap_or_default();
                                let ch =
                                    u32::from_str_radix(&hex, 16).ok().and_then(char::from_u32);
                                match (close, ch) {
                                    (Some(e), Some(ch)) => {
                                        s.push(ch);
                                        i = e + 1;
                                    }
                                    _ => {
                                        return Err(err(
                                            line,
                                            col + (i - start),
                                            "bad `\\u{..}` escape".into(),
                                        ))
                                    }
                                }
                            }
                            _ => {
                                return Err(err(
                                    line,
                                    col + (i - 2 - start),
                                    "unknown escape in string".into(),
                                ))
                            }
                        }
                        continue;
                    }
                    Some(&ch) => s.push(ch),
                }
                i += 1;
            }
            i += 1;
            Tok::Str(s)
        } else if "{}[](),=:+-*/".contains(c) {
            i += 1;
            Tok::Punct(c)
        } else {
            return Err(err(l0, c0, format!("unexpected character `{c}`")));
        };
        col += i - start;
        out.push(Token {
            tok,
            line: l0,
            col: c0,
        });
    }
    out.push(Token {
        tok: Tok::Eof,
        line,
        col,
    });
    Ok(out)
}
