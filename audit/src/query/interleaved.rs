//! The segments' listing table, with its files dealt to the scan's partitions in turn.
//!
//! DataFusion's listing table splits the files it lists into one run of consecutive files per
//! partition (per worker thread): with two, the first half of the month and the second. A
//! question about a time range, which is most of them (`time >= … AND time < …`), reads only
//! the segments whose statistics overlap the range, and those are consecutive files: a week in
//! the middle of the month lay five days in one partition and two in the other, and the query
//! took as long as the busier one. Dealt in turn, file 1 to partition 1, file 2 to partition 2,
//! file 3 to partition 1, any run of consecutive segments is shared evenly.
//!
//! Each partition still reads its files in the order of their names, which is `seq` order, and
//! their `seq` ranges do not overlap: DataFusion checks that from the files' statistics before
//! it keeps the table's declared `seq` ordering, as it does for the runs. A partition must read
//! its own files, and only them: DataFusion's file stealing, which `run_query` turns off, hands
//! an idle partition the next file of one queue that holds partition 1's files, then partition
//! 2's, which with dealt files is not `seq` order.

use std::borrow::Cow;
use std::sync::Arc;

use async_trait::async_trait;
use datafusion::arrow::datatypes::SchemaRef;
use datafusion::catalog::{ScanArgs, ScanResult, Session, TableProvider};
use datafusion::common::{Constraints, Result, Statistics};
use datafusion::datasource::TableType;
use datafusion::datasource::listing::ListingTable;
use datafusion::datasource::physical_plan::{FileGroup, FileScanConfig, FileScanConfigBuilder};
use datafusion::datasource::source::DataSourceExec;
use datafusion::logical_expr::{Expr, LogicalPlan, TableProviderFilterPushDown};
use datafusion::physical_plan::{ExecutionPlan, Partitioning};

/// See the module's documentation.
#[derive(Debug)]
pub(crate) struct InterleavedSegments {
    listing: Arc<ListingTable>,
}

impl InterleavedSegments {
    pub(crate) fn new(listing: Arc<ListingTable>) -> InterleavedSegments {
        InterleavedSegments { listing }
    }
}

#[async_trait]
impl TableProvider for InterleavedSegments {
    fn schema(&self) -> SchemaRef {
        self.listing.schema()
    }

    fn constraints(&self) -> Option<&Constraints> {
        self.listing.constraints()
    }

    fn table_type(&self) -> TableType {
        self.listing.table_type()
    }

    fn get_logical_plan(&self) -> Option<Cow<'_, LogicalPlan>> {
        self.listing.get_logical_plan()
    }

    async fn scan(
        &self,
        state: &dyn Session,
        projection: Option<&Vec<usize>>,
        filters: &[Expr],
        limit: Option<usize>,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        let plan = self.listing.scan(state, projection, filters, limit).await?;
        Ok(interleaved(plan))
    }

    async fn scan_with_args<'a>(
        &self,
        state: &dyn Session,
        args: ScanArgs<'a>,
    ) -> Result<ScanResult> {
        let scan = self.listing.scan_with_args(state, args).await?;
        Ok(ScanResult::new(interleaved(scan.into_inner())))
    }

    fn supports_filters_pushdown(
        &self,
        filters: &[&Expr],
    ) -> Result<Vec<TableProviderFilterPushDown>> {
        self.listing.supports_filters_pushdown(filters)
    }

    fn statistics(&self) -> Option<Statistics> {
        self.listing.statistics()
    }
}

/// `plan` with its files dealt to its partitions in turn, when it is a scan of several files
/// in more than one partition; anything else as it is.
fn interleaved(plan: Arc<dyn ExecutionPlan>) -> Arc<dyn ExecutionPlan> {
    let Some(scan) = plan.downcast_ref::<DataSourceExec>() else {
        return plan;
    };
    let Some(config) = scan.data_source().downcast_ref::<FileScanConfig>() else {
        return plan;
    };
    let partitions = config.file_groups.len();
    if partitions < 2 {
        return plan;
    }
    // A partition declared by the files' partition values (all of one `date` together) is a
    // promise the plan above may rely on: leave it.
    if !matches!(
        scan.properties().output_partitioning(),
        Partitioning::UnknownPartitioning(_)
    ) {
        return plan;
    }
    let mut files: Vec<_> = config
        .file_groups
        .iter()
        .flat_map(|group| group.files().iter().cloned())
        .collect();
    files.sort_by(|a, b| a.path().cmp(b.path()));
    let mut dealt: Vec<Vec<_>> = vec![Vec::new(); partitions];
    for (index, file) in files.into_iter().enumerate() {
        dealt[index % partitions].push(file);
    }
    // No group is empty: DataFusion never makes more partitions than there are files.
    let groups = dealt.into_iter().map(FileGroup::new).collect();
    let config = FileScanConfigBuilder::from(config.clone())
        .with_file_groups(groups)
        .build();
    DataSourceExec::from_data_source(config)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, reason = "a test fails by panicking")]

    use super::*;

    /// The files each partition of `plan` reads, in order.
    fn partitions(plan: &Arc<dyn ExecutionPlan>) -> Vec<Vec<String>> {
        let scan = plan.downcast_ref::<DataSourceExec>().unwrap();
        let config = scan.data_source().downcast_ref::<FileScanConfig>().unwrap();
        config
            .file_groups
            .iter()
            .map(|group| {
                group
                    .files()
                    .iter()
                    .map(|file| file.path().filename().unwrap().to_owned())
                    .collect()
            })
            .collect()
    }

    #[test]
    fn files_are_dealt_in_turn_and_keep_their_order() {
        use datafusion::arrow::datatypes::{DataType, Field, Schema};
        use datafusion::datasource::listing::PartitionedFile;
        use datafusion::datasource::physical_plan::ParquetSource;
        use datafusion::execution::object_store::ObjectStoreUrl;

        let schema = Arc::new(Schema::new(vec![Field::new("seq", DataType::Int64, false)]));
        let file = |n: u32| PartitionedFile::new(format!("events/seg-{n:02}.parquet"), 100);
        let runs = vec![
            FileGroup::new((1..=5).map(file).collect()),
            FileGroup::new((6..=9).map(file).collect()),
        ];
        let config = FileScanConfigBuilder::new(
            ObjectStoreUrl::local_filesystem(),
            Arc::new(ParquetSource::new(schema)),
        )
        .with_file_groups(runs)
        .build();
        let plan: Arc<dyn ExecutionPlan> = DataSourceExec::from_data_source(config);
        let names = |numbers: &[u32]| -> Vec<String> {
            numbers
                .iter()
                .map(|n| format!("seg-{n:02}.parquet"))
                .collect()
        };
        assert_eq!(
            partitions(&interleaved(plan)),
            vec![names(&[1, 3, 5, 7, 9]), names(&[2, 4, 6, 8])]
        );
    }
}
