//! Adam and the safetensors half of a trainable checkpoint (parameters plus Adam moments), shared
//! by the thought autoencoder and the prefix adapter.
use std::collections::HashMap;
use std::path::Path;

use tch::{nn, Kind, Tensor};

use crate::error::{Result, ThoughtError};

/// Adam (Kingma & Ba; PyTorch's defaults and update) written out so that its moments can be saved
/// in the checkpoint: `tch::nn::Optimizer` does not expose them, and without them a resumed run
/// would differ from an uninterrupted one.
#[derive(Debug)]
pub(crate) struct Adam {
    /// (parameter name, first moment, second moment), sorted by name.
    pub(crate) moments: Vec<(String, Tensor, Tensor)>,
}

const BETA1: f64 = 0.9;
const BETA2: f64 = 0.999;
const ADAM_EPS: f64 = 1e-8;

impl Adam {
    pub(crate) fn new(vs: &nn::VarStore) -> Self {
        let mut names: Vec<(String, Tensor)> = vs.variables().into_iter().collect();
        names.sort_by(|a, b| a.0.cmp(&b.0));
        let moments = names.into_iter().map(|(n, p)| (n, p.zeros_like(), p.zeros_like())).collect();
        Self { moments }
    }

    /// One update of every parameter from its `.grad()`; `t` is the 1-based step number.
    pub(crate) fn step(&mut self, vs: &nn::VarStore, lr: f64, t: u64) -> Result<()> {
        let vars = vs.variables();
        let (c1, c2) = (1.0 - BETA1.powf(t as f64), 1.0 - BETA2.powf(t as f64));
        tch::no_grad(|| {
            for (name, m, v) in self.moments.iter_mut() {
                let Some(p) = vars.get(name) else { continue };
                let g = p.grad();
                if !g.defined() {
                    continue;
                }
                *m = &*m * BETA1 + &g * (1.0 - BETA1);
                *v = &*v * BETA2 + g.square() * (1.0 - BETA2);
                let update = (&*m / c1) / ((&*v / c2).sqrt() + ADAM_EPS) * lr;
                let _ = p.shallow_clone().f_sub_(&update)?;
            }
            Ok(())
        })
    }
}

/// Sets every parameter's gradient to zero (before a backward pass).
pub(crate) fn zero_grads(vs: &nn::VarStore) {
    for mut p in vs.trainable_variables() {
        p.zero_grad();
    }
}

/// Scales the gradients so that their global l2 norm is at most `max_norm` (PyTorch's
/// `clip_grad_norm_`); returns the norm before clipping.
pub(crate) fn clip_grad_norm(vs: &nn::VarStore, max_norm: f64) -> f64 {
    tch::no_grad(|| {
        let grads: Vec<Tensor> = vs.trainable_variables().iter().map(|p| p.grad()).filter(|g| g.defined()).collect();
        let total: f64 = grads.iter().map(|g| g.square().sum(Kind::Double).double_value(&[])).sum::<f64>().sqrt();
        if total.is_finite() && total > max_norm {
            let scale = max_norm / (total + 1e-6);
            for g in &grads {
                let _ = g.shallow_clone().g_mul_scalar_(scale);
            }
        }
        total
    })
}

fn moment_names(name: &str) -> (String, String) {
    (format!("adam.m.{name}"), format!("adam.v.{name}"))
}

/// Writes the parameters of `vs` and the moments of `adam` to one safetensors file.
pub(crate) fn save_trainable(vs: &nn::VarStore, adam: &Adam, weights: &Path) -> Result<()> {
    let mut named: Vec<(String, Tensor)> = vs.variables().into_iter().collect();
    for (name, m, v) in &adam.moments {
        let (mn, vn) = moment_names(name);
        named.push((mn, m.shallow_clone()));
        named.push((vn, v.shallow_clone()));
    }
    named.sort_by(|a, b| a.0.cmp(&b.0));
    Ok(Tensor::write_safetensors(&named, weights)?)
}

/// Reads a file written by [`save_trainable`] into `vs` (whose shapes come from the JSON config)
/// and returns the Adam state stored with it.
pub(crate) fn load_trainable(vs: &nn::VarStore, weights: &Path) -> Result<Adam> {
    let mut adam = Adam::new(vs);
    let stored: HashMap<String, Tensor> = Tensor::read_safetensors(weights)
        .map_err(|e| ThoughtError::Checkpoint { path: weights.to_path_buf(), message: e.to_string() })?
        .into_iter()
        .collect();
    let vars = vs.variables();
    tch::no_grad(|| -> Result<()> {
        for (name, m, v) in adam.moments.iter_mut() {
            let (mn, vn) = moment_names(name);
            if let Some(var) = vars.get(name) {
                var.shallow_clone().f_copy_(take(weights, &stored, name, var)?)?;
            }
            *m = take(weights, &stored, &mn, m)?.to_device(m.device());
            *v = take(weights, &stored, &vn, v)?.to_device(v.device());
        }
        Ok(())
    })?;
    Ok(adam)
}

/// The stored tensor `name`, checked against the shape the JSON config implies. libtorch's copy
/// would broadcast a wrong-shaped tensor silently, so the shapes are compared first.
fn take<'a>(weights: &Path, stored: &'a HashMap<String, Tensor>, name: &str, like: &Tensor) -> Result<&'a Tensor> {
    let path = weights.to_path_buf();
    let t = stored
        .get(name)
        .ok_or_else(|| ThoughtError::Checkpoint { path: path.clone(), message: format!("missing tensor '{name}'") })?;
    if t.size() != like.size() {
        return Err(ThoughtError::Checkpoint {
            path,
            message: format!(
                "tensor '{name}' has shape {:?} but the config implies {:?} (weights and config do not belong together)",
                t.size(),
                like.size()
            ),
        });
    }
    Ok(t)
}
