//! `palisade server`: the policy lookup service, and offline administration
//! of its database.
use crate::cli::{ServerArgs, ServerCmd};
use anyhow::{Context, Result};
use palisade_core::Name;
use palisade_server::{Db, Server, ServerConfig};
use std::process::ExitCode;

pub(crate) async fn run(a: ServerArgs) -> Result<ExitCode> {
    match a.command {
        Some(ServerCmd::Init {
            database,
            org,
            admin,
        }) => {
            let db = Db::connect(&database).await?;
            let org = Name::parse(&org).context("--org")?;
            let admin = Name::parse(&admin).context("--admin")?;
            let b = palisade_server::bootstrap(&db, &org, &admin).await?;
            match b.admin_token {
                Some(t) => println!("organization {org} ready; admin {admin} token:\n{t}"),
                None => println!(
                    "organization {org} already existed; use `palisade server admin-token` for a new token"
                ),
            }
            Ok(ExitCode::SUCCESS)
        }
        Some(ServerCmd::Ca { database }) => {
            let db = Db::connect(&database).await?;
            print!("{}", palisade_server::ca_certificate(&db).await?.pem);
            Ok(ExitCode::SUCCESS)
        }
        Some(ServerCmd::AdminToken {
            database,
            org,
            admin,
        }) => {
            let db = Db::connect(&database).await?;
            let org = Name::parse(&org).context("--org")?;
            let admin = Name::parse(&admin).context("--admin")?;
            println!(
                "{}",
                palisade_server::create_admin_token(&db, &org, &admin).await?
            );
            Ok(ExitCode::SUCCESS)
        }
        None => {
            let mut cfg = match &a.config {
                Some(p) => {
                    let text =
                        std::fs::read_to_string(p).with_context(|| p.display().to_string())?;
                    ServerConfig::from_toml(&text).with_context(|| p.display().to_string())?
                }
                None => ServerConfig::default(),
            };
            if let Some(d) = a.database {
                cfg.database = d;
            }
            if let Some(l) = a.listen {
                cfg.listen = l;
            }
            if !a.tls_names.is_empty() {
                cfg.tls_names = a.tls_names;
            }
            cfg.validate()?;
            let server = Server::bind(cfg).await?;
            println!(
                "palisade server: listening on https://{} (CA sha256 {})",
                server.local_addr(),
                server.ca_fingerprint()
            );
            server.serve(super::termination()).await?;
            Ok(ExitCode::SUCCESS)
        }
    }
}
