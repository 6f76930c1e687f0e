//! Parser for the text form printed by `text.rs`. Non-source node types are re-inferred and must
//! equal the written type, and each parsed graph is verified, so a text file cannot lie.

use crate::lex::{lex, Tok, Token};
use crate::{
    Activation, AttentionMask, BinaryOp, DType, Dim, Graph, NodeId, Op, ReduceOp, Scalar,
    TensorType, UnaryOp,
};
use std::collections::HashMap;
use std::fmt;

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ParseError {
    pub line: usize,
    pub col: usize,
    pub message: String,
}

impl fmt::Display for ParseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}: {}", self.line, self.col, self.message)
    }
}

impl std::error::Error for ParseError {}

/// Value of an attribute; which kind a key takes is fixed (see `Parser::attr_value`).
enum Attr {
    Float(f64),
    Ident(String),
    Uint(usize),
    Uints(Vec<usize>),
    Bool(bool),
    Dim(Dim),
    Dims(Vec<Dim>),
    Str(String),
}

struct Parser {
    toks: Vec<Token>,
    pos: usize,
}

type PResult<T> = Result<T, ParseError>;

impl Parser {
    fn peek(&self) -> &Token {
        &self.toks[self.pos]
    }

    fn next(&mut self) -> Token {
        let t = self.toks[self.pos].clone();
        if self.pos + 1 < self.toks.len() {
            self.pos += 1;
        }
        t
    }

    fn err_at<T>(t: &Token, message: impl Into<String>) -> PResult<T> {
        Err(ParseError {
            line: t.line,
            col: t.col,
            message: message.into(),
        })
    }

    fn err_here<T>(&self, message: impl Into<String>) -> PResult<T> {
        Self::err_at(self.peek(), message)
    }

    fn is_punct(&self, c: char) -> bool {
        self.peek().tok == Tok::Punct(c)
    }

    fn eat_punct(&mut self, c: char) -> bool {
        let hit = self.is_punct(c);
        if hit {
            self.next();
        }
        hit
    }

    fn expect_punct(&mut self, c: char) -> PResult<()> {
        if self.eat_punct(c) {
            return Ok(());
        }
        self.err_here(format!("expected `{c}`, found {}", self.peek().tok))
    }

    fn expect_keyword(&mut self, kw: &str) -> PResult<()> {
        match &self.peek().tok {
            Tok::Ident(s) if s == kw => {
                self.next();
                Ok(())
            }
            t => self.err_here(format!("expected `{kw}`, found {t}")),
        }
    }

    fn ident(&mut self, what: &str) -> PResult<String> {
        match self.next() {
            Token {
                tok: Tok::Ident(s), ..
            } => Ok(s),
            t => Self::err_at(&t, format!("expected {what}, found {}", t.tok)),
        }
    }

    fn string(&mut self, what: &str) -> PResult<String> {
        match self.next() {
            Token {
                tok: Tok::Str(s), ..
            } => Ok(s),
            t => Self::err_at(
                &t,
                format!("expected {what} (a quoted string), found {}", t.tok),
            ),
        }
    }

    fn uint(&mut self) -> PResult<usize> {
        match self.next() {
            Token {
                tok: Tok::Int(n), ..
            } if n <= usize::MAX as u128 => Ok(n as usize),
            t => Self::err_at(
                &t,
                format!("expected a non-negative integer, found {}", t.tok),
            ),
        }
    }

    fn int(&mut self) -> PResult<i64> {
        let neg = self.eat_punct('-');
        let t = self.next();
        match t.tok {
            Tok::Int(n) => {
                let v = if neg { -(n as i128) } else { n as i128 };
                i64::try_from(v).or_else(|_| Self::err_at(&t, "integer out of range"))
            }
            ref other => Self::err_at(&t, format!("expected an integer, found {other}")),
        }
    }

    fn list<T>(&mut self, mut item: impl FnMut(&mut Self) -> PResult<T>) -> PResult<Vec<T>> {
        self.expect_punct('[')?;
        let mut out = Vec::new();
        if self.eat_punct(']') {
            return Ok(out);
        }
        loop {
            out.push(item(self)?);
            if self.eat_punct(']') {
                return Ok(out);
            }
            self.expect_punct(',')?;
        }
    }

    // dim := term (('+' | '-') term)* ; term := unary (('*' | '/') unary)* ; unary := '-' unary | atom
    fn dim(&mut self) -> PResult<Dim> {
        let mut acc = self.dim_term()?;
        loop {
            if self.eat_punct('+') {
                acc = Dim::Add(Box::new(acc), Box::new(self.dim_term()?));
            } else if self.eat_punct('-') {
                let rhs = Dim::Mul(Box::new(Dim::Const(-1)), Box::new(self.dim_term()?));
                acc = Dim::Add(Box::new(acc), Box::new(rhs));
            } else {
                return Ok(acc);
            }
        }
    }

    fn dim_term(&mut self) -> PResult<Dim> {
        let mut acc = self.dim_unary()?;
        loop {
            if self.eat_punct('*') {
                acc = Dim::Mul(Box::new(acc), Box::new(self.dim_unary()?));
            } else if self.eat_punct('/') {
                acc = Dim::FloorDiv(Box::new(acc), Box::new(self.dim_unary()?));
            } else {
                return Ok(acc);
            }
        }
    }

    fn dim_unary(&mut self) -> PResult<Dim> {
        if self.eat_punct('-') {
            // A negated literal is one constant, so that `-1*n` reads back as printed.
            if let Tok::Int(_) = self.peek().tok {
                self.pos -= 1;
                return Ok(Dim::Const(self.int()?));
            }
            return Ok(Dim::Mul(
                Box::new(Dim::Const(-1)),
                Box::new(self.dim_unary()?),
            ));
        }
        let t = self.next();
        match t.tok {
            Tok::Int(n) => Ok(Dim::Const(
                i64::try_from(n).or_else(|_| Self::err_at(&t, "integer out of range"))?,
            )),
            Tok::Ident(s) => Ok(Dim::Sym(s)),
            Tok::Punct('(') => {
                let d = self.dim()?;
                self.expect_punct(')')?;
                Ok(d)
            }
            ref other => Self::err_at(&t, format!("expected a dimension, found {other}")),
        }
    }

    fn ty(&mut self) -> PResult<TensorType> {
        let t = self.next();
        let dtype = match &t.tok {
            Tok::Ident(s) => s.parse::<DType>().or_else(|e| Self::err_at(&t, e))?,
            other => return Self::err_at(&t, format!("expected a dtype, found {other}")),
        };
        let shape = self.list(|p| p.dim())?;
        Ok(TensorType::new(dtype, shape))
    }

    fn scalar(&mut self) -> PResult<Scalar> {
        let neg = self.eat_punct('-');
        let sign = if neg { "-" } else { "" };
        let t = self.next();
        Ok(match &t.tok {
            Tok::Int(_) => {
                self.pos -= 1 + neg as usize;
                Scalar::Int(self.int()?)
            }
            Tok::Float(s) => Scalar::Float(
                format!("{sign}{s}")
                    .parse()
                    .or_else(|_| Self::err_at(&t, "bad float"))?,
            ),
            Tok::Ident(s) if s == "inf" => Scalar::Float(if neg {
                f64::NEG_INFINITY
            } else {
                f64::INFINITY
            }),
            Tok::Ident(s) if s == "nan" => Scalar::Float(if neg { -f64::NAN } else { f64::NAN }),
            Tok::Ident(s) if !neg && (s == "true" || s == "false") => Scalar::Bool(s == "true"),
            other => return Self::err_at(&t, format!("expected a literal, found {other}")),
        })
    }

    fn attr_value(&mut self, key: &Token) -> PResult<Attr> {
        let Tok::Ident(name) = &key.tok else {
            unreachable!()
        };
        Ok(match name.as_str() {
            "axes" | "perm" => Attr::Uints(self.list(|p| p.uint())?),
            "axis" => Attr::Uint(self.uint()?),
            "keep_dims" | "bias" | "residual" | "rope_q" | "rope_k" => match self
                .ident("`true` or `false`")?
                .as_str()
            {
                "true" => Attr::Bool(true),
                "false" => Attr::Bool(false),
                _ => return Self::err_at(&self.toks[self.pos - 1], "expected `true` or `false`"),
            },
            "eps" | "scale" | "threshold" => {
                let at = self.peek().clone();
                match self.scalar()? {
                    Scalar::Float(x) => Attr::Float(x),
                    _ => return Self::err_at(&at, format!("`{name}` must be a float literal")),
                }
            }
            "mask" => Attr::Ident(self.ident("an attention mask")?),
            "merge" => Attr::Uint(self.uint()?),
            "shape" => Attr::Dims(self.list(|p| p.dim())?),
            "len" | "start" | "end" => Attr::Dim(self.dim()?),
            "name" => Attr::Str(self.string("a cache name")?),
            _ => return Self::err_at(key, format!("unknown attribute `{name}`")),
        })
    }

    fn attrs(&mut self) -> PResult<Attrs> {
        let mut list: Vec<(String, Token, Attr)> = Vec::new();
        if !self.eat_punct('{') {
            return Ok(Attrs {
                list,
                at: self.peek().clone(),
            });
        }
        loop {
            let key = self.next();
            let Tok::Ident(name) = key.tok.clone() else {
                return Self::err_at(
                    &key,
                    format!("expected an attribute name, found {}", key.tok),
                );
            };
            if list.iter().any(|(n, ..)| *n == name) {
                return Self::err_at(&key, format!("attribute `{name}` given twice"));
            }
            self.expect_punct('=')?;
            let v = self.attr_value(&key)?;
            list.push((name, key, v));
            if self.eat_punct('}') {
                return Ok(Attrs {
                    list,
                    at: self.peek().clone(),
                });
            }
            self.expect_punct(',')?;
        }
    }
}

/// Parsed attributes of one node; ops take the ones they need, and leftovers are an error.
struct Attrs {
    list: Vec<(String, Token, Attr)>,
    at: Token,
}

impl Attrs {
    fn take(&mut self, key: &str, op: &str) -> PResult<(Token, Attr)> {
        match self.list.iter().position(|(n, ..)| n == key) {
            Some(i) => {
                let (_, t, a) = self.list.remove(i);
                Ok((t, a))
            }
            None => Parser::err_at(&self.at, format!("`{op}` needs attribute `{key}`")),
        }
    }

    fn uint(&mut self, key: &str, op: &str) -> PResult<usize> {
        match self.take(key, op)? {
            (_, Attr::Uint(v)) => Ok(v),
            (t, _) => Parser::err_at(&t, format!("`{key}` must be an integer")),
        }
    }

    fn uints(&mut self, key: &str, op: &str) -> PResult<Vec<usize>> {
        match self.take(key, op)? {
            (_, Attr::Uints(v)) => Ok(v),
            (t, _) => Parser::err_at(&t, format!("`{key}` must be a list of integers")),
        }
    }

    fn bool(&mut self, key: &str, op: &str) -> PResult<bool> {
        match self.take(key, op)? {
            (_, Attr::Bool(v)) => Ok(v),
            (t, _) => Parser::err_at(&t, format!("`{key}` must be a bool")),
        }
    }

    fn float(&mut self, key: &str, op: &str) -> PResult<f64> {
        match self.take(key, op)? {
            (_, Attr::Float(v)) => Ok(v),
            (t, _) => Parser::err_at(&t, format!("`{key}` must be a float")),
        }
    }

    fn mask(&mut self, key: &str, op: &str) -> PResult<AttentionMask> {
        match self.take(key, op)? {
            (t, Attr::Ident(v)) => AttentionMask::from_mnemonic(&v).map_or_else(
                || Parser::err_at(&t, format!("unknown attention mask `{v}`")),
                Ok,
            ),
            (t, _) => Parser::err_at(&t, format!("`{key}` must be full, causal or segments")),
        }
    }

    fn dim(&mut self, key: &str, op: &str) -> PResult<Dim> {
        match self.take(key, op)? {
            (_, Attr::Dim(v)) => Ok(v),
            (t, _) => Parser::err_at(&t, format!("`{key}` must be a dimension")),
        }
    }

    fn dims(&mut self, key: &str, op: &str) -> PResult<Vec<Dim>> {
        match self.take(key, op)? {
            (_, Attr::Dims(v)) => Ok(v),
            (t, _) => Parser::err_at(&t, format!("`{key}` must be a list of dimensions")),
        }
    }

    fn string(&mut self, key: &str, op: &str) -> PResult<String> {
        match self.take(key, op)? {
            (_, Attr::Str(v)) => Ok(v),
            (t, _) => Parser::err_at(&t, format!("`{key}` must be a string")),
        }
    }

    fn finish(self, op: &str) -> PResult<()> {
        match self.list.first() {
            Some((name, t, _)) => {
                Parser::err_at(t, format!("attribute `{name}` does not apply to `{op}`"))
            }
            None => Ok(()),
        }
    }
}

/// Builds a non-source op from its mnemonic, attributes and written result type.
fn build_op(mn: &str, at: &Token, attrs: &mut Attrs, ty: &TensorType) -> PResult<Op> {
    if let Some(u) = UnaryOp::from_mnemonic(mn) {
        return Ok(Op::Unary(u));
    }
    if let Some(b) = BinaryOp::from_mnemonic(mn) {
        return Ok(Op::Binary(b));
    }
    if let Some(a) = Activation::from_mnemonic(mn) {
        return Ok(Op::Activation(a));
    }
    if let Some(op) = ReduceOp::from_mnemonic(mn) {
        return Ok(Op::Reduce {
            op,
            axes: attrs.uints("axes", mn)?,
            keep_dims: attrs.bool("keep_dims", mn)?,
        });
    }
    Ok(match mn {
        "iota" => Op::Iota {
            len: attrs.dim("len", mn)?,
            start: attrs.dim("start", mn)?,
            dtype: ty.dtype,
        },
        "matmul" => Op::MatMul,
        "select" => Op::Select,
        "reshape" => Op::Reshape {
            shape: attrs.dims("shape", mn)?,
        },
        "transpose" => Op::Transpose {
            perm: attrs.uints("perm", mn)?,
        },
        "broadcast" => Op::Broadcast {
            shape: attrs.dims("shape", mn)?,
        },
        "concat" => Op::Concat {
            axis: attrs.uint("axis", mn)?,
        },
        "slice" => Op::Slice {
            axis: attrs.uint("axis", mn)?,
            start: attrs.dim("start", mn)?,
            end: attrs.dim("end", mn)?,
        },
        "gather" => Op::Gather {
            axis: attrs.uint("axis", mn)?,
        },
        "cast" => Op::Cast { to: ty.dtype },
        "masked_select" => Op::MaskedSelect {
            len: attrs.dim("len", mn)?,
        },
        "masked_scatter" => Op::MaskedScatter,
        "vision_position_ids" => Op::VisionPositionIds {
            len: attrs.dim("len", mn)?,
        },
        "segment_ids" => Op::SegmentIds {
            len: attrs.dim("len", mn)?,
        },
        "cache_append" => Op::CacheAppend {
            name: attrs.string("name", mn)?,
            axis: attrs.uint("axis", mn)?,
        },
        "softmax" => Op::Softmax,
        "layer_norm" => Op::LayerNorm {
            eps: attrs.float("eps", mn)?,
        },
        "rms_norm" => Op::RmsNorm {
            eps: attrs.float("eps", mn)?,
        },
        "swiglu" => Op::SwiGlu,
        "rope" => Op::Rope,
        "fused_matmul" => Op::FusedMatMul {
            bias: attrs.bool("bias", mn)?,
            residual: attrs.bool("residual", mn)?,
        },
        "attention" => Op::Attention {
            scale: attrs.float("scale", mn)?,
            mask: attrs.mask("mask", mn)?,
            rope_q: attrs.bool("rope_q", mn)?,
            rope_k: attrs.bool("rope_k", mn)?,
        },
        "spatial_merge" => Op::SpatialMerge {
            merge: attrs.uint("merge", mn)?,
        },
        "diff_frame_prune" => Op::DiffFramePrune {
            threshold: attrs.float("threshold", mn)?,
            merge: attrs.uint("merge", mn)?,
            len: attrs.dim("len", mn)?,
        },
        "fold" => Op::Fold,
        _ => return Parser::err_at(at, format!("unknown op `{mn}`")),
    })
}

impl Parser {
    fn graph(&mut self) -> PResult<Graph> {
        self.expect_keyword("graph")?;
        let t = self.next();
        let name = match t.tok.clone() {
            Tok::Ident(s) | Tok::Str(s) => s,
            other => return Self::err_at(&t, format!("expected a graph name, found {other}")),
        };
        self.expect_punct('{')?;
        let mut g = Graph::new(name);
        let mut values: HashMap<String, NodeId> = HashMap::new();
        // Where each node and output was written, to place verifier errors.
        let mut node_pos: Vec<Token> = Vec::new();
        let mut output_pos: Vec<Token> = Vec::new();
        let mut sym_pos: Vec<Token> = Vec::new();
        loop {
            let t = self.peek().clone();
            match &t.tok {
                Tok::Punct('}') => {
                    self.next();
                    break;
                }
                Tok::Ident(kw) if kw == "sym" => {
                    self.next();
                    let name_tok = self.peek().clone();
                    let name = self.ident("a symbol name")?;
                    if g.symbol_bounds(&name).is_some() {
                        return Self::err_at(&name_tok, format!("symbol `{name}` declared twice"));
                    }
                    self.expect_keyword("in")?;
                    self.expect_punct('[')?;
                    let min = self.int()?;
                    self.expect_punct(',')?;
                    let max = self.int()?;
                    self.expect_punct(']')?;
                    g.declare_symbol(&name, min, max);
                    sym_pos.push(name_tok);
                }
                Tok::Ident(kw) if kw == "output" => {
                    self.next();
                    let name = self.string("an output name")?;
                    self.expect_punct('=')?;
                    let id = self.value_ref(&values)?;
                    g.set_output(name, id);
                    output_pos.push(t);
                }
                Tok::Value(v) => {
                    let v = v.clone();
                    self.next();
                    if values.contains_key(&v) {
                        return Self::err_at(&t, format!("value `%{v}` defined twice"));
                    }
                    self.expect_punct('=')?;
                    let id = self.node(&mut g, &values)?;
                    values.insert(v, id);
                    node_pos.push(t);
                }
                Tok::Eof => return self.err_here("expected `}` to close the graph"),
                other => {
                    return self.err_here(format!(
                        "expected a node, `sym`, `output` or `}}`, found {other}"
                    ))
                }
            }
        }
        if let Err(e) = g.verify() {
            let named = |pos: &[Token], names: Vec<&str>| {
                names
                    .iter()
                    .rposition(|n| e.message.contains(&format!("`{n}`")))
                    .and_then(|i| pos.get(i).cloned())
            };
            let at = match (e.node, e.op.as_str()) {
                (Some(id), _) => node_pos.get(id.index()).cloned(),
                (None, "output") => named(
                    &output_pos,
                    g.outputs.iter().map(|(n, _)| n.as_str()).collect(),
                ),
                (None, _) => named(
                    &sym_pos,
                    g.symbols.iter().map(|s| s.name.as_str()).collect(),
                ),
            };
            let at = at.unwrap_or_else(|| self.toks[self.pos.saturating_sub(1)].clone());
            return Self::err_at(&at, e.to_string());
        }
        Ok(g)
    }

    fn value_ref(&mut self, values: &HashMap<String, NodeId>) -> PResult<NodeId> {
        let t = self.next();
        match &t.tok {
            Tok::Value(v) => match values.get(v) {
                Some(id) => Ok(*id),
                None => Self::err_at(&t, format!("value `%{v}` is not defined before this use")),
            },
            other => Self::err_at(&t, format!("expected a value like `%3`, found {other}")),
        }
    }

    fn node(&mut self, g: &mut Graph, values: &HashMap<String, NodeId>) -> PResult<NodeId> {
        let op_tok = self.peek().clone();
        let mn = self.ident("an op name")?;
        let ir_err = |e: crate::IrError| Self::err_at::<NodeId>(&op_tok, e.message);
        let source = match mn.as_str() {
            "input" => Some(Op::Input {
                name: self.string("an input name")?,
            }),
            "weight" => Some(Op::Weight {
                name: self.string("a weight name")?,
            }),
            "cache_read" => Some(Op::CacheRead {
                name: self.string("a cache name")?,
            }),
            _ => None,
        };
        if let Some(op) = source {
            self.expect_punct(':')?;
            let ty = self.ty()?;
            return g.add_source(op, ty).or_else(ir_err);
        }
        let (op, operands, ty_tok, ty) = if mn == "const" {
            let value = self.scalar()?;
            self.expect_punct(':')?;
            let ty_tok = self.peek().clone();
            let ty = self.ty()?;
            (
                Op::Constant {
                    value,
                    dtype: ty.dtype,
                },
                Vec::new(),
                ty_tok,
                ty,
            )
        } else {
            let mut operands = Vec::new();
            if let Tok::Value(_) = self.peek().tok {
                operands.push(self.value_ref(values)?);
                while self.eat_punct(',') {
                    operands.push(self.value_ref(values)?);
                }
            }
            let mut attrs = self.attrs()?;
            self.expect_punct(':')?;
            let ty_tok = self.peek().clone();
            let ty = self.ty()?;
            let op = build_op(&mn, &op_tok, &mut attrs, &ty)?;
            attrs.finish(&mn)?;
            (op, operands, ty_tok, ty)
        };
        let id = g.add(op, &operands).or_else(ir_err)?;
        let inferred = g.ty(id);
        if inferred.dtype != ty.dtype || !crate::shapes_equal(&inferred.shape, &ty.shape) {
            return Self::err_at(
                &ty_tok,
                format!("written type {ty} differs from the inferred type {inferred}"),
            );
        }
        Ok(id)
    }
}

/// Parses every `graph` in `src`, in order.
pub fn parse_graphs(src: &str) -> Result<Vec<Graph>, ParseError> {
    let mut p = Parser {
        toks: lex(src)?,
        pos: 0,
    };
    let mut graphs = Vec::new();
    while p.peek().tok != Tok::Eof {
        graphs.push(p.graph()?);
    }
    Ok(graphs)
}

impl Graph {
    /// Parses text holding exactly one graph.
    pub fn parse(src: &str) -> Result<Graph, ParseError> {
        let mut p = Parser {
            toks: lex(src)?,
            pos: 0,
        };
        let g = p.graph()?;
        if p.peek().tok != Tok::Eof {
            return p.err_here("expected end of input after the graph");
        }
        Ok(g)
    }
}

impl Dim {
    /// Parses a dimension expression as `Display` prints it; the result is not simplified, so
    /// `Dim::parse(&d.to_string()) == Ok(d)`.
    pub fn parse(src: &str) -> Result<Dim, ParseError> {
        let mut p = Parser {
            toks: lex(src)?,
            pos: 0,
        };
        let d = p.dim()?;
        if p.peek().tok != Tok::Eof {
            return p.err_here(format!("unexpected {} after the dimension", p.peek().tok));
        }
        Ok(d)
    }
}

impl std::str::FromStr for Dim {
    type Err = ParseError;
    fn from_str(s: &str) -> Result<Dim, ParseError> {
        Dim::parse(s)
    }
}
