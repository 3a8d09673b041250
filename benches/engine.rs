//! Engine benchmarks (`cargo bench --bench engine`): a no-op rerun of a fully cached pipeline, and
//! verifying a 1 GB output against raw multi-threaded blake3. Reported as medians and ratios, never asserted.

use std::path::Path;
use std::time::Instant;

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn main() {
    let bin = Path::new(env!("CARGO_MANIFEST_DIR")).join("target/release/eqflow");
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::create_dir_all(dir.path().join("pipelines")).expect("mkdir");
    let mut text = String::from("[pipeline]\nname = \"bench\"\n");
    for i in 0..8 {
        text.push_str(&format!(
            "[stages.d{i}]\nkind = \"dataset\"\nname = \"ring\"\nn = {}\n",
            1000 + i
        ));
    }
    let file = dir.path().join("pipelines/bench.toml");
    std::fs::write(&file, text).expect("write");

    // 1. No-op rerun of a fully cached 8-stage pipeline, whole process (what a user waits for).
    if bin.exists() {
        let run = || {
            std::process::Command::new(&bin)
                .arg("-q")
                .arg("run")
                .arg(&file)
                .output()
                .expect("run eqflow")
        };
        assert!(run().status.success());
        let times: Vec<f64> = (0..20)
            .map(|_| {
                let t = Instant::now();
                assert!(run().status.success());
                t.elapsed().as_secs_f64() * 1e3
            })
            .collect();
        println!(
            "no-op rerun of a cached 8-stage pipeline (process): median {:.1} ms (target < 100 ms)",
            median(times)
        );
    } else {
        println!("(build the binary first: cargo build --release; skipping the process benchmark)");
    }

    // 2. Verifying a 1 GB output: eqflow's hash_file (mmap + rayon) vs blake3 over the same bytes in memory.
    let big = dir.path().join("big.bin");
    let n = 1usize << 30;
    let data: Vec<u8> = (0..n)
        .map(|i| (i.wrapping_mul(2654435761) >> 13) as u8)
        .collect();
    std::fs::write(&big, &data).expect("write 1 GB");
    let t = Instant::now();
    let h_mem = blake3::Hasher::new()
        .update_rayon(&data)
        .finalize()
        .to_hex()
        .to_string();
    let mem = t.elapsed().as_secs_f64();
    drop(data);
    let ours: Vec<f64> = (0..3)
        .map(|_| {
            let t = Instant::now();
            let h = eqflow::cache::hash_file(&big).expect("hash");
            assert_eq!(h, h_mem);
            t.elapsed().as_secs_f64()
        })
        .collect();
    let ours = median(ours);
    println!(
        "hash 1 GiB: eqflow hash_file {:.2} s ({:.2} GB/s); blake3 update_rayon in memory {:.2} s ({:.2} GB/s); ratio {:.2}",
        ours,
        1.073741824 / ours,
        mem,
        1.073741824 / mem,
        ours / mem
    );
}
