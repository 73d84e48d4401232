//! Parity with the reference: fixture folders, tensor comparison, and the VQ checks.
//!
//! A fixture folder (see testdata/fixtures/README.md) holds a tiny model in both checkpoint
//! layouts, inputs and the reference's outputs (`expected.safetensors`), and tolerances
//! (`fixture.json`). Each check yields one [`CheckRow`]; the LM and optimizer checks live in the
//! crates that own those parts and produce the same rows.
//!
//! Shapes as in `fixture.json`: B batch, T frames, H/W pixels, h/w code grid.

use crate::checkpoint::Checkpoint;
use crate::vq::VqModel;
use anyhow::{Context, Result};
use serde::Serialize;
use std::path::{Path, PathBuf};
use tch::{Device, Kind, Tensor};

/// An opened fixture folder.
pub struct Fixture {
    pub dir: PathBuf,
    pub expected: Checkpoint,
    /// Absolute tolerance for float tensors.
    pub float_abs: f64,
}

impl Fixture {
    pub fn open(dir: &Path) -> Result<Self> {
        let spec_path = dir.join("fixture.json");
        let spec: serde_json::Value = serde_json::from_str(
            &std::fs::read_to_string(&spec_path)
                .with_context(|| format!("reading {}", spec_path.display()))?,
        )
        .with_context(|| format!("{} is not valid JSON", spec_path.display()))?;
        let float_abs = spec["tolerance"]["float_abs"]
            .as_f64()
            .with_context(|| format!("{}: missing tolerance.float_abs", spec_path.display()))?;
        let expected = Checkpoint::open(&dir.join("expected.safetensors"))?;
        Ok(Fixture { dir: dir.to_path_buf(), expected, float_abs })
    }

    pub fn has(&self, name: &str) -> bool {
        self.expected.meta(name).is_some()
    }

    pub fn tensor(&self, name: &str) -> Result<Tensor> {
        self.expected.tensor(name, Device::Cpu)
    }
}

/// One compared tensor.
#[derive(Clone, Debug, Serialize)]
pub struct CheckRow {
    /// Which part of the model ("vq", "lm", "optim").
    pub part: String,
    /// Which checkpoint layout the model was loaded from.
    pub layout: String,
    pub tensor: String,
    pub shape: Vec<i64>,
    pub max_abs_diff: f64,
    pub mismatches: i64,
    pub tolerance: String,
    pub pass: bool,
    /// Why the check could not run, if it could not.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

impl CheckRow {
    /// A row for a check that failed to run at all.
    pub fn failed(part: &str, layout: &str, tensor: &str, err: &anyhow::Error) -> Self {
        CheckRow {
            part: part.into(),
            layout: layout.into(),
            tensor: tensor.into(),
            shape: vec![],
            max_abs_diff: f64::NAN,
            mismatches: -1,
            tolerance: String::new(),
            pass: false,
            error: Some(format!("{err:#}")),
        }
    }
}

/// Compares `got` with `expected`: exactly for integer tensors, within `tol` for floats.
pub fn compare(
    part: &str,
    layout: &str,
    name: &str,
    got: &Tensor,
    expected: &Tensor,
    tol: f64,
) -> CheckRow {
    let exact = !expected.is_floating_point();
    let shape = expected.size();
    if got.size() != shape {
        return CheckRow {
            part: part.into(),
            layout: layout.into(),
            tensor: name.into(),
            shape: shape.clone(),
            max_abs_diff: f64::INFINITY,
            mismatches: expected.numel() as i64,
            tolerance: if exact { "exact".into() } else { format!("{tol:e}") },
            pass: false,
            error: Some(format!("shape {:?}, expected {shape:?}", got.size())),
        };
    }
    let diff =
        (got.to_device(Device::Cpu).to_kind(Kind::Double) - expected.to_kind(Kind::Double)).abs();
    let max_abs_diff = if diff.numel() == 0 { 0.0 } else { diff.max().double_value(&[]) };
    let limit = if exact { 0.0 } else { tol };
    let mismatches = diff.gt(limit).sum(Kind::Int64).int64_value(&[]);
    CheckRow {
        part: part.into(),
        layout: layout.into(),
        tensor: name.into(),
        shape,
        max_abs_diff,
        mismatches,
        tolerance: if exact { "exact".into() } else { format!("{tol:e}") },
        pass: mismatches == 0,
        error: None,
    }
}

/// The VQ folders of a fixture: (layout label, folder, config file).
fn vq_sources(fx: &Fixture) -> Vec<(&'static str, PathBuf)> {
    let mut v = vec![("transformers", fx.dir.clone())];
    let orig = fx.dir.join("original/vision_tokenizer");
    if orig.exists() {
        v.push(("original", orig));
    }
    v
}

/// Every VQ check the fixture supports, in every layout it ships.
pub fn vq_checks(fx: &Fixture) -> Vec<CheckRow> {
    let mut rows = Vec::new();
    if !fx.has("image_codes") && !fx.has("video_codes") {
        return rows;
    }
    for (layout, dir) in vq_sources(fx) {
        match VqModel::load(&dir, Device::Cpu, Kind::Float) {
            Ok(vq) => {
                if let Err(e) = vq_checks_for(fx, &vq, layout, &mut rows) {
                    rows.push(CheckRow::failed("vq", layout, "(checks)", &e));
                }
            }
            Err(e) => rows.push(CheckRow::failed("vq", layout, "(load)", &e)),
        }
    }
    rows
}

fn vq_checks_for(fx: &Fixture, vq: &VqModel, layout: &str, rows: &mut Vec<CheckRow>) -> Result<()> {
    let tol = fx.float_abs;
    if fx.has("image_pixels") {
        let x = fx.tensor("image_pixels")?;
        if fx.has("image_latent") {
            rows.push(compare(
                "vq",
                layout,
                "image_latent",
                &vq.image_latents(&x),
                &fx.tensor("image_latent")?,
                tol,
            ));
        }
        if fx.has("image_codes") {
            let codes = vq.encode_images(&x);
            rows.push(compare(
                "vq",
                layout,
                "image_codes",
                &codes,
                &fx.tensor("image_codes")?,
                tol,
            ));
        }
    }
    if fx.has("image_codes") && fx.has("image_decoded") {
        let decoded = vq.decode_images(&fx.tensor("image_codes")?);
        rows.push(compare(
            "vq",
            layout,
            "image_decoded",
            &decoded,
            &fx.tensor("image_decoded")?,
            tol,
        ));
    }
    if fx.has("video_pixels") && fx.has("video_codes") {
        let codes = vq.encode_video(&fx.tensor("video_pixels")?)?;
        rows.push(compare("vq", layout, "video_codes", &codes, &fx.tensor("video_codes")?, tol));
    }
    if fx.has("video_codes") && fx.has("video_decoded") {
        let decoded = vq.decode_video(&fx.tensor("video_codes")?);
        rows.push(compare(
            "vq",
            layout,
            "video_decoded",
            &decoded,
            &fx.tensor("video_decoded")?,
            tol,
        ));
    }
    Ok(())
}

/// Renders rows as an aligned text table.
pub fn table(rows: &[CheckRow]) -> String {
    let mut out = format!(
        "{:<6} {:<13} {:<18} {:<18} {:>12} {:>10} {:>9}  {}\n",
        "part", "layout", "tensor", "shape", "max|diff|", "mismatch", "tol", "result"
    );
    for r in rows {
        let verdict = match (&r.error, r.pass) {
            (Some(e), _) => format!("FAIL: {e}"),
            (None, true) => "ok".into(),
            (None, false) => "FAIL".into(),
        };
        out.push_str(&format!(
            "{:<6} {:<13} {:<18} {:<18} {:>12.3e} {:>10} {:>9}  {}\n",
            r.part,
            r.layout,
            r.tensor,
            format!("{:?}", r.shape),
            r.max_abs_diff,
            r.mismatches,
            r.tolerance,
            verdict
        ));
    }
    out
}
