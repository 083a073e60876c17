//! Reading the store for a page: SQL through [`portcullis_audit::query`] under the page
//! limits, the Arrow result turned into rows of plain values, and the compliance history.

use arrow::array::{
    Array, ArrayRef, AsArray, BooleanArray, RecordBatch, TimestampMicrosecondArray,
};
use arrow::datatypes::{DataType, Float64Type, Int64Type, TimeUnit};
use arrow::util::display::{ArrayFormatter, FormatOptions};
use chrono::{DateTime, Utc};
use portcullis_audit::query::query_with_limits;
use portcullis_audit::segment::parse_segment_file_name;

use crate::compliance::history::Summary;
use crate::compliance::{self, Report};
use crate::{Dashboard, PageError};

/// One value of a result.
#[derive(Clone, Debug, PartialEq)]
pub(crate) enum Cell {
    Null,
    Text(String),
    Int(i64),
    Float(f64),
    Bool(bool),
    Time(DateTime<Utc>),
}

impl Cell {
    pub(crate) fn text(&self) -> Option<&str> {
        match self {
            Cell::Text(text) => Some(text),
            _ => None,
        }
    }

    pub(crate) fn int(&self) -> Option<i64> {
        match self {
            Cell::Int(number) => Some(*number),
            _ => None,
        }
    }

    /// A count: a number that is not negative, else 0.
    pub(crate) fn count(&self) -> u64 {
        self.int()
            .and_then(|number| u64::try_from(number).ok())
            .unwrap_or(0)
    }

    pub(crate) fn time(&self) -> Option<DateTime<Utc>> {
        match self {
            Cell::Time(time) => Some(*time),
            _ => None,
        }
    }

    /// For people; `None` for null.
    pub(crate) fn show(&self) -> Option<String> {
        match self {
            Cell::Null => None,
            Cell::Text(text) => Some(text.clone()),
            Cell::Int(number) => Some(number.to_string()),
            Cell::Float(number) => Some(number.to_string()),
            Cell::Bool(value) => Some(value.to_string()),
            Cell::Time(time) => Some(crate::format::time(*time)),
        }
    }
}

const NULL: Cell = Cell::Null;

/// A query's result.
#[derive(Debug, Default)]
pub(crate) struct Table {
    pub(crate) columns: Vec<String>,
    pub(crate) rows: Vec<Vec<Cell>>,
}

impl Table {
    pub(crate) fn from_batches(batches: &[RecordBatch]) -> Table {
        let columns = batches
            .first()
            .map(|batch| {
                let schema = batch.schema();
                schema.fields().iter().map(|f| f.name().clone()).collect()
            })
            .unwrap_or_default();
        let mut rows = Vec::new();
        for batch in batches {
            let cells: Vec<Vec<Cell>> = batch.columns().iter().map(column_cells).collect();
            for row in 0..batch.num_rows() {
                rows.push(
                    cells
                        .iter()
                        .map(|column| column.get(row).cloned().unwrap_or(Cell::Null))
                        .collect(),
                );
            }
        }
        Table { columns, rows }
    }

    /// The value at `row`, `column`; null when there is none.
    #[cfg(test)]
    pub(crate) fn cell(&self, row: usize, column: usize) -> &Cell {
        self.rows
            .get(row)
            .and_then(|cells| cells.get(column))
            .unwrap_or(&NULL)
    }
}

/// The value of `row` in `column`; null past its end.
pub(crate) fn at(row: &[Cell], column: usize) -> &Cell {
    row.get(column).unwrap_or(&NULL)
}

/// `text` with the characters that would make a page show something other than the text
/// written in their place as `[U+202E]`: every [`hides_in_text`] character — controls, line
/// breaks and tabs (which a table cell shows as a space), the bidirectional overrides and
/// isolates, with which a caller's claim could show `gnp.exe` as `exe.png`, and the invisible
/// characters that make one text look like another. A `[` that begins `[U+` in the text itself
/// is written `[U+005B]`, so that the text `[U+202E]` and the character never look alike.
/// Events carry text from any caller.
///
/// [`hides_in_text`]: portcullis_audit::query::hides_in_text
pub(crate) fn visible(text: &str) -> String {
    use portcullis_audit::query::hides_in_text;
    const MARK: &str = "[U+";
    if !text.contains(hides_in_text) && !text.contains(MARK) {
        return text.to_owned();
    }
    let mut out = String::with_capacity(text.len() + 16);
    for (at, c) in text.char_indices() {
        let looks_like_a_mark = c == '[' && text[at + 1..].starts_with(&MARK[1..]);
        if hides_in_text(c) || looks_like_a_mark {
            out.push_str(&format!("{MARK}{:04X}]", u32::from(c)));
        } else {
            out.push(c);
        }
    }
    out
}

fn column_cells(array: &ArrayRef) -> Vec<Cell> {
    let cells = |value: &dyn Fn(usize) -> Cell| {
        (0..array.len())
            .map(|row| {
                if array.is_null(row) {
                    Cell::Null
                } else {
                    value(row)
                }
            })
            .collect()
    };
    match array.data_type() {
        DataType::Utf8 => {
            let strings = array.as_string::<i32>();
            cells(&|row| Cell::Text(visible(strings.value(row))))
        }
        DataType::LargeUtf8 => {
            let strings = array.as_string::<i64>();
            cells(&|row| Cell::Text(visible(strings.value(row))))
        }
        DataType::Utf8View => {
            let strings = array.as_string_view();
            cells(&|row| Cell::Text(visible(strings.value(row))))
        }
        DataType::Boolean => {
            let Some(values) = array.as_any().downcast_ref::<BooleanArray>() else {
                return formatted(array);
            };
            cells(&|row| Cell::Bool(values.value(row)))
        }
        DataType::Int8 | DataType::Int16 | DataType::Int32 | DataType::Int64 => {
            match arrow::compute::cast(array, &DataType::Int64) {
                Ok(cast) => {
                    let values = cast.as_primitive::<Int64Type>();
                    cells(&|row| Cell::Int(values.value(row)))
                }
                Err(_) => formatted(array),
            }
        }
        DataType::UInt8 | DataType::UInt16 | DataType::UInt32 | DataType::UInt64 => {
            unsigned_cells(array)
        }
        DataType::Float32 | DataType::Float64 => {
            match arrow::compute::cast(array, &DataType::Float64) {
                Ok(cast) => {
                    let values = cast.as_primitive::<Float64Type>();
                    cells(&|row| Cell::Float(values.value(row)))
                }
                Err(_) => formatted(array),
            }
        }
        DataType::Timestamp(_, _) => time_cells(array),
        _ => formatted(array),
    }
}

/// Unsigned counts (`count(*)` is `Int64`, but a sum may not be) as signed, saturating.
fn unsigned_cells(array: &ArrayRef) -> Vec<Cell> {
    let Ok(cast) = arrow::compute::cast(array, &DataType::Decimal128(38, 0)) else {
        return formatted(array);
    };
    let values = cast.as_primitive::<arrow::datatypes::Decimal128Type>();
    (0..array.len())
        .map(|row| match array.is_null(row) {
            true => Cell::Null,
            false => Cell::Int(i64::try_from(values.value(row)).unwrap_or(i64::MAX)),
        })
        .collect()
}

fn time_cells(array: &ArrayRef) -> Vec<Cell> {
    let micros = DataType::Timestamp(TimeUnit::Microsecond, None);
    let Ok(cast) = arrow::compute::cast(array, &micros) else {
        return formatted(array);
    };
    let Some(values) = cast.as_any().downcast_ref::<TimestampMicrosecondArray>() else {
        return formatted(array);
    };
    (0..values.len())
        .map(|row| {
            if values.is_null(row) {
                return Cell::Null;
            }
            DateTime::from_timestamp_micros(values.value(row)).map_or(Cell::Null, Cell::Time)
        })
        .collect()
}

/// Any other type, as Arrow displays it.
fn formatted(array: &ArrayRef) -> Vec<Cell> {
    let options = FormatOptions::default();
    let Ok(formatter) = ArrayFormatter::try_new(array.as_ref(), &options) else {
        return vec![Cell::Null; array.len()];
    };
    (0..array.len())
        .map(|row| match array.is_null(row) {
            true => Cell::Null,
            false => Cell::Text(formatter.value(row).to_string()),
        })
        .collect()
}

impl Dashboard {
    /// Runs `sql` under the page limits.
    pub(crate) async fn query(&self, sql: &str) -> Result<Table, PageError> {
        let batches = query_with_limits(&self.data_dir, sql, self.limits).await?;
        Ok(Table::from_batches(&batches))
    }

    /// The highest `seq` in the sealed segments, from their names; 0 when there is none (or
    /// the directory cannot be listed, which the query that follows will report).
    pub(crate) async fn highest_sealed_seq(&self) -> i64 {
        let events = self.data_dir.join(portcullis_audit::store::EVENTS_DIR);
        let highest = tokio::task::spawn_blocking(move || highest_in(&events)).await;
        highest.map_or(0, |seq| i64::try_from(seq).unwrap_or(i64::MAX))
    }

    /// The newest compliance report, if one was made.
    pub(crate) async fn latest_report(&self) -> Result<Option<Report>, PageError> {
        let data_dir = self.data_dir.clone();
        blocking(move || compliance::history::latest(&data_dir)).await
    }

    /// The newest `limit` evaluations of the history (each control's status), newest first.
    pub(crate) async fn history(&self, limit: usize) -> Result<Vec<Summary>, PageError> {
        let data_dir = self.data_dir.clone();
        blocking(move || compliance::history::list(&data_dir, limit)).await
    }
}

/// The highest `seq` the segment files under `events` (`date=…/seg-FIRST-LAST.parquet`) name.
fn highest_in(events: &std::path::Path) -> u64 {
    let Ok(dates) = std::fs::read_dir(events) else {
        return 0;
    };
    let mut highest = 0;
    for date in dates.flatten() {
        let Ok(segments) = std::fs::read_dir(date.path()) else {
            continue;
        };
        for segment in segments.flatten() {
            let name = segment.file_name();
            if let Some((_, last)) = name.to_str().and_then(parse_segment_file_name) {
                highest = highest.max(last);
            }
        }
    }
    highest
}

/// Runs a read of the history on a blocking thread.
async fn blocking<T: Send + 'static, E: std::fmt::Display + Send + 'static>(
    read: impl FnOnce() -> Result<T, E> + Send + 'static,
) -> Result<T, PageError> {
    match tokio::task::spawn_blocking(read).await {
        Ok(result) => result.map_err(|error| PageError::History(error.to_string())),
        Err(error) => Err(PageError::History(error.to_string())),
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn bidirectional_overrides_and_controls_are_shown_not_obeyed() {
        assert_eq!(super::visible("gnp\u{202e}.exe"), "gnp[U+202E].exe");
        assert_eq!(
            super::visible("a\u{1b}[31m\tb\n"),
            "a[U+001B][31m[U+0009]b[U+000A]"
        );
        // The text of a mark is not the character it stands for.
        assert_eq!(super::visible("gnp[U+202E].exe"), "gnp[U+005B]U+202E].exe");
        assert_eq!(super::visible("a\u{a0}b [x]"), "a[U+00A0]b [x]");
        assert_eq!(super::visible("plain ünïcode"), "plain ünïcode");
    }
}
