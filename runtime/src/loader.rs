//! From a model argument (a known name, a `.gguf` path or a Hugging Face checkpoint folder) to
//! a loaded `Model`: weights on the chosen device, tokenizer and chat template.
use std::path::{Path, PathBuf};
use std::time::Instant;

use tch::{Device, Kind};

use crate::error::LoadError;
use crate::gguf::GgufFile;
use crate::models::{self, Transformer};
use crate::registry;
use crate::tokenizer::TextTokenizer;
use crate::weights::Weights;

/// A model ready to run: the network plus what turns text into its inputs.
pub struct Model {
    pub name: String,
    pub source: PathBuf,
    pub network: Transformer,
    pub tokenizer: TextTokenizer,
}

/// Where a model argument points.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ModelLocation {
    Gguf(PathBuf),
    CheckpointDir(PathBuf),
}

/// Resolves a user's model argument without loading anything.
pub fn resolve(arg: &str) -> Result<ModelLocation, LoadError> {
    if let Some(known) = registry::find(arg) {
        let path = registry::models_dir().join(known.file);
        if !path.exists() {
            return Err(LoadError::File {
                path,
                message: format!("model '{arg}' is not downloaded; run scripts/setup (or set TCOMM_MODELS)"),
            });
        }
        return Ok(ModelLocation::Gguf(path));
    }
    let path = Path::new(arg);
    if path.is_dir() {
        return Ok(ModelLocation::CheckpointDir(path.to_path_buf()));
    }
    if path.is_file() {
        return Ok(ModelLocation::Gguf(path.to_path_buf()));
    }
    Err(LoadError::UnknownModel { name: arg.to_string(), known: registry::known_names() })
}

/// Loads a model onto `device` computing in `kind`.
pub fn load(arg: &str, device: Device, kind: Kind) -> Result<Model, LoadError> {
    let start = Instant::now();
    let location = resolve(arg)?;
    let _no_grad = tch::no_grad_guard();
    let (source, network, tokenizer) = match location {
        ModelLocation::Gguf(path) => {
            let file = GgufFile::open(&path)?;
            let spec = models::spec_from_gguf(&file)?;
            let mut tokenizer = TextTokenizer::from_gguf(&file)?;
            if tokenizer.chat_template().is_none() {
                if let Some(template) = builtin_chat_template(&spec.architecture) {
                    // Like llama.cpp's built-in templates: base-model GGUFs (gemma-3-270m) ship
                    // none, and debates need one.
                    tracing::warn!(model = arg, "the GGUF has no chat template; using the built-in {} template", spec.architecture);
                    tokenizer.set_chat_template(Some(template.to_string()));
                }
            }
            let mut weights = Weights::from_gguf(file, device, kind);
            if spec.architecture == "gemma3_text" {
                weights = weights.with_gguf_renames(&[("post_attention_layernorm", "post_attention_norm")]);
            }
            (path, Transformer::load(spec, &weights)?, tokenizer)
        }
        ModelLocation::CheckpointDir(dir) => {
            let spec = models::spec_from_config_dir(&dir)?;
            let tokenizer = TextTokenizer::from_hf_dir(&dir)?;
            let weights = Weights::from_checkpoint_dir(&dir, device, kind)?;
            (dir.clone(), Transformer::load(spec, &weights)?, tokenizer)
        }
    };
    tracing::info!(
        model = arg,
        architecture = %network.spec().architecture,
        layers = network.spec().num_layers,
        hidden = network.spec().hidden_size,
        ?device,
        ?kind,
        seconds = start.elapsed().as_secs_f64(),
        "model loaded"
    );
    Ok(Model { name: arg.to_string(), source, network, tokenizer })
}

/// The official template of an architecture, for GGUF files that carry none.
pub fn builtin_chat_template(architecture: &str) -> Option<&'static str> {
    match architecture {
        "gemma3_text" => Some(include_str!("tokenizer/gemma3_chat_template.jinja")),
        _ => None,
    }
}

/// Loads only the network of a checkpoint folder (no tokenizer), as the golden tests need.
pub fn load_network_from_dir(dir: &Path, device: Device, kind: Kind) -> Result<Transformer, LoadError> {
    let _no_grad = tch::no_grad_guard();
    let spec = models::spec_from_config_dir(dir)?;
    let weights = Weights::from_checkpoint_dir(dir, device, kind)?;
    Transformer::load(spec, &weights)
}
