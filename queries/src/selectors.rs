//! `first(value, time)` and `last(value, time)`: the value at the earliest or the latest time
//! of each group, as InfluxDB's selectors give it (`SELECT sensor, last(value, time) FROM
//! readings GROUP BY sensor`). Rows whose value or time is null are skipped; among rows of the
//! same time, which one is taken is not specified. Unlike `first_value(value ORDER BY time)`,
//! no sort is needed: each partition keeps one candidate, and partitions merge by time.

use std::sync::Arc;

use arrow::array::{Array, ArrayRef, AsArray};
use arrow::compute::cast;
use arrow::datatypes::{DataType, Field, FieldRef, Int64Type};
use datafusion::common::{plan_err, Result, ScalarValue};
use datafusion::logical_expr::function::{AccumulatorArgs, StateFieldsArgs};
use datafusion::logical_expr::utils::format_state_name;
use datafusion::logical_expr::{
    Accumulator, AggregateUDF, AggregateUDFImpl, Signature, Volatility,
};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Which {
    First,
    Last,
}

impl Which {
    /// Whether a row at `candidate` replaces the one held, at `held`.
    fn better(self, candidate: i64, held: i64) -> bool {
        match self {
            Which::First => candidate < held,
            Which::Last => candidate > held,
        }
    }
}

#[derive(Debug, PartialEq, Eq, Hash)]
struct Selector {
    which: Which,
    signature: Signature,
}

/// `first(value, time)` and `last(value, time)`, to register with a session.
pub(crate) fn selectors() -> [AggregateUDF; 2] {
    [Which::First, Which::Last].map(|which| {
        AggregateUDF::from(Selector {
            which,
            signature: Signature::any(2, Volatility::Immutable),
        })
    })
}

impl AggregateUDFImpl for Selector {
    fn name(&self) -> &str {
        match self.which {
            Which::First => "first",
            Which::Last => "last",
        }
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn return_type(&self, args: &[DataType]) -> Result<DataType> {
        match args {
            [value, DataType::Timestamp(..) | DataType::Int64 | DataType::Date32 | DataType::Date64] => {
                Ok(value.clone())
            }
            [_, other] => plan_err!(
                "{}(value, time): time must be a timestamp, not {other}",
                self.name()
            ),
            _ => plan_err!("{}(value, time) takes two arguments", self.name()),
        }
    }

    fn accumulator(&self, args: AccumulatorArgs) -> Result<Box<dyn Accumulator>> {
        Ok(Box::new(Candidate {
            which: self.which,
            value: ScalarValue::try_from(args.return_field.data_type())?,
            time: None,
        }))
    }

    fn state_fields(&self, args: StateFieldsArgs) -> Result<Vec<FieldRef>> {
        Ok(vec![
            Arc::new(Field::new(
                format_state_name(args.name, "value"),
                args.return_type().clone(),
                true,
            )),
            Arc::new(Field::new(
                format_state_name(args.name, "time"),
                DataType::Int64,
                true,
            )),
        ])
    }
}

/// The row held so far: its value and its time (in the time column's own unit).
#[derive(Debug)]
struct Candidate {
    which: Which,
    value: ScalarValue,
    time: Option<i64>,
}

impl Candidate {
    /// Takes the best row of `values` and `times` if it beats the one held.
    fn offer(&mut self, values: &ArrayRef, times: &ArrayRef) -> Result<()> {
        let times = cast(times, &DataType::Int64)?;
        let times = times.as_primitive::<Int64Type>();
        let mut best: Option<(i64, usize)> = None;
        for i in 0..values.len() {
            if values.is_null(i) || times.is_null(i) {
                continue;
            }
            let t = times.value(i);
            if best.is_none_or(|(held, _)| self.which.better(t, held)) {
                best = Some((t, i));
            }
        }
        if let Some((t, i)) = best {
            if self.time.is_none_or(|held| self.which.better(t, held)) {
                self.time = Some(t);
                self.value = ScalarValue::try_from_array(values, i)?;
            }
        }
        Ok(())
    }
}

impl Accumulator for Candidate {
    fn update_batch(&mut self, values: &[ArrayRef]) -> Result<()> {
        self.offer(&values[0], &values[1])
    }

    fn evaluate(&mut self) -> Result<ScalarValue> {
        Ok(self.value.clone())
    }

    fn size(&self) -> usize {
        std::mem::size_of_val(self) + self.value.size() - std::mem::size_of_val(&self.value)
    }

    fn state(&mut self) -> Result<Vec<ScalarValue>> {
        Ok(vec![self.value.clone(), ScalarValue::Int64(self.time)])
    }

    fn merge_batch(&mut self, states: &[ArrayRef]) -> Result<()> {
        self.offer(&states[0], &states[1])
    }
}
