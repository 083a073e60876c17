//! An optimizer rule that puts a filter's null tests (`x IS NOT NULL`, `x IS NULL`) before
//! its other conditions: `WHERE decision = 'deny' AND workload IS NOT NULL` runs as
//! `WHERE workload IS NOT NULL AND decision = 'deny'`.
//!
//! DataFusion evaluates `a AND b` on a batch by evaluating `a`; when `a` holds for few rows
//! (a fifth or fewer), it copies those rows of every column the filter reads into a new
//! batch and evaluates `b` there. Audit questions are full of that shape: a selective test
//! (`decision = 'deny'` holds for about a tenth of the events) followed by a null test that
//! holds for nearly all, so the copy is made for a test that reads only validity bits. Over
//! ten million events the copy of a text column cost about a fifth of the question's time.
//! With the null test first, it runs on the whole batch from the validity bits alone, and the
//! selective test after it either runs on the whole batch as well or, when the null test is
//! the selective one, only on the rows it left.
//!
//! `AND` is commutative in SQL, so the answer is the same. The other conditions keep their
//! order among themselves, and each is evaluated on the same rows as before or on fewer, so
//! no error (a division by zero, say) can appear that the written order would not raise.

use datafusion::common::Result;
use datafusion::common::tree_node::Transformed;
use datafusion::logical_expr::utils::{conjunction, split_conjunction_owned};
use datafusion::logical_expr::{Expr, LogicalPlan};
use datafusion::optimizer::optimizer::ApplyOrder;
use datafusion::optimizer::{OptimizerConfig, OptimizerRule};

/// See the module's documentation.
#[derive(Debug, Default)]
pub(crate) struct NullTestsFirst;

impl OptimizerRule for NullTestsFirst {
    fn name(&self) -> &str {
        "portcullis_null_tests_first"
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
        let LogicalPlan::Filter(mut filter) = plan else {
            return Ok(Transformed::no(plan));
        };
        let conditions = split_conjunction_owned(filter.predicate.clone());
        let first_other = conditions.iter().position(|c| !is_null_test(c));
        let null_test_later =
            first_other.is_some_and(|first| conditions.iter().skip(first).any(is_null_test));
        if !null_test_later {
            return Ok(Transformed::no(LogicalPlan::Filter(filter)));
        }
        let (mut ordered, others): (Vec<Expr>, Vec<Expr>) =
            conditions.into_iter().partition(is_null_test);
        ordered.extend(others);
        let Some(predicate) = conjunction(ordered) else {
            return Ok(Transformed::no(LogicalPlan::Filter(filter)));
        };
        filter.predicate = predicate;
        Ok(Transformed::yes(LogicalPlan::Filter(filter)))
    }
}

/// `column IS NOT NULL` or `column IS NULL`: a test of validity bits alone.
fn is_null_test(condition: &Expr) -> bool {
    matches!(
        condition,
        Expr::IsNotNull(inner) | Expr::IsNull(inner) if matches!(inner.as_ref(), Expr::Column(_))
    )
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use datafusion::arrow::array::{Int64Array, RecordBatch, StringArray};
    use datafusion::arrow::datatypes::{DataType, Field, Schema};
    use datafusion::common::tree_node::{TreeNode as _, TreeNodeRecursion};
    use datafusion::datasource::MemTable;
    use datafusion::prelude::SessionContext;

    use super::*;

    fn context() -> SessionContext {
        let schema = Arc::new(Schema::new(vec![
            Field::new("decision", DataType::Utf8, true),
            Field::new("workload", DataType::Utf8, true),
            Field::new("n", DataType::Int64, true),
        ]));
        let batch = RecordBatch::try_new(
            Arc::clone(&schema),
            vec![
                Arc::new(StringArray::from(vec![
                    Some("deny"),
                    Some("deny"),
                    Some("allow"),
                    None,
                    Some("deny"),
                ])),
                Arc::new(StringArray::from(vec![
                    Some("ci"),
                    None,
                    Some("ci"),
                    Some("web"),
                    Some("web"),
                ])),
                Arc::new(Int64Array::from(vec![
                    Some(1),
                    Some(0),
                    Some(2),
                    None,
                    Some(0),
                ])),
            ],
        )
        .expect("batch");
        let ctx = SessionContext::new();
        ctx.add_optimizer_rule(Arc::new(NullTestsFirst));
        let table = MemTable::try_new(schema, vec![vec![batch]]).expect("table");
        ctx.register_table("events", Arc::new(table))
            .expect("register");
        ctx
    }

    async fn filter_of(ctx: &SessionContext, sql: &str) -> String {
        let plan = ctx
            .sql(sql)
            .await
            .expect("plan")
            .into_optimized_plan()
            .expect("optimize");
        let mut found = None;
        plan.apply(|node| {
            if let LogicalPlan::Filter(filter) = node {
                found = Some(filter.predicate.to_string());
            }
            Ok(TreeNodeRecursion::Continue)
        })
        .expect("walk");
        found.expect("a filter")
    }

    async fn rows(ctx: &SessionContext, sql: &str) -> Vec<String> {
        let batches = ctx
            .sql(sql)
            .await
            .expect("plan")
            .collect()
            .await
            .expect("run");
        let text = datafusion::arrow::util::pretty::pretty_format_batches(&batches)
            .expect("format")
            .to_string();
        text.lines().map(str::to_owned).collect()
    }

    #[tokio::test]
    async fn null_tests_move_before_the_other_conditions_in_their_order() {
        let ctx = context();
        let predicate = filter_of(
            &ctx,
            "SELECT workload FROM events \
             WHERE decision = 'deny' AND n < 5 AND workload IS NOT NULL AND decision IS NOT NULL",
        )
        .await;
        let position = |part: &str| predicate.find(part).unwrap_or_else(|| panic!("{part}"));
        assert!(
            position("workload IS NOT NULL") < position("decision = "),
            "{predicate}"
        );
        assert!(
            position("decision IS NOT NULL") < position("decision = "),
            "{predicate}"
        );
        assert!(position("decision = ") < position("n < "), "{predicate}");
    }

    #[tokio::test]
    async fn a_filter_without_a_later_null_test_is_left_as_written() {
        let ctx = context();
        let predicate = filter_of(
            &ctx,
            "SELECT workload FROM events WHERE workload IS NULL AND decision = 'deny'",
        )
        .await;
        assert!(
            predicate.find("workload IS NULL") < predicate.find("decision = "),
            "{predicate}"
        );
        // `OR` is not a conjunction: nothing inside it moves.
        let predicate = filter_of(
            &ctx,
            "SELECT workload FROM events WHERE decision = 'deny' OR workload IS NULL",
        )
        .await;
        assert!(predicate.contains(" OR "), "{predicate}");
    }

    #[tokio::test]
    async fn the_answer_is_the_one_the_written_order_gives() {
        let ctx = context();
        let reordered = rows(
            &ctx,
            "SELECT workload, count(*) AS n FROM events \
             WHERE decision = 'deny' AND workload IS NOT NULL GROUP BY workload ORDER BY workload",
        )
        .await;
        let plain = SessionContext::new();
        let table = ctx.table_provider("events").await.expect("table");
        plain.register_table("events", table).expect("register");
        let written = rows(
            &plain,
            "SELECT workload, count(*) AS n FROM events \
             WHERE decision = 'deny' AND workload IS NOT NULL GROUP BY workload ORDER BY workload",
        )
        .await;
        assert_eq!(reordered, written);
        assert!(
            reordered.iter().any(|line| line.contains("| ci ")),
            "{reordered:?}"
        );
        assert!(
            reordered.iter().any(|line| line.contains("| web ")),
            "{reordered:?}"
        );
    }
}
