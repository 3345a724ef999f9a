//! FastSAM2 core: everything that does not need a tensor library.

pub mod rle;
