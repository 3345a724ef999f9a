//! Quick timing of a few steps (development aid).
use fastsam2_train::{LogObserver, TrainConfig, TrainOptions, Trainer};

fn main() {
    let path = std::env::args().nth(1).expect("config path");
    let cfg = TrainConfig::from_file(path.as_ref()).expect("config");
    let opts = TrainOptions {
        overwrite: true,
        ..Default::default()
    };
    let mut t = Trainer::new(cfg, &opts).expect("trainer");
    let s = t.run(&opts, &LogObserver).expect("run");
    println!("{s:?}");
}
