//! Named parameters and the basic layers every model in the workspace is built from.
//!
//! Models are plain structs whose fields are named like the checkpoint's key segments; their
//! constructors take a [`Params`] path and register each tensor under that name, so a
//! checkpoint loads with no renaming table. A `Params` can be *shape-only*: every parameter is
//! then a zero-stride view of one scalar, so the full Emu3-8B structure (names and shapes) can be
//! built and checked without allocating 8B parameters.
//!
//! Shapes: B batch, C channels, T time, H/W spatial.

use tch::nn::{self, Init};
use tch::{Kind, Tensor};

/// A position in a model's parameter tree.
#[derive(Clone)]
pub struct Params<'a> {
    path: nn::Path<'a>,
    kind: Kind,
    shape_only: bool,
}

impl<'a> Params<'a> {
    /// Parameters of `kind` in `vs`, allocated and initialised.
    pub fn new(vs: &'a nn::VarStore, kind: Kind) -> Self {
        Params { path: vs.root(), kind, shape_only: false }
    }

    /// Parameters that only carry names and shapes (a zero-stride view each; no memory).
    pub fn shape_only(vs: &'a nn::VarStore) -> Self {
        Params { path: vs.root(), kind: Kind::Float, shape_only: true }
    }

    pub fn sub<S: ToString>(&self, name: S) -> Params<'a> {
        Params { path: self.path.sub(name), kind: self.kind, shape_only: self.shape_only }
    }

    pub fn kind(&self) -> Kind {
        self.kind
    }

    pub fn device(&self) -> tch::Device {
        self.path.device()
    }

    /// A trainable parameter.
    pub fn var(&self, name: &str, dims: &[i64], init: Init) -> Tensor {
        self.add(name, dims, init, true, self.kind)
    }

    /// A buffer: saved and loaded with the weights, never trained (BatchNorm statistics).
    pub fn buffer(&self, name: &str, dims: &[i64], value: f64, kind: Kind) -> Tensor {
        self.add(name, dims, Init::Const(value), false, kind)
    }

    fn add(&self, name: &str, dims: &[i64], init: Init, trainable: bool, kind: Kind) -> Tensor {
        let device = self.path.device();
        let t = if self.shape_only {
            Tensor::zeros(vec![1; dims.len().min(1)], (kind, device)).expand(dims, false)
        } else {
            tch::no_grad(|| {
                let t = nn::init(init, dims, device);
                if t.kind() == kind { t } else { t.to_kind(kind) }
            })
        };
        self.path.add(name, t, trainable && !self.shape_only)
    }
}

/// PyTorch's default init for conv/linear weights: kaiming-uniform with a = sqrt(5).
pub fn torch_default_init(fan_in: i64) -> Init {
    let bound = 1.0 / (fan_in as f64).sqrt();
    Init::Uniform { lo: -bound, up: bound }
}

/// A 2D convolution with bias; `[B,Cin,H,W] -> [B,Cout,H',W']`.
pub struct Conv2d {
    pub weight: Tensor,
    pub bias: Tensor,
    stride: i64,
    padding: i64,
}

impl Conv2d {
    /// Kaiming-normal (fan-out) weights, as the reference initialises its convolutions.
    pub fn new(p: &Params<'_>, cin: i64, cout: i64, k: i64, stride: i64, padding: i64) -> Self {
        let init = Init::Kaiming {
            dist: nn::init::NormalOrUniform::Normal,
            fan: nn::init::FanInOut::FanOut,
            non_linearity: nn::init::NonLinearity::ReLU,
        };
        Self::with_init(p, cin, cout, k, stride, padding, init, 0.0)
    }

    /// Weights from `init`, every bias `bias`.
    pub fn with_init(
        p: &Params<'_>,
        cin: i64,
        cout: i64,
        k: i64,
        stride: i64,
        padding: i64,
        init: Init,
        bias: f64,
    ) -> Self {
        Conv2d {
            weight: p.var("weight", &[cout, cin, k, k], init),
            bias: p.var("bias", &[cout], Init::Const(bias)),
            stride,
            padding,
        }
    }

    pub fn forward(&self, x: &Tensor) -> Tensor {
        x.conv2d(&self.weight, Some(&self.bias), [self.stride; 2], [self.padding; 2], [1, 1], 1)
    }
}

/// A 3D convolution with bias and no padding; `[B,Cin,T,H,W] -> [B,Cout,T',H',W']`.
pub struct Conv3d {
    pub weight: Tensor,
    pub bias: Tensor,
    stride: [i64; 3],
}

impl Conv3d {
    pub fn new(p: &Params<'_>, cin: i64, cout: i64, k: [i64; 3], stride: [i64; 3]) -> Self {
        let init = Init::Kaiming {
            dist: nn::init::NormalOrUniform::Normal,
            fan: nn::init::FanInOut::FanOut,
            non_linearity: nn::init::NonLinearity::ReLU,
        };
        Conv3d {
            weight: p.var("weight", &[cout, cin, k[0], k[1], k[2]], init),
            bias: p.var("bias", &[cout], Init::Const(0.0)),
            stride,
        }
    }

    pub fn forward(&self, x: &Tensor) -> Tensor {
        x.conv3d(&self.weight, Some(&self.bias), self.stride, [0, 0, 0], [1, 1, 1], 1)
    }
}

/// GroupNorm with 32 groups and eps 1e-6, as every norm of the VQ tokenizer; `[B,C,...]`.
pub struct GroupNorm {
    pub weight: Tensor,
    pub bias: Tensor,
}

pub const GROUPS: i64 = 32;

impl GroupNorm {
    pub fn new(p: &Params<'_>, channels: i64) -> Self {
        assert!(
            channels % GROUPS == 0,
            "GroupNorm: {channels} channels do not split into {GROUPS} groups"
        );
        GroupNorm {
            weight: p.var("weight", &[channels], Init::Const(1.0)),
            bias: p.var("bias", &[channels], Init::Const(0.0)),
        }
    }

    pub fn forward(&self, x: &Tensor) -> Tensor {
        x.group_norm(GROUPS, Some(&self.weight), Some(&self.bias), 1e-6, true)
    }
}

/// BatchNorm3d over `[B,C,T,H,W]`. Inference uses the checkpoint's running statistics; training
/// updates them with PyTorch's momentum 0.1.
pub struct BatchNorm3d {
    pub weight: Tensor,
    pub bias: Tensor,
    pub running_mean: Tensor,
    pub running_var: Tensor,
    pub num_batches_tracked: Tensor,
}

impl BatchNorm3d {
    pub fn new(p: &Params<'_>, channels: i64) -> Self {
        BatchNorm3d {
            weight: p.var("weight", &[channels], Init::Const(1.0)),
            bias: p.var("bias", &[channels], Init::Const(0.0)),
            running_mean: p.buffer("running_mean", &[channels], 0.0, p.kind()),
            running_var: p.buffer("running_var", &[channels], 1.0, p.kind()),
            num_batches_tracked: p.buffer("num_batches_tracked", &[], 0.0, Kind::Int64),
        }
    }

    pub fn forward(&self, x: &Tensor, train: bool) -> Tensor {
        if train {
            tch::no_grad(|| {
                let _ = self.num_batches_tracked.shallow_clone().f_add_scalar_(1);
            });
        }
        x.batch_norm(
            Some(&self.weight),
            Some(&self.bias),
            Some(&self.running_mean),
            Some(&self.running_var),
            train,
            0.1,
            1e-5,
            true,
        )
    }
}

/// SiLU written as PyTorch's reference writes it (`x * sigmoid(x)`).
pub fn swish(x: &Tensor) -> Tensor {
    x * x.sigmoid()
}
