//! The segmentation engine behind `fastsam2 eval interactive`: an [`ImagePredictor`] driven
//! by the protocol's clicks. First click: three masks, the best predicted IoU wins (SAM's
//! ambiguity handling); later clicks: one mask, with the previous low-resolution logits as the
//! mask input (SAM's iterative refinement). Probabilities are the sigmoid of the logits.

use anyhow::Result;
use fastsam2_core::image_io::RgbImage;
use fastsam2_core::prompt::{MaskInput, Point, Prompt};
use fastsam2_eval::interactive::{
    Click, ClickPrediction, InteractivePredictor, LowResLogits, PredictorError,
    RgbImage as EvalImage,
};
use fastsam2_predict::ImagePredictor;

use crate::eval_cmd::EngineArgs;
use crate::model_args::{ModelArgs, device};

pub struct SamClicker {
    predictor: ImagePredictor,
}

impl InteractivePredictor for SamClicker {
    fn set_image(&mut self, image: &EvalImage) -> std::result::Result<(), PredictorError> {
        let img = RgbImage::from_raw(image.width, image.height, image.data.clone())?;
        self.predictor.set_image(&img)?;
        Ok(())
    }

    fn predict(
        &mut self,
        clicks: &[Click],
        prev: Option<&LowResLogits>,
    ) -> std::result::Result<ClickPrediction, PredictorError> {
        let points = clicks
            .iter()
            .map(|c| Point {
                x: c.x as f32,
                y: c.y as f32,
                label: c.is_positive as i32,
            })
            .collect();
        let mask = prev.map(|p| MaskInput {
            logits: p.data.clone(),
            size: p.width as usize,
        });
        let first = mask.is_none();
        let pred = self.predictor.predict(
            &Prompt {
                points,
                bbox: None,
                mask,
            },
            first,
        )?;
        let k = if first { pred.best() } else { 0 };
        let probs = pred
            .mask_logits(k)
            .iter()
            .map(|&v| 1.0 / (1.0 + (-v).exp()))
            .collect();
        let s = pred.low_res_size as u32;
        Ok(ClickPrediction {
            probs,
            low_res_logits: Some(LowResLogits {
                width: s,
                height: s,
                data: pred.low_res(k).to_vec(),
            }),
        })
    }
}

/// `EngineFactory` for `eval interactive`.
pub fn factory(args: &EngineArgs) -> Result<Box<dyn InteractivePredictor>> {
    let margs = ModelArgs {
        checkpoint: args.checkpoint.clone(),
        model: args.model.clone(),
        config: None,
        device: "cpu".into(),
    };
    let device = device(&margs.device)?;
    let model = margs.load(&device)?;
    Ok(Box::new(SamClicker {
        predictor: ImagePredictor::new(model, device),
    }))
}
