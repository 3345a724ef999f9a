//! Session behaviour beyond the reference rounds: streaming equals offline tracking and keeps
//! a bounded number of memories; objects removed; errors for unknown ids and frames.

use std::path::PathBuf;

use burn::tensor::Device;
use fastsam2_core::image_io::load_rgb;
use fastsam2_core::prompt::Point;
use fastsam2_models::loader::load_checkpoint;
use fastsam2_predict::video::{SessionOptions, VideoError, VideoPredictor, VideoPrompt};

fn fixtures() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../fixtures")
}

fn predictor() -> VideoPredictor {
    let device = Device::flex();
    let model = load_checkpoint(
        &fixtures().join("sam2.1_hiera_micro/weights.safetensors"),
        None,
        None,
        &device,
    )
    .unwrap();
    VideoPredictor::new(model, device).unwrap()
}

fn click(x: f32, y: f32) -> VideoPrompt {
    VideoPrompt::Points {
        points: vec![Point::positive(x, y)],
        bbox: None,
        clear: true,
    }
}

#[test]
fn streaming_equals_offline_and_stays_bounded() {
    let p = predictor();
    let frames = fixtures().join("video/frames");
    // offline: forward propagation from frame 0
    let mut off = p.open_folder(&frames, SessionOptions::default()).unwrap();
    off.add_prompt(0, 1, &click(160.0, 60.0)).unwrap();
    off.add_prompt(0, 2, &click(250.0, 180.0)).unwrap();
    let mut offline = Vec::new();
    off.propagate(false, |m| {
        offline.push(m.clone());
        Ok(())
    })
    .unwrap();
    // streaming: the same frames pushed one at a time, then 24 more (the video looped)
    let mut st = p.streaming(SessionOptions::default());
    let mut max_retained = 0;
    for i in 0..32 {
        let img = load_rgb(frames.join(format!("{:05}.png", i % 8))).unwrap();
        let f = st.push_frame(&img).unwrap();
        assert_eq!(f, i);
        if i == 0 {
            st.add_prompt(0, 1, &click(160.0, 60.0)).unwrap();
            st.add_prompt(0, 2, &click(250.0, 180.0)).unwrap();
        }
        let m = st.track().unwrap();
        if let Some(off) = offline.get(i) {
            for (a, b) in m.objects.iter().zip(&off.objects) {
                let d = a
                    .low_res
                    .iter()
                    .zip(&b.low_res)
                    .map(|(x, y)| (x - y).abs())
                    .fold(0f32, f32::max);
                assert!(
                    d < 1e-5,
                    "frame {i} object {}: streaming differs from offline by {d}",
                    a.id
                );
            }
        }
        max_retained = max_retained.max(st.retained_outputs());
    }
    // micro config: num_maskmem 4, max_obj_ptrs 4 -> 3 recent frames + the prompted frame, per object
    assert!(
        max_retained <= 2 * (4 + 1),
        "retained {max_retained} outputs"
    );
    assert_eq!(st.num_frames(), 32);
}

#[test]
fn errors_and_object_removal() {
    let p = predictor();
    let mut s = p
        .open_folder(&fixtures().join("video/frames"), SessionOptions::default())
        .unwrap();
    assert!(matches!(
        s.add_prompt(8, 1, &click(1.0, 1.0)),
        Err(VideoError::FrameOutOfRange {
            frame: 8,
            num_frames: 8
        })
    ));
    assert!(matches!(
        s.propagate(false, |_| Ok(())),
        Err(VideoError::NoObjects)
    ));
    assert!(matches!(
        s.remove_object(7),
        Err(VideoError::UnknownObject(7))
    ));
    assert!(matches!(
        s.clear_prompts(0, 7),
        Err(VideoError::UnknownObject(7))
    ));
    let bad = s
        .add_prompt(0, 1, &click(500.0, 10.0))
        .unwrap_err()
        .to_string();
    assert!(
        bad.contains("object 1 on frame 0") && bad.contains("outside the 320x240"),
        "{bad}"
    );
    let wrong_mask = VideoPrompt::Mask {
        mask: vec![true; 100],
        width: 10,
        height: 10,
    };
    let e = s.add_prompt(0, 1, &wrong_mask).unwrap_err().to_string();
    assert!(e.contains("mask is 10x10") && e.contains("320x240"), "{e}");
    // two objects, one removed: propagation tracks only the other
    s.add_prompt(0, 1, &click(160.0, 60.0)).unwrap();
    s.add_prompt(0, 2, &click(250.0, 180.0)).unwrap();
    s.remove_object(1).unwrap();
    let mut n = 0;
    s.propagate(false, |m| {
        assert_eq!(m.objects.iter().map(|o| o.id).collect::<Vec<_>>(), vec![2]);
        n += 1;
        Ok(())
    })
    .unwrap();
    assert_eq!(n, 8);
    // a mask prompt works as a conditioning input (used as the output on its frame)
    let mut mask = vec![false; 320 * 240];
    for y in 50..150 {
        for x in 100..220 {
            mask[y * 320 + x] = true;
        }
    }
    let m = s
        .add_prompt(
            3,
            5,
            &VideoPrompt::Mask {
                mask: mask.clone(),
                width: 320,
                height: 240,
            },
        )
        .unwrap();
    let obj5 = m.objects.iter().find(|o| o.id == 5).unwrap();
    let logits = obj5.video_logits((240, 320));
    let agree = logits
        .iter()
        .zip(&mask)
        .filter(|(l, m)| (**l > 0.0) == **m)
        .count();
    assert!(
        agree as f64 > 0.98 * mask.len() as f64,
        "mask prompt reproduced on {agree} pixels"
    );
}
