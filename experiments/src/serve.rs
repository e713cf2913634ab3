//! `tcomm serve`: the gRPC runtime that hosts the agents' models (see `runtime::server`).
use std::path::PathBuf;

use anyhow::{anyhow, Context};
use clap::Args;
use runtime::server::ServerConfig;

#[derive(Args)]
pub struct ServeArgs {
    /// The runtime config (TOML): `bind`, `[[models]]` (name, device, dtype, max_batch_size,
    /// max_batch_tokens, max_queue), `auth_token`, `shutdown_timeout_s`. Unknown keys are errors.
    #[arg(long, short, env = "TCOMM_SERVE_CONFIG")]
    config: PathBuf,
    /// Validate the config (keys, values, that each model resolves to a file) without loading any
    /// model, then exit.
    #[arg(long)]
    check: bool,
    /// Listen here instead of the config's `bind` (port 0 picks a free port; the address is
    /// printed as `listening on HOST:PORT` once the models are loaded).
    #[arg(long)]
    bind: Option<String>,
}

pub fn run(args: ServeArgs) -> anyhow::Result<()> {
    let path = args.config.display().to_string();
    let mut config = ServerConfig::from_file(&args.config)?;
    if let Some(bind) = args.bind {
        config.bind = bind;
    }
    config.validate().map_err(|message| anyhow!("{path}: {message}"))?;
    if args.check {
        let names: Vec<&str> = config.models.iter().map(|m| m.name.as_str()).collect();
        println!("{path}: OK (bind {}, models: {})", config.bind, names.join(", "));
        return Ok(());
    }
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build().context("starting the async runtime")?;
    rt.block_on(runtime::server::run(config, |addr| {
        // On stdout, flushed: scripts that start the server wait for this line.
        println!("listening on {addr}");
        use std::io::Write;
        let _ = std::io::stdout().flush();
    }))?;
    Ok(())
}
