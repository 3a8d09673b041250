//! What people read after a run: the results table (terminal, CSV, JSON) across stages and sweep points.

mod results;

pub use results::{collect_results, results_table, ResultRow, ResultsFormat};
