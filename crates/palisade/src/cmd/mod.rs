//! Subcommands.
use crate::cli::{Cli, Command};
use std::process::ExitCode;

mod access;
mod admin;
mod agent;
mod approval;
mod server;
mod up;

pub(crate) fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(4)
        .enable_all()
        .thread_name("palisade-rt")
        .build()?;
    let cfg = cli.cli_config.clone();
    rt.block_on(async move {
        match cli.command {
            Command::Up(a) => up::run(a).await,
            Command::Server(a) => server::run(a).await,
            Command::Agent(a) => agent::run(a).await,
            Command::File(c) => admin::file(cfg.as_deref(), c).await,
            Command::Events(a) => admin::events(cfg.as_deref(), a).await,
            Command::Computers(a) => admin::computers(cfg.as_deref(), a.json).await,
            Command::Policy(c) => admin::policy(cfg.as_deref(), c).await,
            Command::Status(a) => admin::status(cfg.as_deref(), a).await,
            Command::Publisher(c) => approval::publisher(cfg.as_deref(), c).await,
            Command::Bundle(c) => approval::bundle(cfg.as_deref(), c).await,
            Command::Reputation(c) => approval::reputation(cfg.as_deref(), c).await,
            Command::Rule(c) => approval::rule(cfg.as_deref(), c).await,
            Command::Folder(c) => approval::folder(cfg.as_deref(), c).await,
            Command::Request(c) => approval::request(cfg.as_deref(), c).await,
            Command::Admin(c) => access::admin(cfg.as_deref(), c).await,
            Command::Role(c) => access::role(cfg.as_deref(), c).await,
            Command::Token(c) => access::token(cfg.as_deref(), c).await,
            Command::Access(c) => access::access(cfg.as_deref(), c).await,
            Command::Audit(c) => access::audit(cfg.as_deref(), c).await,
            Command::EnrollToken { list: true, .. } => admin::enroll_tokens(cfg.as_deref()).await,
            Command::EnrollToken {
                revoke: Some(id), ..
            } => admin::revoke_enroll_token(cfg.as_deref(), id).await,
            Command::EnrollToken {
                policy, uses, ttl, ..
            } => admin::enroll_token(cfg.as_deref(), &policy, uses, ttl).await,
        }
    })
}

/// Resolve when SIGINT or SIGTERM arrives; a second signal exits at once.
pub(crate) async fn termination() {
    use tokio::signal::unix::{signal, SignalKind};
    let (Ok(mut int), Ok(mut term)) = (
        signal(SignalKind::interrupt()),
        signal(SignalKind::terminate()),
    ) else {
        std::future::pending::<()>().await;
        return;
    };
    tokio::select! { _ = int.recv() => {}, _ = term.recv() => {} }
    tracing::info!("stopping (a second signal exits at once)");
    tokio::spawn(async move {
        tokio::select! { _ = int.recv() => {}, _ = term.recv() => {} }
        std::process::exit(130);
    });
}
