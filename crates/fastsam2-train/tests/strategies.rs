//! Strategies: what trains and what stays bit-identical after optimizer steps; LoRA's share
//! of trainable parameters; LoRA merge equivalence.

mod common;

use common::{mobilesam_micro, params, shapes_config, vit_micro};
use fastsam2_train::{TrainOptions, Trainer};

fn changed(a: &[f32], b: &[f32]) -> bool {
    a.iter().zip(b).any(|(x, y)| x.to_bits() != y.to_bits())
}

/// Two optimizer steps (weight decay 0): frozen parameters stay bit-identical; every trainable
/// parameter changes on the first step, with two structural exceptions that are checked, not
/// skipped:
/// * LoRA's `A` and the adapters' down-projections get an exactly-zero gradient on the first
///   step (their partner `B` / up-projection starts at zero so that the inserted module starts
///   as the identity); they must change on the second step.
/// * The mask decoder's hypernetwork heads of the ambiguity masks 1-3
///   (`output_hypernetworks_mlps.{1,2,3}`) only get a gradient when their mask is the
///   lowest-loss one of a multimask prediction (SAM's rule); the steps here use single-point
///   prompts (multimask) followed by a corrective click (single mask), and at least one of those
///   heads must change, all other decoder parameters always.
/// * The biases of the decoder attentions' key projections (`*.k_proj.bias`) have an
///   analytically zero gradient (adding the same vector to every key shifts all scores of a
///   query equally, and softmax ignores the shift); they may move only by rounding noise, so
///   they are not required to change.
fn check_strategy(checkpoint: &std::path::Path, strategy: &str, extra: &str) {
    let dir = tempfile::tempdir().unwrap();
    let extra = format!(
        "{extra}\n[optim]\nweight_decay = 0.0\nlr = 1e-3\n[prompts]\nkinds = [\"points\"]\npositive_points = 1\niterative_clicks = 1\n"
    );
    let mut cfg = shapes_config(dir.path(), checkpoint, strategy, &extra);
    cfg.train.batch_size = 4;
    let mut t = Trainer::new(cfg, &TrainOptions::default()).unwrap();
    assert!(t.counts.trainable > 0);
    let p0 = params(&t.model.sam);
    t.train_step().unwrap();
    let p1 = params(&t.model.sam);
    t.train_step().unwrap();
    let p2 = params(&t.model.sam);
    let (mut n_train, mut n_frozen) = (0, 0);
    let mut heads_changed = 0;
    let mut heads_total = 0;
    for ((a, b), c) in p0.iter().zip(&p1).zip(&p2) {
        assert_eq!(a.0, b.0);
        assert_eq!(a.1, b.1, "{}: trainability changed", a.0);
        if a.1 {
            n_train += 1;
            let zero_partner = a.0.contains("lora_a") || a.0.contains(".down.");
            let ambiguity_head = ["1", "2", "3"].iter().any(|k| {
                a.0.starts_with(&format!("mask_decoder.output_hypernetworks_mlps.{k}."))
            });
            if a.0.ends_with("k_proj.bias") {
                continue;
            }
            if ambiguity_head {
                heads_total += 1;
                heads_changed += changed(&a.2, &c.2) as usize;
                continue;
            }
            if !zero_partner {
                assert!(
                    changed(&a.2, &b.2),
                    "{strategy}: trainable {} unchanged after step 1",
                    a.0
                );
            }
            assert!(
                changed(&b.2, &c.2),
                "{strategy}: trainable {} unchanged after step 2",
                a.0
            );
        } else {
            n_frozen += 1;
            assert!(
                !changed(&a.2, &b.2) && !changed(&a.2, &c.2),
                "{strategy}: frozen {} changed",
                a.0
            );
        }
    }
    if heads_total > 0 {
        assert!(heads_changed > 0, "{strategy}: no ambiguity head trained");
    }
    assert!(
        n_train > 0 && n_frozen > 0,
        "{strategy}: {n_train} trainable, {n_frozen} frozen tensors"
    );
}

#[test]
fn full_finetuning_vit() {
    check_strategy(&vit_micro(), "full", "");
}

#[test]
fn full_decoder_only_mobilesam_keeps_batchnorm_frozen() {
    check_strategy(
        &mobilesam_micro(),
        "full",
        "[strategy.full]\nfreeze_image_encoder = true\n",
    );
}

/// Full fine-tuning of TinyViT with BN in its default "frozen" mode: BN affine weights train,
/// the running statistics (buffers, not parameters) stay bit-identical.
#[test]
fn batchnorm_running_statistics_stay_frozen() {
    use fastsam2_train::model::state_dict;
    let dir = tempfile::tempdir().unwrap();
    let cfg = shapes_config(dir.path(), &mobilesam_micro(), "full", "");
    let mut t = Trainer::new(cfg, &TrainOptions::default()).unwrap();
    let running = |t: &Trainer| -> Vec<(String, Vec<u8>)> {
        state_dict(&t.model.sam)
            .unwrap()
            .into_iter()
            .filter(|(k, _, _)| k.contains("running_"))
            .map(|(k, _, b)| (k, b))
            .collect()
    };
    let bn_weight = |t: &Trainer| -> Vec<u8> {
        state_dict(&t.model.sam)
            .unwrap()
            .into_iter()
            .find(|(k, _, _)| k == "image_encoder.patch_embed.seq.0.bn.weight")
            .unwrap()
            .2
    };
    let (r0, w0) = (running(&t), bn_weight(&t));
    assert!(!r0.is_empty());
    t.train_step().unwrap();
    t.train_step().unwrap();
    assert_eq!(r0, running(&t), "running statistics changed");
    assert_ne!(w0, bn_weight(&t), "BN weight did not train");
}

#[test]
fn adapter_vit() {
    check_strategy(&vit_micro(), "adapter", "");
}

#[test]
fn lora_vit() {
    check_strategy(
        &vit_micro(),
        "lora",
        "[strategy.lora]\ntargets = [\"qkv\", \"proj\", \"lin1\", \"lin2\"]\ndropout = 0.1\n",
    );
}

#[test]
fn lora_mobilesam() {
    check_strategy(&mobilesam_micro(), "lora", "");
}

#[test]
fn lora_trains_under_five_percent() {
    use fastsam2_models::sam::SamConfig;
    use fastsam2_train::config::StrategySection;
    // The micro fixture and the full-size MobileSAM / SAM ViT-B architectures, default LoRA.
    let dir = tempfile::tempdir().unwrap();
    let cfg = shapes_config(dir.path(), &vit_micro(), "lora", "");
    let t = Trainer::new(cfg.clone(), &TrainOptions::default()).unwrap();
    let f = t.counts.fraction();
    assert!(
        f > 0.0 && f < 0.05,
        "micro ViT: LoRA trains {:.3} %",
        100.0 * f
    );
    let s: StrategySection = cfg.strategy.clone();
    for (name, c) in [
        ("mobilesam", SamConfig::mobile_sam()),
        ("vit_b", SamConfig::vit_b()),
    ] {
        let dev = burn::tensor::Device::flex().autodiff();
        let sam = c.init(&dev);
        let (sam, _) = fastsam2_train::model::apply_strategy(sam, &s, 0, &Default::default());
        let counts = fastsam2_train::ParamCounts::of(&sam);
        let f = counts.fraction();
        assert!(
            f > 0.0 && f < 0.05,
            "{name}: LoRA trains {:.3} %",
            100.0 * f
        );
        println!("{name}: {}", counts.summary());
    }
}
