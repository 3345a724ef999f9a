//! Exact resume (20 steps == 10 + resume + 10, bit for bit) and a SIGKILLed run.

mod common;

use std::process::Command;
use std::time::{Duration, Instant};

use common::{params, shapes_config, vit_micro};
use fastsam2_train::trainer::last_checkpoint_path;
use fastsam2_train::{TrainConfig, TrainOptions, Trainer};

struct Quiet;
impl fastsam2_train::Observer for Quiet {
    fn event(&self, _: fastsam2_train::Event<'_>) {}
}

/// LoRA with dropout, gradient accumulation, augmentation, mixed prompts and corrective clicks:
/// every source of randomness and state is exercised.
fn config(out: &std::path::Path) -> TrainConfig {
    shapes_config(
        out,
        &vit_micro(),
        "lora",
        r#"
[strategy.lora]
dropout = 0.1
train_mask_decoder = true
[prompts]
iterative_clicks = 1
[optim]
lr = 2e-3
warmup_steps = 3
[validation]
thresholds = 5
"#,
    )
}

fn train_steps_records(dir: &std::path::Path) -> Vec<String> {
    let text = std::fs::read_to_string(dir.join("train_metrics.csv")).unwrap();
    // drop the samples/s column (wall-clock)
    text.lines()
        .map(|l| {
            l.rsplit_once(',')
                .map(|(a, _)| a.to_string())
                .unwrap_or_default()
        })
        .collect()
}

#[test]
fn resume_is_exact() {
    let a = tempfile::tempdir().unwrap();
    let b = tempfile::tempdir().unwrap();
    let mut cfg_a = config(a.path());
    cfg_a.train.grad_accum = 2;
    let mut cfg_b = config(b.path());
    cfg_b.train.grad_accum = 2;

    let opts = TrainOptions::default();
    let mut ta = Trainer::new(cfg_a, &opts).unwrap();
    assert_eq!(ta.total_steps, 20);
    assert_eq!(
        ta.steps_per_epoch, 6,
        "the stop at step 10 must fall mid-epoch"
    );
    ta.run(&opts, &Quiet).unwrap();
    let full = params(&ta.model.sam);

    let stop = TrainOptions {
        stop_after_steps: Some(10),
        ..Default::default()
    };
    let mut tb = Trainer::new(cfg_b.clone(), &stop).unwrap();
    let s = tb.run(&stop, &Quiet).unwrap();
    assert_eq!(s.steps, 10);
    drop(tb);
    let resume = TrainOptions {
        resume: true,
        ..Default::default()
    };
    let mut tb = Trainer::new(cfg_b, &resume).unwrap();
    assert_eq!(tb.step, 10);
    tb.run(&resume, &Quiet).unwrap();
    assert_eq!(tb.step, 20);
    let resumed = params(&tb.model.sam);

    assert_eq!(full.len(), resumed.len());
    let mut trainable = 0;
    for (x, y) in full.iter().zip(&resumed) {
        assert_eq!(x.0, y.0);
        trainable += x.1 as usize;
        let same =
            x.2.iter()
                .zip(&y.2)
                .all(|(p, q)| p.to_bits() == q.to_bits());
        assert!(same, "{} differs after resume", x.0);
    }
    assert!(trainable > 0);
    // The logged losses of every step agree too (the resumed run rewrote its log from step 10).
    assert_eq!(train_steps_records(a.path()), train_steps_records(b.path()));
}

/// Child side of `sigkill_leaves_a_loadable_checkpoint` (runs only when the parent starts it).
#[test]
#[ignore = "started by sigkill_leaves_a_loadable_checkpoint"]
fn kill_child() {
    let Ok(dir) = std::env::var("FASTSAM2_TRAIN_KILL_DIR") else {
        return;
    };
    let cfg = kill_config(std::path::Path::new(&dir));
    let opts = TrainOptions::default();
    let mut t = Trainer::new(cfg, &opts).unwrap();
    t.run(&opts, &Quiet).unwrap();
}

fn kill_config(dir: &std::path::Path) -> TrainConfig {
    let mut c = config(dir);
    c.train.max_steps = Some(100_000);
    c.train.checkpoint_every_steps = 2;
    c
}

#[test]
fn sigkill_leaves_a_loadable_checkpoint() {
    let dir = tempfile::tempdir().unwrap();
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args(["--exact", "kill_child", "--ignored", "--test-threads=1"])
        .env("FASTSAM2_TRAIN_KILL_DIR", dir.path())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let cfg = kill_config(dir.path());
    let ckpt = last_checkpoint_path(&cfg);
    let t0 = Instant::now();
    // Wait for a few checkpoints, then kill in the middle of whatever it is doing.
    loop {
        std::thread::sleep(Duration::from_millis(50));
        let steps = std::fs::read_to_string(dir.path().join("train_metrics.csv"))
            .map(|t| t.lines().count().saturating_sub(1))
            .unwrap_or(0);
        if steps >= 9 {
            break;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(120),
            "child made no progress"
        );
        assert!(child.try_wait().unwrap().is_none(), "child exited early");
    }
    std::thread::sleep(Duration::from_millis(37));
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();

    // The checkpoint is complete and loads strictly (every tensor, right shapes).
    let loaded = fastsam2_train::checkpoint::read(&ckpt).unwrap();
    let at = loaded.state.step;
    assert!(at >= 8 && at.is_multiple_of(2), "checkpoint at step {at}");
    // No temporary file is mistaken for a checkpoint; resume continues from it.
    let stop = at + 3;
    let opts = TrainOptions {
        resume: true,
        stop_after_steps: Some(stop),
        ..Default::default()
    };
    let mut t = Trainer::new(cfg, &opts).unwrap();
    assert_eq!(t.step, at);
    t.run(&opts, &Quiet).unwrap();
    assert_eq!(t.step, stop);
    let again = fastsam2_train::checkpoint::read(&ckpt).unwrap();
    assert_eq!(again.state.step, stop);
    // The metric log holds each step once.
    let text = std::fs::read_to_string(dir.path().join("train_metrics.csv")).unwrap();
    let steps: Vec<u64> = text
        .lines()
        .skip(1)
        .map(|l| l.split(',').next().unwrap().parse().unwrap())
        .collect();
    let expect: Vec<u64> = (1..=stop).collect();
    assert_eq!(steps, expect);
}
