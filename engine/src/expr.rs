//! The compiled form of a condition or transform: a small expression tree over input slots.
//!
//! Expressions are data (they travel inside dataflow records, which must be `Ord` and
//! serializable), so they are a tree interpreted by [`Expr::eval`], not closures. Evaluation
//! never panics: a missing input, a division by zero or a NaN is an [`EvalError`].

use serde::{Deserialize, Serialize};
use std::cmp::Ordering;

/// An `f64` with a total order, so that it can live in dataflow records.
#[derive(Clone, Copy, Debug, Default, Serialize, Deserialize)]
pub struct Num(pub f64);

impl PartialEq for Num {
    fn eq(&self, other: &Self) -> bool {
        self.0.total_cmp(&other.0) == Ordering::Equal
    }
}
impl Eq for Num {}
impl PartialOrd for Num {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Num {
    fn cmp(&self, other: &Self) -> Ordering {
        self.0.total_cmp(&other.0)
    }
}

/// Index of an input of a chain: a latest value, a window aggregate or a `no_data` flag.
pub type Slot = u16;

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub enum ArithOp {
    Add,
    Sub,
    Mul,
    Div,
    Mod,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub enum CmpOp {
    Eq,
    NotEq,
    Lt,
    LtEq,
    Gt,
    GtEq,
}

/// Scalar functions over numbers.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub enum Func {
    Abs,
    Sqrt,
    Ln,
    Exp,
    Round,
    Floor,
    Ceil,
    Power,
    Least,
    Greatest,
}

impl Func {
    /// The function of this SQL name, with its arity (`None`: one or more arguments).
    pub fn lookup(name: &str) -> Option<(Func, Option<usize>)> {
        Some(match name {
            "abs" => (Func::Abs, Some(1)),
            "sqrt" => (Func::Sqrt, Some(1)),
            "ln" => (Func::Ln, Some(1)),
            "exp" => (Func::Exp, Some(1)),
            "round" => (Func::Round, Some(1)),
            "floor" => (Func::Floor, Some(1)),
            "ceil" | "ceiling" => (Func::Ceil, Some(1)),
            "power" | "pow" => (Func::Power, Some(2)),
            "least" => (Func::Least, None),
            "greatest" => (Func::Greatest, None),
            _ => return None,
        })
    }
}

#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub enum Expr {
    Num(Num),
    Bool(bool),
    Slot(Slot),
    Neg(Box<Expr>),
    Not(Box<Expr>),
    Arith(ArithOp, Box<Expr>, Box<Expr>),
    Cmp(CmpOp, Box<Expr>, Box<Expr>),
    And(Vec<Expr>),
    Or(Vec<Expr>),
    Between {
        expr: Box<Expr>,
        low: Box<Expr>,
        high: Box<Expr>,
        negated: bool,
    },
    InList {
        expr: Box<Expr>,
        list: Vec<Expr>,
        negated: bool,
    },
    Call(Func, Vec<Expr>),
}

/// The value of an expression.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Value {
    Num(f64),
    Bool(bool),
}

/// Why an expression has no value. `Missing` is not an error: a chain waits for its inputs.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum EvalError {
    Missing,
    DivisionByZero,
    NotANumber,
    TypeMismatch,
}

impl std::fmt::Display for EvalError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            EvalError::Missing => "an input has no value yet",
            EvalError::DivisionByZero => "division by zero",
            EvalError::NotANumber => "result is not a number",
            EvalError::TypeMismatch => "type mismatch",
        })
    }
}

type Eval<T> = Result<T, EvalError>;

impl Expr {
    /// Evaluates with `input(slot)` giving each slot's value, if it has one.
    pub fn eval(&self, input: &dyn Fn(Slot) -> Option<f64>) -> Eval<Value> {
        Ok(match self {
            Expr::Num(n) => Value::Num(n.0),
            Expr::Bool(b) => Value::Bool(*b),
            Expr::Slot(s) => Value::Num(input(*s).ok_or(EvalError::Missing)?),
            Expr::Neg(e) => Value::Num(-e.num(input)?),
            Expr::Not(e) => Value::Bool(!e.test(input)?),
            Expr::Arith(op, a, b) => Value::Num(arith(*op, a.num(input)?, b.num(input)?)?),
            Expr::Cmp(op, a, b) => Value::Bool(compare(*op, a.num(input)?, b.num(input)?)?),
            Expr::And(terms) => connective(terms, false, input)?,
            Expr::Or(terms) => connective(terms, true, input)?,
            Expr::Between {
                expr,
                low,
                high,
                negated,
            } => {
                let v = expr.num(input)?;
                let inside = compare(CmpOp::GtEq, v, low.num(input)?)?
                    && compare(CmpOp::LtEq, v, high.num(input)?)?;
                Value::Bool(inside != *negated)
            }
            Expr::InList {
                expr,
                list,
                negated,
            } => {
                let v = expr.num(input)?;
                let mut found = false;
                for item in list {
                    if compare(CmpOp::Eq, v, item.num(input)?)? {
                        found = true;
                        break;
                    }
                }
                Value::Bool(found != *negated)
            }
            Expr::Call(func, args) => {
                let mut values = Vec::with_capacity(args.len());
                for a in args {
                    values.push(a.num(input)?);
                }
                Value::Num(call(*func, &values)?)
            }
        })
    }

    /// Evaluates a boolean expression.
    pub fn test(&self, input: &dyn Fn(Slot) -> Option<f64>) -> Eval<bool> {
        match self.eval(input)? {
            Value::Bool(b) => Ok(b),
            Value::Num(_) => Err(EvalError::TypeMismatch),
        }
    }

    /// Evaluates a numeric expression.
    pub fn num(&self, input: &dyn Fn(Slot) -> Option<f64>) -> Eval<f64> {
        match self.eval(input)? {
            Value::Num(n) => Ok(n),
            Value::Bool(_) => Err(EvalError::TypeMismatch),
        }
    }

    /// Every slot this expression reads, in order of first use.
    pub fn slots(&self, out: &mut Vec<Slot>) {
        match self {
            Expr::Num(_) | Expr::Bool(_) => {}
            Expr::Slot(s) => {
                if !out.contains(s) {
                    out.push(*s);
                }
            }
            Expr::Neg(e) | Expr::Not(e) => e.slots(out),
            Expr::Arith(_, a, b) | Expr::Cmp(_, a, b) => {
                a.slots(out);
                b.slots(out);
            }
            Expr::And(v) | Expr::Or(v) | Expr::Call(_, v) => v.iter().for_each(|e| e.slots(out)),
            Expr::Between {
                expr, low, high, ..
            } => {
                expr.slots(out);
                low.slots(out);
                high.slots(out);
            }
            Expr::InList { expr, list, .. } => {
                expr.slots(out);
                list.iter().for_each(|e| e.slots(out));
            }
        }
    }
}

/// Kleene AND (`decisive` false) or OR (`decisive` true): a term with the decisive value wins
/// even when another term is missing or failing; otherwise the first error, if any.
fn connective(terms: &[Expr], decisive: bool, input: &dyn Fn(Slot) -> Option<f64>) -> Eval<Value> {
    let mut first_error = None;
    for t in terms {
        match t.test(input) {
            Ok(b) if b == decisive => return Ok(Value::Bool(decisive)),
            Ok(_) => {}
            Err(e) => {
                first_error.get_or_insert(e);
            }
        }
    }
    match first_error {
        Some(e) => Err(e),
        None => Ok(Value::Bool(!decisive)),
    }
}

fn finite(v: f64) -> Eval<f64> {
    if v.is_nan() {
        Err(EvalError::NotANumber)
    } else {
        Ok(v)
    }
}

fn arith(op: ArithOp, a: f64, b: f64) -> Eval<f64> {
    finite(match op {
        ArithOp::Add => a + b,
        ArithOp::Sub => a - b,
        ArithOp::Mul => a * b,
        ArithOp::Div | ArithOp::Mod if b == 0.0 => return Err(EvalError::DivisionByZero),
        ArithOp::Div => a / b,
        ArithOp::Mod => a % b,
    })
}

pub(crate) fn compare(op: CmpOp, a: f64, b: f64) -> Eval<bool> {
    let a = finite(a)?;
    let b = finite(b)?;
    Ok(match op {
        CmpOp::Eq => a == b,
        CmpOp::NotEq => a != b,
        CmpOp::Lt => a < b,
        CmpOp::LtEq => a <= b,
        CmpOp::Gt => a > b,
        CmpOp::GtEq => a >= b,
    })
}

fn call(func: Func, v: &[f64]) -> Eval<f64> {
    let arg = |i: usize| v.get(i).copied().ok_or(EvalError::TypeMismatch);
    finite(match func {
        Func::Abs => arg(0)?.abs(),
        Func::Sqrt => arg(0)?.sqrt(),
        Func::Ln => arg(0)?.ln(),
        Func::Exp => arg(0)?.exp(),
        Func::Round => arg(0)?.round(),
        Func::Floor => arg(0)?.floor(),
        Func::Ceil => arg(0)?.ceil(),
        Func::Power => arg(0)?.powf(arg(1)?),
        Func::Least => v.iter().copied().fold(f64::INFINITY, f64::min),
        Func::Greatest => v.iter().copied().fold(f64::NEG_INFINITY, f64::max),
    })
}
