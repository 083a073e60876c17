//! An aggregation over a filter that keeps nearly every row, run without copying the rows it
//! keeps: `SELECT date, decision, count(*) … WHERE kind = 'decision' GROUP BY date, decision`.
//!
//! DataFusion runs `WHERE` as a filter below the aggregation, and the filter copies every row
//! it keeps into new batches, twice (once to filter, once to gather full batches). Audit
//! questions often filter on a test that nearly every event passes (`kind = 'decision'` holds
//! for 98 % of them); over ten million events the copies took about a fifth of the
//! question's processor time. The aggregation itself can skip rows instead:
//! `count(*) FILTER (WHERE p)` counts only the rows where `p` holds, reading a mask and
//! copying nothing.
//!
//! Two rules do it together.
//!
//! - [`FilterInAggregate`], on the logical plan, marks an aggregation over a filter: it names
//!   one `count(*)` of the aggregation (the query's own, or one it adds) with a name private
//!   to this process, and puts a filter on that count being above zero above the aggregation,
//!   and a projection that gives the columns back their names. The filter below stays where
//!   it is, so the plan means what it meant (every group has at least one row), and DataFusion
//!   still pushes the filter's condition into the Parquet scan, which skips the segments and
//!   pages whose statistics rule it out (a question about the last hour reads the last hour's
//!   segments).
//! - [`ThinBeforeAggregate`], on the physical plan, replaces the filter below a marked
//!   aggregation's first stage with a [`ThinningExec`]. It evaluates the condition `p` once
//!   per batch and appends the result as a column, and every aggregate takes that column as
//!   its `FILTER`: it skips the rows where `p` does not hold. A batch where `p` holds for at
//!   least nine rows in ten goes on whole; any other is thinned to the rows where it holds, as
//!   the filter would have done, since hashing the group of every row costs more than copying
//!   the rows kept (see [`KEEP_WHOLE`]). A group that only rows where `p` does not hold would
//!   form counts zero and is dropped by the filter above; every other group's aggregates see
//!   exactly the rows the `WHERE` kept. Where the filter told the plan more than the thinning
//!   can (a grouping column it tests for one value is constant after the filter, and the
//!   plan may rely on the order that gives), the filter stays.
//!
//! With rows kept whole, the aggregation reads the group keys and the aggregates' arguments
//! of rows the `WHERE` would have dropped. The rule therefore applies only where reading them
//! cannot fail: the keys and the arguments are plain columns or constants. `p` is evaluated
//! once per row, as the filter does; volatile conditions (`random()`) are left alone all the
//! same.

use std::collections::VecDeque;
use std::fmt;
use std::hash::BuildHasher as _;
use std::pin::Pin;
use std::sync::{Arc, LazyLock};
use std::task::{Context, Poll};

use datafusion::arrow::array::{Array as _, ArrayRef, RecordBatch};
use datafusion::arrow::compute::{BatchCoalescer, prep_null_mask_filter};
use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use datafusion::common::cast::as_boolean_array;
use datafusion::common::config::ConfigOptions;
use datafusion::common::tree_node::{Transformed, TransformedResult as _, TreeNode as _};
use datafusion::common::{Column, Result};
use datafusion::execution::{RecordBatchStream, SendableRecordBatchStream, TaskContext};
use datafusion::functions_aggregate::count::count_udaf;
use datafusion::logical_expr::expr::AggregateFunction;
use datafusion::logical_expr::{Aggregate, Expr, Filter, LogicalPlan, Projection, lit};
use datafusion::optimizer::optimizer::ApplyOrder;
use datafusion::optimizer::{OptimizerConfig, OptimizerRule};
use datafusion::physical_expr::projection::ProjectionMapping;
use datafusion::physical_optimizer::PhysicalOptimizerRule;
use datafusion::physical_plan::aggregates::{AggregateExec, AggregateMode};
use datafusion::physical_plan::execution_plan::CardinalityEffect;
use datafusion::physical_plan::expressions::Column as ColumnExpr;
use datafusion::physical_plan::filter::FilterExec;
use datafusion::physical_plan::metrics::{
    BaselineMetrics, Count, ExecutionPlanMetricsSet, MetricBuilder, MetricsSet,
};
use datafusion::physical_plan::{
    DisplayAs, DisplayFormatType, ExecutionPlan, ExecutionPlanProperties as _, Partitioning,
    PhysicalExpr, PlanProperties,
};
use futures::{Stream, StreamExt as _};

/// The name of the added count, and of the column [`ThinningExec`] appends: random per
/// process, so that no query can name an aggregate of its own that the physical rule would
/// take for one of [`FilterInAggregate`]'s.
fn kept_name() -> &'static str {
    static NAME: LazyLock<String> = LazyLock::new(|| {
        let nonce = std::hash::RandomState::new().hash_one(std::process::id());
        format!("__portcullis_kept_{nonce:016x}")
    });
    NAME.as_str()
}

/// A batch goes on whole when the condition holds for at least `KEEP_WHOLE.0` of every
/// `KEEP_WHOLE.1` rows. Hashing a row's group costs several times as much as copying the row
/// (measured on the audit questions, ten million events, two cores, each threshold against
/// another in turns): a question whose filter kept 98 % of the rows went 8–10 % faster with
/// its batches whole, but one whose filter kept 60 % took a third longer whole than thinned,
/// and the same thinned at two rows in three as at nine in ten.
const KEEP_WHOLE: (usize, usize) = (9, 10);

/// The logical half; see the module's documentation.
#[derive(Debug, Default)]
pub(crate) struct FilterInAggregate;

impl OptimizerRule for FilterInAggregate {
    fn name(&self) -> &str {
        "portcullis_filter_in_aggregate"
    }

    fn apply_order(&self) -> Option<ApplyOrder> {
        Some(ApplyOrder::TopDown)
    }

    fn supports_rewrite(&self) -> bool {
        true
    }

    fn rewrite(
        &self,
        plan: LogicalPlan,
        _config: &dyn OptimizerConfig,
    ) -> Result<Transformed<LogicalPlan>> {
        let LogicalPlan::Aggregate(aggregate) = plan else {
            return Ok(Transformed::no(plan));
        };
        let Some(filter) = filter_below(&aggregate.input) else {
            return Ok(Transformed::no(LogicalPlan::Aggregate(aggregate)));
        };
        if !applies(&aggregate, filter) {
            return Ok(Transformed::no(LogicalPlan::Aggregate(aggregate)));
        }
        let mut aggr_expr = aggregate.aggr_expr.clone();
        // A `count(*)` of the query's own is that count already: it takes the name, and the
        // projection above gives it its own back. Otherwise the count is added.
        match aggregate.aggr_expr.iter().position(counts_rows) {
            Some(idx) => {
                let count = aggr_expr[idx].clone().unalias();
                aggr_expr[idx] = count.alias(kept_name());
            }
            None => aggr_expr.push(
                Expr::AggregateFunction(AggregateFunction::new_udf(
                    count_udaf(),
                    vec![lit(1_i64)],
                    false,
                    None,
                    vec![],
                    None,
                ))
                .alias(kept_name()),
            ),
        }
        let inner = Aggregate::try_new(
            Arc::clone(&aggregate.input),
            aggregate.group_expr.clone(),
            aggr_expr,
        )?;
        let inner_schema = Arc::clone(&inner.schema);
        let having = Filter::try_new(
            Expr::Column(Column::from_name(kept_name())).gt(lit(0_i64)),
            Arc::new(LogicalPlan::Aggregate(inner)),
        )?;
        // The columns as the aggregation named them: the plan above reads those names.
        let names = aggregate
            .schema
            .iter()
            .enumerate()
            .map(|(idx, (qualifier, field))| {
                let (new_qualifier, new_field) = inner_schema.qualified_field(idx);
                Expr::Column(Column::from((new_qualifier, new_field)))
                    .alias_qualified(qualifier.cloned(), field.name())
            })
            .collect::<Vec<_>>();
        let projection = Projection::try_new(names, Arc::new(LogicalPlan::Filter(having)))?;
        Ok(Transformed::yes(LogicalPlan::Projection(projection)))
    }
}

/// The filter an aggregation reads, directly or through a projection that only passes
/// columns on (which DataFusion puts below an aggregation to read no more columns than it
/// needs, and later folds into the filter).
fn filter_below(input: &LogicalPlan) -> Option<&Filter> {
    match input {
        LogicalPlan::Filter(filter) => Some(filter),
        LogicalPlan::Projection(projection)
            if projection
                .expr
                .iter()
                .all(|expr| matches!(expr, Expr::Column(_))) =>
        {
            match projection.input.as_ref() {
                LogicalPlan::Filter(filter) => Some(filter),
                _ => None,
            }
        }
        _ => None,
    }
}

/// Whether the aggregation over `filter` can skip the rows the filter drops: grouped by plain
/// columns, every aggregate plain (no `DISTINCT`, `ORDER BY` or `FILTER` of its own) over
/// plain columns or constants, and a condition that is neither volatile nor a subquery.
fn applies(aggregate: &Aggregate, filter: &Filter) -> bool {
    let plain = |expr: &Expr| matches!(expr, Expr::Column(_) | Expr::Literal(..));
    !aggregate.group_expr.is_empty()
        && aggregate
            .group_expr
            .iter()
            .all(|expr| matches!(expr, Expr::Column(_)))
        && aggregate.aggr_expr.iter().all(|expr| {
            aggregate_function(expr).is_some_and(|function| {
                let params = &function.params;
                !params.distinct
                    && params.filter.is_none()
                    && params.order_by.is_empty()
                    && params.args.iter().all(plain)
            })
        })
        && !filter.predicate.is_volatile()
        && !filter.predicate.contains_outer()
        && !has_subquery(&filter.predicate)
        && aggregate
            .schema
            .fields()
            .iter()
            .all(|field| field.name() != kept_name())
}

fn has_subquery(expr: &Expr) -> bool {
    expr.exists(|expr| {
        Ok(matches!(
            expr,
            Expr::ScalarSubquery(_) | Expr::Exists(_) | Expr::InSubquery(_)
        ))
    })
    .unwrap_or(true)
}

/// Whether `expr` is `count(*)`: a count of a constant that is not `NULL`.
fn counts_rows(expr: &Expr) -> bool {
    aggregate_function(expr).is_some_and(|function| {
        function.func.name() == count_udaf().name()
            && matches!(
                function.params.args.as_slice(),
                [Expr::Literal(value, _)] if !value.is_null()
            )
    })
}

/// The aggregate function of an aggregation's expression, aliased or not.
fn aggregate_function(expr: &Expr) -> Option<&AggregateFunction> {
    match expr {
        Expr::AggregateFunction(function) => Some(function),
        Expr::Alias(alias) => match alias.expr.as_ref() {
            Expr::AggregateFunction(function) => Some(function),
            _ => None,
        },
        _ => None,
    }
}

/// The physical half; see the module's documentation.
#[derive(Debug, Default)]
pub(crate) struct ThinBeforeAggregate;

impl PhysicalOptimizerRule for ThinBeforeAggregate {
    fn optimize(
        &self,
        plan: Arc<dyn ExecutionPlan>,
        _config: &ConfigOptions,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        replace_aggregates(plan, thin_input)
    }

    fn name(&self) -> &str {
        "portcullis_thin_before_aggregate"
    }

    fn schema_check(&self) -> bool {
        true
    }
}

/// `plan` with every aggregation `replace` gives a replacement for replaced, bottom up.
pub(super) fn replace_aggregates(
    plan: Arc<dyn ExecutionPlan>,
    replace: impl Fn(&AggregateExec) -> Result<Option<Arc<dyn ExecutionPlan>>>,
) -> Result<Arc<dyn ExecutionPlan>> {
    plan.transform_up(|plan| {
        let replaced = match plan.downcast_ref::<AggregateExec>() {
            Some(aggregate) => replace(aggregate)?,
            None => None,
        };
        Ok(match replaced {
            Some(replaced) => Transformed::yes(replaced),
            None => Transformed::no(plan),
        })
    })
    .data()
}

/// `aggregate` reading a [`ThinningExec`] in place of the filter below it, when it is the
/// first stage (or the only one) of an aggregation [`FilterInAggregate`] marked: it holds the
/// added count, and no aggregate has a filter of its own. Every aggregate then takes the
/// thinning's column as its filter. `None` when the aggregation's output would not keep the
/// same order and partitioning: rules that ran before may have relied on them, and on what the
/// filter told them (a column it tests for one value is constant after it, not after the
/// thinning).
fn thin_input(aggregate: &AggregateExec) -> Result<Option<Arc<dyn ExecutionPlan>>> {
    let first_stage = matches!(
        aggregate.mode(),
        AggregateMode::Partial | AggregateMode::Single | AggregateMode::SinglePartitioned
    );
    let marked = aggregate
        .aggr_expr()
        .iter()
        .any(|expr| expr.name() == kept_name());
    let unfiltered = aggregate.filter_expr().iter().all(Option::is_none);
    let Some(filter) = aggregate.input().downcast_ref::<FilterExec>() else {
        return Ok(None);
    };
    if !(first_stage && marked && unfiltered) || filter.fetch().is_some() {
        return Ok(None);
    }
    let input = Arc::new(ThinningExec::try_new(
        Arc::clone(filter.input()),
        Arc::clone(filter.predicate()),
        filter.projection().as_deref().map(<[usize]>::to_vec),
    )?);
    let kept: Arc<dyn PhysicalExpr> = Arc::new(ColumnExpr::new(kept_name(), input.kept_index()));
    let input_schema = input.schema();
    let thinned = AggregateExec::try_new(
        *aggregate.mode(),
        aggregate.group_expr().clone(),
        aggregate.aggr_expr().to_vec(),
        vec![Some(kept); aggregate.aggr_expr().len()],
        input,
        input_schema,
    )?
    .with_limit_options(aggregate.limit_options());
    let same_output = thinned.input_order_mode() == aggregate.input_order_mode()
        && thinned.properties().output_ordering() == aggregate.properties().output_ordering()
        && same_partitioning(
            thinned.properties().output_partitioning(),
            aggregate.properties().output_partitioning(),
        );
    Ok(same_output.then(|| Arc::new(thinned) as Arc<dyn ExecutionPlan>))
}

/// Whether two partitionings are the same (DataFusion's `==` holds an unknown partitioning
/// equal to none).
fn same_partitioning(a: &Partitioning, b: &Partitioning) -> bool {
    match (a, b) {
        (Partitioning::Hash(a, n), Partitioning::Hash(b, m)) => n == m && a == b,
        (Partitioning::RoundRobinBatch(n), Partitioning::RoundRobinBatch(m))
        | (Partitioning::UnknownPartitioning(n), Partitioning::UnknownPartitioning(m)) => n == m,
        _ => false,
    }
}

/// Evaluates a condition on every batch of its input and appends it as a column (`NULL` as
/// false); a batch where the condition holds for fewer than nine rows in ten is thinned to
/// those rows, gathered into full batches. Rows keep their order.
#[derive(Debug)]
pub(crate) struct ThinningExec {
    input: Arc<dyn ExecutionPlan>,
    /// The condition, on the input's columns.
    predicate: Arc<dyn PhysicalExpr>,
    /// The input's columns passed on (all when `None`), as the filter it replaces passed them.
    projection: Option<Vec<usize>>,
    properties: Arc<PlanProperties>,
    metrics: ExecutionPlanMetricsSet,
}

impl ThinningExec {
    fn try_new(
        input: Arc<dyn ExecutionPlan>,
        predicate: Arc<dyn PhysicalExpr>,
        projection: Option<Vec<usize>>,
    ) -> Result<Self> {
        let input_schema = input.schema();
        let columns = projection
            .clone()
            .unwrap_or_else(|| (0..input_schema.fields().len()).collect());
        let mut fields = columns
            .iter()
            .map(|&idx| Arc::clone(&input_schema.fields()[idx]))
            .collect::<Vec<_>>();
        fields.push(Arc::new(Field::new(kept_name(), DataType::Boolean, false)));
        let schema = Arc::new(Schema::new_with_metadata(
            fields,
            input_schema.metadata().clone(),
        ));
        let mapping = ProjectionMapping::from_indices(&columns, &input_schema)?;
        let input_equivalences = input.equivalence_properties();
        let equivalences = input_equivalences.project(&mapping, schema);
        let partitioning = input
            .output_partitioning()
            .project(&mapping, input_equivalences);
        let properties = PlanProperties::new(
            equivalences,
            partitioning,
            input.pipeline_behavior(),
            input.boundedness(),
        );
        Ok(ThinningExec {
            input,
            predicate,
            projection,
            properties: Arc::new(properties),
            metrics: ExecutionPlanMetricsSet::new(),
        })
    }

    /// The index of the appended column.
    fn kept_index(&self) -> usize {
        self.schema().fields().len() - 1
    }
}

impl DisplayAs for ThinningExec {
    fn fmt_as(&self, _format: DisplayFormatType, f: &mut fmt::Formatter) -> fmt::Result {
        write!(f, "ThinningExec: {}", self.predicate)
    }
}

impl ExecutionPlan for ThinningExec {
    fn name(&self) -> &str {
        "ThinningExec"
    }

    fn properties(&self) -> &Arc<PlanProperties> {
        &self.properties
    }

    fn children(&self) -> Vec<&Arc<dyn ExecutionPlan>> {
        vec![&self.input]
    }

    fn maintains_input_order(&self) -> Vec<bool> {
        vec![true]
    }

    fn benefits_from_input_partitioning(&self) -> Vec<bool> {
        vec![false]
    }

    fn apply_expressions(
        &self,
        f: &mut dyn FnMut(
            &Arc<dyn PhysicalExpr>,
        ) -> Result<datafusion::common::tree_node::TreeNodeRecursion>,
    ) -> Result<datafusion::common::tree_node::TreeNodeRecursion> {
        f(&self.predicate)
    }

    fn with_new_children(
        self: Arc<Self>,
        mut children: Vec<Arc<dyn ExecutionPlan>>,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        if children.len() != 1 {
            return datafusion::common::internal_err!(
                "ThinningExec takes one child, not {}",
                children.len()
            );
        }
        Ok(Arc::new(ThinningExec::try_new(
            children.swap_remove(0),
            Arc::clone(&self.predicate),
            self.projection.clone(),
        )?))
    }

    fn execute(
        &self,
        partition: usize,
        context: Arc<TaskContext>,
    ) -> Result<SendableRecordBatchStream> {
        let schema = self.schema();
        let batch_size = context.session_config().batch_size();
        Ok(Box::pin(ThinningStream {
            input: self.input.execute(partition, context)?,
            predicate: Arc::clone(&self.predicate),
            projection: self.projection.clone(),
            // A thinned batch of more than half a batch goes on as it is, without a second
            // copy into a gathered one.
            coalescer: BatchCoalescer::new(Arc::clone(&schema), batch_size)
                .with_biggest_coalesce_batch_size(Some(batch_size / 2)),
            schema,
            ready: VecDeque::new(),
            finished: false,
            baseline: BaselineMetrics::new(&self.metrics, partition),
            batches_whole: MetricBuilder::new(&self.metrics).counter("batches_whole", partition),
            batches_thinned: MetricBuilder::new(&self.metrics)
                .counter("batches_thinned", partition),
        }))
    }

    fn metrics(&self) -> Option<MetricsSet> {
        Some(self.metrics.clone_inner())
    }

    fn cardinality_effect(&self) -> CardinalityEffect {
        CardinalityEffect::LowerEqual
    }
}

/// One partition of a [`ThinningExec`].
struct ThinningStream {
    input: SendableRecordBatchStream,
    predicate: Arc<dyn PhysicalExpr>,
    projection: Option<Vec<usize>>,
    schema: SchemaRef,
    /// Gathers thinned rows into full batches.
    coalescer: BatchCoalescer,
    /// Batches to hand out, in input order.
    ready: VecDeque<RecordBatch>,
    finished: bool,
    baseline: BaselineMetrics,
    batches_whole: Count,
    batches_thinned: Count,
}

impl ThinningStream {
    /// Takes one input batch in: on whole, or thinned into the coalescer.
    fn admit(&mut self, batch: RecordBatch) -> Result<()> {
        let rows = batch.num_rows();
        if rows == 0 {
            return Ok(());
        }
        let kept = self.predicate.evaluate(&batch)?.into_array(rows)?;
        let kept = as_boolean_array(&kept)?;
        let kept = if kept.null_count() > 0 {
            prep_null_mask_filter(kept)
        } else {
            kept.clone()
        };
        let kept_rows = kept.true_count();
        if kept_rows == 0 {
            return Ok(());
        }
        let mut columns = match &self.projection {
            Some(projection) => batch.project(projection)?.columns().to_vec(),
            None => batch.columns().to_vec(),
        };
        columns.push(Arc::new(kept.clone()) as ArrayRef);
        let batch = RecordBatch::try_new(Arc::clone(&self.schema), columns)?;
        if kept_rows * KEEP_WHOLE.1 >= rows * KEEP_WHOLE.0 {
            // Whatever is gathered goes first, so that rows keep their order.
            self.flush()?;
            self.ready.push_back(batch);
            self.batches_whole.add(1);
        } else {
            self.coalescer.push_batch_with_filter(batch, &kept)?;
            self.drain();
            self.batches_thinned.add(1);
        }
        Ok(())
    }

    fn flush(&mut self) -> Result<()> {
        self.coalescer.finish_buffered_batch()?;
        self.drain();
        Ok(())
    }

    fn drain(&mut self) {
        while let Some(batch) = self.coalescer.next_completed_batch() {
            self.ready.push_back(batch);
        }
    }
}

impl Stream for ThinningStream {
    type Item = Result<RecordBatch>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let elapsed_compute = self.baseline.elapsed_compute().clone();
        loop {
            if let Some(batch) = self.ready.pop_front() {
                return self.baseline.record_poll(Poll::Ready(Some(Ok(batch))));
            }
            if self.finished {
                self.baseline.done();
                return Poll::Ready(None);
            }
            match self.input.poll_next_unpin(cx) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(None) => {
                    self.finished = true;
                    let timer = elapsed_compute.timer();
                    let flushed = self.flush();
                    timer.done();
                    if let Err(error) = flushed {
                        return Poll::Ready(Some(Err(error)));
                    }
                }
                Poll::Ready(Some(Ok(batch))) => {
                    let timer = elapsed_compute.timer();
                    let taken = self.admit(batch);
                    timer.done();
                    if let Err(error) = taken {
                        self.finished = true;
                        return Poll::Ready(Some(Err(error)));
                    }
                }
                Poll::Ready(Some(Err(error))) => {
                    self.finished = true;
                    return Poll::Ready(Some(Err(error)));
                }
            }
        }
    }
}

impl RecordBatchStream for ThinningStream {
    fn schema(&self) -> SchemaRef {
        Arc::clone(&self.schema)
    }
}

#[cfg(test)]
mod tests {
    use datafusion::arrow::array::{BooleanArray, Int64Array, StringArray};
    use datafusion::arrow::compute::{concat_batches, filter_record_batch};
    use datafusion::arrow::util::pretty::pretty_format_batches;
    use datafusion::datasource::MemTable;
    use datafusion::datasource::memory::MemorySourceConfig;
    use datafusion::execution::session_state::SessionStateBuilder;
    use datafusion::physical_plan::{collect, displayable};
    use datafusion::prelude::{SessionConfig, SessionContext};

    use super::*;

    fn schema() -> SchemaRef {
        Arc::new(Schema::new(vec![
            Field::new("kind", DataType::Utf8, true),
            Field::new("decision", DataType::Utf8, true),
            Field::new("n", DataType::Int64, true),
        ]))
    }

    fn batch(rows: &[(Option<&str>, Option<&str>, Option<i64>)]) -> RecordBatch {
        RecordBatch::try_new(
            schema(),
            vec![
                Arc::new(rows.iter().map(|r| r.0).collect::<StringArray>()),
                Arc::new(rows.iter().map(|r| r.1).collect::<StringArray>()),
                Arc::new(rows.iter().map(|r| r.2).collect::<Int64Array>()),
            ],
        )
        .unwrap()
    }

    /// Two partitions of batches whose share of `kind = 'decision'` varies: all of a batch,
    /// nine in ten (which goes on whole), a few (thinned), none; `NULL` kinds; a decision
    /// (`audit`) that no decision row has, and `n` zero where `kind` is not a decision.
    fn partitions() -> Vec<Vec<RecordBatch>> {
        let d = Some("decision");
        let c = Some("credential_issued");
        vec![
            vec![
                batch(&[
                    (d, Some("allow"), Some(1)),
                    (d, Some("deny"), Some(2)),
                    (d, Some("allow"), Some(3)),
                    (d, None, Some(4)),
                    (d, Some("allow"), Some(11)),
                    (d, Some("allow"), Some(12)),
                    (c, Some("audit"), Some(0)),
                    (d, Some("deny"), Some(13)),
                    (d, Some("allow"), Some(14)),
                    (d, None, Some(15)),
                ]),
                batch(&[
                    (c, Some("audit"), Some(0)),
                    (d, Some("deny"), Some(5)),
                    (c, Some("audit"), Some(0)),
                    (None, Some("allow"), Some(0)),
                    (c, Some("allow"), Some(0)),
                ]),
                batch(&[
                    (d, Some("allow"), Some(6)),
                    (d, Some("deny"), None),
                    (None, Some("deny"), Some(0)),
                ]),
            ],
            vec![
                batch(&[
                    (c, Some("audit"), Some(0)),
                    (None, None, None),
                    (d, Some("deny"), Some(10)),
                ]),
                batch(&[
                    (d, Some("allow"), Some(7)),
                    (d, Some("allow"), Some(8)),
                    (d, Some("deny"), Some(9)),
                ]),
            ],
        ]
    }

    /// A context with the two rules (or without), whose batches hold at most ten rows, so
    /// that thinned rows are gathered across batches.
    fn context(with_rules: bool) -> SessionContext {
        let config = SessionConfig::new()
            .with_batch_size(10)
            .with_target_partitions(2);
        let mut builder = SessionStateBuilder::new()
            .with_config(config)
            .with_default_features();
        if with_rules {
            builder = builder.with_physical_optimizer_rule(Arc::new(ThinBeforeAggregate));
        }
        let ctx = SessionContext::new_with_state(builder.build());
        if with_rules {
            ctx.add_optimizer_rule(Arc::new(FilterInAggregate));
        }
        let table = MemTable::try_new(schema(), partitions()).unwrap();
        ctx.register_table("t", Arc::new(table)).unwrap();
        ctx
    }

    /// The answer as text (the columns' names first), and the physical plan.
    async fn run(sql: &str, with_rules: bool) -> Result<(String, String)> {
        let ctx = context(with_rules);
        let frame = ctx.sql(sql).await?;
        let names = frame
            .schema()
            .fields()
            .iter()
            .map(|field| field.name().clone())
            .collect::<Vec<_>>();
        let plan = frame.create_physical_plan().await?;
        let shown = displayable(plan.as_ref()).indent(true).to_string();
        let batches = collect(plan, ctx.task_ctx()).await?;
        let text = pretty_format_batches(&batches)?.to_string();
        Ok((format!("{}\n{text}", names.join(",")), shown))
    }

    #[tokio::test]
    async fn aggregations_over_a_filter_answer_as_before_and_read_a_thinning() {
        for sql in [
            "SELECT decision, count(*) AS rows FROM t WHERE kind = 'decision' \
             GROUP BY decision ORDER BY decision",
            // No `count(*)` of the query's own; aggregates of several kinds, one unnamed.
            "SELECT decision, sum(n) AS total, min(n), max(n) AS most, count(n) FROM t \
             WHERE kind = 'decision' GROUP BY decision ORDER BY decision",
            // A condition that is `NULL` for some rows, on a column not grouped.
            "SELECT kind, count(*), sum(n) FROM t WHERE n > 0 GROUP BY kind ORDER BY kind",
            // Two grouping columns, a condition on one of them, an outer query.
            "SELECT * FROM (SELECT decision, kind, count(*) AS c FROM t \
             WHERE decision <> 'audit' AND kind IS NOT NULL GROUP BY decision, kind) \
             WHERE c > 1 ORDER BY decision, kind",
            // A condition that holds nowhere.
            "SELECT decision, count(*) FROM t WHERE kind = 'nothing' GROUP BY decision",
        ] {
            let (expected, _) = run(sql, false).await.unwrap();
            let (actual, plan) = run(sql, true).await.unwrap();
            assert_eq!(actual, expected, "{sql}\n{plan}");
            assert!(plan.contains("ThinningExec"), "{sql}\n{plan}");
            assert!(!actual.contains("audit"), "{sql}\n{actual}");
        }
    }

    #[tokio::test]
    async fn aggregations_it_cannot_take_the_filter_into_are_left_alone() {
        for sql in [
            // An argument that fails on the rows the condition drops: 10 / n where n = 0.
            "SELECT decision, sum(10 / n) FROM t WHERE n <> 0 GROUP BY decision \
             ORDER BY decision",
            // A grouping key computed from the rows.
            "SELECT upper(decision), count(*) FROM t WHERE kind = 'decision' \
             GROUP BY upper(decision) ORDER BY 1",
            // DISTINCT, and no GROUP BY.
            "SELECT decision, count(DISTINCT n) FROM t WHERE kind = 'decision' \
             GROUP BY decision ORDER BY decision",
            "SELECT count(*) FROM t WHERE kind = 'decision'",
            // A volatile condition.
            "SELECT decision, count(*) FROM t WHERE random() < 2.0 GROUP BY decision \
             ORDER BY decision",
            // A FILTER of the query's own.
            "SELECT decision, count(*) FILTER (WHERE n > 1) FROM t WHERE kind = 'decision' \
             GROUP BY decision ORDER BY decision",
        ] {
            let (expected, _) = run(sql, false).await.unwrap();
            let (actual, plan) = run(sql, true).await.unwrap();
            assert_eq!(actual, expected, "{sql}\n{plan}");
            assert!(!plan.contains("ThinningExec"), "{sql}\n{plan}");
        }
    }

    /// A `FILTER` written by a query is not taken for the rule's: its groups stay, even where
    /// the filter holds for none of their rows.
    #[tokio::test]
    async fn a_query_s_own_filters_keep_their_groups() {
        let sql = "SELECT decision, count(*) FILTER (WHERE kind = 'decision') AS c FROM t \
                   GROUP BY decision ORDER BY decision";
        let (answer, plan) = run(sql, true).await.unwrap();
        assert!(!plan.contains("ThinningExec"), "{plan}");
        assert!(answer.contains("| audit    | 0 |"), "{answer}");
    }

    /// A small generator, so that the cases below are the same on every run.
    struct Xorshift(u64);

    impl Xorshift {
        fn below(&mut self, n: usize) -> usize {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            (self.0 % n as u64) as usize
        }

        fn pick<'a>(&mut self, from: &[&'a str]) -> &'a str {
            from[self.below(from.len())]
        }
    }

    /// Generated tables (batches of varied size and make-up, `NULL`s in every column) and
    /// generated aggregations over filters: with the rules, every answer is the one without.
    #[tokio::test]
    async fn generated_aggregations_answer_as_without_the_rules() {
        let mut rng = Xorshift(0x2026_1206);
        let kinds = [
            Some("decision"),
            Some("credential_issued"),
            Some("policy_change"),
            None,
        ];
        let decisions = [Some("allow"), Some("deny"), None];
        let conditions = [
            "kind = 'decision'",
            "kind <> 'policy_change'",
            "n > 2",
            "n IS NOT NULL",
            "decision = 'deny' AND n < 7",
            "kind IN ('decision', 'credential_issued') OR n = 0",
            "coalesce(n, 0) % 3 = 1",
            "kind IS NULL",
        ];
        let groupings = ["kind", "decision", "kind, decision", "decision, n"];
        let aggregates = [
            "count(*)",
            "count(n)",
            "sum(n)",
            "min(n), max(decision)",
            "count(*) AS c, sum(n) AS s",
            "max(kind), count(decision)",
        ];
        let mut thinned = 0;
        let cases = 60;
        for case in 0..cases {
            let partitions = (0..1 + rng.below(3))
                .map(|_| {
                    (0..1 + rng.below(4))
                        .map(|_| {
                            // Mostly decisions in some batches, few in others.
                            let share = rng.below(11);
                            let rows = (0..1 + rng.below(24))
                                .map(|_| {
                                    let kind = if rng.below(10) < share {
                                        Some("decision")
                                    } else {
                                        kinds[rng.below(kinds.len())]
                                    };
                                    let decision = decisions[rng.below(decisions.len())];
                                    let n = (rng.below(5) > 0).then(|| rng.below(10) as i64);
                                    (kind, decision, n)
                                })
                                .collect::<Vec<_>>();
                            batch(&rows)
                        })
                        .collect::<Vec<_>>()
                })
                .collect::<Vec<_>>();
            let grouping = rng.pick(&groupings);
            let sql = format!(
                "SELECT {grouping}, {} FROM t WHERE {} GROUP BY {grouping} \
                 ORDER BY {grouping}",
                rng.pick(&aggregates),
                rng.pick(&conditions),
            );
            let mut answers = Vec::new();
            for with_rules in [false, true] {
                let ctx = context(with_rules);
                ctx.deregister_table("t").unwrap();
                let table = MemTable::try_new(schema(), partitions.clone()).unwrap();
                ctx.register_table("t", Arc::new(table)).unwrap();
                let frame = ctx.sql(&sql).await.unwrap();
                let plan = frame.create_physical_plan().await.unwrap();
                let shown = displayable(plan.as_ref()).indent(true).to_string();
                let batches = collect(plan, ctx.task_ctx()).await.unwrap();
                answers.push(pretty_format_batches(&batches).unwrap().to_string());
                if with_rules && shown.contains("ThinningExec") {
                    thinned += 1;
                }
            }
            assert_eq!(answers[1], answers[0], "case {case}: {sql}");
        }
        // Not all: where the filter makes a grouping column constant, the aggregation's
        // order relies on it, and the filter stays; and a filter below a repartition stays.
        assert!(thinned >= cases * 3 / 4, "{thinned} of {cases} thinned");
    }

    /// The thinning keeps every row where the condition holds, in order, marks each, and
    /// drops only rows where it does not hold; whole batches and thinned ones alike.
    #[tokio::test]
    async fn thinning_keeps_the_rows_that_hold_in_order() {
        let batches = partitions().concat();
        let source =
            MemorySourceConfig::try_new_exec(std::slice::from_ref(&batches), schema(), None)
                .unwrap();
        let predicate = datafusion::physical_expr::expressions::binary(
            Arc::new(ColumnExpr::new("kind", 0)),
            datafusion::logical_expr::Operator::Eq,
            datafusion::physical_expr::expressions::lit("decision"),
            &schema(),
        )
        .unwrap();
        let exec = Arc::new(ThinningExec::try_new(source, predicate, None).unwrap());
        let ctx = context(false);
        let out = collect(Arc::clone(&exec) as _, ctx.task_ctx())
            .await
            .unwrap();

        let all = concat_batches(&schema(), &batches).unwrap();
        let kinds = all
            .column(0)
            .as_any()
            .downcast_ref::<StringArray>()
            .unwrap();
        let holds = kinds
            .iter()
            .map(|kind| Some(kind == Some("decision")))
            .collect::<BooleanArray>();
        let expected = filter_record_batch(&all, &holds).unwrap();
        let out = concat_batches(&exec.schema(), &out).unwrap();
        let marks = out
            .column(3)
            .as_any()
            .downcast_ref::<BooleanArray>()
            .unwrap();
        let kept = filter_record_batch(&out, marks).unwrap();
        assert_eq!(kept.project(&[0, 1, 2]).unwrap(), expected);
        // Rows whose kind is not a decision came on unmarked in whole batches only.
        let unmarked = out.num_rows() - marks.true_count();
        assert!(unmarked > 0 && unmarked < all.num_rows() - expected.num_rows());
        let metrics = exec.metrics().unwrap();
        let count = |name: &str| {
            metrics
                .sum_by_name(name)
                .map(|value| value.as_usize())
                .unwrap_or_default()
        };
        assert_eq!(count("batches_whole"), 2, "{metrics}");
        assert_eq!(count("batches_thinned"), 3, "{metrics}");
    }
}
