//! Reading checkpoints (PyTorch `.pt`/`.pth` zip or legacy pickle, `.safetensors`) into a
//! name -> f32 tensor map, and applying such a map to a module whose field names mirror the
//! PyTorch state dict. Every failure is a [`ModelError`] naming the file and the key.

use std::collections::BTreeMap;
use std::io::Read;
use std::path::{Path, PathBuf};

use burn::module::Module;
use burn::store::{ModuleSnapshot, PyTorchToBurnAdapter};
use burn::tensor::{DType, TensorData};

use crate::error::{ModelError, Result};

/// One float tensor of a checkpoint, converted to f32 (row-major).
#[derive(Clone, Debug)]
pub struct TensorEntry {
    pub shape: Vec<usize>,
    pub data: Vec<f32>,
}

/// All float tensors of a checkpoint file, keyed by their state-dict name.
#[derive(Clone, Debug)]
pub struct Checkpoint {
    pub path: PathBuf,
    pub tensors: BTreeMap<String, TensorEntry>,
    /// Safetensors `__metadata__` (empty for PyTorch files).
    pub metadata: BTreeMap<String, String>,
    /// Integer/bool tensors that were skipped (e.g. BatchNorm `num_batches_tracked`).
    pub skipped: Vec<String>,
}

enum Format {
    Zip,
    LegacyPickle,
    Safetensors,
}

fn sniff(path: &Path) -> Result<Format> {
    let io = |source| ModelError::Io {
        path: path.to_path_buf(),
        source,
    };
    let mut f = std::fs::File::open(path).map_err(io)?;
    let len = f.metadata().map_err(io)?.len();
    let mut head = [0u8; 9];
    let n = f.read(&mut head).map_err(io)?;
    let not = |reason: &str| ModelError::NotACheckpoint {
        path: path.to_path_buf(),
        reason: reason.to_string(),
    };
    if n == 0 {
        return Err(not("the file is empty"));
    }
    if n >= 4 && &head[..4] == b"PK\x03\x04" {
        return Ok(Format::Zip);
    }
    if head[0] == 0x80 && n >= 2 && head[1] <= 5 {
        return Ok(Format::LegacyPickle);
    }
    if n == 9 && head[8] == b'{' {
        let header = u64::from_le_bytes(head[..8].try_into().expect("8 bytes"));
        if header + 8 > len {
            return Err(not(
                "safetensors header is longer than the file (truncated?)",
            ));
        }
        return Ok(Format::Safetensors);
    }
    Err(not("unrecognised file format"))
}

fn to_f32(path: &Path, key: &str, dtype: DType, bytes: &[u8]) -> Result<Option<Vec<f32>>> {
    let bad = || ModelError::NotACheckpoint {
        path: path.to_path_buf(),
        reason: format!(
            "tensor '{key}' has {} bytes, not a whole number of {dtype:?} elements",
            bytes.len()
        ),
    };
    let chunks = |w: usize| {
        if !bytes.len().is_multiple_of(w) {
            Err(bad())
        } else {
            Ok(bytes.chunks_exact(w))
        }
    };
    Ok(Some(match dtype {
        DType::F32 => chunks(4)?
            .map(|c| f32::from_le_bytes(c.try_into().expect("4")))
            .collect(),
        DType::F64 => chunks(8)?
            .map(|c| f64::from_le_bytes(c.try_into().expect("8")) as f32)
            .collect(),
        DType::F16 => chunks(2)?
            .map(|c| half::f16::from_le_bytes(c.try_into().expect("2")).to_f32())
            .collect(),
        DType::BF16 => chunks(2)?
            .map(|c| half::bf16::from_le_bytes(c.try_into().expect("2")).to_f32())
            .collect(),
        _ => return Ok(None),
    }))
}

impl Checkpoint {
    /// Read every tensor of `path`. A SAM 2 `{"model": state_dict}` file is unwrapped.
    pub fn read(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref();
        let mut ck = match sniff(path)? {
            Format::Zip | Format::LegacyPickle => Self::read_torch(path)?,
            Format::Safetensors => Self::read_safetensors(path)?,
        };
        ck.unwrap_prefix();
        if ck.tensors.is_empty() {
            return Err(ModelError::NotACheckpoint {
                path: path.to_path_buf(),
                reason: "it holds no float tensors".into(),
            });
        }
        Ok(ck)
    }

    fn read_torch(path: &Path) -> Result<Self> {
        use burn::store::pytorch_reader::{DType as PtDType, PytorchReader};
        let reader = PytorchReader::new(path).map_err(|e| ModelError::NotACheckpoint {
            path: path.to_path_buf(),
            reason: format!("PyTorch reader: {e}"),
        })?;
        let mut tensors = BTreeMap::new();
        let mut skipped = Vec::new();
        for (name, t) in reader.into_tensors() {
            let dtype = match t.dtype() {
                PtDType::F32 => DType::F32,
                PtDType::F64 => DType::F64,
                PtDType::F16 => DType::F16,
                PtDType::BF16 => DType::BF16,
                _ => {
                    skipped.push(name);
                    continue;
                }
            };
            let shape = t.shape().to_vec();
            let bytes = t.read().map_err(|e| ModelError::NotACheckpoint {
                path: path.to_path_buf(),
                reason: format!("cannot read tensor '{name}': {e} (truncated or corrupt file?)"),
            })?;
            let data = to_f32(path, &name, dtype, &bytes)?.expect("float dtype");
            check_len(path, &name, &shape, data.len())?;
            tensors.insert(name, TensorEntry { shape, data });
        }
        Ok(Self {
            path: path.to_path_buf(),
            tensors,
            metadata: BTreeMap::new(),
            skipped,
        })
    }

    fn read_safetensors(path: &Path) -> Result<Self> {
        let bytes = std::fs::read(path).map_err(|source| ModelError::Io {
            path: path.to_path_buf(),
            source,
        })?;
        let not = |reason: String| ModelError::NotACheckpoint {
            path: path.to_path_buf(),
            reason,
        };
        let (_, meta) = safetensors::SafeTensors::read_metadata(&bytes)
            .map_err(|e| not(format!("safetensors: {e}")))?;
        let metadata: BTreeMap<String, String> = meta
            .metadata()
            .as_ref()
            .map(|m| m.iter().map(|(k, v)| (k.clone(), v.clone())).collect())
            .unwrap_or_default();
        let st = safetensors::SafeTensors::deserialize(&bytes)
            .map_err(|e| not(format!("safetensors: {e}")))?;
        let mut tensors = BTreeMap::new();
        let mut skipped = Vec::new();
        for (name, view) in st.tensors() {
            use safetensors::Dtype as S;
            let dtype = match view.dtype() {
                S::F32 => DType::F32,
                S::F64 => DType::F64,
                S::F16 => DType::F16,
                S::BF16 => DType::BF16,
                _ => {
                    skipped.push(name);
                    continue;
                }
            };
            let shape = view.shape().to_vec();
            let data = to_f32(path, &name, dtype, view.data())?.expect("float dtype");
            check_len(path, &name, &shape, data.len())?;
            tensors.insert(name, TensorEntry { shape, data });
        }
        Ok(Self {
            path: path.to_path_buf(),
            tensors,
            metadata,
            skipped,
        })
    }

    /// `{"model": sd}` (SAM 2 `.pt`) or `{"state_dict": sd}` read without a top-level key
    /// gives `model.`-prefixed names: strip the wrapper.
    fn unwrap_prefix(&mut self) {
        for wrapper in ["model.", "state_dict.", "module."] {
            if !self.tensors.is_empty() && self.tensors.keys().all(|k| k.starts_with(wrapper)) {
                let old = std::mem::take(&mut self.tensors);
                self.tensors = old
                    .into_iter()
                    .map(|(k, v)| (k[wrapper.len()..].to_string(), v))
                    .collect();
            }
        }
    }

    pub fn shape(&self, key: &str) -> Option<&[usize]> {
        self.tensors.get(key).map(|t| t.shape.as_slice())
    }

    pub fn contains(&self, key: &str) -> bool {
        self.tensors.contains_key(key)
    }

    /// Number of keys `{prefix}{i}{suffix}` for consecutive i = 0, 1, ...
    pub fn count_indexed(&self, prefix: &str, suffix: &str) -> usize {
        (0..)
            .take_while(|i| self.contains(&format!("{prefix}{i}{suffix}")))
            .count()
    }

    /// Reject NaN/Inf weights (they would silently produce garbage masks).
    pub fn check_finite(&self) -> Result<()> {
        for (k, t) in &self.tensors {
            if let Some(v) = t.data.iter().find(|v| !v.is_finite()) {
                return Err(ModelError::NonFinite {
                    path: self.path.clone(),
                    key: k.clone(),
                    what: if v.is_nan() { "NaN" } else { "infinite" },
                });
            }
        }
        Ok(())
    }
}

fn check_len(path: &Path, key: &str, shape: &[usize], len: usize) -> Result<()> {
    if shape.iter().product::<usize>() != len {
        return Err(ModelError::NotACheckpoint {
            path: path.to_path_buf(),
            reason: format!("tensor '{key}' has {len} elements but shape {shape:?}"),
        });
    }
    Ok(())
}

/// Load `ck` into `module` (whose tree mirrors the PyTorch state dict, optionally under
/// `prefix`). Every parameter must be present with the PyTorch shape; keys of the checkpoint
/// outside the module are allowed only under `ignorable` prefixes (e.g. a classification head).
pub fn apply_checkpoint<M: Module + ModuleSnapshot>(
    module: &mut M,
    ck: &Checkpoint,
    model_name: &str,
    ignorable: &[&str],
) -> Result<()> {
    let mismatch = |message: String| ModelError::Mismatch {
        path: ck.path.clone(),
        model: model_name.to_string(),
        message,
    };
    // Expected names and shapes, in PyTorch layout.
    let expected = module.collect(
        None,
        Some(Box::new(burn::store::BurnToPyTorchAdapter)),
        true,
    );
    let mut missing = Vec::new();
    for t in &expected {
        let want: Vec<usize> = t.shape.iter().copied().collect();
        match ck.shape(&t.name) {
            None => missing.push(format!("{} {:?}", t.name, want)),
            Some(found) if found != want.as_slice() => {
                return Err(mismatch(format!(
                    "tensor '{}' has shape {:?}, the model expects {:?}",
                    t.name, found, want
                )));
            }
            Some(_) => {}
        }
    }
    if !missing.is_empty() {
        let n = missing.len();
        let shown: Vec<_> = missing.into_iter().take(8).collect();
        return Err(mismatch(format!(
            "{n} tensor(s) missing, e.g. {}",
            shown.join(", ")
        )));
    }
    let expected_names: std::collections::HashSet<&str> =
        expected.iter().map(|t| t.name.as_str()).collect();
    let unexpected: Vec<&String> = ck
        .tensors
        .keys()
        .filter(|k| {
            !expected_names.contains(k.as_str()) && !ignorable.iter().any(|p| k.starts_with(p))
        })
        .collect();
    if !unexpected.is_empty() {
        let n = unexpected.len();
        let shown: Vec<_> = unexpected.into_iter().take(8).map(|s| s.as_str()).collect();
        return Err(mismatch(format!(
            "{n} unexpected tensor(s), e.g. {} (a checkpoint of another model?)",
            shown.join(", ")
        )));
    }
    let packs: Vec<_> = expected
        .iter()
        .map(|t| {
            let e = &ck.tensors[&t.name];
            burn::store::bridge::from_data(
                TensorData::new(e.data.clone(), e.shape.clone()),
                t.name.clone(),
                None,
            )
        })
        .collect();
    let result = module.apply(packs, None, Some(Box::new(PyTorchToBurnAdapter)), true);
    if !result.errors.is_empty() || !result.missing.is_empty() {
        let mut msgs: Vec<String> = result
            .errors
            .iter()
            .take(8)
            .map(|e| e.to_string())
            .collect();
        msgs.extend(
            result
                .missing
                .iter()
                .take(8)
                .map(|(p, _)| format!("missing {p}")),
        );
        return Err(mismatch(msgs.join("; ")));
    }
    Ok(())
}
