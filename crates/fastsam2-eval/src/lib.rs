//! # fastsam2-eval
//!
//! Segmentation metrics and evaluation protocols that reproduce the official
//! implementations number for number, without a tensor library:
//!
//! | module | official implementation | metrics |
//! | --- | --- | --- |
//! | [`davis`] | `davis2017-evaluation` (semi-supervised) | J&F, J/F Mean, Recall, Decay, per object |
//! | [`interactive`] | RITM / SimpleClick `isegm.inference` | NoC@85, NoC@90, mIoU@k |
//! | [`coco`] | `pycocotools.cocoeval.COCOeval` (`segm`) | AP, AP50, AP75, APs/m/l, AR1/10/100, ARs/m/l |
//! | [`panoptic`] | `panopticapi.evaluation.pq_compute` | PQ / SQ / RQ for All, Things, Stuff, per class |
//!
//! COCO RLE (bit-compatible with `pycocotools`) lives in [`fastsam2_core::rle`], mask
//! files (palette PNG, binary PNG, panoptic id PNG, `.npy`) in [`fastsam2_core::mask_io`];
//! [`datasets`] reads the usual on-disk layouts (image + mask folders, COCO instances,
//! COCO panoptic, DAVIS, YouTube-VOS, YouTube-VIS).
//!
//! Every module's documentation lists the rules of the official code it follows (which
//! area field COCOeval uses, how DAVIS treats void pixels, …). Means are taken in NumPy's
//! pairwise-summation order ([`numeric`]), so results agree with the official outputs to
//! the last bits; the test-suite checks them against official outputs committed as
//! fixtures. Work is spread over sequences / images / categories with `rayon`.
//!
//! ```no_run
//! use fastsam2_eval::{NoProgress, coco, davis};
//! # fn main() -> Result<(), fastsam2_eval::EvalError> {
//! let r = davis::evaluate("DAVIS".as_ref(), "results".as_ref(), &davis::DavisOptions::default(), &NoProgress)?;
//! println!("J&F = {:.3}", r.jf_mean);
//! let c = coco::evaluate_files("instances_val2017.json".as_ref(), "segm.json".as_ref(), &NoProgress)?;
//! println!("mask AP = {:.3}", c.stats[0]);
//! # Ok(()) }
//! ```

pub mod binary;
pub mod bitmask;
pub mod coco;
pub mod datasets;
pub mod davis;
pub mod error;
pub mod interactive;
pub mod numeric;
pub mod panoptic;

pub use error::{EvalError, Result};
pub use fastsam2_core::mask_io;
pub use fastsam2_core::rle;

/// Progress reporting hook (the CLI plugs a progress bar in). Called from worker threads.
pub trait Progress: Sync {
    /// The number of work items about to be processed.
    fn start(&self, _total: u64) {}
    /// `n` more items are done.
    fn advance(&self, _n: u64) {}
    /// All items are done.
    fn finish(&self) {}
}

/// A [`Progress`] that reports nothing.
#[derive(Debug, Clone, Copy, Default)]
pub struct NoProgress;

impl Progress for NoProgress {}
