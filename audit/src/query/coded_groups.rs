//! The first stage of an aggregation, with its groups found through per-column codes.
//!
//! Audit questions group by few columns of few values: `GROUP BY date, decision` has sixty
//! groups over ten million events. DataFusion finds the group of every row by hashing all its
//! key columns together and comparing the row with the group it lands on, column by column;
//! for `date, decision` that took over half of the question's processor time. Here each key
//! column is coded on its own first, through what the column is:
//!
//! - a text value of at most 12 bytes lies whole in its Arrow view, so the view itself (a
//!   16-byte integer) is the key, and no text is read;
//! - a longer text value's view names where its bytes lie; within a batch, two rows with the
//!   same view hold the same text (a dictionary-encoded Parquet column decodes every repeat of a
//!   value to the same view), so the text is hashed once per distinct view and batch;
//! - integers, dates, times and timestamps are keyed by their bits;
//! - a column of one value in the whole batch (a partition column, always) is coded once;
//! - a key met lately is found in a small table indexed by a hash of the key ([`Recent`]),
//!   without a lookup in the column's map.
//!
//! Several columns' codes are then combined pairwise into dense group numbers (by a table
//! while both codes are small, by a map beyond), and the aggregates are DataFusion's own
//! accumulators, fed those numbers: they hold the same partial states DataFusion's first stage
//! would, and its final stage merges them unchanged.
//!
//! [`CodedGroups`] replaces only a first stage (`AggregateMode::Partial`) whose keys are of
//! those types and whose aggregates need no order, no `DISTINCT` and no limit. Like
//! DataFusion's first stage, [`CodedGroupsExec`] hands its groups on early when the memory pool
//! has no room for more, and stops aggregating (passing each row on as its own partial state)
//! when nearly every row makes a group of its own.

use std::collections::HashMap;
use std::fmt;
use std::hash::BuildHasher as _;
use std::pin::Pin;
use std::sync::{Arc, LazyLock};
use std::task::{Context, Poll};

use datafusion::arrow::array::{
    Array, ArrayRef, AsArray as _, BooleanArray, RecordBatch, UInt32Array,
};
use datafusion::arrow::compute::{cast, concat, take};
use datafusion::arrow::datatypes::{
    DataType, Int8Type, Int16Type, Int32Type, Int64Type, SchemaRef, UInt8Type, UInt16Type,
    UInt32Type, UInt64Type,
};
use datafusion::common::config::ConfigOptions;
use datafusion::common::{DataFusionError, Result, internal_err};
use datafusion::execution::memory_pool::{MemoryConsumer, MemoryReservation};
use datafusion::execution::{RecordBatchStream, SendableRecordBatchStream, TaskContext};
use datafusion::logical_expr::{EmitTo, GroupsAccumulator};
use datafusion::physical_optimizer::PhysicalOptimizerRule;
use datafusion::physical_plan::InputOrderMode;
use datafusion::physical_plan::aggregates::{AggregateExec, AggregateMode};
use datafusion::physical_plan::metrics::{BaselineMetrics, ExecutionPlanMetricsSet, MetricsSet};
use datafusion::physical_plan::{
    DisplayAs, DisplayFormatType, ExecutionPlan, PhysicalExpr, PlanProperties,
};
use foldhash::fast::FixedState;
use futures::{Stream, StreamExt as _};

use super::filter_in_aggregate::replace_aggregates;

/// Replaces the first stage of an aggregation with a [`CodedGroupsExec`] where it can.
#[derive(Debug, Default)]
pub(crate) struct CodedGroups;

impl PhysicalOptimizerRule for CodedGroups {
    fn optimize(
        &self,
        plan: Arc<dyn ExecutionPlan>,
        _config: &ConfigOptions,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        replace_aggregates(plan, |aggregate| {
            Ok(codable(aggregate).then(|| {
                Arc::new(CodedGroupsExec::new(aggregate.clone())) as Arc<dyn ExecutionPlan>
            }))
        })
    }

    fn name(&self) -> &str {
        "portcullis_coded_groups"
    }

    fn schema_check(&self) -> bool {
        true
    }
}

/// Whether `aggregate` is a first stage [`CodedGroupsExec`] can run.
fn codable(aggregate: &AggregateExec) -> bool {
    let group_by = aggregate.group_expr();
    let input_schema = aggregate.input().schema();
    let keys_codable = !group_by.expr().is_empty()
        && !group_by.has_grouping_set()
        && group_by.expr().iter().all(|(expr, _)| {
            expr.data_type(&input_schema)
                .is_ok_and(|data_type| KeyKind::of(&data_type).is_some())
        });
    let aggregates_codable = aggregate.aggr_expr().iter().all(|expr| {
        expr.groups_accumulator_supported() && !expr.is_distinct() && expr.order_bys().is_empty()
    });
    matches!(aggregate.mode(), AggregateMode::Partial)
        && *aggregate.input_order_mode() == InputOrderMode::Linear
        && aggregate.limit_options().is_none()
        && keys_codable
        && aggregates_codable
}

/// How a key column is coded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum KeyKind {
    /// Fixed-width integers (and what is stored as one), keyed by their bits.
    Bits(usize),
    Boolean,
    View,
    Utf8,
    LargeUtf8,
}

impl KeyKind {
    fn of(data_type: &DataType) -> Option<KeyKind> {
        match data_type {
            DataType::Int8
            | DataType::Int16
            | DataType::Int32
            | DataType::Int64
            | DataType::UInt8
            | DataType::UInt16
            | DataType::UInt32
            | DataType::UInt64
            | DataType::Date32
            | DataType::Date64
            | DataType::Time32(_)
            | DataType::Time64(_)
            | DataType::Timestamp(_, _)
            | DataType::Duration(_) => data_type.primitive_width().map(KeyKind::Bits),
            DataType::Boolean => Some(KeyKind::Boolean),
            DataType::Utf8View => Some(KeyKind::View),
            DataType::Utf8 => Some(KeyKind::Utf8),
            DataType::LargeUtf8 => Some(KeyKind::LargeUtf8),
            _ => None,
        }
    }
}

/// A first stage of an aggregation (`AggregateMode::Partial`) that finds each row's group
/// through per-column codes; its output is the replaced [`AggregateExec`]'s.
#[derive(Debug)]
pub(crate) struct CodedGroupsExec {
    /// The stage replaced: its keys, aggregates, filters, input, schema and properties.
    aggregate: AggregateExec,
    metrics: ExecutionPlanMetricsSet,
}

impl CodedGroupsExec {
    fn new(aggregate: AggregateExec) -> Self {
        CodedGroupsExec {
            aggregate,
            metrics: ExecutionPlanMetricsSet::new(),
        }
    }

    /// The stage this one replaced.
    pub(crate) fn aggregate(&self) -> &AggregateExec {
        &self.aggregate
    }
}

impl DisplayAs for CodedGroupsExec {
    fn fmt_as(&self, format: DisplayFormatType, f: &mut fmt::Formatter) -> fmt::Result {
        write!(f, "CodedGroupsExec: ")?;
        self.aggregate.fmt_as(format, f)
    }
}

impl ExecutionPlan for CodedGroupsExec {
    fn name(&self) -> &str {
        "CodedGroupsExec"
    }

    fn properties(&self) -> &Arc<PlanProperties> {
        self.aggregate.properties()
    }

    fn children(&self) -> Vec<&Arc<dyn ExecutionPlan>> {
        vec![self.aggregate.input()]
    }

    fn input_distribution_requirements(
        &self,
    ) -> datafusion::physical_plan::InputDistributionRequirements {
        self.aggregate.input_distribution_requirements()
    }

    fn benefits_from_input_partitioning(&self) -> Vec<bool> {
        self.aggregate.benefits_from_input_partitioning()
    }

    fn apply_expressions(
        &self,
        f: &mut dyn FnMut(
            &Arc<dyn PhysicalExpr>,
        ) -> Result<datafusion::common::tree_node::TreeNodeRecursion>,
    ) -> Result<datafusion::common::tree_node::TreeNodeRecursion> {
        self.aggregate.apply_expressions(f)
    }

    fn with_new_children(
        self: Arc<Self>,
        children: Vec<Arc<dyn ExecutionPlan>>,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        let [input] = <[_; 1]>::try_from(children).map_err(|children| {
            DataFusionError::Internal(format!(
                "CodedGroupsExec takes one child, not {}",
                children.len()
            ))
        })?;
        let aggregate = &self.aggregate;
        let replaced = AggregateExec::try_new(
            *aggregate.mode(),
            aggregate.group_expr().clone(),
            aggregate.aggr_expr().to_vec(),
            aggregate.filter_expr().to_vec(),
            input,
            aggregate.input_schema(),
        )?
        .with_limit_options(aggregate.limit_options());
        Ok(if codable(&replaced) {
            Arc::new(CodedGroupsExec::new(replaced))
        } else {
            Arc::new(replaced)
        })
    }

    fn execute(
        &self,
        partition: usize,
        context: Arc<TaskContext>,
    ) -> Result<SendableRecordBatchStream> {
        let aggregate = &self.aggregate;
        let input_schema = aggregate.input().schema();
        let keys = aggregate
            .group_expr()
            .expr()
            .iter()
            .map(|(expr, _)| {
                let data_type = expr.data_type(&input_schema)?;
                match KeyKind::of(&data_type) {
                    Some(kind) => Ok((Arc::clone(expr), kind)),
                    None => internal_err!("CodedGroupsExec cannot key on {data_type}"),
                }
            })
            .collect::<Result<Vec<_>>>()?;
        let aggregates = aggregate
            .aggr_expr()
            .iter()
            .zip(aggregate.filter_expr())
            .map(|(expr, filter)| {
                Ok(Aggregate {
                    arguments: expr.expressions(),
                    filter: filter.clone(),
                    expr: Arc::clone(expr),
                })
            })
            .collect::<Result<Vec<_>>>()?;
        let reservation = MemoryConsumer::new(format!("CodedGroupsExec[{partition}]"))
            .with_can_spill(true)
            .register(context.memory_pool());
        let table = GroupTable::new(&keys, &aggregates)?;
        // When to stop aggregating and pass rows on as partial states, as DataFusion's own
        // first stage does: the final stage would do all the work again anyway.
        let options = &context.session_config().options().execution;
        let skip_probe =
            (options.skip_partial_aggregation_probe_ratio_threshold < 1.0).then_some((
                options.skip_partial_aggregation_probe_rows_threshold,
                options.skip_partial_aggregation_probe_ratio_threshold,
            ));
        Ok(Box::pin(CodedGroupsStream {
            input: aggregate.input().execute(partition, Arc::clone(&context))?,
            schema: aggregate.schema(),
            batch_size: context.session_config().batch_size().max(1),
            keys,
            aggregates,
            table,
            reservation,
            output: None,
            rows_in: 0,
            skip_probe,
            skipping: false,
            finished: false,
            baseline: BaselineMetrics::new(&self.metrics, partition),
        }))
    }

    fn metrics(&self) -> Option<MetricsSet> {
        Some(self.metrics.clone_inner())
    }
}

/// One aggregate of the stage: its accumulator's arguments and filter.
struct Aggregate {
    expr: Arc<datafusion::physical_expr::aggregate::AggregateFunctionExpr>,
    arguments: Vec<Arc<dyn PhysicalExpr>>,
    filter: Option<Arc<dyn PhysicalExpr>>,
}

/// The arguments and filter of one aggregate, evaluated on a batch.
struct Evaluated {
    arguments: Vec<ArrayRef>,
    filter: Option<ArrayRef>,
}

impl Aggregate {
    fn evaluate(&self, batch: &RecordBatch) -> Result<Evaluated> {
        let rows = batch.num_rows();
        let arguments = self
            .arguments
            .iter()
            .map(|expr| expr.evaluate(batch)?.into_array(rows))
            .collect::<Result<Vec<_>>>()?;
        let filter = self
            .filter
            .as_ref()
            .map(|filter| filter.evaluate(batch)?.into_array(rows))
            .transpose()?;
        Ok(Evaluated { arguments, filter })
    }
}

fn filter_of(evaluated: &Evaluated) -> Result<Option<&BooleanArray>> {
    evaluated
        .filter
        .as_ref()
        .map(|filter| {
            filter.as_boolean_opt().ok_or_else(|| {
                DataFusionError::Internal("an aggregate's filter is not boolean".to_owned())
            })
        })
        .transpose()
}

/// One partition of a [`CodedGroupsExec`].
struct CodedGroupsStream {
    input: SendableRecordBatchStream,
    schema: SchemaRef,
    batch_size: usize,
    keys: Vec<(Arc<dyn PhysicalExpr>, KeyKind)>,
    aggregates: Vec<Aggregate>,
    table: GroupTable,
    reservation: MemoryReservation,
    /// Groups handed on, and the next row of them to hand on.
    output: Option<(RecordBatch, usize)>,
    rows_in: usize,
    /// Rows to read, and groups per row, past which the stage stops aggregating; `None` when
    /// it never does.
    skip_probe: Option<(usize, f64)>,
    /// Whether the stage passes rows on as partial states instead of aggregating them.
    skipping: bool,
    finished: bool,
    baseline: BaselineMetrics,
}

impl CodedGroupsStream {
    /// Aggregates one input batch, or passes it on as partial states; the batch to hand on,
    /// if any.
    fn admit(&mut self, batch: &RecordBatch) -> Result<Option<RecordBatch>> {
        if batch.num_rows() == 0 {
            return Ok(None);
        }
        let keys = self
            .keys
            .iter()
            .map(|(expr, _)| expr.evaluate(batch)?.into_array(batch.num_rows()))
            .collect::<Result<Vec<_>>>()?;
        let evaluated = self
            .aggregates
            .iter()
            .map(|aggregate| aggregate.evaluate(batch))
            .collect::<Result<Vec<_>>>()?;
        if self.skipping {
            return self.as_states(keys, &evaluated).map(Some);
        }
        self.table.update(&keys, &evaluated)?;
        self.rows_in += batch.num_rows();
        let mostly_distinct = self.skip_probe.is_some_and(|(rows, ratio)| {
            self.rows_in >= rows && self.table.groups() as f64 > self.rows_in as f64 * ratio
        });
        if mostly_distinct {
            self.skipping = true;
            return self.emit().map(Some);
        }
        match self.reservation.try_resize(self.table.size()) {
            Ok(()) => Ok(None),
            // No room for more groups: hand these on (the final stage merges them with later
            // ones) and start again.
            Err(DataFusionError::ResourcesExhausted(_)) => {
                let emitted = self.emit()?;
                self.reservation.try_resize(self.table.size())?;
                Ok(Some(emitted))
            }
            Err(error) => Err(error),
        }
    }

    /// Every group so far as one batch of the stage's output; the table starts empty again.
    fn emit(&mut self) -> Result<RecordBatch> {
        let fresh = GroupTable::new(&self.keys, &self.aggregates)?;
        let table = std::mem::replace(&mut self.table, fresh);
        table.into_batch(&self.schema)
    }

    /// A batch's rows as partial states of their own, keys unchanged.
    fn as_states(&self, mut keys: Vec<ArrayRef>, evaluated: &[Evaluated]) -> Result<RecordBatch> {
        for (accumulator, evaluated) in self.table.accumulators.iter().zip(evaluated) {
            keys.extend(accumulator.convert_to_state(&evaluated.arguments, filter_of(evaluated)?)?);
        }
        Ok(RecordBatch::try_new(Arc::clone(&self.schema), keys)?)
    }

    /// The next slice of the groups being handed on.
    fn next_output(&mut self) -> Option<RecordBatch> {
        let (batch, at) = self.output.as_mut()?;
        let rows = batch.num_rows();
        if *at >= rows {
            self.output = None;
            return None;
        }
        let len = self.batch_size.min(rows - *at);
        let slice = batch.slice(*at, len);
        *at += len;
        Some(slice)
    }

    fn poll_inner(&mut self, cx: &mut Context<'_>) -> Poll<Option<Result<RecordBatch>>> {
        loop {
            if let Some(slice) = self.next_output() {
                return Poll::Ready(Some(Ok(slice)));
            }
            if self.finished {
                return Poll::Ready(None);
            }
            match self.input.poll_next_unpin(cx) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(Some(Err(error))) => return Poll::Ready(Some(Err(error))),
                Poll::Ready(Some(Ok(batch))) => {
                    let elapsed = self.baseline.elapsed_compute().clone();
                    let timer = elapsed.timer();
                    let admitted = self.admit(&batch);
                    timer.done();
                    match admitted {
                        Ok(Some(out)) => self.output = Some((out, 0)),
                        Ok(None) => {}
                        Err(error) => return Poll::Ready(Some(Err(error))),
                    }
                }
                Poll::Ready(None) => {
                    self.finished = true;
                    if self.table.groups() > 0 {
                        let elapsed = self.baseline.elapsed_compute().clone();
                        let timer = elapsed.timer();
                        let emitted = self.emit();
                        timer.done();
                        match emitted {
                            Ok(out) => self.output = Some((out, 0)),
                            Err(error) => return Poll::Ready(Some(Err(error))),
                        }
                    }
                    self.reservation.free();
                }
            }
        }
    }
}

impl Stream for CodedGroupsStream {
    type Item = Result<RecordBatch>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let poll = self.poll_inner(cx);
        self.baseline.record_poll(poll)
    }
}

impl RecordBatchStream for CodedGroupsStream {
    fn schema(&self) -> SchemaRef {
        Arc::clone(&self.schema)
    }
}

/// The hasher of every map here: fast, and seeded per process, so that no stored value can be
/// chosen to collide.
fn hasher() -> FixedState {
    static SEED: LazyLock<u64> =
        LazyLock::new(|| std::hash::RandomState::new().hash_one(std::process::id()));
    FixedState::with_seed(*SEED)
}

type Map<K> = HashMap<K, u32, FixedState>;

fn map<K>() -> Map<K> {
    HashMap::with_hasher(hasher())
}

/// The groups of one partition so far, and their aggregates' partial states.
struct GroupTable {
    columns: Vec<KeyColumn>,
    /// Combines the codes of column `i + 1` with the combined codes of the columns before it:
    /// `(earlier, code)` → combined code; the last level's codes are the groups.
    levels: Vec<Level>,
    accumulators: Vec<Box<dyn GroupsAccumulator>>,
    /// Each row's group, for the batch being aggregated.
    group_of_row: Vec<usize>,
}

struct Level {
    /// The combined codes of pairs of codes both below [`DENSE_SIDE`], by
    /// `earlier * DENSE_SIDE + code`: a grouping of few values combines without hashing.
    dense: Box<[u32]>,
    recent: Recent,
    codes: Map<u64>,
    /// What each combined code combines.
    pairs: Vec<(u32, u32)>,
}

impl Level {
    fn new() -> Self {
        Level {
            dense: vec![NO_CODE; (DENSE_SIDE * DENSE_SIDE) as usize].into_boxed_slice(),
            recent: Recent::new(),
            codes: map(),
            pairs: Vec::new(),
        }
    }
}

impl GroupTable {
    fn new(keys: &[(Arc<dyn PhysicalExpr>, KeyKind)], aggregates: &[Aggregate]) -> Result<Self> {
        Ok(GroupTable {
            columns: keys.iter().map(|(_, kind)| KeyColumn::new(*kind)).collect(),
            levels: (1..keys.len()).map(|_| Level::new()).collect(),
            accumulators: aggregates
                .iter()
                .map(|aggregate| aggregate.expr.create_groups_accumulator())
                .collect::<Result<_>>()?,
            group_of_row: Vec::new(),
        })
    }

    fn groups(&self) -> usize {
        match self.levels.last() {
            Some(level) => level.pairs.len(),
            None => self.columns.first().map_or(0, KeyColumn::len),
        }
    }

    fn update(&mut self, keys: &[ArrayRef], evaluated: &[Evaluated]) -> Result<()> {
        let rows = keys.first().map_or(0, |key| key.len());
        let mut codes = Vec::with_capacity(keys.len());
        for (column, key) in self.columns.iter_mut().zip(keys) {
            codes.push(column.encode(key)?);
        }
        let mut codes = codes.into_iter();
        let mut combined = codes.next().unwrap_or_default();
        for (level, column_codes) in self.levels.iter_mut().zip(codes) {
            for (earlier, &code) in combined.iter_mut().zip(&column_codes) {
                let dense = (*earlier < DENSE_SIDE && code < DENSE_SIDE)
                    .then(|| (*earlier * DENSE_SIDE + code) as usize);
                if let Some(next) = dense.map(|at| level.dense[at]).filter(|&c| c != NO_CODE) {
                    *earlier = next;
                    continue;
                }
                let key = (u64::from(*earlier) << 32) | u64::from(code);
                let next = match level.recent.get(u128::from(key)) {
                    Some(next) => next,
                    None => {
                        let fresh = u32::try_from(level.pairs.len())
                            .ok()
                            .filter(|&fresh| fresh != NO_CODE)
                            .ok_or_else(too_many)?;
                        let found = *level.codes.entry(key).or_insert(fresh);
                        if found == fresh {
                            level.pairs.push((*earlier, code));
                        }
                        level.recent.put(u128::from(key), found);
                        found
                    }
                };
                if let Some(at) = dense {
                    level.dense[at] = next;
                }
                *earlier = next;
            }
        }
        self.group_of_row.clear();
        self.group_of_row.reserve(rows);
        self.group_of_row
            .extend(combined.iter().map(|&group| group as usize));
        let groups = self.groups();
        for (accumulator, evaluated) in self.accumulators.iter_mut().zip(evaluated) {
            accumulator.update_batch(
                &evaluated.arguments,
                &self.group_of_row,
                filter_of(evaluated)?,
                groups,
            )?;
        }
        Ok(())
    }

    /// Bytes held, for the memory pool.
    fn size(&self) -> usize {
        let columns: usize = self.columns.iter().map(KeyColumn::size).sum();
        let levels: usize = self
            .levels
            .iter()
            .map(|level| {
                level.codes.capacity() * 16 + level.pairs.capacity() * 8 + level.dense.len() * 4
            })
            .sum();
        let accumulators: usize = self.accumulators.iter().map(|acc| acc.size()).sum();
        columns + levels + accumulators + self.group_of_row.capacity() * 8
    }

    /// The groups as rows of the stage's output: the keys, then every aggregate's state.
    fn into_batch(mut self, schema: &SchemaRef) -> Result<RecordBatch> {
        let groups = self.groups();
        // Each group's code in each column, walking its combined codes back.
        let mut column_codes = vec![Vec::with_capacity(groups); self.columns.len()];
        for group in 0..groups {
            let mut code = u32::try_from(group).map_err(|_| too_many())?;
            for (index, level) in self.levels.iter().enumerate().rev() {
                let (earlier, own) = level.pairs[code as usize];
                column_codes[index + 1].push(own);
                code = earlier;
            }
            column_codes[0].push(code);
        }
        let mut columns = Vec::with_capacity(schema.fields().len());
        for (column, codes) in self.columns.iter().zip(column_codes) {
            columns.push(take(&column.values()?, &UInt32Array::from(codes), None)?);
        }
        for accumulator in &mut self.accumulators {
            columns.extend(accumulator.state(EmitTo::All)?);
        }
        Ok(RecordBatch::try_new(Arc::clone(schema), columns)?)
    }
}

/// The codes below which a [`Level`] combines two codes by table.
const DENSE_SIDE: u32 = 64;
/// Slots of a [`Recent`].
const RECENT_SLOTS: usize = 64;
/// The code of an empty slot: no column or level reaches it, as codes stop at `u32::MAX - 1`.
const NO_CODE: u32 = u32::MAX;

/// The codes of keys met lately, in a small table indexed by a hash of the key: a key of a
/// column of few values is found here, without hashing it into a map. A key is only ever put
/// with its one code, so a slot found holding the key holds its code.
struct Recent {
    slots: Box<[(u128, u32); RECENT_SLOTS]>,
}

impl Recent {
    fn new() -> Self {
        Recent {
            slots: Box::new([(0, NO_CODE); RECENT_SLOTS]),
        }
    }

    fn slot(key: u128) -> usize {
        let folded = (key as u64) ^ ((key >> 64) as u64);
        (folded.wrapping_mul(0x9e37_79b9_7f4a_7c15) >> 58) as usize
    }

    fn get(&self, key: u128) -> Option<u32> {
        let (held, code) = self.slots[Self::slot(key)];
        (held == key && code != NO_CODE).then_some(code)
    }

    fn put(&mut self, key: u128, code: u32) {
        self.slots[Self::slot(key)] = (key, code);
    }
}

fn too_many() -> DataFusionError {
    DataFusionError::ResourcesExhausted("more than 2^32 groups in one partition".to_owned())
}

/// The codes of one key column: each distinct value (`NULL` among them) gets the next code in
/// the order first seen.
struct KeyColumn {
    kind: KeyKind,
    /// The codes of short keys met lately, before [`KeyColumn::short`].
    recent: Recent,
    /// Bits of fixed-width values, or views of text values of at most 12 bytes.
    short: Map<u128>,
    /// Text values longer than 12 bytes.
    long: Map<Box<[u8]>>,
    /// The bytes of the keys in [`KeyColumn::long`], kept as they are added: the memory pool
    /// is told the table's size after every batch, which must not cost a walk of the keys.
    long_bytes: usize,
    null: Option<u32>,
    len: u32,
    /// The distinct values, in code order, as slices of the batches that brought them.
    values: Vec<ArrayRef>,
    values_size: usize,
}

impl KeyColumn {
    fn new(kind: KeyKind) -> Self {
        KeyColumn {
            kind,
            recent: Recent::new(),
            short: map(),
            long: map(),
            long_bytes: 0,
            null: None,
            len: 0,
            values: Vec::new(),
            values_size: 0,
        }
    }

    fn len(&self) -> usize {
        self.len as usize
    }

    fn size(&self) -> usize {
        self.short.capacity() * 20 + self.long.capacity() * 20 + self.long_bytes + self.values_size
    }

    /// The distinct values in code order.
    fn values(&self) -> Result<ArrayRef> {
        let parts = self.values.iter().map(AsRef::as_ref).collect::<Vec<_>>();
        Ok(concat(&parts)?)
    }

    /// The code of every row of `array`; values not seen before get new codes.
    fn encode(&mut self, array: &ArrayRef) -> Result<Vec<u32>> {
        let mut new_rows = Vec::new();
        let codes = match self.kind {
            KeyKind::Bits(width) => self.encode_bits(array, width, &mut new_rows)?,
            KeyKind::Boolean => {
                let array = array.as_boolean();
                self.encode_with(array, &mut new_rows, |row| u128::from(array.value(row)))?
            }
            KeyKind::View => self.encode_views(array, &mut new_rows)?,
            KeyKind::Utf8 => {
                let array = array.as_string::<i32>();
                self.encode_bytes(array, &mut new_rows, |row| array.value(row).as_bytes())?
            }
            KeyKind::LargeUtf8 => {
                let array = array.as_string::<i64>();
                self.encode_bytes(array, &mut new_rows, |row| array.value(row).as_bytes())?
            }
        };
        if !new_rows.is_empty() {
            let picked = take(array.as_ref(), &UInt32Array::from(new_rows), None)?;
            // A view array taken keeps the buffers of the whole batch; keep only the text.
            let picked = match picked.as_string_view_opt() {
                Some(views) => Arc::new(views.gc()) as ArrayRef,
                None => picked,
            };
            self.values_size += picked.get_array_memory_size();
            self.values.push(picked);
        }
        Ok(codes)
    }

    fn fresh(&mut self, row: usize, new_rows: &mut Vec<u32>) -> Result<u32> {
        let code = self.len;
        if code == NO_CODE {
            return Err(too_many());
        }
        self.len += 1;
        new_rows.push(u32::try_from(row).map_err(|_| too_many())?);
        Ok(code)
    }

    fn null_code(&mut self, row: usize, new_rows: &mut Vec<u32>) -> Result<u32> {
        match self.null {
            Some(code) => Ok(code),
            None => {
                let code = self.fresh(row, new_rows)?;
                self.null = Some(code);
                Ok(code)
            }
        }
    }

    /// Codes the rows of `array` by a 128-bit key of each row's value.
    fn encode_with(
        &mut self,
        array: &dyn Array,
        new_rows: &mut Vec<u32>,
        key_of: impl Fn(usize) -> u128,
    ) -> Result<Vec<u32>> {
        let rows = array.len();
        let nullable = array.null_count() > 0;
        // A column of one value in the batch (a partition column, always) is coded once.
        if rows > 0 && !nullable {
            let first = key_of(0);
            if (1..rows).all(|row| key_of(row) == first) {
                let code = match self.recent.get(first) {
                    Some(code) => code,
                    None => self.short_code(first, 0, new_rows)?,
                };
                return Ok(vec![code; rows]);
            }
        }
        let mut codes = Vec::with_capacity(rows);
        for row in 0..rows {
            if nullable && array.is_null(row) {
                codes.push(self.null_code(row, new_rows)?);
                continue;
            }
            let key = key_of(row);
            let code = match self.recent.get(key) {
                Some(code) => code,
                None => self.short_code(key, row, new_rows)?,
            };
            codes.push(code);
        }
        Ok(codes)
    }

    /// The code of a short key missing from [`KeyColumn::recent`], which then holds it.
    fn short_code(&mut self, key: u128, row: usize, new_rows: &mut Vec<u32>) -> Result<u32> {
        let code = match self.short.get(&key) {
            Some(&code) => code,
            None => {
                let code = self.fresh(row, new_rows)?;
                self.short.insert(key, code);
                code
            }
        };
        self.recent.put(key, code);
        Ok(code)
    }

    /// Codes integers, and what is stored as one (dates, times, timestamps, durations), by
    /// their bits.
    fn encode_bits(
        &mut self,
        array: &ArrayRef,
        width: usize,
        new_rows: &mut Vec<u32>,
    ) -> Result<Vec<u32>> {
        let array = if array.data_type().is_integer() {
            Arc::clone(array)
        } else {
            // The same bits, read as a signed integer of the same width.
            let signed = match width {
                4 => DataType::Int32,
                8 => DataType::Int64,
                _ => return internal_err!("CodedGroupsExec cannot key on {}", array.data_type()),
            };
            cast(array, &signed)?
        };
        macro_rules! code_by {
            ($type:ty, $key:expr) => {{
                let values = array.as_primitive::<$type>();
                self.encode_with(values, new_rows, |row| $key(values.value(row)))
            }};
        }
        let signed = |value: i64| u128::from(value.cast_unsigned());
        match array.data_type() {
            DataType::Int8 => code_by!(Int8Type, |value| signed(i64::from(value))),
            DataType::Int16 => code_by!(Int16Type, |value| signed(i64::from(value))),
            DataType::Int32 => code_by!(Int32Type, |value| signed(i64::from(value))),
            DataType::Int64 => code_by!(Int64Type, signed),
            DataType::UInt8 => code_by!(UInt8Type, u128::from),
            DataType::UInt16 => code_by!(UInt16Type, u128::from),
            DataType::UInt32 => code_by!(UInt32Type, u128::from),
            DataType::UInt64 => code_by!(UInt64Type, u128::from),
            other => internal_err!("CodedGroupsExec cannot key on {other}"),
        }
    }

    fn encode_views(&mut self, array: &ArrayRef, new_rows: &mut Vec<u32>) -> Result<Vec<u32>> {
        let array = array.as_string_view();
        let views = array.views();
        let mut codes = Vec::with_capacity(array.len());
        // Views of long values seen in this batch: the same view is the same text. (A long
        // value's view names a buffer of this batch, so these last one batch.)
        let mut batch_views: Map<u128> = map();
        let mut batch_recent = Recent::new();
        let nullable = array.null_count() > 0;
        for (row, &view) in views.iter().enumerate() {
            if nullable && array.is_null(row) {
                codes.push(self.null_code(row, new_rows)?);
                continue;
            }
            // The low 32 bits of a view are its length.
            let code = if view & u128::from(u32::MAX) <= 12 {
                match self.recent.get(view) {
                    Some(code) => code,
                    None => self.short_code(view, row, new_rows)?,
                }
            } else if let Some(code) = batch_recent.get(view) {
                code
            } else {
                let code = match batch_views.get(&view) {
                    Some(&code) => code,
                    None => {
                        let code = self.long_code(array.value(row).as_bytes(), row, new_rows)?;
                        batch_views.insert(view, code);
                        code
                    }
                };
                batch_recent.put(view, code);
                code
            };
            codes.push(code);
        }
        Ok(codes)
    }

    fn encode_bytes<'a>(
        &mut self,
        array: &'a dyn Array,
        new_rows: &mut Vec<u32>,
        bytes_of: impl Fn(usize) -> &'a [u8],
    ) -> Result<Vec<u32>> {
        let mut codes = Vec::with_capacity(array.len());
        let mut last: Option<(&[u8], u32)> = None;
        let nullable = array.null_count() > 0;
        for row in 0..array.len() {
            if nullable && array.is_null(row) {
                codes.push(self.null_code(row, new_rows)?);
                continue;
            }
            let bytes = bytes_of(row);
            let code = match last {
                Some((last_bytes, code)) if last_bytes == bytes => code,
                _ => self.long_code(bytes, row, new_rows)?,
            };
            last = Some((bytes, code));
            codes.push(code);
        }
        Ok(codes)
    }

    fn long_code(&mut self, bytes: &[u8], row: usize, new_rows: &mut Vec<u32>) -> Result<u32> {
        if let Some(&code) = self.long.get(bytes) {
            return Ok(code);
        }
        let code = self.fresh(row, new_rows)?;
        self.long.insert(bytes.into(), code);
        self.long_bytes += bytes.len();
        Ok(code)
    }
}

#[cfg(test)]
mod tests {
    use datafusion::arrow::array::{
        BooleanArray, Date32Array, Int8Array, Int64Array, LargeStringArray, StringArray,
        StringViewArray, TimestampMicrosecondArray, UInt64Array,
    };
    use datafusion::arrow::datatypes::{Field, Schema, TimeUnit};
    use datafusion::arrow::util::pretty::pretty_format_batches;
    use datafusion::common::tree_node::TreeNode as _;
    use datafusion::datasource::MemTable;
    use datafusion::execution::memory_pool::GreedyMemoryPool;
    use datafusion::execution::runtime_env::RuntimeEnvBuilder;
    use datafusion::execution::session_state::SessionStateBuilder;
    use datafusion::physical_plan::{collect, displayable};
    use datafusion::prelude::{SessionConfig, SessionContext};

    use super::*;

    /// A small generator, so that the cases are the same on every run.
    struct Rng(u64);

    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            self.0
        }

        fn below(&mut self, n: u64) -> u64 {
            self.next() % n
        }

        /// `Some(i)` for `i` below `n`, or `None` about one time in `nulls`.
        fn pick(&mut self, n: u64, nulls: u64) -> Option<u64> {
            (self.below(nulls) != 0).then(|| self.below(n))
        }
    }

    fn schema() -> SchemaRef {
        Arc::new(Schema::new(vec![
            Field::new("short", DataType::Utf8View, true),
            Field::new("long", DataType::Utf8View, true),
            Field::new("utf8", DataType::Utf8, true),
            Field::new("large", DataType::LargeUtf8, true),
            Field::new("i8", DataType::Int8, true),
            Field::new("u64", DataType::UInt64, true),
            Field::new("day", DataType::Date32, false),
            Field::new(
                "ts",
                DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into())),
                true,
            ),
            Field::new("flag", DataType::Boolean, true),
            Field::new("n", DataType::Int64, true),
        ]))
    }

    /// A batch of `rows` rows whose key columns draw from `values` values each; `day` is
    /// constant in the batch, as a partition column is.
    fn batch(rng: &mut Rng, rows: usize, values: u64, day: i32) -> RecordBatch {
        let mut column = |make: &dyn Fn(u64) -> String| -> Vec<Option<String>> {
            (0..rows).map(|_| rng.pick(values, 7).map(make)).collect()
        };
        let short = column(&|i| format!("s{i}"));
        let long = column(&|i| format!("a longer value than twelve bytes, {i}"));
        let utf8 = column(&|i| format!("u{}", i % 5));
        let large = column(&|i| format!("large {i}"));
        let i8s = (0..rows)
            .map(|_| rng.pick(values.min(256), 9).map(|i| (i as i64 - 128) as i8))
            .collect::<Int8Array>();
        let u64s = (0..rows)
            .map(|_| rng.pick(values, 9).map(|i| u64::MAX - i))
            .collect::<UInt64Array>();
        let ts = (0..rows)
            .map(|_| rng.pick(values, 9).map(|i| i as i64 * 1_000_000 - 5))
            .collect::<TimestampMicrosecondArray>()
            .with_timezone("UTC");
        let flags = (0..rows)
            .map(|_| rng.pick(2, 5).map(|i| i == 1))
            .collect::<BooleanArray>();
        let n = (0..rows)
            .map(|_| rng.pick(100, 6).map(|i| i as i64 - 20))
            .collect::<Int64Array>();
        RecordBatch::try_new(
            schema(),
            vec![
                Arc::new(
                    short
                        .iter()
                        .map(Option::as_deref)
                        .collect::<StringViewArray>(),
                ),
                Arc::new(
                    long.iter()
                        .map(Option::as_deref)
                        .collect::<StringViewArray>(),
                ),
                Arc::new(utf8.iter().map(Option::as_deref).collect::<StringArray>()),
                Arc::new(
                    large
                        .iter()
                        .map(Option::as_deref)
                        .collect::<LargeStringArray>(),
                ),
                Arc::new(i8s),
                Arc::new(u64s),
                Arc::new(Date32Array::from(vec![day; rows])),
                Arc::new(ts),
                Arc::new(flags),
                Arc::new(n),
            ],
        )
        .unwrap()
    }

    /// Two partitions of several batches each.
    fn partitions(rng: &mut Rng, values: u64, rows: usize) -> Vec<Vec<RecordBatch>> {
        (0..2)
            .map(|partition| {
                (0..4)
                    .map(|day| batch(rng, rows, values, 20_000 + day % 2 + partition))
                    .collect()
            })
            .collect()
    }

    fn context(
        with_rule: bool,
        partitions: Vec<Vec<RecordBatch>>,
        config: SessionConfig,
        memory: Option<usize>,
    ) -> SessionContext {
        let mut builder = SessionStateBuilder::new()
            .with_config(config.with_target_partitions(2))
            .with_default_features();
        if let Some(bytes) = memory {
            let runtime = RuntimeEnvBuilder::new()
                .with_memory_pool(Arc::new(GreedyMemoryPool::new(bytes)))
                .build_arc()
                .unwrap();
            builder = builder.with_runtime_env(runtime);
        }
        if with_rule {
            builder = builder.with_physical_optimizer_rule(Arc::new(CodedGroups));
        }
        let ctx = SessionContext::new_with_state(builder.build());
        let table = MemTable::try_new(schema(), partitions).unwrap();
        ctx.register_table("t", Arc::new(table)).unwrap();
        ctx
    }

    /// The answer as text, the physical plan, and the rows the first stage handed on.
    async fn run(ctx: &SessionContext, sql: &str) -> Result<(String, String, usize)> {
        let plan = ctx.sql(sql).await?.create_physical_plan().await?;
        let batches = collect(Arc::clone(&plan), ctx.task_ctx()).await?;
        let shown = displayable(plan.as_ref()).indent(true).to_string();
        let mut first_stage_rows = 0;
        plan.apply(|node| {
            if node.name() == "CodedGroupsExec" {
                let metrics = node.metrics().unwrap_or_default();
                first_stage_rows += metrics.output_rows().unwrap_or(0);
            }
            Ok(datafusion::common::tree_node::TreeNodeRecursion::Continue)
        })?;
        Ok((
            pretty_format_batches(&batches)?.to_string(),
            shown,
            first_stage_rows,
        ))
    }

    const AGGREGATES: &str = "count(*) AS c, count(n) AS cn, sum(n) AS s, min(n) AS lo, \
        max(long) AS hi, avg(n) AS mean, count(*) FILTER (WHERE n > 10) AS big";

    #[tokio::test]
    async fn generated_groupings_answer_as_datafusion_does() {
        let keys = [
            "short",
            "long",
            "utf8",
            "large",
            "i8",
            "u64",
            "day",
            "ts",
            "flag",
            "day, short",
            "short, day",
            "day, long, flag",
            "utf8, i8, u64, ts",
            "large, short, day",
        ];
        // Shapes with their own first stages: `DISTINCT` runs as a grouping without
        // aggregates below another grouping.
        let shapes = [
            "SELECT short, count(DISTINCT n) AS d FROM t GROUP BY short ORDER BY short",
            "SELECT DISTINCT day, flag FROM t ORDER BY day, flag",
            "SELECT * FROM (SELECT i8, sum(n) AS s FROM t WHERE n > 0 GROUP BY i8) \
             WHERE s > 20 ORDER BY i8",
        ];
        let mut rng = Rng(0x2545_f491_4f6c_dd1d);
        let mut coded = 0;
        let mut cases = 0;
        for values in [1, 3, 70, 3_000] {
            let data = partitions(&mut rng, values, 700);
            let grouped = keys.iter().map(|key| {
                format!("SELECT {key}, {AGGREGATES} FROM t GROUP BY {key} ORDER BY {key}")
            });
            for sql in grouped.chain(shapes.iter().map(|sql| (*sql).to_owned())) {
                let plain = context(false, data.clone(), config(256, None), None);
                let with_rule = context(true, data.clone(), config(256, None), None);
                let (expected, _, _) = run(&plain, &sql).await.unwrap();
                let (actual, plan, _) = run(&with_rule, &sql).await.unwrap();
                assert_eq!(actual, expected, "{values} values: {sql}\n{plan}");
                cases += 1;
                coded += usize::from(plan.contains("CodedGroupsExec"));
            }
        }
        // Every case has a first stage the rule takes.
        assert_eq!(coded, cases);
    }

    /// A configuration with batches of `batch_size` rows; a first stage stops aggregating after
    /// `probe_rows` rows of nearly distinct keys, or never (`None`).
    fn config(batch_size: usize, probe_rows: Option<usize>) -> SessionConfig {
        let mut config = SessionConfig::new().with_batch_size(batch_size);
        let execution = &mut config.options_mut().execution;
        match probe_rows {
            Some(rows) => execution.skip_partial_aggregation_probe_rows_threshold = rows,
            None => execution.skip_partial_aggregation_probe_ratio_threshold = 1.0,
        }
        config
    }

    #[tokio::test]
    async fn a_first_stage_without_room_hands_its_groups_on_early() {
        let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
        let data = partitions(&mut rng, 1_000_000, 4_000);
        // No `ORDER BY`: a sort would want more memory than the pool has; the rows are
        // compared sorted instead.
        let sql = "SELECT long, u64, count(*) AS c, sum(n) AS s FROM t GROUP BY long, u64";
        // Nearly every row a group of its own, but aggregated all the same.
        let plain = context(false, data.clone(), config(512, None), None);
        let (expected, _, _) = run(&plain, sql).await.unwrap();
        let roomy = context(true, data.clone(), config(512, None), None);
        let (roomy_answer, _, roomy_rows) = run(&roomy, sql).await.unwrap();
        let tight = context(true, data, config(512, None), Some(3 << 20));
        let (tight_answer, plan, tight_rows) = run(&tight, sql).await.unwrap();
        let sorted = |text: &str| {
            let mut lines = text.lines().map(str::to_owned).collect::<Vec<_>>();
            lines.sort();
            lines
        };
        assert_eq!(sorted(&roomy_answer), sorted(&expected));
        assert_eq!(sorted(&tight_answer), sorted(&expected), "{plan}");
        // The first stages handed some groups on more than once.
        assert!(
            tight_rows > roomy_rows,
            "{tight_rows} rows against {roomy_rows}\n{plan}"
        );
    }

    #[tokio::test]
    async fn a_first_stage_of_nearly_distinct_keys_passes_rows_on() {
        let mut rng = Rng(0x0123_4567_89ab_cdef);
        let data = partitions(&mut rng, 1_000_000, 3_000);
        let sql = format!("SELECT u64, {AGGREGATES} FROM t GROUP BY u64 ORDER BY u64");
        let plain = context(false, data.clone(), config(1_000, Some(2_000)), None);
        let (expected, _, _) = run(&plain, &sql).await.unwrap();
        let aggregating = context(true, data.clone(), config(1_000, None), None);
        let (aggregated, _, aggregated_rows) = run(&aggregating, &sql).await.unwrap();
        let skipping = context(true, data, config(1_000, Some(2_000)), None);
        let (skipped, plan, skipped_rows) = run(&skipping, &sql).await.unwrap();
        assert_eq!(aggregated, expected);
        assert_eq!(skipped, expected, "{plan}");
        // Rows with a `NULL` key, one group when aggregated, went on one by one.
        assert!(
            skipped_rows > aggregated_rows,
            "{skipped_rows} against {aggregated_rows}"
        );
    }

    #[tokio::test]
    async fn stages_it_cannot_run_are_left_alone() {
        let mut rng = Rng(7);
        let data = partitions(&mut rng, 5, 50);
        for sql in [
            // A key of a type it does not code.
            "SELECT CAST(n AS DOUBLE) AS x, count(*) FROM t GROUP BY x",
            "SELECT short, array_agg(n ORDER BY n) FROM t GROUP BY short",
            "SELECT count(*), sum(n) FROM t",
        ] {
            let ctx = context(true, data.clone(), SessionConfig::new(), None);
            let (_, plan, _) = run(&ctx, sql).await.unwrap();
            assert!(!plan.contains("CodedGroupsExec"), "{sql}\n{plan}");
        }
    }
}
