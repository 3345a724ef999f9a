//! Train from a TOML config without the CLI:
//! `cargo run --release -p fastsam2-train --example train -- CONFIG.toml [--resume]`.

use fastsam2_train::{Event, Observer, TrainConfig, TrainOptions, Trainer};

struct Print;

impl Observer for Print {
    fn event(&self, e: Event<'_>) {
        match e {
            Event::Start { counts, .. } => println!("{}", counts.summary()),
            Event::Step(r) if r.step % 10 == 0 => {
                println!("step {:5} loss {:.4} lr {:.2e}", r.step, r.loss, r.lr)
            }
            Event::Val(v) => println!(
                "val @ {:5}: IoU {:.4} Dice {:.4} acc {:.4} (best threshold {:.2}: IoU {:.4})",
                v.step, v.iou, v.dice, v.pixel_accuracy, v.best_threshold, v.best_threshold_iou
            ),
            Event::Message(m) => println!("{m}"),
            _ => {}
        }
    }
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let path = args.next().ok_or("usage: train CONFIG.toml [--resume]")?;
    let resume = args.any(|a| a == "--resume");
    let cfg = TrainConfig::from_file(path.as_ref())?;
    let opts = TrainOptions {
        resume,
        ..Default::default()
    };
    let mut t = Trainer::new(cfg, &opts)?;
    let s = t.run(&opts, &Print)?;
    if let Some(p) = s.exported {
        println!("wrote {}", p.display());
    }
    Ok(())
}
