//! What people read after a run: the results table (terminal, CSV, JSON) and the static HTML report.

mod html;
mod results;

pub use html::{write_report, ReportSummary};
pub use results::{collect_results, results_table, ResultRow, ResultsFormat};
