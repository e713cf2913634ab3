//! Hidden states saved by `--save-states`: one safetensors file per problem under
//! `<run>/states/`, holding for every round r and agent a the tensor `round{r}.agent{a}`
//! (f32, `[hidden]`), the state of the agent's last generated token at the configured layer.
//! These are the training data of the thought autoencoder.
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use proto::v1;

pub const STATES_DIR: &str = "states";

/// The file (under `<run>/states/`) that holds a problem's states.
pub fn file_name(problem_id: &str) -> String {
    let name: String = problem_id.chars().map(|c| if c.is_ascii_alphanumeric() || c == '-' { c } else { '_' }).collect();
    format!("{name}.safetensors")
}

pub struct RoundStates {
    problem_id: String,
    layer: u32,
    tensors: BTreeMap<String, (Vec<usize>, Vec<u8>)>,
}

impl RoundStates {
    pub fn new(problem_id: &str, layer: u32) -> Self {
        RoundStates { problem_id: problem_id.to_string(), layer, tensors: BTreeMap::new() }
    }

    /// Takes the hidden state that the runtime returned with `reply`.
    pub fn add(&mut self, round: usize, agent: usize, reply: &v1::GenerateResponse) -> Result<(), String> {
        let states = reply
            .hidden_states
            .first()
            .and_then(|h| h.states.as_ref())
            .ok_or_else(|| format!("round {round} agent {agent}: the runtime returned no hidden state"))?;
        if states.dtype != v1::DType::DtypeF32 as i32 {
            return Err(format!("round {round} agent {agent}: hidden state is not f32"));
        }
        let shape: Vec<usize> = states.shape.iter().map(|&d| d.max(0) as usize).collect();
        let elements: usize = shape.iter().product();
        if shape.len() != 2 || shape[0] != 1 || states.data.len() != elements * 4 {
            return Err(format!("round {round} agent {agent}: hidden state has shape {:?} and {} bytes", states.shape, states.data.len()));
        }
        self.tensors.insert(format!("round{round}.agent{agent}"), (vec![shape[1]], states.data.clone()));
        Ok(())
    }

    /// Writes `<run_dir>/states/<problem id>.safetensors` (atomically).
    pub fn save(&self, run_dir: &Path) -> Result<PathBuf, String> {
        let dir = run_dir.join(STATES_DIR);
        std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
        let path = dir.join(file_name(&self.problem_id));
        let views: Vec<(String, safetensors::tensor::TensorView<'_>)> = self
            .tensors
            .iter()
            .map(|(k, (shape, data))| {
                safetensors::tensor::TensorView::new(safetensors::Dtype::F32, shape.clone(), data).map(|v| (k.clone(), v))
            })
            .collect::<Result<_, _>>()
            .map_err(|e| format!("{}: {e}", path.display()))?;
        let metadata = std::collections::HashMap::from([
            ("problem_id".to_string(), self.problem_id.clone()),
            ("layer".to_string(), self.layer.to_string()),
        ]);
        let bytes = safetensors::serialize(views, Some(metadata)).map_err(|e| format!("{}: {e}", path.display()))?;
        let tmp = path.with_extension("safetensors.tmp");
        std::fs::write(&tmp, bytes).map_err(|e| format!("{}: {e}", tmp.display()))?;
        std::fs::rename(&tmp, &path).map_err(|e| format!("{}: {e}", path.display()))?;
        Ok(path)
    }
}
