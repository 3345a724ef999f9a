//! GPU device selection (feature `vulkan`): burn's Vulkan backend, driver loaded at run time.

use anyhow::{Result, bail};
use burn::tensor::{Device, DeviceType};

/// The first Vulkan device, or a clear error when no driver/device is present (burn would
/// otherwise panic in a worker thread).
pub fn vulkan_device() -> Result<Device> {
    let devices = Device::enumerate(DeviceType::Vulkan);
    match devices.into_iter().next() {
        Some(d) => Ok(d),
        None => bail!(
            "no Vulkan device found: install a GPU driver with Vulkan support, or use --device cpu"
        ),
    }
}
