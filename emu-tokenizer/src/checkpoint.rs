//! Reading and writing safetensors checkpoints, for every model in the workspace.
//!
//! A checkpoint is one `.safetensors` file or a folder holding `model.safetensors` or a sharded
//! `model.safetensors.index.json`. Files are memory-mapped and tensors are copied one at a time
//! straight into the model's preallocated parameters, so loading an 8B model never holds two
//! copies of it in RAM. Coverage is checked both ways: a parameter with no tensor, a tensor with no
//! parameter, or a shape that differs is an error that names it. The model's dtype is kept: a
//! bf16 file loads into f32 parameters (and the other way round) by conversion.

use anyhow::{Context, Result, bail, ensure};
use memmap2::Mmap;
use safetensors::{Dtype, SafeTensors, tensor::Metadata};
use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use tch::{Device, Kind, Tensor};

struct Shard {
    path: PathBuf,
    mmap: Mmap,
    header_len: usize,
    meta: Metadata,
}

/// An opened checkpoint: every tensor name with where to find it.
pub struct Checkpoint {
    shards: Vec<Shard>,
    index: BTreeMap<String, usize>,
    /// What the user pointed at, for messages.
    pub origin: PathBuf,
}

/// Name, dtype and shape of one stored tensor.
#[derive(Clone, Debug)]
pub struct TensorMeta {
    pub dtype: Dtype,
    pub shape: Vec<i64>,
}

impl Checkpoint {
    /// Opens a `.safetensors` file, or a folder with `model.safetensors` or a sharded index.
    pub fn open(path: &Path) -> Result<Self> {
        let files = if path.is_dir() {
            let index = path.join("model.safetensors.index.json");
            let single = path.join("model.safetensors");
            if index.exists() {
                shard_files(&index)?
            } else if single.exists() {
                vec![single]
            } else {
                bail!(
                    "{} holds no model.safetensors nor model.safetensors.index.json\n\
                     hint: point at the folder that holds the weights, or at a .safetensors file",
                    path.display()
                )
            }
        } else if path.exists() {
            vec![path.to_path_buf()]
        } else {
            bail!("{} does not exist", path.display())
        };
        let mut shards = Vec::new();
        let mut index = BTreeMap::new();
        for file in files {
            let shard = open_shard(&file)?;
            for name in shard.meta.tensors().keys() {
                if index.insert(name.clone(), shards.len()).is_some() {
                    bail!(
                        "tensor `{name}` appears in more than one shard (again in {})",
                        file.display()
                    );
                }
            }
            shards.push(shard);
        }
        Ok(Checkpoint { shards, index, origin: path.to_path_buf() })
    }

    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.index.keys().map(String::as_str)
    }

    pub fn len(&self) -> usize {
        self.index.len()
    }

    pub fn is_empty(&self) -> bool {
        self.index.is_empty()
    }

    pub fn meta(&self, name: &str) -> Option<TensorMeta> {
        let shard = &self.shards[*self.index.get(name)?];
        let info = shard.meta.info(name)?;
        Some(TensorMeta {
            dtype: info.dtype,
            shape: info.shape.iter().map(|&d| d as i64).collect(),
        })
    }

    /// The file a tensor lives in.
    pub fn file_of(&self, name: &str) -> Option<&Path> {
        self.index.get(name).map(|&i| self.shards[i].path.as_path())
    }

    /// Reads one tensor, in the dtype it is stored in, on `device`.
    pub fn tensor(&self, name: &str, device: Device) -> Result<Tensor> {
        let &i = self
            .index
            .get(name)
            .with_context(|| format!("no tensor `{name}` in {}", self.origin.display()))?;
        let shard = &self.shards[i];
        let info = shard.meta.info(name).expect("indexed names have metadata");
        let kind = kind_of(info.dtype).with_context(|| {
            format!(
                "tensor `{name}` in {} has dtype {:?}, which emu3-rs cannot read",
                shard.path.display(),
                info.dtype
            )
        })?;
        let (start, end) = info.data_offsets;
        let base = 8 + shard.header_len;
        let bytes = &shard.mmap[base + start..base + end];
        let shape: Vec<i64> = info.shape.iter().map(|&d| d as i64).collect();
        let t = Tensor::f_from_data_size(bytes, &shape, kind)
            .with_context(|| format!("reading tensor `{name}` from {}", shard.path.display()))?;
        Ok(if device == Device::Cpu { t } else { t.to_device(device) })
    }
}

fn shard_files(index: &Path) -> Result<Vec<PathBuf>> {
    let text =
        std::fs::read_to_string(index).with_context(|| format!("reading {}", index.display()))?;
    let json: serde_json::Value = serde_json::from_str(&text)
        .with_context(|| format!("{} is not valid JSON", index.display()))?;
    let map = json
        .get("weight_map")
        .and_then(|m| m.as_object())
        .with_context(|| format!("{} has no `weight_map` object", index.display()))?;
    let dir = index.parent().expect("a file has a parent");
    let mut files: Vec<PathBuf> = Vec::new();
    for (name, file) in map {
        let file = file.as_str().with_context(|| {
            format!("{}: weight_map[`{name}`] is not a string", index.display())
        })?;
        let p = dir.join(file);
        if !files.contains(&p) {
            files.push(p);
        }
    }
    ensure!(!files.is_empty(), "{} lists no shards", index.display());
    Ok(files)
}

#[allow(unsafe_code)]
fn open_shard(path: &Path) -> Result<Shard> {
    let file = std::fs::File::open(path).with_context(|| format!("opening {}", path.display()))?;
    // SAFETY: the mapping is read-only and lives as long as the Shard. Changing the file while
    // it is mapped is outside what we support (as with every mmap-based loader).
    let mmap = unsafe { Mmap::map(&file) }
        .with_context(|| format!("memory-mapping {}", path.display()))?;
    let (header_len, meta) = SafeTensors::read_metadata(&mmap).map_err(|e| {
        anyhow::anyhow!(
            "{} is not a valid safetensors file ({e:?}); is it truncated or still being written?",
            path.display()
        )
    })?;
    Ok(Shard { path: path.to_path_buf(), mmap, header_len, meta })
}

pub fn kind_of(dtype: Dtype) -> Option<Kind> {
    Some(match dtype {
        Dtype::F32 => Kind::Float,
        Dtype::F16 => Kind::Half,
        Dtype::BF16 => Kind::BFloat16,
        Dtype::F64 => Kind::Double,
        Dtype::I64 => Kind::Int64,
        Dtype::I32 => Kind::Int,
        Dtype::U8 => Kind::Uint8,
        Dtype::BOOL => Kind::Bool,
        _ => return None,
    })
}

/// How a checkpoint maps onto a model: for each checkpoint name, the model's parameter name (or
/// `None` to say the tensor belongs to another model in the same file, e.g. the LM beside the VQ).
pub trait Layout {
    fn model_name(&self, checkpoint_name: &str) -> Option<String>;
}

impl<F: Fn(&str) -> Option<String>> Layout for F {
    fn model_name(&self, checkpoint_name: &str) -> Option<String> {
        self(checkpoint_name)
    }
}

/// Copies every parameter of `vars` from `ckpt`, checking coverage both ways and shapes. A stored
/// tensor whose element count matches but whose shape differs only by trailing 1s (1×1 conv vs
/// linear) is reshaped. Returns the number of tensors loaded.
pub fn load_into(
    vars: &HashMap<String, Tensor>,
    ckpt: &Checkpoint,
    layout: &dyn Layout,
    what: &str,
) -> Result<usize> {
    let origin = ckpt.origin.display();
    let mut source: HashMap<String, String> = HashMap::new();
    let mut unexpected = Vec::new();
    for name in ckpt.names() {
        let Some(model_name) = layout.model_name(name) else { continue };
        if !vars.contains_key(&model_name) {
            unexpected.push(name.to_string());
            continue;
        }
        if let Some(prev) = source.insert(model_name.clone(), name.to_string()) {
            bail!(
                "{origin}: both `{prev}` and `{name}` map to the {what} parameter `{model_name}`"
            );
        }
    }
    let mut missing: Vec<_> = vars.keys().filter(|k| !source.contains_key(*k)).cloned().collect();
    missing.sort();
    unexpected.sort();
    if !missing.is_empty() || !unexpected.is_empty() {
        let list = |v: &[String]| {
            let mut s = v.iter().take(8).map(|n| format!("`{n}`")).collect::<Vec<_>>().join(", ");
            if v.len() > 8 {
                s.push_str(&format!(" and {} more", v.len() - 8));
            }
            s
        };
        let mut msg = format!("{origin} does not match the {what} built from its config:");
        if !missing.is_empty() {
            msg.push_str(&format!("\n  missing tensors ({}): {}", missing.len(), list(&missing)));
        }
        if !unexpected.is_empty() {
            msg.push_str(&format!(
                "\n  unexpected tensors ({}): {}",
                unexpected.len(),
                list(&unexpected)
            ));
        }
        msg.push_str("\nhint: check that config.json belongs to these weights");
        bail!(msg);
    }
    let mut names: Vec<_> = source.iter().collect();
    names.sort();
    for (model_name, ckpt_name) in names {
        let var = &vars[model_name];
        let want = var.size();
        let meta = ckpt.meta(ckpt_name).expect("listed names have metadata");
        let squeeze =
            |s: &[i64]| s.iter().rev().skip_while(|&&d| d == 1).copied().collect::<Vec<_>>();
        ensure!(
            meta.shape == want || (squeeze(&meta.shape) == squeeze(&want) && !want.is_empty()),
            "{origin}: tensor `{ckpt_name}` has shape {:?}, but the {what} expects {:?} for `{model_name}`\n\
             hint: check that config.json belongs to these weights",
            meta.shape,
            want
        );
        let t = ckpt.tensor(ckpt_name, var.device())?;
        tch::no_grad(|| var.shallow_clone().f_copy_(&t.reshape(&want)))
            .with_context(|| format!("{origin}: copying `{ckpt_name}` into `{model_name}`"))?;
    }
    Ok(source.len())
}

/// Writes `tensors` to `path` atomically: to a temporary file beside it, then renamed, so a kill
/// at any moment leaves either the old file or the new one.
pub fn save_atomic(tensors: &[(String, Tensor)], path: &Path) -> Result<()> {
    let tmp = path.with_extension("safetensors.tmp");
    let contiguous: Vec<(String, Tensor)> = tensors
        .iter()
        .map(|(n, t)| (n.clone(), t.detach().to_device(Device::Cpu).contiguous()))
        .collect();
    Tensor::write_safetensors(&contiguous, &tmp)
        .with_context(|| format!("writing {}", tmp.display()))?;
    sync_and_rename(&tmp, path)
}

/// fsyncs `tmp` and renames it over `path`.
pub fn sync_and_rename(tmp: &Path, path: &Path) -> Result<()> {
    std::fs::File::open(tmp)
        .and_then(|f| f.sync_all())
        .with_context(|| format!("syncing {}", tmp.display()))?;
    std::fs::rename(tmp, path)
        .with_context(|| format!("renaming {} to {}", tmp.display(), path.display()))
}

/// Writes text atomically (config files, state files).
pub fn write_atomic(path: &Path, text: &str) -> Result<()> {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, text).with_context(|| format!("writing {}", tmp.display()))?;
    sync_and_rename(&tmp, path)
}

/// Writes a model folder: `config.json` (`config` plus the `architectures`/`model_type` the
/// reference tools expect) and `model.safetensors` with every variable, both atomically.
pub fn save_model_folder(
    dir: &Path,
    config: &impl serde::Serialize,
    architecture: &str,
    model_type: &str,
    vars: &HashMap<String, Tensor>,
) -> Result<()> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let mut cfg = serde_json::to_value(config)?;
    cfg["architectures"] = serde_json::json!([architecture]);
    cfg["model_type"] = serde_json::json!(model_type);
    write_atomic(&dir.join("config.json"), &serde_json::to_string_pretty(&cfg)?)?;
    save_atomic(&sorted_vars(vars), &dir.join("model.safetensors"))
}

/// The model's parameters in a stable order, for saving.
pub fn sorted_vars(vars: &HashMap<String, Tensor>) -> Vec<(String, Tensor)> {
    let mut v: Vec<_> = vars.iter().map(|(n, t)| (n.clone(), t.shallow_clone())).collect();
    v.sort_by(|a, b| a.0.cmp(&b.0));
    v
}
