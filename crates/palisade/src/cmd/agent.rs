//! `palisade agent`: run the enforcement agent, or enroll it.
use crate::cli::{AgentArgs, AgentCmd};
use anyhow::{Context, Result};
use palisade_agent::config::AgentConfigFile;
use palisade_agent::identity::{enroll, hostname};
use palisade_agent::{RunningAgent, StartOptions};
use std::process::ExitCode;
use std::time::Duration;

pub(crate) async fn run(a: AgentArgs) -> Result<ExitCode> {
    if let Some(AgentCmd::Enroll {
        server,
        token,
        data_dir,
    }) = a.command
    {
        // The directory the agent will run with: `enroll --data-dir`, else
        // `agent --data-dir`, else the configuration's, else the default.
        // Checked, with the rest of the configuration, before the one-use
        // token is spent.
        let mut file = match &a.config {
            Some(p) => AgentConfigFile::load(p)?,
            None => AgentConfigFile::default(),
        };
        if let Some(d) = data_dir.or(a.data_dir) {
            file.data_dir = Some(d);
        }
        let dir = file.validate()?.data_dir;
        palisade_agent::link::require_https(&server).context("--server")?;
        let id = enroll(&server, &token, &hostname()).await?;
        id.save(&dir)
            .with_context(|| format!("saving the identity in {}", dir.display()))?;
        println!(
            "enrolled as computer {} ({}); identity in {}",
            crate::shown::shown(&id.computer),
            id.computer_id,
            dir.display()
        );
        return Ok(ExitCode::SUCCESS);
    }
    let mut file = match &a.config {
        Some(p) => AgentConfigFile::load(p)?,
        None => AgentConfigFile::default(),
    };
    if let Some(d) = a.data_dir {
        file.data_dir = Some(d);
    }
    if !a.watch.is_empty() {
        file.watch = Some(a.watch);
    }
    let cfg = file.validate()?;
    tracing::info!("agent configuration: {cfg:?}");
    let agent = RunningAgent::start(cfg, StartOptions::default()).await?;
    if a.scan {
        if !agent.wait_connected(Duration::from_secs(15)).await {
            anyhow::bail!("cannot scan: the service is unreachable");
        }
        let s = agent.scan(true, true).await?;
        println!(
            "scan: {} files, {} code files ({} MB) inventoried, {} approved locally, {} unreadable, in {} ms",
            s.files_seen,
            s.code_files,
            s.bytes_hashed >> 20,
            s.approved,
            s.errors,
            s.elapsed_ms
        );
    }
    println!("palisade agent: ready");
    super::termination().await;
    agent.shutdown().await;
    Ok(ExitCode::SUCCESS)
}
