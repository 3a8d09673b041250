//! Load a flow checkpoint and evaluate v(x) and a trajectory from Rust.
//!
//! `cargo run --release --example flow -- cache/entries/KEY/flow.safetensors` uses a checkpoint a pipeline
//! made (`eqflow show pipelines/two_peaks.toml dynamics` prints the folder). Without an argument it writes
//! an untrained 2-D network to a temporary folder first, so the example always runs.

use eqflow::flow::{PointFlow, Units};
use eqflow::nn::points::{FlowModel, Network};

fn main() -> anyhow::Result<()> {
    let tmp = tempfile::tempdir()?;
    let path = match std::env::args().nth(1) {
        Some(p) => std::path::PathBuf::from(p),
        None => {
            let p = tmp.path().join("flow.safetensors");
            FlowModel::random(Network::Kernel, 2, 0, None).save(&p, serde_json::json!({}))?;
            p
        }
    };
    let flow = PointFlow::load_learned(&path)?;
    let points = [0.5, -0.2, 1.0, 1.0];
    let v = flow.velocity(&points, Units::Data)?;
    println!(
        "{}-D flow; v at (0.5, -0.2) = ({:.4}, {:.4})",
        flow.dim(),
        v[0],
        v[1]
    );
    let path = flow.trajectory(&points[..2], 100, 0.1, Units::Data)?;
    println!(
        "after 100 RK4 steps of 0.1: ({:.4}, {:.4})",
        path[200], path[201]
    );
    Ok(())
}
