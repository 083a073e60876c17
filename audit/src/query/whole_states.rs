//! Queries whose first stages must keep aggregating.
//!
//! When nearly every row of a first stage (`AggregateMode::Partial`) is a group of its own,
//! DataFusion's stage, and [`super::coded_groups::CodedGroupsExec`] after it, stop aggregating
//! and hand each row on as its own partial state, made by the accumulator's
//! `convert_to_state`. DataFusion 55.2's `percentile_cont` cannot do that: it is given its
//! two arguments (the values and the fraction) and asserts that it has one, so the query's
//! worker panics and the query fails with a join error (`GROUP BY event_id` with a
//! `percentile_cont` over a few hundred thousand events did). A query that uses such an
//! aggregate therefore runs with the switch turned off, as though every stage found its keys
//! repeat; its answer is the same, and only its first stages do more work.

use std::sync::Arc;

use datafusion::common::tree_node::{TreeNode as _, TreeNodeRecursion};
use datafusion::execution::TaskContext;
use datafusion::physical_plan::ExecutionPlan;
use datafusion::physical_plan::aggregates::AggregateExec;

use super::coded_groups::CodedGroupsExec;

/// Aggregates whose partial state cannot be made from a row alone.
const NO_STATE_FROM_A_ROW: &[&str] = &["percentile_cont"];

/// The context `plan` runs in: `context` itself, or, when an aggregation in the plan uses one
/// of [`NO_STATE_FROM_A_ROW`], `context` with its first stages never passing rows on.
pub(crate) fn context_for(plan: &Arc<dyn ExecutionPlan>, context: TaskContext) -> TaskContext {
    if !uses_an_aggregate_without_row_states(plan) {
        return context;
    }
    let mut config = context.session_config().clone();
    config
        .options_mut()
        .execution
        .skip_partial_aggregation_probe_ratio_threshold = 1.0;
    context.with_session_config(config)
}

fn uses_an_aggregate_without_row_states(plan: &Arc<dyn ExecutionPlan>) -> bool {
    let mut found = false;
    // The walk's closure never fails.
    let _ = plan.apply(|node| {
        let aggregate = node.downcast_ref::<AggregateExec>().or_else(|| {
            node.downcast_ref::<CodedGroupsExec>()
                .map(CodedGroupsExec::aggregate)
        });
        found = aggregate.is_some_and(|aggregate| {
            aggregate
                .aggr_expr()
                .iter()
                .any(|expr| NO_STATE_FROM_A_ROW.contains(&expr.fun().name()))
        });
        Ok(if found {
            TreeNodeRecursion::Stop
        } else {
            TreeNodeRecursion::Continue
        })
    });
    found
}

#[cfg(test)]
mod tests {
    use super::*;

    use datafusion::arrow::array::{Float64Array, RecordBatch, StringArray, UInt64Array};
    use datafusion::arrow::datatypes::{DataType, Field, Schema};
    use datafusion::arrow::util::pretty::pretty_format_batches;
    use datafusion::datasource::MemTable;
    use datafusion::execution::session_state::SessionStateBuilder;
    use datafusion::physical_plan::collect;
    use datafusion::prelude::{SessionConfig, SessionContext};

    use super::super::coded_groups::CodedGroups;

    /// Two partitions of rows whose keys `k` (integers) and `x` (floating point) are all
    /// distinct, so that first stages told to probe after 1,000 rows stop aggregating.
    fn context(skip_after_rows: Option<usize>) -> SessionContext {
        let mut config = SessionConfig::new()
            .with_batch_size(500)
            .with_target_partitions(2);
        let execution = &mut config.options_mut().execution;
        match skip_after_rows {
            Some(rows) => execution.skip_partial_aggregation_probe_rows_threshold = rows,
            None => execution.skip_partial_aggregation_probe_ratio_threshold = 1.0,
        }
        let state = SessionStateBuilder::new()
            .with_config(config)
            .with_default_features()
            .with_physical_optimizer_rule(Arc::new(CodedGroups))
            .build();
        let ctx = SessionContext::new_with_state(state);
        let schema = Arc::new(Schema::new(vec![
            Field::new("k", DataType::UInt64, false),
            Field::new("x", DataType::Float64, false),
            Field::new("v", DataType::Float64, false),
            Field::new("w", DataType::Float64, false),
            Field::new("s", DataType::Utf8, false),
        ]));
        let partitions = (0..2u64)
            .map(|partition| {
                (0..6u64)
                    .map(|part| {
                        let keys = (0..500).map(|row| (partition * 6 + part) * 500 + row);
                        let keys = keys.collect::<Vec<u64>>();
                        let floats = |f: fn(u64) -> f64| -> Float64Array {
                            keys.iter().map(|&k| f(k)).collect::<Vec<f64>>().into()
                        };
                        RecordBatch::try_new(
                            Arc::clone(&schema),
                            vec![
                                Arc::new(UInt64Array::from(keys.clone())),
                                Arc::new(floats(|k| k as f64 / 4.0)),
                                Arc::new(floats(|k| (k % 97) as f64)),
                                Arc::new(floats(|k| (k % 13 + 1) as f64)),
                                Arc::new(StringArray::from_iter_values(
                                    keys.iter().map(|k| format!("s{}", k % 31)),
                                )),
                            ],
                        )
                        .unwrap()
                    })
                    .collect()
            })
            .collect();
        let table = MemTable::try_new(schema, partitions).unwrap();
        ctx.register_table("t", Arc::new(table)).unwrap();
        ctx
    }

    /// The answer, with or without [`context_for`]; a worker's panic is an error here.
    async fn run(ctx: &SessionContext, sql: &str, mended: bool) -> Result<String, String> {
        let frame = ctx.sql(sql).await.map_err(|error| error.to_string())?;
        let task = frame.task_ctx();
        let plan = frame
            .create_physical_plan()
            .await
            .map_err(|error| error.to_string())?;
        let task = Arc::new(if mended {
            context_for(&plan, task)
        } else {
            task
        });
        // In a task of its own, so that a panic in a stage that runs on this one is caught.
        let answer = tokio::spawn(async move { collect(plan, task).await })
            .await
            .map_err(|error| format!("panicked: {error}"))?
            .map_err(|error| error.to_string())?;
        Ok(pretty_format_batches(&answer).unwrap().to_string())
    }

    #[tokio::test]
    async fn percentile_cont_answers_when_first_stages_would_pass_rows_on() {
        let skipping = context(Some(1_000));
        let aggregating = context(None);
        for key in ["k", "x"] {
            let sql = format!(
                "SELECT {key}, percentile_cont(v, 0.5) AS p, \
                 percentile_cont(0.25) WITHIN GROUP (ORDER BY w) AS q, count(*) AS c \
                 FROM t GROUP BY {key} ORDER BY {key}"
            );
            let expected = run(&aggregating, &sql, false).await.unwrap();
            assert_eq!(run(&skipping, &sql, true).await.unwrap(), expected, "{sql}");
            // The reason for the module: should DataFusion's own conversion start to work,
            // this fails, and `NO_STATE_FROM_A_ROW` can lose the name.
            let unmended = run(&skipping, &sql, false).await;
            assert!(unmended.is_err(), "{sql} answered without the mend");
        }
    }

    #[tokio::test]
    async fn other_aggregates_of_several_arguments_pass_rows_on_correctly() {
        let skipping = context(Some(1_000));
        let aggregating = context(None);
        for aggregate in [
            "approx_percentile_cont(v, 0.5)",
            "approx_percentile_cont_with_weight(v, w, 0.5)",
            "string_agg(s, ',')",
            "corr(v, w)",
            "covar_samp(v, w)",
            "regr_slope(v, w)",
            "median(v)",
            "stddev(v)",
            "approx_distinct(s)",
        ] {
            let sql = format!("SELECT k, {aggregate} AS a FROM t GROUP BY k ORDER BY k");
            let expected = run(&aggregating, &sql, false).await.unwrap();
            // Passing rows on is what is tested here, so without the mend.
            assert_eq!(
                run(&skipping, &sql, false).await.unwrap(),
                expected,
                "{sql}"
            );
        }
    }
}
