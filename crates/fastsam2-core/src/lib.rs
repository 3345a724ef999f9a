//! FastSAM2 core: everything that does not need a tensor library.

pub mod image_io;
pub mod mask_io;
pub mod overlay;
pub mod ppm_stream;
pub mod prompt;
pub mod resize;
pub mod rle;
