//! SQL expressions of a chain (parsed with `sqlparser`) lowered to [`Expr`], with their inputs
//! collected into slots and their types checked, so that a chain is refused at registration
//! with the node and the column of the problem rather than failing later.

use crate::error::{Error, Result};
use crate::expr::{ArithOp, CmpOp, Expr, Func, Num, Slot};
use crate::name::Name;
use serde::{Deserialize, Serialize};
use sqlparser::ast::{
    self, BinaryOperator, FunctionArg, FunctionArgExpr, FunctionArguments, Spanned, UnaryOperator,
};
use sqlparser::dialect::GenericDialect;
use sqlparser::parser::Parser;
use std::time::Duration;

/// Aggregates over a sliding window.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum Agg {
    Avg,
    Min,
    Max,
    Count,
}

/// What a slot reads.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum Input {
    /// The latest value of a sensor's variable.
    Latest { sensor: Name, variable: Name },
    /// An aggregate of the variable's readings whose time is within `window_ms` of now.
    Window {
        sensor: Name,
        variable: Name,
        agg: Agg,
        window_ms: i64,
    },
    /// The number of readings of any variable of the sensor within `window_ms` of now; absent
    /// (not zero) when there are none. `no_data('d')` is true exactly when it is absent.
    Recent { sensor: Name, window_ms: i64 },
}

impl Input {
    /// The name a value of this slot carries in firings: `temperature`,
    /// `sensor-b.temperature`, `avg(temperature, 300s)`.
    pub fn display_name(&self, home_sensor: &str) -> String {
        let var = |sensor: &str, variable: &str| {
            if sensor == home_sensor {
                variable.to_owned()
            } else {
                format!("{sensor}.{variable}")
            }
        };
        match self {
            Input::Latest { sensor, variable } => var(sensor, variable),
            Input::Window {
                sensor,
                variable,
                agg,
                window_ms,
            } => {
                let agg = format!("{agg:?}").to_lowercase();
                format!("{agg}({}, {}s)", var(sensor, variable), window_ms / 1000)
            }
            Input::Recent { sensor, window_ms } => {
                format!("count({}.*, {}s)", sensor, window_ms / 1000)
            }
        }
    }
}

const MAX_SLOTS: usize = 64;
const MAX_WINDOW: Duration = Duration::from_secs(7 * 24 * 3600);

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Ty {
    Num,
    Bool,
    Str,
}

impl Ty {
    fn name(self) -> &'static str {
        match self {
            Ty::Num => "a number",
            Ty::Bool => "a boolean",
            Ty::Str => "a string",
        }
    }
}

/// Lowers the expressions of one chain, sharing one slot table between its nodes.
#[derive(Default)]
pub(crate) struct Lowering {
    pub(crate) inputs: Vec<Input>,
}

/// The 1-based column of the first `[` or `]` outside a quoted string, if any.
fn subscript_column(text: &str) -> Option<u64> {
    let mut quote = None;
    for (column, c) in text.chars().enumerate() {
        match (quote, c) {
            (None, '\'' | '"') => quote = Some(c),
            (Some(q), c) if c == q => quote = None,
            (None, '[' | ']') => return Some(column as u64 + 1),
            _ => {}
        }
    }
    None
}

/// Where an expression sits: the node index and the sensor its bare variables belong to.
#[derive(Clone, Copy)]
pub(crate) struct Site<'a> {
    pub(crate) node: usize,
    pub(crate) sensor: &'a str,
}

impl Lowering {
    /// Parses and lowers `text`, which must have type `want`.
    pub(crate) fn lower(&mut self, text: &str, site: Site<'_>, want: Ty) -> Result<Expr> {
        if let Some(column) = subscript_column(text) {
            // sqlparser backtracks over nested subscripts in exponential time (the fuzzer
            // found a 199-byte condition that took over 10 s); chains have none.
            return Err(Error::at(
                "expression does not parse: `[` or `]`: chain expressions have no subscripts"
                    .to_owned(),
                site.node,
                column,
            ));
        }
        let parsed = Parser::new(&GenericDialect {})
            .try_with_sql(text)
            .and_then(|mut p| {
                let e = p.parse_expr()?;
                p.expect_token(&sqlparser::tokenizer::Token::EOF)?;
                Ok(e)
            })
            .map_err(|e| {
                let message = e.to_string();
                let column = column_of(&message);
                let message = message.trim_start_matches("sql parser error: ").to_owned();
                Error::at(
                    format!("expression does not parse: {message}"),
                    site.node,
                    column,
                )
            })?;
        let (expr, ty) = self.expr(&parsed, site)?;
        if ty != want {
            return Err(Error::at(
                format!("expression is {}, expected {}", ty.name(), want.name()),
                site.node,
                pos(&parsed),
            ));
        }
        Ok(expr)
    }

    fn slot(&mut self, input: Input, site: Site<'_>, at: &ast::Expr) -> Result<Slot> {
        if let Some(i) = self.inputs.iter().position(|x| *x == input) {
            return Ok(i as Slot);
        }
        if self.inputs.len() >= MAX_SLOTS {
            return Err(Error::at(
                format!("a chain reads at most {MAX_SLOTS} values"),
                site.node,
                pos(at),
            ));
        }
        self.inputs.push(input);
        Ok((self.inputs.len() - 1) as Slot)
    }

    fn typed(&mut self, e: &ast::Expr, site: Site<'_>, want: Ty) -> Result<Expr> {
        let (expr, ty) = self.expr(e, site)?;
        if ty == want {
            Ok(expr)
        } else {
            Err(Error::at(
                format!("expected {}, found {}", want.name(), ty.name()),
                site.node,
                pos(e),
            ))
        }
    }

    fn expr(&mut self, e: &ast::Expr, site: Site<'_>) -> Result<(Expr, Ty)> {
        let unsupported = |what: &str| {
            Err(Error::at(
                format!("{what} is not supported in rule expressions"),
                site.node,
                pos(e),
            ))
        };
        Ok(match e {
            ast::Expr::Identifier(id) => {
                let input = Input::Latest {
                    sensor: Name::new(site.sensor),
                    variable: Name::new(&id.value),
                };
                (Expr::Slot(self.slot(input, site, e)?), Ty::Num)
            }
            ast::Expr::CompoundIdentifier(parts) => match parts.as_slice() {
                [sensor, variable] => {
                    let input = Input::Latest {
                        sensor: Name::new(&sensor.value),
                        variable: Name::new(&variable.value),
                    };
                    (Expr::Slot(self.slot(input, site, e)?), Ty::Num)
                }
                _ => return unsupported("a name with more than two parts"),
            },
            ast::Expr::Value(v) => match &v.value {
                ast::Value::Number(n, _) => match n.parse::<f64>() {
                    Ok(n) if n.is_finite() => (Expr::Num(Num(n)), Ty::Num),
                    _ => return Err(Error::at(format!("bad number {n}"), site.node, pos(e))),
                },
                ast::Value::Boolean(b) => (Expr::Bool(*b), Ty::Bool),
                ast::Value::SingleQuotedString(_) => (Expr::Bool(false), Ty::Str),
                ast::Value::Null => return unsupported("NULL"),
                _ => return unsupported("this literal"),
            },
            ast::Expr::Nested(inner) => self.expr(inner, site)?,
            ast::Expr::UnaryOp { op, expr } => match op {
                UnaryOperator::Minus => (
                    Expr::Neg(Box::new(self.typed(expr, site, Ty::Num)?)),
                    Ty::Num,
                ),
                UnaryOperator::Plus => (self.typed(expr, site, Ty::Num)?, Ty::Num),
                UnaryOperator::Not => (
                    Expr::Not(Box::new(self.typed(expr, site, Ty::Bool)?)),
                    Ty::Bool,
                ),
                _ => return unsupported(&format!("operator {op}")),
            },
            ast::Expr::BinaryOp { left, op, right } => self.binary(e, left, op, right, site)?,
            ast::Expr::Between {
                expr,
                negated,
                low,
                high,
            } => (
                Expr::Between {
                    expr: Box::new(self.comparable(expr, site)?),
                    low: Box::new(self.comparable(low, site)?),
                    high: Box::new(self.comparable(high, site)?),
                    negated: *negated,
                },
                Ty::Bool,
            ),
            ast::Expr::InList {
                expr,
                list,
                negated,
            } => {
                let expr = Box::new(self.comparable(expr, site)?);
                let list = list
                    .iter()
                    .map(|x| self.comparable(x, site))
                    .collect::<Result<_>>()?;
                (
                    Expr::InList {
                        expr,
                        list,
                        negated: *negated,
                    },
                    Ty::Bool,
                )
            }
            ast::Expr::Function(f) => self.function(e, f, site)?,
            _ => return unsupported("this expression"),
        })
    }

    /// A number in a comparison: a string there is a type error worth naming.
    fn comparable(&mut self, e: &ast::Expr, site: Site<'_>) -> Result<Expr> {
        let (expr, ty) = self.expr(e, site)?;
        match ty {
            Ty::Num => Ok(expr),
            Ty::Str => Err(Error::at(
                "cannot compare a number with a string",
                site.node,
                pos(e),
            )),
            Ty::Bool => Err(Error::at(
                "cannot compare a boolean, expected a number",
                site.node,
                pos(e),
            )),
        }
    }

    fn binary(
        &mut self,
        e: &ast::Expr,
        left: &ast::Expr,
        op: &BinaryOperator,
        right: &ast::Expr,
        site: Site<'_>,
    ) -> Result<(Expr, Ty)> {
        let arith = match op {
            BinaryOperator::Plus => Some(ArithOp::Add),
            BinaryOperator::Minus => Some(ArithOp::Sub),
            BinaryOperator::Multiply => Some(ArithOp::Mul),
            BinaryOperator::Divide => Some(ArithOp::Div),
            BinaryOperator::Modulo => Some(ArithOp::Mod),
            _ => None,
        };
        if let Some(op) = arith {
            let a = self.typed(left, site, Ty::Num)?;
            let b = self.typed(right, site, Ty::Num)?;
            if matches!(op, ArithOp::Div | ArithOp::Mod) && is_constant_zero(&b) {
                return Err(Error::at(
                    "division by a constant zero",
                    site.node,
                    pos(right),
                ));
            }
            return Ok((Expr::Arith(op, Box::new(a), Box::new(b)), Ty::Num));
        }
        let cmp = match op {
            BinaryOperator::Eq => Some(CmpOp::Eq),
            BinaryOperator::NotEq => Some(CmpOp::NotEq),
            BinaryOperator::Lt => Some(CmpOp::Lt),
            BinaryOperator::LtEq => Some(CmpOp::LtEq),
            BinaryOperator::Gt => Some(CmpOp::Gt),
            BinaryOperator::GtEq => Some(CmpOp::GtEq),
            _ => None,
        };
        if let Some(op) = cmp {
            let a = self.comparable(left, site)?;
            let b = self.comparable(right, site)?;
            return Ok((Expr::Cmp(op, Box::new(a), Box::new(b)), Ty::Bool));
        }
        let (a, b) = match op {
            BinaryOperator::And | BinaryOperator::Or => (
                self.typed(left, site, Ty::Bool)?,
                self.typed(right, site, Ty::Bool)?,
            ),
            _ => {
                return Err(Error::at(
                    format!("operator {op} is not supported in rule expressions"),
                    site.node,
                    pos(e),
                ))
            }
        };
        let join = |a: Expr, b: Expr, and: bool| {
            let mut items = Vec::new();
            for x in [a, b] {
                match x {
                    Expr::And(v) if and => items.extend(v),
                    Expr::Or(v) if !and => items.extend(v),
                    x => items.push(x),
                }
            }
            if and {
                Expr::And(items)
            } else {
                Expr::Or(items)
            }
        };
        Ok((join(a, b, matches!(op, BinaryOperator::And)), Ty::Bool))
    }

    fn function(&mut self, e: &ast::Expr, f: &ast::Function, site: Site<'_>) -> Result<(Expr, Ty)> {
        let name = f.name.to_string().to_lowercase();
        let args: Vec<&ast::Expr> = match &f.args {
            FunctionArguments::List(list)
                if list.duplicate_treatment.is_none() && list.clauses.is_empty() =>
            {
                let mut args = Vec::new();
                for a in &list.args {
                    match a {
                        FunctionArg::Unnamed(FunctionArgExpr::Expr(x)) => args.push(x),
                        _ => {
                            return Err(Error::at(
                                format!("bad argument to {name}"),
                                site.node,
                                pos(e),
                            ))
                        }
                    }
                }
                args
            }
            FunctionArguments::None => Vec::new(),
            _ => {
                return Err(Error::at(
                    format!("bad arguments to {name}"),
                    site.node,
                    pos(e),
                ))
            }
        };
        if f.filter.is_some() || f.over.is_some() || !f.within_group.is_empty() {
            return Err(Error::at(
                format!("{name}: FILTER, OVER and WITHIN GROUP are not supported"),
                site.node,
                pos(e),
            ));
        }
        let agg = match name.as_str() {
            "avg" => Some(Agg::Avg),
            "min" => Some(Agg::Min),
            "max" => Some(Agg::Max),
            "count" => Some(Agg::Count),
            _ => None,
        };
        if let Some(agg) = agg {
            let [var, window] = args.as_slice() else {
                return Err(Error::at(
                    format!(
                        "{name} takes a variable and a window, as in {name}(temperature, '5m')"
                    ),
                    site.node,
                    pos(e),
                ));
            };
            let (sensor, variable) = match var {
                ast::Expr::Identifier(id) => (Name::new(site.sensor), Name::new(&id.value)),
                ast::Expr::CompoundIdentifier(p) if p.len() == 2 => {
                    (Name::new(&p[0].value), Name::new(&p[1].value))
                }
                _ => {
                    return Err(Error::at(
                        format!("{name}: the first argument must be a variable"),
                        site.node,
                        pos(var),
                    ))
                }
            };
            let window_ms = window_arg(window, site)?;
            let slot = self.slot(
                Input::Window {
                    sensor,
                    variable,
                    agg,
                    window_ms,
                },
                site,
                e,
            )?;
            return Ok((Expr::Slot(slot), Ty::Num));
        }
        if name == "no_data" {
            let [window] = args.as_slice() else {
                return Err(Error::at(
                    "no_data takes a window, as in no_data('10m')",
                    site.node,
                    pos(e),
                ));
            };
            let window_ms = window_arg(window, site)?;
            let slot = self.slot(
                Input::Recent {
                    sensor: Name::new(site.sensor),
                    window_ms,
                },
                site,
                e,
            )?;
            // Absent when nothing arrived: see `Input::Recent`.
            return Ok((
                Expr::Cmp(
                    CmpOp::Eq,
                    Box::new(Expr::Slot(slot)),
                    Box::new(Expr::Num(Num(0.0))),
                ),
                Ty::Bool,
            ));
        }
        let Some((func, arity)) = Func::lookup(&name) else {
            return Err(Error::at(
                format!("unknown function {name}"),
                site.node,
                pos(e),
            ));
        };
        if arity.is_some_and(|n| n != args.len()) || args.is_empty() {
            return Err(Error::at(
                format!(
                    "{name} takes {} argument(s), found {}",
                    arity.unwrap_or(1),
                    args.len()
                ),
                site.node,
                pos(e),
            ));
        }
        let args = args
            .iter()
            .map(|a| self.typed(a, site, Ty::Num))
            .collect::<Result<_>>()?;
        Ok((Expr::Call(func, args), Ty::Num))
    }
}

fn window_arg(e: &ast::Expr, site: Site<'_>) -> Result<i64> {
    let text = match e {
        ast::Expr::Value(v) => match &v.value {
            ast::Value::SingleQuotedString(s) => s.as_str(),
            _ => "",
        },
        _ => "",
    };
    match humantime::parse_duration(text) {
        Ok(d) if !d.is_zero() && d <= MAX_WINDOW => Ok(d.as_millis() as i64),
        _ => Err(Error::at(
            "a window is a quoted duration between 1ms and 7 days, as in '5m'",
            site.node,
            pos(e),
        )),
    }
}

fn is_constant_zero(e: &Expr) -> bool {
    let mut slots = Vec::new();
    e.slots(&mut slots);
    slots.is_empty() && e.num(&|_| None).is_ok_and(|v| v == 0.0)
}

fn pos(e: &ast::Expr) -> u64 {
    e.span().start.column
}

/// The column in a sqlparser message ("... at Line: 1, Column: 12").
fn column_of(message: &str) -> u64 {
    message
        .rsplit("Column: ")
        .next()
        .and_then(|rest| rest.split(|c: char| !c.is_ascii_digit()).next())
        .and_then(|n| n.parse().ok())
        .unwrap_or(0)
}
